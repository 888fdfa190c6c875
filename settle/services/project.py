"""Projects: budgets, payment terms and what has been spent against them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

from tortoise.expressions import Q
from tortoise.functions import Count, Sum
from tortoise.queryset import QuerySet

from settle.core import clock, validation
from settle.core.db import as_uuid, get_visible, lock_rows
from settle.core.errors import ConflictError, PermissionDeniedError, ValidationError
from settle.core.money import Money, normalize_currency
from settle.core.pagination import Ordering, Page, paginate, paginate_nulls_last
from settle.core.tenancy import MANAGERS, MEMBERS, Actor, scoped
from settle.models.milestone import Milestone, MilestoneStatus
from settle.models.project import Project, ProjectStatus, Task, TaskStatus, TimeEntry
from settle.services import activity
from settle.services import client as client_service

# Budget thresholds (percent of budget) announced on the timeline, once each.
BUDGET_ALERT_THRESHOLDS = (80, 100)

# Payment terms a project gets unless an owner or admin sets others.
DEFAULT_ADVANCE_PERCENT = 0
DEFAULT_INVOICE_DUE_DAYS = 30
MAX_INVOICE_DUE_DAYS = 365
PAYMENT_TERMS = ("advance_percent", "invoice_due_days")
# Who hears of the project's payments is the managers' call, as its payment terms are.
MANAGED_SETTINGS = (*PAYMENT_TERMS, "notify_milestone_members")
DEFAULT_NOTIFY_MILESTONE_MEMBERS = False

DESCRIPTION_MAX_LENGTH = 10_000

# Milestones whose work is still to be approved count as pending money.
PENDING_MILESTONE_STATUSES = frozenset(
    {MilestoneStatus.PENDING, MilestoneStatus.IN_PROGRESS, MilestoneStatus.SUBMITTED}
)


def entry_amount_minor(minutes: int, hourly_rate_minor: int) -> int:
    """The billable amount of one entry: minutes x rate / 60, rounded half up to the minor unit.

    Rounding per entry (not per project) means an entry's amount never changes
    when other entries are added, and an invoice line built from entries adds up.
    """
    return (minutes * hourly_rate_minor * 2 + 60) // 120


async def billable_amount_minor(project_id: uuid.UUID) -> int:
    """What the project's billable time is worth at the rates it was logged at."""
    rows = await TimeEntry.filter(
        project_id=project_id,
        billable=True,
        is_running=False,
        minutes__isnull=False,
        hourly_rate_minor__isnull=False,
    ).values_list("minutes", "hourly_rate_minor")
    return sum(entry_amount_minor(int(m), int(r)) for m, r in rows)


def _reached_threshold(spent_minor: int, budget_minor: int) -> int:
    """The highest budget threshold ``spent`` has reached (0 for none)."""
    return max(
        (t for t in BUDGET_ALERT_THRESHOLDS if spent_minor * 100 >= budget_minor * t),
        default=0,
    )


async def record_budget_alerts(actor: Actor | None, project_id: uuid.UUID) -> None:
    """Announce on the timeline when billable time first crosses 80% and 100% of the budget.

    Call inside the transaction that changed the project's time. The project row
    is locked so two requests crossing a threshold at once announce it once.
    """
    project = await lock_rows(Project.filter(id=project_id)).first()
    if project is None or not project.billable or not project.budget_minor:
        return
    spent = await billable_amount_minor(project.id)
    reached = _reached_threshold(spent, project.budget_minor)
    if reached <= project.budget_alert_level:
        return
    budget = Money(project.budget_minor, project.currency)
    used = Money(spent, project.currency)
    project.budget_alert_level = reached
    await project.save(update_fields=["budget_alert_level", "updated_at"])
    await activity.record(
        actor,
        agency_id=project.agency_id,
        client_id=project.client_id,
        entity_type="project",
        entity_id=project.id,
        verb=f"budget_{reached}",
        summary=(
            f"{project.name} has used {reached}% of its budget "
            f"({used.format_amount()} of {budget.format_amount()} {project.currency})"
        ),
        changes={"budgetUsedPercent": {"before": None, "after": reached}},
    )


# --- input -----------------------------------------------------------------


