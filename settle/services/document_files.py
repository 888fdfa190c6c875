"""What the billing documents' files share: parties, storing a rendered PDF once, signed URLs.

Invoices (``invoice_files``) and credit notes (``credit_note_files``) are both
printed with the agency and the client on them, rendered once by a worker and
stored under a fixed key, and downloaded through short-lived signed URLs that
name the row and the user they were made for.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from settle.core import clock, validation
from settle.core.errors import ValidationError
from settle.core.outbox import transaction
from settle.core.settings import get_settings
from settle.core.signing import SignedTokenError, SignedUrl, UrlSigner
from settle.core.storage import ObjectExistsError, ObjectReader, get_storage
from settle.core.tenancy import Actor
from settle.documents.invoice import Party
from settle.models.agency import Agency, User
from settle.models.client import Client
from settle.models.invoice import CreditNote, Invoice
from settle.services import activity
from settle.services import invoice as invoice_service

PDF_CONTENT_TYPE = "application/pdf"


# --- the parties ---------------------------------------------------------------------------


def details(*values: str | None) -> tuple[str, ...]:
    """Non-empty lines, an address split at its line breaks."""
    lines: list[str] = []
    for value in values:
        lines.extend(line.strip() for line in (value or "").splitlines())
    return tuple(line for line in lines if line)


async def parties(agency_id: uuid.UUID, client_id: uuid.UUID) -> tuple[Party, Party]:
    """The agency (issuer) and the client as a document prints them."""
    agency = await Agency.get(id=agency_id)
    client = await Client.get(id=client_id)
    contact_email = await invoice_service.primary_contact_email(client.id)
    return (
        Party(
            agency.name,
            details(
                agency.address,
                agency.email,
                f"Tax ID: {agency.tax_id}" if agency.tax_id else None,
            ),
        ),
        Party(
            client.name,
            details(
                client.address,
                f"Tax ID: {client.tax_id}" if client.tax_id else None,
                contact_email,
            ),
        ),
    )


def pdf_filename(number: str) -> str:
    """``<number>.pdf`` (a ``/`` of a numbering pattern would read as a folder)."""
    return f"{number.replace('/', '-')}.pdf"


# --- storing a rendered PDF once --------------------------------------------------------------


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def store_rendered(
    row: Invoice | CreditNote, key: str, data: bytes, *, entity_type: str, summary: str
) -> None:
    """Store a rendered PDF under ``key`` and point the row's ``pdf_key`` at it, once.

    Storage never replaces an object, so a file stored by a run that died before
    its commit, or by one racing this one, is kept; the conditional update lets
    exactly one run set the key and put the event on the timeline. Opens its own
    transaction for that update (joined if one is open already).
    """
    with contextlib.suppress(ObjectExistsError):
        await get_storage().put(key, _single(data))
    async with transaction():
        rendered_at = clock.now()
        claimed = await (
            type(row)
            .filter(id=row.id, pdf_key__isnull=True)
            .update(pdf_key=key, pdf_rendered_at=rendered_at)
        )
        if claimed:
            await activity.record(
                None,
                agency_id=row.agency_id,
                client_id=row.client_id,
                entity_type=entity_type,
                entity_id=row.id,
                verb="pdf_rendered",
                summary=summary,
                changes=activity.diff({}, {"pdf_rendered_at": rendered_at}),
            )


async def read_file(key: str) -> ObjectReader:
    """A stored document as a stream; ObjectNotFoundError if storage has lost it."""
    return await get_storage().open(key)


async def read_bytes(key: str) -> bytes:
    """A stored document whole (an email attachment)."""
    reader = await read_file(key)
    try:
        return b"".join([chunk async for chunk in reader])
    finally:
        await reader.aclose()


# --- declared uploads ------------------------------------------------------------------------


def clean_declared_file(filename: str, size_bytes: int, *, limit: int) -> tuple[str, int]:
    """A declared upload: a file name (not a path) and a size from 1 byte to ``limit``."""
    name = validation.required_text("filename", filename, max_length=255)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValidationError(
            "filename", "filename must be a file name, not a path", code="INVALID_FILENAME"
        )
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 1:
        raise ValidationError("sizeBytes", "sizeBytes must be at least 1", code="OUT_OF_RANGE")
    if size_bytes > limit:
        raise ValidationError("sizeBytes", f"sizeBytes must be at most {limit}", code="TOO_LARGE")
    return name, size_bytes


# --- signed URLs ---------------------------------------------------------------------------


def signer(purpose: str) -> UrlSigner:
    return UrlSigner(get_settings().signing_key(), purpose)


def sign(purpose: str, kind: str, claims: dict[str, str]) -> SignedUrl:
    """A URL ``/files/<kind>/<token>`` carrying ``claims``, valid for the configured lifetime."""
    token, expires_at = signer(purpose).sign(
        claims, ttl_seconds=get_settings().invoice_url_ttl_seconds
    )
    return SignedUrl(
        f"{get_settings().public_base_url.rstrip('/')}/files/{kind}/{token}", expires_at
    )


def sign_for(purpose: str, kind: str, row_id: uuid.UUID, actor: Actor) -> SignedUrl:
    """A signed URL of one row for one user (what ``token_actor`` reads back)."""
    return sign(purpose, kind, {"i": str(row_id), "u": str(actor.user_id)})


async def token_actor(claims: dict[str, str]) -> tuple[uuid.UUID, Actor]:
    """The row id and the still-active user a verified token was issued for."""
    try:
        row_id = uuid.UUID(claims["i"])
        user_id = uuid.UUID(claims["u"])
    except (KeyError, ValueError):
        raise SignedTokenError("Invalid signature") from None
    user = await User.get_or_none(id=user_id, is_active=True)
    if user is None:
        raise SignedTokenError("This link is no longer valid")
    return row_id, Actor.from_user(user)


async def open_token(purpose: str, token: str) -> tuple[uuid.UUID, Actor]:
    """Verify a signed URL's token: the row it names and the user it was made for."""
    return await token_actor(signer(purpose).verify(token))
