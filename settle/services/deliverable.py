"""Deliverables: a project's files, uploaded through signed URLs and opened by payment.

The life of a file:

1. ``create_upload`` (a member) checks the declared size and type, writes the
   row in ``awaiting_upload`` and hands out a signed upload URL.
2. ``PUT /files/upload/<token>`` (``settle.files``) streams the body to storage
   through ``open_upload`` / ``store_upload`` / ``complete_upload``: exactly the
   declared bytes of the declared type, or nothing is kept.
3. ``download_url`` signs a short-lived download URL if ``access_for`` allows
   it; ``GET /files/download/<token>`` checks access again, logs the download
   and streams the file.

Deleting a deliverable is a soft delete (the row and its download log stay);
the file itself is removed once the deletion has committed (``discard_file``).
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from tortoise.expressions import F
from tortoise.queryset import QuerySet

from settle.core import clock, validation
from settle.core.db import get_visible, lock_rows
from settle.core.errors import (
    AccessLockedError,
    ConflictError,
    NotFoundError,
    ValidationError,
)
from settle.core.pagination import Ordering, Page, paginate
from settle.core.settings import get_settings
from settle.core.signing import SignedTokenError, SignedUrl, UrlSigner
from settle.core.storage import ObjectExistsError, ObjectReader, StoredObject, get_storage
from settle.core.tenancy import MANAGERS, MEMBERS, Actor, scoped
from settle.models.agency import User
from settle.models.deliverable import (
    Deliverable,
    DeliverableDownload,
    DeliverableKind,
    DeliverableStatus,
)
from settle.models.milestone import Milestone
from settle.models.project import Project
from settle.services import activity
from settle.services.milestone import ProjectPaymentState, payment_state

UPLOAD_PURPOSE = "deliverable.upload"
DOWNLOAD_PURPOSE = "deliverable.download"

# --- access ------------------------------------------------------------------


class LockReason(StrEnum):
    ADVANCE_UNPAID = "ADVANCE_UNPAID"
    BALANCE_UNPAID = "BALANCE_UNPAID"
    ACCESS_EXPIRED = "ACCESS_EXPIRED"


LOCK_MESSAGES = {
    LockReason.ADVANCE_UNPAID: "This file opens once the advance is paid",
    LockReason.BALANCE_UNPAID: "Final files open once every milestone is paid",
    LockReason.ACCESS_EXPIRED: "Access to this project's files has ended",
}


@dataclass(frozen=True, slots=True)
class Access:
    """Whether the actor may open a file, why not, and when the client's access ends."""

    allowed: bool
    reason: LockReason | None
    expires_at: datetime | None


def access_for(actor: Actor, deliverable: Deliverable, state: ProjectPaymentState) -> Access:
    """The one rule of who may open a deliverable, given its project's payment state.

    Agency members always may. Client users: beta files once the advance is paid
    (or the project has no advance milestone); final files once every milestone
    is paid (a final file behind an unpaid advance says ADVANCE_UNPAID, the first
    thing to pay). Every file closes to client users ``deliverable_access_days``
    after the final files unlocked, the moment the last milestone was paid.
    ``expires_at`` is that moment plus the period, whoever asks: null until the
    final files have unlocked.
    """
    if not actor.is_client_user:
        return Access(True, None, _expires_at(state))
    return client_access(deliverable, state)


def _expires_at(state: ProjectPaymentState) -> datetime | None:
    if state.all_paid_at is None:
        return None
    return state.all_paid_at + timedelta(days=get_settings().deliverable_access_days)


def client_access(deliverable: Deliverable, state: ProjectPaymentState) -> Access:
    """Whether the project's client users may open the deliverable now (``access_for``'s rule)."""
    expires_at = _expires_at(state)
    reason: LockReason | None = None
    if expires_at is not None and clock.now() >= expires_at:
        reason = LockReason.ACCESS_EXPIRED
    elif state.has_advance and state.advance_paid_at is None:
        reason = LockReason.ADVANCE_UNPAID
    elif deliverable.kind == DeliverableKind.FINAL and state.all_paid_at is None:
        reason = LockReason.BALANCE_UNPAID
    return Access(reason is None, reason, expires_at)


def require_access(actor: Actor, deliverable: Deliverable, state: ProjectPaymentState) -> None:
    """AccessLockedError with the reason unless ``access_for`` allows the actor in."""
    access = access_for(actor, deliverable, state)
    if access.reason is not None:
        raise AccessLockedError(access.reason.value, LOCK_MESSAGES[access.reason])


async def project_payment_state(project_id: uuid.UUID) -> ProjectPaymentState:
    return (await payment_state([project_id]))[project_id]


# --- reading -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliverableFilter:
    project_id: uuid.UUID | None = None
    kind: DeliverableKind | None = None


