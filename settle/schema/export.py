"""CSV export types: what a user asks to export, and the export as it runs and completes."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from settle.core.tenancy import Actor
from settle.models import export as models
from settle.schema.context import Info
from settle.services import export as export_service

if TYPE_CHECKING:
    from settle.schema.auth import User

ExportEntity = strawberry.enum(
    models.ExportEntity,
    description="What an export holds: one row per client (with its primary contact), "
    "contact, invoice, payment or time entry.",
)
ExportStatus = strawberry.enum(
    models.ExportStatus,
    description="pending (queued) → running → completed (url set) or failed (errorCode set); "
    "a completed export expires (its file deleted) after the retention period.",
)


@strawberry.input
class ExportFilterInput:
    from_: date | None = strawberry.field(
        default=None,
        name="from",
        description="First day, inclusive, of the entity's natural date: a client's or "
        "contact's creation (UTC), an invoice's issue date, a payment's creation (UTC), a time "
        "entry's work date.",
    )
    to: date | None = strawberry.field(
        default=None, description="Last day, inclusive, of the same date."
    )
    client_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only this client's rows (for CLIENTS: only this client)."
    )
    project_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="Only this project's rows: INVOICES, PAYMENTS and TIME_ENTRIES only.",
    )
    status: str | None = strawberry.field(
        default=None,
        description="Only rows in this status (as the InvoiceStatus or PaymentStatus enum, "
        "e.g. SENT or SUCCEEDED): INVOICES and PAYMENTS only.",
    )


@strawberry.input
class CreateExportInput:
    entity: ExportEntity  # type: ignore[valid-type]
    fields: list[str] | None = strawberry.field(
        default=None,
        description="The columns, in this order, by their snake_case header (all of them, in "
        "the documented order, when left out).",
    )
    filter: ExportFilterInput | None = None


@strawberry.type(description="The filter an export was asked with.")
class ExportFilter:
    from_: date | None = strawberry.field(name="from")
    to: date | None
    client_id: strawberry.ID | None
    project_id: strawberry.ID | None
    status: str | None


@strawberry.type(
    description="A CSV export: queued, written by a worker, then downloadable at a signed, "
    "expiring url (UTF-8 with a BOM; money as decimal strings beside a currency column; "
    "dates in ISO 8601)."
)
class Export:
    id: strawberry.ID
    entity: ExportEntity  # type: ignore[valid-type]
    fields: list[str] = strawberry.field(description="The columns, in order.")
    filter: ExportFilter
    status: ExportStatus  # type: ignore[valid-type]
    rows: int = strawberry.field(description="Rows written so far (all of them once completed).")
    total_rows: int | None = strawberry.field(
        description="Rows the filter matched when the export was asked for (rows added or "
        "removed before it runs change what it holds)."
    )
    size_bytes: int | None = strawberry.field(description="The file's size, once completed.")
    url: str | None = strawberry.field(
        description="A signed link to the CSV file, valid until expiresAt; null until completed, "
        "and again once expired."
    )
    expires_at: datetime | None = strawberry.field(
        description="When url stops working (read the export again for a fresh link)."
    )
    error_code: str | None = strawberry.field(
        description="Why it failed: EXPORT_TOO_LARGE, REQUESTER_INACTIVE, PERMISSION_DENIED or "
        "EXPORT_FAILED."
    )
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    _row: strawberry.Private[models.Export]

    @classmethod
    def from_model(cls, row: models.Export, actor: Actor) -> Export:
        signed = export_service.download_url(actor, row)
        stored = export_service.ExportFilter.from_stored(row.filters)
        return cls(
            id=strawberry.ID(str(row.id)),
            entity=row.entity,
            fields=list(row.columns),
            filter=ExportFilter(
                from_=stored.date_from,
                to=stored.date_to,
                client_id=strawberry.ID(str(stored.client_id)) if stored.client_id else None,
                project_id=strawberry.ID(str(stored.project_id)) if stored.project_id else None,
                status=stored.status.upper() if stored.status else None,
            ),
            status=row.status,
            rows=row.rows,
            total_rows=row.total_rows,
            size_bytes=row.size_bytes,
            url=signed.url if signed else None,
            expires_at=signed.expires_at if signed else None,
            error_code=row.error_code,
            error=row.error,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            _row=row,
        )

    @strawberry.field(description="Who asked for it.")
    async def requested_by(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("settle.schema.auth")] | None:
        from settle.schema.auth import User

        if self._row.requested_by_id is None:
            return None
        user = await info.context.loaders.user.load(self._row.requested_by_id)
        return User.from_model(user) if user else None
