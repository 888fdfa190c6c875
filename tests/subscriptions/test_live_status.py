"""milestoneStatusChanged, invoiceStatusChanged and projectPaymentStatusChanged over a real
websocket: changes made through the API and a gateway's webhook, heard live, by whom may see them.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from settle.core import clock
from settle.core.outbox import transaction
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.invoice import Invoice
from settle.models.milestone import Milestone, MilestoneStatus
from settle.models.project import Project
from settle.services import invoice as invoice_service
from settle.services import payment as payment_service
from settle.subscriptions import channels
from settle.subscriptions.bus import get_bus
from tests.conftest import Backend, wait_for
from tests.fixtures.factories import Account, create_client, create_project, create_user
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.websocket import Subscription

MILESTONE_STATUS_CHANGED = """
subscription MilestoneStatusChanged($projectId: ID!, $milestoneId: ID) {
  milestoneStatusChanged(projectId: $projectId, milestoneId: $milestoneId) {
    milestoneId projectId title status previousStatus paymentStatus
    amount { amount currency } amountPaid { amount }
  }
}
"""

INVOICE_STATUS_CHANGED = """
subscription InvoiceStatusChanged($clientId: ID!, $invoiceId: ID) {
  invoiceStatusChanged(clientId: $clientId, invoiceId: $invoiceId) {
    invoiceId clientId projectId number status previousStatus
    total { amount currency } amountDue { amount }
  }
}
"""

PROJECT_PAYMENT_STATUS_CHANGED = """
subscription ProjectPaymentStatusChanged($projectId: ID!) {
  projectPaymentStatusChanged(projectId: $projectId) {
    projectId currency
    total { amount } paid { amount } outstanding { amount } refunded { amount }
    advance { milestoneId status amount { amount } }
    balance { milestoneId status amount { amount } }
    nextDue { milestoneId title amount { amount } }
  }
}
"""

PROJECT_PAYMENT_STATUS = """
query ProjectPaymentStatus($projectId: ID!) {
  projectPaymentStatus(projectId: $projectId) {
    projectId currency
    total { amount } paid { amount } outstanding { amount } refunded { amount }
    advance { milestoneId status amount { amount } }
    balance { milestoneId status amount { amount } }
    nextDue { milestoneId title amount { amount } }
  }
}
"""

ERROR_FIELDS = "... on Error { code message }"

CREATE_MILESTONE = f"""
mutation CreateMilestone($input: CreateMilestoneInput!) {{
  createMilestone(input: $input) {{ __typename ... on Milestone {{ id }} {ERROR_FIELDS} }}
}}
"""


def transition(field: str) -> str:
    return f"""
