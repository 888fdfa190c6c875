"""Time entries: time logged on a project by hand, or with a timer.

Rounding rule: an entry's duration is rounded to the nearest quarter hour,
exactly half way rounding up. In minutes, ``15 * floor(d / 15 + 1/2)`` computed
exactly (no float): 7m29s -> 0 (rejected: log at least 7.5 minutes), 7m30s -> 15,
22m29s -> 15, 22m30s -> 30, 1h07m -> 1h, 1.125 h -> 1.25 h. The same rule
applies to ``hours`` given by hand, to a start and end, and to a stopped timer.

Limits: the end is after the start, and one entry spans at most 24 hours
(``hours`` above 0 and at most 24). An entry copies its project's hourly rate
and currency when it is logged, so a later rate change never re-prices it, and
an entry already billed (``invoice_line_id`` set) can no longer change.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import RawSQL
from tortoise.functions import Sum
from tortoise.queryset import QuerySet

from settle.core import clock, validation
from settle.core.db import as_uuid, get_visible, lock_rows
from settle.core.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from settle.core.pagination import Ordering, Page, paginate, paginate_each
from settle.core.tenancy import MANAGERS, MEMBERS, Actor, scoped
from settle.models.project import Project, TimeEntry
from settle.services import activity
from settle.services import project as project_service
from settle.services import task as task_service

QUARTER_MINUTES = 15
MAX_ENTRY_MINUTES = 24 * 60
DESCRIPTION_MAX_LENGTH = 1000

TIME_ENTRY_ORDERING = Ordering("work_date", descending=True)

# Per-entry billable amount in SQL, exactly as project.entry_amount_minor computes it.
_ENTRY_AMOUNT_SQL = (
    'CASE WHEN "billable" AND "hourly_rate_minor" IS NOT NULL '
    'THEN ("minutes" * "hourly_rate_minor" * 2 + 60) / 120 ELSE 0 END'
)
_BILLABLE_MINUTES_SQL = 'CASE WHEN "billable" THEN "minutes" ELSE 0 END'

# Fields of an entry the timeline shows before and after a change.
ENTRY_FIELDS = (
    "task_id",
    "description",
    "work_date",
    "started_at",
    "ended_at",
    "minutes",
    "billable",
)


class TimeEntryBilledError(ConflictError):
    code = "TIME_ENTRY_BILLED"

    def __init__(self) -> None:
        super().__init__("This time entry has been billed and can no longer change")


class TimerRunningError(ConflictError):
    code = "TIMER_RUNNING"

    def __init__(self) -> None:
        super().__init__("You already have a running timer: stop it first")


class NoRunningTimerError(ConflictError):
    code = "NO_RUNNING_TIMER"

    def __init__(self) -> None:
        super().__init__("You have no running timer")


@dataclass(frozen=True, slots=True)
class TimeEntryFilter:
    project_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    task_id: uuid.UUID | None = None
    date_from: date | None = None
    date_to: date | None = None
    billable: bool | None = None
    invoiced: bool | None = None


# --- rounding and input ------------------------------------------------------


def round_to_quarter(minutes: Fraction) -> int:
    """Minutes rounded to the nearest multiple of 15, exactly half way rounding up."""
    return QUARTER_MINUTES * math.floor(minutes / QUARTER_MINUTES + Fraction(1, 2))


def format_hours(minutes: int) -> str:
    """Minutes as hours with two decimal places (exact for quarter hours): 90 -> "1.50"."""
    hundredths = (minutes * 100 * 2 + 60) // 120
    return f"{Decimal(hundredths).scaleb(-2):.2f}"


def _too_short(field: str | None) -> ValidationError:
    return ValidationError(
        field,
        "Time is logged in quarter hours and this rounds to 0 minutes: log at least 7.5 minutes",
        code="TOO_SHORT",
    )


def _aware(field: str, value: Any) -> datetime:
    if value is None:
        raise ValidationError(field, f"{field} must not be empty", code="REQUIRED")
    if not isinstance(value, datetime):
        raise ValidationError(field, f"{field} must be a date and time")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            field, f"{field} must include a time zone offset", code="INVALID_DATETIME"
        )
    return value.astimezone(UTC)


def minutes_between(
    started_at: datetime, ended_at: datetime, *, field: str | None = "endedAt"
) -> int:
    """The rounded minutes from start to end; ValidationError naming ``field`` if invalid."""
    if ended_at <= started_at:
        raise ValidationError(field, "endedAt must be after startedAt", code="INVALID_RANGE")
    duration = ended_at - started_at
    if duration > timedelta(minutes=MAX_ENTRY_MINUTES):
        raise ValidationError(field, "A time entry spans at most 24 hours", code="OUT_OF_RANGE")
    minutes = round_to_quarter(Fraction(duration // timedelta(microseconds=1), 60_000_000))
    if minutes == 0:
        raise _too_short(field)
    return minutes


def minutes_from_hours(value: Any) -> int:
    """The rounded minutes of a decimal number of hours (above 0, at most 24)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValidationError("hours", "hours must not be empty", code="REQUIRED")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise ValidationError("hours", "hours must be a decimal number", code="INVALID_DECIMAL")
    if number <= 0 or number > MAX_ENTRY_MINUTES // 60:
        raise ValidationError(
            "hours", "hours must be greater than 0 and at most 24", code="OUT_OF_RANGE"
        )
    minutes = round_to_quarter(Fraction(number) * 60)
    if minutes == 0:
        raise _too_short("hours")
    return minutes


