"""CSV exports: a user asks for one entity's rows, a worker streams them into storage.

- ``create_export`` checks the request (columns, filter, the caller's role), writes
  the ``Export`` row, a timeline entry (who exported what) and the job, in the
  caller's transaction.
- ``run_export`` (the ``export.run`` job) claims the row, reads the rows the
  requester may see *now* page by page (keyset over ``(created_at, id)``, so memory
  stays flat whatever the size) and streams the CSV straight into storage, which
  keeps nothing of a write that did not finish. Each run writes a new object named
  after its attempt; only the run holding the claim may mark the export completed,
  so a file is served only once it is whole.
- A run keeps its claim fresh (``heartbeat_at``) as it goes. One that dies (a
  killed worker) stops doing so; after ``LEASE`` the janitor sends the job again
  and a new run starts from scratch into a new object.
- Progress is written to the row and announced on the agency's export channel at
  most once per ``export_progress_interval_seconds``; the claim and the outcome
  are announced through the outbox, after commit.

Which rows: exactly those the queries show the requester (the services' own
query builders), so a client user exports only their own client's issued
invoices and payments. Cells go through ``settle.core.csv_cells``: text a user
typed can never run as a spreadsheet formula.
"""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from settle.core import clock
from settle.core.csv_cells import UTF8_BOM, text_cell, value_cell
from settle.core.db import get_visible
from settle.core.errors import AppError, NotFoundError, PermissionDeniedError, ValidationError
from settle.core.money import Money
from settle.core.outbox import emit_event, send_job, transaction
from settle.core.pagination import Ordering, Page, paginate
from settle.core.settings import get_settings
from settle.core.signing import SignedUrl, UrlSigner
from settle.core.storage import get_storage
from settle.core.tenancy import Actor
from settle.models.agency import User
from settle.models.client import Client
from settle.models.export import Export, ExportEntity, ExportStatus
from settle.models.invoice import Invoice, InvoiceStatus
from settle.models.payment import PaymentStatus
from settle.models.project import Project, Task
from settle.services import activity, document_files, settlement
from settle.services import client as client_service
from settle.services import invoice as invoice_service
from settle.services import payment as payment_service
from settle.services import project as project_service
from settle.services import time_entry as time_entry_service
from settle.subscriptions import channels
from settle.subscriptions.bus import get_bus

log = logging.getLogger(__name__)

EXPORT_JOB = "export.run"
EXPIRE_JOB = "export.expire"
DOWNLOAD_PURPOSE = "export.download"
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
# A running export whose run has not been heard of this long is taken over by a new run.
LEASE = timedelta(seconds=60)
# How long one run may take before the worker stops it (the actor's time limit).
RUN_TIME_LIMIT_MS = 2 * 3600 * 1000
# Runs of one export that failed or died (an error, a killed worker, the actor's time
# limit) before it is marked failed rather than tried again.
MAX_ATTEMPTS = 5
# Exports whose files one statement of the retention sweep reads.
EXPIRE_BATCH = 500

TERMINAL = frozenset({ExportStatus.COMPLETED, ExportStatus.FAILED, ExportStatus.EXPIRED})


class ExportFailedError(AppError):
    """A run that cannot succeed however often it is tried; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]


class _Superseded(Exception):
    """This run lost its claim (it was too slow and another run took over)."""


# --- the columns ---------------------------------------------------------------------------

# Rows a page of rows refers to (clients, projects, ...), read once per page by id.
Lookups = dict[str, dict[Any, Any]]
Cell = Callable[[Any, Lookups], str]


@dataclass(frozen=True, slots=True)
class Column:
    """One CSV column: its header (a snake_case field name) and how a row's cell is made."""

    name: str
    cell: Cell


def _text(name: str, attr: str | None = None) -> Column:
    """Text a user typed: neutralised so no spreadsheet evaluates it."""
    key = attr or name
    return Column(name, lambda row, _: text_cell(getattr(row, key)))