mutation Transition($id: ID!) {{
  {field}(id: $id) {{ __typename ... on Milestone {{ status }} {ERROR_FIELDS} }}
}}
"""


MARK_MILESTONE_PAID = f"""
mutation MarkMilestonePaid($id: ID!) {{
  markMilestonePaid(id: $id, reference: "Bank transfer 42") {{
    __typename ... on Milestone {{ status }} {ERROR_FIELDS}
  }}
}}
"""

CREATE_INVOICE = f"""
mutation CreateInvoice($input: CreateInvoiceInput!) {{
  createInvoice(input: $input) {{ __typename ... on Invoice {{ id }} {ERROR_FIELDS} }}
}}
"""

FINALIZE_INVOICE = f"""
mutation FinalizeInvoice($id: ID!) {{
  finalizeInvoice(id: $id) {{ __typename ... on Invoice {{ status }} {ERROR_FIELDS} }}
}}
"""

RECORD_OFFLINE_PAYMENT = f"""
mutation RecordOfflinePayment($invoiceId: ID!, $amount: String!) {{
  recordOfflinePayment(
    invoiceId: $invoiceId, amount: $amount, method: CASH, reference: "Receipt 7"
  ) {{ __typename ... on Payment {{ id }} {ERROR_FIELDS} }}
}}
"""

ISSUE_CREDIT_NOTE = f"""
mutation IssueCreditNote($input: IssueCreditNoteInput!) {{
  issueCreditNote(input: $input) {{ __typename {ERROR_FIELDS} }}
}}
"""

VOID_INVOICE = f"""
mutation VoidInvoice($id: ID!) {{
  voidInvoice(id: $id, reason: "Sent twice") {{
    __typename ... on Invoice {{ status }} {ERROR_FIELDS}
  }}
}}
"""

PAY_MILESTONES = """
mutation PayMilestones($milestoneIds: [ID!]!) {
  payMilestones(milestoneIds: $milestoneIds) {
    __typename
    ... on PaymentCheckout { payment { id } checkout { checkoutUrl } }
  }
}
"""

REFUND_PAYMENT = f"""
mutation RefundPayment($paymentId: ID!) {{
  refundPayment(paymentId: $paymentId, reason: "Scope cut") {{ __typename {ERROR_FIELDS} }}
}}
"""


def milestones_of(**arguments: str) -> tuple[str, str, dict[str, str]]:
    return MILESTONE_STATUS_CHANGED, "milestoneStatusChanged", arguments


def invoices_of(**arguments: str) -> tuple[str, str, dict[str, str]]:
    return INVOICE_STATUS_CHANGED, "invoiceStatusChanged", arguments


def payment_status_of(**arguments: str) -> tuple[str, str, dict[str, str]]:
    return PROJECT_PAYMENT_STATUS_CHANGED, "projectPaymentStatusChanged", arguments


def subscriber(url: str, account: Account, spec: tuple[str, str, dict[str, str]]) -> Subscription:
    query, field, variables = spec
    return Subscription(url, query, field, token=account.token, variables=variables)


async def until_subscribed(channel: str, count: int) -> None:
    async def subscribed() -> bool:
        return await get_bus().subscriber_count(channel) == count

    await wait_for(subscribed)


async def ok(gql: GraphQLClient, operation: str, variables: dict[str, Any], token: str) -> Any:
    data = await gql.execute(operation, variables, token=token)
    (result,) = data.values()
    assert "code" not in result, result
    return result


def milestone_event(
    milestone: Milestone | str,
    status: str,
    previous: str | None,
    payment_status: str = "UNPAID",
    *,
    project: Project,
    title: str = "Design",
    paid: str = "0.00",
) -> dict[str, Any]:
    return {
        "milestoneId": str(milestone if isinstance(milestone, str) else milestone.id),
        "projectId": str(project.id),
        "title": title,
        "status": status,
        "previousStatus": previous,
        "paymentStatus": payment_status,
        "amount": {"amount": "1000.00", "currency": "INR"},
        "amountPaid": {"amount": paid},
    }


def invoice_event(
    invoice: Invoice, status: str, previous: str | None, due: str, *, number: bool = True
) -> dict[str, Any]:
    return {
        "invoiceId": str(invoice.id),
        "clientId": str(invoice.client_id),
        "projectId": str(invoice.project_id) if invoice.project_id else None,
        "number": invoice.number if number else None,
        "status": status,
        "previousStatus": previous,
        "total": {"amount": "1000.00", "currency": "INR"},
        "amountDue": {"amount": due},
    }


async def milestone_fence(
    account: Account, project: Project, milestone_id: uuid.UUID | str | None = None
) -> dict[str, Any]:
    """A marker status change published on the agency's milestones channel; as it is heard.

    A subscriber whose next event is the marker heard nothing else before it.
    """
    marker = str(milestone_id or uuid.uuid4())
    await get_bus().publish(
        channels.milestones(account.agency_id),
        {
            "eventId": str(uuid.uuid4()),
            "milestoneId": marker,
            "agencyId": str(account.agency_id),
            "clientId": str(project.client_id),
            "projectId": str(project.id),
            "title": "Fence",
            "status": "pending",
            "previousStatus": None,
            "paymentStatus": "unpaid",
            "amountMinor": 100_000,
            "amountPaidMinor": 0,
            "currency": "INR",
            "statusChanged": True,
            "changedAt": clock.now().isoformat(),
        },
    )
    return milestone_event(marker, "PENDING", None, project=project, title="Fence")


async def invoice_fence(account: Account, client: Client) -> dict[str, Any]:
    """A marker status change published on the agency's invoices channel; as it is heard."""
    marker = str(uuid.uuid4())
    await get_bus().publish(
        channels.invoices(account.agency_id),
        {
            "invoiceId": marker,
            "agencyId": str(account.agency_id),
            "clientId": str(client.id),
            "projectId": None,
            "number": "FENCE",
            "status": "sent",
            "previousStatus": "draft",
            "totalMinor": 100_000,
            "dueMinor": 100_000,
            "currency": "INR",
            "internal": False,
            "changedAt": clock.now().isoformat(),
        },
    )
    return {
        "invoiceId": marker,
        "clientId": str(client.id),
        "projectId": None,
        "number": "FENCE",
        "status": "SENT",
        "previousStatus": "DRAFT",
        "total": {"amount": "1000.00", "currency": "INR"},
        "amountDue": {"amount": "1000.00"},
    }


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="INR")