def _duration(values: dict[str, Any], current: TimeEntry | None) -> dict[str, Any]:
    """The time fields of ``values``: hours, or a start and an end (merged with ``current``)."""
    has_span = "started_at" in values or "ended_at" in values
    if "hours" in values and has_span:
        raise ValidationError(
            "hours", "Give either hours or startedAt and endedAt, not both", code="CONFLICTING"
        )
    if "hours" in values:
        return {
            "minutes": minutes_from_hours(values["hours"]),
            "started_at": None,
            "ended_at": None,
        }
    if not has_span:
        if current is None:
            raise ValidationError("hours", "Give hours, or startedAt and endedAt", code="REQUIRED")
        return {}
    started = values.get("started_at", current.started_at if current else None)
    ended = values.get("ended_at", current.ended_at if current else None)
    started_at = _aware("startedAt", started)
    ended_at = _aware("endedAt", ended)
    return {
        "started_at": started_at,
        "ended_at": ended_at,
        "minutes": minutes_between(started_at, ended_at),
    }


async def _clean(
    actor: Actor, project: Project, values: dict[str, Any], current: TimeEntry | None
) -> dict[str, Any]:
    """Validate the entry fields present in ``values``; returns model field values."""
    known = {"task_id", "description", "work_date", "started_at", "ended_at", "hours", "billable"}
    for key in values:
        if key not in known:
            raise ValidationError(key, f"Unknown field {key}")
    cleaned: dict[str, Any] = {}
    if "task_id" in values:
        task = await task_service.project_task(actor, project, values["task_id"])
        cleaned["task_id"] = task.id if task else None
    if "description" in values:
        cleaned["description"] = (
            validation.optional_text(
                "description", values["description"], max_length=DESCRIPTION_MAX_LENGTH
            )
            or ""
        )
    if "billable" in values:
        if not isinstance(values["billable"], bool):
            raise ValidationError("billable", "billable must be true or false")
        cleaned["billable"] = values["billable"]
    if {"hours", "started_at", "ended_at"} & values.keys() and current and current.is_running:
        raise ValidationError(
            "hours", "Stop the timer before changing its time", code="TIMER_RUNNING"
        )
    cleaned.update(_duration(values, current))
    if "work_date" in values:
        work_date = values["work_date"]
        if work_date is None:
            raise ValidationError("workDate", "workDate must not be empty", code="REQUIRED")
        if not isinstance(work_date, date) or isinstance(work_date, datetime):
            raise ValidationError("workDate", "workDate must be a date")
        cleaned["work_date"] = work_date
    elif current is None:
        start = cleaned.get("started_at")
        cleaned["work_date"] = start.date() if start else clock.now().date()
    return cleaned


