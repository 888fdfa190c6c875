"""The dashboard subscription over a real websocket: totals pushed when they change, at most
once a second per agency, computed once for all of its subscribers; owners and admins only."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

import pytest
from gql.transport.exceptions import TransportQueryError

from settle.models.agency import Role
from settle.models.client import Client
from settle.services import dashboard as dashboard_service
from settle.subscriptions import channels
from settle.subscriptions import dashboard as dashboard_subscription
from settle.subscriptions.bus import get_bus
from tests.conftest import Backend, wait_for
from tests.fixtures.factories import (
    Account,
    create_client,
    create_invoice,
    create_user,
    issue_invoice,
)
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.websocket import Subscription

DASHBOARD = """
subscription Dashboard {
  dashboard {
    outstanding { amount currency }
    openInvoices
    overdueInvoices
    paidToday { amount currency }
    paymentsInFlight
  }
}
"""

RECORD_OFFLINE_PAYMENT = """
mutation RecordOfflinePayment($invoiceId: ID!, $amount: String!) {
  recordOfflinePayment(
    invoiceId: $invoiceId, amount: $amount, method: CASH, reference: "Receipt 7"
  ) { __typename }
}
"""

PAY_INVOICE = """
mutation PayInvoice($invoiceId: ID!) {
  payInvoice(invoiceId: $invoiceId) { __typename }
}
"""


def watch(url: str, account: Account) -> Subscription:
    return Subscription(url, DASHBOARD, "dashboard", token=account.token)


def board(
    outstanding: list[tuple[str, str]],
    open_invoices: int,
    paid_today: list[tuple[str, str]] | None = None,
    *,
    overdue: int = 0,
    in_flight: int = 0,
) -> dict[str, Any]:
    return {
        "outstanding": [{"amount": a, "currency": c} for a, c in outstanding],
        "openInvoices": open_invoices,
        "overdueInvoices": overdue,
        "paidToday": [{"amount": a, "currency": c} for a, c in paid_today or []],
        "paymentsInFlight": in_flight,
    }


async def until_subscribed(account: Account, count: int) -> None:
    channel = channels.invoices(account.agency_id)

    async def subscribed() -> bool:
        return await get_bus().subscriber_count(channel) == count

    await wait_for(subscribed)


async def issued(account: Account, client: Client, price: str) -> str:
    line = {"description": "Design", "quantity": "1", "unit_price": price}
    invoice = await issue_invoice(account, await create_invoice(account, client, lines=[line]))
    return str(invoice.id)


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="INR")


async def test_the_dashboard_shows_the_agencys_totals_and_pushes_their_changes(
    db: Backend, ws_url: str, gql: GraphQLClient, owner: Account, client: Client
) -> None:
    # given an issued ₹1,000.00 invoice and a $50.00 one
    rupees = await issued(owner, client, "1000.00")
    dollars = await create_client(owner, name="Bolt", currency="USD")
    await issued(owner, dollars, "50.00")
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)

    async with watch(ws_url, owner) as dashboard:
        # then the owner is shown the totals at once
        assert await dashboard.next() == board([("1000.00", "INR"), ("50.00", "USD")], 2)

        # when ₹400.00 is received in cash
        data = await gql.execute(
            RECORD_OFFLINE_PAYMENT, {"invoiceId": rupees, "amount": "400.00"}, token=owner.token
        )
        assert data["recordOfflinePayment"]["__typename"] == "Payment"

        # then the dashboard shows less outstanding and the money paid today
        assert await dashboard.next() == board(
            [("600.00", "INR"), ("50.00", "USD")], 2, [("400.00", "INR")]
        )

        # when the client's lead starts paying the rest through the sandbox
        data = await gql.execute(PAY_INVOICE, {"invoiceId": rupees}, token=lead.token)
        assert data["payInvoice"]["__typename"] == "PaymentCheckout"

        # then the payment under way is counted
        assert await dashboard.next() == board(
            [("600.00", "INR"), ("50.00", "USD")], 2, [("400.00", "INR")], in_flight=1
        )


async def test_a_burst_of_changes_is_pushed_at_most_once_a_second_computed_once_for_all(
    db: Backend,
    ws_url: str,
    monkeypatch: pytest.MonkeyPatch,
    owner: Account,
    client: Client,
) -> None:
    # given two owners' sockets on the dashboard, and each computation timed
    computed: list[float] = []
    compute = dashboard_service.agency_dashboard

    async def timed(agency_id: uuid.UUID) -> dashboard_service.Dashboard:
        computed.append(time.monotonic())
        return await compute(agency_id)

    monkeypatch.setattr(dashboard_service, "agency_dashboard", timed)
    async with watch(ws_url, owner) as first, watch(ws_url, owner) as second:
        assert await first.next() == await second.next() == board([], 0)
        await until_subscribed(owner, 1)  # one bus subscription serves both sockets

        # when 50 events arrive in a burst, one of them a real change (an invoice issued)
        for _ in range(49):
            await get_bus().publish(
                channels.invoices(owner.agency_id), {"agencyId": str(owner.agency_id)}
            )
        await issued(owner, client, "10.00")

        # then both are pushed the change once
        changed = board([("10.00", "INR")], 1)
        assert await first.next() == changed
        assert await second.next() == changed
        # and no two computations were closer than the interval, one per round for both
        gaps = [b - a for a, b in itertools.pairwise(computed)]
        assert all(gap >= dashboard_subscription.PUSH_INTERVAL_SECONDS for gap in gaps), gaps
        assert 2 <= len(computed) <= 3

        # when another invoice is issued
        await issued(owner, client, "5.00")

        # then the next push is that one: the burst was pushed once
        assert await first.next() == board([("15.00", "INR")], 2)


async def test_only_owners_and_admins_watch_and_only_their_agency(
    db: Backend, ws_url: str, owner: Account, rival: Account, client: Client
) -> None:
    # given a member, a client lead, and the rival's owner watching the rival's dashboard
    member = await create_user(owner, role=Role.MEMBER)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    admin = await create_user(owner, role=Role.ADMIN)
    rival_client = await create_client(rival, name="Rivalco", currency="INR")

    # when the member and the lead subscribe
    refusals = []
    for account in (member, lead):
        async with watch(ws_url, account) as refused:
            with pytest.raises(TransportQueryError) as raised:
                await refused.next()
        refusals.append(raised.value.errors)

    # then both are refused
    denied = [
        {"message": "You are not allowed to do this", "extensions": {"code": "PERMISSION_DENIED"}}
    ]
    assert refusals == [denied, denied]

    async with watch(ws_url, admin) as ours, watch(ws_url, rival) as theirs:
        assert await ours.next() == await theirs.next() == board([], 0)
        await until_subscribed(owner, 1)
        await until_subscribed(rival, 1)

        # when the owner's agency issues an invoice, and then the rival's does
        await issued(owner, client, "10.00")
        assert await ours.next() == board([("10.00", "INR")], 1)
        await issued(rival, rival_client, "7.00")

        # then the rival's dashboard shows only its own
        assert await theirs.next() == board([("7.00", "INR")], 1)
