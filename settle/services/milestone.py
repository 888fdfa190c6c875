"""Contracts: milestones, their approval workflow, payment terms and payment state.

Who may do what (the roles are checked in ``TRANSITIONS`` and the functions below):
owners and admins define the contract (create, update, cancel, apply payment
terms) and may make any transition; members start and submit the work; the
client lead of the project's client approves or rejects it (the tenant scope
hides every other client's milestones); client viewers only read. Marking a
milestone paid by hand is the owner's alone, until payments arrive.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from tortoise.expressions import Q
from tortoise.functions import Max
from tortoise.models import Model
from tortoise.queryset import QuerySet

from settle.core import clock, validation
from settle.core.db import get_visible, lock_rows
from settle.core.errors import (
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.core.money import Money
from settle.core.outbox import send_job
from settle.core.pagination import Ordering, Page, paginate
from settle.core.tenancy import MANAGERS, MEMBERS, Actor, scoped
from settle.models.agency import Role
from settle.models.invoice import Invoice
from settle.models.milestone import (
    Milestone,
    MilestoneKind,
    MilestonePaymentStatus,
    MilestoneStatus,
)
from settle.models.project import Project
from settle.services import activity, live_status, settlement
from settle.services import invoice as invoice_service
from settle.services import notification as notification_service
from settle.services import payment as payment_service
from settle.services.invoice import GENERATE_FOR_MILESTONE_JOB

M = TypeVar("M", bound=Model)

DESCRIPTION_MAX_LENGTH = 10_000
REASON_MAX_LENGTH = 2_000


class MilestoneLockedError(ConflictError):
    """An approved, paid or cancelled milestone is part of the record: it cannot be edited."""

    code = "MILESTONE_LOCKED"


# --- the state machine -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    """Into one status: the statuses it may come from, and the roles that may make it."""

    sources: frozenset[MilestoneStatus]
    roles: tuple[Role, ...]


S = MilestoneStatus
APPROVERS = (*MANAGERS, Role.CLIENT_LEAD)

TRANSITIONS: dict[MilestoneStatus, Transition] = {
    S.IN_PROGRESS: Transition(frozenset({S.PENDING, S.REJECTED}), MEMBERS),
    S.SUBMITTED: Transition(frozenset({S.IN_PROGRESS}), MEMBERS),
    S.APPROVED: Transition(frozenset({S.SUBMITTED}), APPROVERS),
    S.REJECTED: Transition(frozenset({S.SUBMITTED}), APPROVERS),
    # Reached by hand (the owner) until payments arrive; a gateway will then be the actor.
    S.PAID: Transition(frozenset({S.APPROVED}), (Role.OWNER,)),
    S.CANCELLED: Transition(
        frozenset({S.PENDING, S.IN_PROGRESS, S.SUBMITTED, S.APPROVED, S.REJECTED}), MANAGERS
    ),
}

# Once approved the milestone is what the client agreed to pay: its terms are fixed.
LOCKED_STATUSES = frozenset({S.APPROVED, S.PAID, S.CANCELLED})

_SUMMARIES = {
    S.IN_PROGRESS: "started",
    S.SUBMITTED: "submitted for approval",
    S.APPROVED: "approved",
    S.REJECTED: "rejected",
    S.CANCELLED: "cancelled",
    S.PAID: "marked paid",
}


# --- reading -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MilestoneFilter:
    project_id: uuid.UUID | None = None
    status: MilestoneStatus | None = None
    payment_status: MilestonePaymentStatus | None = None
    overdue: bool | None = None


def today() -> date:
    return clock.now().date()


def is_overdue(milestone: Milestone, on: date | None = None) -> bool:
    """Past its due date and neither paid nor cancelled."""
    if milestone.due_date is None or milestone.status in (S.PAID, S.CANCELLED):
        return False
    return milestone.due_date < (on or today())


def _milestones(actor: Actor) -> QuerySet[Milestone]:
    # A deleted client's milestones go with it, as its projects and contacts do.
    return scoped(Milestone, actor).filter(project__client__deleted_at__isnull=True)


async def get_milestone(actor: Actor, milestone_id: uuid.UUID) -> Milestone:
    """A milestone the actor may see, or NotFoundError (also for other agencies' ids)."""
    return await get_visible(_milestones(actor), milestone_id, "Milestone")


async def _lock_milestone(actor: Actor, milestone_id: uuid.UUID) -> Milestone:
    """Like get_milestone, holding a row lock until commit (serialises transitions)."""
    return await get_visible(_milestones(actor), milestone_id, "Milestone", lock=True)


async def list_milestones(
    actor: Actor, flt: MilestoneFilter, *, first: int | None, after: str | None
) -> Page[Milestone]:
    """Milestones the actor may see: one project's in contract order, all by creation."""
    qs = _milestones(actor)
    if flt.project_id is not None:
        qs = qs.filter(project_id=flt.project_id)
    if flt.status is not None:
        qs = qs.filter(status=flt.status)
    if flt.payment_status is not None:
        qs = qs.filter(payment_status=flt.payment_status)
    if flt.overdue is not None:
        closed = [S.PAID, S.CANCELLED]
        due = today()
        if flt.overdue:
            qs = qs.filter(due_date__lt=due).exclude(status__in=closed)
        else:
            qs = qs.filter(Q(due_date__isnull=True) | Q(due_date__gte=due) | Q(status__in=closed))
    ordering = Ordering("position" if flt.project_id is not None else "created_at")
    return await paginate(qs, first=first, after=after, ordering=ordering)


async def milestones_for_projects(
    actor: Actor, project_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Milestone]]:
    """Each project's milestones by position, in one query (for loaders)."""
    rows = (
        await _milestones(actor)
        .filter(project_id__in=list(project_ids))
        .order_by("project_id", "position", "created_at", "id")
    )
    grouped: dict[uuid.UUID, list[Milestone]] = defaultdict(list)
    for row in rows:
        grouped[row.project_id].append(row)
    return grouped


