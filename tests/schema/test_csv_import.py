"""CSV import through the API: upload to the signed URL, preview, start, the job, the results.

Every test goes the way a frontend does: ``createImport``, a ``PUT`` of the file to
its URL, ``previewImport``, ``startImport``; the job runs on the tests' in-process
worker (joined with ``drain``) and the outcome is read back with the ``import`` query.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from settle.core import clock
from settle.core.errors import ValidationError
from settle.core.settings import configure_settings, get_settings
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client, Contact
from settle.models.csv_import import CsvImport, CsvImportError, CsvImportFailedRow, ImportStatus
from settle.services import client as client_service
from settle.services import csv_import as csv_import_service
from settle.services import janitor as janitor_service
from settle.tasks import janitor as janitor_tasks
from tests.conftest import Backend
from tests.fixtures.csv_import import (
    counts,
    create_import,
    csv_text,
    imported,
    preview,
    start,
    state,
    uploaded,
)
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account, create_client, create_contact, create_user
from tests.fixtures.files import stored_files, tamper
from tests.fixtures.graphql import GraphQLClient, count_queries

pytestmark = pytest.mark.usefixtures("files_dir")

IMPORTS_QUERY = """
query Imports { imports(first: 10) { totalCount edges { node { id filename status } } } }
"""

CLIENTS_QUERY = """
query Clients {
  clients(first: 50) {
    edges { node { name email phone address taxId currency isActive externalId
      contacts { name email phone title isPrimary } } }
  }
}
"""

CLIENTS_HEADER = (
    "name,email,phone,address,tax_id,currency,is_active,external_id,"
    "contact_name,contact_email,contact_phone,contact_title"
)


@pytest.fixture
def batches_of_two(db: Backend) -> Iterator[None]:
    """Two rows a batch, so a few rows make several transactions (and checkpoints)."""
    current = get_settings()
    configure_settings(
        current.model_copy(update={"import_batch_size": 2, "import_progress_interval_seconds": 0})
    )
    yield
    configure_settings(current)


async def clients_of(gql: GraphQLClient, account: Account) -> list[dict[str, Any]]:
    data = await gql.execute(CLIENTS_QUERY, token=account.token)
    return [edge["node"] for edge in data["clients"]["edges"]]


CLIENTS_FILE = csv_text(
    [
        CLIENTS_HEADER.split(","),
        [
            "Acme Ltd",
            "billing@acme.test",
            "+44 20 7946 0000",
            "12 Harbour Road\nBristol",
            "GB123",
            "GBP",
            "yes",
            "crm-1",
            "Ada Lovelace",
            "ada@acme.test",
            "",
            "CFO",
        ],
        ["Bolt Inc", "", "", "", "", "usd", "", "crm-2", "", "", "", ""],
        ["Café Noir", "", "", "", "", "EUR", "0", "", "", "", "", ""],
    ]
)


# --- the happy path -------------------------------------------------------------------------


async def test_clients_with_their_contacts_are_imported_through_the_api(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given a CSV of three clients, one with its primary contact, uploaded to its URL
    import_id = await uploaded(gql, http, owner, CLIENTS_FILE.encode())

    # when the owner previews it
    shown = await preview(gql, owner, import_id)

    # then the file is described and every column is recognised by its name
    targets = CLIENTS_HEADER.split(",")
    assert shown["__typename"] == "ImportPreview"
    assert (shown["encoding"], shown["delimiter"]) == ("UTF8", ",")
    assert shown["header"] == targets
    assert shown["suggestedMapping"] == [{"column": c, "target": c} for c in targets]
    assert shown["mapping"] == shown["suggestedMapping"]
    assert shown["import"] == {"status": "UPLOADED", "total": 3}
    assert [(row["row"], row["errors"]) for row in shown["rows"]] == [(2, []), (3, []), (4, [])]
    assert shown["rows"][0]["cells"][3] == "12 Harbour Road\nBristol"

    # when the import is started and its job runs
    started = await start(gql, owner, import_id)
    assert started["__typename"] == "Import"
    assert (started["status"], started["onDuplicate"], started["total"]) == ("QUEUED", "SKIP", 3)
    await db.drain()

    # then the three clients are there, with the contact as the primary one
    result = await state(gql, owner, import_id)
    assert counts(result) == {
        "status": "COMPLETED",
        "processed": 3,
        "total": 3,
        "created": 3,
        "updated": 0,
        "skipped": 0,
        "failed": 0,
    }
    assert result["failedRowsUrl"] is None
    assert result["errors"] == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }
    assert await clients_of(gql, owner) == [
        {
            "name": "Acme Ltd",
            "email": "billing@acme.test",
            "phone": "+44 20 7946 0000",
            "address": "12 Harbour Road\nBristol",
            "taxId": "GB123",
            "currency": "GBP",
            "isActive": True,
            "externalId": "crm-1",
            "contacts": [
                {
                    "name": "Ada Lovelace",
                    "email": "ada@acme.test",
                    "phone": None,
                    "title": "CFO",
                    "isPrimary": True,
                }
            ],
        },
        {
            "name": "Bolt Inc",
            "email": None,
            "phone": None,
            "address": None,
            "taxId": None,
            "currency": "USD",
            "isActive": True,
            "externalId": "crm-2",
            "contacts": [],
        },
        {
            "name": "Café Noir",
            "email": None,
            "phone": None,
            "address": None,
            "taxId": None,
            "currency": "EUR",
            "isActive": False,
            "externalId": None,
            "contacts": [],
        },
    ]
    # and the timeline says who created them, and that the import ran
    created = await ActivityEvent.filter(entity_type="client", verb="created").count()
    assert created == 3
    import_events = await ActivityEvent.filter(entity_type="import").order_by("created_at")
    assert [(event.verb, event.actor_id) for event in import_events] == [
        ("started", owner.user.id),
        ("completed", owner.user.id),
    ]
    assert import_events[1].summary == (
        "Import of clients.csv: 3 created, 0 updated, 0 skipped, 0 failed"
    )
    # and the imports list shows it
    listed = await gql.execute(IMPORTS_QUERY, token=owner.token)
    assert listed["imports"]["totalCount"] == 1
    assert listed["imports"]["edges"][0]["node"]["status"] == "COMPLETED"
    # and the file is not kept once its rows are in: a preview now says so
    assert stored_files(get_settings().resolved_storage_dir) == {}
    late = await preview(gql, owner, import_id)
    assert (late["__typename"], late["code"]) == ("ConflictError", "IMPORT_FINISHED")


@pytest.mark.parametrize(
    ("encoding", "bom", "delimiter", "shown_encoding", "shown_delimiter"),
    [
        ("utf-8", False, ",", "UTF8", ","),
        ("utf-8", True, ";", "UTF8_BOM", ";"),
        ("cp1252", False, "\t", "WINDOWS_1252", "\t"),
        ("cp1252", False, ";", "WINDOWS_1252", ";"),
    ],
    ids=["utf8-comma", "utf8-bom-semicolon", "windows1252-tab", "windows1252-semicolon"],
)
async def test_encodings_and_delimiters_spreadsheets_write(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    encoding: str,
    bom: bool,
    delimiter: str,
    shown_encoding: str,
    shown_delimiter: str,
) -> None:
    # given a file as a spreadsheet writes it: accents, a quoted cell with the delimiter,
    # a quote and a line break in it, and headers in other words ("Company", "E-mail")
    text = csv_text(
        [
            ["Company", "E-mail", "Address", "id", "created_at"],
            [
                "Café Crème",
                "hello@creme.test",
                f'1 Rue "Haute"{delimiter} Étage 2\r\nParis',
                "9",
                "",
            ],
            ["Zoë & Søn", "", "", "10", "2026-01-01"],
        ],
        delimiter,
    )
    body = ("\ufeff" if bom else "").encode() + text.encode(encoding)

    # when it is uploaded and previewed
    import_id = await uploaded(gql, http, owner, body)
    shown = await preview(gql, owner, import_id)

    # then the encoding, the delimiter and the columns are recognised (id and created_at
    # are not imported)
    assert (shown["encoding"], shown["delimiter"]) == (shown_encoding, shown_delimiter)
    assert shown["header"] == ["Company", "E-mail", "Address", "id", "created_at"]
    assert shown["suggestedMapping"] == [
        {"column": "Company", "target": "name"},
        {"column": "E-mail", "target": "email"},
        {"column": "Address", "target": "address"},
        {"column": "id", "target": None},
        {"column": "created_at", "target": None},
    ]
    assert shown["rows"][0]["cells"][:3] == [
        "Café Crème",
        "hello@creme.test",
        f'1 Rue "Haute"{delimiter} Étage 2\r\nParis',
    ]

    # and the import writes the text exactly
    await start(gql, owner, import_id)
    await db.drain()
    clients = {client.name: client for client in await Client.filter(agency_id=owner.agency_id)}
    assert set(clients) == {"Café Crème", "Zoë & Søn"}
    assert clients["Café Crème"].address == f'1 Rue "Haute"{delimiter} Étage 2\r\nParis'
    assert clients["Café Crème"].email == "hello@creme.test"


async def test_a_mapping_given_by_the_user_is_used(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given a file whose columns have names nothing recognises
    body = csv_text([["Firm", "Reach me", "Ref"], ["Acme", "a@acme.test", "x-1"]]).encode()
    import_id = await uploaded(gql, http, owner, body)
    mapping = [
        {"column": "Firm", "target": "name"},
        {"column": "Reach me", "target": "email"},
        {"column": "Ref", "target": "external_id"},
    ]

    # when previewed without a mapping, then with one
    unmapped = await preview(gql, owner, import_id)
    mapped = await preview(gql, owner, import_id, mapping)

    # then the suggestion maps nothing and refuses to go on without a name column
    assert unmapped == {
        "__typename": "ValidationError",
        "code": "MISSING_REQUIRED_COLUMN",
        "field": "mapping",
        "message": "No column is mapped to name",
    }
    # and the given mapping is the one applied
    assert mapped["mapping"] == mapping
    assert mapped["suggestedMapping"] == [
        {"column": "Firm", "target": None},
        {"column": "Reach me", "target": None},
        {"column": "Ref", "target": None},
    ]
    started = await start(gql, owner, import_id, mapping=mapping)
    assert started["mapping"] == mapping
    await db.drain()
    client = await Client.get(agency_id=owner.agency_id)
    assert (client.name, client.email, client.external_id) == ("Acme", "a@acme.test", "x-1")


# --- importing twice --------------------------------------------------------------------------


async def world() -> dict[str, list[dict[str, Any]]]:
    """Every client, contact and timeline event: what a second import must not change."""
    return {
        "clients": await Client.all().order_by("id").values(),
        "contacts": await Contact.all().order_by("id").values(),
        "events": await ActivityEvent.exclude(entity_type="import").order_by("id").values(),
    }


@pytest.mark.parametrize("on_duplicate", ["SKIP", "UPDATE"])
async def test_the_same_file_imported_twice_changes_nothing_the_second_time(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    on_duplicate: str,
    batches_of_two: None,
) -> None:
    # given the clients file imported once (in batches of two)
    body = CLIENTS_FILE.encode()
    first = await imported(db, gql, http, owner, body, on_duplicate=on_duplicate)
    assert (first["created"], first["status"]) == (3, "COMPLETED")
    before = await world()

    # when the same file is imported again
    second = await imported(db, gql, http, owner, body, on_duplicate=on_duplicate)

    # then every row is found and skipped, and nothing changed
    assert counts(second) == {
        "status": "COMPLETED",
        "processed": 3,
        "total": 3,
        "created": 0,
        "updated": 0,
        "skipped": 3,
        "failed": 0,
    }
    assert await world() == before


async def test_update_changes_the_matched_clients_and_skip_leaves_them(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given Acme (external id crm-1, a contact) and Bolt made by hand (matched by name)
    acme = await create_client(owner, name="Acme Ltd", external_id="crm-1", email="old@acme.test")
    await create_contact(owner, acme, name="Old Contact", email="old@acme.test")
    bolt = await create_client(owner, name="BOLT INC", currency="USD")
    body = CLIENTS_FILE.replace("Acme Ltd", "Acme Limited").encode()

    # when the file is imported with SKIP
    skipped = await imported(db, gql, http, owner, body, on_duplicate="SKIP")

    # then the matched clients are left as they were; only the new one is created
    assert (skipped["created"], skipped["updated"], skipped["skipped"]) == (1, 0, 2)
    assert (await Client.get(id=acme.id)).name == "Acme Ltd"

    # when the file is imported with UPDATE
    updated = await imported(db, gql, http, owner, body, on_duplicate="UPDATE")

    # then Acme (by external id) and Bolt (by name) take the row's cells, Acme's new
    # contact becomes its primary one, and the third row (now existing) is unchanged
    assert (updated["created"], updated["updated"], updated["skipped"]) == (0, 2, 1)
    acme = await Client.get(id=acme.id)
    assert (acme.name, acme.email, acme.currency, acme.tax_id) == (
        "Acme Limited",
        "billing@acme.test",
        "GBP",
        "GB123",
    )
    contacts = await Contact.filter(client_id=acme.id).order_by("created_at")
    assert [(c.name, c.is_primary) for c in contacts] == [
        ("Old Contact", False),
        ("Ada Lovelace", True),
    ]
    bolt = await Client.get(id=bolt.id)
    assert (bolt.name, bolt.external_id) == ("Bolt Inc", "crm-2")
    assert await Client.filter(agency_id=owner.agency_id).count() == 3
    updates = await ActivityEvent.filter(entity_type="client", verb="updated").count()
    assert updates == 2


async def test_contacts_are_imported_to_clients_found_by_external_id_or_name(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given two clients, one with an external id, and a contact already there
    acme = await create_client(owner, name="Acme Ltd", external_id="crm-1")
    bolt = await create_client(owner, name="Bolt Inc")
    await create_contact(owner, bolt, name="Bea", email="bea@bolt.test")
    body = csv_text(
        [
            ["client_external_id", "client_name", "name", "email", "phone", "title", "is_primary"],
            ["crm-1", "", "Ada", "ada@acme.test", "", "CFO", "false"],
            ["crm-1", "", "Alan", "alan@acme.test", "", "", "true"],
            ["", "bolt inc", "Beatrice", "BEA@bolt.test", "", "CEO", ""],
            ["", "Nobody Ltd", "Nora", "nora@nobody.test", "", "", ""],
            ["crm-404", "Acme Ltd", "Ned", "", "", "", ""],
        ]
    ).encode()

    # when the contacts are imported with UPDATE
    result = await imported(db, gql, http, owner, body, entity="CONTACTS", on_duplicate="UPDATE")

    # then Acme gets two contacts (the one marked primary is its primary), Bea is matched
    # by email and updated, and rows naming no client of the agency fail
    assert counts(result) == {
        "status": "COMPLETED",
        "processed": 5,
        "total": 5,
        "created": 2,
        "updated": 1,
        "skipped": 0,
        "failed": 2,
    }
    acme_contacts = await Contact.filter(client_id=acme.id).order_by("name")
    assert [(c.name, c.title, c.is_primary) for c in acme_contacts] == [
        ("Ada", "CFO", False),
        ("Alan", None, True),
    ]
    bolt_contacts = await Contact.filter(client_id=bolt.id)
    assert [(c.name, c.email, c.title) for c in bolt_contacts] == [
        ("Beatrice", "bea@bolt.test", "CEO")
    ]
    assert [edge["node"] for edge in result["errors"]["edges"]] == [
        {
            "row": 5,
            "field": "client_name",
            "code": "CLIENT_NOT_FOUND",
            "message": "No client of the agency matches",
        },
        {
            "row": 6,
            "field": "client_external_id",
            "code": "CLIENT_NOT_FOUND",
            "message": "No client of the agency matches",
        },
    ]


# --- rows that fail ----------------------------------------------------------------------------


async def test_rows_that_fail_are_reported_and_downloadable_with_neutralised_cells(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given a file with good rows and bad ones: a bad email and currency, a formula as a
    # name with a bad boolean, a missing name, an external id too long
    await create_client(owner, name="Existing", external_id="taken")
    body = csv_text(
        [
            ["name", "email", "currency", "is_active", "external_id"],
            ["Good One", "one@good.test", "USD", "true", ""],
            ["Bad Mail", "not-an-email", "XXX", "", ""],
            ['=HYPERLINK("http://evil.test")', "", "", "maybe", ""],
            ["", "-2+3", "", "", ""],
            ["Long Ref", "", "", "", "x" * 101],
            ["Good Two", "", "", "no", ""],
        ]
    ).encode()

    # when it is previewed
    import_id = await uploaded(gql, http, owner, body)
    shown = await preview(gql, owner, import_id)

    # then each row shows its field errors, with the service's own codes
    assert [[(e["field"], e["code"]) for e in row["errors"]] for row in shown["rows"]] == [
        [],
        [("email", "INVALID_EMAIL"), ("currency", "INVALID_CURRENCY")],
        [("is_active", "INVALID_BOOLEAN")],
        [("email", "INVALID_EMAIL"), ("name", "REQUIRED")],
        [("external_id", "TOO_LONG")],
        [],
    ]

    # when it is imported
    await start(gql, owner, import_id)
    await db.drain()
    result = await state(gql, owner, import_id, first=2)

    # then the good rows are in, the bad ones counted and listed, two errors a page
    assert counts(result) == {
        "status": "COMPLETED",
        "processed": 6,
        "total": 6,
        "created": 2,
        "updated": 0,
        "skipped": 0,
        "failed": 4,
    }
    names = set(await Client.filter(agency_id=owner.agency_id).values_list("name", flat=True))
    assert names == {"Existing", "Good One", "Good Two"}
    errors = [edge["node"] for edge in result["errors"]["edges"]]
    assert result["errors"]["totalCount"] == 6
    assert result["errors"]["pageInfo"]["hasNextPage"] is True
    after = result["errors"]["pageInfo"]["endCursor"]
    while after is not None:
        page = await state(gql, owner, import_id, first=2, after=after)
        errors += [edge["node"] for edge in page["errors"]["edges"]]
        after = (
            page["errors"]["pageInfo"]["endCursor"]
            if page["errors"]["pageInfo"]["hasNextPage"]
            else None
        )
    assert sorted((e["row"], e["field"], e["code"]) for e in errors) == [
        (3, "currency", "INVALID_CURRENCY"),
        (3, "email", "INVALID_EMAIL"),
        (4, "is_active", "INVALID_BOOLEAN"),
        (5, "email", "INVALID_EMAIL"),
        (5, "name", "REQUIRED"),
        (6, "external_id", "TOO_LONG"),
    ]

    # and the failed rows download as CSV with an error column, formulas neutralised
    url = result["failedRowsUrl"]["url"]
    response = await http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "clients-failed-rows.csv" in response.headers["content-disposition"]
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text[1:])))
    assert rows[0] == ["name", "email", "currency", "is_active", "external_id", "error"]
    assert [row[:5] for row in rows[1:]] == [
        ["Bad Mail", "not-an-email", "XXX", "", ""],
        ['\'=HYPERLINK("http://evil.test")', "", "", "maybe", ""],
        ["", "'-2+3", "", "", ""],
        ["Long Ref", "", "", "", "x" * 101],
    ]
    assert rows[2][5] == "is_active: is_active must be true, false, yes, no, 1 or 0"
    assert rows[4][5] == "external_id: externalId must be at most 100 characters"
    assert len(rows) == 5


# --- refusals -------------------------------------------------------------------------------


async def test_a_file_over_the_size_limit_is_refused(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given a limit of 1 KB
    configure_settings(get_settings().model_copy(update={"import_max_bytes": 1024}))

    # when a larger file is declared
    refused = await create_import(gql, owner, b"x" * 1025)

    # then it is refused and nothing is written
    assert refused == {
        "__typename": "ValidationError",
        "field": "sizeBytes",
        "code": "TOO_LARGE",
        "message": "sizeBytes must be at most 1024",
    }
    assert await CsvImport.all().count() == 0

    # when a file declared small is sent larger
    created = await create_import(gql, owner, b"name\nA\n")
    response = await http.put(created["uploadUrl"], content=b"name\n" + b"A" * 2000)

    # then the body is refused as it streams, and nothing is kept
    assert response.status_code == 413
    assert response.json()["code"] == "TOO_LARGE"
    row = await CsvImport.get(id=created["import"]["id"])
    assert row.status is ImportStatus.AWAITING_UPLOAD
    assert stored_files(get_settings().resolved_storage_dir) == {}


async def test_a_wrong_size_or_a_second_upload_is_refused(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given an import declared as 12 bytes
    body = b"name\nAcme\nB\n"
    created = await create_import(gql, owner, body)

    # when 11 bytes are sent, then the right 12, then 12 again
    short = await http.put(created["uploadUrl"], content=body[:-1])
    right = await http.put(created["uploadUrl"], content=body)
    again = await http.put(created["uploadUrl"], content=body)

    # then only the right body is kept, once
    assert (short.status_code, short.json()["code"]) == (400, "SIZE_MISMATCH")
    assert right.status_code == 200
    assert (again.status_code, again.json()["code"]) == (409, "CONFLICT")
    assert list(stored_files(get_settings().resolved_storage_dir).values()) == [body]


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"name,email\x00\nA,b\n", "UNPARSEABLE_FILE", "The file is not text (it holds NUL bytes)"),
        (b"\xef\xbb\xbfname\n\xe9\n", "UNPARSEABLE_FILE", None),
        (b"\n\n  \n", "UNPARSEABLE_FILE", "The file has no header row"),
        (b"name\nA\nB\nC\n", "TOO_MANY_ROWS", "An import has at most 2 rows after the header"),
    ],
    ids=["binary", "broken-utf8-bom", "empty", "too-many-rows"],
)
async def test_files_that_cannot_be_imported_are_refused_with_their_reason(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    body: bytes,
    code: str,
    message: str | None,
) -> None:
    # given a row limit of 2 and an uploaded file that cannot be imported
    configure_settings(get_settings().model_copy(update={"import_max_rows": 2}))
    import_id = await uploaded(gql, http, owner, body)

    # when it is previewed, and started
    shown = await preview(gql, owner, import_id)
    started = await start(gql, owner, import_id)

    # then both say why, and nothing is queued or written
    for answer in (shown, started):
        assert (answer["__typename"], answer["field"], answer["code"]) == (
            "ValidationError",
            "file",
            code,
        )
        if message is not None:
            assert answer["message"] == message
    assert (await CsvImport.get(id=import_id)).status is ImportStatus.UPLOADED
    assert await Client.all().count() == 0


async def test_mappings_that_cannot_work_are_refused(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given an uploaded contacts file
    body = csv_text([["client_name", "name", "email"], ["Acme", "Ada", ""]]).encode()
    import_id = await uploaded(gql, http, owner, body, entity="CONTACTS")

    # when mappings name an unknown field, an unknown column, a field twice, or leave
    # out a required one
    cases = [
        [{"column": "name", "target": "nickname"}],
        [{"column": "Name ", "target": "name"}],
        [{"column": "name", "target": "name"}, {"column": "email", "target": "name"}],
        [{"column": "client_name", "target": "client_name"}],
        [{"column": "name", "target": "name"}],
    ]
    answers = [await start(gql, owner, import_id, mapping=mapping) for mapping in cases]

    # then each is refused with its code, naming the place, and nothing starts
    assert [(a["code"], a["field"]) for a in answers] == [
        ("UNKNOWN_TARGET", "mapping[0].target"),
        ("UNKNOWN_COLUMN", "mapping[0].column"),
        ("DUPLICATE", "mapping[1].target"),
        ("MISSING_REQUIRED_COLUMN", "mapping"),
        ("MISSING_REQUIRED_COLUMN", "mapping"),
    ]
    assert answers[4]["message"] == "No column is mapped to client_external_id or client_name"
    assert (await CsvImport.get(id=import_id)).status is ImportStatus.UPLOADED


async def test_an_import_starts_once_and_only_with_its_file(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given an import whose file has not arrived, and one started already
    waiting = await create_import(gql, owner, b"name\nA\n")
    import_id = await uploaded(gql, http, owner, b"name\nA\n")
    await start(gql, owner, import_id)
    await db.drain()
    before = await row_counts(Client, CsvImport)

    # when each is started (again)
    early = await start(gql, owner, waiting["import"]["id"])
    twice = await start(gql, owner, import_id)

    # then the first waits for its file and the second cannot start twice
    assert (early["__typename"], early["code"]) == ("ConflictError", "NOT_UPLOADED")
    assert twice == {
        "__typename": "InvalidTransitionError",
        "code": "INVALID_TRANSITION",
        "message": "Import cannot move from completed to queued",
        "currentState": "completed",
    }
    assert await row_counts(Client, CsvImport) == before


@pytest.mark.parametrize("role", [Role.MEMBER, Role.CLIENT_LEAD])
async def test_members_and_client_users_cannot_import(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, role: Role
) -> None:
    # given an uploaded import of the owner, a member and a client lead
    client = await create_client(owner, name="Acme")
    user = await create_user(owner, role=role, client=client if role.is_client else None)
    import_id = await uploaded(gql, http, owner, b"name\nA\n")

    # when the user creates, previews and starts imports
    created = await create_import(gql, user, b"name\nA\n")
    shown = await preview(gql, user, import_id)
    started = await start(gql, user, import_id)

    # then a member is refused, and a client user does not even see the import
    if role is Role.MEMBER:
        assert [a["code"] for a in (created, shown, started)] == ["PERMISSION_DENIED"] * 3
    else:
        assert [a["code"] for a in (created, shown, started)] == [
            "PERMISSION_DENIED",
            "NOT_FOUND",
            "NOT_FOUND",
        ]
        data = await gql.execute(IMPORTS_QUERY, token=user.token)
        assert data["imports"] == {"totalCount": 0, "edges": []}
    assert (await CsvImport.get(id=import_id)).status is ImportStatus.UPLOADED
    assert await CsvImport.all().count() == 1


async def test_an_admin_imports(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given an admin
    admin = await create_user(owner, role=Role.ADMIN)
    # when the admin imports a file
    result = await imported(db, gql, http, admin, b"name\nAcme\n")
    # then it is imported
    assert (result["status"], result["created"]) == ("COMPLETED", 1)


# --- crashes and retries -----------------------------------------------------------------------


async def test_a_job_that_dies_midway_resumes_after_its_last_batch_without_doubling(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    batches_of_two: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a file of seven clients, imported in batches of two, whose job dies on the
    # sixth row the first time (after two batches committed, in the middle of the third)
    names = [f"Client {n}" for n in range(1, 8)]
    body = csv_text([["name"], *[[name] for name in names]]).encode()
    import_id = await uploaded(gql, http, owner, body)
    real_create = client_service.create_client
    seen: list[tuple[str, int]] = []

    async def dying_create(actor: Any, values: dict[str, Any]) -> Client:
        row = await CsvImport.get(id=import_id)
        seen.append((values["name"], row.rows_done))
        if values["name"] == "Client 6" and len(seen) == 6:
            raise RuntimeError("worker killed")
        return await real_create(actor, values)

    monkeypatch.setattr(client_service, "create_client", dying_create)

    # when the import runs: the job fails once and is retried by the broker
    await start(gql, owner, import_id)
    await db.drain()

    # then the first run stopped in its third batch with two batches committed, and the
    # retry started after them: row 5 was tried twice (its batch rolled back), no row
    # before it again
    assert seen == [
        ("Client 1", 0),
        ("Client 2", 0),
        ("Client 3", 2),
        ("Client 4", 2),
        ("Client 5", 4),
        ("Client 6", 4),
        ("Client 5", 4),
        ("Client 6", 4),
        ("Client 7", 6),
    ]
    # and every client exists exactly once
    result = await state(gql, owner, import_id)
    assert counts(result) == {
        "status": "COMPLETED",
        "processed": 7,
        "total": 7,
        "created": 7,
        "updated": 0,
        "skipped": 0,
        "failed": 0,
    }
    assert (
        sorted(await Client.filter(agency_id=owner.agency_id).values_list("name", flat=True))
        == names
    )
    assert await ActivityEvent.filter(entity_type="client", verb="created").count() == 7


async def test_two_runs_of_the_job_at_once_write_each_row_once(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, batches_of_two: None
) -> None:
    # given a started import of nine clients (one failing), its job not yet run
    rows = [[f"Client {n}", "bad" if n == 4 else ""] for n in range(1, 10)]
    body = csv_text([["name", "email"], *rows]).encode()
    import_id = await uploaded(gql, http, owner, body)
    await CsvImport.filter(id=import_id).update(
        status=ImportStatus.QUEUED, mapping={"name": "name", "email": "email"}
    )
    row = await CsvImport.get(id=import_id)
    await csv_import_service.inspect(row)

    # when two runs of the job go at once (the janitor's re-send beside the original)
    await asyncio.gather(csv_import_service.run(row.id), csv_import_service.run(row.id))

    # then every row was handled once: eight clients, one failed row with its error
    row = await CsvImport.get(id=import_id)
    assert (row.status, row.rows_done, row.created_count, row.failed_count) == (
        ImportStatus.COMPLETED,
        9,
        8,
        1,
    )
    assert await Client.filter(agency_id=owner.agency_id).count() == 8
    assert await CsvImportFailedRow.filter(csv_import_id=row.id).count() == 1
    assert await CsvImportError.filter(csv_import_id=row.id).count() == 1


async def test_an_import_whose_worker_died_is_finished_by_the_janitor(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    batches_of_two: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a started import of seven clients whose worker died in its third batch, its
    # message lost with it (the job is run here by hand, as the worker would)
    body = csv_text([["name"], *[[f"Client {n}"] for n in range(1, 8)]]).encode()
    import_id = await uploaded(gql, http, owner, body)
    row = await CsvImport.get(id=import_id)
    await csv_import_service.inspect(row)
    await CsvImport.filter(id=import_id).update(
        status=ImportStatus.QUEUED, mapping={"name": "name"}
    )
    real_create = client_service.create_client

    async def dying_create(actor: Any, values: dict[str, Any]) -> Client:
        if values["name"] == "Client 5":
            raise RuntimeError("worker killed")
        return await real_create(actor, values)

    monkeypatch.setattr(client_service, "create_client", dying_create)
    with pytest.raises(RuntimeError, match="worker killed"):
        await csv_import_service.run(row.id)
    monkeypatch.setattr(client_service, "create_client", real_create)
    stalled = await CsvImport.get(id=import_id)
    assert (stalled.status, stalled.rows_done, stalled.created_count) == (
        ImportStatus.RUNNING,
        4,
        4,
    )

    # when the janitor finds it stalled (its last batch committed long ago) and re-sends it
    await CsvImport.filter(id=import_id).update(updated_at=clock.now() - timedelta(minutes=10))
    sent = await janitor_service.resend_stuck(janitor_tasks.send_once)
    await db.drain()

    # then the import goes on after its last batch and every client exists once
    assert sent.jobs[csv_import_service.RUN_JOB] == [row.id]
    result = await state(gql, owner, import_id)
    assert counts(result) == {
        "status": "COMPLETED",
        "processed": 7,
        "total": 7,
        "created": 7,
        "updated": 0,
        "skipped": 0,
        "failed": 0,
    }
    names = await Client.filter(agency_id=owner.agency_id).values_list("name", flat=True)
    assert sorted(names) == [f"Client {n}" for n in range(1, 8)]


async def test_a_row_refused_midway_leaves_nothing_of_itself(
    db: Backend,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a file of two clients with contacts, and the contact service refusing Bolt's
    # contact after Bolt itself was written (as a rule checked inside the service would)
    body = csv_text(
        [
            ["name", "contact_name"],
            ["Acme", "Ada"],
            ["Bolt", "Bea"],
        ]
    ).encode()
    real_create_contact = client_service.create_contact

    async def refusing(actor: Any, client_id: Any, values: dict[str, Any], **kw: Any) -> Contact:
        if values["name"] == "Bea":
            raise ValidationError("name", "Bea is not welcome", code="NOT_ALLOWED")
        return await real_create_contact(actor, client_id, values, **kw)

    monkeypatch.setattr(client_service, "create_contact", refusing)

    # when it is imported
    result = await imported(db, gql, http, owner, body)

    # then Bolt's row failed as a whole: neither Bolt nor its timeline event was kept
    assert (result["created"], result["failed"]) == (1, 1)
    assert [edge["node"] for edge in result["errors"]["edges"]] == [
        {"row": 3, "field": "contact_name", "code": "NOT_ALLOWED", "message": "Bea is not welcome"}
    ]
    assert await Client.filter(agency_id=owner.agency_id).values_list("name", flat=True) == ["Acme"]
    summaries = await ActivityEvent.filter(entity_type__in=["client", "contact"]).values_list(
        "summary", flat=True
    )
    assert sorted(summaries) == ["Client Acme created", "Contact Ada added to Acme"]


async def test_the_failed_rows_link_works_for_the_agencys_staff_only(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, rival: Account
) -> None:
    # given an import with a failed row, and its failed-rows link made for a member
    member = await create_user(owner, role=Role.MEMBER)
    result = await imported(db, gql, http, owner, b"name,email\nAcme,bad\n")
    import_id = (await CsvImport.get(agency_id=owner.agency_id)).id
    data = await gql.execute(
        "query I($id: ID!) { import(id: $id) { failedRowsUrl { url } } }",
        {"id": str(import_id)},
        token=member.token,
    )
    member_url = data["import"]["failedRowsUrl"]["url"]
    assert result["failed"] == 1

    # when the member downloads it, then it is theirs to read
    assert (await http.get(member_url)).status_code == 200

    # when the link is tampered with, or its user leaves the agency
    tampered = await http.get(tamper(member_url))
    await gql.execute(
        "mutation R($userId: ID!) { removeMember(userId: $userId) { __typename } }",
        {"userId": str(member.user.id)},
        token=owner.token,
    )
    removed = await http.get(member_url)

    # then both are refused
    assert (tampered.status_code, tampered.json()["code"]) == (403, "INVALID_SIGNATURE")
    assert removed.status_code == 403
    # and the rival never sees the import at all
    rival_view = await gql.execute(
        "query I($id: ID!) { import(id: $id) { id } }", {"id": str(import_id)}, token=rival.token
    )
    assert rival_view == {"import": None}


async def test_two_imports_of_one_file_at_once_create_each_client_once(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, batches_of_two: None
) -> None:
    # given the same file of nine clients uploaded twice and both imports queued
    body = csv_text([["name"], *[[f"Client {n}"] for n in range(1, 10)]]).encode()
    rows = []
    for _ in range(2):
        import_id = await uploaded(gql, http, owner, body)
        await CsvImport.filter(id=import_id).update(
            status=ImportStatus.QUEUED, mapping={"name": "name"}
        )
        rows.append(await csv_import_service.inspect(await CsvImport.get(id=import_id)))

    # when both jobs run at once
    await asyncio.gather(*(csv_import_service.run(row.id) for row in rows))

    # then each client exists once: one import created it, the other found it
    finished = [await CsvImport.get(id=row.id) for row in rows]
    assert [row.status for row in finished] == [ImportStatus.COMPLETED] * 2
    assert sum(row.created_count for row in finished) == 9
    assert sum(row.skipped_count for row in finished) == 9
    names = await Client.filter(agency_id=owner.agency_id).values_list("name", flat=True)
    assert sorted(names) == sorted(f"Client {n}" for n in range(1, 10))


IMPORTS_WITH_ERRORS = """
query Imports {
  imports(first: 10) {
    totalCount
    edges { node { failed errors(first: 5) { totalCount edges { node { row code } } } } }
  }
}
"""


async def test_a_list_of_imports_reads_their_errors_in_a_fixed_number_of_queries(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given one import with two failed rows
    body = b"name,email\nAcme,bad\nBolt,also-bad\nCo,\n"
    await imported(db, gql, http, owner, body)

    # when the imports are listed with their errors, with one import and then with three
    with count_queries() as one:
        first = await gql.execute(IMPORTS_WITH_ERRORS, token=owner.token)
    for _ in range(2):
        await imported(db, gql, http, owner, body)
    with count_queries() as three:
        listed = await gql.execute(IMPORTS_WITH_ERRORS, token=owner.token)

    # then each import shows its own errors, and the queries do not grow with the list
    page = {
        "totalCount": 2,
        "edges": [
            {"node": {"row": 2, "code": "INVALID_EMAIL"}},
            {"node": {"row": 3, "code": "INVALID_EMAIL"}},
        ],
    }
    assert first["imports"]["edges"] == [{"node": {"failed": 2, "errors": page}}]
    assert listed["imports"]["totalCount"] == 3
    assert [edge["node"] for edge in listed["imports"]["edges"]] == [
        {"failed": 2, "errors": page}
    ] * 3
    assert three.count == one.count
