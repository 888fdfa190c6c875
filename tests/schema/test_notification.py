"""Notifications through the API: each kind triggered by a real operation, sent once, listed.

Emails go to a real SMTP server started by the test (aiosmtpd).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller
from fpdf import FPDF

from settle.core import clock
from settle.core.outbox import relay_later, transaction
from settle.core.settings import configure_settings, get_settings
from settle.models.activity import ActivityEvent
from settle.models.agency import Agency, Role
from settle.models.client import Client, Contact
from settle.models.milestone import Milestone, MilestoneKind, MilestoneStatus
from settle.models.notification import (
    Channel,
    Frequency,
    Notification,
    NotificationKind,
    NotificationPreference,
    NotificationStatus,
)
from settle.models.outbox import OutboxMessage
from settle.models.project import Project
from settle.notifications import channels
from settle.services import invoice_files
from settle.services import notification as notification_service
from settle.tasks.notification import send
from tests.conftest import Backend
from tests.fixtures.factories import (
    Account,
    create_client,
    create_contact,
    create_invoice,
    create_project,
    create_user,
)
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.smtp import Mailbox, body, free_port, use_smtp

K = NotificationKind
CONTACT_EMAIL = "priya@acme.test"

PAY_MILESTONES = """
mutation PayMilestones($milestoneIds: [ID!]!) {
  result: payMilestones(milestoneIds: $milestoneIds) {
    __typename
    ... on PaymentCheckout { payment { id } checkout { checkoutUrl } }
  }
}
"""

REFUND_PAYMENT = """
mutation RefundPayment($paymentId: ID!, $reason: String!, $amount: String) {
  result: refundPayment(paymentId: $paymentId, reason: $reason, amount: $amount) {
    __typename
  }
}
"""

FINALIZE_INVOICE = """
mutation FinalizeInvoice($id: ID!) {
  result: finalizeInvoice(id: $id) { __typename ... on Invoice { number } }
}
"""

SUBMIT = "mutation($id: ID!) { result: submitMilestone(id: $id) { __typename } }"
START = "mutation($id: ID!) { result: startMilestone(id: $id) { __typename } }"
APPROVE = "mutation($id: ID!) { result: approveMilestone(id: $id) { __typename } }"
REJECT = """
mutation($id: ID!, $reason: String!) {
  result: rejectMilestone(id: $id, reason: $reason) { __typename }
}
"""

NOTIFICATIONS = """
query Notifications($first: Int, $after: String, $filter: NotificationFilter) {
  notifications(first: $first, after: $after, filter: $filter) {
    totalCount
    edges { node { kind channel status reason address subjectType attempts } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

PREFERENCES = """
query { notificationPreferences { kind channels frequency canTurnOff } }
"""

UPDATE_PREFERENCES = """
mutation Update($preferences: [NotificationPreferenceInput!]!) {
  result: updateNotificationPreferences(preferences: $preferences) {
    __typename
    ... on NotificationPreferences { preferences { kind channels frequency } }
    ... on ValidationError { code field message }
  }
}
"""

UPDATE_AGENCY = """
mutation UpdateAgency($input: UpdateAgencyInput!) {
  result: updateAgency(input: $input) {
    __typename
    ... on Agency { timezone }
    ... on ValidationError { code field message }
  }
}
"""


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def smtp(db: Backend) -> Iterator[Mailbox]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    previous = use_smtp(controller.port)
    try:
        yield mailbox
    finally:
        configure_settings(previous)
        controller.stop()


@pytest.fixture
async def client(owner: Account) -> Client:
    acme = await create_client(owner, name="Acme", currency="INR")
    await create_contact(owner, acme, primary=True, name="Priya", email=CONTACT_EMAIL)
    return acme


@pytest.fixture
async def project(owner: Account, client: Client) -> Project:
    return await create_project(owner, client, name="Website")


@pytest.fixture
async def admin(owner: Account) -> Account:
    return await create_user(owner, role=Role.ADMIN, name="Ada Admin", email="ada@northwind.test")


@pytest.fixture
async def member(owner: Account) -> Account:
    return await create_user(owner, role=Role.MEMBER, name="Mo Member", email="mo@northwind.test")


@pytest.fixture
async def lead(owner: Account, client: Client) -> Account:
    return await create_user(
        owner, role=Role.CLIENT_LEAD, client=client, name="Lee Lead", email="lee@acme.test"
    )


async def approved_milestone(
    project: Project, *, kind: MilestoneKind = MilestoneKind.ADVANCE, amount_minor: int = 100_000
) -> Milestone:
    return await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency=project.currency,
        title="Advance" if kind is MilestoneKind.ADVANCE else "Design",
        kind=kind,
        amount_minor=amount_minor,
        status=MilestoneStatus.APPROVED,
    )


async def checkout(gql: GraphQLClient, payer: Account, milestone: Milestone) -> dict[str, Any]:
    data = await gql.execute(
        PAY_MILESTONES, {"milestoneIds": [str(milestone.id)]}, token=payer.token
    )
    assert data["result"]["__typename"] == "PaymentCheckout", data
    return dict(data["result"])


async def press(http: httpx.AsyncClient, db: Backend, checkout_url: str, button: str) -> None:
    path = urlsplit(checkout_url).path
    pressed = await http.post(f"{path}/{button}")
    assert pressed.status_code == 200
    await db.drain()


async def rows(*kinds: NotificationKind) -> list[tuple[str, str, str | None, str]]:
    found = await Notification.filter(kind__in=list(kinds)).order_by("kind", "address")
    return [(n.kind.value, n.channel.value, n.address, n.status.value) for n in found]


def mail_to(smtp: Mailbox) -> list[tuple[str, str]]:
    """(recipient, subject) of every email the server took, sorted."""
    return sorted(
        (envelope.rcpt_tos[0], str(message["Subject"]))
        for envelope, message in zip(smtp.envelopes, smtp.messages(), strict=True)
    )


def message_to(smtp: Mailbox, address: str, subject_start: str) -> EmailMessage:
    for envelope, message in zip(smtp.envelopes, smtp.messages(), strict=True):
        if envelope.rcpt_tos == [address] and str(message["Subject"]).startswith(subject_start):
            return message
    raise AssertionError(f"no email to {address} starting {subject_start!r}: {mail_to(smtp)}")


def plain(message: EmailMessage) -> str:
    return body(message, "plain").replace("\r\n", "\n")


async def run_every_job_again(db: Backend) -> None:
    """Deliver each notification again, as a redelivered message would."""
    for row in await Notification.all():
        await asyncio.to_thread(send.fn, str(row.id))
    await db.drain()


# --- payments -----------------------------------------------------------------------------


async def test_a_paid_advance_tells_managers_and_sends_the_client_a_receipt_once(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    smtp: Mailbox,
    owner: Account,
    admin: Account,
    member: Account,
    lead: Account,
    project: Project,
) -> None:
    # given an approved advance of ₹1,000.00 the lead starts paying
    advance = await approved_milestone(project)
    started = await checkout(gql, lead, advance)
    await db.drain()
    before = len(smtp.envelopes)

    # when the payer presses Pay and the sandbox's webhook is applied
    await press(http, db, started["checkout"]["checkoutUrl"], "succeed")

    # then the owner and admin are told, the contact and the lead get a receipt (not the member)
    payment_id = started["payment"]["id"]
    reference = f"sbx_pay_{payment_id}"
    assert await rows(K.PAYMENT_RECEIVED, K.ADVANCE_PAYMENT_CONFIRMATION) == [
        ("advance_payment_confirmation", "email", "lee@acme.test", "sent"),
        ("advance_payment_confirmation", "email", CONTACT_EMAIL, "sent"),
        ("payment_received", "email", "ada@northwind.test", "sent"),
        ("payment_received", "email", owner.user.email, "sent"),
    ]
    new = mail_to(smtp)
    assert [m for m in new if m[1].startswith("Payment received from Acme")] == sorted(
        [
            ("ada@northwind.test", "Payment received from Acme: ₹1,000.00"),
            (owner.user.email, "Payment received from Acme: ₹1,000.00"),
        ]
    )
    assert [m for m in new if m[1].startswith("Advance payment received")] == [
        ("lee@acme.test", "Advance payment received: ₹1,000.00, thank you"),
        (CONTACT_EMAIL, "Advance payment received: ₹1,000.00, thank you"),
    ]
    assert len(smtp.envelopes) - before == 4
    receipt = message_to(smtp, CONTACT_EMAIL, "Advance payment received")
    text = body(receipt, "plain")
    assert "Northwind Studio received your advance payment of ₹1,000.00" in text
    assert f"Transaction reference: {reference}" in text
    assert "- Advance: ₹1,000.00" in text
    attachments = [part.get_filename() for part in receipt.iter_attachments()]
    assert len(attachments) == 1
    assert attachments[0].endswith(".pdf")
    # a receipt cannot be turned off, so it carries no unsubscribe link
    assert receipt["List-Unsubscribe"] is None
    alert = message_to(smtp, owner.user.email, "Payment received")
    assert f"Transaction reference: {reference}" in body(alert, "plain")
    assert alert["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # when every notification's job runs again
    sent = len(smtp.envelopes)
    await run_every_job_again(db)

    # then nothing is sent twice
    assert len(smtp.envelopes) == sent
    assert {n.attempts for n in await Notification.filter(status=NotificationStatus.SENT)} == {1}


async def test_a_failed_payment_tells_the_client_with_a_retry_link_and_alerts_managers(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    smtp: Mailbox,
    owner: Account,
    lead: Account,
    project: Project,
) -> None:
    # given a payment under way
    design = await approved_milestone(project, kind=MilestoneKind.STANDARD)
    started = await checkout(gql, lead, design)
    await db.drain()

    # when the payer's card is declined
    await press(http, db, started["checkout"]["checkoutUrl"], "fail")

    # then the client side gets a retry link and the owner an alert, once each
    assert await rows(K.PAYMENT_FAILED, K.PAYMENT_FAILED_ALERT) == [
        ("payment_failed", "email", "lee@acme.test", "sent"),
        ("payment_failed", "email", CONTACT_EMAIL, "sent"),
        ("payment_failed_alert", "email", owner.user.email, "sent"),
    ]
    failed = message_to(smtp, CONTACT_EMAIL, "Your payment of ₹1,000.00")
    text = body(failed, "plain")
    assert "Try again: http://settle.test/pay/invoices/" in text
    alert = message_to(smtp, owner.user.email, "Payment failed: Acme, ₹1,000.00")
    assert "Declined in the sandbox" in body(alert, "plain")
    sent = len(smtp.envelopes)
    await run_every_job_again(db)
    assert len(smtp.envelopes) == sent


async def test_a_refund_tells_the_client_once(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    smtp: Mailbox,
    owner: Account,
    lead: Account,
    project: Project,
) -> None:
    # given a paid milestone of ₹1,000.00
    design = await approved_milestone(project, kind=MilestoneKind.STANDARD)
    started = await checkout(gql, lead, design)
    await press(http, db, started["checkout"]["checkoutUrl"], "succeed")

    # when the owner refunds ₹250.00 and the sandbox settles it
    data = await gql.execute(
        REFUND_PAYMENT,
        {"paymentId": started["payment"]["id"], "reason": "Scope cut", "amount": "250.00"},
        token=owner.token,
    )
    assert data["result"]["__typename"] == "RefundPayload"
    await db.drain()

    # then the contact and the lead are told, once
    assert await rows(K.REFUND_PROCESSED) == [
        ("refund_processed", "email", "lee@acme.test", "sent"),
        ("refund_processed", "email", CONTACT_EMAIL, "sent"),
    ]
    refund = message_to(smtp, CONTACT_EMAIL, "Refund of ₹250.00 from Northwind Studio")
    assert "refunded ₹250.00 of your payment of ₹1,000.00" in body(refund, "plain")
    sent = len(smtp.envelopes)
    await run_every_job_again(db)
    assert len(smtp.envelopes) == sent


# --- invoices and milestones --------------------------------------------------------------


async def test_an_issued_invoice_tells_the_client_lead_with_the_pay_link(
    db: Backend, gql: GraphQLClient, smtp: Mailbox, owner: Account, lead: Account, client: Client
) -> None:
    # given a draft of ₹500.00
    draft = await create_invoice(
        owner, client, lines=[{"description": "Build", "quantity": "1", "unit_price": "500.00"}]
    )

    # when the owner issues it
    data = await gql.execute(FINALIZE_INVOICE, {"id": str(draft.id)}, token=owner.token)
    await db.drain()

    # then the lead is told (the primary contact gets the invoice email itself on sendInvoice)
    number = data["result"]["number"]
    assert await rows(K.INVOICE_READY) == [("invoice_ready", "email", "lee@acme.test", "sent")]
    email = message_to(smtp, "lee@acme.test", f"Invoice {number} from Northwind Studio")
    assert "Pay here: http://settle.test/pay/invoices/" in body(email, "plain")
    assert [part.get_filename() for part in email.iter_attachments()] == [f"{number}.pdf"]
    assert email["List-Unsubscribe"].startswith(
        "<http://settle.test/notifications/unsubscribe?token="
    )
    sent = len(smtp.envelopes)
    await run_every_job_again(db)
    assert len(smtp.envelopes) == sent


async def test_approval_and_rejection_tell_the_member_who_submitted(
    db: Backend,
    gql: GraphQLClient,
    smtp: Mailbox,
    owner: Account,
    member: Account,
    lead: Account,
    project: Project,
) -> None:
    # given a milestone the member submitted
    async with transaction():
        milestone = await Milestone.create(
            agency_id=project.agency_id,
            project_id=project.id,
            client_id=project.client_id,
            currency=project.currency,
            title="Design",
            amount_minor=50_000,
        )
    for operation in (START, SUBMIT):
        done = await gql.execute(operation, {"id": str(milestone.id)}, token=member.token)
        assert done["result"]["__typename"] == "Milestone", done

    # when the client's lead sends it back, and approves it after the rework
    rejected = await gql.execute(
        REJECT, {"id": str(milestone.id), "reason": "Logo too small"}, token=lead.token
    )
    assert rejected["result"]["__typename"] == "Milestone"
    for operation in (START, SUBMIT):
        await gql.execute(operation, {"id": str(milestone.id)}, token=member.token)
    approved = await gql.execute(APPROVE, {"id": str(milestone.id)}, token=lead.token)
    assert approved["result"]["__typename"] == "Milestone"
    await db.drain()

    # then the member got one email of each, naming who decided and why
    assert await rows(K.MILESTONE_APPROVED, K.MILESTONE_REJECTED) == [
        ("milestone_approved", "email", "mo@northwind.test", "sent"),
        ("milestone_rejected", "email", "mo@northwind.test", "sent"),
    ]
    back = message_to(smtp, "mo@northwind.test", "Milestone sent back: Design")
    assert "Lee Lead sent Design (Website) back:\nLogo too small" in plain(back)
    ok = message_to(smtp, "mo@northwind.test", "Milestone approved: Design")
    assert "Lee Lead approved Design (Website, ₹500.00)." in plain(ok)
    sent = len(smtp.envelopes)
    await run_every_job_again(db)
    assert len(smtp.envelopes) == sent


# --- the outbox, retries, limits ----------------------------------------------------------


async def notify_owner(owner: Account, key: str = "test:1") -> list[Notification]:
    return await notification_service.notify(
        K.MILESTONE_APPROVED,
        agency_id=owner.agency_id,
        recipients=await notification_service.user(owner.user.id),
        subject_type="milestone",
        subject_id=None,
        dedupe_key=key,
        data={
            "milestone_title": "Design",
            "project_name": "Website",
            "amount": {"minor": 100, "currency": "INR"},
            "approved_by": "Lee",
        },
    )


class Rollback(Exception):
    pass


async def test_a_rolled_back_change_notifies_nobody(db: Backend, owner: Account) -> None:
    # given
    outbox_before = await OutboxMessage.all().count()
    # when a transaction that notified rolls back
    written: list[Notification] = []

    async def change_then_fail() -> None:
        async with transaction():
            written.extend(await notify_owner(owner))
            raise Rollback

    with pytest.raises(Rollback):
        await change_then_fail()
    assert len(written) == 1
    # then no row and no job remain
    assert await Notification.all().count() == 0
    assert await OutboxMessage.all().count() == outbox_before


async def test_the_same_dedupe_key_writes_one_notification(db: Backend, owner: Account) -> None:
    # given a notification sent
    async with transaction():
        await notify_owner(owner)
    # when the same event is told again
    async with transaction():
        again = await notify_owner(owner)
    await db.drain()
    # then nothing new is written
    assert again == []
    assert await rows(K.MILESTONE_APPROVED) == [
        ("milestone_approved", "email", owner.user.email, "sent")
    ]


async def test_a_temporary_smtp_failure_is_retried_and_a_permanent_one_recorded(
    db: Backend, owner: Account
) -> None:
    # given a mail server that answers 451, and a notification waiting
    mailbox = Mailbox(data_reply="451 4.3.0 Try again later")
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    previous = use_smtp(controller.port)
    try:
        with relay_later():
            async with transaction():
                (row,) = await notify_owner(owner)
        # when the job runs: the failure is recorded and raised for Dramatiq's retry
        with pytest.raises(Exception, match="451"):
            await notification_service.deliver(row.id)
        await row.refresh_from_db()
        assert (row.status, row.attempts, row.last_error) == (
            NotificationStatus.PENDING,
            1,
            "SMTP server replied 451 4.3.0 Try again later",
        )
        # when the retry is refused for good
        mailbox.data_reply = "550 5.1.1 No such user"
        assert await notification_service.deliver(row.id) is None
        await row.refresh_from_db()
        assert (row.status, row.attempts, row.last_error) == (
            NotificationStatus.FAILED,
            2,
            "SMTP server replied 550 5.1.1 No such user",
        )
        # then a later run sends nothing
        mailbox.data_reply = "250 OK"
        assert await notification_service.deliver(row.id) is None
        assert mailbox.envelopes == []
    finally:
        configure_settings(previous)
        controller.stop()


async def test_beyond_the_agency_email_limit_a_notification_waits(
    db: Backend, smtp: Mailbox, owner: Account
) -> None:
    # given a limit of two emails an hour and three notifications
    previous = get_settings()
    configure_settings(previous.model_copy(update={"notification_email_rate_limit": "2/hour"}))
    try:
        with relay_later():
            async with transaction():
                made = [(await notify_owner(owner, f"test:{n}"))[0] for n in range(3)]
        # when each job runs
        outcomes = [await notification_service.deliver(row.id) for row in made]
    finally:
        configure_settings(previous)
    # then two are sent and the third is deferred by up to an hour, still pending
    assert outcomes[:2] == [None, None]
    deferred = outcomes[2]
    assert deferred is not None
    assert 0 < deferred.seconds <= 3601
    assert len(smtp.envelopes) == 2
    third = await Notification.get(id=made[2].id)
    assert (third.status, third.attempts) == (NotificationStatus.PENDING, 0)
    # and marked held back, so the janitor leaves it to the job that comes back
    assert third.not_before is not None
    assert third.not_before > clock.now()


@pytest.fixture
def own_telegram_channel() -> Iterator[None]:
    """The test changes the Telegram sender; the real one is back afterwards."""
    real = channels.sender_for(Channel.TELEGRAM)
    yield
    channels.unregister(Channel.TELEGRAM)
    if real is not None:
        channels.register(real)


async def test_a_telegram_notification_without_a_telegram_channel_is_skipped(
    db: Backend, owner: Account, gql: GraphQLClient, own_telegram_channel: None
) -> None:
    # given the owner wants approvals on email and Telegram, and no Telegram sender exists
    channels.unregister(Channel.TELEGRAM)
    data = await gql.execute(
        UPDATE_PREFERENCES,
        {
            "preferences": [
                {
                    "kind": "MILESTONE_APPROVED",
                    "channels": ["EMAIL", "TELEGRAM"],
                    "frequency": "IMMEDIATE",
                }
            ]
        },
        token=owner.token,
    )
    assert data["result"]["__typename"] == "NotificationPreferences"
    # when an approval is told
    async with transaction():
        await notify_owner(owner)
    await db.drain()
    # then the email is sent and the Telegram message skipped with the reason
    found = await Notification.filter(kind=K.MILESTONE_APPROVED).order_by("channel")
    assert [(n.channel, n.status, n.reason) for n in found] == [
        (Channel.EMAIL, NotificationStatus.SENT, None),
        (Channel.TELEGRAM, NotificationStatus.SKIPPED, "No telegram channel is configured"),
    ]


# --- history and preferences in the API ---------------------------------------------------


async def test_the_history_is_the_agencys_for_managers_and_ones_own_for_others(
    db: Backend, gql: GraphQLClient, owner: Account, member: Account, rival: Account
) -> None:
    # given three notifications for the owner and one for the member
    async with transaction():
        for n in range(3):
            await notify_owner(owner, f"test:{n}")
        await notification_service.notify(
            K.MILESTONE_REJECTED,
            agency_id=owner.agency_id,
            recipients=await notification_service.user(member.user.id),
            subject_type="milestone",
            subject_id=None,
            dedupe_key="test:member",
            data={"milestone_title": "D", "project_name": "W", "rejected_by": "L", "reason": "R"},
        )
    await db.drain()

    # when each asks for the history, two at a time
    first = await gql.execute(NOTIFICATIONS, {"first": 2}, token=owner.token)
    rest = await gql.execute(
        NOTIFICATIONS,
        {"first": 2, "after": first["notifications"]["pageInfo"]["endCursor"]},
        token=owner.token,
    )
    own = await gql.execute(NOTIFICATIONS, {}, token=member.token)
    filtered = await gql.execute(
        NOTIFICATIONS, {"filter": {"kind": "MILESTONE_REJECTED"}}, token=owner.token
    )
    foreign = await gql.execute(NOTIFICATIONS, {}, token=rival.token)

    # then the owner pages through all four, the member sees one, the rival none
    assert first["notifications"]["totalCount"] == 4
    assert first["notifications"]["pageInfo"]["hasNextPage"] is True
    assert len(first["notifications"]["edges"]) + len(rest["notifications"]["edges"]) == 4
    assert rest["notifications"]["pageInfo"]["hasNextPage"] is False
    member_row = {
        "kind": "MILESTONE_REJECTED",
        "channel": "EMAIL",
        "status": "SENT",
        "reason": None,
        "address": "mo@northwind.test",
        "subjectType": "milestone",
        "attempts": 1,
    }
    assert own["notifications"]["edges"] == [{"node": member_row}]
    assert filtered["notifications"]["edges"] == [{"node": member_row}]
    assert foreign["notifications"] == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }


async def test_preferences_default_change_and_refuse_turning_receipts_off(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    # given the defaults
    defaults = await gql.execute(PREFERENCES, token=owner.token)
    assert len(defaults["notificationPreferences"]) == len(NotificationKind)
    assert {
        "kind": "PAYMENT_RECEIVED",
        "channels": ["EMAIL"],
        "frequency": "IMMEDIATE",
        "canTurnOff": True,
    } in defaults["notificationPreferences"]

    # when the owner turns a receipt off
    refused = await gql.execute(
        UPDATE_PREFERENCES,
        {"preferences": [{"kind": "REFUND_PROCESSED", "channels": ["EMAIL"], "frequency": "OFF"}]},
        token=owner.token,
    )
    # then it is refused and nothing is stored
    assert refused["result"] == {
        "__typename": "ValidationError",
        "code": "NOT_ALLOWED",
        "field": "preferences[0].frequency",
        "message": "refund_processed is a receipt and cannot be turned off or delayed",
    }
    assert await NotificationPreference.all().count() == 0

    # when the owner turns approvals off
    done = await gql.execute(
        UPDATE_PREFERENCES,
        {
            "preferences": [
                {"kind": "MILESTONE_APPROVED", "channels": ["EMAIL"], "frequency": "OFF"}
            ]
        },
        token=owner.token,
    )
    # then the preference is stored, audited, and the next approval is suppressed
    assert {"kind": "MILESTONE_APPROVED", "channels": ["EMAIL"], "frequency": "OFF"} in done[
        "result"
    ]["preferences"]
    event = await ActivityEvent.get(verb="notification_preferences_updated")
    assert event.changes == {
        "milestone_approved": {"before": "immediate: email", "after": "off: email"}
    }
    async with transaction():
        await notify_owner(owner)
    await db.drain()
    assert await rows(K.MILESTONE_APPROVED) == [
        ("milestone_approved", "email", owner.user.email, "suppressed")
    ]


async def test_the_one_click_unsubscribe_link_turns_a_kind_off_without_a_login(
    db: Backend, http: httpx.AsyncClient, owner: Account, client: Client
) -> None:
    # given the link an email to the primary contact carries
    contact = await Contact.get(client_id=client.id, is_primary=True)
    # (its job is left in the outbox: only the link is under test)
    with relay_later():
        async with transaction():
            (row,) = await notification_service.notify(
                K.PAYMENT_REQUEST,
                agency_id=owner.agency_id,
                recipients=[notification_service.Recipient.of_contact(contact)],
                subject_type="milestone",
                subject_id=None,
                dedupe_key="test:request",
                data={},
            )
    path = urlsplit(
        notification_service.unsubscribe_url(notification_service.unsubscribe_token(row))
    )
    url = f"{path.path}?{path.query}"

    # when it is opened, then posted as RFC 8058 says a mail client does
    page = await http.get(url)
    posted = await http.post(
        url,
        content="List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    # then opening changed nothing, posting turned the kind off for that contact only
    assert page.status_code == 200
    assert "Stop emails about <strong>payment request</strong> to Priya" in page.text
    assert posted.status_code == 200
    preference = await NotificationPreference.get()
    assert (preference.recipient_key, preference.kind, preference.frequency) == (
        f"contact:{contact.id}",
        K.PAYMENT_REQUEST,
        Frequency.OFF,
    )
    forged = await http.post("/notifications/unsubscribe?token=forged")
    assert forged.status_code == 400


# --- the agency's time zone ---------------------------------------------------------------


async def test_update_agency_sets_an_iana_time_zone_and_refuses_others(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    # when the owner sets a real zone, then a made-up one
    done = await gql.execute(
        UPDATE_AGENCY, {"input": {"timezone": "Asia/Kolkata"}}, token=owner.token
    )
    refused = await gql.execute(
        UPDATE_AGENCY, {"input": {"timezone": "Mars/Olympus"}}, token=owner.token
    )
    # then the first is stored and audited, the second refused
    assert done["result"] == {"__typename": "Agency", "timezone": "Asia/Kolkata"}
    assert refused["result"] == {
        "__typename": "ValidationError",
        "code": "INVALID_TIMEZONE",
        "field": "timezone",
        "message": "Unknown time zone 'Mars/Olympus': use an IANA name",
    }
    assert (await Agency.get(id=owner.agency_id)).timezone == "Asia/Kolkata"
    event = await ActivityEvent.get(entity_type="agency", verb="updated")
    assert event.changes == {"timezone": {"before": "UTC", "after": "Asia/Kolkata"}}


async def test_two_concurrent_tellings_of_one_event_write_one_notification(
    db: Backend, smtp: Mailbox, owner: Account
) -> None:
    # given the same event told by two transactions at once
    async def tell() -> list[Notification]:
        async with transaction():
            return await notify_owner(owner, "test:race")

    # when both commit
    results = await asyncio.gather(tell(), tell())
    await db.drain()

    # then one row was written and one email sent
    assert sorted(len(written) for written in results) == [0, 1]
    assert await rows(K.MILESTONE_APPROVED) == [
        ("milestone_approved", "email", owner.user.email, "sent")
    ]
    assert len(smtp.envelopes) == 1


async def test_a_run_that_finds_the_notification_claimed_retries_later(
    db: Backend, smtp: Mailbox, owner: Account
) -> None:
    # given a notification another run claimed a moment ago (and may have died sending)
    with relay_later():
        async with transaction():
            (row,) = await notify_owner(owner)
    await Notification.filter(id=row.id).update(
        status=NotificationStatus.SENDING, claimed_at=clock.now(), attempts=1
    )

    # when a redelivered job runs: it stands back and asks for a retry
    with pytest.raises(notification_service.SendInProgressError):
        await notification_service.deliver(row.id)
    assert smtp.envelopes == []

    # when the claim is older than the lease, the next run takes it over and sends once
    await Notification.filter(id=row.id).update(
        claimed_at=clock.now() - notification_service.SEND_LEASE - timedelta(seconds=1)
    )
    assert await notification_service.deliver(row.id) is None
    await row.refresh_from_db()
    assert (row.status, row.attempts) == (NotificationStatus.SENT, 2)
    assert len(smtp.envelopes) == 1


CONTACT_PREFERENCES = """
mutation Update($contactId: ID, $preferences: [NotificationPreferenceInput!]!) {
  result: updateNotificationPreferences(contactId: $contactId, preferences: $preferences) {
    __typename
    ... on NotificationPreferences { preferences { kind frequency } }
    ... on Error { code message }
  }
}
"""


async def test_owners_set_a_contacts_preferences_and_nobody_else_does(
    db: Backend,
    gql: GraphQLClient,
    owner: Account,
    member: Account,
    rival: Account,
    client: Client,
) -> None:
    # given the client's primary contact
    contact = await Contact.get(client_id=client.id, is_primary=True)
    variables = {
        "contactId": str(contact.id),
        "preferences": [{"kind": "INVOICE_READY", "channels": ["EMAIL"], "frequency": "OFF"}],
    }

    # when a member, another agency's owner, then the owner change them
    by_member = await gql.execute(CONTACT_PREFERENCES, variables, token=member.token)
    by_rival = await gql.execute(CONTACT_PREFERENCES, variables, token=rival.token)
    assert await NotificationPreference.all().count() == 0
    by_owner = await gql.execute(CONTACT_PREFERENCES, variables, token=owner.token)

    # then only the owner's change is made, and the contact's next invoice_ready is suppressed
    assert by_member["result"] == {
        "__typename": "PermissionDeniedError",
        "code": "PERMISSION_DENIED",
        "message": "You are not allowed to do this",
    }
    assert by_rival["result"]["__typename"] == "NotFoundError"
    assert {"kind": "INVOICE_READY", "frequency": "OFF"} in by_owner["result"]["preferences"]
    async with transaction():
        (row,) = await notification_service.notify(
            K.INVOICE_READY,
            agency_id=owner.agency_id,
            recipients=[notification_service.Recipient.of_contact(contact)],
            subject_type="invoice",
            subject_id=None,
            dedupe_key="test:ready",
            data={},
        )
    assert (row.status, row.reason) == (
        NotificationStatus.SUPPRESSED,
        "Turned off in the recipient's preferences",
    )


@dataclass
class FakeTelegram:
    """A channel sender standing in for the Telegram one: one user has a linked chat."""

    linked: dict[str, str]
    sent: list[tuple[str, str]] = field(default_factory=list)
    channel: Channel = Channel.TELEGRAM

    async def send(self, message: channels.OutgoingMessage) -> channels.SendResult:
        chat = self.linked.get(str(message.notification.user_id))
        if chat is None:
            raise channels.RecipientUnreachableError("No Telegram chat is linked")
        self.sent.append((chat, message.rendered.telegram))
        return channels.SendResult(provider_message_id=f"{chat}:{len(self.sent)}")


async def test_a_registered_telegram_sender_gets_the_telegram_text(
    db: Backend, owner: Account, member: Account, own_telegram_channel: None
) -> None:
    # given a Telegram sender where the owner linked a chat and the member did not,
    # and both want approvals on Telegram only
    telegram = FakeTelegram(linked={str(owner.user.id): "4242"})
    channels.register(telegram)
    for account in (owner, member):
        async with transaction():
            await notification_service.update_preferences(
                account.actor,
                [
                    notification_service.PreferenceChange(
                        K.MILESTONE_APPROVED, (Channel.TELEGRAM,), Frequency.IMMEDIATE
                    )
                ],
            )
    # when an approval is told to both
    async with transaction():
        await notification_service.notify(
            K.MILESTONE_APPROVED,
            agency_id=owner.agency_id,
            recipients=[
                *await notification_service.user(owner.user.id),
                *await notification_service.user(member.user.id),
            ],
            subject_type="milestone",
            subject_id=None,
            dedupe_key="test:telegram",
            data={
                "milestone_title": "Design",
                "project_name": "Website",
                "amount": {"minor": 50_000, "currency": "INR"},
                "approved_by": "Lee Lead",
            },
        )
    await db.drain()

    # then the owner's chat got the short text, the member's row says why it was skipped
    assert telegram.sent == [("4242", "Approved: Design (Website) by Lee Lead.\n")]
    found = await Notification.filter(dedupe_key="test:telegram").order_by("status")
    assert [(n.channel, n.status, n.reason, n.provider_message_id) for n in found] == [
        (Channel.TELEGRAM, NotificationStatus.SENT, None, "4242:1"),
        (Channel.TELEGRAM, NotificationStatus.SKIPPED, "No Telegram chat is linked", None),
    ]


REQUEST_PAYMENT = """
mutation RequestPayment($milestoneIds: [ID!]!) {
  result: requestPayment(milestoneIds: $milestoneIds) {
    __typename
    ... on PaymentRequested { milestones { id status } }
    ... on Error { code message }
  }
}
"""


async def test_an_advance_is_requested_before_work_starts_with_its_pay_link(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    smtp: Mailbox,
    owner: Account,
    member: Account,
    lead: Account,
    project: Project,
) -> None:
    # given a pending advance of ₹300.00, not invoiced
    advance = await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency=project.currency,
        title="Advance",
        kind=MilestoneKind.ADVANCE,
        amount_minor=30_000,
    )
    variables = {"milestoneIds": [str(advance.id)]}

    # when a member asks, then the owner
    denied = await gql.execute(REQUEST_PAYMENT, variables, token=member.token)
    done = await gql.execute(REQUEST_PAYMENT, variables, token=owner.token)
    await db.drain()

    # then only the owner's request goes: the advance is invoiced and the contact and the
    # lead get one request each (no separate "invoice ready"), with a link that pays it
    assert denied["result"]["code"] == "PERMISSION_DENIED"
    assert done["result"] == {
        "__typename": "PaymentRequested",
        "milestones": [{"id": str(advance.id), "status": "PENDING"}],
    }
    assert await rows(K.PAYMENT_REQUEST, K.INVOICE_READY) == [
        ("payment_request", "email", "lee@acme.test", "sent"),
        ("payment_request", "email", CONTACT_EMAIL, "sent"),
    ]
    request = message_to(smtp, CONTACT_EMAIL, "Payment requested by Northwind Studio: ₹300.00")
    text = plain(request)
    assert "- Advance: ₹300.00" in text
    (link,) = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Pay here")]
    opened = await http.get(urlsplit(link).path)
    assert opened.status_code == 303
    assert request["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # when the owner asks again, then the request is sent again (an explicit ask)
    await gql.execute(REQUEST_PAYMENT, variables, token=owner.token)
    await db.drain()
    assert len(await rows(K.PAYMENT_REQUEST)) == 4


async def test_a_cancelled_milestone_or_a_client_nobody_to_ask_is_refused(
    db: Backend, gql: GraphQLClient, owner: Account, project: Project
) -> None:
    # given a cancelled milestone, and one of a client without contacts or lead users
    cancelled = await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency=project.currency,
        title="Dropped",
        amount_minor=10_000,
        status=MilestoneStatus.CANCELLED,
    )
    lonely_client = await create_client(owner, name="Lonely", currency="INR")
    lonely = await create_project(owner, lonely_client)
    silent = await Milestone.create(
        agency_id=lonely.agency_id,
        project_id=lonely.id,
        client_id=lonely.client_id,
        currency=lonely.currency,
        title="Advance",
        amount_minor=10_000,
    )

    # when the owner asks for each
    first = await gql.execute(
        REQUEST_PAYMENT, {"milestoneIds": [str(cancelled.id)]}, token=owner.token
    )
    second = await gql.execute(
        REQUEST_PAYMENT, {"milestoneIds": [str(silent.id)]}, token=owner.token
    )

    # then both are refused, and nothing was invoiced or written
    assert first["result"] == {
        "__typename": "ValidationError",
        "code": "NOT_PAYABLE",
        "message": "Milestone Dropped is cancelled: there is nothing to ask for",
    }
    assert second["result"] == {
        "__typename": "ValidationError",
        "code": "NO_RECIPIENT",
        "message": "The client has no primary contact with an email and no lead user to ask",
    }
    assert await Notification.all().count() == 0
    assert (await Milestone.get(id=silent.id)).invoice_id is None


def small_pdf(text: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=14)
    pdf.cell(text=text)
    return bytes(pdf.output())


async def test_an_uploaded_pdf_of_an_issued_invoice_goes_to_the_client(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    smtp: Mailbox,
    owner: Account,
    lead: Account,
    client: Client,
) -> None:
    # given an issued invoice (its lead was told once) and a PDF made elsewhere
    draft = await create_invoice(
        owner, client, lines=[{"description": "Build", "quantity": "1", "unit_price": "500.00"}]
    )
    await gql.execute(FINALIZE_INVOICE, {"id": str(draft.id)}, token=owner.token)
    await db.drain()
    body_pdf = small_pdf("Invoice 77 from our accounting system")
    created = await invoice_files.create_upload(
        owner.actor, draft.id, filename="acme-77.pdf", size_bytes=len(body_pdf)
    )

    # when the owner uploads it
    response = await http.put(created.upload.url, content=body_pdf)
    await db.drain()

    # then the primary contact and the lead get it, with the uploaded PDF attached
    assert response.status_code == 200
    assert await rows(K.INVOICE_READY) == [
        ("invoice_ready", "email", "lee@acme.test", "sent"),
        ("invoice_ready", "email", "lee@acme.test", "sent"),
        ("invoice_ready", "email", CONTACT_EMAIL, "sent"),
    ]
    email = message_to(smtp, CONTACT_EMAIL, "Invoice ")
    (attachment,) = list(email.iter_attachments())
    assert attachment.get_content() == body_pdf
    sent = len(smtp.envelopes)
    await run_every_job_again(db)
    assert len(smtp.envelopes) == sent


async def test_a_bulk_payment_is_one_summary_listing_every_milestone(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    smtp: Mailbox,
    owner: Account,
    lead: Account,
    project: Project,
) -> None:
    # given an approved advance of ₹1,000.00 and balance of ₹2,000.00, paid together
    advance = await approved_milestone(project)
    balance = await approved_milestone(project, kind=MilestoneKind.BALANCE, amount_minor=200_000)
    data = await gql.execute(
        PAY_MILESTONES, {"milestoneIds": [str(advance.id), str(balance.id)]}, token=lead.token
    )
    await db.drain()

    # when the payment succeeds
    await press(http, db, data["result"]["checkout"]["checkoutUrl"], "succeed")

    # then the owner gets one summary and the contact one general receipt, both listing both
    assert await rows(K.PAYMENT_RECEIVED, K.PAYMENT_CONFIRMATION) == [
        ("payment_confirmation", "email", "lee@acme.test", "sent"),
        ("payment_confirmation", "email", CONTACT_EMAIL, "sent"),
        ("payment_received", "email", owner.user.email, "sent"),
    ]
    for message in (
        message_to(smtp, owner.user.email, "Payment received from Acme: ₹3,000.00"),
        message_to(smtp, CONTACT_EMAIL, "Payment received: ₹3,000.00, thank you"),
    ):
        text = plain(message)
        assert "- Advance: ₹1,000.00\n- Design: ₹2,000.00\n" in text


# --- the members who own the work ---------------------------------------------------------

TELL_MEMBERS = """
mutation($id: ID!, $on: Boolean) {
  result: updateProject(id: $id, input: {notifyMilestoneMembers: $on}) {
    __typename ... on Project { notifyMilestoneMembers }
  }
}
"""


async def submitted_by(
    gql: GraphQLClient, submitter: Account, approver: Account, project: Project, title: str
) -> Milestone:
    """A milestone ``submitter`` started and submitted through the API, approved by ``approver``."""
    async with transaction():
        milestone = await Milestone.create(
            agency_id=project.agency_id,
            project_id=project.id,
            client_id=project.client_id,
            currency=project.currency,
            title=title,
            position=await Milestone.filter(project_id=project.id).count(),
            amount_minor=100_000,
        )
    for operation, account in ((START, submitter), (SUBMIT, submitter), (APPROVE, approver)):
        done = await gql.execute(operation, {"id": str(milestone.id)}, token=account.token)
        assert done["result"]["__typename"] == "Milestone", done
    return milestone


async def tell_members(gql: GraphQLClient, owner: Account, project: Project, on: bool) -> None:
    data = await gql.execute(TELL_MEMBERS, {"id": str(project.id), "on": on}, token=owner.token)
    assert data["result"] == {"__typename": "Project", "notifyMilestoneMembers": on}


async def told(kind: NotificationKind, payment_id: str) -> list[tuple[str | None, str]]:
    found = await Notification.filter(kind=kind, subject_id=payment_id).order_by("address")
    return [(n.address, n.status.value) for n in found]


async def test_the_member_who_submitted_hears_of_the_payment_only_when_the_project_says_so(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    smtp: Mailbox,
    owner: Account,
    admin: Account,
    member: Account,
    lead: Account,
    project: Project,
) -> None:
    # given two milestones the member submitted and the lead approved
    first = await submitted_by(gql, member, lead, project, "Design")
    second = await submitted_by(gql, member, lead, project, "Build")
    await db.drain()

    # when the first is paid while the project tells only the managers (the default)
    started = await checkout(gql, lead, first)
    await press(http, db, started["checkout"]["checkoutUrl"], "succeed")

    # then the owner and the admin hear of it, not the member
    assert await told(K.PAYMENT_RECEIVED, started["payment"]["id"]) == [
        ("ada@northwind.test", "sent"),
        (owner.user.email, "sent"),
    ]

    # when the owner turns the setting on and the second is paid
    await tell_members(gql, owner, project, True)
    started = await checkout(gql, lead, second)
    await press(http, db, started["checkout"]["checkoutUrl"], "succeed")

    # then the member hears of it too, by one email
    assert await told(K.PAYMENT_RECEIVED, started["payment"]["id"]) == [
        ("ada@northwind.test", "sent"),
        ("mo@northwind.test", "sent"),
        (owner.user.email, "sent"),
    ]
    mail = message_to(smtp, "mo@northwind.test", "Payment received from Acme: ₹1,000.00")
    assert "- Build: ₹1,000.00\n" in plain(mail)
    assert [m for m in mail_to(smtp) if m[0] == "mo@northwind.test" and "Payment" in m[1]] == [
        ("mo@northwind.test", "Payment received from Acme: ₹1,000.00")
    ]

    # when every job runs again
    sent = len(smtp.envelopes)
    await run_every_job_again(db)

    # then nobody is told twice
    assert len(smtp.envelopes) == sent


async def test_a_failed_payment_alerts_the_member_who_submitted_when_the_project_says_so(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    smtp: Mailbox,
    owner: Account,
    member: Account,
    lead: Account,
    project: Project,
) -> None:
    # given a project that tells its members, and a milestone the member submitted
    await tell_members(gql, owner, project, True)
    design = await submitted_by(gql, member, lead, project, "Design")
    started = await checkout(gql, lead, design)
    await db.drain()

    # when the payer's card is declined
    await press(http, db, started["checkout"]["checkoutUrl"], "fail")

    # then the owner and the member get the alert, and the client the retry link, once each
    assert await told(K.PAYMENT_FAILED_ALERT, started["payment"]["id"]) == [
        ("mo@northwind.test", "sent"),
        (owner.user.email, "sent"),
    ]
    alert = message_to(smtp, "mo@northwind.test", "Payment failed: Acme, ₹1,000.00")
    assert "Declined in the sandbox" in plain(alert)
    assert await told(K.PAYMENT_FAILED, started["payment"]["id"]) == [
        ("lee@acme.test", "sent"),
        (CONTACT_EMAIL, "sent"),
    ]
    sent = len(smtp.envelopes)
    await run_every_job_again(db)
    assert len(smtp.envelopes) == sent


async def test_a_bulk_payment_tells_each_member_one_summary_and_a_submitting_admin_once(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    smtp: Mailbox,
    owner: Account,
    admin: Account,
    member: Account,
    lead: Account,
    project: Project,
) -> None:
    # given a project that tells its members: two milestones by the member, one by the admin
    await tell_members(gql, owner, project, True)
    design = await submitted_by(gql, member, lead, project, "Design")
    build = await submitted_by(gql, admin, lead, project, "Build")
    launch = await submitted_by(gql, member, lead, project, "Launch")
    await db.drain()

    # when the lead pays all three at once
    data = await gql.execute(
        PAY_MILESTONES,
        {"milestoneIds": [str(design.id), str(build.id), str(launch.id)]},
        token=lead.token,
    )
    assert data["result"]["__typename"] == "PaymentCheckout", data
    await db.drain()
    await press(http, db, data["result"]["checkout"]["checkoutUrl"], "succeed")

    # then the owner, the admin (a manager who also submitted) and the member get one each
    assert await told(K.PAYMENT_RECEIVED, data["result"]["payment"]["id"]) == [
        ("ada@northwind.test", "sent"),
        ("mo@northwind.test", "sent"),
        (owner.user.email, "sent"),
    ]
    for address in ("ada@northwind.test", "mo@northwind.test", owner.user.email):
        summary = message_to(smtp, address, "Payment received from Acme: ₹3,000.00")
        assert "- Design: ₹1,000.00\n- Build: ₹1,000.00\n- Launch: ₹1,000.00\n" in plain(summary)
    assert len([m for m in mail_to(smtp) if m[1].startswith("Payment received from")]) == 3