async def _record(
    actor: Actor, entry: TimeEntry, verb: str, summary: str, changes: activity.Changes
) -> None:
    await activity.record(
        actor,
        agency_id=entry.agency_id,
        client_id=entry.client_id,
        entity_type="time_entry",
        entity_id=entry.id,
        verb=verb,
        summary=summary,
        changes=changes,
    )


# --- lookups and lists -------------------------------------------------------


def _entries(actor: Actor) -> QuerySet[TimeEntry]:
    return scoped(TimeEntry, actor)


def visible_time_entries(actor: Actor) -> QuerySet[TimeEntry]:
    """Every time entry the actor may see, as the time entries query shows them (exports)."""
    return _entries(actor)


async def get_time_entry(actor: Actor, entry_id: uuid.UUID) -> TimeEntry:
    """A time entry the actor may see, or NotFoundError (also for other agencies' ids)."""
    return await get_visible(_entries(actor), entry_id, "TimeEntry")


async def _changeable(actor: Actor, entry_id: uuid.UUID) -> TimeEntry:
    """A locked entry the actor may change: their own, or any as a manager; never once billed."""
    entry = await lock_rows(_entries(actor).filter(id=entry_id)).first()
    if entry is None:
        raise NotFoundError("TimeEntry", entry_id)
    actor.require(*MEMBERS)
    if entry.user_id != actor.user_id and actor.role not in MANAGERS:
        raise PermissionDeniedError("Only its author or an owner or admin may change a time entry")
    if entry.invoice_line_id is not None:
        raise TimeEntryBilledError()
    return entry


async def running_timer(actor: Actor) -> TimeEntry | None:
    """The actor's running timer, if any."""
    return await _entries(actor).filter(user_id=actor.user_id, is_running=True).first()


def _filtered(actor: Actor, flt: TimeEntryFilter) -> QuerySet[TimeEntry]:
    if flt.date_from and flt.date_to and flt.date_from > flt.date_to:
        raise ValidationError("filter.from", "from must not be after to", code="INVALID_RANGE")
    qs = _entries(actor)
    if flt.project_id is not None:
        qs = qs.filter(project_id=flt.project_id)
    if flt.user_id is not None:
        qs = qs.filter(user_id=flt.user_id)
    if flt.task_id is not None:
        qs = qs.filter(task_id=flt.task_id)
    if flt.date_from is not None:
        qs = qs.filter(work_date__gte=flt.date_from)
    if flt.date_to is not None:
        qs = qs.filter(work_date__lte=flt.date_to)
    if flt.billable is not None:
        qs = qs.filter(billable=flt.billable)
    if flt.invoiced is not None:
        qs = qs.filter(invoice_line_id__isnull=not flt.invoiced)
    return qs


async def list_time_entries(
    actor: Actor, flt: TimeEntryFilter, *, first: int | None, after: str | None
) -> Page[TimeEntry]:
    """Time entries the actor may see, filtered, newest work date first."""
    return await paginate(
        _filtered(actor, flt), first=first, after=after, ordering=TIME_ENTRY_ORDERING
    )


async def entries_of_projects(
    actor: Actor, project_ids: Sequence[uuid.UUID], *, first: int | None, after: str | None
) -> dict[uuid.UUID, Page[TimeEntry]]:
    """Each project's time entries, newest work date first, a page of each, in fixed queries."""
    return await paginate_each(
        _entries(actor),
        "project_id",
        project_ids,
        first=first,
        after=after,
        ordering=TIME_ENTRY_ORDERING,
    )