# --- writing -----------------------------------------------------------------


async def _get_project(actor: Actor, project_id: uuid.UUID, *, lock: bool = False) -> Project:
    qs = scoped(Project, actor).filter(id=project_id, client__deleted_at__isnull=True)
    project = await (lock_rows(qs) if lock else qs).first()
    if project is None:
        raise NotFoundError("Project", project_id)
    return project


def clean_milestone_fields(values: dict[str, Any], currency: str) -> dict[str, Any]:
    """Validate the milestone fields present in ``values``; returns model fields."""
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if key == "title":
            cleaned[key] = validation.required_text("title", value, max_length=200)
        elif key == "description":
            cleaned[key] = validation.optional_text(
                "description", value, max_length=DESCRIPTION_MAX_LENGTH
            )
        elif key == "amount":
            cleaned["amount_minor"] = positive_amount("amount", value, currency).minor_units
        elif key == "due_date":
            if value is not None and not isinstance(value, date):
                raise ValidationError("dueDate", "dueDate must be a date")
            cleaned[key] = value
        elif key == "position":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError("position", "position must be 0 or more", code="OUT_OF_RANGE")
            cleaned[key] = value
        else:
            raise ValidationError(key, f"Unknown field {key}")
    return cleaned


def positive_amount(field: str, value: Any, currency: str) -> Money:
    """A decimal string of ``currency`` above zero, exact to its minor unit."""
    if value is None or not str(value).strip():
        raise ValidationError(field, f"{field} must not be empty", code="REQUIRED")
    money = Money.parse(value, currency, field)
    if money.minor_units <= 0:
        raise ValidationError(field, f"{field} must be greater than 0", code="OUT_OF_RANGE")
    return money


# Money columns and the names the timeline shows them under, as decimal strings.
_MONEY_FIELDS = {"amount_minor": "amount", "amount_paid_minor": "amount_paid"}


def _shown(data: dict[str, Any], currency: str) -> dict[str, Any]:
    return activity.with_amounts(data, currency, _MONEY_FIELDS)


async def _next_position(project_id: uuid.UUID) -> int:
    rows = await Milestone.filter(project_id=project_id).annotate(top=Max("position")).values("top")
    top = rows[0]["top"] if rows else None
    return 0 if top is None else int(top) + 1


async def _create(
    actor: Actor, project: Project, data: dict[str, Any], kind: MilestoneKind
) -> Milestone:
    if "position" not in data:
        data = {**data, "position": await _next_position(project.id)}
    milestone = await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency=project.currency,
        kind=kind,
        **data,
    )
    await live_status.milestone_changed(milestone, None)
    await activity.record(
        actor,
        agency_id=milestone.agency_id,
        client_id=milestone.client_id,
        entity_type="milestone",
        entity_id=milestone.id,
        verb="created",
        summary=f"Milestone {milestone.title} added to {project.name}",
        changes=activity.snapshot(
            {
                **_shown(data, milestone.currency),
                "currency": milestone.currency,
                "kind": kind,
                "status": milestone.status,
            }
        ),
    )
    return milestone


