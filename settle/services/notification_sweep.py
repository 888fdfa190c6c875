"""Sweeps: reminders, overdue stages, access expiry, upload reminders and the daily digest.

Everything here is decided from stored state and the clock, never from "the
cron fired today". Each run looks at every open subject (an unpaid milestone,
an overdue invoice, a paid-up project's file access, a paid invoice without a
document, an agency's local day) and works out the **latest stage that is due
now**. That stage is recorded as notifications whose dedupe key names the
subject and the stage (``milestone:<id>:reminder:7``), unique per recipient and
channel, in the same transaction as their send jobs. So:

- a run that finds the stage recorded writes nothing: two schedulers, a retried
  job or a restarted worker never send twice (on PostgreSQL the loser of a race
  meets the unique index and writes nothing);
- a scheduler that was down catches up on its next run, with one message per
  series: the latest stage due. Earlier stages it missed are stale (the later
  one says more) and are never sent. A digest goes out once per agency per
  local day, only for the current day: a day the scheduler missed entirely has
  no digest;
- a subject that stopped being owed (paid, voided, a document uploaded) starts
  no new stage, and its rows still pending (held for a digest, or queued) are
  marked ``skipped`` with the reason, here and again by the send job itself.

Times follow the agency's time zone: overdue stages and the digest go out from
the agency's ``digest_hour`` (local) on their day; reminders counted from a
moment (a payment request, a payment, an access expiry) fall due that many days
after it.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from settle.core import clock
from settle.core.errors import ValidationError
from settle.core.money import Money
from settle.core.outbox import send_job, transaction
from settle.core.settings import get_settings
from settle.models.agency import Agency, User
from settle.models.client import Client, Contact
from settle.models.deliverable import Deliverable, DeliverableStatus
from settle.models.invoice import Invoice
from settle.models.milestone import (
    Milestone,
    MilestoneKind,
    MilestonePaymentStatus,
    MilestoneStatus,
)
from settle.models.notification import (
    Notification,
    NotificationKind,
    NotificationStatus,
)
from settle.models.payment import Payment, PaymentAllocation, PaymentStatus, WebhookEvent
from settle.models.project import Project
from settle.notifications.templates import money_data, render_notification
from settle.services import notification as notification_service
from settle.services import payment_link, settlement
from settle.services.milestone import payment_state
from settle.services.notification import Recipient, notify

log = logging.getLogger(__name__)

K = NotificationKind
S = NotificationStatus

SWEEP_JOB = "notification.sweep"

DEFAULT_PAYMENT_REMINDER_DAYS = (3, 7, 14)
DEFAULT_OVERDUE_REMINDER_DAYS = (1, 7, 14)
DEFAULT_DIGEST_HOUR = 8
MAX_STAGES = 10
MAX_STAGE_DAY = 365
# Access expiring: the warning goes this long before the files close.
EXPIRY_WARNING = timedelta(days=7)
# A one-off notice (access expired, upload reminder) is not sent this long after it fell due:
# a scheduler back from a long outage, or a first run, does not dig up old news.
ONE_OFF_STALE_AFTER = timedelta(days=7)
UPLOAD_REMINDER_AFTER = timedelta(hours=24)

REMINDER_KINDS = {
    MilestoneKind.ADVANCE: K.ADVANCE_PAYMENT_REMINDER,
    MilestoneKind.BALANCE: K.BALANCE_PAYMENT_REMINDER,
}
PAID_STATUSES = (PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED)


# --- settings -----------------------------------------------------------------------------


def clean_stage_days(name: str, value: Any) -> str:
    """A list of whole days (``[1, 7, 14]``) as stored: distinct, ascending, 0-365, at most 10."""
    if not isinstance(value, list) or not value:
        raise ValidationError(name, f"{name} must list at least one day", code="REQUIRED")
    if any(isinstance(day, bool) or not isinstance(day, int) for day in value):
        raise ValidationError(name, f"{name} must be whole days", code="INVALID")
    if any(not 0 <= day <= MAX_STAGE_DAY for day in value):
        raise ValidationError(
            name, f"Each of {name} must be between 0 and {MAX_STAGE_DAY}", code="OUT_OF_RANGE"
        )
    if len(set(value)) != len(value):
        raise ValidationError(name, f"{name} lists a day twice", code="DUPLICATE")
    if len(value) > MAX_STAGES:
        raise ValidationError(name, f"{name} has at most {MAX_STAGES} days", code="TOO_MANY")
    return ",".join(str(day) for day in sorted(value))


def clean_digest_hour(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 23:
        raise ValidationError(
            "digestHour", "digestHour must be between 0 and 23", code="OUT_OF_RANGE"
        )
    return value


def _money(minor: int, currency: str) -> dict[str, Any]:
    return money_data(Money(minor, currency))


def stage_days(stored: str) -> list[int]:
    return [int(day) for day in stored.split(",") if day.strip()]


# --- the run ------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What one run recorded: notification rows written per kind, and rows cancelled."""

    written: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0

    def add(self, rows: Sequence[Notification]) -> None:
        for row in rows:
            self.written[row.kind.value] += 1