@dataclass(frozen=True, slots=True)
class TimeTotal:
    """Stopped time of one user or task (``key``; None for time without a task)."""

    key: uuid.UUID | None
    minutes: int = 0
    billable_minutes: int = 0
    billable_amount_minor: int = 0


@dataclass(frozen=True, slots=True)
class TimeSummary:
    project_id: uuid.UUID
    currency: str
    date_from: date | None
    date_to: date | None
    by_user: list[TimeTotal] = field(default_factory=list)
    by_task: list[TimeTotal] = field(default_factory=list)

    @property
    def total(self) -> TimeTotal:
        return TimeTotal(
            None,
            sum(row.minutes for row in self.by_user),
            sum(row.billable_minutes for row in self.by_user),
            sum(row.billable_amount_minor for row in self.by_user),
        )


async def time_summary(
    actor: Actor, project_id: uuid.UUID, date_from: date | None, date_to: date | None
) -> TimeSummary:
    """Stopped time of a project in a date range, totalled by user and by task in SQL.

    The billable amount rounds each entry on its own (see entry_amount_minor),
    so it matches the project's statistics and the invoice lines built from entries.
    """
    if date_from and date_to and date_from > date_to:
        raise ValidationError("from", "from must not be after to", code="INVALID_RANGE")
    project = await scoped(Project, actor).get_or_none(id=project_id)
    if project is None:
        raise NotFoundError("Project", project_id)
    qs = _filtered(
        actor, TimeEntryFilter(project_id=project.id, date_from=date_from, date_to=date_to)
    ).filter(is_running=False, minutes__isnull=False)

    async def totals(column: str) -> list[TimeTotal]:
        # Sum accepts any term at run time; its annotations name only fields and F.
        rows = (
            await qs.annotate(
                total_minutes=Sum("minutes"),
                billable_total=Sum(RawSQL(_BILLABLE_MINUTES_SQL)),  # type: ignore[arg-type]
                amount=Sum(RawSQL(_ENTRY_AMOUNT_SQL)),  # type: ignore[arg-type]
            )
            .group_by(column)
            .values_list(column, "total_minutes", "billable_total", "amount")
        )
        found = [
            TimeTotal(
                None if key is None else as_uuid(key),
                int(minutes or 0),
                int(billable or 0),
                int(amount or 0),
            )
            for key, minutes, billable, amount in rows
        ]
        # Most time first; time without a task after the tasks with as much.
        return sorted(found, key=lambda t: (-t.minutes, t.key is None, str(t.key)))

    return TimeSummary(
        project_id=project.id,
        currency=project.currency,
        date_from=date_from,
        date_to=date_to,
        by_user=await totals("user_id"),
        by_task=await totals("task_id"),
    )


# --- changes -----------------------------------------------------------------


async def _after_time_change(actor: Actor, project_id: uuid.UUID, *billable: bool) -> None:
    """Billable time changed: announce budget thresholds it crossed (same transaction)."""
    if any(billable):
        await project_service.record_budget_alerts(actor, project_id)


async def log_time(actor: Actor, project_id: uuid.UUID, values: dict[str, Any]) -> TimeEntry:
    """Log time on a project: hours, or a start and end; rounded to the quarter hour."""
    actor.require(*MEMBERS)
    project = await task_service.live_project(actor, project_id)
    data = await _clean(actor, project, values, None)
    data.setdefault("billable", project.billable)
    entry = await TimeEntry.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        user_id=actor.user_id,
        is_running=False,
        hourly_rate_minor=project.hourly_rate_minor,
        currency=project.currency,
        **data,
    )
    await _record(
        actor,
        entry,
        "created",
        f"{actor.name} logged {format_hours(data['minutes'])} h on {project.name}",
        activity.snapshot(
            {key: getattr(entry, key) for key in (*ENTRY_FIELDS, "hourly_rate_minor", "currency")}
        ),
    )
    await _after_time_change(actor, project.id, entry.billable)
    return entry