def _amount(field: str, value: Any, currency: str, *, allow_zero: bool) -> int | None:
    """Minor units of a decimal string in ``currency``; blank or null means "not set"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str | Decimal | int) or isinstance(value, bool):
        raise ValidationError(field, f"{field} must be a decimal amount")
    minor = Money.parse(value, currency, field).minor_units
    if minor < 0 or (minor == 0 and not allow_zero):
        bound = "must not be negative" if allow_zero else "must be greater than zero"
        raise ValidationError(field, f"{field} {bound}", code="OUT_OF_RANGE")
    return minor


def _whole_number(field: str, value: Any, low: int, high: int) -> int:
    if value is None:
        raise ValidationError(field, f"{field} must not be empty", code="REQUIRED")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"{field} must be a whole number")
    if not low <= value <= high:
        raise ValidationError(
            field, f"{field} must be between {low} and {high}", code="OUT_OF_RANGE"
        )
    return value


def _date(field: str, value: Any) -> date | None:
    if value is None:
        return None
    if not isinstance(value, date):
        raise ValidationError(field, f"{field} must be a date")
    return value


def _status(value: Any) -> ProjectStatus:
    try:
        return ProjectStatus(value)
    except ValueError:
        raise ValidationError(
            "status", f"Unknown status {value!r}", code="INVALID_CHOICE"
        ) from None


def _reexpress(field: str, minor: int | None, old: str, new: str) -> int | None:
    """The same decimal amount in another currency (a currency change keeps the number)."""
    if minor is None or old == new:
        return minor
    try:
        return Money.parse(Money(minor, old).amount, new, field).minor_units
    except ValidationError:
        raise ValidationError(
            field, f"{field} cannot be expressed in {new}; give it in the same request"
        ) from None


def clean_project_fields(
    values: dict[str, Any], *, currency: str, current: Project | None = None
) -> dict[str, Any]:
    """Validate the project fields present in ``values``; returns model field values.

    Amounts (``budget``, ``hourly_rate``) are decimal strings in the project's
    currency: the one given in ``values``, else ``currency``. When the currency
    changes, stored amounts keep their decimal value in the new currency.
    """
    cleaned: dict[str, Any] = {}
    if "currency" in values:
        currency = normalize_currency(values["currency"] or "")
        cleaned["currency"] = currency
    for key, value in values.items():
        if key == "currency":
            continue
        if key == "name":
            cleaned[key] = validation.required_text("name", value, max_length=200)
        elif key == "description":
            cleaned[key] = validation.optional_text(
                "description", value, max_length=DESCRIPTION_MAX_LENGTH
            )
        elif key == "status":
            if value is None:
                raise ValidationError("status", "status must not be empty", code="REQUIRED")
            cleaned[key] = _status(value)
        elif key == "start_date":
            cleaned[key] = _date("startDate", value)
        elif key == "due_date":
            cleaned[key] = _date("dueDate", value)
        elif key == "budget":
            cleaned["budget_minor"] = _amount("budget", value, currency, allow_zero=False)
        elif key == "hourly_rate":
            cleaned["hourly_rate_minor"] = _amount("hourlyRate", value, currency, allow_zero=True)
        elif key == "billable":
            if not isinstance(value, bool):
                raise ValidationError("billable", "billable must be true or false")
            cleaned[key] = value
        elif key == "notify_milestone_members":
            if not isinstance(value, bool):
                raise ValidationError(
                    "notifyMilestoneMembers",
                    "notifyMilestoneMembers must be true or false",
                    code="REQUIRED" if value is None else None,
                )
            cleaned[key] = value
        elif key == "advance_percent":
            cleaned[key] = _whole_number("advancePercent", value, 0, 100)
        elif key == "invoice_due_days":
            cleaned[key] = _whole_number("invoiceDueDays", value, 0, MAX_INVOICE_DUE_DAYS)
        else:
            raise ValidationError(key, f"Unknown field {key}")
    if current is not None and "currency" in cleaned:
        for field, column in (("budget", "budget_minor"), ("hourlyRate", "hourly_rate_minor")):
            if column not in cleaned:
                cleaned[column] = _reexpress(
                    field, getattr(current, column), current.currency, currency
                )
    start = cleaned.get("start_date", current.start_date if current else None)
    due = cleaned.get("due_date", current.due_date if current else None)
    if start is not None and due is not None and due < start:
        raise ValidationError(
            "dueDate", "dueDate must not be before startDate", code="INVALID_RANGE"
        )
    return cleaned


def _check_payment_terms(actor: Actor, values: dict[str, Any], current: dict[str, Any]) -> None:
    """Only owners and admins set payment terms and who hears of payments.

    Anyone may send the values already in force.
    """
    if actor.role in MANAGERS:
        return
    if any(key in values and values[key] != current[key] for key in PAYMENT_TERMS):
        raise PermissionDeniedError("Only an owner or admin may set payment terms")
    key = "notify_milestone_members"
    if key in values and values[key] != current[key]:
        raise PermissionDeniedError("Only an owner or admin may set who hears of payments")


def _timeline_values(values: dict[str, Any], currency: str) -> dict[str, Any]:
    """Model values as the timeline shows them: amounts as decimal strings, as the API does."""
    shown: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("budget_minor", "hourly_rate_minor"):
            name = key.removesuffix("_minor")
            shown[name] = None if value is None else Money(value, currency).format_amount()
        else:
            shown[key] = value
    return shown


# --- lookups and lists -----------------------------------------------------


class ProjectOrderField(StrEnum):
    NAME = "name"
    CREATED_AT = "created_at"
    DUE_DATE = "due_date"


@dataclass(frozen=True, slots=True)
class ProjectFilter:
    client_id: uuid.UUID | None = None
    status: ProjectStatus | None = None
    search: str | None = None
    include_archived: bool = False


def _projects(actor: Actor) -> QuerySet[Project]:
    # A deleted client's projects go with it, as its contacts do.
    return scoped(Project, actor).filter(client__deleted_at__isnull=True)


async def projects_by_ids(actor: Actor, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Project]:
    """Batch lookup for loaders: the projects among ``ids`` the actor may see."""
    rows = await _projects(actor).filter(id__in=list(ids))
    return {row.id: row for row in rows}


async def get_project(actor: Actor, project_id: uuid.UUID) -> Project:
    """A project the actor may see (archived ones too), or NotFoundError."""
    return await get_visible(_projects(actor), project_id, "Project")


async def _lock_project(actor: Actor, project_id: uuid.UUID) -> Project:
    """Like get_project, holding a row lock until commit (serialises changes)."""
    return await get_visible(_projects(actor), project_id, "Project", lock=True)


async def list_projects(
    actor: Actor,
    flt: ProjectFilter,
    *,
    first: int | None,
    after: str | None,
    order_by: ProjectOrderField = ProjectOrderField.NAME,
    descending: bool = False,
) -> Page[Project]:
    """The projects the actor may see, filtered and paginated; archived ones only on request."""
    qs = _projects(actor)
    if not flt.include_archived:
        qs = qs.filter(archived_at__isnull=True)
    if flt.client_id is not None:
        qs = qs.filter(client_id=flt.client_id)
    if flt.status is not None:
        qs = qs.filter(status=flt.status)
    term = validation.search_term("filter.search", flt.search)
    if term is not None:
        qs = qs.filter(Q(name__icontains=term) | Q(description__icontains=term))
    if order_by is ProjectOrderField.DUE_DATE:
        return await paginate_nulls_last(
            qs, "due_date", first=first, after=after, descending=descending
        )
    return await paginate(
        qs, first=first, after=after, ordering=Ordering(order_by.value, descending)
    )


# --- changes ---------------------------------------------------------------


async def create_project(actor: Actor, client_id: uuid.UUID, values: dict[str, Any]) -> Project:
    """Create a project for a client; its currency is the client's unless given."""
    actor.require(*MEMBERS)
    client = await client_service.get_client(actor, client_id)
    _check_payment_terms(
        actor,
        values,
        {
            "advance_percent": DEFAULT_ADVANCE_PERCENT,
            "invoice_due_days": DEFAULT_INVOICE_DUE_DAYS,
            "notify_milestone_members": DEFAULT_NOTIFY_MILESTONE_MEMBERS,
        },
    )
    given = {key: value for key, value in values.items() if key != "currency" or value is not None}
    data = clean_project_fields(
        {
            "status": ProjectStatus.ACTIVE,
            "billable": True,
            "advance_percent": DEFAULT_ADVANCE_PERCENT,
            "invoice_due_days": DEFAULT_INVOICE_DUE_DAYS,
            "notify_milestone_members": DEFAULT_NOTIFY_MILESTONE_MEMBERS,
            **given,
        },
        currency=client.currency,
    )
    if "name" not in data:
        raise ValidationError("name", "name must not be empty", code="REQUIRED")
    data.setdefault("currency", client.currency)
    project = await Project.create(agency_id=client.agency_id, client_id=client.id, **data)
    await activity.record(
        actor,
        agency_id=project.agency_id,
        client_id=project.client_id,
        entity_type="project",
        entity_id=project.id,
        verb="created",
        summary=f"Project {project.name} created for {client.name}",
        changes=activity.snapshot(_timeline_values(data, project.currency)),
    )
    return project