async def create_milestone(
    actor: Actor, project_id: uuid.UUID, values: dict[str, Any]
) -> Milestone:
    """Add a milestone to a project, in the project's currency (managers only)."""
    actor.require(*MANAGERS)
    project = await _get_project(actor, project_id)
    data = clean_milestone_fields(values, project.currency)
    if "title" not in data:
        raise ValidationError("title", "title must not be empty", code="REQUIRED")
    if "amount_minor" not in data:
        raise ValidationError("amount", "amount must not be empty", code="REQUIRED")
    return await _create(actor, project, data, MilestoneKind.STANDARD)


async def update_milestone(
    actor: Actor, milestone_id: uuid.UUID, values: dict[str, Any]
) -> Milestone:
    """Change a milestone's terms; refused with MilestoneLockedError once it is approved."""
    milestone = await _lock_milestone(actor, milestone_id)
    actor.require(*MANAGERS)
    if milestone.status in LOCKED_STATUSES:
        raise MilestoneLockedError(
            f"Milestone is {milestone.status.value} and can no longer be changed"
        )
    data = clean_milestone_fields(values, milestone.currency)
    before = {key: getattr(milestone, key) for key in data}
    changes = activity.diff(_shown(before, milestone.currency), _shown(data, milestone.currency))
    if not changes:
        return milestone
    state = live_status.MilestoneState.of(milestone)
    milestone.update_from_dict(data)
    await milestone.save(update_fields=[*data.keys(), "updated_at"])
    await live_status.milestone_changed(milestone, state)
    await activity.record(
        actor,
        agency_id=milestone.agency_id,
        client_id=milestone.client_id,
        entity_type="milestone",
        entity_id=milestone.id,
        verb="updated",
        summary=f"Milestone {milestone.title} updated",
        changes=changes,
    )
    return milestone


async def _transition(
    actor: Actor,
    milestone_id: uuid.UUID,
    target: MilestoneStatus,
    *,
    fields: Callable[[Milestone], dict[str, Any]] | None = None,
    extra_changes: dict[str, Any] | None = None,
    verb: str | None = None,
) -> Milestone:
    """Move a milestone into ``target`` under a row lock, so racing requests move it once."""
    milestone = await _lock_milestone(actor, milestone_id)
    rule = TRANSITIONS[target]
    if actor.role not in rule.roles:
        raise PermissionDeniedError()
    if milestone.status not in rule.sources:
        raise InvalidTransitionError("Milestone", milestone.status.value, target.value)
    data: dict[str, Any] = {"status": target, **(fields(milestone) if fields else {})}
    before = {key: getattr(milestone, key) for key in data}
    state = live_status.MilestoneState.of(milestone)
    milestone.update_from_dict(data)
    await milestone.save(update_fields=[*data.keys(), "updated_at"])
    await live_status.milestone_changed(milestone, state)
    changes = activity.diff(_shown(before, milestone.currency), _shown(data, milestone.currency))
    changes.update(activity.snapshot(extra_changes or {}))
    await activity.record(
        actor,
        agency_id=milestone.agency_id,
        client_id=milestone.client_id,
        entity_type="milestone",
        entity_id=milestone.id,
        verb=verb or target.value,
        summary=f"Milestone {milestone.title} {_SUMMARIES[target]} by {actor.name}",
        changes=changes,
    )
    return milestone


async def start_milestone(actor: Actor, milestone_id: uuid.UUID) -> Milestone:
    """pending or rejected → in_progress."""
    return await _transition(actor, milestone_id, S.IN_PROGRESS)


async def submit_milestone(actor: Actor, milestone_id: uuid.UUID) -> Milestone:
    """in_progress → submitted: the work is ready for the client's approval."""
    return await _transition(
        actor,
        milestone_id,
        S.SUBMITTED,
        fields=lambda _: {"submitted_at": clock.now(), "rejection_reason": None},
    )


async def approve_milestone(actor: Actor, milestone_id: uuid.UUID) -> Milestone:
    """submitted → approved (the client lead, or a manager); its invoice follows in a worker."""
    milestone = await _transition(
        actor,
        milestone_id,
        S.APPROVED,
        fields=lambda _: {"approved_at": clock.now(), "approved_by_id": actor.user_id},
    )
    await send_job(GENERATE_FOR_MILESTONE_JOB, str(milestone.id))
    await notification_service.milestone_decided(actor, milestone)
    return milestone


