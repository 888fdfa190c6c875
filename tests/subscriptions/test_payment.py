"""paymentStatusChanged over a real websocket: a payment made on the sandbox, heard live."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from settle.core import clock
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.invoice import Invoice
from settle.models.milestone import Milestone, MilestoneStatus
from settle.models.payment import Payment
from settle.models.project import Project
from settle.subscriptions import channels
from settle.subscriptions.bus import MemoryBus, RedisBus, get_bus
from tests.conftest import Backend, wait_for
from tests.fixtures.factories import (
    Account,
    create_client,
    create_invoice,
    create_project,
    create_user,
    issue_invoice,
)
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.websocket import Subscription

PAYMENT_STATUS_CHANGED = """
subscription PaymentStatusChanged($projectId: ID, $invoiceId: ID, $paymentId: ID) {
  paymentStatusChanged(projectId: $projectId, invoiceId: $invoiceId, paymentId: $paymentId) {
    paymentId
    status
    provider
    amount { amount currency minorUnits }
    amountRefunded { amount }
    projectId
    invoiceIds
    milestoneIds
  }
}
"""

PAY_MILESTONES = """
mutation PayMilestones($milestoneIds: [ID!]!) {
  payMilestones(milestoneIds: $milestoneIds) {
    __typename
    ... on PaymentCheckout { payment { id } checkout { checkoutUrl } }
  }
}
"""

RECORD_OFFLINE_PAYMENT = """
mutation RecordOfflinePayment($invoiceId: ID!) {
  recordOfflinePayment(
    invoiceId: $invoiceId, amount: "100.00", method: CASH, reference: "Receipt 7"
  ) {
    __typename
    ... on Payment { id }
  }
}
"""


class Subscriber(Subscription):
    """One websocket connection with one paymentStatusChanged subscription running."""

    def __init__(self, url: str, *, token: str, **arguments: str) -> None:
        super().__init__(
            url, PAYMENT_STATUS_CHANGED, "paymentStatusChanged", token=token, variables=arguments
        )


async def until_subscribed(account: Account, count: int) -> None:
    """Wait until ``count`` subscriptions listen on the account's agency's payments channel."""
    channel = channels.payments(account.agency_id)

    async def subscribed() -> bool:
        return await get_bus().subscriber_count(channel) == count

    await wait_for(subscribed)


async def fence(
    account: Account,
    *,
    client_id: uuid.UUID,
    project_id: uuid.UUID | None = None,
    invoice_ids: Sequence[uuid.UUID] = (),
) -> dict[str, Any]:
    """Publish a marker change on the agency's payments channel; returns it as it is heard.

    A subscriber whose next event is the marker heard nothing else before it.
    """
    marker = uuid.uuid4()
    await get_bus().publish(
        channels.payments(account.agency_id),
        {
            "paymentId": str(marker),
            "agencyId": str(account.agency_id),
            "clientId": str(client_id),
            "projectId": str(project_id) if project_id else None,
            "invoiceIds": [str(i) for i in invoice_ids],
            "status": "pending",
            "provider": "sandbox",
            "amountMinor": 1,
            "amountRefundedMinor": 0,
            "currency": "INR",
            "changedAt": clock.now().isoformat(),
        },
    )
    return {
        "paymentId": str(marker),
        "status": "PENDING",
        "provider": "SANDBOX",
        "amount": {"amount": "0.01", "currency": "INR", "minorUnits": 1},
        "amountRefunded": {"amount": "0.00"},
        "projectId": str(project_id) if project_id else None,
        "invoiceIds": [str(i) for i in invoice_ids],
        "milestoneIds": [],
    }


def change(
    payment_id: str, status: str, project: Project, invoice: Invoice, milestone: Milestone
) -> dict[str, Any]:
    """A change of a ₹1,000.00 sandbox payment of one milestone, as a subscriber hears it."""
    return {
        "paymentId": payment_id,
        "status": status,
        "provider": "SANDBOX",
        "amount": {"amount": "1000.00", "currency": "INR", "minorUnits": 100_000},
        "amountRefunded": {"amount": "0.00"},
        "projectId": str(project.id),
        "invoiceIds": [str(invoice.id)],
        "milestoneIds": [str(milestone.id)],
    }


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="INR")


@pytest.fixture
async def project(owner: Account, client: Client) -> Project:
    return await create_project(owner, client)


async def approved_milestone(project: Project) -> Milestone:
    return await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency=project.currency,
        title="Design",
        amount_minor=100_000,
        status=MilestoneStatus.APPROVED,
    )


async def test_a_subscriber_hears_a_sandbox_payment_succeed(
    db: Backend,
    ws_url: str,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    client: Client,
    project: Project,
) -> None:
    # given the owner subscribed to the project's payments, and a client user of another
    # client subscribed to everything they may see
    assert isinstance(get_bus(), RedisBus if db.name == "postgres" else MemoryBus)
    milestone = await approved_milestone(project)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    other = await create_client(owner, name="Other")
    outsider = await create_user(owner, role=Role.CLIENT_LEAD, client=other)
    async with (
        Subscriber(ws_url, token=owner.token, projectId=str(project.id)) as watcher,
        Subscriber(ws_url, token=outsider.token) as stranger,
    ):
        await until_subscribed(owner, 2)

        # when the lead starts the payment and pays it on the sandbox's page
        started = await gql.execute(
            PAY_MILESTONES, {"milestoneIds": [str(milestone.id)]}, token=lead.token
        )
        checkout_url = started["payMilestones"]["checkout"]["checkoutUrl"]
        path = urlsplit(checkout_url).path
        assert (await http.post(f"{path}/succeed")).status_code == 200
        await db.drain()

        # then the subscriber hears it made, given its checkout, and succeed
        payment_id = started["payMilestones"]["payment"]["id"]
        invoice = await Invoice.get()
        assert [await watcher.next() for _ in range(3)] == [
            change(payment_id, "CREATED", project, invoice, milestone),
            change(payment_id, "PENDING", project, invoice, milestone),
            change(payment_id, "SUCCEEDED", project, invoice, milestone),
        ]
        marker = await fence(owner, client_id=client.id, project_id=project.id)
        assert await watcher.next() == marker
        # and the other client's user heard nothing of it
        marker = await fence(owner, client_id=other.id)
        assert await stranger.next() == marker


async def test_a_subscription_to_one_invoice_hears_only_that_invoice(
    db: Backend,
    ws_url: str,
    gql: GraphQLClient,
    owner: Account,
    client: Client,
) -> None:
    # given two issued invoices of one client, and a subscription to the second
    invoices = [
        await issue_invoice(owner, await create_invoice(owner, client)),
        await issue_invoice(owner, await create_invoice(owner, client)),
    ]
    watched = invoices[1]
    async with Subscriber(ws_url, token=owner.token, invoiceId=str(watched.id)) as subscriber:
        await until_subscribed(owner, 1)

        # when cash is recorded against each
        for invoice in invoices:
            data = await gql.execute(
                RECORD_OFFLINE_PAYMENT, {"invoiceId": str(invoice.id)}, token=owner.token
            )
            assert data["recordOfflinePayment"]["__typename"] == "Payment"

        # then only the watched invoice's payment is heard
        payment = await Payment.get(invoice_id=watched.id)
        assert await subscriber.next() == {
            "paymentId": str(payment.id),
            "status": "SUCCEEDED",
            "provider": "OFFLINE",
            "amount": {"amount": "100.00", "currency": "INR", "minorUnits": 10_000},
            "amountRefunded": {"amount": "0.00"},
            "projectId": None,
            "invoiceIds": [str(watched.id)],
            "milestoneIds": [],
        }
        marker = await fence(owner, client_id=client.id, invoice_ids=[watched.id])
        assert await subscriber.next() == marker
