"""Credit note resolvers: parse input, call the credit note service, map the result."""

from __future__ import annotations

import uuid
from typing import Annotated

import strawberry

from settle.core.pagination import DEFAULT_PAGE_SIZE
from settle.resolvers.common import find_one, mutate, parse_id, public_errors, require_actor
from settle.schema.common import Connection
from settle.schema.context import Info
from settle.schema.credit_note import (
    CreditNote,
    CreditNoteFilter,
    CreditNotePayload,
    IssueCreditNoteInput,
)
from settle.schema.deliverable import DownloadUrl
from settle.schema.errors import (
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.schema.invoice import Invoice
from settle.services import credit_note as credit_note_service
from settle.services import invoice as invoice_service

CreditNoteResult = Annotated[
    CreditNotePayload
    | ValidationError
    | NotFoundError
    | PermissionDeniedError
    | ConflictError
    | InvalidTransitionError,
    strawberry.union("CreditNoteResult"),
]


# --- queries -----------------------------------------------------------------------


async def credit_notes(
    info: Info,
    first: int = DEFAULT_PAGE_SIZE,
    after: str | None = None,
    filter: CreditNoteFilter | None = None,
) -> Connection[CreditNote]:
    """Credit notes the caller may see (a client user's own client's), newest first."""
    actor = require_actor(info)
    flt = filter or CreditNoteFilter()
    with public_errors():
        invoice_id = (
            None if flt.invoice_id is None else parse_id(flt.invoice_id, "filter.invoiceId")
        )
        client_id = None if flt.client_id is None else parse_id(flt.client_id, "filter.clientId")
        page = await credit_note_service.list_credit_notes(
            actor,
            credit_note_service.CreditNoteFilter(invoice_id=invoice_id, client_id=client_id),
            first=first,
            after=after,
        )
    return Connection.from_page(page, CreditNote.from_model)


async def credit_note(info: Info, id: strawberry.ID) -> CreditNote | None:
    actor = require_actor(info)
    return await find_one(
        id,
        lambda row_id: credit_note_service.get_credit_note(actor, row_id),
        CreditNote.from_model,
    )


async def credit_note_pdf_url(info: Info, credit_note_id: uuid.UUID) -> DownloadUrl | None:
    """CreditNote.pdfUrl: a signed link to the PDF, once it is rendered.

    The credit note is read again (one query for a whole list): the worker
    renders its PDF after the mutation that issued it has read it.
    """
    from settle.services import credit_note_files

    actor = require_actor(info)
    note = await info.context.loaders.credit_note.load(credit_note_id)
    signed = None if note is None else credit_note_files.signed_pdf_url(actor, note)
    return None if signed is None else DownloadUrl.from_value(signed)


# --- issuing -------------------------------------------------------------------------


async def issue_credit_note(info: Info, input: IssueCreditNoteInput) -> CreditNoteResult:
    actor = require_actor(info)

    async def run() -> CreditNotePayload:
        note = await credit_note_service.issue_credit_note(
            actor, parse_id(input.invoice_id, "invoiceId"), input.amount, input.reason
        )
        invoice = await invoice_service.get_invoice(actor, note.invoice_id)
        return CreditNotePayload(
            credit_note=CreditNote.from_model(note), invoice=Invoice.from_model(invoice)
        )

    return await mutate(run)  # type: ignore[return-value]


@strawberry.type
class CreditNoteQuery:
    credit_notes: Connection[CreditNote] = strawberry.field(
        resolver=credit_notes,
        description="Credit notes the caller may see (a client user's: their client's), newest "
        "first; filter by invoice or client.",
    )
    credit_note: CreditNote | None = strawberry.field(
        resolver=credit_note,
        description="A credit note by id; null when it does not exist or is not yours.",
    )


@strawberry.type
class CreditNoteMutation:
    issue_credit_note: CreditNoteResult = strawberry.mutation(
        resolver=issue_credit_note,
        description="Forgive part or all of what an issued invoice owes (owners and admins): "
        "numbered in its own sequence, rendered to a PDF, on the timeline. OUT_OF_RANGE for an "
        "amount of 0 or above amountDue; ConflictError when nothing is due.",
    )