async def update_project(actor: Actor, project_id: uuid.UUID, values: dict[str, Any]) -> Project:
    """Change the given fields of a project; a status change is its own timeline event."""
    project = await _lock_project(actor, project_id)
    actor.require(*MEMBERS)
    _check_payment_terms(actor, values, {key: getattr(project, key) for key in MANAGED_SETTINGS})
    data = clean_project_fields(values, currency=project.currency, current=project)
    before = {key: getattr(project, key) for key in data}
    data = {key: value for key, value in data.items() if before[key] != value}
    if not data:
        return project
    if "currency" in data and await _has_money_rows(project.id):
        raise ConflictError(
            "The currency of a project with milestones or time entries cannot change"
        )
    changes = activity.diff(
        _timeline_values({key: before[key] for key in data}, project.currency),
        _timeline_values(data, data.get("currency", project.currency)),
    )
    project.update_from_dict(data)
    await project.save(update_fields=[*data.keys(), "updated_at"])
    if "status" in changes:
        status = changes.pop("status")
        await _record(
            actor,
            project,
            "status_changed",
            f"Project {project.name} moved from {_words(status['before'])} "
            f"to {_words(status['after'])}",
            {"status": status},
        )
    if changes:
        await _record(actor, project, "updated", f"Project {project.name} updated", changes)
    if {"budget_minor", "billable"} & data.keys():
        await _rebase_budget_alerts(actor, project)
    return project


