"""Credit notes through the API: issuing one, what it does to the invoice, reading, numbering."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from settle.core import clock
from settle.core.outbox import transaction
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.invoice import CreditNote, Invoice, InvoiceCounter, InvoiceLine, InvoiceStatus
from settle.models.milestone import Milestone, MilestonePaymentStatus, MilestoneStatus
from settle.models.payment import OfflineMethod
from settle.models.project import Project
from settle.services import invoice as invoice_service
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
from tests.fixtures.sandbox import approved_milestone

MONEY = "{ amount currency minorUnits }"

CREDIT_NOTE_FIELDS = f"""
    id number invoiceId clientId amount {MONEY} reason issueDate createdAt
    createdBy {{ name }}
    pdfUrl {{ url expiresAt }}
"""

ISSUE_CREDIT_NOTE = f"""
mutation IssueCreditNote($input: IssueCreditNoteInput!) {{
  result: issueCreditNote(input: $input) {{
    __typename
    ... on CreditNotePayload {{
      creditNote {{ {CREDIT_NOTE_FIELDS} }}
      invoice {{ id status amountPaid {MONEY} amountCredited {MONEY} amountDue {MONEY} paidAt }}
    }}
    ... on Error {{ __typename code message }}
    ... on ValidationError {{ field }}
    ... on InvalidTransitionError {{ currentState }}
  }}
}}
"""

CREDIT_NOTE = f"""
query CreditNote($id: ID!) {{
  creditNote(id: $id) {{ {CREDIT_NOTE_FIELDS} invoice {{ number }} }}
}}
"""

CREDIT_NOTES = """
query CreditNotes($first: Int!, $after: String, $filter: CreditNoteFilter) {
  creditNotes(first: $first, after: $after, filter: $filter) {
    totalCount
    edges { node { number invoiceId } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

INVOICE_CREDIT_NOTES = """
query InvoiceCreditNotes($id: ID!) {
  invoice(id: $id) {
    amountCredited { amount }
    creditNotes { number amount { amount } reason }
    timeline(first: 10) { edges { node { verb summary } } }
  }
}
"""

START = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.set_clock(lambda: START)
    yield
    clock.set_clock(None)


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="INR")


@pytest.fixture
async def project(owner: Account, client: Client) -> Project:
    return await create_project(owner, client)


@pytest.fixture
async def lead(owner: Account, client: Client) -> Account:
    return await create_user(owner, role=Role.CLIENT_LEAD, client=client, name="Lee Lead")


def money(amount: str, currency: str = "INR") -> dict[str, Any]:
    """Money as the API shows it, from its decimal amount ("2654.99")."""
    return {"amount": amount, "currency": currency, "minorUnits": int(amount.replace(".", ""))}


async def issued(owner: Account, client: Client, unit_price: str = "1000.00") -> Invoice:
    """An issued INR invoice of one line, no tax."""
    draft = await create_invoice(
        owner, client, lines=({"description": "Design", "quantity": "1", "unit_price": unit_price},)
    )
    return await issue_invoice(owner, draft)


async def record_payment(owner: Account, invoice: Invoice, amount: str) -> None:
    async with transaction():
        await payment_service.record_offline_payment(
            owner.actor,
            invoice.id,
            amount=amount,
            method=OfflineMethod.BANK_TRANSFER,
            reference="NEFT 1",
            explorer_url=None,
        )


async def issue(
    gql: GraphQLClient, account: Account, invoice_id: Any, amount: str, reason: str = "Late"
) -> dict[str, Any]:
    data = await gql.execute(
        ISSUE_CREDIT_NOTE,
        {"input": {"invoiceId": str(invoice_id), "amount": amount, "reason": reason}},
        token=account.token,
    )
    result: dict[str, Any] = data["result"]
    return result


async def money_of(invoice: Invoice) -> tuple[Any, ...]:
    row = await Invoice.get(id=invoice.id)
    return (row.status, row.amount_paid_minor, row.amount_credited_minor, row.paid_at)


# --- issuing ---------------------------------------------------------------------------


async def test_a_credit_note_forgives_part_of_what_is_due(
    db: Backend, gql: GraphQLClient, owner: Account, client: Client
) -> None:
    # given an issued invoice of 1,000.00 with 400.00 paid
    invoice = await issued(owner, client)
    await record_payment(owner, invoice, "400.00")

    # when the owner forgives 250.00 of it
    result = await issue(gql, owner, invoice.id, "250.00", " Delivered a week late ")

    # then the credit note is the agency's first, and the invoice owes 350.00 now
    note = await CreditNote.get(invoice_id=invoice.id)
    assert datetime.fromisoformat(result["creditNote"].pop("createdAt")) == note.created_at
    assert result == {
        "__typename": "CreditNotePayload",
        "creditNote": {
            "id": str(note.id),
            "number": "CN-2026-0001",
            "invoiceId": str(invoice.id),
            "clientId": str(client.id),
            "amount": money("250.00"),
            "reason": "Delivered a week late",
            "issueDate": "2026-03-10",
            "createdBy": {"name": "Olive Owner"},
            # rendered by a worker once the credit note is committed
            "pdfUrl": None,
        },
        "invoice": {
            "id": str(invoice.id),
            "status": "PARTIALLY_PAID",
            "amountPaid": money("400.00"),
            "amountCredited": money("250.00"),
            "amountDue": money("350.00"),
            "paidAt": None,
        },
    }
    # and once the worker has run, it has its PDF and it is on the invoice and the timeline
    await db.drain()
    data = await gql.execute(INVOICE_CREDIT_NOTES, {"id": str(invoice.id)}, token=owner.token)
    assert data["invoice"]["amountCredited"] == {"amount": "250.00"}
    assert data["invoice"]["creditNotes"] == [
        {
            "number": "CN-2026-0001",
            "amount": {"amount": "250.00"},
            "reason": "Delivered a week late",
        }
    ]
    assert {
        "verb": "credited",
        "summary": "Invoice INV-2026-0001: 250.00 INR forgiven by credit note CN-2026-0001",
    } in [edge["node"] for edge in data["invoice"]["timeline"]["edges"]]
    events = await ActivityEvent.filter(entity_type="credit_note", entity_id=note.id)
    assert sorted((e.verb, e.summary, e.actor_id) for e in events) == [
        (
            "issued",
            "Credit note CN-2026-0001 of ₹250.00 issued against Invoice INV-2026-0001: "
            "Delivered a week late",
            owner.user.id,
        ),
        ("pdf_rendered", "Credit note CN-2026-0001 PDF rendered", None),
    ]
    read = await gql.execute(CREDIT_NOTE, {"id": str(note.id)}, token=owner.token)
    signed = read["creditNote"]["pdfUrl"]
    assert signed["url"].startswith("http://settle.test/files/credit-notes/")
    assert signed["expiresAt"] == (START + timedelta(minutes=15)).isoformat()
    assert read["creditNote"]["invoice"] == {"number": "INV-2026-0001"}


async def test_a_credit_note_for_all_that_is_due_settles_the_invoice_and_its_milestone(
    db: Backend, gql: GraphQLClient, owner: Account, project: Project
) -> None:
    # given an approved milestone of 500.00 and the invoice its approval issued
    milestone = await approved_milestone(owner, project, amount="500.00")
    await db.drain()
    invoice = await Invoice.get(status=InvoiceStatus.SENT)

    # when the owner forgives all of it
    result = await issue(gql, owner, invoice.id, "500.00", "Goodwill")

    # then nothing is due: the invoice is paid, though no money was received
    assert result["invoice"] == {
        "id": str(invoice.id),
        "status": "PAID",
        "amountPaid": money("0.00"),
        "amountCredited": money("500.00"),
        "amountDue": money("0.00"),
        "paidAt": START.isoformat(),
    }
    # and its milestone is paid too, by the credit
    row = await Milestone.get(id=milestone.id)
    assert (row.status, row.payment_status, row.amount_credited_minor, row.paid_at) == (
        MilestoneStatus.PAID,
        MilestonePaymentStatus.PAID,
        50_000,
        START,
    )


async def test_refused_credit_notes_change_nothing_and_use_no_number(
    db: Backend, gql: GraphQLClient, owner: Account, client: Client
) -> None:
    # given an invoice owing 1,000.00, a draft, a paid invoice and a void one
    invoice = await issued(owner, client)
    draft = await create_invoice(owner, client)
    paid = await issued(owner, client, "300.00")
    await record_payment(owner, paid, "300.00")
    void = await issued(owner, client, "200.00")
    async with transaction():
        await invoice_service.void_invoice(owner.actor, void.id, "Wrong client")
    await db.drain()
    before = await row_counts(CreditNote, Invoice, InvoiceCounter)
    amounts = [await money_of(row) for row in (invoice, paid, void)]

    # when credit notes are asked for with bad input, or for what cannot be credited
    answers = [
        await issue(gql, owner, invoice.id, "1000.01"),
        await issue(gql, owner, invoice.id, "0"),
        await issue(gql, owner, invoice.id, "-5.00"),
        await issue(gql, owner, invoice.id, "10.001"),
        await issue(gql, owner, invoice.id, "10.00", "   "),
        await issue(gql, owner, invoice.id, "10.00", "x" * 2001),
        await issue(gql, owner, draft.id, "10.00"),
        await issue(gql, owner, paid.id, "10.00"),
        await issue(gql, owner, void.id, "10.00"),
        await issue(gql, owner, "not-an-id", "10.00"),
    ]

    # then each is refused with its own code
    out_of_range = {
        "__typename": "ValidationError",
        "code": "OUT_OF_RANGE",
        "message": "amount must be above 0 and at most the 1000.00 INR due",
        "field": "amount",
    }
    assert answers == [
        out_of_range,
        out_of_range,
        out_of_range,
        {
            "__typename": "ValidationError",
            "code": "VALIDATION_ERROR",
            "message": "INR amounts have at most 2 decimal places",
            "field": "amount",
        },
        {
            "__typename": "ValidationError",
            "code": "REQUIRED",
            "message": "reason must not be empty",
            "field": "reason",
        },
        {
            "__typename": "ValidationError",
            "code": "TOO_LONG",
            "message": "reason must be at most 2000 characters",
            "field": "reason",
        },
        # a draft is not an invoice yet: there is nothing to credit
        {"__typename": "NotFoundError", "code": "NOT_FOUND", "message": "Invoice not found"},
        {
            "__typename": "ConflictError",
            "code": "CONFLICT",
            "message": "Nothing is due on Invoice INV-2026-0002: there is nothing to forgive",
        },
        {
            "__typename": "InvalidTransitionError",
            "code": "INVALID_TRANSITION",
            "message": "Invoice cannot move from void to credited",
            "currentState": "void",
        },
        {
            "__typename": "ValidationError",
            "code": "INVALID_ID",
            "message": "invoiceId is not a valid id",
            "field": "invoiceId",
        },
    ]
    # and nothing was written, no number taken, no invoice changed
    assert await row_counts(CreditNote, Invoice, InvoiceCounter) == before
    assert [await money_of(row) for row in (invoice, paid, void)] == amounts
    # so the next credit note is still the first
    accepted = await issue(gql, owner, invoice.id, "1000.00")
    assert accepted["creditNote"]["number"] == "CN-2026-0001"


async def test_owners_and_admins_issue_and_the_clients_users_read(
    db: Backend, gql: GraphQLClient, owner: Account, client: Client, lead: Account
) -> None:
    # given an issued invoice, the client's lead, an admin, a member and another client's lead
    invoice = await issued(owner, client)
    admin = await create_user(owner, role=Role.ADMIN, name="Ada Admin")
    member = await create_user(owner, role=Role.MEMBER)
    other = await create_user(
        owner, role=Role.CLIENT_LEAD, client=await create_client(owner, name="Other")
    )
    await db.drain()
    before = await row_counts(CreditNote, Invoice)

    # when the lead and a member try to forgive money
    refused = [await issue(gql, account, invoice.id, "10.00") for account in (lead, member)]
    # then they may not, and nothing changes
    denied = {
        "__typename": "PermissionDeniedError",
        "code": "PERMISSION_DENIED",
        "message": "You are not allowed to do this",
    }
    assert refused == [denied, denied]
    assert await row_counts(CreditNote, Invoice) == before

    # when an admin does
    issued_note = await issue(gql, admin, invoice.id, "10.00")
    assert issued_note["creditNote"]["createdBy"] == {"name": "Ada Admin"}
    note_id = issued_note["creditNote"]["id"]
    await db.drain()

    # then the client's lead reads it, with its PDF, alone and on the invoice
    mine = await gql.execute(CREDIT_NOTE, {"id": note_id}, token=lead.token)
    assert mine["creditNote"]["number"] == "CN-2026-0001"
    assert mine["creditNote"]["pdfUrl"] is not None
    listed = await gql.execute(CREDIT_NOTES, {"first": 10}, token=lead.token)
    assert listed["creditNotes"]["totalCount"] == 1
    on_invoice = await gql.execute(INVOICE_CREDIT_NOTES, {"id": str(invoice.id)}, token=lead.token)
    assert [n["number"] for n in on_invoice["invoice"]["creditNotes"]] == ["CN-2026-0001"]
    # and another client's lead sees nothing of it
    assert await gql.execute(CREDIT_NOTE, {"id": note_id}, token=other.token) == {
        "creditNote": None
    }
    assert (await gql.execute(CREDIT_NOTES, {"first": 10}, token=other.token))["creditNotes"] == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }


async def test_the_clients_lead_downloads_the_pdf(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    lead: Account,
    client: Client,
) -> None:
    # given a credit note, rendered
    invoice = await issued(owner, client)
    note_id = (await issue(gql, owner, invoice.id, "120.50", "Rounding"))["creditNote"]["id"]
    await db.drain()
    # when the client's lead follows its pdfUrl
    data = await gql.execute(CREDIT_NOTE, {"id": note_id}, token=lead.token)
    response = await http.get(data["creditNote"]["pdfUrl"]["url"])
    # then the PDF arrives, named by its number
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert "CN-2026-0001.pdf" in response.headers["content-disposition"]
    assert response.content.startswith(b"%PDF-")


# --- numbering ---------------------------------------------------------------------------


async def test_credit_notes_are_numbered_in_their_own_sequence(
    gql: GraphQLClient, owner: Account, client: Client
) -> None:
    # given two issued invoices, INV-2026-0001 and 0002
    first = await issued(owner, client)
    second = await issued(owner, client)

    # when a credit note is issued on each
    numbers = [
        (await issue(gql, owner, row.id, "10.00"))["creditNote"]["number"]
        for row in (first, second)
    ]

    # then they are CN-2026-0001 and 0002, and invoices keep counting on their own
    assert numbers == ["CN-2026-0001", "CN-2026-0002"]
    assert (await issued(owner, client)).number == "INV-2026-0003"
    assert sorted(
        await InvoiceCounter.filter(agency_id=owner.agency_id).values_list("scope", "last_value")
    ) == [("INV-2026-{SEQ}", 3), ("credit_note:CN-2026-{SEQ}", 2)]
    # and the list shows them newest first, filtered by invoice
    data = await gql.execute(
        CREDIT_NOTES, {"first": 10, "filter": {"invoiceId": str(first.id)}}, token=owner.token
    )
    assert data["creditNotes"]["edges"] == [
        {"node": {"number": "CN-2026-0001", "invoiceId": str(first.id)}}
    ]
    page = await gql.execute(CREDIT_NOTES, {"first": 1}, token=owner.token)
    assert page["creditNotes"]["edges"] == [
        {"node": {"number": "CN-2026-0002", "invoiceId": str(second.id)}}
    ]
    rest = await gql.execute(
        CREDIT_NOTES,
        {"first": 1, "after": page["creditNotes"]["pageInfo"]["endCursor"]},
        token=owner.token,
    )
    assert rest["creditNotes"]["edges"] == [
        {"node": {"number": "CN-2026-0001", "invoiceId": str(first.id)}}
    ]
    assert rest["creditNotes"]["pageInfo"]["hasNextPage"] is False


async def test_twenty_credit_notes_issued_at_once_are_numbered_without_gaps(
    db: Backend, gql: GraphQLClient, owner: Account, client: Client
) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite runs one transaction at a time; the race needs PostgreSQL")
    # given twenty issued invoices of an agency that has issued no credit note yet
    invoices = [await issued(owner, client) for _ in range(20)]

    # when a credit note is issued on each at the same moment, each its own request
    results = await asyncio.gather(*(issue(gql, owner, row.id, "10.00") for row in invoices))

    # then every one was issued, numbered exactly CN-2026-0001 to 0020
    assert [result["__typename"] for result in results] == ["CreditNotePayload"] * 20
    rows = await CreditNote.filter(agency_id=owner.agency_id)
    assert sorted(row.number for row in rows) == [f"CN-2026-{n:04d}" for n in range(1, 21)]
    # and each request answered with the number its own transaction kept
    assert {r["creditNote"]["id"]: r["creditNote"]["number"] for r in results} == {
        str(row.id): row.number for row in rows
    }
    assert await InvoiceCounter.filter(
        agency_id=owner.agency_id, scope="credit_note:CN-2026-{SEQ}"
    ).values_list("last_value", flat=True) == [20]


# --- lists without N+1 ------------------------------------------------------------------

LIST_WITH_CREDIT_NOTES = """
query {
  invoices(first: 100) {
    totalCount
    edges { node { id creditNotes { number invoice { id } } } }
  }
}
"""


async def _credited_invoices(account: Account, client: Client, count: int) -> None:
    """``count`` issued invoices written directly, each with two credit notes."""
    invoices = [
        Invoice(
            agency_id=account.agency_id,
            client_id=client.id,
            currency="INR",
            status=InvoiceStatus.SENT,
            number=f"INV-{n:04d}",
            issue_date=date(2026, 3, 1),
            subtotal_minor=10_000,
            total_minor=10_000,
            amount_credited_minor=200,
        )
        for n in range(count)
    ]
    await Invoice.bulk_create(invoices, batch_size=500)
    await InvoiceLine.bulk_create(
        [
            InvoiceLine(
                agency_id=account.agency_id,
                invoice_id=invoice.id,
                description="Design",
                quantity=Decimal(1),
                unit_price_minor=10_000,
                amount_minor=10_000,
            )
            for invoice in invoices
        ],
        batch_size=500,
    )
    await CreditNote.bulk_create(
        [
            CreditNote(
                agency_id=account.agency_id,
                invoice_id=invoice.id,
                client_id=client.id,
                number=f"CN-{index:04d}-{part}",
                amount_minor=100,
                currency="INR",
                reason="Goodwill",
                issue_date=date(2026, 3, 2),
            )
            for index, invoice in enumerate(invoices)
            for part in (1, 2)
        ],
        batch_size=500,
    )


async def test_a_page_of_invoices_with_credit_notes_costs_the_same_queries_whatever_its_size(
    gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given an agency with 3 credited invoices, and one with 60
    await _credited_invoices(rival, await create_client(rival, name="R"), 3)
    await _credited_invoices(owner, await create_client(owner, name="O"), 60)

    # when each lists its invoices with their credit notes and the invoice of each
    with count_queries() as small_count:
        small = await gql.execute(LIST_WITH_CREDIT_NOTES, token=rival.token)
    with count_queries() as large_count:
        large = await gql.execute(LIST_WITH_CREDIT_NOTES, token=owner.token)

    # then every invoice has its own two credit notes
    assert small["invoices"]["totalCount"] == 3
    assert large["invoices"]["totalCount"] == 60
    for node in (edge["node"] for edge in large["invoices"]["edges"]):
        notes = await CreditNote.filter(invoice_id=node["id"]).order_by("number")
        assert node["creditNotes"] == [
            {"number": note.number, "invoice": {"id": node["id"]}} for note in notes
        ]
    # and the number of SQL statements is the same
    assert large_count.count == small_count.count, (small_count.queries, large_count.queries)
    # (the caller, the count, the page, the credit notes, their invoices)
    assert large_count.count == 5, large_count.queries
