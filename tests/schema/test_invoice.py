"""Invoices through the API: drafts and their totals, the lifecycle, sources, lists."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from settle.core import clock
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.invoice import Invoice, InvoiceLine, InvoiceStatus
from settle.models.milestone import Milestone, MilestoneStatus
from settle.models.project import Project, Task, TimeEntry
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import (
    Account,
    create_client,
    create_contact,
    create_invoice,
    create_project,
    create_user,
    issue_invoice,
)
from tests.fixtures.graphql import GraphQLClient, count_queries

ERROR_FIELDS = """
    ... on Error { __typename code message }
    ... on ValidationError { field }
    ... on InvalidTransitionError { currentState }
    ... on InvoiceNotEditableError { status }
"""

MONEY = "{ amount currency minorUnits }"

LINE_FIELDS = f"""
    id position kind description quantity
    unitPrice {MONEY} amount {MONEY} discount {MONEY} tax {MONEY}
    taxRate milestoneId
"""

INVOICE_FIELDS = f"""
    id number status source clientId projectId currency issueDate dueDate notes terms
    taxRate discount {{ kind value }}
    subtotal {MONEY} discountTotal {MONEY} tax {MONEY} total {MONEY}
    amountPaid {MONEY} amountDue {MONEY}
    taxes {{ rate taxable {MONEY} tax {MONEY} }}
    lineItems {{ {LINE_FIELDS} }}
    isOverdue issuedAt viewedAt paidAt voidedAt voidReason
    client {{ name }}
"""

TOTALS = f"subtotal {MONEY} discountTotal {MONEY} tax {MONEY} total {MONEY} taxes {{ rate }}"


def invoice_operation(header: str, call: str, success: str = "Invoice") -> str:
    """A mutation answering with ``success`` (its full selection) or an error."""
    selection = {
        "Invoice": f"... on Invoice {{ {INVOICE_FIELDS} }}",
        "InvoiceLinePayload": f"""
            ... on InvoiceLinePayload {{ invoice {{ {INVOICE_FIELDS} }} line {{ {LINE_FIELDS} }} }}
        """,
        "DeletedInvoice": "... on DeletedInvoice { id }",
    }[success]
    return f"""
