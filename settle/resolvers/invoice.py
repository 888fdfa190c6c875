"""Invoice resolvers: parse input, call the invoice service, map the result."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any

import strawberry

from settle.core.outbox import transaction
from settle.core.tenancy import Actor
from settle.models import invoice as models
from settle.resolvers.common import (
    find_one,
    mutate,
    parse_id,
    provided,
    public_errors,
    query,
    require_actor,
)
from settle.schema.activity import ActivityEvent
from settle.schema.common import Connection, SortDirection
from settle.schema.context import Info
from settle.schema.deliverable import DownloadUrl
from settle.schema.errors import (
    ConflictError,
    InvalidTransitionError,
    InvoiceNotEditableError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.schema.invoice import (
    CreateInvoiceInput,
    DeletedInvoice,
    Invoice,
    InvoiceDelivery,
    InvoiceDiscountInput,
    InvoiceFilter,
    InvoiceLineInput,
    InvoiceLinePayload,
    InvoiceOrder,
    InvoiceUpload,
    TimeGrouping,
    UpdateInvoiceInput,
    UpdateInvoiceLineInput,
)
from settle.services import activity as activity_service
from settle.services import invoice as invoice_service

_Errors = (
    ValidationError
    | NotFoundError
    | PermissionDeniedError
    | ConflictError
    | InvalidTransitionError
    | InvoiceNotEditableError
)
InvoiceResult = Annotated[Invoice | _Errors, strawberry.union("InvoiceResult")]
InvoiceLineResult = Annotated[InvoiceLinePayload | _Errors, strawberry.union("InvoiceLineResult")]
DeleteInvoiceResult = Annotated[DeletedInvoice | _Errors, strawberry.union("DeleteInvoiceResult")]
InvoiceUploadResult = Annotated[
    InvoiceUpload | ValidationError | NotFoundError | PermissionDeniedError | ConflictError,
    strawberry.union("InvoiceUploadResult"),
]
InvoicePreviewUrlResult = Annotated[
    DownloadUrl | NotFoundError | PermissionDeniedError | ConflictError,
    strawberry.union("InvoicePreviewUrlResult"),
]


def _discount(value: InvoiceDiscountInput | None) -> invoice_service.DiscountInput | None:
    return None if value is None else invoice_service.DiscountInput(value.kind, value.value)


def _line_values(line: InvoiceLineInput | UpdateInvoiceLineInput) -> dict[str, Any]:
    """A line input as the service's fields (UNSET stays, for ``provided`` to drop)."""
    return {
        "description": line.description,
        "quantity": line.quantity,
        "unit_price": line.unit_price,
        "tax_rate": line.tax_rate,
        "position": line.position,
    }


def _new_line_values(line: InvoiceLineInput) -> dict[str, Any]:
    values = _line_values(line)
    if line.position is None:
        # No position: after the last line (the service numbers it).
        del values["position"]
    return values


# --- queries -----------------------------------------------------------------------


async def invoices(
    info: Info,
    first: int = 20,
    after: str | None = None,
    filter: InvoiceFilter | None = None,
    order_by: InvoiceOrder | None = None,
) -> Connection[Invoice]:
    """Invoices the caller may see (a client user's, never drafts), newest first by default."""
    actor = require_actor(info)
    flt = filter or InvoiceFilter()
    order = order_by or InvoiceOrder()
    with public_errors():
        client_id = None if flt.client_id is None else parse_id(flt.client_id, "filter.clientId")
        project_id = (
            None if flt.project_id is None else parse_id(flt.project_id, "filter.projectId")
        )
        page = await invoice_service.list_invoices(
            actor,
            invoice_service.InvoiceFilter(
                status=flt.status,
                client_id=client_id,
                project_id=project_id,
                issued_from=flt.from_,
                issued_to=flt.to,
                overdue=flt.overdue,
                currency=flt.currency,
            ),
            first=first,
            after=after,
            order_by=order.field,
            descending=order.direction is SortDirection.DESC,
        )
    return Connection.from_page(page, Invoice.from_model)


async def invoice(info: Info, id: strawberry.ID) -> Invoice | None:
    """An invoice by id; a client user opening a sent one marks it viewed."""
    actor = require_actor(info)

    async def fetch(row_id: uuid.UUID) -> models.Invoice:
        if actor.is_client_user:
            # The view is the client's act, recorded even though this is a query; in a
            # transaction of its own, beside the query's read-only snapshot.
            async with transaction():
                viewed = await invoice_service.record_client_view(actor, row_id)
            if viewed is not None:
                return viewed
        return await invoice_service.get_invoice(actor, row_id)

    return await find_one(id, fetch, Invoice.from_model)