async def reject_milestone(actor: Actor, milestone_id: uuid.UUID, reason: str | None) -> Milestone:
    """submitted → rejected, with the reason the work goes back."""
    text = validation.required_text("reason", reason, max_length=REASON_MAX_LENGTH)
    milestone = await _transition(
        actor, milestone_id, S.REJECTED, fields=lambda _: {"rejection_reason": text}
    )
    await notification_service.milestone_decided(actor, milestone)
    return milestone


async def request_payment(actor: Actor, milestone_ids: Sequence[uuid.UUID]) -> list[Milestone]:
    """Ask the client to pay these milestones now, by email with the pay link (owners, admins).

    The rule: any milestone that is not cancelled and not paid may be asked
    for, whatever its workflow status, so an advance is requested before the
    work starts. Milestones without an invoice are issued one together (as
    paying them would); each invoice involved gets one request for what it
    still owes, which is what its pay link collects. The primary contact and
    the client's lead users are asked.
    """
    actor.require(*MANAGERS)
    milestones = await invoice_service.lock_milestones(actor, milestone_ids, most=100)
    for m in milestones:
        if m.status in (S.CANCELLED, S.PAID) or m.payment_status is MilestonePaymentStatus.PAID:
            state = "paid" if m.status is not S.CANCELLED else "cancelled"
            raise ValidationError(
                "milestoneIds",
                f"Milestone {m.title} is {state}: there is nothing to ask for",
                code="NOT_PAYABLE",
            )
    recipients = await notification_service.client_side(milestones[0].client_id)
    if not any(recipient.email for recipient in recipients):
        raise ValidationError(
            "milestoneIds",
            "The client has no primary contact with an email and no lead user to ask",
            code="NO_RECIPIENT",
        )
    waiting = [m for m in milestones if m.invoice_id is None]
    if waiting:
        invoice = await invoice_service.issue_for_milestones(waiting, announce=False)
        for m in waiting:
            m.invoice_id = invoice.id
    groups: dict[uuid.UUID, list[Milestone]] = {}
    for m in milestones:
        assert m.invoice_id is not None
        groups.setdefault(m.invoice_id, []).append(m)
    request_id = uuid.uuid4()
    asked = [
        await notification_service.payment_requested(
            await Invoice.get(id=invoice_id), group, recipients, request_id
        )
        for invoice_id, group in groups.items()
    ]
    if not any(asked):
        raise ConflictError("Nothing is left to pay on these milestones")
    for m in milestones:
        await activity.record(
            actor,
            agency_id=m.agency_id,
            client_id=m.client_id,
            entity_type="milestone",
            entity_id=m.id,
            verb="payment_requested",
            summary=f"Payment of milestone {m.title} requested by {actor.name}",
        )
    return milestones


async def cancel_milestone(actor: Actor, milestone_id: uuid.UUID, reason: str | None) -> Milestone:
    """Any status before paid → cancelled; the optional reason goes on the timeline."""
    text = validation.optional_text("reason", reason, max_length=REASON_MAX_LENGTH)
    return await _transition(
        actor,
        milestone_id,
        S.CANCELLED,
        fields=lambda _: {"cancelled_at": clock.now()},
        extra_changes={"reason": text},
    )


async def mark_milestone_paid(
    actor: Actor, milestone_id: uuid.UUID, reference: str | None
) -> Milestone:
    """approved → paid by hand (the owner): what is due on it was received, with its reference.

    The money received settles the milestone's share of its issued invoice too.
    """
    text = validation.required_text("reference", reference, max_length=200)
    found = await get_milestone(actor, milestone_id)
    line = await settlement.line_of(found)
    received: list[int] = []

    def fields(milestone: Milestone) -> dict[str, Any]:
        due = settlement.milestone_due(milestone, line)
        received.append(due)
        return {
            "payment_status": settlement.payment_status_for(milestone, 0),
            "amount_paid_minor": milestone.amount_paid_minor + due,
            "paid_at": clock.now(),
            "payment_reference": text,
        }

    milestone = await _transition(actor, milestone_id, S.PAID, fields=fields, verb="marked_paid")
    if line is not None and received[0] > 0:
        invoice = await Invoice.get(id=line.invoice_id)
        amount = min(received[0], settlement.invoice_due(invoice))
        if invoice.status in settlement.OPEN_STATUSES and amount > 0:
            await settlement.receive_on_invoice(invoice.id, amount, actor=actor)
        # A checkout still collecting for this milestone would take its money twice.
        await payment_service.supersede_overlapping(None, {(invoice.id, milestone.id)}, actor=actor)
    return milestone