async def sweep(now: datetime | None = None) -> SweepResult:
    """Run every sweep for every agency at ``now`` (the clock's time by default)."""
    moment = now or clock.now()
    result = SweepResult()
    for agency in await Agency.all().order_by("created_at", "id"):
        try:
            await sweep_agency(agency, moment, result)
        except Exception:
            # One agency's bad data must not hold the others' reminders back.
            log.exception("notification.sweep_failed", extra={"agency_id": str(agency.id)})
    return result


async def sweep_agency(agency: Agency, now: datetime, result: SweepResult) -> None:
    result.cancelled += await cancel_moot(agency.id)
    await _payment_reminders(agency, now, result)
    await _overdue_reminders(agency, now, result)
    await _access_notices(agency, now, result)
    await _upload_reminders(agency, now, result)
    await _digests(agency, now, result)


def _latest_due(stages: Sequence[tuple[str, datetime]], now: datetime) -> str | None:
    """The name of the last stage whose time has come; earlier ones are stale."""
    due = [name for name, at in sorted(stages, key=lambda stage: stage[1]) if at <= now]
    return due[-1] if due else None


def _zone(agency: Agency) -> ZoneInfo:
    return ZoneInfo(agency.timezone)


def _local_at(agency: Agency, day: date, hour: int) -> datetime:
    """``hour`` o'clock on ``day`` in the agency's zone, as an aware datetime."""
    return datetime.combine(day, time(hour), tzinfo=_zone(agency))


def _local_day(agency: Agency, moment: datetime) -> date:
    return moment.astimezone(_zone(agency)).date()


async def _record(result: SweepResult, kind: NotificationKind, **values: Any) -> list[Notification]:
    async with transaction():
        rows = await notify(kind, **values)
    result.add(rows)
    return rows


# --- payment reminders --------------------------------------------------------------------


async def _payment_reminders(agency: Agency, now: datetime, result: SweepResult) -> None:
    """An advance or balance still unpaid N days after it was requested (its invoice issued)."""
    days = stage_days(agency.payment_reminder_days)
    milestones = (
        await Milestone.filter(
            agency_id=agency.id,
            kind__in=list(REMINDER_KINDS),
            payment_status=MilestonePaymentStatus.UNPAID,
            invoice_id__isnull=False,
        )
        .exclude(status__in=[MilestoneStatus.CANCELLED, MilestoneStatus.PAID])
        .order_by("created_at", "id")
    )
    invoices = {
        i.id: i
        for i in await Invoice.filter(
            id__in=[m.invoice_id for m in milestones], status__in=list(settlement.OPEN_STATUSES)
        )
    }
    for milestone in milestones:
        invoice = invoices.get(milestone.invoice_id) if milestone.invoice_id else None
        if invoice is None or invoice.issued_at is None:
            continue
        requested = invoice.issued_at
        stage = _latest_due([(str(d), requested + timedelta(days=d)) for d in days], now)
        pay_url = payment_link.payment_url(invoice)
        if stage is None or pay_url is None:
            continue
        project = await Project.get(id=milestone.project_id)
        await _record(
            result,
            REMINDER_KINDS[milestone.kind],
            agency_id=agency.id,
            recipients=await notification_service.client_side(milestone.client_id),
            subject_type="milestone",
            subject_id=milestone.id,
            dedupe_key=f"milestone:{milestone.id}:reminder:{stage}",
            data={
                "amount": _money(milestone.amount_minor, milestone.currency),
                "milestone_title": milestone.title,
                "project_name": project.name,
                "requested_on": _local_day(agency, requested).isoformat(),
                "pay_url": pay_url,
                "stage": int(stage),
            },
        )


