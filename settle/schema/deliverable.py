"""Deliverable types: a project's files, their upload and download URLs, and who may open them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from settle.models import deliverable as models
from settle.schema.context import Info
from settle.services import deliverable as deliverable_service

if TYPE_CHECKING:
    from settle.schema.auth import User

DeliverableKind = strawberry.enum(
    models.DeliverableKind,
    description="BETA opens to the client once the advance is paid; FINAL once every "
    "milestone is paid.",
)
DeliverableStatus = strawberry.enum(
    models.DeliverableStatus,
    description="AWAITING_UPLOAD until the file is PUT to its upload URL, then READY.",
)
DeliverableLock = strawberry.enum(
    deliverable_service.LockReason,
    name="DeliverableLock",
    description="Why a client user cannot open a file: the same codes AccessLockedError carries.",
)


@strawberry.type(description="A file of a project, opened to the client by what it has paid.")
class Deliverable:
    id: strawberry.ID
    project_id: strawberry.ID
    milestone_id: strawberry.ID | None
    title: str
    kind: DeliverableKind  # type: ignore[valid-type]
    status: DeliverableStatus  # type: ignore[valid-type]
    filename: str
    content_type: str
    size_bytes: int
    checksum: str | None = strawberry.field(description="SHA-256 of the file, hex; set on upload.")
    uploaded_at: datetime | None
    download_count: int
    created_at: datetime
    updated_at: datetime
    _row: strawberry.Private[models.Deliverable]

    @classmethod
    def from_model(cls, deliverable: models.Deliverable) -> Deliverable:
        return cls(
            id=strawberry.ID(str(deliverable.id)),
            project_id=strawberry.ID(str(deliverable.project_id)),
            milestone_id=(
                strawberry.ID(str(deliverable.milestone_id)) if deliverable.milestone_id else None
            ),
            title=deliverable.title,
            kind=deliverable.kind,
            status=deliverable.status,
            filename=deliverable.filename,
            content_type=deliverable.content_type,
            size_bytes=deliverable.size_bytes,
            checksum=deliverable.checksum_sha256,
            uploaded_at=deliverable.uploaded_at,
            download_count=deliverable.download_count,
            created_at=deliverable.created_at,
            updated_at=deliverable.updated_at,
            _row=deliverable,
        )

    async def _access(self, info: Info) -> deliverable_service.Access:
        actor = info.context.actor
        assert actor is not None, "deliverables are only resolved for an authenticated actor"
        state = await info.context.loaders.payment_state.load(self._row.project_id)
        return deliverable_service.access_for(actor, self._row, state)

    @strawberry.field(
        description="When client users lose access to the project's files: null until the "
        "final files unlock (every milestone paid)."
    )
    async def access_expires_at(self, info: Info) -> datetime | None:
        return (await self._access(info)).expires_at

    @strawberry.field(description="Why the viewer cannot open the file; null when they can.")
    async def locked(self, info: Info) -> DeliverableLock | None:  # type: ignore[valid-type]
        return (await self._access(info)).reason

    @strawberry.field(description="Who uploaded the file.")
    async def uploaded_by(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("settle.schema.auth")] | None:
        from settle.schema.auth import User

        if self._row.uploaded_by_id is None:
            return None
        user = await info.context.loaders.user.load(self._row.uploaded_by_id)
        return User.from_model(user) if user else None


@strawberry.type(
    description="Where to send the file: PUT the exact bytes to `uploadUrl` before `expiresAt`, "
    "with the declared Content-Type."
)
class DeliverableUpload:
    deliverable: Deliverable
    upload_url: str
    expires_at: datetime

    @classmethod
    def from_value(cls, upload: deliverable_service.Upload) -> DeliverableUpload:
        return cls(
            deliverable=Deliverable.from_model(upload.deliverable),
            upload_url=upload.upload.url,
            expires_at=upload.upload.expires_at,
        )


@strawberry.type(description="A signed link to the file; GET it before `expiresAt`.")
class DownloadUrl:
    url: str
    expires_at: datetime

    @classmethod
    def from_value(cls, signed: deliverable_service.SignedUrl) -> DownloadUrl:
        return cls(url=signed.url, expires_at=signed.expires_at)


@strawberry.input
class CreateDeliverableUploadInput:
    project_id: strawberry.ID
    title: str
    kind: DeliverableKind  # type: ignore[valid-type]
    filename: str = strawberry.field(description="The file's name, shown when it is downloaded.")
    content_type: str = strawberry.field(
        description="Media type from the allow-list (SETTLE_DELIVERABLE_CONTENT_TYPES); the "
        "upload must send the same Content-Type."
    )
    size_bytes: int = strawberry.field(
        description="Exact size of the file; at most SETTLE_DELIVERABLE_MAX_BYTES."
    )
    milestone_id: strawberry.ID | None = strawberry.field(
        default=None, description="The milestone this file delivers, of the same project."
    )


@strawberry.input
class DeliverableFilter:
    project_id: strawberry.ID | None = None
    kind: DeliverableKind | None = None  # type: ignore[valid-type]