def _deliverables(actor: Actor) -> QuerySet[Deliverable]:
    qs = scoped(Deliverable, actor).filter(deleted_at__isnull=True)
    if actor.is_client_user:
        # A file not uploaded yet is the agency's work in progress.
        qs = qs.filter(status=DeliverableStatus.READY)
    return qs


async def get_deliverable(actor: Actor, deliverable_id: uuid.UUID) -> Deliverable:
    """A deliverable the actor may see, or NotFoundError (also for other agencies' ids)."""
    return await get_visible(_deliverables(actor), deliverable_id, "Deliverable")


async def list_deliverables(
    actor: Actor, flt: DeliverableFilter, *, first: int | None, after: str | None
) -> Page[Deliverable]:
    """The deliverables the actor may see (locked ones included), newest first."""
    qs = _deliverables(actor)
    if flt.project_id is not None:
        qs = qs.filter(project_id=flt.project_id)
    if flt.kind is not None:
        qs = qs.filter(kind=flt.kind)
    return await paginate(qs, first=first, after=after, ordering=deliverable_ordering())


def deliverable_ordering() -> Ordering:
    return Ordering("created_at", descending=True)


async def deliverables_for_projects(
    actor: Actor, project_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Deliverable]]:
    """Each project's deliverables, newest first, in one query (for loaders)."""
    rows = (
        await _deliverables(actor)
        .filter(project_id__in=list(project_ids))
        .order_by("project_id", "-created_at", "-id")
    )
    grouped: dict[uuid.UUID, list[Deliverable]] = defaultdict(list)
    for row in rows:
        grouped[row.project_id].append(row)
    return grouped


# --- creating an upload ----------------------------------------------------------

_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


def media_type(value: str | None) -> str | None:
    """The bare, lower-case media type of a Content-Type value; None if it is not one.

    Parameters (``; charset=utf-8``) are dropped: files are stored and served
    byte for byte, as attachments, so only the type itself is declared and kept.
    """
    text = (value or "").split(";", 1)[0].strip().lower()
    return text if len(text) <= 127 and _MEDIA_TYPE.match(text) else None