@pytest.fixture
async def project(owner: Account, client: Client) -> Project:
    return await create_project(owner, client)


@pytest.fixture
async def lead(owner: Account, client: Client) -> Account:
    return await create_user(owner, role=Role.CLIENT_LEAD, client=client)


# --- milestones --------------------------------------------------------------------------------


async def test_every_milestone_status_change_made_through_the_api_is_heard(
    db: Backend,
    ws_url: str,
    gql: GraphQLClient,
    owner: Account,
    lead: Account,
    client: Client,
    project: Project,
) -> None:
    # given the owner subscribed to the project's milestones, and another project beside it
    other = await create_project(owner, client, name="Other")
    channel = channels.milestones(owner.agency_id)
    async with subscriber(ws_url, owner, milestones_of(projectId=str(project.id))) as watcher:
        await until_subscribed(channel, 1)

        # when a milestone is added to each project
        created = await ok(
            gql,
            CREATE_MILESTONE,
            {"input": {"projectId": str(project.id), "title": "Design", "amount": "1000.00"}},
            owner.token,
        )
        await ok(
            gql,
            CREATE_MILESTONE,
            {"input": {"projectId": str(other.id), "title": "Elsewhere", "amount": "5.00"}},
            owner.token,
        )
        milestone_id = created["id"]

        # then the owner hears only its project's new milestone
        assert await watcher.next() == milestone_event(
            milestone_id, "PENDING", None, project=project
        )

        # when the client lead watches that one milestone too, and it goes through its life
        async with subscriber(
            ws_url, lead, milestones_of(projectId=str(project.id), milestoneId=milestone_id)
        ) as follower:
            await until_subscribed(channel, 2)
            for field, token in (
                ("startMilestone", owner.token),
                ("submitMilestone", owner.token),
                ("rejectMilestone", lead.token),
                ("startMilestone", owner.token),
                ("submitMilestone", owner.token),
                ("approveMilestone", lead.token),
            ):
                operation = transition(field)
                if field == "rejectMilestone":
                    operation = operation.replace("$id: ID!)", "$id: ID!, $reason: String!)")
                    operation = operation.replace("(id: $id)", "(id: $id, reason: $reason)")
                    await ok(gql, operation, {"id": milestone_id, "reason": "Too blue"}, token)
                else:
                    await ok(gql, operation, {"id": milestone_id}, token)
            await db.drain()  # the approval's invoice is issued by the worker
            await ok(gql, MARK_MILESTONE_PAID, {"id": milestone_id}, owner.token)

            # then both hear every status, in order, exactly
            steps = [
                ("IN_PROGRESS", "PENDING", "UNPAID", "0.00"),
                ("SUBMITTED", "IN_PROGRESS", "UNPAID", "0.00"),
                ("REJECTED", "SUBMITTED", "UNPAID", "0.00"),
                ("IN_PROGRESS", "REJECTED", "UNPAID", "0.00"),
                ("SUBMITTED", "IN_PROGRESS", "UNPAID", "0.00"),
                ("APPROVED", "SUBMITTED", "UNPAID", "0.00"),
                ("PAID", "APPROVED", "PAID", "1000.00"),
            ]
            expected = [
                milestone_event(milestone_id, status, previous, pay, project=project, paid=paid)
                for status, previous, pay, paid in steps
            ]
            assert [await watcher.next() for _ in expected] == expected
            assert [await follower.next() for _ in expected] == expected
            # and nothing else before a marker
            marker = await milestone_fence(owner, project, milestone_id)
            assert await watcher.next() == marker
            assert await follower.next() == marker


# --- a payment through the gateway and its refund ---------------------------------------------