def _value(name: str, attr: str | None = None) -> Column:
    """A value Settle formats itself: ids, flags, codes, ISO 8601 dates, counts."""
    key = attr or name
    return Column(name, lambda row, _: value_cell(getattr(row, key)))


def money_cell(minor_units: int | None, currency: str) -> str:
    """An amount in major units, exactly as ``Money.format_amount`` writes it: ``"1250.00"``."""
    if minor_units is None:
        return ""
    return value_cell(Decimal(Money(minor_units, currency).format_amount()))


def _money(name: str, attr: str) -> Column:
    return Column(name, lambda row, _: money_cell(getattr(row, attr), row.currency))


def _looked_up(name: str, table: str, key: str, attr: str) -> Column:
    """A field of the row ``key`` points at (a client's name), from the page's lookups."""

    def cell(row: Any, lookups: Lookups) -> str:
        found = lookups[table].get(getattr(row, key))
        return text_cell(None if found is None else getattr(found, attr))

    return Column(name, cell)


def _primary(name: str, attr: str) -> Column:
    """A field of a client's primary contact."""
    return _looked_up(name, "primary_contacts", "id", attr)


CLIENT_COLUMNS: tuple[Column, ...] = (
    _value("id"),
    _text("name"),
    _text("email"),
    _text("phone"),
    _text("address"),
    _text("tax_id"),
    _value("currency"),
    _value("is_active"),
    _text("external_id"),
    _primary("contact_name", "name"),
    _primary("contact_email", "email"),
    _primary("contact_phone", "phone"),
    _primary("contact_title", "title"),
    _value("created_at"),
)

CONTACT_COLUMNS: tuple[Column, ...] = (
    _value("id"),
    _value("client_id"),
    _looked_up("client_external_id", "clients", "client_id", "external_id"),
    _looked_up("client_name", "clients", "client_id", "name"),
    _text("name"),
    _text("email"),
    _text("phone"),
    _text("title"),
    _value("is_primary"),
    _value("created_at"),
)


def _amount_due(invoice: Any, _: Lookups) -> str:
    return money_cell(settlement.invoice_due(invoice), invoice.currency)


INVOICE_COLUMNS: tuple[Column, ...] = (
    _value("id"),
    _text("number"),
    _value("status"),
    _value("client_id"),
    _looked_up("client_name", "clients", "client_id", "name"),
    _value("project_id"),
    _looked_up("project_name", "projects", "project_id", "name"),
    _value("issue_date"),
    _value("due_date"),
    _value("currency"),
    _money("subtotal", "subtotal_minor"),
    _money("discount", "discount_minor"),
    _money("tax", "tax_minor"),
    _money("total", "total_minor"),
    _money("amount_paid", "amount_paid_minor"),
    _money("amount_refunded", "amount_refunded_minor"),
    _money("amount_credited", "amount_credited_minor"),
    Column("amount_due", _amount_due),
    _value("issued_at"),
    _value("paid_at"),
    _value("voided_at"),
    _value("created_at"),
)

PAYMENT_COLUMNS: tuple[Column, ...] = (
    _value("id"),
    _value("status"),
    _value("provider"),
    _value("method"),
    _text("reference"),
    _value("client_id"),
    _looked_up("client_name", "clients", "client_id", "name"),
    _value("project_id"),
    _looked_up("project_name", "projects", "project_id", "name"),
    _value("invoice_id"),
    _looked_up("invoice_number", "invoices", "invoice_id", "number"),
    _value("currency"),
    _money("amount", "amount_minor"),
    _money("amount_refunded", "amount_refunded_minor"),
    _text("provider_payment_id"),
    _value("succeeded_at"),
    _value("failed_at"),
    _value("created_at"),
)


def _hours(entry: Any, _: Lookups) -> str:
    if entry.minutes is None:
        return ""
    return value_cell(Decimal(time_entry_service.format_hours(entry.minutes)))