def clean_upload_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Validate a declared upload: title, kind, filename, content type and size."""
    settings = get_settings()
    cleaned: dict[str, Any] = {}
    cleaned["title"] = validation.required_text("title", values.get("title"), max_length=200)
    try:
        cleaned["kind"] = DeliverableKind(str(values.get("kind")))
    except ValueError:
        raise ValidationError("kind", "kind must be beta or final") from None
    filename = validation.required_text("filename", values.get("filename"), max_length=255)
    if "/" in filename or "\\" in filename or filename in (".", ".."):
        raise ValidationError(
            "filename", "filename must be a file name, not a path", code="INVALID_FILENAME"
        )
    cleaned["filename"] = filename
    content_type = media_type(values.get("content_type"))
    if content_type is None:
        raise ValidationError(
            "contentType", "contentType must be a media type", code="INVALID_CONTENT_TYPE"
        )
    allowed = {t.lower() for t in settings.deliverable_content_types}
    if content_type not in allowed:
        raise ValidationError(
            "contentType",
            f"contentType {content_type} is not allowed; allowed: {', '.join(sorted(allowed))}",
            code="CONTENT_TYPE_NOT_ALLOWED",
        )
    cleaned["content_type"] = content_type
    size = values.get("size_bytes")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValidationError("sizeBytes", "sizeBytes must be at least 1", code="OUT_OF_RANGE")
    if size > settings.deliverable_max_bytes:
        raise ValidationError(
            "sizeBytes",
            f"sizeBytes must be at most {settings.deliverable_max_bytes}",
            code="TOO_LARGE",
        )
    cleaned["size_bytes"] = size
    return cleaned


@dataclass(frozen=True, slots=True)
class Upload:
    deliverable: Deliverable
    upload: SignedUrl


def _signer(purpose: str) -> UrlSigner:
    return UrlSigner(get_settings().signing_key(), purpose)


def _file_url(kind: str, token: str) -> str:
    return f"{get_settings().public_base_url.rstrip('/')}/files/{kind}/{token}"


def storage_key(agency_id: uuid.UUID, project_id: uuid.UUID, deliverable_id: uuid.UUID) -> str:
    return f"deliverables/{agency_id}/{project_id}/{deliverable_id}"


async def create_upload(
    actor: Actor,
    project_id: uuid.UUID,
    values: dict[str, Any],
    *,
    milestone_id: uuid.UUID | None = None,
) -> Upload:
    """Declare a file of a project (members) and get the signed URL to PUT it to."""
    actor.require(*MEMBERS)
    data = clean_upload_fields(values)
    project = await scoped(Project, actor).get_or_none(id=project_id)
    if project is None:
        raise NotFoundError("Project", project_id)
    if milestone_id is not None:
        milestone = await scoped(Milestone, actor).get_or_none(id=milestone_id)
        if milestone is None:
            raise NotFoundError("Milestone", milestone_id)
        if milestone.project_id != project.id:
            raise ValidationError(
                "milestoneId", "milestoneId must be a milestone of the project", code="MISMATCH"
            )
    deliverable_id = uuid.uuid4()
    deliverable = await Deliverable.create(
        id=deliverable_id,
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        milestone_id=milestone_id,
        storage_key=storage_key(project.agency_id, project.id, deliverable_id),
        **data,
    )
    await activity.record(
        actor,
        agency_id=deliverable.agency_id,
        client_id=deliverable.client_id,
        entity_type="deliverable",
        entity_id=deliverable.id,
        verb="created",
        summary=f"Deliverable {deliverable.title} added to {project.name}, awaiting upload",
        changes=activity.snapshot(
            {
                **data,
                "project_id": project.id,
                "milestone_id": milestone_id,
                "status": deliverable.status,
            }
        ),
    )
    token, expires_at = _signer(UPLOAD_PURPOSE).sign(
        {"d": str(deliverable.id), "u": str(actor.user_id)},
        ttl_seconds=get_settings().upload_url_ttl_seconds,
    )
    return Upload(deliverable, SignedUrl(_file_url("upload", token), expires_at))


# --- receiving the file ------------------------------------------------------------


class UploadRejectedError(ValidationError):
    """The body is not the file that was declared."""


@dataclass(frozen=True, slots=True)
class PendingUpload:
    """A verified upload URL: the row waiting for its file and who is sending it."""

    deliverable: Deliverable
    actor: Actor


async def _token_actor(claims: dict[str, str]) -> tuple[uuid.UUID, Actor]:
    """The deliverable id and the still-active user a verified token was issued for."""
    try:
        deliverable_id = uuid.UUID(claims["d"])
        user_id = uuid.UUID(claims["u"])
    except (KeyError, ValueError):
        raise SignedTokenError("Invalid signature") from None
    user = await User.get_or_none(id=user_id, is_active=True)
    if user is None:
        raise SignedTokenError("This link is no longer valid")
    return deliverable_id, Actor.from_user(user)


async def open_upload(
    token: str, *, content_type: str | None, content_length: str | None
) -> PendingUpload:
    """Check an upload before reading its body: the URL, the row, the declared type and size.

    SignedTokenError for a forged or expired URL; NotFoundError if the
    deliverable is gone; ConflictError once its file is in; UploadRejectedError
    when the Content-Type or Content-Length contradict the declaration.
    """
    deliverable_id, actor = await _token_actor(_signer(UPLOAD_PURPOSE).verify(token))
    deliverable = await _deliverables(actor).get_or_none(id=deliverable_id)
    if deliverable is None:
        raise NotFoundError("Deliverable", deliverable_id)
    if deliverable.status == DeliverableStatus.READY:
        raise ConflictError("This deliverable's file has already been uploaded")
    if media_type(content_type) != deliverable.content_type:
        raise UploadRejectedError(
            "contentType",
            f"Content-Type must be {deliverable.content_type}, as declared",
            code="CONTENT_TYPE_MISMATCH",
        )
    if content_length is not None and content_length.strip() != str(deliverable.size_bytes):
        raise _size_mismatch(deliverable)
    return PendingUpload(deliverable, actor)


def _size_mismatch(deliverable: Deliverable) -> UploadRejectedError:
    return UploadRejectedError(
        "sizeBytes",
        f"The body must be exactly {deliverable.size_bytes} bytes, as declared",
        code="SIZE_MISMATCH",
    )


async def _exactly(chunks: AsyncIterable[bytes], deliverable: Deliverable) -> AsyncIterator[bytes]:
    """The chunks, failing (so storage keeps nothing) as soon as they differ from the size."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > deliverable.size_bytes:
            raise _size_mismatch(deliverable)
        if chunk:
            yield chunk
    if received != deliverable.size_bytes:
        raise _size_mismatch(deliverable)


async def store_upload(pending: PendingUpload, chunks: AsyncIterable[bytes]) -> StoredObject:
    """Stream the body to storage: exactly the declared bytes, or nothing is kept.

    Runs outside any transaction (a large file must not hold one open).
    ConflictError if another upload of the same URL got there first.
    """
    try:
        return await get_storage().put(
            pending.deliverable.storage_key, _exactly(chunks, pending.deliverable)
        )
    except ObjectExistsError:
        raise ConflictError("This deliverable's file has already been uploaded") from None