async def invoice_preview_url(info: Info, id: strawberry.ID) -> InvoicePreviewUrlResult:
    from settle.services import invoice_files

    actor = require_actor(info)

    async def run() -> DownloadUrl:
        return DownloadUrl.from_value(await invoice_files.preview_url(actor, parse_id(id)))

    return await query(run)  # type: ignore[return-value]


async def invoice_pdf_url(info: Info, invoice_id: uuid.UUID) -> DownloadUrl | None:
    """Invoice.pdfUrl: a signed link to the document, once there is one.

    The invoice is read again (one query for a whole list) for a document
    stored since the parent row was read, say, by the mutation that returns it.
    """
    from settle.services import invoice_files

    actor = require_actor(info)
    invoice = await info.context.loaders.invoice.load(invoice_id)
    signed = None if invoice is None else invoice_files.signed_pdf_url(actor, invoice)
    return None if signed is None else DownloadUrl.from_value(signed)


async def invoice_deliveries(info: Info, invoice_id: uuid.UUID) -> list[InvoiceDelivery]:
    """Invoice.deliveries, newest first: one query for a whole list of invoices."""
    require_actor(info)
    rows = await info.context.loaders.invoice_deliveries.load(invoice_id)
    return [InvoiceDelivery.from_model(row) for row in rows]


async def invoice_timeline(
    info: Info, invoice_id: uuid.UUID, *, first: int, after: str | None
) -> Connection[ActivityEvent]:
    """Invoice.timeline: the caller's timeline narrowed to this invoice, newest first.

    The invoices of a list get their pages through one loader.
    """
    require_actor(info)
    loader = info.context.loaders.timelines(
        activity_service.TimelineFilter(entity_types=("invoice",)),
        "entity_id",
        first=first,
        after=after,
    )
    with public_errors():
        page = await loader.load(invoice_id)
    return Connection.from_page(page, ActivityEvent.from_model)


# --- drafts -------------------------------------------------------------------------