# --- payment terms -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentTerms:
    project: Project
    total: Money
    advance_percent: int
    milestones: list[Milestone]


def split_advance(total: Money, percent: int) -> tuple[Money, Money]:
    """Split ``total`` into (advance, balance) that add up to it exactly.

    The one rounding rule: advance = total * percent / 100, rounded half up to
    the currency's minor unit (in integer arithmetic, never a float); balance =
    total - advance. So 100.01 USD at 40% is 40.00 + 60.01, 0.03 at 50% is
    0.02 + 0.01, and 1 JPY at 50% is 1 + 0.
    """
    if not 0 <= percent <= 100:
        raise ValidationError("advancePercent", "advance percent must be 0 to 100")
    if total.minor_units < 0:
        raise ValidationError("total", "total must not be negative")
    advance = (total.minor_units * percent * 2 + 100) // 200
    return Money(advance, total.currency), Money(total.minor_units - advance, total.currency)


async def apply_payment_terms(actor: Actor, project_id: uuid.UUID, total: str) -> PaymentTerms:
    """Create the project's "Advance (N%)" and "Balance" milestones, adding up to ``total``.

    N is the project's advance percent. A part that comes to zero is not created
    (0% gives only a Balance, 100% only an Advance; so does a total too small to
    split). Refused with ConflictError while the project has a live (not
    cancelled) advance or balance milestone; the project row lock makes two
    racing requests apply the terms once.
    """
    actor.require(*MANAGERS)
    project = await _get_project(actor, project_id, lock=True)
    amount = positive_amount("total", total, project.currency)
    existing = (
        await Milestone.filter(
            project_id=project.id, kind__in=[MilestoneKind.ADVANCE, MilestoneKind.BALANCE]
        )
        .exclude(status=S.CANCELLED)
        .exists()
    )
    if existing:
        raise ConflictError("The project already has advance and balance milestones")
    advance, balance = split_advance(amount, project.advance_percent)
    parts = [
        (f"Advance ({project.advance_percent}%)", advance, MilestoneKind.ADVANCE),
        ("Balance", balance, MilestoneKind.BALANCE),
    ]
    created = [
        await _create(actor, project, {"title": title, "amount_minor": part.minor_units}, kind)
        for title, part, kind in parts
        if part.minor_units > 0
    ]
    return PaymentTerms(project, amount, project.advance_percent, created)


# --- payment state ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProjectPaymentState:
    """How far a project's contract has been paid (what deliverable access depends on)."""

    has_advance: bool
    advance_paid_at: datetime | None
    all_paid_at: datetime | None


def is_settled(milestone: Milestone) -> bool:
    """Whether a milestone counts as paid: nothing is due on it (``settlement``'s rule)."""
    return milestone.status == MilestoneStatus.PAID


async def payment_state(project_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ProjectPaymentState]:
    """The payment state of each project, in one query; no tenant check (callers scope ids).

    Cancelled milestones are ignored. ``has_advance``: the project has an ADVANCE
    milestone. ``advance_paid_at``: when it was paid (None if unpaid or none).
    ``all_paid_at``: when the last milestone was paid, if every milestone is paid;
    None otherwise or when the project has no milestones.
    """
    ids = list(dict.fromkeys(project_ids))
    grouped: dict[uuid.UUID, list[Milestone]] = defaultdict(list)
    if ids:
        rows = await Milestone.filter(project_id__in=ids).exclude(status=MilestoneStatus.CANCELLED)
        for row in rows:
            grouped[row.project_id].append(row)
    return {project_id: _state(grouped.get(project_id, [])) for project_id in ids}


def _state(milestones: list[Milestone]) -> ProjectPaymentState:
    advances = [m for m in milestones if m.kind == MilestoneKind.ADVANCE]
    return ProjectPaymentState(
        has_advance=bool(advances),
        advance_paid_at=_all_paid_at(advances),
        all_paid_at=_all_paid_at(milestones),
    )


def _all_paid_at(milestones: list[Milestone]) -> datetime | None:
    """When the last of ``milestones`` was paid, if all are; None if any is not, or none exist."""
    paid_at = [m.paid_at for m in milestones if is_settled(m)]
    if not milestones or len(paid_at) != len(milestones) or None in paid_at:
        return None
    return max(t for t in paid_at if t is not None)
