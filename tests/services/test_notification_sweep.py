"""Sweeps that cannot misfire: every reminder, notice and digest counted against its schedule.

Settle's clock is stopped and stepped through weeks of days; the scheduler is
down for some of them, restarted, and doubled (two schedulers, each with its
own lock, so both fire every slot and their sweeps run at the same time). Every
notification the sweeps record is listed with the step it appeared at, and the
whole list is compared with the expected schedule.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pytest
from aiosmtpd.controller import Controller

from settle.core import clock
from settle.core.outbox import relay_later
from settle.core.settings import configure_settings, get_settings
from settle.models.agency import Agency, Role
from settle.models.client import Client
from settle.models.invoice import Invoice
from settle.models.milestone import Milestone, MilestoneKind, MilestoneStatus
from settle.models.notification import Notification, NotificationKind, NotificationStatus
from settle.models.payment import Payment, PaymentProvider, PaymentStatus, WebhookEvent
from settle.models.project import Project
from settle.services import notification_sweep
from settle.tasks.notification import send
from settle.tasks.scheduler import LocalSchedulerLock, ScheduledJob, Scheduler
from tests.conftest import Backend
from tests.fixtures.factories import (
    Account,
    create_client,
    create_contact,
    create_final_deliverable,
    create_invoice,
    create_project,
    create_user,
    issue_invoice,
)
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.smtp import Mailbox, body, free_port, use_smtp

K = NotificationKind
SWEPT = [
    K.ADVANCE_PAYMENT_REMINDER,
    K.BALANCE_PAYMENT_REMINDER,
    K.INVOICE_OVERDUE,
    K.ACCESS_EXPIRING,
    K.ACCESS_EXPIRED,
    K.INVOICE_UPLOAD_REMINDER,
    K.DAILY_DIGEST,
]
CONTACT = "priya@acme.test"
LEAD = "lee@acme.test"

UPDATE_AGENCY = """
mutation UpdateAgency($input: UpdateAgencyInput!) {
  result: updateAgency(input: $input) {
    __typename
    ... on Agency { timezone paymentReminderDays overdueReminderDays digestHour }
    ... on ValidationError { code field message }
  }
}
"""

REQUEST_PAYMENT = """
mutation RequestPayment($milestoneIds: [ID!]!) {
  result: requestPayment(milestoneIds: $milestoneIds) { __typename }
}
"""

RECORD_OFFLINE = """
mutation Record($invoiceId: ID!, $amount: String!) {
  result: recordOfflinePayment(
    invoiceId: $invoiceId, amount: $amount, method: BANK_TRANSFER, reference: "UTR-1"
  ) { __typename }
}
"""

APPROVE = "mutation($id: ID!) { result: approveMilestone(id: $id) { __typename } }"

UPDATE_PREFERENCES = """
mutation Update($preferences: [NotificationPreferenceInput!]!) {
  result: updateNotificationPreferences(preferences: $preferences) { __typename }
}
"""


# --- the clock and the schedulers -----------------------------------------------------------


@dataclass
class Stopped:
    moment: datetime


@pytest.fixture
def stopped() -> Iterator[Stopped]:
    held = Stopped(datetime(2026, 3, 2, 3, 0, tzinfo=UTC))
    clock.set_clock(lambda: held.moment)
    yield held
    clock.set_clock(None)


SWEEP = ScheduledJob("notification.sweep", "*/15 * * * *", "notification.sweep")


def scheduler() -> Scheduler:
    """A scheduler of the sweep whose slot claims are its own: nothing stops a second one."""

    async def run(actor_name: str) -> None:
        assert actor_name == "notification.sweep"
        await notification_sweep.sweep()

    return Scheduler([SWEEP], LocalSchedulerLock(), run)


@dataclass
class Timeline:
    """Every swept notification, with the step (a label) at which it was first recorded."""

    db: Backend
    seen: set[uuid.UUID] = field(default_factory=set)
    recorded: list[tuple[str, str, str, str | None]] = field(default_factory=list)

    async def tick(self, label: str, *schedulers: Scheduler) -> None:
        """Every scheduler ticks at once (their sweeps run concurrently), then the jobs run."""
        await asyncio.gather(*(s.tick(clock.now()) for s in schedulers))
        await self.db.drain()
        for row in await Notification.filter(kind__in=SWEPT).order_by("created_at", "id"):
            if row.id not in self.seen:
                self.seen.add(row.id)
                stage = row.dedupe_key.rsplit(":", 1)[1]
                self.recorded.append((label, row.kind.value, stage, row.address))


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
async def client(owner: Account) -> Client:
    acme = await create_client(owner, name="Acme", currency="INR")
    await create_contact(owner, acme, primary=True, name="Priya", email=CONTACT)
    return acme


@pytest.fixture
async def project(owner: Account, client: Client) -> Project:
    return await create_project(owner, client, name="Website", invoice_due_days=5)


async def advance_of(
    project: Project, status: MilestoneStatus = MilestoneStatus.PENDING
) -> Milestone:
    return await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency=project.currency,
        title="Advance",
        kind=MilestoneKind.ADVANCE,
        amount_minor=100_000,
        status=status,
    )


async def set_agency(gql: GraphQLClient, account: Account, **values: object) -> dict[str, object]:
    data = await gql.execute(UPDATE_AGENCY, {"input": values}, token=account.token)
    return dict(data["result"])


async def request_payment(gql: GraphQLClient, owner: Account, milestone: Milestone) -> Invoice:
    data = await gql.execute(
        REQUEST_PAYMENT, {"milestoneIds": [str(milestone.id)]}, token=owner.token
    )
    assert data["result"]["__typename"] == "PaymentRequested", data
    await milestone.refresh_from_db()
    assert milestone.invoice_id is not None
    return await Invoice.get(id=milestone.invoice_id)


# --- reminders and overdue stages over a month ---------------------------------------------


async def test_a_month_of_reminders_with_outages_restarts_and_two_schedulers_is_exact(
    db: Backend, gql: GraphQLClient, stopped: Stopped, owner: Account, project: Project
) -> None:
    # given an agency in India (08:00 IST is 02:30 UTC), and an advance requested on
    # 2 March 03:00 UTC: its invoice is due 7 March (5 days), and nobody pays
    assert (await set_agency(gql, owner, timezone="Asia/Kolkata"))["timezone"] == "Asia/Kolkata"
    invoice = await request_payment(gql, owner, await advance_of(project))
    assert invoice.due_date == date(2026, 3, 7)
    start = stopped.moment
    outages = {2, 3, 4} | set(range(6, 15))

    # when two schedulers tick every six hours for 31 days, except during the outages,
    # and each comes back from an outage as a new process (a restart)
    timeline = Timeline(db)
    pair = (scheduler(), scheduler())
    for day in range(31):
        if day in outages:
            pair = (scheduler(), scheduler())
            continue
        for hour in (0, 6, 12, 18):
            stopped.moment = start + timedelta(days=day, hours=hour)
            await timeline.tick(f"day {day} +{hour}h", *pair)

    # then the advance reminder of day 3 goes out late on day 5 (the first run after the
    # outage); days 7 and 14 both fall in the second outage, so only day 14's goes, on
    # day 15. Overdue stage 1 (8 March) and 7 (14 March) fell in the outage: only stage 7
    # goes, on day 15 (17 March), then stage 14 on 21 March (day 19), each at 08:00 IST.
    # The owner's digest lists the overdue invoice from the first local day after the
    # outage, once a day; before the invoice was overdue it had nothing to say.
    owner_email = owner.user.email
    reminders = [
        ("day 5 +0h", "advance_payment_reminder", "3", CONTACT),
        ("day 15 +0h", "advance_payment_reminder", "14", CONTACT),
        ("day 15 +0h", "invoice_overdue", "7", CONTACT),
        ("day 19 +0h", "invoice_overdue", "14", CONTACT),
    ]
    digests = [
        (
            f"day {day} +0h",
            "daily_digest",
            (date(2026, 3, 2) + timedelta(days=day)).isoformat(),
            owner_email,
        )
        for day in range(15, 31)
    ]
    assert sorted(timeline.recorded) == sorted(reminders + digests)
    swept = await Notification.filter(kind__in=SWEPT)
    assert {row.status for row in swept} == {NotificationStatus.SENT}
    assert {row.attempts for row in swept} == {1}
    overdue = await Notification.get(kind=K.INVOICE_OVERDUE, dedupe_key__endswith=":14")
    assert overdue.data["days_overdue"] == 14
    assert overdue.data["amount_due"] == {"minor": 100_000, "currency": "INR"}


async def test_a_payment_in_the_middle_of_the_series_cancels_what_is_pending_and_the_rest(
    db: Backend,
    gql: GraphQLClient,
    stopped: Stopped,
    owner: Account,
    client: Client,
    project: Project,
) -> None:
    # given a client lead who takes reminders in the daily digest, and an advance requested
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client, name="Lee", email=LEAD)
    held = await gql.execute(
        UPDATE_PREFERENCES,
        {
            "preferences": [
                {
                    "kind": "ADVANCE_PAYMENT_REMINDER",
                    "channels": ["EMAIL"],
                    "frequency": "DAILY_DIGEST",
                }
            ]
        },
        token=lead.token,
    )
    assert held["result"]["__typename"] == "NotificationPreferences"
    # and an owner who (oddly) asked for the digest itself in the digest
    digested = await gql.execute(
        UPDATE_PREFERENCES,
        {
            "preferences": [
                {"kind": "DAILY_DIGEST", "channels": ["EMAIL"], "frequency": "DAILY_DIGEST"}
            ]
        },
        token=owner.token,
    )
    assert digested["result"]["__typename"] == "NotificationPreferences"
    invoice = await request_payment(gql, owner, await advance_of(project))
    start = stopped.moment
    timeline = Timeline(db)
    one = scheduler()

    # when the day-3 reminder is recorded (the lead's held for tomorrow's digest), the
    # client pays by bank transfer that afternoon, and the schedule runs on to day 20
    for day in range(21):
        for hour in (0, 6, 12, 18):
            stopped.moment = start + timedelta(days=day, hours=hour)
            if (day, hour) == (3, 6):
                paid = await gql.execute(
                    RECORD_OFFLINE,
                    {"invoiceId": str(invoice.id), "amount": "1000.00"},
                    token=owner.token,
                )
                assert paid["result"]["__typename"] == "Payment", paid
                await db.drain()
            await timeline.tick(f"day {day} +{hour}h", one)

    # then only the day-3 reminder exists: the contact's was sent, the lead's (still held)
    # was skipped when the payment came, no later stage started, no overdue reminder,
    # and the owner's digest on day 4 tells of the payment (and no digest is the lead's)
    assert timeline.recorded == [
        ("day 3 +0h", "advance_payment_reminder", "3", CONTACT),
        ("day 3 +0h", "advance_payment_reminder", "3", LEAD),
        ("day 4 +6h", "daily_digest", "2026-03-06", owner.user.email),
    ]
    rows = {
        row.address: (row.status, row.reason)
        for row in await Notification.filter(kind=K.ADVANCE_PAYMENT_REMINDER)
    }
    assert rows == {
        CONTACT: (NotificationStatus.SENT, None),
        LEAD: (NotificationStatus.SKIPPED, "The milestone was paid (or cancelled) meanwhile"),
    }
    digest = await Notification.get(kind=K.DAILY_DIGEST)
    assert digest.data["revenue"] == [{"minor": 100_000, "currency": "INR"}]
    assert digest.data["payments"] == [
        {"client_name": "Acme", "amount": {"minor": 100_000, "currency": "INR"}}
    ]
    assert digest.data["held"] == []
    assert (digest.status, digest.digest) == (NotificationStatus.SENT, False)


async def test_held_reminders_go_in_the_digest_and_a_queued_one_paid_meanwhile_is_skipped(
    db: Backend,
    gql: GraphQLClient,
    stopped: Stopped,
    owner: Account,
    client: Client,
    project: Project,
) -> None:
    # given a client lead who takes reminders in the daily digest, and an advance requested
    # on 2 March 03:00 UTC by an agency on UTC (digest at 08:00)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client, name="Lee", email=LEAD)
    await gql.execute(
        UPDATE_PREFERENCES,
        {
            "preferences": [
                {
                    "kind": "ADVANCE_PAYMENT_REMINDER",
                    "channels": ["EMAIL"],
                    "frequency": "DAILY_DIGEST",
                }
            ]
        },
        token=lead.token,
    )
    invoice = await request_payment(gql, owner, await advance_of(project))
    start = stopped.moment
    timeline = Timeline(db)

    # when the sweep runs at the day-3 reminder, and again at that day's digest hour
    stopped.moment = start + timedelta(days=3)
    await timeline.tick("day 3 03:00", scheduler())
    stopped.moment = start + timedelta(days=3, hours=6)
    await timeline.tick("day 3 09:00", scheduler())

    # then the lead's reminder was held, and went out in the lead's digest as one line
    assert timeline.recorded == [
        ("day 3 03:00", "advance_payment_reminder", "3", CONTACT),
        ("day 3 03:00", "advance_payment_reminder", "3", LEAD),
        ("day 3 09:00", "daily_digest", "2026-03-05", LEAD),
    ]
    digest = await Notification.get(kind=K.DAILY_DIGEST)
    pay_url = (await Notification.get(kind=K.ADVANCE_PAYMENT_REMINDER, address=LEAD)).data[
        "pay_url"
    ]
    assert digest.data["held"] == [
        f"Reminder: advance of ₹1,000.00 for Advance is unpaid. Pay: {pay_url}"
    ]
    assert digest.status is NotificationStatus.SENT
    held = await Notification.get(kind=K.ADVANCE_PAYMENT_REMINDER, address=LEAD)
    assert (held.status, held.reason) == (
        NotificationStatus.SENT,
        "In the daily digest of 2026-03-05",
    )

    # when the day-7 reminder is recorded but its send job has not run yet, the client
    # pays, and then the job runs (a queue that was slow, say)
    stopped.moment = start + timedelta(days=7)
    with relay_later():
        await notification_sweep.sweep()
    queued = await Notification.get(
        kind=K.ADVANCE_PAYMENT_REMINDER, address=CONTACT, dedupe_key__endswith=":7"
    )
    assert queued.status is NotificationStatus.PENDING
    paid = await gql.execute(
        RECORD_OFFLINE, {"invoiceId": str(invoice.id), "amount": "1000.00"}, token=owner.token
    )
    assert paid["result"]["__typename"] == "Payment", paid
    await db.drain()
    await asyncio.to_thread(send.fn, str(queued.id))
    await notification_sweep.sweep()

    # then the job sends nothing and records why; the lead's held one is skipped by the sweep
    stage_7 = {
        row.address: (row.status, row.reason)
        for row in await Notification.filter(
            kind=K.ADVANCE_PAYMENT_REMINDER, dedupe_key__endswith=":7"
        )
    }
    reason = "The milestone was paid (or cancelled) meanwhile"
    assert stage_7 == {
        CONTACT: (NotificationStatus.SKIPPED, reason),
        LEAD: (NotificationStatus.SKIPPED, reason),
    }


async def test_an_approved_balance_is_reminded_by_email_from_its_approval(
    db: Backend, gql: GraphQLClient, stopped: Stopped, owner: Account, project: Project
) -> None:
    # given a balance milestone submitted for approval, and a real SMTP server
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    previous = use_smtp(controller.port)
    try:
        balance = await advance_of(project, MilestoneStatus.SUBMITTED)
        await Milestone.filter(id=balance.id).update(kind=MilestoneKind.BALANCE, title="Balance")

        # when the owner approves it (its invoice is the request), and the sweep runs
        # on the third day after, twice
        approved = await gql.execute(APPROVE, {"id": str(balance.id)}, token=owner.token)
        assert approved["result"]["__typename"] == "Milestone", approved
        await db.drain()
        stopped.moment += timedelta(days=3)
        before = len(mailbox.envelopes)
        timeline = Timeline(db)
        await timeline.tick("day 3", scheduler())
        await timeline.tick("day 3 again", scheduler())
    finally:
        configure_settings(previous)
        controller.stop()

    # then the contact gets one balance reminder, by email, with the amount and the pay link
    assert timeline.recorded == [("day 3", "balance_payment_reminder", "3", CONTACT)]
    sent = mailbox.messages()[before:]
    assert [(m["To"], m["Subject"]) for m in sent] == [
        (CONTACT, "Reminder: the balance of ₹1,000.00 for Website is unpaid")
    ]
    text = body(sent[0], "plain")
    assert "balance payment of ₹1,000.00 for Balance (Website) was requested on" in text
    assert "Pay here: http://settle.test/pay/invoices/" in text


# --- digests in two time zones ------------------------------------------------------------


async def test_a_digest_per_agency_per_local_day_in_two_time_zones_never_when_empty(
    db: Backend, gql: GraphQLClient, stopped: Stopped, owner: Account, rival: Account
) -> None:
    # given an agency in India with an overdue invoice, and one in California with nothing
    await set_agency(gql, owner, timezone="Asia/Kolkata")
    await set_agency(gql, rival, timezone="America/Los_Angeles")
    stopped.moment = datetime(2027, 1, 4, 0, 0, tzinfo=UTC)
    start = stopped.moment
    india = await overdue_invoice(owner, "ap@india.test")
    timeline = Timeline(db)
    one = scheduler()

    # when the scheduler ticks every hour for four days but is down all of 6 January (UTC),
    # and the Californian agency gets an overdue invoice on 5 January 06:00 UTC
    for hour in range(96):
        stopped.moment = start + timedelta(hours=hour)
        if hour == 30:
            await overdue_invoice(rival, "ap@california.test")
        if 48 <= hour < 72:
            one = scheduler()
            continue
        await timeline.tick(f"+{hour}h", one)

    # then India's digest goes at 08:00 IST (the 03:00 UTC tick) on 4, 5 and 7 January:
    # 6 January's hours all fell in the outage, so that day has none, and there is no
    # burst afterwards. California's first digest goes when it first has something (its
    # 4 January, at 22:00 PST), then at 08:00 PST (16:00 UTC); its 6 January went out
    # at the first tick after the outage, still 6 January in California.
    # (and each invoice's latest overdue stage, 14 days, once)
    assert timeline.recorded == [
        ("+0h", "invoice_overdue", "14", "ap@india.test"),
        ("+3h", "daily_digest", "2027-01-04", owner.user.email),
        ("+27h", "daily_digest", "2027-01-05", owner.user.email),
        ("+30h", "invoice_overdue", "14", "ap@california.test"),
        ("+30h", "daily_digest", "2027-01-04", rival.user.email),
        ("+40h", "daily_digest", "2027-01-05", rival.user.email),
        ("+72h", "daily_digest", "2027-01-06", rival.user.email),
        ("+75h", "daily_digest", "2027-01-07", owner.user.email),
        ("+88h", "daily_digest", "2027-01-07", rival.user.email),
    ]
    digest = await Notification.get(
        kind=K.DAILY_DIGEST, dedupe_key__endswith="2027-01-07", agency_id=owner.agency_id
    )
    assert digest.data["overdue_invoices"] == [
        {
            "number": india.number,
            "amount_due": {"minor": 10_000, "currency": "INR"},
            "due_date": "2026-12-20",
        }
    ]


async def overdue_invoice(account: Account, contact_email: str) -> Invoice:
    """An issued invoice of ₹100.00 whose due date (20 December 2026) has passed."""
    acme = await create_client(account, name="Acme", currency="INR")
    await create_contact(account, acme, primary=True, name="Priya", email=contact_email)
    invoice = await issue_invoice(account, await create_invoice(account, acme))
    # The due date as if it was issued weeks ago (issuing dates it from today's clock).
    await Invoice.filter(id=invoice.id).update(due_date=date(2026, 12, 20))
    return await Invoice.get(id=invoice.id)


async def test_the_digest_lists_overdue_milestones_failed_and_flagged_payments_and_expiring_access(
    db: Backend, gql: GraphQLClient, stopped: Stopped, owner: Account, project: Project
) -> None:
    # given (at a digest hour just ahead of the wall clock, which stamps rows' updated_at)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    stopped.moment = now + timedelta(minutes=5)
    done = await set_agency(gql, owner, digestHour=now.hour)
    assert done["digestHour"] == now.hour
    since = now - timedelta(days=1)
    # a milestone past its due date, on an issued invoice
    late = await advance_of(project, MilestoneStatus.APPROVED)
    await Milestone.filter(id=late.id).update(due_date=now.date() - timedelta(days=2))
    invoice = await request_payment(gql, owner, late)
    # a payment of that invoice that failed in the last 24 hours, and one flagged
    base = {
        "agency_id": owner.agency_id,
        "client_id": project.client_id,
        "invoice_id": invoice.id,
        "provider": PaymentProvider.SANDBOX,
        "currency": "INR",
    }
    await Payment.create(
        **base,
        amount_minor=100_000,
        status=PaymentStatus.FAILED,
        failed_at=since + timedelta(hours=1),
    )
    await Payment.create(
        **base,
        amount_minor=5_000,
        status=PaymentStatus.PENDING,
        reference="pay_FLAG",
        flagged_reason="The gateway reported another amount",
    )
    await WebhookEvent.create(
        provider=PaymentProvider.RAZORPAY,
        event_id="evt_1",
        event_type="payment.captured",
        payload={},
        agency_id=owner.agency_id,
        received_at=since + timedelta(hours=2),
        outcome="flagged",
    )
    # and another project whose files close in 3 days
    other = await create_project(owner, await Client.get(id=project.client_id), name="App")
    await create_final_deliverable(other)
    paid = await advance_of(other, MilestoneStatus.PAID)
    access_days = get_settings().deliverable_access_days
    closes = now + timedelta(days=3)
    await Milestone.filter(id=paid.id).update(
        payment_status="paid", paid_at=closes - timedelta(days=access_days)
    )

    # when the sweep runs after the digest hour
    await notification_sweep.sweep()
    await db.drain()

    # then the owner's one digest lists each of them
    (digest,) = await Notification.filter(kind=K.DAILY_DIGEST)
    assert digest.address == owner.user.email
    inr = {"minor": 100_000, "currency": "INR"}
    assert {
        key: digest.data[key]
        for key in (
            "overdue_milestones",
            "failed_payments",
            "flagged",
            "expiring",
            "payments",
            "revenue",
        )
    } == {
        "overdue_milestones": [
            {
                "title": "Advance",
                "amount": inr,
                "due_date": (now.date() - timedelta(days=2)).isoformat(),
            }
        ],
        "failed_payments": [{"client_name": "Acme", "amount": inr}],
        "flagged": [
            "Payment pay_FLAG: The gateway reported another amount",
            "Webhook razorpay payment.captured (evt_1)",
        ],
        "expiring": [{"title": "the files of App", "expires_on": closes.date().isoformat()}],
        "payments": [],
        "revenue": [],
    }
    assert digest.status is NotificationStatus.SENT


# --- access and upload reminders ----------------------------------------------------------


async def test_access_expiring_then_expired_and_an_upload_reminder_are_sent_once_each(
    db: Backend, gql: GraphQLClient, stopped: Stopped, owner: Account, project: Project
) -> None:
    # given a project with a final file whose only milestone (approved) is paid by bank
    # transfer on an invoice that has no document (issued elsewhere: no PDF of Settle's)
    await create_final_deliverable(project)
    advance = await advance_of(project, MilestoneStatus.APPROVED)
    invoice = await request_payment(gql, owner, advance)
    paid = await gql.execute(
        RECORD_OFFLINE, {"invoiceId": str(invoice.id), "amount": "1000.00"}, token=owner.token
    )
    assert paid["result"]["__typename"] == "Payment", paid
    await db.drain()
    await Invoice.filter(id=invoice.id).update(pdf_key=None)
    payment = await Payment.get(invoice_id=invoice.id)
    assert payment.succeeded_at == stopped.moment
    access_days = get_settings().deliverable_access_days
    start = stopped.moment
    timeline = Timeline(db)

    # when the scheduler ticks daily (and twice on some days) until the access is over
    for day in [
        0,
        1,
        1,
        2,
        access_days - 8,
        access_days - 7,
        access_days - 6,
        access_days,
        access_days,
        access_days + 1,
    ]:
        stopped.moment = start + timedelta(days=day, minutes=1)
        await timeline.tick(f"day {day}", scheduler())

    # then the managers are asked for the document the next day, once; the client's
    # contact is warned 7 days before the access ends and told when it has ended
    ends = (start + timedelta(days=access_days)).isoformat()
    assert timeline.recorded == [
        ("day 1", "invoice_upload_reminder", str(payment.id), owner.user.email),
        (f"day {access_days - 7}", "access_expiring", "expiring", CONTACT),
        (f"day {access_days}", "access_expired", "expired", CONTACT),
    ]
    expired = await Notification.get(kind=K.ACCESS_EXPIRED)
    assert expired.dedupe_key == f"project:{project.id}:access:{ends}:expired"
    assert expired.data["deliverable_title"] == "the files of Website"


# --- settings -----------------------------------------------------------------------------


async def test_reminder_days_and_digest_hour_are_set_per_agency_and_checked(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    # given the defaults
    agency = await Agency.get(id=owner.agency_id)
    assert (agency.payment_reminder_days, agency.overdue_reminder_days, agency.digest_hour) == (
        "3,7,14",
        "1,7,14",
        8,
    )

    # when the owner sets them, and then tries values that make no sense
    done = await set_agency(
        gql, owner, paymentReminderDays=[10, 2], overdueReminderDays=[0, 30], digestHour=18
    )
    refused = [
        await set_agency(gql, owner, **values)
        for values in (
            {"paymentReminderDays": []},
            {"paymentReminderDays": [3, 3]},
            {"overdueReminderDays": [400]},
            {"overdueReminderDays": list(range(11))},
            {"digestHour": 24},
        )
    ]

    # then the days are kept in order, and each bad value is a typed error that changes nothing
    assert done == {
        "__typename": "Agency",
        "timezone": "UTC",
        "paymentReminderDays": [2, 10],
        "overdueReminderDays": [0, 30],
        "digestHour": 18,
    }
    assert [(r["code"], r["field"]) for r in refused] == [
        ("REQUIRED", "paymentReminderDays"),
        ("DUPLICATE", "paymentReminderDays"),
        ("OUT_OF_RANGE", "overdueReminderDays"),
        ("TOO_MANY", "overdueReminderDays"),
        ("OUT_OF_RANGE", "digestHour"),
    ]
    agency = await Agency.get(id=owner.agency_id)
    assert (agency.payment_reminder_days, agency.overdue_reminder_days, agency.digest_hour) == (
        "2,10",
        "0,30",
        18,
    )


# --- the milestones' members --------------------------------------------------------------

START = "mutation($id: ID!) { result: startMilestone(id: $id) { __typename } }"
SUBMIT = "mutation($id: ID!) { result: submitMilestone(id: $id) { __typename } }"
TELL_MEMBERS = """
mutation($id: ID!) {
  result: updateProject(id: $id, input: {notifyMilestoneMembers: true}) { __typename }
}
"""


async def test_the_upload_reminder_also_goes_to_the_member_who_submitted_when_the_project_says_so(
    db: Backend, gql: GraphQLClient, stopped: Stopped, owner: Account, project: Project
) -> None:
    # given a project that tells its members, and a milestone a member submitted, the owner
    # approved and the client paid by bank transfer on an invoice that has no document
    member = await create_user(owner, role=Role.MEMBER, name="Mo", email="mo@northwind.test")
    told = await gql.execute(TELL_MEMBERS, {"id": str(project.id)}, token=owner.token)
    assert told["result"]["__typename"] == "Project", told
    advance = await advance_of(project)
    for operation, account in ((START, member), (SUBMIT, member), (APPROVE, owner)):
        done = await gql.execute(operation, {"id": str(advance.id)}, token=account.token)
        assert done["result"]["__typename"] == "Milestone", done
    await db.drain()
    await advance.refresh_from_db()
    assert advance.invoice_id is not None
    paid = await gql.execute(
        RECORD_OFFLINE,
        {"invoiceId": str(advance.invoice_id), "amount": "1000.00"},
        token=owner.token,
    )
    assert paid["result"]["__typename"] == "Payment", paid
    await db.drain()
    await Invoice.filter(id=advance.invoice_id).update(pdf_key=None)
    payment = await Payment.get(invoice_id=advance.invoice_id)
    # (the payment of the whole invoice was the member's milestone, so they heard of it)
    assert sorted(
        n.address for n in await Notification.filter(kind=K.PAYMENT_RECEIVED, subject_id=payment.id)
    ) == ["mo@northwind.test", owner.user.email]
    start = stopped.moment
    timeline = Timeline(db)

    # when two schedulers tick on the next day, and again
    stopped.moment = start + timedelta(days=1, minutes=1)
    await timeline.tick("day 1", scheduler(), scheduler())
    await timeline.tick("day 1 again", scheduler())

    # then the owner and the member are asked for the document, once each
    assert sorted(
        entry for entry in timeline.recorded if entry[1] == "invoice_upload_reminder"
    ) == [
        ("day 1", "invoice_upload_reminder", str(payment.id), "mo@northwind.test"),
        ("day 1", "invoice_upload_reminder", str(payment.id), owner.user.email),
    ]
    assert {n.status for n in await Notification.filter(kind=K.INVOICE_UPLOAD_REMINDER)} == {
        NotificationStatus.SENT
    }
