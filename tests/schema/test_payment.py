"""Payments through the API: the sandbox, limits, refunds, overrides, offline money, lists."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr

from settle.core.outbox import transaction
from settle.core.settings import Settings, configure_settings
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.invoice import Invoice
from settle.models.milestone import (
    Milestone,
    MilestoneKind,
    MilestonePaymentStatus,
    MilestoneStatus,
)
from settle.models.payment import (
    OfflineMethod,
    Payment,
    PaymentAllocation,
    PaymentAuditEntry,
    PaymentStatus,
)
from settle.models.project import Project
from settle.services import payment as payment_service
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import (
    Account,
    create_client,
    create_invoice,
    create_project,
    create_user,
    issue_invoice,
)
from tests.fixtures.graphql import GraphQLClient, count_queries

MONEY = "{ amount currency minorUnits }"

ERROR_FIELDS = """
    ... on Error { __typename code message }
    ... on ValidationError { field }
    ... on InvalidTransitionError { currentState }
"""

PAYMENT_FIELDS = f"""
    id status provider amount {MONEY} amountRefunded {MONEY} currency clientId projectId invoiceId
    method reference explorerUrl failureReason flaggedReason
    checkout {{ providerOrderId checkoutUrl clientSecret publicKey }}
    client {{ name }}
"""

CHECKOUT_FIELDS = f"""
    __typename
    ... on PaymentCheckout {{
      resumed
      payment {{ {PAYMENT_FIELDS} }}
      checkout {{ providerOrderId checkoutUrl clientSecret publicKey }}
      items {{
        amount {MONEY}
        milestone {{ id status paymentStatus }}
        invoice {{ id number status amountDue {MONEY} }}
      }}
    }}
    {ERROR_FIELDS}
