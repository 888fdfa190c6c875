"""Round trip: an agency's clients and contacts exported, then imported into an empty agency.

The export writes what a spreadsheet may open safely (a BOM, formula cells quoted) and
the import reads Settle's own files back: the second agency ends up with the same
clients and contacts, and importing the same files again changes nothing.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Backend
from tests.fixtures.csv_import import counts, imported
from tests.fixtures.factories import Account, create_client, create_contact
from tests.fixtures.graphql import GraphQLClient

pytestmark = pytest.mark.usefixtures("files_dir")

CREATE_EXPORT = """
mutation CreateExport($input: CreateExportInput!) {
  createExport(input: $input) { __typename ... on Export { id } ... on Error { code message } }
}
"""

EXPORT = """
query Export($id: ID!) { export(id: $id) { status rows url } }
"""

CLIENTS = """
query Clients {
  clients(first: 50) {
    totalCount
    edges { node { name email phone address taxId currency isActive externalId
      contacts { name email phone title isPrimary } } }
  }
}
"""


async def exported(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, account: Account, entity: str
) -> bytes:
    """The bytes of a completed export of ``entity``, downloaded from its URL."""
    data = await gql.execute(CREATE_EXPORT, {"input": {"entity": entity}}, token=account.token)
    assert data["createExport"]["__typename"] == "Export", data
    await db.drain()
    data = await gql.execute(EXPORT, {"id": data["createExport"]["id"]}, token=account.token)
    assert data["export"]["status"] == "COMPLETED", data
    response = await http.get(data["export"]["url"].removeprefix("http://settle.test"))
    assert response.status_code == 200, response.text
    return response.content


async def clients_of(gql: GraphQLClient, account: Account) -> list[dict[str, Any]]:
    """Every client with its contacts, in an order both agencies share."""
    data = await gql.execute(CLIENTS, token=account.token)
    nodes = [edge["node"] for edge in data["clients"]["edges"]]
    for node in nodes:
        node["contacts"].sort(key=lambda contact: contact["name"])
    return sorted(nodes, key=lambda node: node["name"])


async def test_exported_clients_and_contacts_import_into_an_empty_agency_unchanged(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, rival: Account
) -> None:
    # given an agency whose clients hold what a CSV makes hard: formula-like text, a
    # line break, accents, an inactive client, with and without an external id
    acme = await create_client(
        owner,
        name="Acme Ltd",
        email="billing@acme.example",
        phone="+44 20 7946 0000",
        address="1 High St\nLondon",
        tax_id="GB123",
        currency="GBP",
        external_id="crm-1",
    )
    await create_contact(
        owner, acme, primary=True, name="Ann Lead", email="ann@acme.example", title="CFO"
    )
    await create_contact(owner, acme, name="Bob Second", email="bob@acme.example", title="-Ops-")
    formula = await create_client(owner, name="=SUM(A1) Café", currency="EUR", is_active=False)
    await create_contact(owner, formula, primary=True, name="@Zoë", email="zoe@sum.example")
    await create_client(owner, name="Bolt", currency="USD")
    expected = await clients_of(gql, owner)
    assert len(expected) == 3

    # when its clients, then its contacts, are exported and imported into an empty agency
    clients_csv = await exported(db, gql, http, owner, "CLIENTS")
    contacts_csv = await exported(db, gql, http, owner, "CONTACTS")
    first = await imported(db, gql, http, rival, clients_csv)
    contacts = await imported(db, gql, http, rival, contacts_csv, entity="CONTACTS")

    # then the clients and their contacts are reproduced, field for field
    assert counts(first) == {
        "status": "COMPLETED",
        "processed": 3,
        "total": 3,
        "created": 3,
        "updated": 0,
        "skipped": 0,
        "failed": 0,
    }, first
    assert contacts["failed"] == 0, contacts
    assert await clients_of(gql, rival) == expected

    # when the same files are imported again, even with UPDATE
    for entity, body in (("CLIENTS", clients_csv), ("CONTACTS", contacts_csv)):
        for on_duplicate in ("SKIP", "UPDATE"):
            again = await imported(
                db, gql, http, rival, body, entity=entity, on_duplicate=on_duplicate
            )

            # then nothing changes: every row is matched and left as it is
            assert (again["status"], again["created"], again["updated"], again["failed"]) == (
                "COMPLETED",
                0,
                0,
                0,
            ), (entity, on_duplicate, again)
            assert again["skipped"] == again["total"]
    assert await clients_of(gql, rival) == expected