async def update_time_entry(actor: Actor, entry_id: uuid.UUID, values: dict[str, Any]) -> TimeEntry:
    """Change the given fields of an entry not yet billed; time is rounded again."""
    entry = await _changeable(actor, entry_id)
    project = await scoped(Project, actor).get(id=entry.project_id)
    data = await _clean(actor, project, values, entry)
    before = {key: getattr(entry, key) for key in data}
    changes = activity.diff(before, data)
    if not changes:
        return entry
    was_billable = entry.billable
    entry.update_from_dict(data)
    await entry.save(update_fields=[*data.keys(), "updated_at"])
    await _record(actor, entry, "updated", f"Time entry on {project.name} updated", changes)
    await _after_time_change(actor, project.id, was_billable, entry.billable)
    return entry


async def delete_time_entry(actor: Actor, entry_id: uuid.UUID) -> TimeEntry:
    """Delete an entry not yet billed (a running timer is discarded)."""
    entry = await _changeable(actor, entry_id)
    await entry.delete()
    before = {key: getattr(entry, key) for key in ENTRY_FIELDS}
    await _record(
        actor,
        entry,
        "deleted",
        f"{actor.name} deleted a time entry of {format_hours(entry.minutes or 0)} h",
        activity.diff(before, {}),
    )
    await _after_time_change(actor, entry.project_id, entry.billable)
    return entry


async def start_timer(
    actor: Actor, project_id: uuid.UUID, task_id: uuid.UUID | None, description: str | None
) -> TimeEntry:
    """Start the actor's timer on a project; a user has at most one running."""
    actor.require(*MEMBERS)
    project = await task_service.live_project(actor, project_id)
    task = await task_service.project_task(actor, project, task_id)
    text = validation.optional_text("description", description, max_length=DESCRIPTION_MAX_LENGTH)
    if await TimeEntry.filter(user_id=actor.user_id, is_running=True).exists():
        raise TimerRunningError()
    now = clock.now()
    try:
        entry = await TimeEntry.create(
            agency_id=project.agency_id,
            project_id=project.id,
            client_id=project.client_id,
            user_id=actor.user_id,
            task_id=task.id if task else None,
            description=text or "",
            work_date=now.date(),
            started_at=now,
            is_running=True,
            billable=project.billable,
            hourly_rate_minor=project.hourly_rate_minor,
            currency=project.currency,
        )
    except IntegrityError:
        # A concurrent start won the partial unique index (uq_time_entry_running_per_user).
        raise TimerRunningError() from None
    await _record(
        actor,
        entry,
        "timer_started",
        f"{actor.name} started a timer on {project.name}",
        activity.snapshot(
            {key: getattr(entry, key) for key in ("task_id", "description", "started_at")}
        ),
    )
    return entry


async def stop_timer(actor: Actor) -> TimeEntry:
    """Stop the actor's running timer and record its rounded minutes.

    A timer that ran under 7.5 minutes (rounds to 0) or over 24 hours is not
    stopped: it keeps running, and can be deleted and the time logged by hand.
    """
    entry = await lock_rows(_entries(actor).filter(user_id=actor.user_id, is_running=True)).first()
    if entry is None:
        raise NoRunningTimerError()
    assert entry.started_at is not None
    now = clock.now()
    minutes = minutes_between(entry.started_at, now, field=None)
    before = {"ended_at": None, "minutes": None, "is_running": True}
    entry.ended_at = now
    entry.minutes = minutes
    entry.is_running = False
    await entry.save(update_fields=["ended_at", "minutes", "is_running", "updated_at"])
    await _record(
        actor,
        entry,
        "timer_stopped",
        f"{actor.name} logged {format_hours(minutes)} h with a timer",
        activity.diff(before, {"ended_at": now, "minutes": minutes, "is_running": False}),
    )
    await _after_time_change(actor, entry.project_id, entry.billable)
    return entry