async def test_a_sandbox_payment_and_its_refund_are_heard_on_all_three(
    db: Backend,
    ws_url: str,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    lead: Account,
    client: Client,
    project: Project,
) -> None:
    # given an approved ₹1,000.00 milestone, and the lead watching it, its client's invoices
    # and its project's payment status
    milestone = await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency="INR",
        title="Design",
        amount_minor=100_000,
        status=MilestoneStatus.APPROVED,
    )
    async with (
        subscriber(
            ws_url, lead, milestones_of(projectId=str(project.id), milestoneId=str(milestone.id))
        ) as milestones,
        subscriber(ws_url, owner, invoices_of(clientId=str(client.id))) as agency_invoices,
        subscriber(ws_url, lead, invoices_of(clientId=str(client.id))) as client_invoices,
        subscriber(ws_url, lead, payment_status_of(projectId=str(project.id))) as status,
    ):
        # then the payment status comes first as the query gives it
        query = await gql.execute(
            PROJECT_PAYMENT_STATUS, {"projectId": str(project.id)}, token=lead.token
        )
        unpaid = query["projectPaymentStatus"]
        assert await status.next() == unpaid
        assert unpaid["outstanding"] == {"amount": "1000.00"}
        await until_subscribed(channels.milestones(owner.agency_id), 2)
        await until_subscribed(channels.invoices(owner.agency_id), 2)

        # when the lead pays it on the sandbox's page (the webhook lands it)
        started = await gql.execute(
            PAY_MILESTONES, {"milestoneIds": [str(milestone.id)]}, token=lead.token
        )
        path = urlsplit(started["payMilestones"]["checkout"]["checkoutUrl"]).path
        assert (await http.post(f"{path}/succeed")).status_code == 200
        await db.drain()

        # then the milestone is heard processing, then paid
        assert [await milestones.next() for _ in range(2)] == [
            milestone_event(milestone, "APPROVED", "APPROVED", "PROCESSING", project=project),
            milestone_event(milestone, "PAID", "APPROVED", "PAID", project=project, paid="1000.00"),
        ]
        # and its invoice: the agency hears it drafted, issued and paid; the client from issue
        invoice = await Invoice.get(client_id=client.id)
        issued = [
            invoice_event(invoice, "SENT", "DRAFT", "1000.00"),
            invoice_event(invoice, "PAID", "SENT", "0.00"),
        ]
        drafted = invoice_event(invoice, "DRAFT", None, "1000.00", number=False)
        assert [await agency_invoices.next() for _ in range(3)] == [drafted, *issued]
        assert [await client_invoices.next() for _ in range(2)] == issued
        # and the payment status is pushed once, paid (processing changed none of it)
        paid = await gql.execute(
            PROJECT_PAYMENT_STATUS, {"projectId": str(project.id)}, token=lead.token
        )
        assert paid["projectPaymentStatus"]["outstanding"] == {"amount": "0.00"}
        assert await status.next() == paid["projectPaymentStatus"]

        # when the owner refunds it in full (the sandbox settles it in the worker)
        payment_id = started["payMilestones"]["payment"]["id"]
        await ok(gql, REFUND_PAYMENT, {"paymentId": payment_id}, owner.token)
        await db.drain()

        # then the milestone reopens, the invoice is due again, and the status says so
        assert await milestones.next() == milestone_event(
            milestone, "APPROVED", "PAID", "REFUNDED", project=project, paid="1000.00"
        )
        reopened = invoice_event(invoice, "SENT", "PAID", "1000.00")
        assert await agency_invoices.next() == reopened
        assert await client_invoices.next() == reopened
        refunded = await gql.execute(
            PROJECT_PAYMENT_STATUS, {"projectId": str(project.id)}, token=lead.token
        )
        assert refunded["projectPaymentStatus"]["refunded"] == {"amount": "1000.00"}
        assert await status.next() == refunded["projectPaymentStatus"]
        # and nothing else came before markers (a new milestone changes the status once more)
        marker = await milestone_fence(owner, project, milestone.id)
        assert await milestones.next() == marker
        marker = await invoice_fence(owner, client)
        assert await agency_invoices.next() == marker
        assert await client_invoices.next() == marker
        await ok(
            gql,
            CREATE_MILESTONE,
            {"input": {"projectId": str(project.id), "title": "Build", "amount": "500.00"}},
            owner.token,
        )
        grown = await gql.execute(
            PROJECT_PAYMENT_STATUS, {"projectId": str(project.id)}, token=lead.token
        )
        assert grown["projectPaymentStatus"]["total"] == {"amount": "1500.00"}
        assert await status.next() == grown["projectPaymentStatus"]