def _entry_amount(entry: Any, _: Lookups) -> str:
    if not entry.billable or entry.minutes is None or entry.hourly_rate_minor is None:
        return ""
    return money_cell(
        project_service.entry_amount_minor(entry.minutes, entry.hourly_rate_minor), entry.currency
    )


TIME_ENTRY_COLUMNS: tuple[Column, ...] = (
    _value("id"),
    _value("work_date"),
    _value("client_id"),
    _looked_up("client_name", "clients", "client_id", "name"),
    _value("project_id"),
    _looked_up("project_name", "projects", "project_id", "name"),
    _value("task_id"),
    _looked_up("task_title", "tasks", "task_id", "title"),
    _value("user_id"),
    _looked_up("user_name", "users", "user_id", "name"),
    _text("description"),
    _value("minutes"),
    Column("hours", _hours),
    _value("billable"),
    _money("hourly_rate", "hourly_rate_minor"),
    Column("amount", _entry_amount),
    _value("currency"),
    Column("invoiced", lambda entry, _: value_cell(entry.invoice_line_id is not None)),
    _value("created_at"),
)


# --- what each page refers to --------------------------------------------------------------


async def _by_id(
    model: Any, actor: Actor, ids: Sequence[Any], *, qs: QuerySet[Any] | None = None
) -> dict[Any, Any]:
    """The rows of ``model`` (of the actor's agency) with these ids, by id: one query."""
    wanted = list({row_id for row_id in ids if row_id is not None})
    if not wanted:
        return {}
    base = qs if qs is not None else model.filter(agency_id=actor.agency_id)
    return {row.id: row for row in await base.filter(id__in=wanted)}


async def _client_lookups(actor: Actor, rows: Sequence[Any]) -> Lookups:
    contacts = await (
        client_service.visible_contacts(actor)
        .filter(client_id__in=[row.id for row in rows], is_primary=True)
        .all()
    )
    return {"primary_contacts": {contact.client_id: contact for contact in contacts}}


async def _contact_lookups(actor: Actor, rows: Sequence[Any]) -> Lookups:
    clients = await _by_id(
        Client,
        actor,
        [row.client_id for row in rows],
        qs=client_service.visible_clients(actor),
    )
    return {"clients": clients}


async def _invoice_lookups(actor: Actor, rows: Sequence[Any]) -> Lookups:
    return {
        "clients": await _by_id(Client, actor, [row.client_id for row in rows]),
        "projects": await _by_id(Project, actor, [row.project_id for row in rows]),
    }


async def _payment_lookups(actor: Actor, rows: Sequence[Any]) -> Lookups:
    return {
        "clients": await _by_id(Client, actor, [row.client_id for row in rows]),
        "projects": await _by_id(Project, actor, [row.project_id for row in rows]),
        "invoices": await _by_id(Invoice, actor, [row.invoice_id for row in rows]),
    }


async def _time_entry_lookups(actor: Actor, rows: Sequence[Any]) -> Lookups:
    return {
        "clients": await _by_id(Client, actor, [row.client_id for row in rows]),
        "projects": await _by_id(Project, actor, [row.project_id for row in rows]),
        "tasks": await _by_id(Task, actor, [row.task_id for row in rows]),
        "users": await _by_id(User, actor, [row.user_id for row in rows]),
    }


# --- the entities ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """How one entity is exported: its columns, its rows, and what its filter means."""

    label: str
    columns: tuple[Column, ...]
    # The rows the actor may see: the same query builder as the entity's query.
    rows: Callable[[Actor], QuerySet[Any]]
    lookups: Callable[[Actor, Sequence[Any]], Awaitable[Lookups]]
    # The natural date ``from``/``to`` apply to, and whether it is a date or a timestamp.
    date_field: str
    date_is_day: bool
    # The column ``clientId`` narrows (``id`` for clients themselves).
    client_field: str
    # Whether ``projectId`` may narrow it, and the statuses ``status`` may name.
    by_project: bool = False
    statuses: type[StrEnum] | None = None
    # Whether client users may export it.
    for_client_users: bool = False

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