mutation {header} {{
  result: {call} {{
    __typename
    {selection}
    {ERROR_FIELDS}
  }}
}}
"""


CREATE_INVOICE = invoice_operation(
    "CreateInvoice($input: CreateInvoiceInput!)", "createInvoice(input: $input)"
)
UPDATE_INVOICE = invoice_operation(
    "UpdateInvoice($id: ID!, $input: UpdateInvoiceInput!)", "updateInvoice(id: $id, input: $input)"
)
ADD_INVOICE_LINE = invoice_operation(
    "AddInvoiceLine($invoiceId: ID!, $input: InvoiceLineInput!)",
    "addInvoiceLine(invoiceId: $invoiceId, input: $input)",
    "InvoiceLinePayload",
)
UPDATE_INVOICE_LINE = invoice_operation(
    "UpdateInvoiceLine($id: ID!, $input: UpdateInvoiceLineInput!)",
    "updateInvoiceLine(id: $id, input: $input)",
    "InvoiceLinePayload",
)
REMOVE_INVOICE_LINE = invoice_operation("RemoveInvoiceLine($id: ID!)", "removeInvoiceLine(id: $id)")
DELETE_INVOICE = invoice_operation(
    "DeleteInvoice($id: ID!)", "deleteInvoice(id: $id)", "DeletedInvoice"
)
FINALIZE_INVOICE = invoice_operation("FinalizeInvoice($id: ID!)", "finalizeInvoice(id: $id)")
SEND_INVOICE = invoice_operation(
    "SendInvoice($id: ID!, $to: [String!], $cc: [String!], $message: String)",
    "sendInvoice(id: $id, to: $to, cc: $cc, message: $message)",
)
RESEND_INVOICE_EMAIL = invoice_operation(
    "ResendInvoiceEmail($id: ID!)", "resendInvoiceEmail(id: $id)"
)
MARK_INVOICE_VIEWED = invoice_operation("MarkInvoiceViewed($id: ID!)", "markInvoiceViewed(id: $id)")
VOID_INVOICE = invoice_operation(
    "VoidInvoice($id: ID!, $reason: String!)", "voidInvoice(id: $id, reason: $reason)"
)
CREATE_FROM_TIME = invoice_operation(
    "FromTime($projectId: ID!, $from: Date!, $to: Date!, $groupBy: TimeGrouping!)",
    "createInvoiceFromTimeEntries(projectId: $projectId, from: $from, to: $to, groupBy: $groupBy)",
)
CREATE_FROM_MILESTONES = invoice_operation(
    "FromMilestones($milestoneIds: [ID!]!)",
    "createInvoiceFromMilestones(milestoneIds: $milestoneIds)",
)

INVOICE = f"""
query Invoice($id: ID!) {{
  invoice(id: $id) {{ {INVOICE_FIELDS} }}
}}
"""

INVOICE_EXTRAS = """
query InvoiceExtras($id: ID!) {
  invoice(id: $id) {
    pdfUrl { url expiresAt }
    uploadedPdf { filename }
    lastSentAt
    deliveries { to cc message }
    timeline(first: 10) { totalCount edges { node { entityId verb summary } } }
  }
  invoicePreviewUrl(id: $id) {
    __typename
    ... on DownloadUrl { url expiresAt }
    ... on Error { code message }
  }
}
"""

INVOICES = """
query Invoices($first: Int!, $after: String, $filter: InvoiceFilter, $orderBy: InvoiceOrder) {
  invoices(first: $first, after: $after, filter: $filter, orderBy: $orderBy) {
    totalCount
    edges { cursor node { number status total { amount } isOverdue } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

MILESTONE_INVOICE = """
query Milestone($id: ID!) {
  milestone(id: $id) { title invoice { id status total { amount } } invoiceError }
}
"""

START = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


class FrozenClock:
    """Settle's clock, stopped at a known moment and moved on by hand."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def advance(self, **delta: float) -> datetime:
        self.moment += timedelta(**delta)
        return self.moment


@pytest.fixture
def frozen() -> Iterator[FrozenClock]:
    frozen = FrozenClock(START)
    clock.set_clock(lambda: frozen.moment)
    yield frozen
    clock.set_clock(None)


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="INR")


@pytest.fixture
async def project(owner: Account, client: Client) -> Project:
    return await create_project(owner, client, hourly_rate="1000.00")


@pytest.fixture
async def member(owner: Account) -> Account:
    return await create_user(owner, role=Role.MEMBER, name="Mo Member")


@pytest.fixture
async def admin(owner: Account) -> Account:
    return await create_user(owner, role=Role.ADMIN, name="Ada Admin")


@pytest.fixture
async def lead(owner: Account, client: Client) -> Account:
    return await create_user(owner, role=Role.CLIENT_LEAD, client=client, name="Lee Lead")


@pytest.fixture
async def viewer(owner: Account, client: Client) -> Account:
    return await create_user(owner, role=Role.CLIENT_VIEWER, client=client, name="Vic Viewer")


def money(amount: str, currency: str = "INR") -> dict[str, Any]:
    """Money as the API shows it, from its decimal amount ("2654.99")."""
    return {"amount": amount, "currency": currency, "minorUnits": int(amount.replace(".", ""))}


def line(
    line_id: Any,
    position: int,
    description: str,
    quantity: str,
    unit_price: str,
    amount: str,
    discount: str = "0.00",
    tax: str = "0.00",
    **overrides: Any,
) -> dict[str, Any]:
    node = {
        "id": str(line_id),
        "position": position,
        "kind": "MANUAL",
        "description": description,
        "quantity": quantity,
        "unitPrice": money(unit_price),
        "amount": money(amount),
        "discount": money(discount),
        "tax": money(tax),
        "taxRate": None,
        "milestoneId": None,
    }
    return {**node, **overrides}


def draft(
    invoice_id: Any, client: Client, project: Project | None, **overrides: Any
) -> dict[str, Any]:
    """A new INR draft as the API shows it, with ``overrides`` applied."""
    node = {
        "__typename": "Invoice",
        "id": str(invoice_id),
        "number": None,
        "status": "DRAFT",
        "source": "MANUAL",
        "clientId": str(client.id),
        "projectId": str(project.id) if project else None,
        "currency": "INR",
        "issueDate": None,
        "dueDate": None,
        "notes": None,
        "terms": None,
        "taxRate": "0",
        "discount": None,
        "subtotal": money("0.00"),
        "discountTotal": money("0.00"),
        "tax": money("0.00"),
        "total": money("0.00"),
        "amountPaid": money("0.00"),
        "amountDue": money("0.00"),
        "taxes": [],
        "lineItems": [],
        "isOverdue": False,
        "issuedAt": None,
        "viewedAt": None,
        "paidAt": None,
        "voidedAt": None,
        "voidReason": None,
        "client": {"name": client.name},
    }
    return {**node, **overrides}


async def line_ids(invoice_id: Any) -> list[str]:
    rows = await InvoiceLine.filter(invoice_id=invoice_id).order_by("position")
    return [str(row.id) for row in rows]


async def events(invoice_id: Any) -> list[tuple[str, str]]:
    """An invoice's timeline, oldest first: (verb, summary)."""
    rows = await ActivityEvent.filter(entity_type="invoice", entity_id=invoice_id).order_by(
        "created_at", "id"
    )
    return [(row.verb, row.summary) for row in rows]


GST_INPUT: dict[str, Any] = {
    "notes": "Thank you",
    "terms": "Net 30",
    "taxRate": "18",
    "discount": {"kind": "PERCENT", "value": "10"},
    "lines": [
        {"description": "Design hours", "quantity": "3", "unitPrice": "333.33"},
        {"description": "Build", "quantity": "1.5", "unitPrice": "1000"},
    ],
}


async def create_gst_draft(
    gql: GraphQLClient, owner: Account, client: Client, project: Project
) -> dict[str, Any]:
    """The GST example draft, created through the API: its answer."""
    data = await gql.execute(
        CREATE_INVOICE,
        {"input": {"clientId": str(client.id), "projectId": str(project.id), **GST_INPUT}},
        token=owner.token,
    )
    return data["result"]


# --- drafts and their totals --------------------------------------------------------


async def test_create_invoice_computes_every_total_on_the_server(
    gql: GraphQLClient, frozen: FrozenClock, owner: Account, client: Client, project: Project
) -> None:
    # given a client's project in INR
    # when the owner creates a draft of 3 x 333.33 and 1.5 x 1000 with 10% off and 18% GST
    created = await create_gst_draft(gql, owner, client, project)

    # then the server computed the totals by its one rounding rule: 2499.99 less 250.00
    # (249.999 half up), plus 18% of 2249.99 = 404.9982 -> 405.00
    ids = await line_ids(created["id"])
    assert created == draft(
        created["id"],
        client,
        project,
        notes="Thank you",
        terms="Net 30",
        taxRate="18",
        discount={"kind": "PERCENT", "value": "10"},
        subtotal=money("2499.99"),
        discountTotal=money("250.00"),
        tax=money("405.00"),
        total=money("2654.99"),
        amountDue=money("2654.99"),
        taxes=[{"rate": "18", "taxable": money("2249.99"), "tax": money("405.00")}],
        lineItems=[
            # each line's share of the discount and the tax, adding up to them exactly
            line(ids[0], 0, "Design hours", "3.00", "333.33", "999.99", "100.00", "162.00"),
            line(ids[1], 1, "Build", "1.50", "1000.00", "1500.00", "150.00", "243.00"),
        ],
    )
    # and so it is stored, for the owner's agency
    row = await Invoice.get(id=created["id"])
    assert (
        row.agency_id,
        row.status,
        row.subtotal_minor,
        row.discount_minor,
        row.tax_minor,
        row.total_minor,
        row.created_by_id,
    ) == (owner.agency_id, InvoiceStatus.DRAFT, 249_999, 25_000, 40_500, 265_499, owner.user.id)
    # and the timeline says so
    assert await events(created["id"]) == [
        ("created", "Draft invoice created for Acme (Website): 2654.99 INR")
    ]


async def test_a_draft_without_a_project_or_a_rate_takes_the_agency_defaults(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a client in USD
    usd = await create_client(owner, name="Bolt", currency="USD")
    # when a draft is created without a project, a tax rate or lines
    data = await gql.execute(
        CREATE_INVOICE, {"input": {"clientId": str(usd.id)}}, token=owner.token
    )
    # then it is an empty draft in the client's currency at the agency's rate (0)
    usd_zero = money("0.00", "USD")
    assert data["result"] == draft(
        data["result"]["id"],
        usd,
        None,
        currency="USD",
        subtotal=usd_zero,
        discountTotal=usd_zero,
        tax=usd_zero,
        total=usd_zero,
        amountPaid=usd_zero,
        amountDue=usd_zero,
    )


BAD_INPUT = [
    ({"clientId": "not-an-id"}, "clientId", "INVALID_ID"),
    ({"taxRate": "101"}, "taxRate", "OUT_OF_RANGE"),
    ({"taxRate": "12.3456"}, "taxRate", "TOO_PRECISE"),
    ({"taxRate": "lots"}, "taxRate", "VALIDATION_ERROR"),
    ({"discount": {"kind": "PERCENT", "value": "abc"}}, "discount.value", "VALIDATION_ERROR"),
    ({"discount": {"kind": "AMOUNT", "value": "-5.00"}}, "discount.value", "OUT_OF_RANGE"),
    # (NUL is refused before any operation runs: tests/test_bad_input.py)
    ({"notes": "bad\x07byte"}, "notes", "INVALID_CHARACTERS"),
    ({"line": {"quantity": "0"}}, "quantity", "OUT_OF_RANGE"),
    ({"line": {"quantity": "1.234"}}, "quantity", "TOO_PRECISE"),
    ({"line": {"unitPrice": "-1.00"}}, "unitPrice", "OUT_OF_RANGE"),
    ({"line": {"unitPrice": "1.001"}}, "unitPrice", "VALIDATION_ERROR"),
    ({"line": {"unitPrice": ""}}, "unitPrice", "REQUIRED"),
    ({"line": {"description": "   "}}, "description", "REQUIRED"),
    ({"line": {"taxRate": "-1"}}, "taxRate", "OUT_OF_RANGE"),
    ({"line": {"position": -1}}, "position", "OUT_OF_RANGE"),
]


@pytest.mark.parametrize(
    ("overrides", "field", "code"), BAD_INPUT, ids=lambda value: str(value)[:40]
)
async def test_create_invoice_rejects_bad_input_and_writes_nothing(
    gql: GraphQLClient,
    owner: Account,
    client: Client,
    project: Project,
    overrides: dict[str, Any],
    field: str,
    code: str,
) -> None:
    # given a client and a project
    before = await row_counts(Invoice, InvoiceLine)
    good_line = {"description": "Design", "quantity": "1", "unitPrice": "100.00"}
    given = dict(overrides)
    bad_line = {**good_line, **given.pop("line", {})}
    # when a draft is created with one bad field (next to a good line)
    data = await gql.execute(
        CREATE_INVOICE,
        {
            "input": {
                "clientId": str(client.id),
                "projectId": str(project.id),
                "lines": [good_line, bad_line],
                **given,
            }
        },
        token=owner.token,
    )
    # then the error names the field, and nothing at all is written
    result = data["result"]
    assert (result["__typename"], result["field"], result["code"]) == (
        "ValidationError",
        field,
        code,
    )
    assert await row_counts(Invoice, InvoiceLine) == before


async def test_a_project_of_another_client_is_refused(
    gql: GraphQLClient, owner: Account, client: Client
) -> None:
    # given a project of another client
    other = await create_client(owner, name="Bolt", currency="INR")
    elsewhere = await create_project(owner, other)
    before = await row_counts(Invoice, InvoiceLine)
    # when a draft for the client names it
    data = await gql.execute(
        CREATE_INVOICE,
        {"input": {"clientId": str(client.id), "projectId": str(elsewhere.id)}},
        token=owner.token,
    )
    # then it is refused, and nothing is written
    assert data["result"] == {
        "__typename": "ValidationError",
        "code": "MISMATCH",
        "message": "projectId must be a project of the client",
        "field": "projectId",
    }
    assert await row_counts(Invoice, InvoiceLine) == before


async def test_only_owners_and_admins_write_invoices(
    gql: GraphQLClient,
    owner: Account,
    client: Client,
    admin: Account,
    member: Account,
    lead: Account,
    viewer: Account,
) -> None:
    # given a user of every other role
    variables = {"input": {"clientId": str(client.id), **GST_INPUT}}
    before = await row_counts(Invoice, InvoiceLine)
    # when each tries to create a draft
    results = {
        account.user.role: (await gql.execute(CREATE_INVOICE, variables, token=account.token))[
            "result"
        ]["__typename"]
        for account in (member, lead, viewer, admin)
    }
    # then members and client users are refused, and only the admin's is written
    assert results == {
        Role.MEMBER: "PermissionDeniedError",
        Role.CLIENT_LEAD: "PermissionDeniedError",
        Role.CLIENT_VIEWER: "PermissionDeniedError",
        Role.ADMIN: "Invoice",
    }
    after = await row_counts(Invoice, InvoiceLine)
    assert (after["invoice"], after["invoice_line"]) == (
        before["invoice"] + 1,
        before["invoice_line"] + 2,
    )
    # and a member may not change an existing draft either
    invoice = await Invoice.get()
    refused = await gql.execute(
        UPDATE_INVOICE, {"id": str(invoice.id), "input": {"notes": "Mine"}}, token=member.token
    )
    assert refused["result"] == {
        "__typename": "PermissionDeniedError",
        "code": "PERMISSION_DENIED",
        "message": "You are not allowed to do this",
    }


async def test_every_change_to_a_draft_recomputes_its_totals(
    gql: GraphQLClient, frozen: FrozenClock, owner: Account, client: Client, project: Project
) -> None:
    # given the GST draft (2654.99)
    created = await create_gst_draft(gql, owner, client, project)
    invoice_id = created["id"]
    design, build = await line_ids(invoice_id)

    # when the Build line gets its own 5% rate
    frozen.advance(minutes=1)
    changed = await gql.execute(
        UPDATE_INVOICE_LINE, {"id": build, "input": {"taxRate": "5"}}, token=owner.token
    )
    # then the line and the invoice follow: 5% of 1350.00 and 18% of 899.99 (161.9982)
    payload = changed["result"]
    assert payload["line"] == line(
        build, 1, "Build", "1.50", "1000.00", "1500.00", "150.00", "67.50", taxRate="5"
    )
    assert pick(payload["invoice"]) == totals("2499.99", "250.00", "229.50", "2479.49", ["5", "18"])

    # when a line is added without a position
    frozen.advance(minutes=1)
    added = await gql.execute(
        ADD_INVOICE_LINE,
        {
            "invoiceId": invoice_id,
            "input": {"description": "Hosting", "quantity": "2", "unitPrice": "123.45"},
        },
        token=owner.token,
    )
    # then it goes last, and 10% of the new subtotal 2746.89 is 274.689 -> 274.69
    payload = added["result"]
    hosting = payload["line"]["id"]
    assert payload["line"] == line(
        hosting, 2, "Hosting", "2.00", "123.45", "246.90", "24.69", "40.00"
    )
    assert pick(payload["invoice"]) == totals("2746.89", "274.69", "269.50", "2741.70", ["5", "18"])

    # when the discount becomes a fixed 100.00 (the notes left alone)
    frozen.advance(minutes=1)
    updated = await gql.execute(
        UPDATE_INVOICE,
        {"id": invoice_id, "input": {"discount": {"kind": "AMOUNT", "value": "100"}}},
        token=owner.token,
    )
    assert updated["result"]["discount"] == {"kind": "AMOUNT", "value": "100.00"}
    assert updated["result"]["notes"] == "Thank you"
    assert pick(updated["result"]) == totals("2746.89", "100.00", "288.54", "2935.43", ["5", "18"])

    # when the Design line is removed
    frozen.advance(minutes=1)
    removed = await gql.execute(REMOVE_INVOICE_LINE, {"id": design}, token=owner.token)
    assert [item["id"] for item in removed["result"]["lineItems"]] == [build, hosting]
    assert pick(removed["result"]) == totals("1746.90", "100.00", "112.61", "1759.51", ["5", "18"])

    # when the discount is removed (null) and the notes cleared
    frozen.advance(minutes=1)
    cleared = await gql.execute(
        UPDATE_INVOICE,
        {"id": invoice_id, "input": {"discount": None, "notes": None}},
        token=owner.token,
    )
    # then 5% of 1500.00 and 18% of 246.90 (44.442) are all that is added
    result = cleared["result"]
    assert (result["discount"], result["notes"], result["terms"]) == (None, None, "Net 30")
    assert pick(result) == totals("1746.90", "0.00", "119.44", "1866.34", ["5", "18"])
    assert result["taxes"] == [
        {"rate": "5", "taxable": money("1500.00"), "tax": money("75.00")},
        {"rate": "18", "taxable": money("246.90"), "tax": money("44.44")},
    ]
    # and the stored lines carry their shares
    rows = await InvoiceLine.filter(invoice_id=invoice_id).order_by("position")
    assert [(r.amount_minor, r.discount_minor, r.tax_minor) for r in rows] == [
        (150_000, 0, 7_500),
        (24_690, 0, 4_444),
    ]
    # and every step is on the invoice's timeline, newest first
    extras = await gql.execute(INVOICE_EXTRAS, {"id": invoice_id}, token=owner.token)
    timeline = extras["invoice"]["timeline"]
    assert timeline["totalCount"] == 6
    assert [(edge["node"]["verb"], edge["node"]["summary"]) for edge in timeline["edges"]] == [
        ("updated", "Draft invoice updated"),
        ("line_removed", "Line Design hours removed from draft invoice"),
        ("updated", "Draft invoice updated"),
        ("line_added", "Line Hosting added to draft invoice"),
        ("line_updated", "Line Build of draft invoice updated"),
        ("created", "Draft invoice created for Acme (Website): 2654.99 INR"),
    ]
    assert {edge["node"]["entityId"] for edge in timeline["edges"]} == {invoice_id}


def pick(invoice: dict[str, Any]) -> dict[str, Any]:
    """An invoice's totals and its tax rates."""
    return {
        "subtotal": invoice["subtotal"],
        "discountTotal": invoice["discountTotal"],
        "tax": invoice["tax"],
        "total": invoice["total"],
        "taxes": [tax["rate"] for tax in invoice["taxes"]],
    }


def totals(subtotal: str, discount: str, tax: str, total: str, rates: list[str]) -> dict[str, Any]:
    return {
        "subtotal": money(subtotal),
        "discountTotal": money(discount),
        "tax": money(tax),
        "total": money(total),
        "taxes": rates,
    }


async def test_a_line_change_with_bad_input_changes_nothing(
    gql: GraphQLClient, owner: Account, client: Client, project: Project
) -> None:
    # given the GST draft
    created = await create_gst_draft(gql, owner, client, project)
    design, _ = await line_ids(created["id"])
    before = await row_counts(Invoice, InvoiceLine)
    # when a line gets a bad quantity, and a line is added with a bad price
    bad_update = await gql.execute(
        UPDATE_INVOICE_LINE,
        {"id": design, "input": {"description": "Renamed", "quantity": "-2"}},
        token=owner.token,
    )
    bad_add = await gql.execute(
        ADD_INVOICE_LINE,
        {
            "invoiceId": created["id"],
            "input": {"description": "Extra", "quantity": "1", "unitPrice": "free"},
        },
        token=owner.token,
    )
    # then both are refused naming the field, and the draft is as it was
    assert (bad_update["result"]["field"], bad_update["result"]["code"]) == (
        "quantity",
        "OUT_OF_RANGE",
    )
    assert (bad_add["result"]["field"], bad_add["result"]["code"]) == (
        "unitPrice",
        "VALIDATION_ERROR",
    )
    assert await row_counts(Invoice, InvoiceLine) == before
    again = await gql.execute(INVOICE, {"id": created["id"]}, token=owner.token)
    assert again["invoice"] == {key: value for key, value in created.items() if key != "__typename"}


async def test_deleting_a_draft_removes_it_and_its_lines(
    gql: GraphQLClient, owner: Account, client: Client, project: Project
) -> None:
    # given a draft with two lines
    created = await create_gst_draft(gql, owner, client, project)
    # when it is deleted
    data = await gql.execute(DELETE_INVOICE, {"id": created["id"]}, token=owner.token)
    # then only its id comes back, and neither it nor its lines remain
    assert data["result"] == {"__typename": "DeletedInvoice", "id": created["id"]}
    assert await Invoice.filter(id=created["id"]).count() == 0
    assert await InvoiceLine.filter(invoice_id=created["id"]).count() == 0
    assert (await gql.execute(INVOICE, {"id": created["id"]}, token=owner.token)) == {
        "invoice": None
    }


# --- the lifecycle ------------------------------------------------------------------


async def test_finalizing_numbers_the_invoice_and_locks_it(
    gql: GraphQLClient,
    db: Backend,
    frozen: FrozenClock,
    owner: Account,
    client: Client,
    project: Project,
) -> None:
    # given a draft without lines and the GST draft
    empty = await create_invoice(owner, client, project, lines=())
    created = await create_gst_draft(gql, owner, client, project)
    design, _ = await line_ids(created["id"])

    # when the empty one is finalized
    refused = await gql.execute(FINALIZE_INVOICE, {"id": str(empty.id)}, token=owner.token)
    # then it is refused, and no number is used up
    assert refused["result"] == {
        "__typename": "ValidationError",
        "code": "REQUIRED",
        "message": "An invoice needs at least one line",
        "field": "lines",
    }

    # when the GST draft is finalized
    data = await gql.execute(FINALIZE_INVOICE, {"id": created["id"]}, token=owner.token)
    # then it has the year's first number, today's date and the project's 30 days to pay
    assert data["result"] == {
        **created,
        "number": "INV-2026-0001",
        "status": "SENT",
        "issueDate": "2026-03-10",
        "dueDate": "2026-04-09",
        "issuedAt": START.isoformat(),
    }
    await db.drain()
    before = await row_counts(Invoice, InvoiceLine)

    # when anyone tries to change what it says
    attempts = {
        "updateInvoice": await gql.execute(
            UPDATE_INVOICE, {"id": created["id"], "input": {"notes": "x"}}, token=owner.token
        ),
        "addInvoiceLine": await gql.execute(
            ADD_INVOICE_LINE,
            {
                "invoiceId": created["id"],
                "input": {"description": "x", "quantity": "1", "unitPrice": "1"},
            },
            token=owner.token,
        ),
        "updateInvoiceLine": await gql.execute(
            UPDATE_INVOICE_LINE, {"id": design, "input": {"quantity": "9"}}, token=owner.token
        ),
        "removeInvoiceLine": await gql.execute(
            REMOVE_INVOICE_LINE, {"id": design}, token=owner.token
        ),
        "deleteInvoice": await gql.execute(
            DELETE_INVOICE, {"id": created["id"]}, token=owner.token
        ),
    }
    # then each is refused as not editable, with the invoice's status, and nothing changes
    not_editable = {
        "__typename": "InvoiceNotEditableError",
        "code": "INVOICE_NOT_EDITABLE",
        "message": "Invoice is sent: only a draft can be changed",
        "status": "SENT",
    }
    assert {name: data["result"] for name, data in attempts.items()} == dict.fromkeys(
        attempts, not_editable
    )
    # and finalizing it again is not a move the lifecycle allows
    again = await gql.execute(FINALIZE_INVOICE, {"id": created["id"]}, token=owner.token)
    assert again["result"] == {
        "__typename": "InvalidTransitionError",
        "code": "INVALID_TRANSITION",
        "message": "Invoice cannot move from sent to sent",
        "currentState": "sent",
    }
    assert await row_counts(Invoice, InvoiceLine) == before

    # when the other draft gets a line and is finalized
    await gql.execute(
        ADD_INVOICE_LINE,
        {
            "invoiceId": str(empty.id),
            "input": {"description": "x", "quantity": "1", "unitPrice": "1"},
        },
        token=owner.token,
    )
    second = await gql.execute(FINALIZE_INVOICE, {"id": str(empty.id)}, token=owner.token)
    # then it takes the next number: the refused attempt used none
    assert second["result"]["number"] == "INV-2026-0002"


async def test_a_draft_has_a_preview_and_no_pdf(
    gql: GraphQLClient, frozen: FrozenClock, owner: Account, client: Client, project: Project
) -> None:
    # given a draft
    created = await create_gst_draft(gql, owner, client, project)
    # when its document links are asked for
    data = await gql.execute(INVOICE_EXTRAS, {"id": created["id"]}, token=owner.token)
    # then it has no PDF yet, only a signed preview, valid for 15 minutes
    assert data["invoice"]["pdfUrl"] is None
    assert data["invoice"]["uploadedPdf"] is None
    preview = data["invoicePreviewUrl"]
    assert preview["__typename"] == "DownloadUrl"
    assert preview["url"].startswith("http://settle.test/files/invoice-previews/")
    assert preview["expiresAt"] == (START + timedelta(minutes=15)).isoformat()
    # and once issued the preview is refused: the PDF is the document
    await gql.execute(FINALIZE_INVOICE, {"id": created["id"]}, token=owner.token)
    issued = await gql.execute(INVOICE_EXTRAS, {"id": created["id"]}, token=owner.token)
    assert issued["invoicePreviewUrl"] == {
        "__typename": "ConflictError",
        "code": "CONFLICT",
        "message": "Only a draft has a preview; an issued invoice has its PDF",
    }


async def test_sending_emails_the_invoice_to_the_primary_contact_and_more(
    gql: GraphQLClient, frozen: FrozenClock, owner: Account, client: Client, project: Project
) -> None:
    # given a client whose primary contact has an email, and a draft
    await create_contact(owner, client, name="Priya", email="priya@acme.test", primary=True)
    created = await create_gst_draft(gql, owner, client, project)
    # when it is sent to another address too, with a copy and a message
    data = await gql.execute(
        SEND_INVOICE,
        {
            "id": created["id"],
            "to": ["accounts@acme.test"],
            "cc": ["cfo@acme.test"],
            "message": "Please find our invoice attached.",
        },
        token=owner.token,
    )
    # then the draft was finalized on the way
    assert (data["result"]["status"], data["result"]["number"]) == ("SENT", "INV-2026-0001")
    # and an email to both, copying the CFO, is requested
    extras = await gql.execute(INVOICE_EXTRAS, {"id": created["id"]}, token=owner.token)
    assert extras["invoice"]["deliveries"] == [
        {
            "to": ["priya@acme.test", "accounts@acme.test"],
            "cc": ["cfo@acme.test"],
            "message": "Please find our invoice attached.",
        }
    ]
    # when it is emailed again
    resent = await gql.execute(RESEND_INVOICE_EMAIL, {"id": created["id"]}, token=owner.token)
    # then the same people get it once more
    assert resent["result"]["status"] == "SENT"
    again = await gql.execute(INVOICE_EXTRAS, {"id": created["id"]}, token=owner.token)
    assert [delivery["to"] for delivery in again["invoice"]["deliveries"]] == [
        ["priya@acme.test", "accounts@acme.test"],
        ["priya@acme.test", "accounts@acme.test"],
    ]


async def test_voiding_needs_a_reason_and_an_issued_invoice(
    gql: GraphQLClient, frozen: FrozenClock, owner: Account, client: Client, project: Project
) -> None:
    # given a draft and an issued invoice
    draft_invoice = await create_invoice(owner, client, project)
    issued = await issue_invoice(owner, await create_invoice(owner, client, project))
    before = await row_counts(Invoice, InvoiceLine)

    # when the draft is voided, and the issued one without a reason
    from_draft = await gql.execute(
        VOID_INVOICE, {"id": str(draft_invoice.id), "reason": "Typo"}, token=owner.token
    )
    no_reason = await gql.execute(
        VOID_INVOICE, {"id": str(issued.id), "reason": "  "}, token=owner.token
    )
    # then a draft is not voided (it is deleted), and a reason is required
    assert from_draft["result"] == {
        "__typename": "InvalidTransitionError",
        "code": "INVALID_TRANSITION",
        "message": "Invoice cannot move from draft to void",
        "currentState": "draft",
    }
    assert no_reason["result"] == {
        "__typename": "ValidationError",
        "code": "REQUIRED",
        "message": "reason must not be empty",
        "field": "reason",
    }
    assert await row_counts(Invoice, InvoiceLine) == before

    # when the issued invoice is voided with a reason
    voided_at = frozen.advance(hours=1)
    data = await gql.execute(
        VOID_INVOICE, {"id": str(issued.id), "reason": " Duplicate of INV-7 "}, token=owner.token
    )
    # then it is void, keeps its number, and nothing is owed on it
    result = data["result"]
    assert (
        result["status"],
        result["number"],
        result["voidReason"],
        result["voidedAt"],
        result["total"],
        result["amountDue"],
    ) == (
        "VOID",
        "INV-2026-0001",
        "Duplicate of INV-7",
        voided_at.isoformat(),
        money("100.00"),
        money("0.00"),
    )


async def test_client_users_see_issued_invoices_only_and_opening_one_marks_it_viewed(
    gql: GraphQLClient,
    frozen: FrozenClock,
    owner: Account,
    client: Client,
    project: Project,
    viewer: Account,
) -> None:
    # given a draft and an issued invoice of the viewer's client
    hidden = await create_invoice(owner, client, project)
    issued = await issue_invoice(owner, await create_invoice(owner, client, project))
    variables = {"first": 10, "orderBy": {"field": "CREATED_AT", "direction": "ASC"}}

    # when the viewer lists the client's invoices
    listed = await gql.execute(INVOICES, variables, token=viewer.token)
    # then only the issued one is there, and listing does not mark it viewed
    assert [edge["node"] for edge in listed["invoices"]["edges"]] == [
        {
            "number": "INV-2026-0001",
            "status": "SENT",
            "total": {"amount": "100.00"},
            "isOverdue": False,
        }
    ]
    # and the draft cannot be opened, by id either
    assert await gql.execute(INVOICE, {"id": str(hidden.id)}, token=viewer.token) == {
        "invoice": None
    }
    # and the owner opening the issued one does not mark it viewed
    by_owner = await gql.execute(INVOICE, {"id": str(issued.id)}, token=owner.token)
    assert (by_owner["invoice"]["status"], by_owner["invoice"]["viewedAt"]) == ("SENT", None)

    # when the viewer opens it
    opened_at = frozen.advance(hours=2)
    opened = await gql.execute(INVOICE, {"id": str(issued.id)}, token=viewer.token)
    # then it is viewed, now, as the viewer's answer already shows
    assert (opened["invoice"]["status"], opened["invoice"]["viewedAt"]) == (
        "VIEWED",
        opened_at.isoformat(),
    )
    row = await Invoice.get(id=issued.id)
    assert (row.status, row.viewed_at) == (InvoiceStatus.VIEWED, opened_at)
    # and opening it again changes nothing and records nothing more
    frozen.advance(hours=1)
    await gql.execute(INVOICE, {"id": str(issued.id)}, token=viewer.token)
    assert (await Invoice.get(id=issued.id)).viewed_at == opened_at
    assert [verb for verb, _ in await events(issued.id)].count("viewed") == 1
    assert ("viewed", "Invoice INV-2026-0001 viewed by Vic Viewer") in await events(issued.id)


async def test_mark_invoice_viewed(
    gql: GraphQLClient, frozen: FrozenClock, owner: Account, client: Client, project: Project
) -> None:
    # given an issued invoice
    issued = await issue_invoice(owner, await create_invoice(owner, client, project))
    # when the owner marks it viewed (the client said so on the phone)
    data = await gql.execute(MARK_INVOICE_VIEWED, {"id": str(issued.id)}, token=owner.token)
    # then it is viewed
    assert (data["result"]["status"], data["result"]["viewedAt"]) == ("VIEWED", START.isoformat())


# --- invoices from time and milestones ------------------------------------------------------


async def _time_to_bill(owner: Account, project: Project, member: Account) -> dict[str, TimeEntry]:
    """Time of two people on two tasks in March at two rates, and time not to bill."""
    tasks = {
        title: await Task.create(
            agency_id=owner.agency_id,
            project_id=project.id,
            client_id=project.client_id,
            title=title,
        )
        for title in ("Design", "Build")
    }

    async def entry(task: str, who: Account, on: date, minutes: int, **values: Any) -> TimeEntry:
        return await TimeEntry.create(
            agency_id=owner.agency_id,
            project_id=project.id,
            client_id=project.client_id,
            task_id=tasks[task].id,
            user_id=who.user.id,
            work_date=on,
            minutes=minutes,
            currency="INR",
            **{"hourly_rate_minor": 100_000, **values},
        )

    return {
        "owner design": await entry("Design", owner, date(2026, 3, 2), 90),
        "member design": await entry("Design", member, date(2026, 3, 3), 60),
        "member build": await entry("Build", member, date(2026, 3, 4), 45),
        "owner build cheap": await entry(
            "Build", owner, date(2026, 3, 5), 30, hourly_rate_minor=80_000
        ),
        # not to bill: not billable, out of range, already billed, without a rate, running
        "unbillable": await entry("Design", owner, date(2026, 3, 6), 60, billable=False),
        "april": await entry("Design", owner, date(2026, 4, 1), 60),
        "billed": await entry("Design", owner, date(2026, 3, 7), 60, invoice_line_id=uuid.uuid4()),
        "no rate": await entry("Design", owner, date(2026, 3, 8), 60, hourly_rate_minor=None),
        "running": await entry("Build", owner, date(2026, 3, 9), 60, is_running=True),
    }


GROUPINGS: dict[str, list[tuple[str, str, str, str]]] = {
    # (description, hours, rate, amount): per group and rate, in the order worked; each
    # line names the days its time was worked, not the range asked for
    "TASK": [
        ("Design: time, 2026-03-02 to 2026-03-03", "2.50", "1000.00", "2500.00"),
        ("Build: time, 2026-03-04", "0.75", "1000.00", "750.00"),
        ("Build: time, 2026-03-05", "0.50", "800.00", "400.00"),
    ],
    "USER": [
        ("Olive Owner: time, 2026-03-02", "1.50", "1000.00", "1500.00"),
        ("Mo Member: time, 2026-03-03 to 2026-03-04", "1.75", "1000.00", "1750.00"),
        ("Olive Owner: time, 2026-03-05", "0.50", "800.00", "400.00"),
    ],
    "SINGLE_LINE": [
        ("Website: time, 2026-03-02 to 2026-03-04", "3.25", "1000.00", "3250.00"),
        ("Website: time, 2026-03-05", "0.50", "800.00", "400.00"),
    ],
}


@pytest.mark.parametrize("group_by", sorted(GROUPINGS))
async def test_time_is_billed_grouped_and_never_twice(
    gql: GraphQLClient,
    owner: Account,
    client: Client,
    project: Project,
    member: Account,
    group_by: str,
) -> None:
    # given March's time on a project, some of it not to bill
    entries = await _time_to_bill(owner, project, member)
    variables = {
        "projectId": str(project.id),
        "from": "2026-03-01",
        "to": "2026-03-31",
        "groupBy": group_by,
    }
    # when the owner invoices March's time
    data = await gql.execute(CREATE_FROM_TIME, variables, token=owner.token)
    # then there is one line per group and rate, at hours x rate
    result = data["result"]
    ids = await line_ids(result["id"])
    expected_lines = [
        line(ids[n], n, description, hours, rate, amount, kind="TIME")
        for n, (description, hours, rate, amount) in enumerate(GROUPINGS[group_by])
    ]
    assert result == draft(
        result["id"],
        client,
        project,
        source="TIME_ENTRIES",
        subtotal=money("3650.00"),
        total=money("3650.00"),
        amountDue=money("3650.00"),
        lineItems=expected_lines,
    )
    # and exactly the billable entries of the range are marked billed, each by its line
    billed = {
        name: row.invoice_line_id
        for name, row in entries.items()
        if (await TimeEntry.get(id=row.id)).invoice_line_id != row.invoice_line_id
    }
    assert set(billed) == {"owner design", "member design", "member build", "owner build cheap"}
    fresh = {name: (await TimeEntry.get(id=entries[name].id)).invoice_line_id for name in billed}
    assert set(map(str, fresh.values())) == set(ids)
    before = await row_counts(Invoice, InvoiceLine)

    # when the same range is invoiced again
    again = await gql.execute(CREATE_FROM_TIME, variables, token=owner.token)
    # then there is nothing left to bill, and nothing is written
    assert again["result"] == {
        "__typename": "ValidationError",
        "code": "NOTHING_TO_BILL",
        "message": "There is no uninvoiced billable time with a rate in this range",
        "field": "from",
    }
    assert await row_counts(Invoice, InvoiceLine) == before


async def create_milestone(
    project: Project, title: str, amount_minor: int, status: MilestoneStatus, **values: Any
) -> Milestone:
    return await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency=project.currency,
        title=title,
        amount_minor=amount_minor,
        status=status,
        **values,
    )


async def test_approved_milestones_of_one_client_make_one_invoice(
    gql: GraphQLClient,
    owner: Account,
    client: Client,
    project: Project,
    lead: Account,
) -> None:
    # given two approved milestones and a pending one
    design = await create_milestone(project, "Design", 100_000, MilestoneStatus.APPROVED)
    build = await create_milestone(project, "Build", 250_050, MilestoneStatus.APPROVED)
    pending = await create_milestone(project, "Launch", 50_000, MilestoneStatus.PENDING)
    before = await row_counts(Invoice, InvoiceLine, Milestone)

    # when the pending one is included
    refused = await gql.execute(
        CREATE_FROM_MILESTONES,
        {"milestoneIds": [str(design.id), str(pending.id)]},
        token=owner.token,
    )
    # then only approved milestones are invoiced, and nothing is written
    assert refused["result"] == {
        "__typename": "ValidationError",
        "code": "NOT_BILLABLE",
        "message": "Milestone Launch is pending: only approved milestones are invoiced",
        "field": "milestoneIds",
    }
    assert await row_counts(Invoice, InvoiceLine, Milestone) == before

    # when the two approved ones are invoiced
    data = await gql.execute(
        CREATE_FROM_MILESTONES,
        {"milestoneIds": [str(design.id), str(build.id)]},
        token=owner.token,
    )
    # then one draft has a line per milestone, in the order given
    result = data["result"]
    ids = await line_ids(result["id"])
    assert result == draft(
        result["id"],
        client,
        project,
        source="MILESTONES",
        subtotal=money("3500.50"),
        total=money("3500.50"),
        amountDue=money("3500.50"),
        lineItems=[
            line(
                ids[0],
                0,
                "Design",
                "1.00",
                "1000.00",
                "1000.00",
                kind="MILESTONE",
                milestoneId=str(design.id),
            ),
            line(
                ids[1],
                1,
                "Build",
                "1.00",
                "2500.50",
                "2500.50",
                kind="MILESTONE",
                milestoneId=str(build.id),
            ),
        ],
    )
    # and each milestone shows its invoice (to the agency; to the client once issued)
    shown = await gql.execute(MILESTONE_INVOICE, {"id": str(design.id)}, token=owner.token)
    assert shown["milestone"] == {
        "title": "Design",
        "invoice": {"id": result["id"], "status": "DRAFT", "total": {"amount": "3500.50"}},
        "invoiceError": None,
    }
    to_lead = await gql.execute(MILESTONE_INVOICE, {"id": str(design.id)}, token=lead.token)
    assert to_lead["milestone"]["invoice"] is None
    await issue_invoice(owner, await Invoice.get(id=result["id"]))
    issued = await gql.execute(MILESTONE_INVOICE, {"id": str(build.id)}, token=lead.token)
    assert issued["milestone"]["invoice"]["status"] == "SENT"

    # when one of them is invoiced again
    twice = await gql.execute(
        CREATE_FROM_MILESTONES, {"milestoneIds": [str(design.id)]}, token=owner.token
    )
    # then it is refused: a milestone is billed once
    assert twice["result"] == {
        "__typename": "ConflictError",
        "code": "CONFLICT",
        "message": "Milestone Design is already on an invoice",
    }


async def test_milestones_of_two_clients_or_currencies_are_refused(
    gql: GraphQLClient, owner: Account, client: Client, project: Project
) -> None:
    # given approved milestones of the client in INR and USD, and of another client
    usd_project = await create_project(owner, client, name="App", currency="USD")
    other = await create_client(owner, name="Bolt", currency="INR")
    other_project = await create_project(owner, other)
    inr = await create_milestone(project, "Design", 100_000, MilestoneStatus.APPROVED)
    usd = await create_milestone(usd_project, "App", 100_000, MilestoneStatus.APPROVED)
    bolt = await create_milestone(other_project, "Bolt", 100_000, MilestoneStatus.APPROVED)
    before = await row_counts(Invoice, InvoiceLine, Milestone)
    # when they are mixed on one invoice
    results = [
        (await gql.execute(CREATE_FROM_MILESTONES, {"milestoneIds": ids}, token=owner.token))[
            "result"
        ]["message"]
        for ids in ([str(inr.id), str(bolt.id)], [str(inr.id), str(usd.id)])
    ]
    # then each mix is refused, and nothing is written
    assert results == [
        "The milestones must all be of one client",
        "The milestones must all be in one currency",
    ]
    assert await row_counts(Invoice, InvoiceLine, Milestone) == before


async def test_a_failed_automatic_invoice_shows_on_the_milestone(
    gql: GraphQLClient, owner: Account, project: Project, lead: Account
) -> None:
    # given an approved milestone whose automatic invoice failed
    reason = "The invoice could not be generated: The client has no primary contact"
    milestone = await create_milestone(
        project, "Design", 100_000, MilestoneStatus.APPROVED, invoice_error=reason
    )
    # when the owner and the client's lead look at it
    seen = await gql.execute(MILESTONE_INVOICE, {"id": str(milestone.id)}, token=owner.token)
    by_lead = await gql.execute(MILESTONE_INVOICE, {"id": str(milestone.id)}, token=lead.token)
    # then the agency sees why there is no invoice; the client sees no invoice, and no error
    assert seen["milestone"] == {"title": "Design", "invoice": None, "invoiceError": reason}
    assert by_lead["milestone"] == {"title": "Design", "invoice": None, "invoiceError": None}


# --- lists --------------------------------------------------------------------------


async def test_invoices_filter_sort_and_page(
    gql: GraphQLClient, frozen: FrozenClock, owner: Account, client: Client, project: Project
) -> None:
    # given a draft (100.00), an issued invoice (500.00), a void one (300.00) of Acme in INR,
    # and an issued invoice of Bolt in USD (250.00), due two days after it was issued
    bolt = await create_client(owner, name="Bolt", currency="USD")

    def one_line(price: str) -> list[dict[str, Any]]:
        return [{"description": "Work", "quantity": "1", "unit_price": price}]

    await create_invoice(owner, client, project, lines=one_line("100.00"))
    await issue_invoice(owner, await create_invoice(owner, client, project, lines=one_line("500")))
    frozen.advance(days=1)
    await issue_invoice(
        owner, await create_invoice(owner, bolt, lines=one_line("250"), due_date=date(2026, 3, 13))
    )
    frozen.advance(days=1)
    void = await issue_invoice(owner, await create_invoice(owner, client, lines=one_line("300")))
    await gql.execute(VOID_INVOICE, {"id": str(void.id), "reason": "Duplicate"}, token=owner.token)
    # (a week later, Bolt's is past due)
    frozen.advance(days=7)

    async def numbers(**variables: Any) -> list[tuple[str | None, str]]:
        data = await gql.execute(INVOICES, {"first": 10, **variables}, token=owner.token)
        return [
            (e["node"]["number"], e["node"]["total"]["amount"]) for e in data["invoices"]["edges"]
        ]

    # then each filter keeps what it says, newest first by default
    assert await numbers() == [
        ("INV-2026-0003", "300.00"),
        ("INV-2026-0002", "250.00"),
        ("INV-2026-0001", "500.00"),
        (None, "100.00"),
    ]
    assert await numbers(filter={"status": "SENT"}) == [
        ("INV-2026-0002", "250.00"),
        ("INV-2026-0001", "500.00"),
    ]
    assert await numbers(filter={"clientId": str(bolt.id)}) == [("INV-2026-0002", "250.00")]
    assert await numbers(filter={"projectId": str(project.id)}) == [
        ("INV-2026-0001", "500.00"),
        (None, "100.00"),
    ]
    assert await numbers(filter={"overdue": True}) == [("INV-2026-0002", "250.00")]
    assert len(await numbers(filter={"overdue": False})) == 3
    assert await numbers(filter={"currency": "usd"}) == [("INV-2026-0002", "250.00")]
    assert await numbers(filter={"from": "2026-03-11", "to": "2026-03-11"}) == [
        ("INV-2026-0002", "250.00")
    ]
    # and the sort orders hold, drafts (without dates) last by due date
    assert await numbers(orderBy={"field": "DUE_DATE", "direction": "ASC"}) == [
        ("INV-2026-0002", "250.00"),
        ("INV-2026-0001", "500.00"),
        ("INV-2026-0003", "300.00"),
        (None, "100.00"),
    ]
    assert await numbers(orderBy={"field": "ISSUE_DATE", "direction": "DESC"}) == [
        ("INV-2026-0003", "300.00"),
        ("INV-2026-0002", "250.00"),
        ("INV-2026-0001", "500.00"),
        (None, "100.00"),
    ]

    # when they are paged two at a time by total
    by_total = {"field": "TOTAL", "direction": "ASC"}
    first = await gql.execute(INVOICES, {"first": 2, "orderBy": by_total}, token=owner.token)
    rest = await gql.execute(
        INVOICES,
        {"first": 2, "orderBy": by_total, "after": first["invoices"]["pageInfo"]["endCursor"]},
        token=owner.token,
    )
    # then the pages follow on, with the statuses and overdue flag of each
    assert [e["node"] for e in first["invoices"]["edges"]] == [
        {"number": None, "status": "DRAFT", "total": {"amount": "100.00"}, "isOverdue": False},
        {
            "number": "INV-2026-0002",
            "status": "SENT",
            "total": {"amount": "250.00"},
            "isOverdue": True,
        },
    ]
    assert first["invoices"]["pageInfo"]["hasNextPage"] is True
    assert first["invoices"]["totalCount"] == 4
    assert [e["node"] for e in rest["invoices"]["edges"]] == [
        {
            "number": "INV-2026-0003",
            "status": "VOID",
            "total": {"amount": "300.00"},
            "isOverdue": False,
        },
        {
            "number": "INV-2026-0001",
            "status": "SENT",
            "total": {"amount": "500.00"},
            "isOverdue": False,
        },
    ]
    assert rest["invoices"]["pageInfo"]["hasNextPage"] is False


async def test_a_bad_filter_id_or_page_size_is_a_coded_error(
    gql: GraphQLClient, owner: Account
) -> None:
    # when the list is asked for with a malformed client id, and with too large a page
    bad_id = await gql.execute(
        INVOICES,
        {"first": 10, "filter": {"clientId": "nope"}},
        token=owner.token,
        expect_errors=True,
    )
    too_many = await gql.execute(INVOICES, {"first": 101}, token=owner.token, expect_errors=True)
    # then each error carries its code and field
    assert [e["extensions"] for e in bad_id["errors"]] == [
        {"code": "INVALID_ID", "field": "filter.clientId"}
    ]
    assert [e["extensions"] for e in too_many["errors"]] == [
        {"code": "OUT_OF_RANGE", "field": "first"}
    ]


LIST_WITH_CHILDREN = """
query {
  invoices(first: 100) {
    totalCount
    edges { node { id lineItems { id } client { name } project { name } } }
  }
}
"""


async def _invoices_with_lines(owner: Account, clients: list[Client], count: int) -> None:
    """``count`` drafts spread over ``clients`` and a project of each, with two lines each."""
    projects = [
        await create_project(owner, client, name=f"{client.name} site") for client in clients
    ]
    invoices = [
        Invoice(
            agency_id=owner.agency_id,
            client_id=clients[n % len(clients)].id,
            project_id=projects[n % len(clients)].id,
            currency="INR",
        )
        for n in range(count)
    ]
    await Invoice.bulk_create(invoices, batch_size=500)
    await InvoiceLine.bulk_create(
        [
            InvoiceLine(
                agency_id=owner.agency_id,
                invoice_id=invoice.id,
                description=f"Line {position}",
                position=position,
                quantity=Decimal(1),
                unit_price_minor=100,
            )
            for invoice in invoices
            for position in range(2)
        ],
        batch_size=500,
    )


async def test_a_page_of_invoices_costs_the_same_queries_whatever_its_size(
    gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given an agency with 3 invoices, and one with 60 over three clients
    await _invoices_with_lines(rival, [await create_client(rival, name="R")], 3)
    clients = [await create_client(owner, name=f"Client {n}") for n in range(3)]
    await _invoices_with_lines(owner, clients, 60)

    # when each lists its invoices with their lines and clients
    with count_queries() as small_count:
        small = await gql.execute(LIST_WITH_CHILDREN, token=rival.token)
    with count_queries() as large_count:
        large = await gql.execute(LIST_WITH_CHILDREN, token=owner.token)

    # then every invoice has its own two lines and its client
    assert small["invoices"]["totalCount"] == 3
    assert large["invoices"]["totalCount"] == 60
    names = {c.id: c.name for c in clients}
    for node in (e["node"] for e in large["invoices"]["edges"]):
        lines = await InvoiceLine.filter(invoice_id=node["id"]).order_by("position")
        assert node["lineItems"] == [{"id": str(row.id)} for row in lines]
        client_name = names[(await Invoice.get(id=node["id"])).client_id]
        assert node["client"] == {"name": client_name}
        assert node["project"] == {"name": f"{client_name} site"}
    # and the number of SQL statements is the same
    assert large_count.count == small_count.count, (small_count.queries, large_count.queries)
    # (the caller, the count, the page, the visible ones among them, their lines, the clients,
    # the projects)
    assert large_count.count == 7, large_count.queries