"""

PAY_MILESTONES = f"""
mutation PayMilestones($milestoneIds: [ID!]!, $provider: PaymentProvider) {{
  result: payMilestones(milestoneIds: $milestoneIds, provider: $provider) {{ {CHECKOUT_FIELDS} }}
}}
"""

PAY_INVOICE = f"""
mutation PayInvoice($invoiceId: ID!, $provider: PaymentProvider) {{
  result: payInvoice(invoiceId: $invoiceId, provider: $provider) {{ {CHECKOUT_FIELDS} }}
}}
"""

REFUND_PAYMENT = f"""
mutation RefundPayment($paymentId: ID!, $amount: String, $reason: String!) {{
  result: refundPayment(paymentId: $paymentId, amount: $amount, reason: $reason) {{
    __typename
    ... on RefundPayload {{
      payment {{ id status amountRefunded {MONEY} }}
      refund {{ amount {MONEY} status reason providerRefundId failureReason settledAt }}
    }}
    {ERROR_FIELDS}
  }}
}}
"""

OVERRIDE_PAYMENT_STATUS = f"""
mutation OverridePaymentStatus($paymentId: ID!, $status: PaymentStatus!, $reason: String!) {{
  result: overridePaymentStatus(paymentId: $paymentId, status: $status, reason: $reason) {{
    __typename
    ... on Payment {{ id status failureReason checkout {{ providerOrderId }} }}
    {ERROR_FIELDS}
  }}
}}
"""

RECORD_OFFLINE_PAYMENT = f"""
mutation RecordOfflinePayment(
  $invoiceId: ID!, $amount: String!, $method: OfflinePaymentMethod!, $reference: String!,
  $explorerUrl: String
) {{
  result: recordOfflinePayment(
    invoiceId: $invoiceId, amount: $amount, method: $method, reference: $reference,
    explorerUrl: $explorerUrl
  ) {{
    __typename
    ... on Payment {{ {PAYMENT_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

PAYMENT = f"""
query Payment($id: ID!) {{
  payment(id: $id) {{
    {PAYMENT_FIELDS}
    succeededAt
    allocations {{
      invoiceId milestoneId amount {MONEY} amountRefunded {MONEY}
      invoice {{ status amountPaid {MONEY} }}
      milestone {{ status paymentStatus amountPaid {MONEY} paymentReference }}
    }}
    refunds {{ amount {MONEY} status reason providerRefundId }}
    auditLog {{ action source actorId reason before after }}
    webhookEvents {{ provider eventId eventType outcome attempts lastError }}
  }}
}}
"""

PAYMENTS = f"""
query Payments(
  $first: Int! = 20, $after: String, $filter: PaymentFilter, $orderBy: PaymentOrder
) {{
  payments(first: $first, after: $after, filter: $filter, orderBy: $orderBy) {{
    totalCount
    edges {{ node {{ id amount {MONEY} }} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}
"""

PROJECT_PAYMENT_STATUS = f"""
query ProjectPaymentStatus($projectId: ID!) {{
  projectPaymentStatus(projectId: $projectId) {{
    projectId currency
    total {MONEY} paid {MONEY} outstanding {MONEY} refunded {MONEY}
    advance {{ milestoneId status amount {MONEY} paidAt }}
    balance {{ milestoneId status amount {MONEY} paidAt }}
    nextDue {{ milestoneId title amount {MONEY} dueDate }}
  }}
}}
"""

INVOICE_PAYMENTS = """
query InvoicePayments($id: ID!) {
  invoice(id: $id) { status payments { id status } }
}
"""


def money(amount: str, currency: str, minor: int) -> dict[str, Any]:
    return {"amount": amount, "currency": currency, "minorUnits": minor}


def inr(amount: str) -> dict[str, Any]:
    minor = int(amount.replace(".", ""))
    return money(amount, "INR", minor)


def error(typename: str, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"__typename": typename, "code": code, "message": message, **extra}


PAID_AT = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)

DENIED = error("PermissionDeniedError", "PERMISSION_DENIED", "You are not allowed to do this")


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="INR")


@pytest.fixture
async def project(owner: Account, client: Client) -> Project:
    return await create_project(owner, client)


@pytest.fixture
async def lead(owner: Account, client: Client) -> Account:
    return await create_user(owner, role=Role.CLIENT_LEAD, client=client, name="Lee Lead")


async def create_milestone(
    project: Project,
    *,
    title: str = "Design",
    amount_minor: int = 100_000,
    status: MilestoneStatus = MilestoneStatus.APPROVED,
    position: int = 0,
    **values: Any,
) -> Milestone:
    """A milestone row in a given status (its workflow is tested through the milestone API)."""
    return await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency=project.currency,
        title=title,
        amount_minor=amount_minor,
        status=status,
        position=position,
        **values,
    )


async def issued_invoice(owner: Account, client: Client, unit_price: str) -> Invoice:
    """A sent invoice of one line."""
    draft = await create_invoice(
        owner,
        client,
        lines=[{"description": "Build", "quantity": "1", "unit_price": unit_price}],
    )
    return await issue_invoice(owner, draft)


def payment_view(payment: Payment, **overrides: Any) -> dict[str, Any]:
    """PAYMENT_FIELDS of a payment row as the API shows them."""
    amount = payment.amount_minor
    refunded = payment.amount_refunded_minor
    view: dict[str, Any] = {
        "id": str(payment.id),
        "status": payment.status.name,
        "provider": payment.provider.name,
        "amount": money(f"{amount // 100}.{amount % 100:02d}", payment.currency, amount),
        "amountRefunded": money(
            f"{refunded // 100}.{refunded % 100:02d}", payment.currency, refunded
        ),
        "currency": payment.currency,
        "clientId": str(payment.client_id),
        "projectId": str(payment.project_id) if payment.project_id else None,
        "invoiceId": str(payment.invoice_id) if payment.invoice_id else None,
        "method": payment.method.name if payment.method else None,
        "reference": payment.reference,
        "explorerUrl": payment.explorer_url,
        "failureReason": payment.failure_reason,
        "flaggedReason": payment.flagged_reason,
        "checkout": None,
        "client": {"name": "Acme"},
    }
    return {**view, **overrides}


async def press(http: httpx.AsyncClient, db: Backend, checkout_url: str, button: str) -> None:
    """Open the sandbox's checkout page, press a button, and let the worker apply the webhook."""
    path = urlsplit(checkout_url).path
    page = await http.get(path)
    assert page.status_code == 200
    assert f'action="http://settle.test{path}/{button}"' in page.text
    pressed = await http.post(f"{path}/{button}")
    assert pressed.status_code == 200
    await db.drain()


async def pay(
    gql: GraphQLClient, http: httpx.AsyncClient, db: Backend, payer: Account, *milestones: Milestone
) -> Payment:
    """Pay milestones through the sandbox, to the end."""
    data = await gql.execute(
        PAY_MILESTONES, {"milestoneIds": [str(m.id) for m in milestones]}, token=payer.token
    )
    assert data["result"]["__typename"] == "PaymentCheckout", data
    await press(http, db, data["result"]["checkout"]["checkoutUrl"], "succeed")
    return await Payment.get(id=data["result"]["payment"]["id"])


# --- paying on the sandbox ----------------------------------------------------------------


async def test_a_client_lead_pays_an_approved_milestone_through_the_sandbox(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    lead: Account,
    project: Project,
) -> None:
    # given an approved milestone of ₹1,000.00, not invoiced yet
    design = await create_milestone(project, title="Design", amount_minor=100_000)

    # when the client's lead pays it
    data = await gql.execute(PAY_MILESTONES, {"milestoneIds": [str(design.id)]}, token=lead.token)

    # then one payment is pending, with the sandbox's checkout, on an invoice issued for it
    payment = await Payment.get()
    invoice = await Invoice.get()
    checkout_url = data["result"]["checkout"]["checkoutUrl"]
    assert checkout_url.startswith("http://settle.test/sandbox/pay/")
    checkout = {
        "providerOrderId": f"sbx_{payment.id}",
        "checkoutUrl": checkout_url,
        "clientSecret": None,
        "publicKey": None,
    }
    assert data["result"] == {
        "__typename": "PaymentCheckout",
        "resumed": False,
        "payment": payment_view(payment, status="PENDING", checkout=checkout),
        "checkout": checkout,
        "items": [
            {
                "amount": inr("1000.00"),
                "milestone": {
                    "id": str(design.id),
                    "status": "APPROVED",
                    "paymentStatus": "PROCESSING",
                },
                "invoice": {
                    "id": str(invoice.id),
                    "number": invoice.number,
                    "status": "SENT",
                    "amountDue": inr("1000.00"),
                },
            }
        ],
    }
    assert (payment.project_id, payment.invoice_id) == (project.id, invoice.id)

    # when the payer presses Pay on the checkout page
    await press(http, db, checkout_url, "succeed")

    # then the payment succeeded, and the milestone and its invoice are paid
    data = await gql.execute(PAYMENT, {"id": str(payment.id)}, token=owner.token)
    await payment.refresh_from_db()
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.provider_payment_id == f"sbx_pay_{payment.id}"
    view = data["payment"]
    assert view.pop("succeededAt") == payment.succeeded_at.isoformat()  # type: ignore[union-attr]
    audit = view.pop("auditLog")
    assert view == {
        **payment_view(payment),
        "allocations": [
            {
                "invoiceId": str(invoice.id),
                "milestoneId": str(design.id),
                "amount": inr("1000.00"),
                "amountRefunded": inr("0.00"),
                "invoice": {"status": "PAID", "amountPaid": inr("1000.00")},
                "milestone": {
                    "status": "PAID",
                    "paymentStatus": "PAID",
                    "amountPaid": inr("1000.00"),
                    "paymentReference": f"sbx_pay_{payment.id}",
                },
            }
        ],
        "refunds": [],
        "webhookEvents": [
            {
                "provider": "SANDBOX",
                "eventId": f"sbx_evt_{payment.id}_succeed",
                "eventType": "payment.succeeded",
                "outcome": "applied",
                "attempts": 1,
                "lastError": None,
            }
        ],
    }
    assert [(e["action"], e["source"], e["actorId"]) for e in audit] == [
        ("created", "user", str(lead.user.id)),
        ("checkout_created", "sandbox", None),
        ("payment_succeeded", "sandbox", None),
    ]
    assert (audit[-1]["before"]["status"], audit[-1]["after"]["status"]) == (
        "pending",
        "succeeded",
    )
    invoice_payments = await gql.execute(
        INVOICE_PAYMENTS, {"id": str(invoice.id)}, token=lead.token
    )
    assert invoice_payments == {
        "invoice": {"status": "PAID", "payments": [{"id": str(payment.id), "status": "SUCCEEDED"}]}
    }


async def test_a_second_request_resumes_the_payment_under_way(
    gql: GraphQLClient, owner: Account, lead: Account, project: Project
) -> None:
    # given a milestone whose payment the lead has started
    design = await create_milestone(project)
    variables = {"milestoneIds": [str(design.id)]}
    first = await gql.execute(PAY_MILESTONES, variables, token=lead.token)

    # when the lead, then an owner, ask to pay it again
    again = await gql.execute(PAY_MILESTONES, variables, token=lead.token)
    by_owner = await gql.execute(PAY_MILESTONES, variables, token=owner.token)

    # then both get the same payment and checkout back, marked resumed; nothing new is made
    assert first["result"]["resumed"] is False
    resumed = {**first["result"], "resumed": True}
    assert again["result"] == resumed
    assert by_owner["result"] == resumed
    assert await Payment.all().count() == 1
    assert await Invoice.all().count() == 1


async def test_a_bulk_payment_reports_each_milestone_in_the_order_given(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    lead: Account,
    project: Project,
) -> None:
    # given three approved milestones
    design = await create_milestone(project, title="Design", amount_minor=100_000, position=0)
    build = await create_milestone(project, title="Build", amount_minor=250_050, position=1)
    launch = await create_milestone(project, title="Launch", amount_minor=50_000, position=2)

    # when the lead pays them together, in an order of their own
    ordered = [launch, design, build]
    data = await gql.execute(
        PAY_MILESTONES, {"milestoneIds": [str(m.id) for m in ordered]}, token=lead.token
    )

    # then one payment of the sum pays each on one new invoice, reported in that order
    result = data["result"]
    assert result["payment"]["amount"] == inr("4000.50")
    assert [(i["milestone"]["id"], i["amount"]) for i in result["items"]] == [
        (str(launch.id), inr("500.00")),
        (str(design.id), inr("1000.00")),
        (str(build.id), inr("2500.50")),
    ]
    assert len({i["invoice"]["id"] for i in result["items"]}) == 1

    # when it is paid
    await press(http, db, result["checkout"]["checkoutUrl"], "succeed")

    # then every milestone is paid with its own share
    rows = await Milestone.filter(id__in=[m.id for m in ordered]).order_by("position")
    assert [(m.status, m.amount_paid_minor) for m in rows] == [
        (MilestoneStatus.PAID, 100_000),
        (MilestoneStatus.PAID, 250_050),
        (MilestoneStatus.PAID, 50_000),
    ]
    assert (await Invoice.get()).amount_paid_minor == 400_050


async def test_a_failed_payment_leaves_the_milestone_to_pay_again(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    lead: Account,
    project: Project,
) -> None:
    # given a payment under way
    design = await create_milestone(project)
    started = await gql.execute(
        PAY_MILESTONES, {"milestoneIds": [str(design.id)]}, token=lead.token
    )

    # when the payer presses Fail
    await press(http, db, started["result"]["checkout"]["checkoutUrl"], "fail")

    # then the payment failed, shows no checkout, and the milestone is unpaid again
    data = await gql.execute(PAYMENT, {"id": started["result"]["payment"]["id"]}, token=lead.token)
    assert (data["payment"]["status"], data["payment"]["failureReason"]) == (
        "FAILED",
        "Declined in the sandbox",
    )
    assert data["payment"]["checkout"] is None
    await design.refresh_from_db()
    assert design.payment_status is MilestonePaymentStatus.UNPAID

    # and a new request starts a new payment
    again = await gql.execute(PAY_MILESTONES, {"milestoneIds": [str(design.id)]}, token=lead.token)
    assert again["result"]["resumed"] is False
    assert again["result"]["payment"]["id"] != started["result"]["payment"]["id"]


# --- who may pay, and what may be paid --------------------------------------------------------


async def test_who_may_start_a_payment(
    gql: GraphQLClient, owner: Account, client: Client, project: Project
) -> None:
    # given an approved milestone, and users of every kind
    design = await create_milestone(project)
    variables = {"milestoneIds": [str(design.id)]}
    member = await create_user(owner, role=Role.MEMBER)
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client)
    other = await create_client(owner, name="Other")
    other_lead = await create_user(owner, role=Role.CLIENT_LEAD, client=other)

    # when each of them asks to pay it
    answers = {
        name: (await gql.execute(PAY_MILESTONES, variables, token=account.token))["result"]
        for name, account in (("member", member), ("viewer", viewer), ("other", other_lead))
    }

    # then the member and the viewer are refused, another client's lead does not see it
    assert answers == {
        "member": {
            **DENIED,
            "message": "Only the client lead, an owner or an admin starts payments",
        },
        "viewer": {
            **DENIED,
            "message": "Only the client lead, an owner or an admin starts payments",
        },
        "other": error("NotFoundError", "NOT_FOUND", "Milestone not found"),
    }
    assert await Payment.all().count() == 0


async def test_only_approved_milestones_are_paid(
    db: Backend, gql: GraphQLClient, lead: Account, project: Project
) -> None:
    # given a milestone still in progress
    draft = await create_milestone(project, status=MilestoneStatus.IN_PROGRESS)
    before = await row_counts(Payment, Invoice)

    # when the lead asks to pay it
    data = await gql.execute(PAY_MILESTONES, {"milestoneIds": [str(draft.id)]}, token=lead.token)

    # then it is not payable, and nothing was written
    assert data["result"] == error(
        "ValidationError",
        "NOT_PAYABLE",
        "Milestone Design is in_progress: only approved milestones are paid",
        field="milestoneIds",
    )
    assert await row_counts(Payment, Invoice) == before


async def test_something_paid_is_not_paid_twice(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    lead: Account,
    project: Project,
) -> None:
    # given a milestone paid through the sandbox
    design = await create_milestone(project)
    payment = await pay(gql, http, db, lead, design)

    # when the lead asks to pay the milestone, and its invoice, again
    milestone = await gql.execute(
        PAY_MILESTONES, {"milestoneIds": [str(design.id)]}, token=lead.token
    )
    invoice = await gql.execute(
        PAY_INVOICE, {"invoiceId": str(payment.invoice_id)}, token=lead.token
    )

    # then both are already paid
    assert milestone["result"] == error(
        "ConflictError", "ALREADY_PAID", "Milestone Design is already paid"
    )
    number = (await Invoice.get()).number
    assert invoice["result"] == error(
        "ConflictError", "ALREADY_PAID", f"Invoice {number} is already paid"
    )
    assert await Payment.all().count() == 1


async def test_a_payment_is_at_most_ten_million_rupees(
    gql: GraphQLClient, owner: Account, lead: Account, client: Client
) -> None:
    # given an invoice of exactly ₹10,000,000.00 and one of a paisa more
    limit = await issued_invoice(owner, client, "10000000.00")
    above = await issued_invoice(owner, client, "10000000.01")

    # when the lead pays each
    at_limit = await gql.execute(PAY_INVOICE, {"invoiceId": str(limit.id)}, token=lead.token)
    too_large = await gql.execute(PAY_INVOICE, {"invoiceId": str(above.id)}, token=lead.token)

    # then the first is collected, the second refused before any gateway call
    assert at_limit["result"]["payment"]["amount"] == inr("10000000.00")
    assert too_large["result"] == error(
        "ValidationError",
        "AMOUNT_TOO_LARGE",
        "A payment is at most ₹1,00,00,000.00",
        field="amount",
    )
    assert await Payment.filter(invoice_id=above.id).count() == 0


async def test_paying_an_invoice_pays_what_is_owed(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    lead: Account,
    client: Client,
) -> None:
    # given an invoice of ₹500.00 of which ₹200.00 was received by bank transfer
    invoice = await issued_invoice(owner, client, "500.00")
    offline = await gql.execute(
        RECORD_OFFLINE_PAYMENT,
        {
            "invoiceId": str(invoice.id),
            "amount": "200.00",
            "method": "BANK_TRANSFER",
            "reference": "NEFT-0001",
        },
        token=owner.token,
    )
    assert offline["result"]["status"] == "SUCCEEDED"

    # when the lead pays the invoice
    data = await gql.execute(PAY_INVOICE, {"invoiceId": str(invoice.id)}, token=lead.token)

    # then the payment is for the ₹300.00 owed, paying the invoice as a whole
    assert data["result"]["payment"]["amount"] == inr("300.00")
    assert data["result"]["items"] == [
        {
            "amount": inr("300.00"),
            "milestone": None,
            "invoice": {
                "id": str(invoice.id),
                "number": invoice.number,
                "status": "PARTIALLY_PAID",
                "amountDue": inr("300.00"),
            },
        }
    ]

    # when it is paid
    await press(http, db, data["result"]["checkout"]["checkoutUrl"], "succeed")

    # then the invoice is paid
    await invoice.refresh_from_db()
    assert (invoice.status.value, invoice.amount_paid_minor) == ("paid", 50_000)


async def test_an_unconfigured_gateway_is_refused_by_name(
    gql: GraphQLClient, lead: Account, project: Project
) -> None:
    # given an approved milestone, and no Razorpay credentials in the settings
    design = await create_milestone(project)

    # when the lead asks for Razorpay
    data = await gql.execute(
        PAY_MILESTONES,
        {"milestoneIds": [str(design.id)], "provider": "RAZORPAY"},
        token=lead.token,
    )

    # then it is refused, and nothing was written
    assert data["result"] == error(
        "ValidationError",
        "PROVIDER_NOT_CONFIGURED",
        "The razorpay gateway is not configured",
        field="provider",
    )
    assert await Payment.all().count() == 0
    assert await Invoice.all().count() == 0


@pytest.fixture
def unreachable_stripe(settings: Settings) -> Iterator[None]:
    """Stripe configured, at an address nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configure_settings(
        settings.model_copy(
            update={
                "stripe_secret_key": SecretStr("sk_test_settle_closed"),
                "stripe_webhook_secret": SecretStr("whsec_settle_closed"),
                "stripe_api_base": f"http://127.0.0.1:{port}",
            }
        )
    )
    yield
    configure_settings(settings)


@pytest.mark.usefixtures("unreachable_stripe")
async def test_a_gateway_that_does_not_answer_leaves_the_payment_to_resume(
    gql: GraphQLClient, lead: Account, project: Project
) -> None:
    # given an approved milestone, and Stripe out of reach
    design = await create_milestone(project)
    variables = {"milestoneIds": [str(design.id)], "provider": "STRIPE"}

    # when the lead pays it through Stripe, twice
    first = await gql.execute(PAY_MILESTONES, variables, token=lead.token)
    second = await gql.execute(PAY_MILESTONES, variables, token=lead.token)

    # then each is told the gateway did not answer
    for data in (first, second):
        assert (data["result"]["__typename"], data["result"]["code"]) == (
            "GatewayUnavailableError",
            "GATEWAY_UNAVAILABLE",
        )
        assert data["result"]["message"].startswith(
            "The stripe gateway did not take the payment: Stripe: "
        )
    # and the payment written before the gateway call stays, once, without a checkout
    payment = await Payment.get()
    assert (payment.status, payment.provider_order_id) == (PaymentStatus.CREATED, None)
    await design.refresh_from_db()
    assert design.payment_status is MilestonePaymentStatus.PROCESSING


@pytest.mark.usefixtures("unreachable_stripe")
async def test_a_payment_below_the_gateways_minimum_is_refused_before_calling_it(
    gql: GraphQLClient, owner: Account, lead: Account, client: Client
) -> None:
    # given an invoice of ₹0.99, and Stripe (whose minimum Settle takes as ₹1.00)
    invoice = await issued_invoice(owner, client, "0.99")

    # when the lead pays it through Stripe
    data = await gql.execute(
        PAY_INVOICE, {"invoiceId": str(invoice.id), "provider": "STRIPE"}, token=lead.token
    )

    # then it is refused without asking Stripe (which is out of reach anyway)
    assert data["result"] == error(
        "ValidationError", "AMOUNT_TOO_SMALL", "A payment is at least ₹1.00", field="amount"
    )
    assert await Payment.all().count() == 0


# --- refunds ------------------------------------------------------------------------------------


REFUNDED_VIEW = f"""
query Refunded($id: ID!) {{
  milestone(id: $id) {{
    amountPaid {MONEY} amountRefunded {MONEY}
    invoice {{ amountPaid {MONEY} amountRefunded {MONEY} }}
  }}
}}
"""


async def test_refunds_in_part_then_in_full_settle_through_the_sandbox(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    lead: Account,
    project: Project,
) -> None:
    # given a milestone of ₹1,000.00 paid through the sandbox
    design = await create_milestone(project)
    payment = await pay(gql, http, db, lead, design)
    variables: dict[str, Any] = {"paymentId": str(payment.id), "reason": "Scope cut"}

    # when the client's lead asks for a refund
    refused = await gql.execute(REFUND_PAYMENT, {**variables, "amount": "1.00"}, token=lead.token)

    # then only owners and admins refund
    assert refused["result"] == DENIED

    # when an owner refunds ₹300.00
    partial = await gql.execute(
        REFUND_PAYMENT, {**variables, "amount": "300.00"}, token=owner.token
    )

    # then the refund is pending until the gateway settles it
    assert partial["result"] == {
        "__typename": "RefundPayload",
        "payment": {"id": str(payment.id), "status": "SUCCEEDED", "amountRefunded": inr("0.00")},
        "refund": {
            "amount": inr("300.00"),
            "status": "PENDING",
            "reason": "Scope cut",
            "providerRefundId": None,
            "failureReason": None,
            "settledAt": None,
        },
    }

    # when the worker asks the sandbox, which settles at once
    await db.drain()

    # then the payment, its allocation and the milestone show the refund
    data = await gql.execute(PAYMENT, {"id": str(payment.id)}, token=owner.token)
    refund_id = (await payment.refunds.all().first()).id  # type: ignore[union-attr]
    view = data["payment"]
    assert (view["status"], view["amountRefunded"]) == ("PARTIALLY_REFUNDED", inr("300.00"))
    assert view["refunds"] == [
        {
            "amount": inr("300.00"),
            "status": "SUCCEEDED",
            "reason": "Scope cut",
            "providerRefundId": f"sbx_rf_{refund_id}",
        }
    ]
    assert view["allocations"][0]["amountRefunded"] == inr("300.00")
    assert view["allocations"][0]["milestone"]["paymentStatus"] == "PARTIALLY_REFUNDED"
    assert [e["action"] for e in view["auditLog"]][-2:] == ["refund_requested", "refund_succeeded"]

    # when more than what is left is asked for, then it is refused
    above = await gql.execute(REFUND_PAYMENT, {**variables, "amount": "700.01"}, token=owner.token)
    assert above["result"] == error(
        "ValidationError",
        "OUT_OF_RANGE",
        "At most ₹700.00 can be refunded",
        field="amount",
    )

    # when the rest is refunded (no amount: all that is left)
    full = await gql.execute(REFUND_PAYMENT, variables, token=owner.token)
    assert full["result"]["refund"]["amount"] == inr("700.00")
    await db.drain()

    # then the payment is refunded, and the milestone counts as unpaid again
    await payment.refresh_from_db()
    await design.refresh_from_db()
    assert (payment.status, payment.amount_refunded_minor) == (PaymentStatus.REFUNDED, 100_000)
    assert (design.payment_status, design.amount_refunded_minor) == (
        MilestonePaymentStatus.REFUNDED,
        100_000,
    )
    # and the milestone and its invoice show what was given back through the API
    shown = await gql.execute(REFUNDED_VIEW, {"id": str(design.id)}, token=owner.token)
    assert shown["milestone"] == {
        "amountPaid": inr("1000.00"),
        "amountRefunded": inr("1000.00"),
        "invoice": {"amountPaid": inr("1000.00"), "amountRefunded": inr("1000.00")},
    }

    # and nothing more can be refunded
    again = await gql.execute(REFUND_PAYMENT, variables, token=owner.token)
    assert again["result"] == error(
        "InvalidTransitionError",
        "INVALID_TRANSITION",
        "Payment cannot move from refunded to refunded",
        currentState="refunded",
    )


# --- overrides ----------------------------------------------------------------------------------


async def test_an_owner_overrides_a_stuck_payment_with_a_reason(
    db: Backend, gql: GraphQLClient, owner: Account, lead: Account, project: Project
) -> None:
    # given a payment under way
    design = await create_milestone(project)
    started = await gql.execute(
        PAY_MILESTONES, {"milestoneIds": [str(design.id)]}, token=lead.token
    )
    payment_id = started["result"]["payment"]["id"]
    variables = {"paymentId": payment_id, "status": "CANCELLED", "reason": "Client paid by cheque"}
    member = await create_user(owner, role=Role.MEMBER)

    # when a member tries to override it, then it is refused
    refused = await gql.execute(OVERRIDE_PAYMENT_STATUS, variables, token=member.token)
    assert refused["result"] == DENIED

    # when an owner cancels it with a reason
    data = await gql.execute(OVERRIDE_PAYMENT_STATUS, variables, token=owner.token)

    # then it is cancelled, audited with the reason, and the milestone is unpaid again
    assert data["result"] == {
        "__typename": "Payment",
        "id": payment_id,
        "status": "CANCELLED",
        "failureReason": "Client paid by cheque",
        "checkout": None,
    }
    entry = await PaymentAuditEntry.filter(payment_id=payment_id).order_by("-created_at").first()
    assert entry is not None
    assert (entry.action, entry.actor_id, entry.reason, entry.before["status"]) == (
        "status_overridden",
        owner.user.id,
        "Client paid by cheque",
        "pending",
    )
    await design.refresh_from_db()
    assert design.payment_status is MilestonePaymentStatus.UNPAID

    # and a cancelled payment cannot be marked failed
    failed = await gql.execute(
        OVERRIDE_PAYMENT_STATUS, {**variables, "status": "FAILED"}, token=owner.token
    )
    assert failed["result"] == error(
        "InvalidTransitionError",
        "INVALID_TRANSITION",
        "Payment cannot move from cancelled to failed",
        currentState="cancelled",
    )


async def test_an_override_to_succeeded_pays_what_it_covers(
    db: Backend, gql: GraphQLClient, owner: Account, lead: Account, project: Project
) -> None:
    # given a payment under way that the gateway never reported
    design = await create_milestone(project)
    started = await gql.execute(
        PAY_MILESTONES, {"milestoneIds": [str(design.id)]}, token=lead.token
    )
    payment_id = started["result"]["payment"]["id"]

    # when an owner marks it succeeded
    data = await gql.execute(
        OVERRIDE_PAYMENT_STATUS,
        {"paymentId": payment_id, "status": "SUCCEEDED", "reason": "Seen in the bank statement"},
        token=owner.token,
    )

    # then it succeeded and the milestone and its invoice are paid
    assert (data["result"]["status"], data["result"]["checkout"]) == ("SUCCEEDED", None)
    await design.refresh_from_db()
    invoice = await Invoice.get()
    assert (design.status, invoice.status.value) == (MilestoneStatus.PAID, "paid")


# --- offline money -------------------------------------------------------------------------------


async def test_crypto_received_is_recorded_with_its_explorer_link(
    db: Backend, gql: GraphQLClient, owner: Account, lead: Account, client: Client
) -> None:
    # given an issued invoice of ₹5,000.00
    invoice = await issued_invoice(owner, client, "5000.00")
    variables: dict[str, Any] = {
        "invoiceId": str(invoice.id),
        "amount": "2000.00",
        "method": "CRYPTO",
        "reference": "0xabc123",
    }

    # when an owner records crypto without its explorer link, then it is refused
    missing = await gql.execute(RECORD_OFFLINE_PAYMENT, variables, token=owner.token)
    assert missing["result"] == error(
        "ValidationError",
        "REQUIRED",
        "A crypto payment needs its explorer link",
        field="explorerUrl",
    )

    # when the client's lead tries to record money, then it is refused
    by_lead = await gql.execute(
        RECORD_OFFLINE_PAYMENT,
        {**variables, "explorerUrl": "https://etherscan.io/tx/0xabc123"},
        token=lead.token,
    )
    assert by_lead["result"] == DENIED

    # when an owner records it with the link
    data = await gql.execute(
        RECORD_OFFLINE_PAYMENT,
        {**variables, "explorerUrl": "https://etherscan.io/tx/0xabc123"},
        token=owner.token,
    )

    # then an offline payment succeeded and the invoice is partly paid
    payment = await Payment.get()
    assert data["result"] == {
        "__typename": "Payment",
        **payment_view(payment),
    }
    assert data["result"]["method"] == "CRYPTO"
    assert (data["result"]["provider"], data["result"]["status"]) == ("OFFLINE", "SUCCEEDED")
    assert data["result"]["explorerUrl"] == "https://etherscan.io/tx/0xabc123"
    await invoice.refresh_from_db()
    assert (invoice.status.value, invoice.amount_paid_minor) == ("partially_paid", 200_000)
    assert await PaymentAllocation.filter(payment_id=payment.id).count() == 1


# --- reading ----------------------------------------------------------------------------------


async def test_payments_are_filtered_ordered_and_paged(
    gql: GraphQLClient, owner: Account, client: Client, project: Project
) -> None:
    # given offline payments of ₹100, ₹300 and ₹200 on a client's invoices, one of a
    # project, and a USD payment of another client
    amounts = ("100.00", "300.00", "200.00")
    invoices = [await issued_invoice(owner, client, amount) for amount in amounts]
    other = await create_client(owner, name="Dollar Co", currency="USD")
    dollars = await issued_invoice(owner, other, "250.00")
    for invoice, amount in [*zip(invoices, amounts, strict=True), (dollars, "250.00")]:
        data = await gql.execute(
            RECORD_OFFLINE_PAYMENT,
            {
                "invoiceId": str(invoice.id),
                "amount": amount,
                "method": "BANK_TRANSFER",
                "reference": f"REF-{amount}",
            },
            token=owner.token,
        )
        assert data["result"]["__typename"] == "Payment"
    by_amount = {(p.currency, p.amount_minor): str(p.id) for p in await Payment.all()}

    async def ids(variables: dict[str, Any]) -> list[str]:
        data = await gql.execute(PAYMENTS, variables, token=owner.token)
        return [edge["node"]["id"] for edge in data["payments"]["edges"]]

    # when listed by default, then newest first
    assert await ids({}) == [
        by_amount[("USD", 25_000)],
        by_amount[("INR", 20_000)],
        by_amount[("INR", 30_000)],
        by_amount[("INR", 10_000)],
    ]
    # when ordered by amount, ascending, within rupees from ₹150
    assert await ids(
        {
            "filter": {"currency": "inr", "minAmount": "150"},
            "orderBy": {"field": "AMOUNT", "direction": "ASC"},
        }
    ) == [by_amount[("INR", 20_000)], by_amount[("INR", 30_000)]]
    # when filtered by client, status and provider
    assert await ids(
        {"filter": {"clientId": str(other.id), "status": "SUCCEEDED", "provider": "OFFLINE"}}
    ) == [by_amount[("USD", 25_000)]]
    assert await ids({"filter": {"status": "PENDING"}}) == []
    # when paged two at a time by amount, descending
    order = {"field": "AMOUNT", "direction": "DESC"}
    first = await gql.execute(PAYMENTS, {"first": 2, "orderBy": order}, token=owner.token)
    page = first["payments"]
    assert (page["totalCount"], page["pageInfo"]["hasNextPage"]) == (4, True)
    rest = await gql.execute(
        PAYMENTS,
        {"first": 2, "after": page["pageInfo"]["endCursor"], "orderBy": order},
        token=owner.token,
    )
    assert [e["node"]["amount"]["minorUnits"] for e in page["edges"]] + [
        e["node"]["amount"]["minorUnits"] for e in rest["payments"]["edges"]
    ] == [30_000, 25_000, 20_000, 10_000]
    assert rest["payments"]["pageInfo"]["hasNextPage"] is False


PAYMENTS_WITH_CHILDREN = """
query PaymentsWithChildren {
  payments(first: 100) {
    totalCount
    edges {
      node {
        id
        client { name }
        checkout { providerOrderId }
        allocations { invoice { id } milestone { id } }
        refunds { id }
        auditLog { action }
        webhookEvents { eventId }
        invoicePayments: allocations { invoice { payments { id } } }
      }
    }
  }
}
"""


async def test_a_list_of_payments_reads_its_children_in_a_fixed_number_of_queries(
    db: Backend, gql: GraphQLClient, owner: Account, rival: Account, client: Client
) -> None:
    # given one payment in the rival's agency and five in the owner's (their invoices'
    # PDFs rendered, so that no job runs while the queries are counted)
    rivals = await create_client(rival, name="Rivalco", currency="INR")
    await _offline_payments(gql, rival, rivals, 1)
    await _offline_payments(gql, owner, client, 5)
    await db.drain()

    # when each lists its payments with their children
    with count_queries() as small_count:
        small = await gql.execute(PAYMENTS_WITH_CHILDREN, token=rival.token)
    with count_queries() as large_count:
        large = await gql.execute(PAYMENTS_WITH_CHILDREN, token=owner.token)

    # then every payment has its own children
    assert (small["payments"]["totalCount"], large["payments"]["totalCount"]) == (1, 5)
    for node in (edge["node"] for edge in large["payments"]["edges"]):
        payment = await Payment.get(id=node["id"])
        assert node["client"] == {"name": "Acme"}
        assert node["allocations"] == [
            {"invoice": {"id": str(payment.invoice_id)}, "milestone": None}
        ]
        assert node["invoicePayments"] == [{"invoice": {"payments": [{"id": node["id"]}]}}]
        assert [e["action"] for e in node["auditLog"]] == ["created", "offline_recorded"]
        assert (node["checkout"], node["refunds"], node["webhookEvents"]) == (None, [], [])
    # and the number of SQL statements is the same
    assert large_count.count == small_count.count, (small_count.queries, large_count.queries)
    # (the caller, the count, the page, the clients, allocations, refunds, audit entries,
    # webhook events, invoices, the invoices' allocations and payments)
    assert large_count.count == 11, large_count.queries


async def _offline_payments(
    gql: GraphQLClient, account: Account, client: Client, count: int
) -> None:
    """``count`` invoices of the client, each paid in cash."""
    for _ in range(count):
        invoice = await issued_invoice(account, client, "100.00")
        data = await gql.execute(
            RECORD_OFFLINE_PAYMENT,
            {"invoiceId": str(invoice.id), "amount": "100.00", "method": "CASH", "reference": "R"},
            token=account.token,
        )
        assert data["result"]["__typename"] == "Payment"


async def test_amount_filters_need_a_currency(gql: GraphQLClient, owner: Account) -> None:
    # when payments are filtered by amount alone
    body = await gql.execute(
        PAYMENTS, {"filter": {"minAmount": "100"}}, token=owner.token, expect_errors=True
    )

    # then the filter is refused, naming the missing field
    assert body["errors"] == [
        {
            "message": "Give the currency of minAmount and maxAmount",
            "locations": [{"line": 5, "column": 3}],
            "path": ["payments"],
            "extensions": {"code": "REQUIRED", "field": "filter.currency"},
        }
    ]


async def test_what_a_client_user_sees_of_a_payment(
    gql: GraphQLClient, owner: Account, lead: Account, client: Client, project: Project
) -> None:
    # given a payment under way, and a viewer of the same client
    design = await create_milestone(project)
    started = await gql.execute(
        PAY_MILESTONES, {"milestoneIds": [str(design.id)]}, token=lead.token
    )
    payment_id = started["result"]["payment"]["id"]
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client)

    # when the lead and the viewer read it
    by_lead = (await gql.execute(PAYMENT, {"id": payment_id}, token=lead.token))["payment"]
    by_viewer = (await gql.execute(PAYMENT, {"id": payment_id}, token=viewer.token))["payment"]

    # then the lead, who may pay it, gets its checkout; neither gets the audit trail
    assert by_lead["checkout"] == started["result"]["checkout"]
    assert (by_lead["auditLog"], by_lead["webhookEvents"]) == (None, None)
    assert by_viewer == {**by_lead, "checkout": None}


async def test_project_payment_status_adds_up_the_milestones(
    gql: GraphQLClient, owner: Account, client: Client, project: Project
) -> None:
    # given an advance paid (₹400, ₹50 of it refunded), a balance of ₹600 due on 1 May,
    # an extra milestone of ₹250 due on 1 April, and a cancelled one
    paid_at = await _stage(project, "Advance", 40_000, MilestoneKind.ADVANCE, 0, 5_000)
    advance = await Milestone.get(title="Advance")
    balance = await create_milestone(
        project,
        title="Balance",
        amount_minor=60_000,
        kind=MilestoneKind.BALANCE,
        status=MilestoneStatus.PENDING,
        position=1,
        due_date=date(2026, 5, 1),
    )
    extra = await create_milestone(
        project,
        title="Extra",
        amount_minor=25_000,
        status=MilestoneStatus.APPROVED,
        position=2,
        due_date=date(2026, 4, 1),
    )
    await create_milestone(
        project, title="Dropped", amount_minor=99_900, status=MilestoneStatus.CANCELLED
    )

    # when the project's payment status is read
    data = await gql.execute(
        PROJECT_PAYMENT_STATUS, {"projectId": str(project.id)}, token=owner.token
    )

    # then the numbers add up
    assert data["projectPaymentStatus"] == {
        "projectId": str(project.id),
        "currency": "INR",
        "total": inr("1250.00"),
        "paid": inr("350.00"),
        "outstanding": inr("900.00"),
        "refunded": inr("50.00"),
        "advance": {
            "milestoneId": str(advance.id),
            "status": "PARTIALLY_REFUNDED",
            "amount": inr("400.00"),
            "paidAt": paid_at,
        },
        "balance": {
            "milestoneId": str(balance.id),
            "status": "UNPAID",
            "amount": inr("600.00"),
            "paidAt": None,
        },
        "nextDue": {
            "milestoneId": str(extra.id),
            "title": "Extra",
            "amount": inr("250.00"),
            "dueDate": "2026-04-01",
        },
    }


async def test_without_due_dates_the_first_unpaid_milestone_is_next(
    gql: GraphQLClient, owner: Account, client: Client, project: Project
) -> None:
    # given a paid milestone first and two unpaid ones without due dates
    await _stage(project, "Design", 10_000, MilestoneKind.STANDARD, 0)
    build = await create_milestone(project, title="Build", amount_minor=20_000, position=1)
    await create_milestone(project, title="Launch", amount_minor=30_000, position=2)

    # when the project's payment status is read by the client's viewer
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client)
    data = await gql.execute(
        PROJECT_PAYMENT_STATUS, {"projectId": str(project.id)}, token=viewer.token
    )

    # then the next due is the first unpaid in contract order; there are no payment terms
    status = data["projectPaymentStatus"]
    assert status["nextDue"] == {
        "milestoneId": str(build.id),
        "title": "Build",
        "amount": inr("200.00"),
        "dueDate": None,
    }
    assert (status["advance"], status["balance"]) == (None, None)
    assert (status["paid"], status["outstanding"]) == (inr("100.00"), inr("500.00"))


async def _stage(
    project: Project,
    title: str,
    amount_minor: int,
    kind: MilestoneKind,
    position: int,
    refunded_minor: int = 0,
) -> str:
    """A milestone paid on 2 March 2026, ``refunded_minor`` of it refunded; returns its paidAt."""
    await create_milestone(
        project,
        title=title,
        amount_minor=amount_minor,
        kind=kind,
        status=MilestoneStatus.PAID,
        position=position,
        payment_status=MilestonePaymentStatus.PARTIALLY_REFUNDED
        if refunded_minor
        else MilestonePaymentStatus.PAID,
        amount_paid_minor=amount_minor,
        amount_refunded_minor=refunded_minor,
        paid_at=PAID_AT,
    )
    return PAID_AT.isoformat()


CREATE_PAYMENT_UPLOAD = """
mutation Upload($paymentId: ID!) {
  result: createPaymentUpload(paymentId: $paymentId, filename: "receipt.pdf", sizeBytes: 2048) {
    __typename
    ... on InvoiceUpload { invoice { id } uploadUrl }
    ... on Error { code }
  }
}
"""


async def test_a_pdf_upload_can_name_the_payment_whose_invoice_it_belongs_to(
    gql: GraphQLClient, owner: Account, lead: Account, client: Client
) -> None:
    # given money received by bank transfer for an issued invoice
    invoice = await issued_invoice(owner, client, "500.00")
    async with transaction():
        payment = await payment_service.record_offline_payment(
            owner.actor,
            invoice.id,
            amount="500.00",
            method=OfflineMethod.BANK_TRANSFER,
            reference="NEFT 881",
            explorer_url=None,
        )
    variables = {"paymentId": str(payment.id)}

    # when the owner, and then the client's lead, ask to upload a PDF for the payment
    by_owner = await gql.execute(CREATE_PAYMENT_UPLOAD, variables, token=owner.token)
    by_lead = await gql.execute(CREATE_PAYMENT_UPLOAD, variables, token=lead.token)

    # then the owner's upload is for the payment's invoice, and the lead may not upload
    assert by_owner["result"]["__typename"] == "InvoiceUpload"
    assert by_owner["result"]["invoice"] == {"id": str(invoice.id)}
    assert by_owner["result"]["uploadUrl"].startswith("http://settle.test/files/invoice-uploads/")
    assert by_lead["result"] == {"__typename": "PermissionDeniedError", "code": "PERMISSION_DENIED"}