ENTITIES: dict[ExportEntity, EntitySpec] = {
    ExportEntity.CLIENTS: EntitySpec(
        "clients",
        CLIENT_COLUMNS,
        client_service.visible_clients,
        _client_lookups,
        date_field="created_at",
        date_is_day=False,
        client_field="id",
    ),
    ExportEntity.CONTACTS: EntitySpec(
        "contacts",
        CONTACT_COLUMNS,
        client_service.visible_contacts,
        _contact_lookups,
        date_field="created_at",
        date_is_day=False,
        client_field="client_id",
    ),
    ExportEntity.INVOICES: EntitySpec(
        "invoices",
        INVOICE_COLUMNS,
        invoice_service.visible_invoices,
        _invoice_lookups,
        date_field="issue_date",
        date_is_day=True,
        client_field="client_id",
        by_project=True,
        statuses=InvoiceStatus,
        for_client_users=True,
    ),
    ExportEntity.PAYMENTS: EntitySpec(
        "payments",
        PAYMENT_COLUMNS,
        payment_service.visible_payments,
        _payment_lookups,
        date_field="created_at",
        date_is_day=False,
        client_field="client_id",
        by_project=True,
        statuses=PaymentStatus,
        for_client_users=True,
    ),
    ExportEntity.TIME_ENTRIES: EntitySpec(
        "time entries",
        TIME_ENTRY_COLUMNS,
        time_entry_service.visible_time_entries,
        _time_entry_lookups,
        date_field="work_date",
        date_is_day=True,
        client_field="client_id",
        by_project=True,
    ),
}


# --- the request -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportFilter:
    date_from: date | None = None
    date_to: date | None = None
    client_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    status: str | None = None

    def stored(self) -> dict[str, str]:
        """The filter as the row keeps it (JSON): only what was given."""
        values = {
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
            "clientId": str(self.client_id) if self.client_id else None,
            "projectId": str(self.project_id) if self.project_id else None,
            "status": self.status,
        }
        return {key: value for key, value in values.items() if value is not None}

    @classmethod
    def from_stored(cls, data: dict[str, str]) -> ExportFilter:
        def day(key: str) -> date | None:
            return date.fromisoformat(data[key]) if data.get(key) else None

        def row_id(key: str) -> uuid.UUID | None:
            return uuid.UUID(data[key]) if data.get(key) else None

        return cls(
            day("from"), day("to"), row_id("clientId"), row_id("projectId"), data.get("status")
        )


def clean_columns(spec: EntitySpec, requested: Sequence[str] | None) -> list[str]:
    """The columns asked for, in the order asked (all of them by default)."""
    allowed = spec.column_names
    if requested is None:
        return allowed
    if not requested:
        raise ValidationError(
            "fields",
            "fields must name at least one column (or be left out for all)",
            code="NO_FIELDS",
        )
    unknown = [name for name in requested if name not in allowed]
    if unknown:
        raise ValidationError(
            "fields",
            f"Unknown field(s) for {spec.label}: {', '.join(unknown)}. "
            f"Allowed: {', '.join(allowed)}",
            code="UNKNOWN_FIELD",
        )
    repeated = sorted({name for name in requested if requested.count(name) > 1})
    if repeated:
        raise ValidationError(
            "fields", f"Field(s) named twice: {', '.join(repeated)}", code="DUPLICATE_FIELD"
        )
    return list(requested)


