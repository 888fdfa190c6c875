"""The reports through the API: figures, validation, permissions and statement counts."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from settle.core import clock
from settle.core.settings import get_settings
from settle.gateways.base import EventKind, GatewayEvent
from settle.models.agency import Agency, Role
from settle.models.client import Client
from settle.models.deliverable import Deliverable, DeliverableKind, DeliverableStatus
from settle.models.invoice import Invoice, InvoiceStatus
from settle.models.milestone import Milestone, MilestoneKind, MilestoneStatus
from settle.models.payment import (
    OfflineMethod,
    Payment,
    PaymentAllocation,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookEvent,
)
from settle.models.project import Project
from settle.services import payment as payment_service
from settle.services import webhook as webhook_service
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import GraphQLClient, count_queries

MONEY = "{ amount }"
FIGURES = f"""{{
  collected {MONEY} refunded {MONEY} net {MONEY} payments failed attempted
  successRate averageDaysToPay
}}"""
ANALYTICS = f"""
query Analytics($from: Date!, $to: Date!, $currency: String!, $groupBy: ReportGroupBy!) {{
  paymentAnalytics(from: $from, to: $to, currency: $currency, groupBy: $groupBy) {{
    currency timezone groupBy from to
    periods {{ start end figures {FIGURES} }}
    totals {FIGURES}
    byProvider {{ provider figures {{ collected {MONEY} payments failed }} }}
    byMethod {{ method figures {{ collected {MONEY} payments }} }}
    byKind {{ kind collected {MONEY} payments }}
  }}
}}"""
BUCKETS = f"invoices current {MONEY} days1To30 {MONEY} days31To60 {MONEY} days61To90 {MONEY} \
over90 {MONEY} total {MONEY}"
AGING = f"""
query Aging($currency: String!, $asOf: Date) {{
  receivablesAging(currency: $currency, asOf: $asOf) {{
    currency asOf
    clients {{ clientId clientName {BUCKETS} }}
    totals {{ clientId {BUCKETS} }}
  }}
}}"""
WEBHOOK_EVENTS = """
query Events($first: Int!, $after: String, $filter: WebhookEventFilter) {
  webhookEvents(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { id provider eventId status outcome paymentId attempts lastError } }
  }
}"""
DELIVERABLE_ACCESS = """
query Access($projectId: ID!) {
  deliverableAccess(projectId: $projectId) {
    deliverableId title kind clientCanOpen reason until
  }
}"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def set_timezone(account: Account, name: str) -> None:
    await Agency.filter(id=account.agency_id).update(timezone=name)


async def issued(
    account: Account,
    client: Client,
    *,
    currency: str = "USD",
    issue: date = date(2026, 3, 1),
    due: date | None = None,
    total: int = 100_00,
    paid: int = 0,
    refunded: int = 0,
    credited: int = 0,
    status: InvoiceStatus = InvoiceStatus.SENT,
) -> Invoice:
    return await Invoice.create(
        agency_id=account.agency_id,
        client_id=client.id,
        currency=currency,
        status=status,
        number=f"INV-{uuid.uuid4().hex[:8]}",
        issue_date=issue,
        due_date=due,
        subtotal_minor=total,
        total_minor=total,
        amount_paid_minor=paid,
        amount_refunded_minor=refunded,
        amount_credited_minor=credited,
    )


async def paid(
    account: Account,
    client: Client,
    invoice: Invoice,
    amount: int,
    *,
    provider: PaymentProvider,
    succeeded_at: datetime | None = None,
    failed_at: datetime | None = None,
    method: OfflineMethod | None = None,
    milestone: Milestone | None = None,
    currency: str = "USD",
) -> Payment:
    """A payment row as the payment service leaves it, with what it pays."""
    status = PaymentStatus.SUCCEEDED if succeeded_at else PaymentStatus.FAILED
    payment = await Payment.create(
        agency_id=account.agency_id,
        client_id=client.id,
        invoice_id=invoice.id,
        provider=provider,
        status=status,
        amount_minor=amount,
        currency=currency,
        method=method,
        succeeded_at=succeeded_at,
        failed_at=failed_at,
    )
    await PaymentAllocation.create(
        agency_id=account.agency_id,
        payment_id=payment.id,
        invoice_id=invoice.id,
        milestone_id=milestone.id if milestone else None,
        amount_minor=amount,
    )
    return payment