# --- overdue invoices ---------------------------------------------------------------------


async def _overdue_reminders(agency: Agency, now: datetime, result: SweepResult) -> None:
    """An issued invoice still owed N days after its due date, from the digest hour (local)."""
    days = stage_days(agency.overdue_reminder_days)
    today = _local_day(agency, now)
    invoices = await Invoice.filter(
        agency_id=agency.id,
        status__in=list(settlement.OPEN_STATUSES),
        due_date__isnull=False,
        due_date__lte=today,
    ).order_by("due_date", "id")
    for invoice in invoices:
        assert invoice.due_date is not None
        stages = [
            (str(d), _local_at(agency, invoice.due_date + timedelta(days=d), agency.digest_hour))
            for d in days
        ]
        stage = _latest_due(stages, now)
        pay_url = payment_link.payment_url(invoice)
        if stage is None or pay_url is None:
            continue
        await _record(
            result,
            K.INVOICE_OVERDUE,
            agency_id=agency.id,
            recipients=await notification_service.client_side(invoice.client_id),
            subject_type="invoice",
            subject_id=invoice.id,
            dedupe_key=f"invoice:{invoice.id}:overdue:{stage}",
            data={
                "invoice_number": invoice.number,
                "due_date": invoice.due_date.isoformat(),
                "days_overdue": (today - invoice.due_date).days,
                "amount_due": _money(settlement.invoice_due(invoice), invoice.currency),
                "pay_url": pay_url,
                "stage": int(stage),
            },
        )


# --- deliverable access -------------------------------------------------------------------


async def _expiries(agency: Agency) -> list[tuple[Project, datetime]]:
    """Each project with files whose access has an end (every milestone paid), and that end."""
    project_ids = (
        await Deliverable.filter(
            agency_id=agency.id, status=DeliverableStatus.READY, deleted_at__isnull=True
        )
        .distinct()
        .values_list("project_id", flat=True)
    )
    states = await payment_state(project_ids)  # type: ignore[arg-type]
    access = timedelta(days=get_settings().deliverable_access_days)
    ends = {pid: s.all_paid_at + access for pid, s in states.items() if s.all_paid_at}
    projects = await Project.filter(id__in=list(ends)).order_by("created_at", "id")
    return [(project, ends[project.id]) for project in projects]


def _files_of(project: Project) -> str:
    return f"the files of {project.name}"


async def _access_notices(agency: Agency, now: datetime, result: SweepResult) -> None:
    """Access expiring in 7 days, then access expired, to the client's contact and leads."""
    for project, ends in await _expiries(agency):
        stage = _latest_due([("expiring", ends - EXPIRY_WARNING), ("expired", ends)], now)
        if stage is None or (stage == "expired" and now - ends > ONE_OFF_STALE_AFTER):
            continue
        expired = stage == "expired"
        day = _local_day(agency, ends).isoformat()
        await _record(
            result,
            K.ACCESS_EXPIRED if expired else K.ACCESS_EXPIRING,
            agency_id=agency.id,
            recipients=await notification_service.client_side(project.client_id),
            subject_type="project",
            subject_id=project.id,
            # The end named in the key: a refund and a new payment give a new end.
            dedupe_key=f"project:{project.id}:access:{ends.isoformat()}:{stage}",
            data={
                "deliverable_title": _files_of(project),
                "expired_on" if expired else "expires_on": day,
            },
        )