def _clean_status(spec: EntitySpec, status: str | None) -> str | None:
    if status is None:
        return None
    if spec.statuses is None:
        raise ValidationError(
            "filter.status",
            f"{spec.label.capitalize()} cannot be filtered by status; only invoices and payments",
            code="INVALID_FILTER",
        )
    value = status.strip().lower()
    allowed = [member.value for member in spec.statuses]
    if value not in allowed:
        raise ValidationError(
            "filter.status",
            f"Unknown {spec.label} status {status!r}. Allowed: "
            f"{', '.join(a.upper() for a in allowed)}",
            code="INVALID_FILTER",
        )
    return value


async def clean_filter(actor: Actor, spec: EntitySpec, flt: ExportFilter) -> ExportFilter:
    """The filter checked against the entity and what the actor may see.

    INVALID_RANGE when ``from`` is after ``to``; INVALID_FILTER for a project or
    a status the entity has none of, an unknown status, or a project of another
    client than ``clientId``; NotFoundError for a client or project the actor
    may not see (as the queries answer).
    """
    if flt.date_from and flt.date_to and flt.date_from > flt.date_to:
        raise ValidationError("filter.from", "from must not be after to", code="INVALID_RANGE")
    if flt.project_id is not None and not spec.by_project:
        raise ValidationError(
            "filter.projectId",
            f"{spec.label.capitalize()} cannot be filtered by project",
            code="INVALID_FILTER",
        )
    status = _clean_status(spec, flt.status)
    if flt.client_id is not None:
        await client_service.get_client(actor, flt.client_id)
    if flt.project_id is not None:
        project = await project_service.get_project(actor, flt.project_id)
        if flt.client_id is not None and project.client_id != flt.client_id:
            raise ValidationError(
                "filter.projectId",
                "The project belongs to another client than filter.clientId",
                code="INVALID_FILTER",
            )
    return ExportFilter(flt.date_from, flt.date_to, flt.client_id, flt.project_id, status)


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def filtered_rows(actor: Actor, spec: EntitySpec, flt: ExportFilter) -> QuerySet[Any]:
    """The rows an export of ``spec`` with ``flt`` holds, as the actor may see them now."""
    qs = spec.rows(actor)
    if flt.date_from is not None:
        bound: Any = flt.date_from if spec.date_is_day else _start_of(flt.date_from)
        qs = qs.filter(**{f"{spec.date_field}__gte": bound})
    if flt.date_to is not None:
        if spec.date_is_day:
            qs = qs.filter(**{f"{spec.date_field}__lte": flt.date_to})
        else:
            # Timestamps are compared in UTC: the whole ``to`` day is included.
            qs = qs.filter(**{f"{spec.date_field}__lt": _start_of(flt.date_to + timedelta(days=1))})
    if flt.client_id is not None:
        qs = qs.filter(**{spec.client_field: flt.client_id})
    if flt.project_id is not None:
        qs = qs.filter(project_id=flt.project_id)
    if flt.status is not None and spec.statuses is not None:
        qs = qs.filter(status=spec.statuses(flt.status))
    return qs


def _require_entity(actor: Actor, spec: EntitySpec) -> None:
    if actor.is_client_user and not spec.for_client_users:
        raise PermissionDeniedError("Client users export only invoices and payments")


def _too_large(count: int, limit: int) -> str:
    return f"The export would hold {count} rows; at most {limit} are allowed: narrow the filter"


async def create_export(
    actor: Actor, entity: ExportEntity, columns: Sequence[str] | None, flt: ExportFilter
) -> Export:
    """Queue a CSV export of ``entity`` (a client user: invoices and payments only)."""
    spec = ENTITIES[entity]
    _require_entity(actor, spec)
    chosen = clean_columns(spec, columns)
    cleaned = await clean_filter(actor, spec, flt)
    total = await filtered_rows(actor, spec, cleaned).count()
    limit = get_settings().export_max_rows
    if total > limit:
        raise ValidationError("filter", _too_large(total, limit), code="EXPORT_TOO_LARGE")
    export = await Export.create(
        agency_id=actor.agency_id,
        requested_by_id=actor.user_id,
        client_id=actor.client_id if actor.is_client_user else None,
        entity=entity,
        columns=chosen,
        filters=cleaned.stored(),
        total_rows=total,
    )
    await activity.record(
        actor,
        agency_id=actor.agency_id,
        entity_type="export",
        entity_id=export.id,
        verb="requested",
        summary=f"{actor.name} exported {spec.label} ({total} row{'' if total == 1 else 's'})",
        changes=activity.snapshot(
            {"entity": entity.value, "columns": chosen, "filter": cleaned.stored() or None}
        ),
        internal=True,
    )
    await send_job(EXPORT_JOB, str(export.id))
    return export


