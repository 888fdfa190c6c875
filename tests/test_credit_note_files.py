"""Credit note PDFs through the real ASGI app: ``GET /files/credit-notes/<token>``.

A credit note is issued through the service and rendered by the in-process
worker; its signed URL is then used as the agency's and its client's users would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from settle.core import clock
from settle.core.outbox import transaction
from settle.models.agency import Role, User
from settle.models.client import Client
from settle.models.invoice import CreditNote
from settle.services import credit_note as credit_note_service
from settle.services import credit_note_files
from tests.conftest import Backend
from tests.fixtures.factories import (
    Account,
    create_client,
    create_invoice,
    create_user,
    issue_invoice,
)
from tests.fixtures.files import forged_url, pdf_headers, pdf_text, stored_files, tamper

pytestmark = pytest.mark.usefixtures("files_dir")

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
PDF_HEADERS = pdf_headers("CN-2026-0001.pdf")


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.set_clock(lambda: NOW)
    yield
    clock.set_clock(None)


@dataclass
class Setup:
    client: Client
    note: CreditNote
    viewer: Account


async def setup_credited(db: Backend, owner: Account) -> Setup:
    """A credit note CN-2026-0001 of $75.25 on INV-2026-0001, rendered, and a client viewer."""
    client = await create_client(owner, name="Acme", currency="USD")
    invoice = await issue_invoice(owner, await create_invoice(owner, client))
    async with transaction():
        note = await credit_note_service.issue_credit_note(
            owner.actor, invoice.id, "75.25", "Hosting was down for a week"
        )
    # The worker renders the PDF after the credit note is committed.
    await db.drain()
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client, name="Vic Viewer")
    return Setup(client, await CreditNote.get(id=note.id), viewer)


async def pdf_url(account: Account, note: CreditNote) -> str:
    signed = await credit_note_files.pdf_url(account.actor, note.id)
    assert signed is not None
    return signed.url


async def test_the_owner_and_the_clients_user_download_the_pdf(
    db: Backend, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given a rendered credit note
    setup = await setup_credited(db, owner)
    stored = stored_files(files_dir)[str(setup.note.pdf_key)]

    # when the owner and then the client's user download it
    responses = [await http.get(await pdf_url(a, setup.note)) for a in (owner, setup.viewer)]

    # then both get the stored PDF, named after the number, never cached
    for response in responses:
        assert response.status_code == 200
        assert {key: response.headers.get(key) for key in PDF_HEADERS} == PDF_HEADERS
        assert response.content == stored
    text = pdf_text(stored)
    for expected in ("CREDIT NOTE", "CN-2026-0001", "Invoice INV-2026-0001", "$75.25"):
        assert expected in text, expected

    # when its headers alone are asked for, then they describe the PDF without a length
    head = await http.head(await pdf_url(setup.viewer, setup.note))
    assert head.status_code == 200
    assert {key: head.headers.get(key) for key in PDF_HEADERS} == PDF_HEADERS
    assert "content-length" not in head.headers


async def test_users_who_cannot_see_the_credit_note_get_not_found(
    db: Backend, http: httpx.AsyncClient, owner: Account, rival: Account
) -> None:
    # given a credit note, and URLs signed for users who cannot see it
    setup = await setup_credited(db, owner)
    other = await create_client(owner, name="Other", currency="USD")
    other_user = await create_user(owner, role=Role.CLIENT_LEAD, client=other)
    attempts = [
        forged_url("credit-notes", "credit_note.download", setup.note.id, rival.user),
        forged_url("credit-notes", "credit_note.download", setup.note.id, other_user.user),
    ]
    # when each is used, then each finds nothing
    responses = [await http.get(url) for url in attempts]
    assert [(r.status_code, r.json()) for r in responses] == [
        (404, {"code": "NOT_FOUND", "message": "CreditNote not found"})
    ] * 2


async def test_a_deactivated_user_or_a_tampered_or_expired_url_is_forbidden(
    db: Backend, http: httpx.AsyncClient, owner: Account
) -> None:
    # given download URLs of the owner and of the client's user
    setup = await setup_credited(db, owner)
    owner_url = await pdf_url(owner, setup.note)
    viewer_url = await pdf_url(setup.viewer, setup.note)

    # when one is altered, used on an invoice's route, its user is deactivated, or the
    # owner's is used once its 15 minutes are over
    await User.filter(id=setup.viewer.user.id).update(is_active=False)
    tampered = await http.get(tamper(owner_url))
    elsewhere = await http.get(owner_url.replace("/files/credit-notes/", "/files/invoices/"))
    deactivated = await http.get(viewer_url)
    clock.set_clock(lambda: NOW + timedelta(minutes=15))
    late = await http.get(owner_url)

    # then each is forbidden, saying why
    assert [
        (r.status_code, r.json()["code"], r.json()["message"])
        for r in (tampered, elsewhere, deactivated, late)
    ] == [
        (403, "INVALID_SIGNATURE", "Invalid signature"),
        (403, "INVALID_SIGNATURE", "Invalid signature"),
        (403, "INVALID_SIGNATURE", "This link is no longer valid"),
        (403, "URL_EXPIRED", "This link has expired"),
    ]


async def test_a_pdf_lost_from_storage_is_not_found(
    db: Backend, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given a credit note whose stored PDF has gone
    setup = await setup_credited(db, owner)
    url = await pdf_url(owner, setup.note)
    (files_dir / str(setup.note.pdf_key)).unlink()
    # when it is downloaded, then it is not found
    response = await http.get(url)
    assert (response.status_code, response.json()) == (
        404,
        {"code": "NOT_FOUND", "message": "Credit note PDF not found"},
    )