# --- invoice upload reminders -------------------------------------------------------------


def _has_document(invoice: Invoice) -> bool:
    return bool(invoice.uploaded_pdf_key or invoice.pdf_key)


async def _upload_reminders(agency: Agency, now: datetime, result: SweepResult) -> None:
    """A payment 24 hours old whose invoice still has no document: the team uploads it."""
    payments = await Payment.filter(
        agency_id=agency.id,
        status__in=list(PAID_STATUSES),
        succeeded_at__lte=now - UPLOAD_REMINDER_AFTER,
        succeeded_at__gte=now - UPLOAD_REMINDER_AFTER - ONE_OFF_STALE_AFTER,
    ).order_by("succeeded_at", "id")
    for payment in payments:
        allocations = await PaymentAllocation.filter(payment_id=payment.id).order_by("id")
        invoice_ids = list(dict.fromkeys(a.invoice_id for a in allocations))
        invoices = await Invoice.filter(id__in=invoice_ids).order_by("created_at", "id")
        client = await Client.get(id=payment.client_id)
        assert payment.succeeded_at is not None
        for invoice in invoices:
            if _has_document(invoice):
                continue
            await _record(
                result,
                K.INVOICE_UPLOAD_REMINDER,
                agency_id=agency.id,
                recipients=await notification_service.payment_team(
                    agency.id,
                    await notification_service.milestones_paid(
                        a for a in allocations if a.invoice_id == invoice.id
                    ),
                ),
                subject_type="invoice",
                subject_id=invoice.id,
                dedupe_key=f"invoice:{invoice.id}:upload_reminder:{payment.id}",
                data={
                    "invoice_number": invoice.number or "(draft)",
                    "client_name": client.name,
                    "amount": _money(payment.amount_minor, payment.currency),
                    "paid_on": _local_day(agency, payment.succeeded_at).isoformat(),
                },
            )


# --- cancelling what is no longer owed ----------------------------------------------------


async def moot_reason(row: Notification) -> str | None:
    """Why a sweep's notification should no longer go out (paid meanwhile...); None if it should."""
    if row.kind in (K.ADVANCE_PAYMENT_REMINDER, K.BALANCE_PAYMENT_REMINDER):
        milestone = await Milestone.get_or_none(id=row.subject_id)
        if (
            milestone is None
            or milestone.payment_status is not MilestonePaymentStatus.UNPAID
            or milestone.status in (MilestoneStatus.CANCELLED, MilestoneStatus.PAID)
        ):
            return "The milestone was paid (or cancelled) meanwhile"
    elif row.kind is K.INVOICE_OVERDUE:
        invoice = await Invoice.get_or_none(id=row.subject_id)
        if invoice is None or settlement.invoice_due(invoice) <= 0:
            return "The invoice was paid (or voided) meanwhile"
    elif row.kind is K.INVOICE_UPLOAD_REMINDER:
        invoice = await Invoice.get_or_none(id=row.subject_id)
        if invoice is None or _has_document(invoice):
            return "The invoice has a document now"
    return None


CANCELLABLE_KINDS = (
    K.ADVANCE_PAYMENT_REMINDER,
    K.BALANCE_PAYMENT_REMINDER,
    K.INVOICE_OVERDUE,
    K.INVOICE_UPLOAD_REMINDER,
)


async def cancel_moot(agency_id: uuid.UUID) -> int:
    """Mark the agency's pending reminders whose subject is no longer owed ``skipped``."""
    cancelled = 0
    pending = await Notification.filter(
        agency_id=agency_id, status=S.PENDING, kind__in=list(CANCELLABLE_KINDS)
    )
    for row in pending:
        reason = await moot_reason(row)
        if reason is None:
            continue
        async with transaction():
            cancelled += await Notification.filter(id=row.id, status=S.PENDING).update(
                status=S.SKIPPED, reason=reason, updated_at=clock.now()
            )
    return cancelled