# --- reading exports -------------------------------------------------------------------------


def visible_exports(actor: Actor) -> QuerySet[Export]:
    """The agency's exports for its staff; a client user's only those of their own client."""
    qs = Export.filter(agency_id=actor.agency_id)
    if actor.is_client_user:
        if actor.client_id is None:
            return qs.filter(pk__in=[])
        qs = qs.filter(client_id=actor.client_id)
    return qs


async def get_export(actor: Actor, export_id: uuid.UUID) -> Export:
    """An export the actor may see, or NotFoundError (also for other agencies' ids)."""
    return await get_visible(visible_exports(actor), export_id, "Export")


async def list_exports(actor: Actor, *, first: int | None, after: str | None) -> Page[Export]:
    """The exports the actor may see, newest first."""
    return await paginate(
        visible_exports(actor), first=first, after=after, ordering=Ordering("created_at", True)
    )


def _signer() -> UrlSigner:
    return UrlSigner(get_settings().signing_key(), DOWNLOAD_PURPOSE)


def download_url(actor: Actor, export: Export) -> SignedUrl | None:
    """A signed, expiring link to a completed export's file, for this user; None before."""
    if export.status != ExportStatus.COMPLETED or export.file_key is None:
        return None
    settings = get_settings()
    token, expires_at = _signer().sign(
        {"i": str(export.id), "u": str(actor.user_id)}, ttl_seconds=settings.export_url_ttl_seconds
    )
    return SignedUrl(f"{settings.public_base_url.rstrip('/')}/files/exports/{token}", expires_at)


async def open_download(token: str) -> Export:
    """Check a download URL, and visibility again: SignedTokenError or NotFoundError."""
    export_id, actor = await document_files.token_actor(_signer().verify(token))
    export = await get_export(actor, export_id)
    if export.status != ExportStatus.COMPLETED or export.file_key is None:
        raise NotFoundError("Export file", export_id)
    return export


def filename(export: Export) -> str:
    """``<entity>-<date>-<short id>.csv``."""
    return f"{export.entity.value}-{export.created_at.date().isoformat()}-{str(export.id)[:8]}.csv"


def storage_key(export: Export, attempt: int) -> str:
    return f"exports/{export.agency_id}/{export.id}/{attempt}.csv"


# --- running an export -----------------------------------------------------------------------


def state_message(export: Export) -> dict[str, Any]:
    """What the export channel carries: enough for a subscriber to know it concerns it."""
    return {
        "exportId": str(export.id),
        "agencyId": str(export.agency_id),
        "status": export.status.value,
        "rows": export.rows,
        "totalRows": export.total_rows,
        "changedAt": clock.now().isoformat(),
    }