# --- invoices ------------------------------------------------------------------------------------


MARK_INVOICE_VIEWED = f"""
mutation MarkInvoiceViewed($id: ID!) {{
  markInvoiceViewed(id: $id) {{ __typename ... on Invoice {{ status }} {ERROR_FIELDS} }}
}}
"""


async def draft(gql: GraphQLClient, owner: Account, client: Client) -> str:
    created = await ok(
        gql,
        CREATE_INVOICE,
        {
            "input": {
                "clientId": str(client.id),
                "lines": [{"description": "Design", "quantity": "1", "unitPrice": "1000.00"}],
            }
        },
        owner.token,
    )
    return str(created["id"])


async def test_every_invoice_status_change_is_heard_by_its_audience(
    db: Backend, ws_url: str, gql: GraphQLClient, owner: Account, lead: Account, client: Client
) -> None:
    # given the owner and the client's lead watching the client's invoices, and a lead of
    # another client watching theirs
    other = await create_client(owner, name="Other", currency="INR")
    outsider = await create_user(owner, role=Role.CLIENT_LEAD, client=other)
    channel = channels.invoices(owner.agency_id)
    async with (
        subscriber(ws_url, owner, invoices_of(clientId=str(client.id))) as agency_side,
        subscriber(ws_url, lead, invoices_of(clientId=str(client.id))) as client_side,
        subscriber(ws_url, outsider, invoices_of(clientId=str(other.id))) as stranger,
    ):
        await until_subscribed(channel, 3)

        # when a draft is made and issued, viewed by the lead, paid in part in cash, and the
        # rest forgiven with a credit note
        first = await draft(gql, owner, client)
        await ok(gql, FINALIZE_INVOICE, {"id": first}, owner.token)
        await ok(gql, MARK_INVOICE_VIEWED, {"id": first}, lead.token)
        await ok(gql, RECORD_OFFLINE_PAYMENT, {"invoiceId": first, "amount": "400.00"}, owner.token)
        await ok(
            gql,
            ISSUE_CREDIT_NOTE,
            {"input": {"invoiceId": first, "amount": "600.00", "reason": "Goodwill"}},
            owner.token,
        )
        # and a second is issued, and voided
        second = await draft(gql, owner, client)
        await ok(gql, FINALIZE_INVOICE, {"id": second}, owner.token)
        await ok(gql, VOID_INVOICE, {"id": second}, owner.token)
        # and a third is issued, and the daily sweep finds it past due
        third = await draft(gql, owner, client)
        await ok(gql, FINALIZE_INVOICE, {"id": third}, owner.token)
        async with transaction():
            assert await invoice_service.mark_overdue(on=date.today() + timedelta(days=400)) == 1

        # then the agency hears every status, drafts included, in order
        one, two, three = [await Invoice.get(id=i) for i in (first, second, third)]
        issued = [
            invoice_event(one, "SENT", "DRAFT", "1000.00"),
            invoice_event(one, "VIEWED", "SENT", "1000.00"),
            invoice_event(one, "PARTIALLY_PAID", "VIEWED", "600.00"),
            invoice_event(one, "PAID", "PARTIALLY_PAID", "0.00"),
            invoice_event(two, "SENT", "DRAFT", "1000.00"),
            invoice_event(two, "VOID", "SENT", "0.00"),
            invoice_event(three, "SENT", "DRAFT", "1000.00"),
            invoice_event(three, "OVERDUE", "SENT", "1000.00"),
        ]
        drafts = {
            0: invoice_event(one, "DRAFT", None, "1000.00", number=False),
            4: invoice_event(two, "DRAFT", None, "1000.00", number=False),
            6: invoice_event(three, "DRAFT", None, "1000.00", number=False),
        }
        expected: list[dict[str, Any]] = []
        for index, event in enumerate(issued):
            if index in drafts:
                expected.append(drafts[index])
            expected.append(event)
        assert [await agency_side.next() for _ in expected] == expected
        # and the client's lead every one from issue on, no draft
        assert [await client_side.next() for _ in issued] == issued
        # and nothing else, nor anything at all of another client's invoices
        marker = await invoice_fence(owner, client)
        assert await agency_side.next() == marker
        assert await client_side.next() == marker
        marker = await invoice_fence(owner, other)
        assert await stranger.next() == marker