# --- the daily digest ---------------------------------------------------------------------


async def _digests(agency: Agency, now: datetime, result: SweepResult) -> None:
    """Once per local day, from the digest hour: the agency's day to each manager, held rows."""
    day = _local_day(agency, now)
    slot = _local_at(agency, day, agency.digest_hour)
    if now < slot:
        # Only today's digest is ever sent: a day the scheduler missed has none.
        return
    dedupe_key = f"agency:{agency.id}:digest:{day.isoformat()}"
    # Who has today's digest already: every run after the hour would otherwise add up
    # the agency's day again for nothing.
    done = set(
        await Notification.filter(
            agency_id=agency.id, kind=K.DAILY_DIGEST, dedupe_key=dedupe_key
        ).values_list("recipient_key", flat=True)
    )
    held = await Notification.filter(agency_id=agency.id, status=S.PENDING, digest=True).order_by(
        "created_at", "id"
    )
    held_by: dict[str, list[Notification]] = defaultdict(list)
    for row in held:
        if row.kind is not K.DAILY_DIGEST:
            held_by[row.recipient_key].append(row)
    recipients: dict[str, Recipient] = {
        r.key: r for r in await notification_service.managers(agency.id) if r.key not in done
    }
    managers = set(recipients)
    for key in held_by:
        if key not in recipients and key not in done:
            found = await _recipient(key)
            if found is not None:
                recipients[key] = found
    if not recipients:
        return
    since = slot - timedelta(days=1)
    summary = await _agency_day(agency, since, slot, day) if managers else _EMPTY_SUMMARY
    for key, recipient in recipients.items():
        items = held_by.get(key, [])
        content: dict[str, Any] = {
            **(summary if key in managers else _EMPTY_SUMMARY),
            "held": [_held_line(agency, row) for row in items],
        }
        if not any(content[name] for name in _CONTENT_FIELDS):
            continue
        async with transaction():
            rows = await notify(
                K.DAILY_DIGEST,
                agency_id=agency.id,
                recipients=[recipient],
                subject_type="agency",
                subject_id=agency.id,
                dedupe_key=dedupe_key,
                data={"day": day.isoformat(), **content},
            )
            for row in rows:
                if row.digest:
                    # The digest held for the digest (a DAILY_DIGEST preference for it)
                    # would wait for ever: it is the digest, so it goes now.
                    row.digest = False
                    await row.save(update_fields=["digest", "updated_at"])
                    await send_job(notification_service.SEND_JOB, str(row.id))
            if rows and items:
                # Only the run that recorded the digest settles what it carries.
                told = any(r.status is S.PENDING for r in rows)
                await Notification.filter(id__in=[r.id for r in items], status=S.PENDING).update(
                    status=S.SENT if told else S.SKIPPED,
                    reason=f"In the daily digest of {day.isoformat()}"
                    if told
                    else "The daily digest is turned off",
                    sent_at=clock.now() if told else None,
                    updated_at=clock.now(),
                )
        result.add(rows)


_CONTENT_FIELDS = (
    "payments",
    "overdue_invoices",
    "overdue_milestones",
    "failed_payments",
    "expiring",
    "flagged",
    "held",
)
_EMPTY_SUMMARY: dict[str, Any] = {
    "revenue": [],
    "payments": [],
    "overdue_invoices": [],
    "overdue_milestones": [],
    "failed_payments": [],
    "expiring": [],
    "flagged": [],
}


async def _recipient(key: str) -> Recipient | None:
    kind_of, _, raw_id = key.partition(":")
    if kind_of == "user":
        user = await User.get_or_none(id=uuid.UUID(raw_id), is_active=True)
        return Recipient.of_user(user) if user else None
    contact = await Contact.get_or_none(id=uuid.UUID(raw_id))
    return Recipient.of_contact(contact) if contact else None