async def _claim(export_id: uuid.UUID) -> tuple[Export, int] | None:
    """Take the export for this run: (the row, this run's attempt), or None if not ours.

    A pending export is taken, and a running one whose run has been silent past
    ``LEASE`` (it died); a finished one, or one whose run is alive, is left alone.
    After ``MAX_ATTEMPTS`` runs that failed or died (an error, a killed worker,
    the actor's time limit) the export fails instead. The conditional update lets
    exactly one of two racing runs win.
    """
    export = await Export.get_or_none(id=export_id)
    if export is None or export.status in TERMINAL:
        return None
    now = clock.now()
    if (
        export.status == ExportStatus.RUNNING
        and export.heartbeat_at is not None
        and export.heartbeat_at > now - LEASE
    ):
        return None
    if export.attempt >= MAX_ATTEMPTS:
        failed = ExportFailedError("EXPORT_FAILED", "The export could not be written; ask again")
        await _fail(export, export.attempt, failed, waiting=True)
        return None
    attempt = export.attempt + 1
    async with transaction():
        claimed = await Export.filter(
            id=export.id,
            attempt=export.attempt,
            status__in=[ExportStatus.PENDING, ExportStatus.RUNNING],
        ).update(
            status=ExportStatus.RUNNING,
            attempt=attempt,
            heartbeat_at=now,
            started_at=now,
            rows=0,
            updated_at=now,
        )
        if not claimed:
            return None
        export = await Export.get(id=export.id)
        await emit_event(channels.exports(export.agency_id), state_message(export))
    return export, attempt


async def _requester(export: Export) -> Actor:
    """The user who asked, as they are now: their role and client decide what is exported."""
    user = None
    if export.requested_by_id is not None:
        user = await User.get_or_none(id=export.requested_by_id, is_active=True)
    if user is None:
        raise ExportFailedError(
            "REQUESTER_INACTIVE", "The user who asked for this export is no longer active"
        )
    actor = Actor.from_user(user)
    try:
        _require_entity(actor, ENTITIES[export.entity])
    except PermissionDeniedError as exc:
        raise ExportFailedError(exc.code, exc.message) from None
    return actor


@dataclass
class _Run:
    export: Export
    attempt: int
    actor: Actor
    spec: EntitySpec
    columns: tuple[Column, ...]
    rows: int = 0
    last_progress: float = field(default=0.0)

    async def progress(self) -> None:
        """Write the rows so far and refresh the claim; announce it (throttled)."""
        settings = get_settings()
        now = clock.now()
        elapsed = now.timestamp() - self.last_progress
        # The claim is refreshed with the progress: never so rarely that it would lapse.
        interval = min(settings.export_progress_interval_seconds, LEASE.total_seconds() / 4)
        if elapsed < interval:
            return
        self.last_progress = now.timestamp()
        updated = await Export.filter(
            id=self.export.id, attempt=self.attempt, status=ExportStatus.RUNNING
        ).update(rows=self.rows, heartbeat_at=now, updated_at=now)
        if not updated:
            raise _Superseded()
        self.export.rows = self.rows
        try:
            # Straight to the bus, not the outbox: progress is a passing figure (the row
            # holds the truth), and a lost one is made good by the next or by the outcome.
            await get_bus().publish(
                channels.exports(self.export.agency_id), state_message(self.export)
            )
        except Exception:
            log.warning("export.progress_not_announced", extra={"export_id": str(self.export.id)})


async def _csv(run: _Run, query: QuerySet[Any]) -> AsyncIterator[bytes]:
    """The CSV, a page at a time: BOM and header, then each page of rows as it is read."""
    settings = get_settings()
    page_size, limit = settings.export_page_size, settings.export_max_rows
    header = io.StringIO()
    csv.writer(header).writerow([column.name for column in run.columns])
    yield (UTF8_BOM + header.getvalue()).encode()
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        page_qs = query
        if after is not None:
            page_qs = page_qs.filter(
                Q(created_at__gt=after[0]) | Q(created_at=after[0], id__gt=after[1])
            )
        rows = list(await page_qs.order_by("created_at", "id").limit(page_size))
        if not rows:
            return
        if run.rows + len(rows) > limit:
            raise ExportFailedError("EXPORT_TOO_LARGE", _too_large(run.rows + len(rows), limit))
        lookups = await run.spec.lookups(run.actor, rows)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow([column.cell(row, lookups) for column in run.columns])
        yield buffer.getvalue().encode()
        run.rows += len(rows)
        await run.progress()
        if len(rows) < page_size:
            return
        after = (rows[-1].created_at, rows[-1].id)


