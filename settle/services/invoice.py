"""Invoices: drafts and their lines, numbering, the lifecycle, and where invoices come from.

The lifecycle (``TRANSITIONS``)::

    draft ──finalize──► sent ──► viewed ──► partially_paid ──► paid
                         │         │              │
                         └─────────┴──► overdue ◄─┘ (past due, unpaid; the sweep)
    sent | viewed | overdue ──void (nothing paid)──► void

A draft is editable and deletable. Finalizing assigns the next number of the
agency's counter in the same transaction, so a rolled-back finalization uses no
number and the issued numbers have no gaps; from then on the content is
immutable (``InvoiceNotEditableError``). Rendering the PDF and emailing it
happen after commit, in workers (``settle.tasks.invoice``).

Owners and admins write invoices. Client users read their own client's
invoices, never drafts, and opening one marks it viewed.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q, Subquery
from tortoise.functions import Max
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from settle.core import clock, validation
from settle.core.db import get_visible, lock_rows
from settle.core.errors import (
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.core.money import Money, normalize_currency
from settle.core.outbox import send_job
from settle.core.pagination import Ordering, Page, paginate, paginate_nulls_last
from settle.core.tenancy import MANAGERS, Actor, scoped
from settle.models.agency import Agency, User
from settle.models.client import Client, Contact
from settle.models.invoice import (
    DiscountKind,
    Invoice,
    InvoiceCounter,
    InvoiceDelivery,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceSource,
    InvoiceStatus,
)
from settle.models.milestone import Milestone, MilestoneStatus
from settle.models.project import Project, Task, TimeEntry
from settle.services import activity, live_status, settlement
from settle.services import notification as notification_service
from settle.services.invoice_totals import (
    QUANTITY_PLACES,
    RATE_PLACES,
    Discount,
    LineInput,
    Totals,
    compute_totals,
)
from settle.services.settlement import OPEN_STATUSES, label

S = InvoiceStatus

TEXT_MAX_LENGTH = 10_000
DESCRIPTION_MAX_LENGTH = 1_000
REASON_MAX_LENGTH = 2_000
MAX_LINES = 1_000
MAX_QUANTITY = Decimal(10) ** 9
MAX_RECIPIENTS = 20

RENDER_PDF_JOB = "invoice.render_pdf"
SEND_EMAIL_JOB = "invoice.send_email"
GENERATE_FOR_MILESTONE_JOB = "invoice.generate_for_milestone"


class InvoiceNotEditableError(ConflictError):
    """Only a draft's content may change; ``status`` is the invoice's current one."""

    code = "INVOICE_NOT_EDITABLE"

    def __init__(self, status: InvoiceStatus) -> None:
        super().__init__(f"Invoice is {status.value}: only a draft can be changed")
        self.status = status


# --- the state machine ---------------------------------------------------------


TRANSITIONS: dict[InvoiceStatus, frozenset[InvoiceStatus]] = {
    S.SENT: frozenset({S.DRAFT}),
    S.VIEWED: frozenset({S.SENT}),
    S.PARTIALLY_PAID: frozenset({S.SENT, S.VIEWED, S.OVERDUE, S.PARTIALLY_PAID}),
    S.PAID: frozenset({S.SENT, S.VIEWED, S.OVERDUE, S.PARTIALLY_PAID}),
    S.OVERDUE: frozenset({S.SENT, S.VIEWED, S.PARTIALLY_PAID}),
    S.VOID: frozenset({S.SENT, S.VIEWED, S.OVERDUE}),
}


def _check_transition(invoice: Invoice, target: InvoiceStatus) -> None:
    if invoice.status not in TRANSITIONS[target]:
        raise InvalidTransitionError("Invoice", invoice.status.value, target.value)


def _require_draft(invoice: Invoice) -> None:
    if invoice.status != S.DRAFT:
        raise InvoiceNotEditableError(invoice.status)


# --- numbering -------------------------------------------------------------------

_TOKEN = re.compile(r"\{(YYYY|YY|MM|SEQ(?::([1-9]))?)\}")
_PATTERN_TEXT = re.compile(r"^[A-Za-z0-9/_.#-]*$")
PATTERN_MAX_LENGTH = 60


def check_number_pattern(pattern: str | None, field: str = "invoiceNumberPattern") -> str:
    """A numbering pattern: text with ``{YYYY}``, ``{YY}``, ``{MM}`` and exactly one ``{SEQ}``.

    ``{SEQ:4}`` pads the sequence to four digits. The sequence counts per
    distinct rendering of the rest of the pattern, so ``INV-{YYYY}-{SEQ:4}``
    starts again at 0001 each year and ``INV-{SEQ}`` never does.
    """
    text = validation.required_text(field, pattern, max_length=PATTERN_MAX_LENGTH)
    tokens = _TOKEN.findall(text)
    if sum(1 for token, _ in tokens if token.startswith("SEQ")) != 1:
        raise ValidationError(
            field, f"{field} must contain {{SEQ}} exactly once", code="INVALID_PATTERN"
        )
    if not _PATTERN_TEXT.match(_TOKEN.sub("", text)):
        raise ValidationError(
            field,
            f"{field} may only contain letters, digits, / _ . - and the tokens "
            "{YYYY} {YY} {MM} {SEQ} {SEQ:n}",
            code="INVALID_PATTERN",
        )
    return text


def format_number(pattern: str, issue_date: date, sequence: int | None) -> str:
    """The pattern filled in; with ``sequence`` None, the scope its counter is kept under."""

    def fill(match: re.Match[str]) -> str:
        token, width = match.group(1), match.group(2)
        if token == "YYYY":
            return f"{issue_date.year:04d}"
        if token == "YY":
            return f"{issue_date.year % 100:02d}"
        if token == "MM":
            return f"{issue_date.month:02d}"
        if sequence is None:
            return "{SEQ}"
        return f"{sequence:0{int(width or 1)}d}"

    return _TOKEN.sub(fill, pattern)


async def next_sequence(agency_id: uuid.UUID, scope: str) -> int:
    """Take the next number of an agency's counter; it stays taken only if the caller commits.

    The UPDATE holds the counter's row lock until commit, so concurrent
    finalizations queue behind it and each reads the value it wrote. The first
    number of a scope is an INSERT; when two race, the loser's insert fails on
    the unique key (in a savepoint, so its transaction lives on) and it
    increments the winner's row instead.
    """
    counters = InvoiceCounter.filter(agency_id=agency_id, scope=scope)
    if not await counters.update(last_value=F("last_value") + 1):
        try:
            async with in_transaction():
                await InvoiceCounter.create(agency_id=agency_id, scope=scope, last_value=1)
            return 1
        except IntegrityError:
            await counters.update(last_value=F("last_value") + 1)
    counter = await counters.get()
    return counter.last_value


# --- reading ----------------------------------------------------------------------


class InvoiceOrderField(StrEnum):
    CREATED_AT = "created_at"
    ISSUE_DATE = "issue_date"
    DUE_DATE = "due_date"
    TOTAL = "total_minor"


@dataclass(frozen=True, slots=True)
class InvoiceFilter:
    status: InvoiceStatus | None = None
    client_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    issued_from: date | None = None
    issued_to: date | None = None
    overdue: bool | None = None
    currency: str | None = None


def today() -> date:
    return clock.now().date()


def is_overdue(invoice: Invoice, on: date | None = None) -> bool:
    """Issued, unpaid and past its due date (whether or not the sweep has marked it yet)."""
    return (
        invoice.status in OPEN_STATUSES
        and invoice.due_date is not None
        and invoice.due_date < (on or today())
    )


def _invoices(actor: Actor) -> QuerySet[Invoice]:
    qs = scoped(Invoice, actor)
    if actor.is_client_user:
        # A draft is the agency's work in progress, not yet an invoice to the client.
        qs = qs.exclude(status=S.DRAFT)
    return qs


def visible_invoices(actor: Actor) -> QuerySet[Invoice]:
    """Every invoice the actor may see, exactly as the invoices query shows them (exports)."""
    return _invoices(actor)


async def get_invoice(actor: Actor, invoice_id: uuid.UUID) -> Invoice:
    """An invoice the actor may see, or NotFoundError (also for other agencies' ids)."""
    return await get_visible(_invoices(actor), invoice_id, "Invoice")


async def _lock_invoice(actor: Actor, invoice_id: uuid.UUID) -> Invoice:
    invoice = await get_visible(_invoices(actor), invoice_id, "Invoice", lock=True)
    actor.require(*MANAGERS)
    return invoice


async def list_invoices(
    actor: Actor,
    flt: InvoiceFilter,
    *,
    first: int | None,
    after: str | None,
    order_by: InvoiceOrderField = InvoiceOrderField.CREATED_AT,
    descending: bool = True,
) -> Page[Invoice]:
    """The invoices the actor may see, filtered; dates without a value sort last."""
    qs = _invoices(actor)
    if flt.status is not None:
        qs = qs.filter(status=flt.status)
    if flt.client_id is not None:
        qs = qs.filter(client_id=flt.client_id)
    if flt.project_id is not None:
        qs = qs.filter(project_id=flt.project_id)
    if flt.issued_from is not None:
        qs = qs.filter(issue_date__gte=flt.issued_from)
    if flt.issued_to is not None:
        qs = qs.filter(issue_date__lte=flt.issued_to)
    if flt.currency is not None:
        qs = qs.filter(currency=normalize_currency(flt.currency, "filter.currency"))
    if flt.overdue is not None:
        overdue = Q(status__in=list(OPEN_STATUSES), due_date__lt=today())
        qs = qs.filter(overdue) if flt.overdue else qs.filter(~overdue)
    if order_by in (InvoiceOrderField.ISSUE_DATE, InvoiceOrderField.DUE_DATE):
        return await paginate_nulls_last(
            qs, order_by.value, first=first, after=after, descending=descending
        )
    return await paginate(
        qs, first=first, after=after, ordering=Ordering(order_by.value, descending)
    )


async def lines_for_invoices(
    actor: Actor, invoice_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[InvoiceLine]]:
    """Each visible invoice's lines in order, in two queries (for loaders)."""
    # Tortoise cannot take a queryset as the value of a plain column's __in, so the
    # visible ids are read first.
    visible = await _invoices(actor).filter(id__in=list(invoice_ids)).values_list("id", flat=True)
    rows = (
        await InvoiceLine.filter(agency_id=actor.agency_id, invoice_id__in=list(visible))
        .order_by("invoice_id", "position", "created_at", "id")
        .all()
    )
    grouped: dict[uuid.UUID, list[InvoiceLine]] = defaultdict(list)
    for row in rows:
        grouped[row.invoice_id].append(row)
    return grouped


async def invoice_lines(invoice: Invoice) -> list[InvoiceLine]:
    """An invoice's lines in order (the caller has checked the invoice is visible)."""
    return await InvoiceLine.filter(invoice_id=invoice.id).order_by("position", "created_at", "id")


async def deliveries_for_invoices(
    actor: Actor, invoice_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[InvoiceDelivery]]:
    """The emails sent or requested for each visible invoice, newest first, in one query."""
    visible = _invoices(actor).filter(id__in=list(invoice_ids)).values("id")
    rows = await InvoiceDelivery.filter(
        agency_id=actor.agency_id, invoice_id__in=Subquery(visible)
    ).order_by("-created_at", "-id")
    grouped: dict[uuid.UUID, list[InvoiceDelivery]] = {}
    for row in rows:
        grouped.setdefault(row.invoice_id, []).append(row)
    return grouped


async def invoices_for_milestones(
    actor: Actor, milestone_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Invoice]:
    """The visible live invoice of each milestone that has one, in two queries (for loaders)."""
    rows = await scoped(Milestone, actor).filter(
        id__in=list(milestone_ids), invoice_id__isnull=False
    )
    wanted = {row.id: row.invoice_id for row in rows}
    invoices = {i.id: i for i in await _invoices(actor).filter(id__in=list(wanted.values()))}
    return {m: invoices[i] for m, i in wanted.items() if i in invoices}


# --- validation ---------------------------------------------------------------------


def _decimal(field: str, value: Any, places: int) -> Decimal:
    if isinstance(value, bool) or value is None or not str(value).strip():
        raise ValidationError(field, f"{field} must be a decimal number", code="REQUIRED")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationError(field, f"{field} must be a decimal number") from None
    if not number.is_finite():
        raise ValidationError(field, f"{field} must be a finite number")
    if number != number.quantize(Decimal(1).scaleb(-places), rounding="ROUND_DOWN"):
        raise ValidationError(
            field, f"{field} has at most {places} decimal places", code="TOO_PRECISE"
        )
    return number


def clean_rate(field: str, value: Any) -> Decimal:
    """A percentage from 0 to 100 with at most three decimals."""
    rate = _decimal(field, value, RATE_PLACES)
    if not 0 <= rate <= 100:
        raise ValidationError(field, f"{field} must be between 0 and 100", code="OUT_OF_RANGE")
    return rate


def clean_quantity(value: Any) -> Decimal:
    quantity = _decimal("quantity", value, QUANTITY_PLACES)
    if not 0 < quantity < MAX_QUANTITY:
        raise ValidationError(
            "quantity", "quantity must be greater than 0 and below 10^9", code="OUT_OF_RANGE"
        )
    return quantity


def clean_unit_price(value: Any, currency: str) -> int:
    if value is None or not str(value).strip():
        raise ValidationError("unitPrice", "unitPrice must not be empty", code="REQUIRED")
    price = Money.parse(value, currency, "unitPrice")
    if price.minor_units < 0:
        raise ValidationError("unitPrice", "unitPrice must not be negative", code="OUT_OF_RANGE")
    return price.minor_units


def clean_line_fields(values: dict[str, Any], currency: str) -> dict[str, Any]:
    """Validate the line fields present in ``values``; returns model fields."""
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if key == "description":
            cleaned[key] = validation.required_text(
                "description", value, max_length=DESCRIPTION_MAX_LENGTH
            )
        elif key == "quantity":
            cleaned[key] = clean_quantity(value)
        elif key == "unit_price":
            cleaned["unit_price_minor"] = clean_unit_price(value, currency)
        elif key == "tax_rate":
            cleaned[key] = None if value is None else clean_rate("taxRate", value)
        elif key == "position":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError("position", "position must be 0 or more", code="OUT_OF_RANGE")
            cleaned[key] = value
        else:
            raise ValidationError(key, f"Unknown field {key}")
    return cleaned


def _new_line_fields(values: dict[str, Any], currency: str) -> dict[str, Any]:
    data = clean_line_fields(values, currency)
    for key, field in (
        ("description", "description"),
        ("quantity", "quantity"),
        ("unit_price_minor", "unitPrice"),
    ):
        if key not in data:
            raise ValidationError(field, f"{field} must not be empty", code="REQUIRED")
    return data


@dataclass(frozen=True, slots=True)
class DiscountInput:
    kind: DiscountKind
    value: str


def clean_discount(discount: DiscountInput | None, currency: str) -> dict[str, Any]:
    """The discount columns for an input (None removes the discount)."""
    if discount is None:
        return {"discount_kind": None, "discount_percent": None, "discount_amount_minor": None}
    if discount.kind == DiscountKind.PERCENT:
        return {
            "discount_kind": DiscountKind.PERCENT,
            "discount_percent": clean_rate("discount.value", discount.value),
            "discount_amount_minor": None,
        }
    amount = Money.parse(discount.value, currency, "discount.value")
    if amount.minor_units < 0:
        raise ValidationError(
            "discount.value", "discount.value must not be negative", code="OUT_OF_RANGE"
        )
    return {
        "discount_kind": DiscountKind.AMOUNT,
        "discount_percent": None,
        "discount_amount_minor": amount.minor_units,
    }


def clean_invoice_fields(values: dict[str, Any], currency: str) -> dict[str, Any]:
    """Validate the invoice fields present in ``values``; returns model fields."""
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("notes", "terms"):
            cleaned[key] = validation.optional_text(key, value, max_length=TEXT_MAX_LENGTH)
        elif key == "due_date":
            if value is not None and not isinstance(value, date):
                raise ValidationError("dueDate", "dueDate must be a date")
            cleaned[key] = value
        elif key == "tax_rate":
            cleaned[key] = clean_rate("taxRate", value)
        elif key == "discount":
            cleaned.update(clean_discount(value, currency))
        else:
            raise ValidationError(key, f"Unknown field {key}")
    return cleaned


# --- totals -----------------------------------------------------------------------------


def discount_of(invoice: Invoice) -> Discount | None:
    if invoice.discount_kind is None:
        return None
    return Discount(invoice.discount_kind, invoice.discount_percent, invoice.discount_amount_minor)


def totals_of(invoice: Invoice, lines: Sequence[InvoiceLine]) -> Totals:
    """The totals of an invoice with these lines (``invoice_totals``'s rule)."""
    return compute_totals(
        [LineInput(line.quantity, line.unit_price_minor, line.tax_rate) for line in lines],
        tax_rate=invoice.tax_rate,
        discount=discount_of(invoice),
    )


async def _recompute(invoice: Invoice) -> list[InvoiceLine]:
    """Store the server's totals on the invoice and each line after a change to a draft."""
    lines = await invoice_lines(invoice)
    totals = totals_of(invoice, lines)
    changed = []
    for line, line_totals in zip(lines, totals.lines, strict=True):
        new = (line_totals.amount_minor, line_totals.discount_minor, line_totals.tax_minor)
        if (line.amount_minor, line.discount_minor, line.tax_minor) != new:
            line.amount_minor, line.discount_minor, line.tax_minor = new
            changed.append(line)
    if changed:
        await InvoiceLine.bulk_update(changed, ["amount_minor", "discount_minor", "tax_minor"])
    invoice.subtotal_minor = totals.subtotal_minor
    invoice.discount_minor = totals.discount_minor
    invoice.tax_minor = totals.tax_minor
    invoice.total_minor = totals.total_minor
    await invoice.save(
        update_fields=["subtotal_minor", "discount_minor", "tax_minor", "total_minor", "updated_at"]
    )
    return lines


# --- the timeline -----------------------------------------------------------------------

_MONEY_FIELDS = {
    "unit_price_minor": "unit_price",
    "discount_amount_minor": "discount_amount",
    "total_minor": "total",
    "amount_paid_minor": "amount_paid",
}


def _shown(data: dict[str, Any], currency: str) -> dict[str, Any]:
    return activity.with_amounts(data, currency, _MONEY_FIELDS)


_record = settlement.record_invoice_event


# --- drafts ---------------------------------------------------------------------------------


async def _client_and_project(
    actor: Actor, client_id: uuid.UUID, project_id: uuid.UUID | None
) -> tuple[Client, Project | None]:
    client = await scoped(Client, actor, client_field="id").get_or_none(
        id=client_id, deleted_at__isnull=True
    )
    if client is None:
        raise NotFoundError("Client", client_id)
    if project_id is None:
        return client, None
    project = await scoped(Project, actor).get_or_none(id=project_id)
    if project is None:
        raise NotFoundError("Project", project_id)
    if project.client_id != client.id:
        raise ValidationError(
            "projectId", "projectId must be a project of the client", code="MISMATCH"
        )
    return client, project


def invoice_currency(client: Client, project: Project | None) -> str:
    """The work is priced in the project's currency; without a project, in the client's."""
    return project.currency if project else client.currency


async def _create_draft(
    actor: Actor | None,
    *,
    agency: Agency,
    client: Client,
    project: Project | None,
    source: InvoiceSource,
    data: dict[str, Any],
    lines: Sequence[dict[str, Any]],
    currency: str | None = None,
) -> tuple[Invoice, list[InvoiceLine]]:
    """Write a draft and its (clean) lines, with totals and a timeline event."""
    if len(lines) > MAX_LINES:
        raise ValidationError("lines", f"An invoice has at most {MAX_LINES} lines", code="TOO_MANY")
    currency = currency or invoice_currency(client, project)
    data = {"tax_rate": agency.default_tax_rate, **data}
    invoice = await Invoice.create(
        agency_id=agency.id,
        client_id=client.id,
        project_id=project.id if project else None,
        currency=currency,
        source=source,
        created_by_id=actor.user_id if actor else None,
        **data,
    )
    created = [
        InvoiceLine(
            agency_id=agency.id,
            invoice_id=invoice.id,
            position=line.pop("position", index),
            **line,
        )
        for index, line in enumerate(lines)
    ]
    if created:
        await InvoiceLine.bulk_create(created)
    stored = await _recompute(invoice)
    await live_status.invoice_changed(invoice, None)
    await _record(
        actor,
        invoice,
        "created",
        f"Draft invoice created for {client.name}"
        + (f" ({project.name})" if project else "")
        + f": {Money(invoice.total_minor, currency).format_amount()} {currency}",
        activity.snapshot(
            {
                **_shown(data, currency),
                "currency": currency,
                "source": source,
                "lines": len(stored),
                "total": Money(invoice.total_minor, currency).format_amount(),
            }
        ),
    )
    return invoice, stored


async def create_invoice(
    actor: Actor,
    client_id: uuid.UUID,
    project_id: uuid.UUID | None,
    values: dict[str, Any],
    lines: Sequence[dict[str, Any]] = (),
) -> Invoice:
    """Create a draft invoice by hand (owners and admins), with any lines given."""
    actor.require(*MANAGERS)
    client, project = await _client_and_project(actor, client_id, project_id)
    currency = invoice_currency(client, project)
    data = clean_invoice_fields(values, currency)
    clean_lines = [_new_line_fields(dict(line), currency) for line in lines]
    agency = await Agency.get(id=actor.agency_id)
    invoice, _ = await _create_draft(
        actor,
        agency=agency,
        client=client,
        project=project,
        source=InvoiceSource.MANUAL,
        data=data,
        lines=clean_lines,
    )
    return invoice


async def update_invoice(actor: Actor, invoice_id: uuid.UUID, values: dict[str, Any]) -> Invoice:
    """Change a draft's due date, notes, terms, tax rate or discount."""
    invoice = await _lock_invoice(actor, invoice_id)
    _require_draft(invoice)
    data = clean_invoice_fields(values, invoice.currency)
    before = {key: getattr(invoice, key) for key in data}
    changes = activity.diff(_shown(before, invoice.currency), _shown(data, invoice.currency))
    if not changes:
        return invoice
    invoice.update_from_dict(data)
    await invoice.save(update_fields=[*data.keys(), "updated_at"])
    await _recompute(invoice)
    await _record(actor, invoice, "updated", f"{label(invoice)} updated", changes)
    return invoice


async def _next_line_position(invoice_id: uuid.UUID) -> int:
    rows = (
        await InvoiceLine.filter(invoice_id=invoice_id).annotate(top=Max("position")).values("top")
    )
    top = rows[0]["top"] if rows else None
    return 0 if top is None else int(top) + 1


async def add_invoice_line(
    actor: Actor, invoice_id: uuid.UUID, values: dict[str, Any]
) -> tuple[Invoice, InvoiceLine]:
    """Add a line to a draft; the totals follow."""
    invoice = await _lock_invoice(actor, invoice_id)
    _require_draft(invoice)
    data = _new_line_fields(values, invoice.currency)
    if await InvoiceLine.filter(invoice_id=invoice.id).count() >= MAX_LINES:
        raise ValidationError("lines", f"An invoice has at most {MAX_LINES} lines", code="TOO_MANY")
    if "position" not in data:
        data["position"] = await _next_line_position(invoice.id)
    line = await InvoiceLine.create(agency_id=invoice.agency_id, invoice_id=invoice.id, **data)
    await _recompute(invoice)
    await line.refresh_from_db()
    await _record(
        actor,
        invoice,
        "line_added",
        f"Line {line.description[:80]} added to {label(invoice).lower()}",
        activity.snapshot(_shown(data, invoice.currency)),
    )
    return invoice, line


async def _lock_line(actor: Actor, line_id: uuid.UUID) -> tuple[Invoice, InvoiceLine]:
    line = await InvoiceLine.get_or_none(id=line_id, agency_id=actor.agency_id)
    if line is None:
        raise NotFoundError("InvoiceLine", line_id)
    try:
        invoice = await _lock_invoice(actor, line.invoice_id)
    except NotFoundError:
        raise NotFoundError("InvoiceLine", line_id) from None
    return invoice, line


async def update_invoice_line(
    actor: Actor, line_id: uuid.UUID, values: dict[str, Any]
) -> tuple[Invoice, InvoiceLine]:
    """Change a draft's line; the totals follow."""
    invoice, line = await _lock_line(actor, line_id)
    _require_draft(invoice)
    data = clean_line_fields(values, invoice.currency)
    before = {key: getattr(line, key) for key in data}
    changes = activity.diff(_shown(before, invoice.currency), _shown(data, invoice.currency))
    if not changes:
        return invoice, line
    line.update_from_dict(data)
    await line.save(update_fields=[*data.keys(), "updated_at"])
    await _recompute(invoice)
    await line.refresh_from_db()
    await _record(
        actor,
        invoice,
        "line_updated",
        f"Line {line.description[:80]} of {label(invoice).lower()} updated",
        changes,
    )
    return invoice, line


async def _release(lines: Iterable[InvoiceLine]) -> None:
    """Free what lines billed (time entries, milestones) so it can be invoiced again."""
    line_ids = [line.id for line in lines]
    if not line_ids:
        return
    await TimeEntry.filter(invoice_line_id__in=line_ids).update(invoice_line_id=None)
    milestone_ids = [line.milestone_id for line in lines if line.milestone_id]
    if milestone_ids:
        invoice_ids = list({line.invoice_id for line in lines})
        await Milestone.filter(id__in=milestone_ids, invoice_id__in=invoice_ids).update(
            invoice_id=None
        )


async def remove_invoice_line(actor: Actor, line_id: uuid.UUID) -> Invoice:
    """Remove a draft's line, releasing the time or milestone it billed."""
    invoice, line = await _lock_line(actor, line_id)
    _require_draft(invoice)
    await _release([line])
    await line.delete()
    await _recompute(invoice)
    await _record(
        actor,
        invoice,
        "line_removed",
        f"Line {line.description[:80]} removed from {label(invoice).lower()}",
        activity.diff(
            {
                "description": line.description,
                "amount": Money(line.amount_minor, invoice.currency).format_amount(),
            },
            {},
        ),
    )
    return invoice


async def delete_invoice(actor: Actor, invoice_id: uuid.UUID) -> Invoice:
    """Delete a draft (it never had a number), releasing the time and milestones it billed."""
    invoice = await _lock_invoice(actor, invoice_id)
    _require_draft(invoice)
    await _release(await invoice_lines(invoice))
    await _record(
        actor,
        invoice,
        "deleted",
        f"Draft invoice of {Money(invoice.total_minor, invoice.currency).format_amount()} "
        f"{invoice.currency} deleted",
    )
    await invoice.delete()
    return invoice


# --- issuing ------------------------------------------------------------------------------


async def _due_days(invoice: Invoice, agency: Agency) -> int:
    if invoice.project_id is not None:
        project = await Project.get(id=invoice.project_id)
        return project.invoice_due_days
    return agency.invoice_due_days


async def _finalize(actor: Actor | None, invoice: Invoice, *, announce: bool = True) -> Invoice:
    """draft → sent: number, issue and due dates; the PDF is rendered after commit.

    ``announce`` tells the client's lead users the invoice is ready; a caller
    that tells them itself (a payment request) says False.
    """
    _check_transition(invoice, S.SENT)
    lines = await _recompute(invoice)
    if not lines:
        raise ValidationError("lines", "An invoice needs at least one line", code="REQUIRED")
    agency = await Agency.get(id=invoice.agency_id)
    issued_on = today()
    due_date = invoice.due_date or issued_on + timedelta(days=await _due_days(invoice, agency))
    if due_date < issued_on:
        raise ValidationError("dueDate", "dueDate must not be before the issue date")
    pattern = agency.invoice_number_pattern
    sequence = await next_sequence(agency.id, format_number(pattern, issued_on, None))
    data: dict[str, Any] = {
        "status": S.SENT,
        "number": format_number(pattern, issued_on, sequence),
        "issue_date": issued_on,
        "due_date": due_date,
        "issued_at": clock.now(),
    }
    before = {key: getattr(invoice, key) for key in data}
    invoice.update_from_dict(data)
    await invoice.save(update_fields=[*data.keys(), "updated_at"])
    await live_status.invoice_changed(invoice, before["status"])
    await send_job(RENDER_PDF_JOB, str(invoice.id))
    if announce:
        await notification_service.invoice_issued(invoice)
    await _record(
        actor,
        invoice,
        "finalized",
        f"{label(invoice)} issued to the client: "
        f"{Money(invoice.total_minor, invoice.currency).format_amount()} {invoice.currency}, "
        f"due {due_date.isoformat()}",
        activity.diff(before, data),
    )
    return invoice


async def finalize_invoice(actor: Actor, invoice_id: uuid.UUID) -> Invoice:
    """Issue a draft: assign its number; from now on it is immutable."""
    invoice = await _lock_invoice(actor, invoice_id)
    return await _finalize(actor, invoice)


async def primary_contact_email(client_id: uuid.UUID) -> str | None:
    contact = await Contact.get_or_none(client_id=client_id, is_primary=True)
    return contact.email if contact and contact.email else None


def _clean_recipients(field: str, values: Sequence[str] | None) -> list[str]:
    addresses = [validation.email(field, value, required=True) or "" for value in values or ()]
    return list(dict.fromkeys(addresses))


async def _request_delivery(
    actor: Actor | None,
    invoice: Invoice,
    recipients: list[str],
    cc: list[str],
    message: str | None,
    *,
    verb: str,
) -> InvoiceDelivery:
    if len(recipients) + len(cc) > MAX_RECIPIENTS:
        raise ValidationError(
            "to", f"An invoice email goes to at most {MAX_RECIPIENTS} addresses", code="TOO_MANY"
        )
    delivery = await InvoiceDelivery.create(
        agency_id=invoice.agency_id,
        invoice_id=invoice.id,
        recipients=recipients,
        cc=[address for address in cc if address not in recipients],
        message=message,
        requested_by_id=actor.user_id if actor else None,
    )
    await send_job(SEND_EMAIL_JOB, str(delivery.id))
    await _record(
        actor,
        invoice,
        verb,
        f"{label(invoice)} queued for email to {', '.join(recipients)}",
        activity.snapshot({"to": recipients, "cc": delivery.cc, "message": message}),
    )
    return delivery


async def send_invoice(
    actor: Actor,
    invoice_id: uuid.UUID,
    *,
    to: Sequence[str] | None = None,
    cc: Sequence[str] | None = None,
    message: str | None = None,
) -> Invoice:
    """Email the invoice to the client's primary contact and ``to``, copying ``cc``.

    A draft is finalized first, in the same transaction. The email leaves from a
    worker after commit, with the PDF attached; a failure is retried there and
    never marks the invoice delivered.
    """
    invoice = await _lock_invoice(actor, invoice_id)
    if invoice.status == S.VOID:
        raise InvalidTransitionError("Invoice", invoice.status.value, "sent")
    extra = _clean_recipients("to", to)
    copies = _clean_recipients("cc", cc)
    text = validation.optional_text("message", message, max_length=TEXT_MAX_LENGTH)
    primary = await primary_contact_email(invoice.client_id)
    recipients = list(dict.fromkeys([*([primary] if primary else []), *extra]))
    if not recipients:
        raise ValidationError(
            "to",
            "The client has no primary contact with an email: give at least one address in to",
            code="REQUIRED",
        )
    if invoice.status == S.DRAFT:
        await _finalize(actor, invoice)
    await _request_delivery(actor, invoice, recipients, copies, text, verb="email_requested")
    return invoice


async def resend_invoice_email(actor: Actor, invoice_id: uuid.UUID) -> Invoice:
    """Email an issued invoice again, to the recipients of its last email (or the primary)."""
    invoice = await _lock_invoice(actor, invoice_id)
    if invoice.status in (S.DRAFT, S.VOID):
        raise InvalidTransitionError("Invoice", invoice.status.value, "sent")
    last = await InvoiceDelivery.filter(invoice_id=invoice.id).order_by("-created_at").first()
    if last is not None:
        recipients, cc, message = list(last.recipients), list(last.cc), last.message
    else:
        primary = await primary_contact_email(invoice.client_id)
        if primary is None:
            raise ValidationError(
                "to",
                "The invoice was never emailed and the client has no primary contact with an "
                "email: use sendInvoice with an address",
                code="REQUIRED",
            )
        recipients, cc, message = [primary], [], None
    await _request_delivery(actor, invoice, recipients, cc, message, verb="email_resent")
    return invoice


async def mark_invoice_viewed(actor: Actor, invoice_id: uuid.UUID) -> Invoice:
    """sent → viewed (owners, admins, or the client's own users); later statuses keep theirs."""
    invoice = await get_visible(_invoices(actor), invoice_id, "Invoice", lock=True)
    if not (actor.is_client_user or actor.role in MANAGERS):
        raise PermissionDeniedError()
    if invoice.status in (S.DRAFT, S.VOID):
        raise InvalidTransitionError("Invoice", invoice.status.value, S.VIEWED.value)
    return await _viewed(actor, invoice)


async def _viewed(actor: Actor, invoice: Invoice) -> Invoice:
    if invoice.viewed_at is not None and invoice.status != S.SENT:
        return invoice
    data: dict[str, Any] = {"viewed_at": invoice.viewed_at or clock.now()}
    if invoice.status == S.SENT:
        data["status"] = S.VIEWED
    before = {key: getattr(invoice, key) for key in data}
    previous = invoice.status
    invoice.update_from_dict(data)
    await invoice.save(update_fields=[*data.keys(), "updated_at"])
    await live_status.invoice_changed(invoice, previous)
    await _record(
        actor,
        invoice,
        "viewed",
        f"{label(invoice)} viewed by {actor.name}",
        activity.diff(before, data),
    )
    return invoice


async def record_client_view(actor: Actor, invoice_id: uuid.UUID) -> Invoice | None:
    """A client user opened the invoice: mark it viewed the first time (no-op otherwise)."""
    if not actor.is_client_user:
        return None
    invoice = await lock_rows(
        _invoices(actor).filter(id=invoice_id, viewed_at__isnull=True, status=S.SENT)
    ).first()
    return await _viewed(actor, invoice) if invoice else None


async def void_invoice(actor: Actor, invoice_id: uuid.UUID, reason: str | None) -> Invoice:
    """sent, viewed or overdue → void, with a reason; refused once anything was paid.

    The number stays used (numbering has no gaps); the time and milestones it
    billed are freed to be invoiced again.
    """
    invoice = await _lock_invoice(actor, invoice_id)
    text = validation.required_text("reason", reason, max_length=REASON_MAX_LENGTH)
    if invoice.amount_paid_minor > 0:
        raise ConflictError("An invoice with payments cannot be voided")
    _check_transition(invoice, S.VOID)
    data: dict[str, Any] = {"status": S.VOID, "voided_at": clock.now(), "void_reason": text}
    before = {key: getattr(invoice, key) for key in data}
    invoice.update_from_dict(data)
    await invoice.save(update_fields=[*data.keys(), "updated_at"])
    await live_status.invoice_changed(invoice, before["status"])
    await _release(await invoice_lines(invoice))
    await _record(
        actor, invoice, "voided", f"{label(invoice)} voided: {text}", activity.diff(before, data)
    )
    return invoice


async def mark_overdue(on: date | None = None) -> int:
    """Move every issued, unpaid invoice past its due date to overdue (the daily sweep)."""
    cutoff = on or today()
    candidates = OPEN_STATUSES - {S.OVERDUE}
    ids = await Invoice.filter(status__in=list(candidates), due_date__lt=cutoff).values_list(
        "id", flat=True
    )
    moved = 0
    for invoice_id in ids:
        # One row at a time under its lock: a payment landing meanwhile wins.
        invoice = await lock_rows(
            Invoice.filter(id=invoice_id, status__in=list(candidates), due_date__lt=cutoff)
        ).first()
        if invoice is None:
            continue
        before = {"status": invoice.status}
        invoice.status = S.OVERDUE
        invoice.overdue_at = clock.now()
        await invoice.save(update_fields=["status", "overdue_at", "updated_at"])
        await live_status.invoice_changed(invoice, before["status"])
        await _record(
            None,
            invoice,
            "overdue",
            f"{label(invoice)} is overdue (due {invoice.due_date})",
            activity.diff(before, {"status": S.OVERDUE}),
        )
        moved += 1
    return moved


# --- invoices from time and milestones -----------------------------------------------------


class TimeGrouping(StrEnum):
    TASK = "task"
    USER = "user"
    SINGLE_LINE = "single_line"


def _hours(minutes: int) -> Decimal:
    return (Decimal(minutes) / 60).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")


async def create_invoice_from_time_entries(
    actor: Actor,
    project_id: uuid.UUID,
    date_from: date,
    date_to: date,
    group_by: TimeGrouping,
) -> Invoice:
    """A draft billing a project's uninvoiced billable time of a date range, marked billed.

    Entries need a rate and a stopped timer. One line per task, per person or
    for all, and per hourly rate within each group, at hours * rate. Marking the
    entries billed happens in the same transaction, behind the project's row lock
    and a conditional update, so two racing requests never bill an entry twice:
    the second finds nothing left to bill.
    """
    actor.require(*MANAGERS)
    if date_to < date_from:
        raise ValidationError("to", "to must not be before from", code="OUT_OF_RANGE")
    project = await lock_rows(scoped(Project, actor).filter(id=project_id)).first()
    if project is None:
        raise NotFoundError("Project", project_id)
    client, _ = await _client_and_project(actor, project.client_id, None)
    entries = await TimeEntry.filter(
        project_id=project.id,
        invoice_line_id__isnull=True,
        billable=True,
        is_running=False,
        minutes__gt=0,
        hourly_rate_minor__isnull=False,
        currency=project.currency,
        work_date__gte=date_from,
        work_date__lte=date_to,
    ).order_by("work_date", "created_at", "id")
    if not entries:
        raise ValidationError(
            "from",
            "There is no uninvoiced billable time with a rate in this range",
            code="NOTHING_TO_BILL",
        )
    groups: dict[tuple[Any, int], list[TimeEntry]] = defaultdict(list)
    for entry in entries:
        key: Any = {
            TimeGrouping.TASK: entry.task_id,
            TimeGrouping.USER: entry.user_id,
            TimeGrouping.SINGLE_LINE: None,
        }[group_by]
        groups[(key, entry.hourly_rate_minor or 0)].append(entry)
    names = await _group_names(group_by, [key for key, _ in groups])
    line_values: list[dict[str, Any]] = []
    for (key, rate), group in groups.items():
        minutes = sum(entry.minutes or 0 for entry in group)
        name = names.get(key) or (project.name if group_by == TimeGrouping.SINGLE_LINE else "")
        description = f"{name or 'Other work'}: time, {_worked_on(group)}"
        line_values.append(
            {
                "kind": InvoiceLineKind.TIME,
                "description": description[:DESCRIPTION_MAX_LENGTH],
                "quantity": _hours(minutes),
                "unit_price_minor": rate,
            }
        )
    agency = await Agency.get(id=actor.agency_id)
    invoice, lines = await _create_draft(
        actor,
        agency=agency,
        client=client,
        project=project,
        source=InvoiceSource.TIME_ENTRIES,
        data={},
        lines=line_values,
    )
    for line, group in zip(lines, groups.values(), strict=True):
        ids = [entry.id for entry in group]
        billed = await TimeEntry.filter(id__in=ids, invoice_line_id__isnull=True).update(
            invoice_line_id=line.id
        )
        if billed != len(ids):
            raise ConflictError("Some of this time was invoiced meanwhile; try again")
    return invoice


def _worked_on(entries: Sequence[TimeEntry]) -> str:
    """The days a line's time was worked: one date, or the first to the last.

    Not the range that was asked for: a client reads a line of March's invoice
    that says 2026-03-02 to 2026-03-05 as when the work was done.
    """
    first = min(entry.work_date for entry in entries)
    last = max(entry.work_date for entry in entries)
    if first == last:
        return first.isoformat()
    return f"{first.isoformat()} to {last.isoformat()}"


async def _group_names(group_by: TimeGrouping, keys: list[Any]) -> dict[Any, str]:
    ids = [key for key in keys if key is not None]
    if not ids or group_by == TimeGrouping.SINGLE_LINE:
        return {}
    if group_by == TimeGrouping.TASK:
        return {task.id: task.title for task in await Task.filter(id__in=ids)}
    return {user.id: user.name for user in await User.filter(id__in=ids)}


async def _bill_milestones(invoice: Invoice, milestones: Sequence[Milestone]) -> None:
    ids = [m.id for m in milestones]
    billed = await Milestone.filter(id__in=ids, invoice_id__isnull=True).update(
        invoice_id=invoice.id, invoice_error=None
    )
    if billed != len(ids):
        raise ConflictError("A milestone was invoiced meanwhile; try again")


def _milestone_line(milestone: Milestone, position: int) -> dict[str, Any]:
    return {
        "kind": InvoiceLineKind.MILESTONE,
        "description": milestone.title,
        "quantity": Decimal(1),
        "unit_price_minor": milestone.amount_minor,
        "milestone_id": milestone.id,
        "position": position,
    }


async def lock_milestones(
    actor: Actor, milestone_ids: Sequence[uuid.UUID], *, most: int
) -> list[Milestone]:
    """Milestones of one client and one currency, in the order given, locked until commit.

    Locked in id order, so two requests over overlapping sets cannot deadlock.
    NotFoundError for any the actor cannot see; ValidationError for none, too
    many, or a mix of clients or currencies.
    """
    ids = list(dict.fromkeys(milestone_ids))
    if not ids:
        raise ValidationError("milestoneIds", "Give at least one milestone", code="REQUIRED")
    if len(ids) > most:
        raise ValidationError("milestoneIds", f"At most {most} milestones", code="TOO_MANY")
    rows = await lock_rows(scoped(Milestone, actor).filter(id__in=ids).order_by("id"))
    found = {m.id: m for m in rows}
    for milestone_id in ids:
        if milestone_id not in found:
            raise NotFoundError("Milestone", milestone_id)
    milestones = [found[i] for i in ids]
    if len({m.client_id for m in milestones}) > 1:
        raise ValidationError(
            "milestoneIds", "The milestones must all be of one client", code="MISMATCH"
        )
    if len({m.currency for m in milestones}) > 1:
        raise ValidationError(
            "milestoneIds", "The milestones must all be in one currency", code="MISMATCH"
        )
    return milestones


async def create_invoice_from_milestones(
    actor: Actor, milestone_ids: Sequence[uuid.UUID]
) -> Invoice:
    """A draft with one line per approved milestone, all of one client and currency."""
    actor.require(*MANAGERS)
    milestones = await lock_milestones(actor, milestone_ids, most=MAX_LINES)
    for m in milestones:
        if m.status != MilestoneStatus.APPROVED:
            raise ValidationError(
                "milestoneIds",
                f"Milestone {m.title} is {m.status.value}: only approved milestones are invoiced",
                code="NOT_BILLABLE",
            )
        if m.invoice_id is not None:
            raise ConflictError(f"Milestone {m.title} is already on an invoice")
    project_ids = {m.project_id for m in milestones}
    project_id = next(iter(project_ids)) if len(project_ids) == 1 else None
    client, project = await _client_and_project(actor, milestones[0].client_id, project_id)
    agency = await Agency.get(id=actor.agency_id)
    invoice, _ = await _create_draft(
        actor,
        agency=agency,
        client=client,
        project=project,
        source=InvoiceSource.MILESTONES,
        data={},
        lines=[_milestone_line(m, index) for index, m in enumerate(milestones)],
        currency=milestones[0].currency,
    )
    await _bill_milestones(invoice, milestones)
    return invoice


async def generate_for_milestone(milestone_id: uuid.UUID) -> Invoice | None:
    """Issue the invoice of an approved milestone (the worker's job after approval).

    Safe to run twice, even at once: the milestone's row lock serialises the
    runs and the second finds the invoice the first made. A milestone already
    on an invoice (made by hand, say) gets no other: that invoice is returned.
    None when there is nothing to do (the milestone was cancelled). A milestone
    marked paid by hand before the job ran is invoiced too, and the invoice
    shows its share paid. The invoice goes to the client's primary contact when
    there is one.
    """
    milestone = await lock_rows(Milestone.filter(id=milestone_id)).first()
    if milestone is None:
        return None
    if milestone.invoice_id is not None:
        return await Invoice.get_or_none(id=milestone.invoice_id)
    if milestone.status not in (MilestoneStatus.APPROVED, MilestoneStatus.PAID):
        return None
    invoice = await issue_for_milestones([milestone], source=InvoiceSource.MILESTONE_APPROVAL)
    milestone.invoice_id = invoice.id
    if milestone.status == MilestoneStatus.PAID:
        await apply_milestone_payment(milestone, actor=None)
    primary = await primary_contact_email(milestone.client_id)
    if primary is not None:
        await _request_delivery(None, invoice, [primary], [], None, verb="email_requested")
    return invoice


async def issue_for_milestones(
    milestones: Sequence[Milestone],
    *,
    source: InvoiceSource = InvoiceSource.MILESTONES,
    announce: bool = True,
) -> Invoice:
    """Issue one invoice billing these milestones (of one client and currency) for Settle itself.

    The caller holds the milestones' row locks and has checked they are not invoiced.
    """
    first = milestones[0]
    agency = await Agency.get(id=first.agency_id)
    client = await Client.get(id=first.client_id)
    project_ids = {m.project_id for m in milestones}
    project = await Project.get(id=first.project_id) if len(project_ids) == 1 else None
    invoice, _ = await _create_draft(
        None,
        agency=agency,
        client=client,
        project=project,
        source=source,
        data={},
        lines=[_milestone_line(m, index) for index, m in enumerate(milestones)],
        currency=first.currency,
    )
    await _bill_milestones(invoice, milestones)
    await _finalize(None, invoice, announce=announce)
    return invoice


async def apply_milestone_payment(milestone: Milestone, *, actor: Actor | None) -> None:
    """Apply a milestone paid by hand before it was invoiced to its new issued invoice.

    Marked paid, it was paid in full: its line's share (with discount and tax)
    counts as received, and lands on the invoice within what the invoice owes.
    """
    line = await settlement.line_of(milestone)
    if line is None:
        return
    top_up = settlement.milestone_due(milestone, line)
    if top_up > 0:
        state = live_status.MilestoneState.of(milestone)
        milestone.amount_paid_minor += top_up
        await milestone.save(update_fields=["amount_paid_minor", "updated_at"])
        await live_status.milestone_changed(milestone, state)
    invoice = await Invoice.get(id=line.invoice_id)
    kept = milestone.amount_paid_minor - milestone.amount_refunded_minor
    amount = min(kept, settlement.invoice_due(invoice))
    if invoice.status in OPEN_STATUSES and amount > 0:
        await settlement.receive_on_invoice(invoice.id, amount, actor=actor)


async def record_milestone_invoice_error(milestone_id: uuid.UUID, error: str) -> None:
    """Show on the milestone why its automatic invoice failed (until a retry succeeds)."""
    await Milestone.filter(id=milestone_id, invoice_id__isnull=True).update(
        invoice_error=error[:2000]
    )