async def _has_money_rows(project_id: uuid.UUID) -> bool:
    return (
        await Milestone.filter(project_id=project_id).exists()
        or await TimeEntry.filter(project_id=project_id).exists()
    )


async def _rebase_budget_alerts(actor: Actor, project: Project) -> None:
    """After a budget change, announce thresholds the new budget is already past.

    A raised budget lowers the level already announced, so crossing its 80% and
    100% is announced again; a lowered one may be crossed at once.
    """
    if project.budget_minor:
        reached = _reached_threshold(await billable_amount_minor(project.id), project.budget_minor)
    else:
        reached = 0
    if reached < project.budget_alert_level:
        project.budget_alert_level = reached
        await project.save(update_fields=["budget_alert_level", "updated_at"])
    await record_budget_alerts(actor, project.id)


async def archive_project(actor: Actor, project_id: uuid.UUID) -> Project:
    """Archive a project: it leaves the default project list; it and its history stay."""
    project = await _lock_project(actor, project_id)
    actor.require(*MANAGERS)
    if project.archived_at is not None:
        return project
    project.archived_at = clock.now()
    await project.save(update_fields=["archived_at", "updated_at"])
    await _record(
        actor,
        project,
        "archived",
        f"Project {project.name} archived",
        activity.diff({"archived_at": None}, {"archived_at": project.archived_at}),
    )
    return project


def _words(status: str) -> str:
    return status.replace("_", " ")


async def _record(
    actor: Actor, project: Project, verb: str, summary: str, changes: activity.Changes
) -> None:
    await activity.record(
        actor,
        agency_id=project.agency_id,
        client_id=project.client_id,
        entity_type="project",
        entity_id=project.id,
        verb=verb,
        summary=summary,
        changes=changes,
    )


# --- statistics ------------------------------------------------------------