def _held_line(agency: Agency, row: Notification) -> str:
    """A held notification in one line: its Telegram text, which is short and plain."""
    rendered = render_notification(
        row.kind.value,
        **notification_service.context(row.data, agency_name=agency.name, unsubscribe_url=None),
    )
    return " ".join(rendered.telegram.split())


def _payment_line(clients: dict[uuid.UUID, str], payment: Payment) -> dict[str, Any]:
    return {
        "client_name": clients.get(payment.client_id, ""),
        "amount": _money(payment.amount_minor, payment.currency),
    }


async def _agency_day(
    agency: Agency, since: datetime, until: datetime, day: date
) -> dict[str, Any]:
    """The managers' part of the digest: the 24 hours up to the digest hour, and what is open."""
    money = _money
    clients = {c.id: c.name for c in await Client.filter(agency_id=agency.id)}
    paid = await Payment.filter(
        agency_id=agency.id,
        status__in=list(PAID_STATUSES),
        succeeded_at__gte=since,
        succeeded_at__lt=until,
    ).order_by("succeeded_at", "id")
    revenue: Counter[str] = Counter()
    for payment in paid:
        revenue[payment.currency] += payment.amount_minor
    failed = await Payment.filter(
        agency_id=agency.id, status=PaymentStatus.FAILED, failed_at__gte=since, failed_at__lt=until
    ).order_by("failed_at", "id")
    retry = []
    for payment in failed:
        invoice = await Invoice.get_or_none(id=payment.invoice_id) if payment.invoice_id else None
        # Worth retrying while its invoice still owes money.
        if invoice is not None and settlement.invoice_due(invoice) > 0:
            retry.append(payment)
    overdue = await Invoice.filter(
        agency_id=agency.id,
        status__in=list(settlement.OPEN_STATUSES),
        due_date__lt=day,
    ).order_by("due_date", "id")
    late = (
        await Milestone.filter(
            agency_id=agency.id,
            payment_status=MilestonePaymentStatus.UNPAID,
            due_date__lt=day,
        )
        .exclude(status__in=[MilestoneStatus.CANCELLED, MilestoneStatus.PAID])
        .order_by("due_date", "id")
    )
    flagged = [
        f"Payment {p.provider_payment_id or p.reference or p.id}: {p.flagged_reason}"
        for p in await Payment.filter(
            agency_id=agency.id,
            flagged_reason__isnull=False,
            updated_at__gte=since,
            updated_at__lt=until,
        ).order_by("updated_at", "id")
    ]
    flagged += [
        f"Webhook {e.provider.value} {e.event_type} ({e.event_id})"
        for e in await WebhookEvent.filter(
            agency_id=agency.id,
            outcome="flagged",
            received_at__gte=since,
            received_at__lt=until,
        ).order_by("received_at", "id")
    ]
    horizon = until + EXPIRY_WARNING
    return {
        "revenue": [money(revenue[c], c) for c in sorted(revenue)],
        "payments": [_payment_line(clients, p) for p in paid],
        "overdue_invoices": [
            {
                "number": i.number,
                "amount_due": money(settlement.invoice_due(i), i.currency),
                "due_date": i.due_date.isoformat() if i.due_date else None,
            }
            for i in overdue
            if settlement.invoice_due(i) > 0
        ],
        "overdue_milestones": [
            {
                "title": m.title,
                "amount": money(m.amount_minor, m.currency),
                "due_date": m.due_date.isoformat() if m.due_date else None,
            }
            for m in late
        ],
        "failed_payments": [_payment_line(clients, p) for p in retry],
        "expiring": [
            {"title": _files_of(project), "expires_on": _local_day(agency, ends).isoformat()}
            for project, ends in await _expiries(agency)
            if until <= ends < horizon
        ],
        "flagged": flagged,
    }