async def create_invoice(info: Info, input: CreateInvoiceInput) -> InvoiceResult:
    actor = require_actor(info)
    values: dict[str, Any] = {
        "due_date": input.due_date,
        "notes": input.notes,
        "terms": input.terms,
        "discount": _discount(input.discount),
    }
    if input.tax_rate is not None:
        values["tax_rate"] = input.tax_rate
    lines = [_new_line_values(line) for line in input.lines]

    async def run() -> Invoice:
        project_id = None if input.project_id is None else parse_id(input.project_id, "projectId")
        return Invoice.from_model(
            await invoice_service.create_invoice(
                actor, parse_id(input.client_id, "clientId"), project_id, values, lines
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def update_invoice(info: Info, id: strawberry.ID, input: UpdateInvoiceInput) -> InvoiceResult:
    actor = require_actor(info)
    values = provided(
        {
            "due_date": input.due_date,
            "notes": input.notes,
            "terms": input.terms,
            "tax_rate": input.tax_rate,
            "discount": input.discount,
        }
    )
    if "discount" in values:
        values["discount"] = _discount(values["discount"])

    async def run() -> Invoice:
        return Invoice.from_model(await invoice_service.update_invoice(actor, parse_id(id), values))

    return await mutate(run)  # type: ignore[return-value]


async def add_invoice_line(
    info: Info, invoice_id: strawberry.ID, input: InvoiceLineInput
) -> InvoiceLineResult:
    actor = require_actor(info)
    values = _new_line_values(input)

    async def run() -> InvoiceLinePayload:
        invoice, line = await invoice_service.add_invoice_line(
            actor, parse_id(invoice_id, "invoiceId"), values
        )
        return InvoiceLinePayload.from_models(invoice, line)

    return await mutate(run)  # type: ignore[return-value]


async def update_invoice_line(
    info: Info, id: strawberry.ID, input: UpdateInvoiceLineInput
) -> InvoiceLineResult:
    actor = require_actor(info)
    values = provided(_line_values(input))

    async def run() -> InvoiceLinePayload:
        invoice, line = await invoice_service.update_invoice_line(actor, parse_id(id), values)
        return InvoiceLinePayload.from_models(invoice, line)

    return await mutate(run)  # type: ignore[return-value]


async def remove_invoice_line(info: Info, id: strawberry.ID) -> InvoiceResult:
    actor = require_actor(info)

    async def run() -> Invoice:
        return Invoice.from_model(await invoice_service.remove_invoice_line(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


async def delete_invoice(info: Info, id: strawberry.ID) -> DeleteInvoiceResult:
    actor = require_actor(info)

    async def run() -> DeletedInvoice:
        deleted = await invoice_service.delete_invoice(actor, parse_id(id))
        return DeletedInvoice(id=strawberry.ID(str(deleted.id)))

    return await mutate(run)  # type: ignore[return-value]


async def create_invoice_upload(
    info: Info, invoice_id: strawberry.ID, filename: str, size_bytes: int
) -> InvoiceUploadResult:
    actor = require_actor(info)
    return await _upload(actor, lambda: _id_of(invoice_id, "invoiceId"), filename, size_bytes)


async def create_payment_upload(
    info: Info, payment_id: strawberry.ID, filename: str, size_bytes: int
) -> InvoiceUploadResult:
    from settle.services import payment as payment_service

    actor = require_actor(info)

    async def target() -> uuid.UUID:
        return await payment_service.invoice_of_payment(actor, parse_id(payment_id, "paymentId"))

    return await _upload(actor, target, filename, size_bytes)


async def _id_of(value: strawberry.ID, field: str) -> uuid.UUID:
    return parse_id(value, field)


async def _upload(
    actor: Actor,
    target: Callable[[], Awaitable[uuid.UUID]],
    filename: str,
    size_bytes: int,
) -> InvoiceUploadResult:
    from settle.services import invoice_files

    async def run() -> InvoiceUpload:
        upload = await invoice_files.create_upload(
            actor, await target(), filename=filename, size_bytes=size_bytes
        )
        return InvoiceUpload(
            invoice=Invoice.from_model(upload.invoice),
            upload_url=upload.upload.url,
            expires_at=upload.upload.expires_at,
        )

    return await mutate(run)  # type: ignore[return-value]


# --- the lifecycle ------------------------------------------------------------------


async def finalize_invoice(info: Info, id: strawberry.ID) -> InvoiceResult:
    actor = require_actor(info)

    async def run() -> Invoice:
        return Invoice.from_model(await invoice_service.finalize_invoice(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


async def send_invoice(
    info: Info,
    id: strawberry.ID,
    to: list[str] | None = None,
    cc: list[str] | None = None,
    message: str | None = None,
) -> InvoiceResult:
    actor = require_actor(info)

    async def run() -> Invoice:
        return Invoice.from_model(
            await invoice_service.send_invoice(actor, parse_id(id), to=to, cc=cc, message=message)
        )

    return await mutate(run)  # type: ignore[return-value]


async def resend_invoice_email(info: Info, id: strawberry.ID) -> InvoiceResult:
    actor = require_actor(info)

    async def run() -> Invoice:
        return Invoice.from_model(await invoice_service.resend_invoice_email(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


async def mark_invoice_viewed(info: Info, id: strawberry.ID) -> InvoiceResult:
    actor = require_actor(info)

    async def run() -> Invoice:
        return Invoice.from_model(await invoice_service.mark_invoice_viewed(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


async def void_invoice(info: Info, id: strawberry.ID, reason: str) -> InvoiceResult:
    actor = require_actor(info)

    async def run() -> Invoice:
        return Invoice.from_model(await invoice_service.void_invoice(actor, parse_id(id), reason))

    return await mutate(run)  # type: ignore[return-value]


# --- from time and milestones -------------------------------------------------------


async def create_invoice_from_time_entries(
    info: Info,
    project_id: strawberry.ID,
    from_: Annotated[date, strawberry.argument(name="from")],
    to: date,
    group_by: TimeGrouping = invoice_service.TimeGrouping.TASK,  # type: ignore[valid-type]
) -> InvoiceResult:
    actor = require_actor(info)

    async def run() -> Invoice:
        return Invoice.from_model(
            await invoice_service.create_invoice_from_time_entries(
                actor, parse_id(project_id, "projectId"), from_, to, group_by
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def create_invoice_from_milestones(
    info: Info, milestone_ids: list[strawberry.ID]
) -> InvoiceResult:
    actor = require_actor(info)

    async def run() -> Invoice:
        ids = [parse_id(value, "milestoneIds") for value in milestone_ids]
        return Invoice.from_model(await invoice_service.create_invoice_from_milestones(actor, ids))

    return await mutate(run)  # type: ignore[return-value]


@strawberry.type
class InvoiceQuery:
    invoices: Connection[Invoice] = strawberry.field(resolver=invoices)
    invoice: Invoice | None = strawberry.field(
        resolver=invoice,
        description="An invoice by id; null when it does not exist or is not yours. A client "
        "user opening a sent invoice marks it viewed.",
    )
    invoice_preview_url: InvoicePreviewUrlResult = strawberry.field(
        resolver=invoice_preview_url,
        description="A signed link rendering the draft as it stands, marked DRAFT (owners and "
        "admins); ConflictError once issued: use Invoice.pdfUrl.",
    )


@strawberry.type
class InvoiceMutation:
    create_invoice: InvoiceResult = strawberry.mutation(
        resolver=create_invoice,
        description="Create a draft invoice for a client, with any lines (owners and admins).",
    )
    update_invoice: InvoiceResult = strawberry.mutation(
        resolver=update_invoice,
        description="Change a draft's due date, notes, terms, tax rate or discount (owners and "
        "admins); INVOICE_NOT_EDITABLE once finalized.",
    )
    add_invoice_line: InvoiceLineResult = strawberry.mutation(
        resolver=add_invoice_line,
        description="Add a line to a draft; the totals follow (owners and admins).",
    )
    update_invoice_line: InvoiceLineResult = strawberry.mutation(
        resolver=update_invoice_line,
        description="Change a draft's line; the totals follow (owners and admins).",
    )
    remove_invoice_line: InvoiceResult = strawberry.mutation(
        resolver=remove_invoice_line,
        description="Remove a draft's line, freeing the time or milestone it billed (owners "
        "and admins).",
    )
    delete_invoice: DeleteInvoiceResult = strawberry.mutation(
        resolver=delete_invoice,
        description="Delete a draft, freeing the time and milestones it billed (owners and "
        "admins); an issued invoice is voided instead.",
    )
    finalize_invoice: InvoiceResult = strawberry.mutation(
        resolver=finalize_invoice,
        description="draft → sent: number it and render its PDF; from now on it is immutable "
        "(owners and admins).",
    )
    send_invoice: InvoiceResult = strawberry.mutation(
        resolver=send_invoice,
        description="Email the invoice with its PDF to the client's primary contact and `to`, "
        "copying `cc`; a draft is finalized first (owners and admins).",
    )
    resend_invoice_email: InvoiceResult = strawberry.mutation(
        resolver=resend_invoice_email,
        description="Email an issued invoice again, with its current document (an uploaded "
        "PDF if any), to the recipients of its last email (owners and admins).",
    )
    mark_invoice_viewed: InvoiceResult = strawberry.mutation(
        resolver=mark_invoice_viewed,
        description="sent → viewed (owners, admins and the client's users); later statuses "
        "keep theirs.",
    )
    void_invoice: InvoiceResult = strawberry.mutation(
        resolver=void_invoice,
        description="sent, viewed or overdue → void, with a reason, while nothing is paid; "
        "the number stays used (owners and admins).",
    )
    create_invoice_from_time_entries: InvoiceResult = strawberry.mutation(
        resolver=create_invoice_from_time_entries,
        description="A draft billing the project's uninvoiced billable time worked from `from` "
        "to `to`, which is marked billed (owners and admins).",
    )
    create_invoice_from_milestones: InvoiceResult = strawberry.mutation(
        resolver=create_invoice_from_milestones,
        description="A draft with one line per approved milestone, all of one client and "
        "currency (owners and admins).",
    )
    create_invoice_upload: InvoiceUploadResult = strawberry.mutation(
        resolver=create_invoice_upload,
        description="Attach a PDF issued elsewhere: returns the signed URL to PUT it to; a PDF "
        "of at most 10 MB (owners and admins).",
    )
    create_payment_upload: InvoiceUploadResult = strawberry.mutation(
        resolver=create_payment_upload,
        description="createInvoiceUpload for the invoice a payment pays (a receipt or invoice "
        "issued elsewhere for money received); MISMATCH when it pays several (owners and "
        "admins).",
    )