def _round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, for non-negative integers."""
    return (numerator * 2 + denominator) // (denominator * 2)


def _decimal(units: int, places: int) -> str:
    return f"{Decimal(units).scaleb(-places):.{places}f}"


def hours(minutes: int) -> str:
    """Minutes as hours with two decimal places, rounded half up: 100 -> "1.67"."""
    return _decimal(_round_half_up(minutes * 100, 60), 2)


def percent(part: int, whole: int) -> str:
    """``part`` as a percentage of ``whole`` with one decimal place, rounded half up."""
    return _decimal(_round_half_up(part * 1000, whole), 1)


@dataclass(frozen=True, slots=True)
class ProjectStatistics:
    """What has been logged, earned and agreed on one project, in its currency."""

    currency: str
    budget_minor: int | None = None
    billable_minutes: int = 0
    non_billable_minutes: int = 0
    billable_amount_minor: int = 0
    tasks_total: int = 0
    tasks_completed: int = 0
    milestones_paid_minor: int = 0
    milestones_approved_unpaid_minor: int = 0
    milestones_pending_minor: int = 0

    @property
    def total_minutes(self) -> int:
        return self.billable_minutes + self.non_billable_minutes

    @property
    def budget_used_percent(self) -> str | None:
        """Billable amount as a percentage of the budget; None without a budget."""
        if not self.budget_minor:
            return None
        return percent(self.billable_amount_minor, self.budget_minor)

    @property
    def task_completion_percent(self) -> str | None:
        """Completed tasks as a percentage of all tasks; None without tasks."""
        if not self.tasks_total:
            return None
        return percent(self.tasks_completed, self.tasks_total)

    def money(self, minor: int) -> Money:
        return Money(minor, self.currency)


async def project_statistics(
    actor: Actor, project_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, ProjectStatistics]:
    """Statistics of the projects among ``project_ids`` the actor may see, in four queries.

    Time is summed per (project, billable, minutes, rate): an entry's amount is
    rounded on its own (see entry_amount_minor), and entries sharing minutes and
    rate are worth the same, so a handful of groups stand for thousands of rows.
    """
    projects = (
        await _projects(actor)
        .filter(id__in=list(set(project_ids)))
        .values_list("id", "currency", "budget_minor")
    )
    if not projects:
        return {}
    ids = [as_uuid(pid) for pid, _, _ in projects]
    values: dict[uuid.UUID, dict[str, Any]] = defaultdict(dict)
    time_rows = (
        await scoped(TimeEntry, actor)
        .filter(project_id__in=ids, is_running=False, minutes__isnull=False)
        .annotate(n=Count("id"))
        .group_by("project_id", "billable", "minutes", "hourly_rate_minor")
        .values_list("project_id", "billable", "minutes", "hourly_rate_minor", "n")
    )
    for pid, billable, minutes, rate, n in time_rows:
        stats = values[as_uuid(pid)]
        key = "billable_minutes" if billable else "non_billable_minutes"
        stats[key] = stats.get(key, 0) + int(minutes) * int(n)
        if billable and rate is not None:
            amount = entry_amount_minor(int(minutes), int(rate)) * int(n)
            stats["billable_amount_minor"] = stats.get("billable_amount_minor", 0) + amount
    task_rows = (
        await scoped(Task, actor)
        .filter(project_id__in=ids)
        .annotate(n=Count("id"))
        .group_by("project_id", "status")
        .values_list("project_id", "status", "n")
    )
    for pid, status, n in task_rows:
        stats = values[as_uuid(pid)]
        stats["tasks_total"] = stats.get("tasks_total", 0) + int(n)
        if status == TaskStatus.COMPLETED:
            stats["tasks_completed"] = int(n)
    milestone_rows = (
        await scoped(Milestone, actor)
        .filter(project_id__in=ids)
        .annotate(
            amount=Sum("amount_minor"),
            paid=Sum("amount_paid_minor"),
            refunded=Sum("amount_refunded_minor"),
        )
        .group_by("project_id", "status")
        .values_list("project_id", "status", "amount", "paid", "refunded")
    )
    for pid, status, amount, paid, refunded in milestone_rows:
        stats = values[as_uuid(pid)]
        # Money refunded is owed again (services.settlement): only what was kept counts.
        owed, settled = int(amount or 0), int(paid or 0) - int(refunded or 0)
        stats["milestones_paid_minor"] = stats.get("milestones_paid_minor", 0) + settled
        if status == MilestoneStatus.APPROVED:
            # What an approved milestone still owes; a part already paid counts as paid.
            stats["milestones_approved_unpaid_minor"] = owed - settled
        elif status in PENDING_MILESTONE_STATUSES:
            key = "milestones_pending_minor"
            stats[key] = stats.get(key, 0) + owed
    return {
        as_uuid(pid): ProjectStatistics(
            currency=currency,
            budget_minor=budget,
            **values.get(as_uuid(pid), {}),
        )
        for pid, currency, budget in projects
    }