async def project_with(
    account: Account, client: Client, *kinds: MilestoneKind
) -> tuple[Project, list[Milestone]]:
    project = await Project.create(
        agency_id=account.agency_id, client_id=client.id, name="Site", currency="USD"
    )
    milestones = [
        await Milestone.create(
            agency_id=account.agency_id,
            project_id=project.id,
            client_id=client.id,
            title=kind.value,
            kind=kind,
            amount_minor=100_00,
            currency="USD",
            position=index,
        )
        for index, kind in enumerate(kinds)
    ]
    return project, milestones


async def deliverable(project: Project, kind: DeliverableKind, title: str) -> Deliverable:
    row = Deliverable(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        title=title,
        kind=kind,
        status=DeliverableStatus.READY,
        filename="file.zip",
        content_type="application/zip",
        size_bytes=3,
    )
    row.storage_key = f"deliverables/{project.agency_id}/{project.id}/{row.id}"
    await row.save()
    return row


async def errors_of(gql: GraphQLClient, query: str, variables: dict[str, Any], token: str) -> Any:
    body = await gql.execute(query, variables, token=token, expect_errors=True)
    assert body["data"] is None, body
    return [
        {"code": e["extensions"]["code"], "field": e["extensions"].get("field")}
        for e in body["errors"]
    ]


# --- payment analytics ------------------------------------------------------------------


async def seed_analytics(account: Account) -> dict[str, Any]:
    """In Asia/Kolkata (UTC+5:30): a card payment at 00:30 local on 1 April (still 31 March
    in UTC), cash in March, a failed attempt in March, rupees (another currency), and a
    refund of the card payment in April."""
    await set_timezone(account, "Asia/Kolkata")
    client = await create_client(account, name="Acme")
    _, (advance,) = await project_with(account, client, MilestoneKind.ADVANCE)
    first = await issued(account, client, issue=date(2026, 3, 22))
    second = await issued(account, client, issue=date(2026, 3, 1))
    card = await paid(
        account,
        client,
        first,
        100_00,
        provider=PaymentProvider.STRIPE,
        succeeded_at=at("2026-03-31T19:00:00"),
        milestone=advance,
    )
    await paid(
        account,
        client,
        second,
        50_00,
        provider=PaymentProvider.OFFLINE,
        method=OfflineMethod.CASH,
        succeeded_at=at("2026-03-10T10:00:00"),
    )
    await paid(
        account,
        client,
        second,
        30_00,
        provider=PaymentProvider.RAZORPAY,
        failed_at=at("2026-03-15T08:00:00"),
    )
    rupees = await issued(account, client, currency="INR", issue=date(2026, 3, 1))
    await paid(
        account,
        client,
        rupees,
        999_00,
        provider=PaymentProvider.RAZORPAY,
        succeeded_at=at("2026-03-12T08:00:00"),
        currency="INR",
    )
    await Refund.create(
        agency_id=account.agency_id,
        payment_id=card.id,
        amount_minor=20_00,
        currency="USD",
        reason="Goodwill",
        status=RefundStatus.SUCCEEDED,
        settled_at=at("2026-04-02T09:00:00"),
    )
    return {"client": client}


def figures(
    collected: str,
    refunded: str,
    net: str,
    payments: int,
    failed: int,
    rate: str | None,
    days: str | None,
) -> dict[str, Any]:
    return {
        "collected": {"amount": collected},
        "refunded": {"amount": refunded},
        "net": {"amount": net},
        "payments": payments,
        "failed": failed,
        "attempted": payments + failed,
        "successRate": rate,
        "averageDaysToPay": days,
    }