async def test_a_subscription_to_one_invoice_hears_only_that_invoice(
    db: Backend, ws_url: str, gql: GraphQLClient, owner: Account, client: Client
) -> None:
    # given two drafts of one client, and a subscription to the second
    first, second = await draft(gql, owner, client), await draft(gql, owner, client)
    async with subscriber(
        ws_url, owner, invoices_of(clientId=str(client.id), invoiceId=second)
    ) as watcher:
        await until_subscribed(channels.invoices(owner.agency_id), 1)

        # when both are issued
        for invoice_id in (first, second):
            await ok(gql, FINALIZE_INVOICE, {"id": invoice_id}, owner.token)

        # then only the second is heard
        assert await watcher.next() == invoice_event(
            await Invoice.get(id=second), "SENT", "DRAFT", "1000.00"
        )


# --- one computation per event, and nothing across agencies ------------------------------------


async def test_a_projects_payment_status_is_computed_once_per_event_for_all_its_subscribers(
    db: Backend,
    ws_url: str,
    gql: GraphQLClient,
    monkeypatch: pytest.MonkeyPatch,
    owner: Account,
    lead: Account,
    project: Project,
) -> None:
    # given three subscribers to one project's payment status, each told it at once
    computed: list[uuid.UUID] = []
    compute = payment_service.payment_status_of

    async def counted(row: Project) -> payment_service.ProjectPaymentStatus:
        computed.append(row.id)
        return await compute(row)

    monkeypatch.setattr(payment_service, "payment_status_of", counted)
    spec = payment_status_of(projectId=str(project.id))
    async with (
        subscriber(ws_url, owner, spec) as first,
        subscriber(ws_url, owner, spec) as second,
        subscriber(ws_url, lead, spec) as third,
    ):
        empty = [await s.next() for s in (first, second, third)]
        assert [e["total"] for e in empty] == [{"amount": "0.00"}] * 3
        await until_subscribed(channels.milestones(owner.agency_id), 3)
        assert computed == [project.id] * 3

        # when one milestone is added
        await ok(
            gql,
            CREATE_MILESTONE,
            {"input": {"projectId": str(project.id), "title": "Design", "amount": "1000.00"}},
            owner.token,
        )

        # then each hears the new status, computed once for the three
        pushed = [await s.next() for s in (first, second, third)]
        assert computed == [project.id] * 4
        query = await gql.execute(
            PROJECT_PAYMENT_STATUS, {"projectId": str(project.id)}, token=owner.token
        )
        assert pushed == [query["projectPaymentStatus"]] * 3


async def test_no_status_change_reaches_another_agency(
    db: Backend,
    ws_url: str,
    gql: GraphQLClient,
    owner: Account,
    rival: Account,
    client: Client,
    project: Project,
) -> None:
    # given the rival watching its own client's invoices and project's milestones
    rival_client = await create_client(rival, name="Rivalco", currency="INR")
    rival_project = await create_project(rival, rival_client)
    async with (
        subscriber(ws_url, rival, milestones_of(projectId=str(rival_project.id))) as milestones,
        subscriber(ws_url, rival, invoices_of(clientId=str(rival_client.id))) as invoices,
    ):
        await until_subscribed(channels.milestones(rival.agency_id), 1)
        await until_subscribed(channels.invoices(rival.agency_id), 1)

        # when the owner's agency adds a milestone and issues an invoice
        await ok(
            gql,
            CREATE_MILESTONE,
            {"input": {"projectId": str(project.id), "title": "Design", "amount": "1000.00"}},
            owner.token,
        )
        await ok(gql, FINALIZE_INVOICE, {"id": await draft(gql, owner, client)}, owner.token)

        # then the rival hears none of it
        marker = await milestone_fence(rival, rival_project)
        assert await milestones.next() == marker
        marker = await invoice_fence(rival, rival_client)
        assert await invoices.next() == marker