async def _finish(
    export: Export, attempt: int, values: dict[str, Any], *, waiting: bool = False
) -> bool:
    """Record the outcome if this run still holds the claim (``waiting``: or nobody holds it,
    the export waits for a run); announce it after commit."""
    now = clock.now()
    statuses = [ExportStatus.RUNNING, *([ExportStatus.PENDING] if waiting else [])]
    async with transaction():
        done = await Export.filter(id=export.id, attempt=attempt, status__in=statuses).update(
            finished_at=now, heartbeat_at=now, updated_at=now, **values
        )
        if done:
            await emit_event(
                channels.exports(export.agency_id), state_message(await Export.get(id=export.id))
            )
    return bool(done)


async def _fail(
    export: Export, attempt: int, error: ExportFailedError, *, waiting: bool = False
) -> None:
    values = {"status": ExportStatus.FAILED, "error": error.message, "error_code": error.code}
    await _finish(export, attempt, values, waiting=waiting)


async def _release(export: Export, attempt: int, error: Exception) -> None:
    """An unexpected failure: give the export back for a retry (``_claim`` counts the runs)."""
    log.warning(
        "export.run_failed",
        extra={
            "export_id": str(export.id),
            "attempt": attempt,
            "error": f"{type(error).__name__}: {error}",
        },
    )
    await Export.filter(id=export.id, attempt=attempt, status=ExportStatus.RUNNING).update(
        status=ExportStatus.PENDING, updated_at=clock.now()
    )


async def run_export(export_id: uuid.UUID) -> None:
    """Write one export's CSV into storage and mark it completed (the worker's job).

    Safe to run twice and next to another run: only the run holding the claim
    writes the outcome, and each run writes its own object.
    """
    claimed = await _claim(export_id)
    if claimed is None:
        return
    export, attempt = claimed
    key = storage_key(export, attempt)
    try:
        actor = await _requester(export)
        spec = ENTITIES[export.entity]
        by_name = {column.name: column for column in spec.columns}
        run = _Run(export, attempt, actor, spec, tuple(by_name[name] for name in export.columns))
        query = filtered_rows(actor, spec, ExportFilter.from_stored(export.filters))
        stored = await get_storage().put(key, _csv(run, query))
    except ExportFailedError as error:
        await _fail(export, attempt, error)
        return
    except _Superseded:
        return
    except Exception as error:
        await _release(export, attempt, error)
        raise
    completed = {
        "status": ExportStatus.COMPLETED,
        "file_key": key,
        "size_bytes": stored.size,
        "rows": run.rows,
    }
    if not await _finish(export, attempt, completed):
        # Another run took the export over meanwhile: its file is the one kept.
        await get_storage().delete(key)


# --- retention -------------------------------------------------------------------------------


async def expire_exports(now: datetime | None = None) -> int:
    """Delete the files of exports completed more than ``export_retention_seconds`` ago.

    The file goes first, then the row says so: a sweep that dies in between
    finds the export again and deleting a missing object is no error. Returns
    how many exports expired.
    """
    at = now or clock.now()
    cutoff = at - timedelta(seconds=get_settings().export_retention_seconds)
    expired = 0
    while True:
        batch = list(
            await Export.filter(status=ExportStatus.COMPLETED, finished_at__lte=cutoff)
            .order_by("finished_at", "id")
            .limit(EXPIRE_BATCH)
        )
        for export in batch:
            if export.file_key is not None:
                await get_storage().delete(export.file_key)
            async with transaction():
                done = await Export.filter(id=export.id, status=ExportStatus.COMPLETED).update(
                    status=ExportStatus.EXPIRED, file_key=None, updated_at=at
                )
                if done:
                    export.status = ExportStatus.EXPIRED
                    await emit_event(channels.exports(export.agency_id), state_message(export))
            expired += done
        if len(batch) < EXPIRE_BATCH:
            return expired