async def complete_upload(pending: PendingUpload, stored: StoredObject) -> Deliverable:
    """Mark the deliverable ready with its checksum (inside the request's transaction).

    NotFoundError if it was deleted while the file streamed in; the caller then
    discards the stored file.
    """
    deliverable = await lock_rows(
        Deliverable.filter(id=pending.deliverable.id, deleted_at__isnull=True)
    ).first()
    if deliverable is None:
        raise NotFoundError("Deliverable", pending.deliverable.id)
    if deliverable.status == DeliverableStatus.READY:
        raise ConflictError("This deliverable's file has already been uploaded")
    data = {
        "status": DeliverableStatus.READY,
        "checksum_sha256": stored.sha256,
        "uploaded_at": clock.now(),
        "uploaded_by_id": pending.actor.user_id,
    }
    before = {key: getattr(deliverable, key) for key in data}
    deliverable.update_from_dict(data)
    await deliverable.save(update_fields=[*data.keys(), "updated_at"])
    await activity.record(
        pending.actor,
        agency_id=deliverable.agency_id,
        client_id=deliverable.client_id,
        entity_type="deliverable",
        entity_id=deliverable.id,
        verb="uploaded",
        summary=f"{pending.actor.name} uploaded {deliverable.filename} for {deliverable.title}",
        changes=activity.diff(before, data),
    )
    return deliverable


async def discard_file(deliverable: Deliverable) -> None:
    """Remove a deliverable's file from storage (after its deletion or failed upload)."""
    await get_storage().delete(deliverable.storage_key)


# --- downloading ---------------------------------------------------------------------


async def download_url(actor: Actor, deliverable_id: uuid.UUID) -> SignedUrl:
    """A signed download URL, if the actor may open the file; AccessLockedError says why not."""
    deliverable = await get_deliverable(actor, deliverable_id)
    if deliverable.status != DeliverableStatus.READY:
        raise ConflictError("This deliverable's file has not been uploaded yet")
    require_access(actor, deliverable, await project_payment_state(deliverable.project_id))
    token, expires_at = _signer(DOWNLOAD_PURPOSE).sign(
        {"d": str(deliverable.id), "u": str(actor.user_id)},
        ttl_seconds=get_settings().download_url_ttl_seconds,
    )
    return SignedUrl(_file_url("download", token), expires_at)


@dataclass(frozen=True, slots=True)
class Download:
    deliverable: Deliverable
    actor: Actor


async def open_download(token: str) -> Download:
    """Check a download URL, and access again: a refund or expiry since signing counts.

    SignedTokenError for a forged or expired URL; NotFoundError if the file is
    gone; AccessLockedError if the user may no longer open it.
    """
    deliverable_id, actor = await _token_actor(_signer(DOWNLOAD_PURPOSE).verify(token))
    deliverable = await _deliverables(actor).get_or_none(id=deliverable_id)
    if deliverable is None or deliverable.status != DeliverableStatus.READY:
        raise NotFoundError("Deliverable", deliverable_id)
    require_access(actor, deliverable, await project_payment_state(deliverable.project_id))
    return Download(deliverable, actor)


async def read_file(deliverable: Deliverable) -> ObjectReader:
    """The stored file as a stream; ObjectNotFoundError if storage has lost it."""
    return await get_storage().open(deliverable.storage_key)


async def record_download(download: Download) -> None:
    """Log who downloaded the file, and count it with one atomic increment."""
    await DeliverableDownload.create(
        agency_id=download.deliverable.agency_id,
        deliverable_id=download.deliverable.id,
        user_id=download.actor.user_id,
        created_at=clock.now(),
    )
    await Deliverable.filter(id=download.deliverable.id).update(
        download_count=F("download_count") + 1
    )


# --- deleting ---------------------------------------------------------------------------


async def delete_deliverable(actor: Actor, deliverable_id: uuid.UUID) -> Deliverable:
    """Soft-delete a deliverable (managers). Call ``discard_file`` once this has committed."""
    # Locked so an upload finishing at the same moment sees the deletion or precedes it.
    deliverable = await lock_rows(_deliverables(actor).filter(id=deliverable_id)).first()
    if deliverable is None:
        raise NotFoundError("Deliverable", deliverable_id)
    actor.require(*MANAGERS)
    deliverable.deleted_at = clock.now()
    await deliverable.save(update_fields=["deleted_at", "updated_at"])
    await activity.record(
        actor,
        agency_id=deliverable.agency_id,
        client_id=deliverable.client_id,
        entity_type="deliverable",
        entity_id=deliverable.id,
        verb="deleted",
        summary=f"Deliverable {deliverable.title} deleted",
        changes=activity.diff({"deleted_at": None}, {"deleted_at": deliverable.deleted_at}),
    )
    return deliverable