async def test_payment_analytics_by_month_in_the_agencys_zone(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    # given payments in March and April of an agency in Asia/Kolkata
    await seed_analytics(owner)
    # when its owner asks for March and April in dollars, by month
    data = await gql.execute(
        ANALYTICS,
        {"from": "2026-03-01", "to": "2026-04-30", "currency": "usd", "groupBy": "MONTH"},
        token=owner.token,
    )
    # then the card payment of 31 March 19:00 UTC is April's (00:30 on 1 April in Kolkata),
    # rupees are left out, and the ratios are rounded Decimals
    assert data["paymentAnalytics"] == {
        "currency": "USD",
        "timezone": "Asia/Kolkata",
        "groupBy": "MONTH",
        "from": "2026-03-01",
        "to": "2026-04-30",
        "periods": [
            {
                "start": "2026-03-01",
                "end": "2026-03-31",
                "figures": figures("50.00", "0.00", "50.00", 1, 1, "0.5000", "9.00"),
            },
            {
                "start": "2026-04-01",
                "end": "2026-04-30",
                "figures": figures("100.00", "20.00", "80.00", 1, 0, "1.0000", "10.00"),
            },
        ],
        "totals": figures("150.00", "20.00", "130.00", 2, 1, "0.6667", "9.50"),
        "byProvider": [
            {
                "provider": "OFFLINE",
                "figures": {"collected": {"amount": "50.00"}, "payments": 1, "failed": 0},
            },
            {
                "provider": "RAZORPAY",
                "figures": {"collected": {"amount": "0.00"}, "payments": 0, "failed": 1},
            },
            {
                "provider": "STRIPE",
                "figures": {"collected": {"amount": "100.00"}, "payments": 1, "failed": 0},
            },
        ],
        "byMethod": [
            {"method": "CASH", "figures": {"collected": {"amount": "50.00"}, "payments": 1}},
            {"method": "GATEWAY", "figures": {"collected": {"amount": "100.00"}, "payments": 1}},
        ],
        "byKind": [
            {"kind": "ADVANCE", "collected": {"amount": "100.00"}, "payments": 1},
            {"kind": "INVOICE", "collected": {"amount": "50.00"}, "payments": 1},
        ],
    }


async def test_payment_analytics_by_week_and_day_clip_periods_to_the_range(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    # given the same payments
    await seed_analytics(owner)
    # when asked by ISO week from a Wednesday to a Thursday
    data = await gql.execute(
        ANALYTICS,
        {"from": "2026-03-25", "to": "2026-04-02", "currency": "USD", "groupBy": "WEEK"},
        token=owner.token,
    )
    # then the weeks start on Monday, clipped to the range, and the card payment and its
    # refund fall in the week of Monday 30 March
    periods = data["paymentAnalytics"]["periods"]
    assert [(p["start"], p["end"]) for p in periods] == [
        ("2026-03-25", "2026-03-29"),
        ("2026-03-30", "2026-04-02"),
    ]
    assert periods[1]["figures"] == figures("100.00", "20.00", "80.00", 1, 0, "1.0000", "10.00")
    assert periods[0]["figures"] == figures("0.00", "0.00", "0.00", 0, 0, None, None)
    # and by day, 1 April (local) holds the card payment
    data = await gql.execute(
        ANALYTICS,
        {"from": "2026-03-31", "to": "2026-04-01", "currency": "USD", "groupBy": "DAY"},
        token=owner.token,
    )
    days = {p["start"]: p["figures"]["collected"] for p in data["paymentAnalytics"]["periods"]}
    assert days == {"2026-03-31": {"amount": "0.00"}, "2026-04-01": {"amount": "100.00"}}


async def test_payment_analytics_refuses_bad_arguments(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    cases = [
        ({"from": "2026-04-02", "to": "2026-04-01", "currency": "USD", "groupBy": "DAY"}, "to"),
        ({"from": "2024-01-01", "to": "2026-01-01", "currency": "USD", "groupBy": "DAY"}, "to"),
        ({"from": "1990-01-01", "to": "2026-01-01", "currency": "USD", "groupBy": "WEEK"}, "to"),
    ]
    for variables, field in cases:
        assert await errors_of(gql, ANALYTICS, variables, owner.token) == [
            {"code": "OUT_OF_RANGE", "field": field}
        ]
    # two years of days is the longest daily report; fifty years of months is fine
    ok = {"from": "2024-01-01", "to": "2025-12-31", "currency": "USD", "groupBy": "DAY"}
    assert (
        len((await gql.execute(ANALYTICS, ok, token=owner.token))["paymentAnalytics"]["periods"])
        == 731
    )
    unknown = {"from": "2026-01-01", "to": "2026-01-31", "currency": "XYZ", "groupBy": "DAY"}
    assert await errors_of(gql, ANALYTICS, unknown, owner.token) == [
        {"code": "INVALID_CURRENCY", "field": "currency"}
    ]
    assert await errors_of(gql, AGING, {"currency": "dollars"}, owner.token) == [
        {"code": "INVALID_CURRENCY", "field": "currency"}
    ]


# --- receivables aging ------------------------------------------------------------------


async def test_receivables_aging_buckets_at_their_boundaries(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    # given invoices of two clients due 5 days after asOf up to 91 days before it
    as_of = date(2026, 6, 30)
    acme = await create_client(owner, name="Acme")
    bolt = await create_client(owner, name="Bolt")
    for late in (-5, 0, 1, 30, 31, 60, 61, 90, 91):
        await issued(owner, acme, due=as_of - timedelta(days=late), total=(late + 10) * 100)
    # and Bolt's: partly paid (600.00 due, 45 days late), credited (700.00 due, 10 days),
    # paid then partly refunded (250.00 due again, 100 days), without a due date (current)
    await issued(
        owner,
        bolt,
        due=as_of - timedelta(days=45),
        total=1000_00,
        paid=400_00,
        status=InvoiceStatus.PARTIALLY_PAID,
    )
    await issued(owner, bolt, due=as_of - timedelta(days=10), total=1000_00, credited=300_00)
    await issued(
        owner,
        bolt,
        due=as_of - timedelta(days=100),
        total=1000_00,
        paid=1000_00,
        refunded=250_00,
        status=InvoiceStatus.OVERDUE,
    )
    await issued(owner, bolt, due=None, total=5_00)
    # and what is not owed, or not in dollars, or not issued by asOf
    late = as_of - timedelta(days=200)
    await issued(owner, bolt, due=late, total=10_00, paid=10_00, status=InvoiceStatus.PAID)
    await issued(owner, bolt, due=late, total=10_00, status=InvoiceStatus.VOID)
    await issued(owner, bolt, due=late, total=10_00, status=InvoiceStatus.DRAFT)
    await issued(owner, bolt, due=late, total=10_00, currency="INR")
    await issued(owner, bolt, issue=date(2026, 7, 1), due=late, total=10_00)

    # when the aging is asked for asOf
    data = await gql.execute(AGING, {"currency": "USD", "asOf": "2026-06-30"}, token=owner.token)

    # then each invoice lands in its bucket: 0 days is current, 1 and 30 are 1-30, ...
    def row(invoices: int, *amounts: str) -> dict[str, Any]:
        keys = ("current", "days1To30", "days31To60", "days61To90", "over90", "total")
        return {
            "invoices": invoices,
            **{k: {"amount": a} for k, a in zip(keys, amounts, strict=True)},
        }

    report = data["receivablesAging"]
    assert report["currency"] == "USD"
    assert report["asOf"] == "2026-06-30"
    assert report["clients"] == [
        {
            "clientId": str(acme.id),
            "clientName": "Acme",
            # current: 5 + 10; 1-30: 11 + 40; 31-60: 41 + 70; 61-90: 71 + 100; over 90: 101
            **row(9, "15.00", "51.00", "111.00", "171.00", "101.00", "449.00"),
        },
        {
            "clientId": str(bolt.id),
            "clientName": "Bolt",
            **row(4, "5.00", "700.00", "600.00", "0.00", "250.00", "1555.00"),
        },
    ]
    assert report["totals"] == {
        "clientId": None,
        **row(13, "20.00", "751.00", "711.00", "171.00", "351.00", "2004.00"),
    }


async def test_receivables_aging_defaults_to_today_in_the_agencys_zone(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    # given an agency in Asia/Kolkata at 20:00 UTC on 30 June (1 July there)
    await set_timezone(owner, "Asia/Kolkata")
    client = await create_client(owner, name="Acme")
    await issued(owner, client, due=date(2026, 6, 30), total=10_00)
    clock.set_clock(lambda: at("2026-06-30T20:00:00"))
    try:
        data = await gql.execute(AGING, {"currency": "USD"}, token=owner.token)
    finally:
        clock.set_clock(None)
    # then the invoice due on 30 June is a day late
    report = data["receivablesAging"]
    assert report["asOf"] == "2026-07-01"
    assert report["totals"]["days1To30"] == {"amount": "10.00"}


# --- webhook events ------------------------------------------------------------------


def stored(event: GatewayEvent) -> dict[str, Any]:
    return {"raw": {}, "event": payment_service.as_dict(event)}


async def event_row(
    event_id: str,
    *,
    provider: PaymentProvider = PaymentProvider.SANDBOX,
    agency_id: uuid.UUID | None,
    outcome: str | None,
    received_at: datetime,
    naming: Payment | None = None,
    kind: EventKind = EventKind.PAYMENT_SUCCEEDED,
) -> WebhookEvent:
    event = GatewayEvent(
        provider=provider,
        event_id=event_id,
        event_type=kind.value,
        kind=kind,
        payload={},
        payment_id=str(naming.id) if naming else str(uuid.uuid4()),
    )
    return await WebhookEvent.create(
        provider=provider,
        event_id=event_id,
        event_type=kind.value,
        payload=stored(event),
        agency_id=agency_id,
        payment_id=naming.id if naming and agency_id else None,
        received_at=received_at,
        processed_at=received_at if outcome else None,
        outcome=outcome,
        attempts=1 if outcome else 0,
    )


async def test_webhook_events_are_listed_filtered_and_paged(
    db: Backend, gql: GraphQLClient, owner: Account, rival: Account, http: httpx.AsyncClient
) -> None:
    # given the agency's events of every outcome, a rival's, and one naming no payment
    client = await create_client(owner, name="Acme")
    invoice = await issued(owner, client)
    payment = await paid(
        owner,
        client,
        invoice,
        10_00,
        provider=PaymentProvider.SANDBOX,
        succeeded_at=at("2026-03-01T10:00:00"),
    )
    base = at("2026-03-01T10:00:00")
    own = [
        await event_row(
            f"evt_{outcome}",
            agency_id=owner.agency_id,
            outcome=outcome,
            received_at=base + timedelta(minutes=index),
            naming=payment,
        )
        for index, outcome in enumerate(["applied", "ignored", "flagged", "duplicate"])
    ]
    rival_client = await create_client(rival, name="Rivalco")
    rival_invoice = await issued(rival, rival_client)
    rival_payment = await paid(
        rival,
        rival_client,
        rival_invoice,
        10_00,
        provider=PaymentProvider.SANDBOX,
        succeeded_at=base,
    )
    await event_row(
        "evt_rival",
        agency_id=rival.agency_id,
        outcome="applied",
        received_at=base,
        naming=rival_payment,
    )
    # and two failed attempts: one names the agency's payment, one names nothing known
    failing = await event_row(
        "evt_failing",
        agency_id=None,
        outcome=None,
        received_at=base + timedelta(hours=1),
        naming=payment,
    )
    unmatched = await event_row(
        "evt_unmatched", agency_id=None, outcome=None, received_at=base + timedelta(hours=2)
    )
    waiting = await event_row(
        "evt_waiting", agency_id=None, outcome=None, received_at=base + timedelta(hours=3)
    )
    await webhook_service.record_failure(failing.id, "RuntimeError: boom")
    await webhook_service.record_failure(unmatched.id, "PaymentNotFoundYetError: none")
    # and an event of a kind Settle ignores, naming the agency's payment, is processed
    other = await event_row(
        "evt_other",
        agency_id=None,
        outcome=None,
        received_at=base + timedelta(hours=4),
        naming=payment,
        kind=EventKind.OTHER,
    )
    assert await webhook_service.process(other.id) == "ignored"

    # when the owner lists them, two a page
    pages, after = [], None
    while True:
        data = await gql.execute(WEBHOOK_EVENTS, {"first": 2, "after": after}, token=owner.token)
        found = data["webhookEvents"]
        pages.append([(e["node"]["eventId"], e["node"]["status"]) for e in found["edges"]])
        assert found["totalCount"] == 6
        if not found["pageInfo"]["hasNextPage"]:
            break
        after = found["pageInfo"]["endCursor"]

    # then they are the agency's, newest first: the failure tied to its payment is there,
    # the event naming nothing known is not, nor the rival's
    assert pages == [
        [("evt_other", "IGNORED"), ("evt_failing", "FAILED")],
        [("evt_duplicate", "APPLIED"), ("evt_flagged", "FLAGGED")],
        [("evt_ignored", "IGNORED"), ("evt_applied", "APPLIED")],
    ]
    failed = await WebhookEvent.get(id=failing.id)
    assert (failed.agency_id, failed.last_error) == (owner.agency_id, "RuntimeError: boom")

    # and each filter narrows the list
    async def ids(flt: dict[str, Any]) -> list[str]:
        data = await gql.execute(WEBHOOK_EVENTS, {"first": 100, "filter": flt}, token=owner.token)
        return [e["node"]["eventId"] for e in data["webhookEvents"]["edges"]]

    assert await ids({"status": "FAILED"}) == ["evt_failing"]
    assert await ids({"status": "APPLIED"}) == ["evt_duplicate", "evt_applied"]
    assert await ids({"status": "FLAGGED"}) == ["evt_flagged"]
    assert await ids({"status": "UNPROCESSED"}) == []
    assert await ids({"provider": "STRIPE"}) == []
    assert await ids({"from": "2026-03-01T10:01:00Z", "to": "2026-03-01T10:02:00Z"}) == [
        "evt_flagged",
        "evt_ignored",
    ]
    assert own[0].agency_id == owner.agency_id
    # and the events no agency can be matched to are counted in the operations metrics
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = [line for line in response.text.splitlines() if not line.startswith("#")]
    assert lines == [
        'settle_webhook_events_unmatched{provider="sandbox",status="failed"} 1',
        'settle_webhook_events_unmatched{provider="sandbox",status="unprocessed"} 1',
    ]
    assert waiting.agency_id is None
    # and a bad page size or cursor is a typed error
    assert await errors_of(gql, WEBHOOK_EVENTS, {"first": 0}, owner.token) == [
        {"code": "OUT_OF_RANGE", "field": "first"}
    ]
    assert await errors_of(gql, WEBHOOK_EVENTS, {"first": 5, "after": "nope"}, owner.token) == [
        {"code": "INVALID_CURSOR", "field": "after"}
    ]


async def test_metrics_ask_for_the_token_when_one_is_set(db: Backend) -> None:
    from settle.app import create_app

    settings = db.settings.model_copy(update={"metrics_token": SecretStr("s3cret-metrics")})
    app = create_app(settings, manage_runtime=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as http:
        assert (await http.get("/metrics")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await http.get("/metrics", headers=wrong)).status_code == 401
        right = {"Authorization": "Bearer s3cret-metrics"}
        response = await http.get("/metrics", headers=right)
    assert response.status_code == 200
    assert "settle_webhook_events_unmatched" in response.text


# --- deliverable access --------------------------------------------------------------


async def test_deliverable_access_says_why_and_until_when(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    # given a project with an advance and a balance, and a beta and a final file
    client = await create_client(owner, name="Acme")
    project, (advance, balance) = await project_with(
        owner, client, MilestoneKind.ADVANCE, MilestoneKind.BALANCE
    )
    beta = await deliverable(project, DeliverableKind.BETA, "Beta")
    final = await deliverable(project, DeliverableKind.FINAL, "Final")
    gone = await deliverable(project, DeliverableKind.BETA, "Deleted")
    await Deliverable.filter(id=gone.id).update(deleted_at=clock.now())

    async def access() -> list[tuple[str, bool, str | None, str | None]]:
        data = await gql.execute(
            DELIVERABLE_ACCESS, {"projectId": str(project.id)}, token=owner.token
        )
        return [
            (row["title"], row["clientCanOpen"], row["reason"], row["until"])
            for row in data["deliverableAccess"]
        ]

    # then with nothing paid both wait for the advance
    assert await access() == [
        ("Beta", False, "ADVANCE_UNPAID", None),
        ("Final", False, "ADVANCE_UNPAID", None),
    ]
    # and with the advance paid the beta opens, the final waits for the balance
    paid_at = clock.now() - timedelta(days=10)
    await Milestone.filter(id=advance.id).update(status=MilestoneStatus.PAID, paid_at=paid_at)
    assert await access() == [
        ("Beta", True, None, None),
        ("Final", False, "BALANCE_UNPAID", None),
    ]
    # and with everything paid both open until the access period ends
    await Milestone.filter(id=balance.id).update(status=MilestoneStatus.PAID, paid_at=paid_at)
    until = (paid_at + timedelta(days=get_settings().deliverable_access_days)).isoformat()
    assert await access() == [("Beta", True, None, until), ("Final", True, None, until)]
    # and once that period is over, both say so, with when it ended
    long_ago = clock.now() - timedelta(days=400)
    await Milestone.filter(project_id=project.id).update(paid_at=long_ago)
    ended = (long_ago + timedelta(days=get_settings().deliverable_access_days)).isoformat()
    assert await access() == [
        ("Beta", False, "ACCESS_EXPIRED", ended),
        ("Final", False, "ACCESS_EXPIRED", ended),
    ]
    assert {beta.id, final.id} == {
        d.id for d in await Deliverable.filter(project_id=project.id, deleted_at__isnull=True)
    }


# --- permissions and statement counts -------------------------------------------------


REPORT_QUERIES = {
    "paymentAnalytics": (
        ANALYTICS,
        lambda ids: {
            "from": "2026-01-01",
            "to": "2026-12-31",
            "currency": "USD",
            "groupBy": "WEEK",
        },
    ),
    "receivablesAging": (AGING, lambda ids: {"currency": "USD", "asOf": "2026-06-30"}),
    "webhookEvents": (WEBHOOK_EVENTS, lambda ids: {"first": 100}),
    "deliverableAccess": (DELIVERABLE_ACCESS, lambda ids: {"projectId": ids["project"]}),
}


async def test_members_and_client_users_are_refused(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    client = await create_client(owner, name="Acme")
    project, _ = await project_with(owner, client, MilestoneKind.ADVANCE)
    ids = {"project": str(project.id)}
    admin = await create_user(owner, role=Role.ADMIN)
    refused = [
        await create_user(owner, role=Role.MEMBER),
        await create_user(owner, role=Role.CLIENT_LEAD, client=client),
    ]
    for name, (query, variables) in REPORT_QUERIES.items():
        for account in refused:
            assert await errors_of(gql, query, variables(ids), account.token) == [
                {"code": "PERMISSION_DENIED", "field": None}
            ], (name, account.user.role)
        assert name in await gql.execute(query, variables(ids), token=admin.token)


async def seed_round(owner: Account, client: Client, project: Project, count: int) -> None:
    """``count`` more of every row the reports read."""
    for index in range(count):
        invoice = await issued(owner, client, due=date(2026, 5, 1), issue=date(2026, 3, 1))
        payment = await paid(
            owner,
            client,
            invoice,
            10_00,
            provider=PaymentProvider.STRIPE,
            succeeded_at=at("2026-03-02T10:00:00") + timedelta(days=index),
        )
        await Refund.create(
            agency_id=owner.agency_id,
            payment_id=payment.id,
            amount_minor=1_00,
            currency="USD",
            reason="Part",
            status=RefundStatus.SUCCEEDED,
            settled_at=at("2026-04-02T10:00:00"),
        )
        await event_row(
            f"evt_{uuid.uuid4().hex}",
            agency_id=owner.agency_id,
            outcome="applied",
            received_at=at("2026-03-02T10:00:00"),
            naming=payment,
        )
        await deliverable(project, DeliverableKind.BETA, f"Beta {index}")


# Statements per report, whatever the number of rows: one authenticates the caller, then
# the analytics and the aging read the agency's zone and run their one statement; the
# events count and read a page; the access reads the project, its files and its milestones.
STATEMENTS = {
    "paymentAnalytics": 3,
    "receivablesAging": 3,
    "webhookEvents": 3,
    "deliverableAccess": 4,
}


async def test_each_report_takes_a_fixed_number_of_statements(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    client = await create_client(owner, name="Acme")
    project, _ = await project_with(owner, client, MilestoneKind.ADVANCE, MilestoneKind.BALANCE)
    ids = {"project": str(project.id)}

    async def counts() -> dict[str, int]:
        found = {}
        for name, (query, variables) in REPORT_QUERIES.items():
            with count_queries() as counted:
                await gql.execute(query, variables(ids), token=owner.token)
            found[name] = counted.count
        return found

    # given a few rows of everything, then many more
    await seed_round(owner, client, project, 2)
    few = await counts()
    await seed_round(owner, client, project, 25)
    many = await counts()
    # then each report ran the same, pinned number of statements
    assert few == many == STATEMENTS


async def test_migration_0016_ties_stored_events_to_the_agency_of_their_payment(
    db: Backend, owner: Account
) -> None:
    import importlib

    from tortoise import Tortoise

    # given events stored before processing could tie them: one naming the agency's
    # payment by Settle's id, one by the gateway's order id, one naming nothing known
    client = await create_client(owner, name="Acme")
    invoice = await issued(owner, client)
    payment = await paid(
        owner, client, invoice, 10_00, provider=PaymentProvider.SANDBOX,
        succeeded_at=at("2026-03-01T10:00:00"),
    )  # fmt: skip
    await Payment.filter(id=payment.id).update(provider_order_id="sbx_order_1")
    by_id = await event_row(
        "evt_by_id", agency_id=None, outcome=None, received_at=at("2026-03-01T10:00:00"),
        naming=payment,
    )  # fmt: skip
    by_order = await WebhookEvent.create(
        provider=PaymentProvider.SANDBOX,
        event_id="evt_by_order",
        event_type="payment.succeeded",
        payload=stored(
            GatewayEvent(
                provider=PaymentProvider.SANDBOX,
                event_id="evt_by_order",
                event_type="payment.succeeded",
                kind=EventKind.PAYMENT_SUCCEEDED,
                payload={},
                provider_order_id="sbx_order_1",
            )
        ),
        received_at=at("2026-03-01T10:00:00"),
    )
    nothing = await event_row(
        "evt_nothing", agency_id=None, outcome=None, received_at=at("2026-03-01T10:00:00")
    )

    # when the migration's data step runs
    class Editor:
        client = Tortoise.get_connection("default")

    migration = importlib.import_module("settle.migrations.0016_reports")
    await migration.attribute_webhook_events(None, Editor())

    # then the events naming the payment belong to its agency, and the other to none
    agencies = {
        row.event_id: row.agency_id
        for row in await WebhookEvent.filter(id__in=[by_id.id, by_order.id, nothing.id])
    }
    assert agencies == {
        "evt_by_id": owner.agency_id,
        "evt_by_order": owner.agency_id,
        "evt_nothing": None,
    }
