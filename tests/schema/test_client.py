"""The CRM through the API: clients, contacts, notes and the timeline, on both backends."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from settle.core import clock
from settle.core.outbox import transaction
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client, Contact, Note
from settle.services import client as client_service
from tests.fixtures.db import row_counts
from tests.fixtures.factories import (
    Account,
    create_client,
    create_contact,
    create_note,
    create_user,
)
from tests.fixtures.graphql import GraphQLClient, count_queries

T = TypeVar("T")

ERROR_FIELDS = """
    ... on Error { __typename code message }
    ... on ValidationError { field }
"""

CLIENT_FIELDS = "id name email phone address taxId currency isActive"

CREATE_CLIENT = f"""
mutation CreateClient($input: CreateClientInput!) {{
  createClient(input: $input) {{
    __typename
    ... on Client {{ {CLIENT_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

UPDATE_CLIENT = f"""
mutation UpdateClient($id: ID!, $input: UpdateClientInput!) {{
  updateClient(id: $id, input: $input) {{
    __typename
    ... on Client {{ {CLIENT_FIELDS} }}
    {ERROR_FIELDS}
  }}
}}
"""

DELETE_CLIENT = f"""
mutation DeleteClient($id: ID!) {{
  deleteClient(id: $id) {{
    __typename
    ... on Client {{ id name isActive }}
    {ERROR_FIELDS}
  }}
}}
"""

CLIENT = f"""
query Client($id: ID!) {{
  client(id: $id) {{ {CLIENT_FIELDS} }}
}}
"""

CLIENTS = """
query Clients($first: Int!, $after: String, $filter: ClientFilter, $orderBy: ClientOrder) {
  clients(first: $first, after: $after, filter: $filter, orderBy: $orderBy) {
    totalCount
    edges { cursor node { id name } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

CREATE_CONTACT = f"""
mutation CreateContact($input: CreateContactInput!) {{
  createContact(input: $input) {{
    __typename
    ... on Contact {{ id name email phone title isPrimary clientId }}
    {ERROR_FIELDS}
  }}
}}
"""

SET_PRIMARY_CONTACT = f"""
mutation SetPrimaryContact($id: ID!) {{
  setPrimaryContact(id: $id) {{
    __typename
    ... on Contact {{ id isPrimary }}
    {ERROR_FIELDS}
  }}
}}
"""

DELETE_CONTACT = f"""
mutation DeleteContact($id: ID!) {{
  deleteContact(id: $id) {{
    __typename
    ... on Contact {{ id }}
    {ERROR_FIELDS}
  }}
}}
"""

CLIENT_CONTACTS = """
query ClientContacts($id: ID!) {
  client(id: $id) {
    contacts { name isPrimary }
    primaryContact { name }
  }
}
"""

ADD_NOTE = f"""
mutation AddNote($input: AddNoteInput!) {{
  addNote(input: $input) {{
    __typename
    ... on Note {{ id body pinned clientId author {{ name }} }}
    {ERROR_FIELDS}
  }}
}}
"""

UPDATE_NOTE = f"""
mutation UpdateNote($id: ID!, $input: UpdateNoteInput!) {{
  updateNote(id: $id, input: $input) {{
    __typename
    ... on Note {{ id body pinned }}
    {ERROR_FIELDS}
  }}
}}
"""

DELETE_NOTE = f"""
mutation DeleteNote($id: ID!) {{
  deleteNote(id: $id) {{
    __typename
    ... on Note {{ id }}
    {ERROR_FIELDS}
  }}
}}
"""

CLIENT_NOTES = """
query ClientNotes($id: ID!, $first: Int!, $after: String, $pinned: Boolean) {
  client(id: $id) {
    notes(first: $first, after: $after, pinned: $pinned) {
      totalCount
      edges { cursor node { body pinned } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""

EVENT_FIELDS = """
  entityType entityId verb summary clientId
  actor { name }
  changes { field before after }
"""

TIMELINE = f"""
query Timeline($first: Int!, $after: String, $filter: TimelineFilter) {{
  timeline(first: $first, after: $after, filter: $filter) {{
    totalCount
    edges {{ cursor node {{ {EVENT_FIELDS} }} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}
"""

CLIENT_TIMELINE = f"""
query ClientTimeline($id: ID!, $first: Int!, $after: String, $filter: TimelineFilter) {{
  client(id: $id) {{
    timeline(first: $first, after: $after, filter: $filter) {{
      totalCount
      edges {{ cursor node {{ {EVENT_FIELDS} }} }}
      pageInfo {{ hasNextPage endCursor }}
    }}
  }}
}}
"""

CLIENTS_WITH_CHILDREN = """
query ClientsWithChildren {
  clients(first: 100) {
    totalCount
    edges {
      node {
        id
        contacts { id }
        notes(first: 3) { totalCount edges { node { id author { name } } } }
      }
    }
  }
}
"""


async def _latest_event(**filters: Any) -> ActivityEvent:
    event = await ActivityEvent.filter(**filters).order_by("-created_at", "-id").first()
    assert event is not None, f"no event matching {filters}"
    return event


async def _all_pages(
    gql: GraphQLClient, token: str, variables: dict[str, Any], *, first: int
) -> tuple[list[dict[str, str]], list[int]]:
    """Walk a `clients` list page by page; returns its nodes and every page's totalCount."""
    nodes: list[dict[str, str]] = []
    totals: list[int] = []
    after: str | None = None
    for _ in range(50):
        data = await gql.execute(
            CLIENTS, {**variables, "first": first, "after": after}, token=token
        )
        page = data["clients"]
        nodes += [edge["node"] for edge in page["edges"]]
        totals.append(page["totalCount"])
        assert page["pageInfo"]["endCursor"] == (
            page["edges"][-1]["cursor"] if page["edges"] else None
        )
        if not page["pageInfo"]["hasNextPage"]:
            return nodes, totals
        after = page["pageInfo"]["endCursor"]
    pytest.fail("pagination did not end")


# --- clients ---------------------------------------------------------------


async def test_create_client_returns_it_and_records_who_did_it(
    gql: GraphQLClient, owner: Account
) -> None:
    # given an owner
    # when they create a client (with untidy input)
    data = await gql.execute(
        CREATE_CLIENT,
        {
            "input": {
                "name": "  Acme Ltd ",
                "email": "Billing@Acme.COM",
                "phone": "+44 20 7946 0000",
                "address": "1 Long Road\nLondon",
                "taxId": "GB123456789",
                "currency": "gbp",
            }
        },
        token=owner.token,
    )
    # then the client comes back normalised
    created = data["createClient"]
    assert created == {
        "__typename": "Client",
        "id": created["id"],
        "name": "Acme Ltd",
        "email": "billing@acme.com",
        "phone": "+44 20 7946 0000",
        "address": "1 Long Road\nLondon",
        "taxId": "GB123456789",
        "currency": "GBP",
        "isActive": True,
    }
    # and it is stored in the owner's agency
    row = await Client.get(id=created["id"])
    assert (row.agency_id, row.name, row.currency, row.deleted_at) == (
        owner.agency_id,
        "Acme Ltd",
        "GBP",
        None,
    )
    # and the timeline says who created it, with every field it was given
    timeline = await gql.execute(
        TIMELINE, {"first": 5, "filter": {"clientId": created["id"]}}, token=owner.token
    )
    assert [edge["node"] for edge in timeline["timeline"]["edges"]] == [
        {
            "entityType": "client",
            "entityId": created["id"],
            "verb": "created",
            "summary": "Client Acme Ltd created",
            "clientId": created["id"],
            "actor": {"name": "Olive Owner"},
            "changes": [
                {"field": "address", "before": None, "after": "1 Long Road\nLondon"},
                {"field": "currency", "before": None, "after": "GBP"},
                {"field": "email", "before": None, "after": "billing@acme.com"},
                {"field": "name", "before": None, "after": "Acme Ltd"},
                {"field": "phone", "before": None, "after": "+44 20 7946 0000"},
                {"field": "taxId", "before": None, "after": "GB123456789"},
            ],
        }
    ]


async def test_update_client_records_exactly_what_changed(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a client
    client = await create_client(owner, name="Acme", email="old@acme.com", currency="USD")
    # when its name and email change (and its currency is sent unchanged)
    data = await gql.execute(
        UPDATE_CLIENT,
        {
            "id": str(client.id),
            "input": {"name": "Acme Group", "email": "new@acme.com", "currency": "usd"},
        },
        token=owner.token,
    )
    # then the client has the new values
    assert data["updateClient"] == {
        "__typename": "Client",
        "id": str(client.id),
        "name": "Acme Group",
        "email": "new@acme.com",
        "phone": None,
        "address": None,
        "taxId": None,
        "currency": "USD",
        "isActive": True,
    }
    row = await Client.get(id=client.id)
    assert (row.name, row.email, row.currency) == ("Acme Group", "new@acme.com", "USD")
    # and the client's timeline shows the update first, with only the changed fields
    timeline = await gql.execute(
        CLIENT_TIMELINE, {"id": str(client.id), "first": 1}, token=owner.token
    )
    assert timeline["client"]["timeline"]["edges"][0]["node"] == {
        "entityType": "client",
        "entityId": str(client.id),
        "verb": "updated",
        "summary": "Client Acme Group updated",
        "clientId": str(client.id),
        "actor": {"name": "Olive Owner"},
        "changes": [
            {"field": "email", "before": "old@acme.com", "after": "new@acme.com"},
            {"field": "name", "before": "Acme", "after": "Acme Group"},
        ],
    }
    assert timeline["client"]["timeline"]["totalCount"] == 2


async def test_update_without_changes_records_nothing(gql: GraphQLClient, owner: Account) -> None:
    # given a client
    client = await create_client(owner, name="Acme")
    before = await row_counts(Client, Contact, Note)
    # when an update sends the values it already has
    data = await gql.execute(
        UPDATE_CLIENT, {"id": str(client.id), "input": {"name": "Acme"}}, token=owner.token
    )
    # then it succeeds and no event is recorded
    assert data["updateClient"]["name"] == "Acme"
    assert await row_counts(Client, Contact, Note) == before


async def test_deactivation_is_a_status_change(gql: GraphQLClient, owner: Account) -> None:
    # given an active client
    client = await create_client(owner, name="Acme")
    # when it is deactivated and activated again
    off = await gql.execute(
        UPDATE_CLIENT, {"id": str(client.id), "input": {"isActive": False}}, token=owner.token
    )
    on = await gql.execute(
        UPDATE_CLIENT, {"id": str(client.id), "input": {"isActive": True}}, token=owner.token
    )
    # then each is its own status verb, newest first
    assert (off["updateClient"]["isActive"], on["updateClient"]["isActive"]) == (False, True)
    timeline = await gql.execute(
        CLIENT_TIMELINE, {"id": str(client.id), "first": 2}, token=owner.token
    )
    assert [
        (edge["node"]["verb"], edge["node"]["summary"], edge["node"]["changes"])
        for edge in timeline["client"]["timeline"]["edges"]
    ] == [
        (
            "activated",
            "Client Acme activated",
            [{"field": "isActive", "before": False, "after": True}],
        ),
        (
            "deactivated",
            "Client Acme deactivated",
            [{"field": "isActive", "before": True, "after": False}],
        ),
    ]


async def test_delete_client_is_a_soft_delete(gql: GraphQLClient, owner: Account) -> None:
    # given two clients
    gone = await create_client(owner, name="Gone Ltd")
    kept = await create_client(owner, name="Kept Ltd")
    # when one is deleted
    data = await gql.execute(DELETE_CLIENT, {"id": str(gone.id)}, token=owner.token)
    # then it is returned, inactive
    assert data["deleteClient"] == {
        "__typename": "Client",
        "id": str(gone.id),
        "name": "Gone Ltd",
        "isActive": False,
    }
    # and it is gone from the list and from lookups
    listed = await gql.execute(CLIENTS, {"first": 10}, token=owner.token)
    assert [edge["node"]["name"] for edge in listed["clients"]["edges"]] == ["Kept Ltd"]
    assert listed["clients"]["totalCount"] == 1
    assert await gql.execute(CLIENT, {"id": str(gone.id)}, token=owner.token) == {"client": None}
    # but the row and its history stay
    row = await Client.get(id=gone.id)
    assert row.deleted_at is not None
    assert row.is_active is False
    event = await _latest_event(entity_id=gone.id)
    assert (event.verb, event.actor_id, event.summary) == (
        "deleted",
        owner.user.id,
        "Client Gone Ltd deleted",
    )
    assert event.changes == {
        "deleted_at": {"before": None, "after": row.deleted_at.isoformat()},
        "is_active": {"before": True, "after": False},
    }
    assert (await Client.get(id=kept.id)).deleted_at is None
    # and deleting it again is a NotFoundError that writes nothing
    before = await row_counts(Client, Contact, Note)
    again = await gql.execute(DELETE_CLIENT, {"id": str(gone.id)}, token=owner.token)
    assert again["deleteClient"] == {
        "__typename": "NotFoundError",
        "code": "NOT_FOUND",
        "message": "Client not found",
    }
    assert await row_counts(Client, Contact, Note) == before


async def test_member_cannot_delete_a_client(gql: GraphQLClient, owner: Account) -> None:
    # given a member of the agency and a client
    member = await create_user(owner, role=Role.MEMBER)
    client = await create_client(owner, name="Acme")
    before = await row_counts(Client, Contact, Note)
    # when the member tries to delete it
    data = await gql.execute(DELETE_CLIENT, {"id": str(client.id)}, token=member.token)
    # then permission is denied and nothing changed
    assert data["deleteClient"] == {
        "__typename": "PermissionDeniedError",
        "code": "PERMISSION_DENIED",
        "message": "You are not allowed to do this",
    }
    assert (await Client.get(id=client.id)).deleted_at is None
    assert await row_counts(Client, Contact, Note) == before


async def test_clients_filters(gql: GraphQLClient, owner: Account, rival: Account) -> None:
    # given active, inactive, deleted and foreign clients in several currencies
    await create_client(owner, name="Acme Ltd", email="ap@acme.com", currency="USD")
    await create_client(owner, name="Blue Sky", email="billing@ACME-group.com", currency="EUR")
    inactive = await create_client(owner, name="Cedar & Co", currency="EUR")
    await create_client(owner, name="100% Design", currency="INR")
    deleted = await create_client(owner, name="Acme Deleted", currency="USD")
    await create_client(rival, name="Acme Rival", currency="USD")
    async with transaction():
        await client_service.update_client(owner.actor, inactive.id, {"is_active": False})
        await client_service.delete_client(owner.actor, deleted.id)

    async def names(flt: dict[str, Any] | None) -> list[str]:
        data = await gql.execute(CLIENTS, {"first": 100, "filter": flt}, token=owner.token)
        connection = data["clients"]
        assert connection["totalCount"] == len(connection["edges"])
        return [edge["node"]["name"] for edge in connection["edges"]]

    # then each filter narrows the agency's live clients, sorted by name
    assert await names(None) == ["100% Design", "Acme Ltd", "Blue Sky", "Cedar & Co"]
    # search matches name or email, case-insensitively
    assert await names({"search": "acme"}) == ["Acme Ltd", "Blue Sky"]
    assert await names({"search": "  SKY "}) == ["Blue Sky"]
    # wildcard characters are matched literally
    assert await names({"search": "%"}) == ["100% Design"]
    assert await names({"search": "_"}) == []
    assert await names({"isActive": False}) == ["Cedar & Co"]
    assert await names({"isActive": True}) == ["100% Design", "Acme Ltd", "Blue Sky"]
    assert await names({"currency": "eur"}) == ["Blue Sky", "Cedar & Co"]
    assert await names({"currency": "EUR", "isActive": True, "search": "b"}) == ["Blue Sky"]
    assert await names({"search": "nothing like it"}) == []


async def test_clients_filter_with_unknown_currency(gql: GraphQLClient, owner: Account) -> None:
    # when the currency filter is not a known code
    body = await gql.execute(
        CLIENTS, {"first": 10, "filter": {"currency": "XYZ"}}, token=owner.token, expect_errors=True
    )
    # then it is a validation error naming the filter field
    assert body["data"] is None
    assert [(e["message"], e["extensions"]) for e in body["errors"]] == [
        (
            "Unknown currency code 'XYZ'",
            {"code": "INVALID_CURRENCY", "field": "filter.currency"},
        )
    ]


ORDERINGS: list[tuple[dict[str, str] | None, list[str]]] = [
    (None, ["Alpha", "Bravo", "Charlie", "Delta"]),
    ({"field": "NAME", "direction": "ASC"}, ["Alpha", "Bravo", "Charlie", "Delta"]),
    ({"field": "NAME", "direction": "DESC"}, ["Delta", "Charlie", "Bravo", "Alpha"]),
    ({"field": "CREATED_AT", "direction": "ASC"}, ["Charlie", "Alpha", "Delta", "Bravo"]),
    ({"field": "CREATED_AT", "direction": "DESC"}, ["Bravo", "Delta", "Alpha", "Charlie"]),
    ({"field": "CREATED_AT"}, ["Charlie", "Alpha", "Delta", "Bravo"]),
]


async def test_clients_order_by(gql: GraphQLClient, owner: Account) -> None:
    # given clients created in an order that is not alphabetical
    for name in ("Charlie", "Alpha", "Delta", "Bravo"):
        await create_client(owner, name=name)
    for order_by, expected in ORDERINGS:
        # when they are listed in a given order
        data = await gql.execute(CLIENTS, {"first": 10, "orderBy": order_by}, token=owner.token)
        # then that is the order
        assert [edge["node"]["name"] for edge in data["clients"]["edges"]] == expected, order_by


async def test_clients_pages_have_no_duplicates_or_gaps(gql: GraphQLClient, owner: Account) -> None:
    # given 11 clients, several sharing a name (the id breaks those ties)
    names = ["Kilo", "Echo", "Echo", "Alpha", "Echo", "Zulu", "Alpha", "Mike", "Echo", "Bravo"]
    for name in [*names, "Yankee"]:
        await create_client(owner, name=name)
    for field in ("NAME", "CREATED_AT"):
        for direction in ("ASC", "DESC"):
            order_by = {"field": field, "direction": direction}
            full = await gql.execute(
                CLIENTS, {"first": 100, "orderBy": order_by}, token=owner.token
            )
            everything = [edge["node"] for edge in full["clients"]["edges"]]
            assert len(everything) == 11
            # when the same list is walked three at a time
            walked, totals = await _all_pages(gql, owner.token, {"orderBy": order_by}, first=3)
            # then the pages add up to the whole list, in order, nothing twice, nothing missed
            assert walked == everything, order_by
            assert len({node["id"] for node in walked}) == 11
            assert totals == [11, 11, 11, 11]


async def test_cursor_stays_valid_when_rows_are_added(gql: GraphQLClient, owner: Account) -> None:
    # given a first page of clients by name
    for name in ("B", "D", "F"):
        await create_client(owner, name=name)
    first = await gql.execute(CLIENTS, {"first": 2}, token=owner.token)
    assert [edge["node"]["name"] for edge in first["clients"]["edges"]] == ["B", "D"]
    # when clients are added before and after the cursor
    await create_client(owner, name="A")
    await create_client(owner, name="E")
    # then the next page continues after the cursor's row
    after = first["clients"]["pageInfo"]["endCursor"]
    nxt = await gql.execute(CLIENTS, {"first": 10, "after": after}, token=owner.token)
    assert [edge["node"]["name"] for edge in nxt["clients"]["edges"]] == ["E", "F"]
    assert nxt["clients"]["pageInfo"] == {
        "hasNextPage": False,
        "endCursor": nxt["clients"]["edges"][-1]["cursor"],
    }


async def test_first_out_of_range_is_a_validation_error(gql: GraphQLClient, owner: Account) -> None:
    # given a client
    await create_client(owner, name="Acme")
    before = await row_counts(Client, Contact, Note)
    for first in (0, -1, 101, 1000):
        # when a page of an impossible size is asked for
        body = await gql.execute(CLIENTS, {"first": first}, token=owner.token, expect_errors=True)
        # then the error names `first`, with a stable code, and nothing is returned
        assert body["data"] is None
        assert [(e["message"], e["path"], e["extensions"]) for e in body["errors"]] == [
            (
                "first must be between 1 and 100",
                ["clients"],
                {"code": "OUT_OF_RANGE", "field": "first"},
            )
        ], first
    # or written
    assert await row_counts(Client, Contact, Note) == before


async def test_list_fields_check_first_too(gql: GraphQLClient, owner: Account) -> None:
    # given a client
    client = await create_client(owner, name="Acme")
    # when its notes or the timeline are asked for with first over 100
    for query, variables, path in [
        (CLIENT_NOTES, {"id": str(client.id), "first": 101}, ["client", "notes"]),
        (CLIENT_TIMELINE, {"id": str(client.id), "first": 101}, ["client", "timeline"]),
        (TIMELINE, {"first": 101}, ["timeline"]),
    ]:
        body = await gql.execute(query, variables, token=owner.token, expect_errors=True)
        # then each is the same validation error
        assert [(e["path"], e["extensions"]) for e in body["errors"]] == [
            (path, {"code": "OUT_OF_RANGE", "field": "first"})
        ], query


async def test_invalid_cursor_is_a_validation_error_on_after(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a client
    await create_client(owner, name="Acme")
    # when the list is asked for after a cursor that is not one of ours
    for after in ("not-a-cursor", "eyJ4IjoxfQ", "W10"):
        body = await gql.execute(
            CLIENTS, {"first": 10, "after": after}, token=owner.token, expect_errors=True
        )
        # then it is a validation error on `after`
        assert [(e["message"], e["extensions"]) for e in body["errors"]] == [
            ("Invalid cursor", {"code": "INVALID_CURSOR", "field": "after"})
        ], after
    # and an empty cursor is no cursor: the first page
    data = await gql.execute(CLIENTS, {"first": 10, "after": ""}, token=owner.token)
    assert data["clients"]["totalCount"] == 1


async def test_cursor_of_another_ordering_is_rejected(gql: GraphQLClient, owner: Account) -> None:
    # given a cursor from the list sorted by name
    await create_client(owner, name="A")
    await create_client(owner, name="B")
    data = await gql.execute(CLIENTS, {"first": 1}, token=owner.token)
    cursor = data["clients"]["pageInfo"]["endCursor"]
    # when it is used on the list sorted by creation time
    body = await gql.execute(
        CLIENTS,
        {"first": 1, "after": cursor, "orderBy": {"field": "CREATED_AT"}},
        token=owner.token,
        expect_errors=True,
    )
    # then it is an invalid cursor rather than a page from nowhere
    assert [e["extensions"] for e in body["errors"]] == [
        {"code": "INVALID_CURSOR", "field": "after"}
    ]


# --- bad input -------------------------------------------------------------

LONG = "x" * 201


BAD_CLIENT_INPUT: list[tuple[dict[str, Any], str, str]] = [
    ({"name": "Acme", "email": "not-an-email"}, "email", "INVALID_EMAIL"),
    ({"name": "Acme", "email": "ann@"}, "email", "INVALID_EMAIL"),
    ({"name": ""}, "name", "REQUIRED"),
    ({"name": "   \t "}, "name", "REQUIRED"),
    ({"name": "Acme", "currency": "XYZ"}, "currency", "INVALID_CURRENCY"),
    ({"name": "Acme", "currency": ""}, "currency", "INVALID_CURRENCY"),
    ({"name": LONG}, "name", "TOO_LONG"),
    ({"name": "Acme", "taxId": "1" * 65}, "taxId", "TOO_LONG"),
    ({"name": "Acme", "address": "a" * 1001}, "address", "TOO_LONG"),
    ({"name": "Acme", "email": f"{'a' * 250}@acme.com"}, "email", "TOO_LONG"),
    ({"name": "Acme", "phone": "call me maybe"}, "phone", "INVALID_PHONE"),
    ({"name": "Acme\x07Ltd"}, "name", "INVALID_CHARACTERS"),
]
# NUL (and lone surrogates) in any string are refused before an operation runs, with a
# top-level INVALID_CHARACTERS error: see tests/test_bad_input.py.


async def test_create_client_rejects_bad_input_and_writes_nothing(
    gql: GraphQLClient, owner: Account
) -> None:
    # given an agency with no clients
    before = await row_counts(Client, Contact, Note)
    for values, field, code in BAD_CLIENT_INPUT:
        # when a client is created with one bad field
        data = await gql.execute(CREATE_CLIENT, {"input": values}, token=owner.token)
        # then the result is a ValidationError naming that field
        result = data["createClient"]
        assert (result["__typename"], result["field"], result["code"]) == (
            "ValidationError",
            field,
            code,
        ), values
        assert result["message"]
    # and no client, timeline event or outbox message was written
    assert await row_counts(Client, Contact, Note) == before


BAD_CLIENT_UPDATES: list[tuple[dict[str, Any], str, str]] = [
    ({"email": "nope"}, "email", "INVALID_EMAIL"),
    ({"name": ""}, "name", "REQUIRED"),
    ({"name": None}, "name", "REQUIRED"),
    ({"name": LONG}, "name", "TOO_LONG"),
    ({"currency": "ABC"}, "currency", "INVALID_CURRENCY"),
    ({"currency": None}, "currency", "INVALID_CURRENCY"),
    ({"isActive": None}, "isActive", "VALIDATION_ERROR"),
    # a valid change beside a bad one is not half-applied
    ({"name": "Renamed", "email": "nope"}, "email", "INVALID_EMAIL"),
    ({"isActive": False, "taxId": "1" * 65}, "taxId", "TOO_LONG"),
]


async def test_update_client_rejects_bad_input_and_changes_nothing(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a client
    client = await create_client(owner, name="Acme", email="ap@acme.com", currency="USD")
    before = await row_counts(Client, Contact, Note)
    for values, field, code in BAD_CLIENT_UPDATES:
        # when it is updated with a bad field
        data = await gql.execute(
            UPDATE_CLIENT, {"id": str(client.id), "input": values}, token=owner.token
        )
        # then the error names it
        result = data["updateClient"]
        assert (result["__typename"], result["field"], result["code"]) == (
            "ValidationError",
            field,
            code,
        ), values
    # and the client and its timeline are untouched
    row = await Client.get(id=client.id)
    assert (row.name, row.email, row.currency, row.is_active, row.tax_id) == (
        "Acme",
        "ap@acme.com",
        "USD",
        True,
        None,
    )
    assert await row_counts(Client, Contact, Note) == before


async def test_malformed_ids_are_validation_errors(gql: GraphQLClient, owner: Account) -> None:
    # when a mutation gets an id that is not an id
    data = await gql.execute(DELETE_CLIENT, {"id": "nope"}, token=owner.token)
    # then it is a ValidationError on `id`; a lookup is simply null
    assert data["deleteClient"] == {
        "__typename": "ValidationError",
        "code": "INVALID_ID",
        "message": "id is not a valid id",
        "field": "id",
    }
    assert await gql.execute(CLIENT, {"id": "nope"}, token=owner.token) == {"client": None}


# --- contacts --------------------------------------------------------------


async def _contacts(gql: GraphQLClient, token: str, client_id: uuid.UUID) -> list[tuple[str, bool]]:
    data = await gql.execute(CLIENT_CONTACTS, {"id": str(client_id)}, token=token)
    contacts = [(c["name"], c["isPrimary"]) for c in data["client"]["contacts"]]
    primary = data["client"]["primaryContact"]
    assert primary == ({"name": contacts[0][0]} if contacts else None)
    # the API's view is the database's: one primary row while there are contacts
    primaries = await Contact.filter(client_id=client_id, is_primary=True).count()
    assert primaries == (1 if contacts else 0)
    return contacts


async def test_contacts_have_exactly_one_primary(gql: GraphQLClient, owner: Account) -> None:
    # given a client without contacts
    client = await create_client(owner, name="Acme")

    async def add(name: str, **extra: Any) -> dict[str, Any]:
        data = await gql.execute(
            CREATE_CONTACT,
            {"input": {"clientId": str(client.id), "name": name, **extra}},
            token=owner.token,
        )
        result: dict[str, Any] = data["createContact"]
        return result

    # when the first contact is added, it becomes primary without asking
    ann = await add("Ann", email="Ann@Acme.com", title="CFO", phone="+1 555 0100")
    assert ann == {
        "__typename": "Contact",
        "id": ann["id"],
        "name": "Ann",
        "email": "ann@acme.com",
        "phone": "+1 555 0100",
        "title": "CFO",
        "isPrimary": True,
        "clientId": str(client.id),
    }
    # and later ones do not
    bob = await add("Bob")
    assert bob["isPrimary"] is False
    assert await _contacts(gql, owner.token, client.id) == [("Ann", True), ("Bob", False)]
    # when a contact is created as primary, it takes over
    cat = await add("Cat", isPrimary=True)
    assert cat["isPrimary"] is True
    assert await _contacts(gql, owner.token, client.id) == [
        ("Cat", True),
        ("Ann", False),
        ("Bob", False),
    ]
    # when another is set primary, the previous one is demoted
    data = await gql.execute(SET_PRIMARY_CONTACT, {"id": bob["id"]}, token=owner.token)
    assert data["setPrimaryContact"] == {
        "__typename": "Contact",
        "id": bob["id"],
        "isPrimary": True,
    }
    assert await _contacts(gql, owner.token, client.id) == [
        ("Bob", True),
        ("Ann", False),
        ("Cat", False),
    ]
    event = await _latest_event(entity_id=uuid.UUID(bob["id"]))
    assert (event.verb, event.changes) == (
        "primary_changed",
        {"primary_contact_id": {"before": cat["id"], "after": bob["id"]}},
    )
    # when the primary is deleted, the oldest remaining contact (Ann) is promoted
    data = await gql.execute(DELETE_CONTACT, {"id": bob["id"]}, token=owner.token)
    assert data["deleteContact"] == {"__typename": "Contact", "id": bob["id"]}
    assert await _contacts(gql, owner.token, client.id) == [("Ann", True), ("Cat", False)]
    assert await Contact.filter(id=bob["id"]).count() == 0
    event = await _latest_event(entity_id=uuid.UUID(bob["id"]))
    assert (event.verb, event.summary) == ("deleted", "Contact Bob removed; Ann is now primary")
    # when a non-primary is deleted, the primary stays
    await gql.execute(DELETE_CONTACT, {"id": cat["id"]}, token=owner.token)
    assert await _contacts(gql, owner.token, client.id) == [("Ann", True)]
    # and the last contact can go too
    await gql.execute(DELETE_CONTACT, {"id": ann["id"]}, token=owner.token)
    assert await _contacts(gql, owner.token, client.id) == []
    assert await Contact.filter(client_id=client.id).count() == 0


async def test_set_primary_on_the_primary_changes_nothing(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a client whose only contact is primary
    client = await create_client(owner, name="Acme")
    ann = await create_contact(owner, client, name="Ann")
    before = await row_counts(Client, Contact, Note)
    # when it is set primary again
    data = await gql.execute(SET_PRIMARY_CONTACT, {"id": str(ann.id)}, token=owner.token)
    # then it is returned as primary and no event is recorded for a non-change
    assert data["setPrimaryContact"] == {
        "__typename": "Contact",
        "id": str(ann.id),
        "isPrimary": True,
    }
    assert await row_counts(Client, Contact, Note) == before


BAD_CONTACT_INPUT: list[tuple[dict[str, Any], str, str]] = [
    ({"name": ""}, "name", "REQUIRED"),
    ({"name": "Ann", "email": "ann@"}, "email", "INVALID_EMAIL"),
    ({"name": LONG}, "name", "TOO_LONG"),
    ({"name": "Ann", "title": "t" * 121}, "title", "TOO_LONG"),
    ({"name": "Ann", "isPrimary": True, "phone": "x"}, "phone", "INVALID_PHONE"),
]


async def test_create_contact_rejects_bad_input(gql: GraphQLClient, owner: Account) -> None:
    # given a client with a primary contact
    client = await create_client(owner, name="Acme")
    ann = await create_contact(owner, client, name="Ann")
    before = await row_counts(Client, Contact, Note)
    for values, field, code in BAD_CONTACT_INPUT:
        # when a bad contact is added
        data = await gql.execute(
            CREATE_CONTACT, {"input": {"clientId": str(client.id), **values}}, token=owner.token
        )
        # then it is rejected, naming the field
        result = data["createContact"]
        assert (result["__typename"], result["field"], result["code"]) == (
            "ValidationError",
            field,
            code,
        ), values
    # and nothing changed: no contact, no event, and Ann is still the one primary
    assert await row_counts(Client, Contact, Note) == before
    assert await Contact.filter(client_id=client.id, is_primary=True).values_list(
        "id", flat=True
    ) == [ann.id]


async def test_contact_of_a_deleted_client_is_gone(gql: GraphQLClient, owner: Account) -> None:
    # given a deleted client with a contact
    client = await create_client(owner, name="Acme")
    ann = await create_contact(owner, client, name="Ann")
    await gql.execute(DELETE_CLIENT, {"id": str(client.id)}, token=owner.token)
    # then contacts cannot be added to it or changed
    data = await gql.execute(
        CREATE_CONTACT, {"input": {"clientId": str(client.id), "name": "Bob"}}, token=owner.token
    )
    assert data["createContact"]["code"] == "NOT_FOUND"
    data = await gql.execute(SET_PRIMARY_CONTACT, {"id": str(ann.id)}, token=owner.token)
    assert data["setPrimaryContact"]["code"] == "NOT_FOUND"


# --- notes -----------------------------------------------------------------


async def test_notes_add_pin_unpin_delete(gql: GraphQLClient, owner: Account) -> None:
    # given a client
    client = await create_client(owner, name="Acme")
    # when a note is added
    data = await gql.execute(
        ADD_NOTE,
        {"input": {"clientId": str(client.id), "body": "  Prefers email.  "}},
        token=owner.token,
    )
    note = data["addNote"]
    # then it is stored with its author
    assert note == {
        "__typename": "Note",
        "id": note["id"],
        "body": "Prefers email.",
        "pinned": False,
        "clientId": str(client.id),
        "author": {"name": "Olive Owner"},
    }
    row = await Note.get(id=note["id"])
    assert (row.author_id, row.body, row.pinned) == (owner.user.id, "Prefers email.", False)
    # when it is pinned, then unpinned, then edited
    pinned = await gql.execute(
        UPDATE_NOTE, {"id": note["id"], "input": {"pinned": True}}, token=owner.token
    )
    unpinned = await gql.execute(
        UPDATE_NOTE, {"id": note["id"], "input": {"pinned": False}}, token=owner.token
    )
    edited = await gql.execute(
        UPDATE_NOTE, {"id": note["id"], "input": {"body": "Prefers phone."}}, token=owner.token
    )
    assert [pinned["updateNote"]["pinned"], unpinned["updateNote"]["pinned"]] == [True, False]
    assert edited["updateNote"]["body"] == "Prefers phone."
    # when it is deleted
    deleted = await gql.execute(DELETE_NOTE, {"id": note["id"]}, token=owner.token)
    assert deleted["deleteNote"] == {"__typename": "Note", "id": note["id"]}
    assert await Note.filter(id=note["id"]).count() == 0
    # then the timeline tells the whole story, newest first, with the right verbs
    timeline = await gql.execute(
        TIMELINE, {"first": 10, "filter": {"entityTypes": ["note"]}}, token=owner.token
    )
    assert [
        (edge["node"]["verb"], edge["node"]["summary"], edge["node"]["changes"])
        for edge in timeline["timeline"]["edges"]
    ] == [
        ("deleted", "Olive Owner deleted a note", []),
        (
            "updated",
            "Olive Owner updated a note",
            [{"field": "body", "before": "Prefers email.", "after": "Prefers phone."}],
        ),
        (
            "unpinned",
            "Olive Owner unpinned a note",
            [{"field": "pinned", "before": True, "after": False}],
        ),
        (
            "pinned",
            "Olive Owner pinned a note",
            [{"field": "pinned", "before": False, "after": True}],
        ),
        (
            "created",
            "Olive Owner added a note to Acme",
            [
                {"field": "body", "before": None, "after": "Prefers email."},
                {"field": "pinned", "before": None, "after": False},
            ],
        ),
    ]
    assert {edge["node"]["entityId"] for edge in timeline["timeline"]["edges"]} == {note["id"]}


async def test_add_note_rejects_bad_body(gql: GraphQLClient, owner: Account) -> None:
    # given a client
    client = await create_client(owner, name="Acme")
    before = await row_counts(Client, Contact, Note)
    for body, code in [("", "REQUIRED"), ("   ", "REQUIRED"), ("x" * 20_001, "TOO_LONG")]:
        # when a note with a bad body is added
        data = await gql.execute(
            ADD_NOTE, {"input": {"clientId": str(client.id), "body": body}}, token=owner.token
        )
        # then the body is named
        result = data["addNote"]
        assert (result["__typename"], result["field"], result["code"]) == (
            "ValidationError",
            "body",
            code,
        )
    # and nothing was written
    assert await row_counts(Client, Contact, Note) == before


async def test_notes_paginate_newest_first(gql: GraphQLClient, owner: Account) -> None:
    # given seven notes, two of them pinned
    client = await create_client(owner, name="Acme")
    for i in range(7):
        await create_note(owner, client, f"note {i}", pinned=i in (1, 4))

    async def page(first: int, after: str | None, pinned: bool | None = None) -> dict[str, Any]:
        data = await gql.execute(
            CLIENT_NOTES,
            {"id": str(client.id), "first": first, "after": after, "pinned": pinned},
            token=owner.token,
        )
        notes: dict[str, Any] = data["client"]["notes"]
        return notes

    # when they are read three at a time
    bodies: list[str] = []
    after = None
    pages = 0
    for _ in range(5):
        notes = await page(3, after)
        pages += 1
        assert notes["totalCount"] == 7
        bodies += [edge["node"]["body"] for edge in notes["edges"]]
        if not notes["pageInfo"]["hasNextPage"]:
            break
        after = notes["pageInfo"]["endCursor"]
    # then they come newest first, each once
    assert bodies == [f"note {i}" for i in reversed(range(7))]
    assert pages == 3
    # and the pinned filter pages the same way
    first = await page(1, None, pinned=True)
    assert (first["totalCount"], [e["node"] for e in first["edges"]]) == (
        2,
        [{"body": "note 4", "pinned": True}],
    )
    assert first["pageInfo"]["hasNextPage"] is True
    second = await page(1, first["pageInfo"]["endCursor"], pinned=True)
    assert [e["node"] for e in second["edges"]] == [{"body": "note 1", "pinned": True}]
    assert second["pageInfo"]["hasNextPage"] is False
    unpinned = await page(10, None, pinned=False)
    assert [e["node"]["body"] for e in unpinned["edges"]] == [
        "note 6",
        "note 5",
        "note 3",
        "note 2",
        "note 0",
    ]


async def test_client_user_reads_their_client_but_not_notes_and_cannot_change_it(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a client with a note, another client, and a lead of the first client
    client = await create_client(owner, name="Acme", email="ap@acme.com")
    other = await create_client(owner, name="Other")
    note = await create_note(owner, client, "Internal: slow payer")
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    before = await row_counts(Client, Contact, Note)
    # then the lead can read their own client, and only that one
    data = await gql.execute(CLIENT, {"id": str(client.id)}, token=lead.token)
    assert data["client"]["name"] == "Acme"
    assert await gql.execute(CLIENT, {"id": str(other.id)}, token=lead.token) == {"client": None}
    listed = await gql.execute(CLIENTS, {"first": 10}, token=lead.token)
    assert [edge["node"]["name"] for edge in listed["clients"]["edges"]] == ["Acme"]
    # and sees no notes at all
    notes = await gql.execute(CLIENT_NOTES, {"id": str(client.id), "first": 10}, token=lead.token)
    assert notes["client"]["notes"] == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }
    # and cannot add a note, update or delete the client
    denied = {
        "__typename": "PermissionDeniedError",
        "code": "PERMISSION_DENIED",
        "message": "You are not allowed to do this",
    }
    added = await gql.execute(
        ADD_NOTE, {"input": {"clientId": str(client.id), "body": "hi"}}, token=lead.token
    )
    assert added["addNote"] == denied
    updated = await gql.execute(
        UPDATE_CLIENT, {"id": str(client.id), "input": {"name": "Mine now"}}, token=lead.token
    )
    assert updated["updateClient"] == denied
    deleted = await gql.execute(DELETE_CLIENT, {"id": str(client.id)}, token=lead.token)
    assert deleted["deleteClient"] == denied
    # and notes they cannot see cannot be changed either (they do not exist for them)
    changed = await gql.execute(
        UPDATE_NOTE, {"id": str(note.id), "input": {"pinned": True}}, token=lead.token
    )
    assert changed["updateNote"]["code"] == "NOT_FOUND"
    # and nothing was written
    assert await row_counts(Client, Contact, Note) == before
    row = await Client.get(id=client.id)
    assert (row.name, row.deleted_at) == ("Acme", None)


# --- timeline --------------------------------------------------------------


async def _timeline_pages(
    gql: GraphQLClient, token: str, query: str, variables: dict[str, Any], path: list[str]
) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    after = None
    for _ in range(50):
        data: Any = await gql.execute(query, {**variables, "after": after}, token=token)
        for key in path:
            data = data[key]
        nodes += [edge["node"] for edge in data["edges"]]
        if not data["pageInfo"]["hasNextPage"]:
            return nodes
        after = data["pageInfo"]["endCursor"]
    pytest.fail("pagination did not end")


async def test_timeline_newest_first_filtered_and_paginated(
    gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given events at known times on two clients (and one in another agency), all
    # later than the agency's own sign-up events
    start = datetime(2099, 3, 1, 9, 0, tzinfo=UTC)
    now = [start]

    async def at(minute: int, action: Awaitable[T]) -> T:
        now[0] = start + timedelta(minutes=minute)
        return await action

    clock.set_clock(lambda: now[0])
    try:
        acme = await at(0, create_client(owner, name="Acme"))
        await at(1, create_contact(owner, acme, name="Ann"))
        await at(2, create_note(owner, acme, "n1"))
        blue = await at(3, create_client(owner, name="Blue"))
        await at(4, create_contact(owner, blue, name="Bob"))
        await at(5, create_note(owner, acme, "n2"))
        await at(6, create_client(rival, name="Rival"))
    finally:
        clock.set_clock(None)

    def summary(nodes: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        return [(n["entityType"], n["verb"], n["summary"]) for n in nodes]

    everything = [
        ("note", "created", "Olive Owner added a note to Acme"),
        ("contact", "created", "Contact Bob added to Blue"),
        ("client", "created", "Client Blue created"),
        ("note", "created", "Olive Owner added a note to Acme"),
        ("contact", "created", "Contact Ann added to Acme"),
        ("client", "created", "Client Acme created"),
    ]
    # when the agency timeline is walked two at a time
    nodes = await _timeline_pages(gql, owner.token, TIMELINE, {"first": 2}, ["timeline"])
    # then it is newest first and complete, with nothing of the other agency; what
    # follows the CRM events is the owner's own sign-up
    assert summary(nodes[:6]) == everything
    assert [n["clientId"] for n in nodes[6:]] == [None] * (len(nodes) - 6)
    assert "Rival" not in str(nodes)
    first_page = await gql.execute(TIMELINE, {"first": 2}, token=owner.token)
    assert first_page["timeline"]["totalCount"] == len(nodes)
    assert first_page["timeline"]["pageInfo"]["hasNextPage"] is True

    # and filters narrow it: entity types
    nodes = await _timeline_pages(
        gql,
        owner.token,
        TIMELINE,
        {"first": 2, "filter": {"entityTypes": ["client", "contact"]}},
        ["timeline"],
    )
    assert summary(nodes) == [e for e in everything if e[0] != "note"]
    # a date range (inclusive at both ends)
    window = {
        "from": (start + timedelta(minutes=1)).isoformat(),
        "to": (start + timedelta(minutes=4)).isoformat(),
    }
    nodes = await _timeline_pages(
        gql, owner.token, TIMELINE, {"first": 3, "filter": window}, ["timeline"]
    )
    assert summary(nodes) == everything[1:5]
    # one client
    nodes = await _timeline_pages(
        gql, owner.token, TIMELINE, {"first": 2, "filter": {"clientId": str(acme.id)}}, ["timeline"]
    )
    assert summary(nodes) == [everything[0], everything[3], everything[4], everything[5]]
    assert {n["clientId"] for n in nodes} == {str(acme.id)}
    # all of them at once
    nodes = await _timeline_pages(
        gql,
        owner.token,
        TIMELINE,
        {
            "first": 2,
            "filter": {**window, "clientId": str(acme.id), "entityTypes": ["note", "contact"]},
        },
        ["timeline"],
    )
    assert summary(nodes) == [everything[3], everything[4]]
    # and Client.timeline is the same as the clientId filter
    nodes = await _timeline_pages(
        gql, owner.token, CLIENT_TIMELINE, {"id": str(blue.id), "first": 1}, ["client", "timeline"]
    )
    assert summary(nodes) == everything[1:3]
    nodes = await _timeline_pages(
        gql,
        owner.token,
        CLIENT_TIMELINE,
        {"id": str(acme.id), "first": 5, "filter": {"entityTypes": ["note"]}},
        ["client", "timeline"],
    )
    assert summary(nodes) == [everything[0], everything[3]]
    # and every event names its actor
    assert {n["actor"]["name"] for n in nodes} == {"Olive Owner"}


async def test_timeline_range_must_be_ordered(gql: GraphQLClient, owner: Account) -> None:
    # when the timeline is asked for a range that ends before it starts
    body = await gql.execute(
        TIMELINE,
        {
            "first": 5,
            "filter": {"from": "2026-03-02T00:00:00+00:00", "to": "2026-03-01T00:00:00+00:00"},
        },
        token=owner.token,
        expect_errors=True,
    )
    # then the error names the filter field that is wrong
    assert [(e["message"], e["extensions"]) for e in body["errors"]] == [
        ("from must not be after to", {"code": "INVALID_RANGE", "field": "filter.from"})
    ]


async def test_timeline_invalid_client_id(gql: GraphQLClient, owner: Account) -> None:
    # when the timeline filter's client id is not an id
    body = await gql.execute(
        TIMELINE,
        {"first": 5, "filter": {"clientId": "nope"}},
        token=owner.token,
        expect_errors=True,
    )
    # then it is a validation error on that field
    assert [e["extensions"] for e in body["errors"]] == [
        {"code": "INVALID_ID", "field": "filter.clientId"}
    ]


async def test_client_user_timeline_shows_only_their_clients_public_events(
    gql: GraphQLClient, owner: Account
) -> None:
    # given two clients with contacts and notes, and a lead of the first
    acme = await create_client(owner, name="Acme")
    blue = await create_client(owner, name="Blue")
    await create_contact(owner, acme, name="Ann")
    await create_note(owner, acme, "Internal about Acme")
    await create_contact(owner, blue, name="Bob")
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=acme)
    await gql.execute(
        UPDATE_CLIENT, {"id": str(acme.id), "input": {"phone": "+1 555 0100"}}, token=owner.token
    )
    # when the lead reads the agency timeline and the client's timeline
    agency_view = await gql.execute(TIMELINE, {"first": 50}, token=lead.token)
    client_view = await gql.execute(
        CLIENT_TIMELINE, {"id": str(acme.id), "first": 50}, token=lead.token
    )
    # then both show only Acme's events, without notes (or invitations)
    expected = [
        ("client", "updated", "Client Acme updated"),
        ("contact", "created", "Contact Ann added to Acme"),
        ("client", "created", "Client Acme created"),
    ]
    for connection in (agency_view["timeline"], client_view["client"]["timeline"]):
        nodes = [edge["node"] for edge in connection["edges"]]
        assert [(n["entityType"], n["verb"], n["summary"]) for n in nodes] == expected
        assert connection["totalCount"] == 3
    # and asking for another client's events or for notes gives nothing
    foreign = await gql.execute(
        TIMELINE, {"first": 50, "filter": {"clientId": str(blue.id)}}, token=lead.token
    )
    assert foreign["timeline"]["totalCount"] == 0
    notes = await gql.execute(
        TIMELINE, {"first": 50, "filter": {"entityTypes": ["note"]}}, token=lead.token
    )
    assert notes["timeline"]["totalCount"] == 0
    # while the owner sees everything
    everything = await gql.execute(TIMELINE, {"first": 50}, token=owner.token)
    assert {e["node"]["entityType"] for e in everything["timeline"]["edges"]} >= {
        "client",
        "contact",
        "note",
    }


# --- speed -----------------------------------------------------------------


async def _bulk_clients(owner: Account, count: int) -> None:
    """``count`` clients with 2 contacts and 4 notes each, written in a few statements."""
    base = datetime.now(UTC)
    clients = [
        Client(agency_id=owner.agency_id, name=f"Bulk {i:03}", currency="USD") for i in range(count)
    ]
    await Client.bulk_create(clients)
    contacts = [
        Contact(
            agency_id=owner.agency_id, client_id=client.id, name=f"Contact {j}", is_primary=j == 0
        )
        for client in clients
        for j in range(2)
    ]
    await Contact.bulk_create(contacts)
    notes = [
        Note(
            agency_id=owner.agency_id,
            client_id=client.id,
            author_id=owner.user.id,
            body=f"Note {j}",
            created_at=base + timedelta(seconds=j),
        )
        for client in clients
        for j in range(4)
    ]
    await Note.bulk_create(notes)


async def test_clients_with_contacts_and_notes_take_a_fixed_number_of_queries(
    gql: GraphQLClient, owner: Account
) -> None:
    # given 5 clients with 2 contacts and 4 notes each, made through the services
    member = await create_user(owner, role=Role.MEMBER, name="Mo Member")
    for i in range(5):
        client = await create_client(owner, name=f"Small {i}")
        for j in range(2):
            await create_contact(owner, client, name=f"Contact {j}")
        for j in range(4):
            await create_note(member if j % 2 else owner, client, f"Note {j}")
    # when the page is read
    with count_queries() as small:
        few = await gql.execute(CLIENTS_WITH_CHILDREN, token=owner.token)
    # and again with 60 more such clients
    await _bulk_clients(owner, 60)
    with count_queries() as large:
        many = await gql.execute(CLIENTS_WITH_CHILDREN, token=owner.token)
    # then the answers are complete
    assert few["clients"]["totalCount"] == 5
    assert many["clients"]["totalCount"] == 65
    for data in (few, many):
        for edge in data["clients"]["edges"]:
            node = edge["node"]
            assert len(node["contacts"]) == 2
            assert node["notes"]["totalCount"] == 4
            assert len(node["notes"]["edges"]) == 3
            assert all(n["node"]["author"]["name"] for n in node["notes"]["edges"])
    small_authors = {
        n["node"]["author"]["name"]
        for edge in few["clients"]["edges"]
        for n in edge["node"]["notes"]["edges"]
    }
    assert small_authors == {"Olive Owner", "Mo Member"}
    # and the number of SQL statements did not grow with the page
    assert small.count == large.count, (small.queries, large.queries)
    # (token lookup, count, page, contacts, latest notes with their counts, their rows,
    # authors)
    assert small.count == 7, small.queries


CLIENTS_WITH_NOTES_AND_TIMELINE = """
query ClientsWithNotesAndTimeline {
  clients(first: 100, orderBy: {field: NAME}) {
    edges {
      node {
        name
        pinned: notes(first: 1, pinned: true) {
          totalCount
          edges { node { body pinned } }
          pageInfo { hasNextPage }
        }
        notes(first: 2) { totalCount edges { node { body } } pageInfo { hasNextPage } }
        timeline(first: 2, filter: {entityTypes: ["note"]}) {
          totalCount
          edges { node { entityType summary client { name } } }
          pageInfo { hasNextPage }
        }
      }
    }
  }
}
"""


async def test_notes_and_timeline_of_a_list_of_clients_take_a_fixed_number_of_queries(
    gql: GraphQLClient, owner: Account
) -> None:
    # given one client with two pinned notes and one unpinned, each added through the service
    async def client_with_notes(i: int) -> None:
        client = await create_client(owner, name=f"Client {i}")
        await create_note(owner, client, f"First of {i}", pinned=True)
        await create_note(owner, client, f"Second of {i}", pinned=True)
        await create_note(owner, client, f"Third of {i}")

    await client_with_notes(0)
    # when the clients are read with their pinned notes, latest notes and timeline
    with count_queries() as one:
        few = await gql.execute(CLIENTS_WITH_NOTES_AND_TIMELINE, token=owner.token)
    # and again with five such clients
    for i in range(1, 5):
        await client_with_notes(i)
    with count_queries() as five:
        many = await gql.execute(CLIENTS_WITH_NOTES_AND_TIMELINE, token=owner.token)

    # then every client gets its own pages, counts and page info
    def expected(i: int) -> dict[str, Any]:
        return {
            "name": f"Client {i}",
            "pinned": {
                "totalCount": 2,
                "edges": [{"node": {"body": f"Second of {i}", "pinned": True}}],
                "pageInfo": {"hasNextPage": True},
            },
            "notes": {
                "totalCount": 3,
                "edges": [
                    {"node": {"body": f"Third of {i}"}},
                    {"node": {"body": f"Second of {i}"}},
                ],
                "pageInfo": {"hasNextPage": True},
            },
            "timeline": {
                "totalCount": 3,
                "edges": [
                    {
                        "node": {
                            "entityType": "note",
                            "summary": f"Olive Owner added a note to Client {i}",
                            "client": {"name": f"Client {i}"},
                        }
                    }
                ]
                * 2,
                "pageInfo": {"hasNextPage": True},
            },
        }

    assert few == {"clients": {"edges": [{"node": expected(0)}]}}
    assert many == {"clients": {"edges": [{"node": expected(i)} for i in range(5)]}}
    # and five clients cost the same SQL statements as one
    assert one.count == five.count, (one.queries, five.queries)


CLIENTS_WITH_NOTES_AFTER = """
query ClientsWithNotesAfter($after: String) {
  clients(first: 100, orderBy: {field: NAME}) {
    edges {
      node {
        name
        notes(first: 1, after: $after) {
          totalCount
          edges { node { body } }
          pageInfo { hasNextPage endCursor }
        }
      }
    }
  }
}
"""


def _note_pages(data: dict[str, Any]) -> list[tuple[str, int, list[str], bool]]:
    return [
        (
            edge["node"]["name"],
            edge["node"]["notes"]["totalCount"],
            [note["node"]["body"] for note in edge["node"]["notes"]["edges"]],
            edge["node"]["notes"]["pageInfo"]["hasNextPage"],
        )
        for edge in data["clients"]["edges"]
    ]


async def test_a_cursor_below_a_list_of_clients_pages_each_client_after_it(
    gql: GraphQLClient, owner: Account
) -> None:
    # given two clients with three notes each, the second client's all written later
    base = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    for i, name in enumerate(("Early", "Late")):
        client = await create_client(owner, name=name)
        for j in range(3):
            moment = base + timedelta(hours=10 * i + j)
            clock.set_clock(lambda moment=moment: moment)
            try:
                await create_note(owner, client, f"{name} {j}")
            finally:
                clock.set_clock(None)
    # and the first page of each client's notes
    first = await gql.execute(CLIENTS_WITH_NOTES_AFTER, token=owner.token)
    assert _note_pages(first) == [("Early", 3, ["Early 2"], True), ("Late", 3, ["Late 2"], True)]
    cursor = first["clients"]["edges"][0]["node"]["notes"]["pageInfo"]["endCursor"]

    # when the list is read again after the early client's cursor
    with count_queries() as counted:
        after = await gql.execute(CLIENTS_WITH_NOTES_AFTER, {"after": cursor}, token=owner.token)

    # then each client's page holds its own notes older than the cursor, its full count kept
    assert _note_pages(after) == [("Early", 3, ["Early 1"], True), ("Late", 3, [], False)]
    # in a fixed number of statements (token lookup, count, page; the notes' counts,
    # window and rows)
    assert counted.count == 6, counted.queries
    # and a cursor that is not one is refused with its code (the first error nulls the list)
    refused = await gql.execute(
        CLIENTS_WITH_NOTES_AFTER,
        {"after": "bm90LWEtY3Vyc29y"},
        token=owner.token,
        expect_errors=True,
    )
    assert refused["data"] is None
    assert {e["extensions"]["code"] for e in refused["errors"]} == {"INVALID_CURSOR"}


async def test_external_id_is_unique_in_the_agency_and_freed_by_deletion(
    gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    query = CREATE_CLIENT.replace(CLIENT_FIELDS, "id externalId")
    update = UPDATE_CLIENT.replace(CLIENT_FIELDS, "id externalId")
    # given a client with an external id, and the rival's client with the same one
    first = await gql.execute(
        query, {"input": {"name": "Acme", "externalId": "  crm-1 "}}, token=owner.token
    )
    theirs = await gql.execute(
        query, {"input": {"name": "Rivalco", "externalId": "crm-1"}}, token=rival.token
    )
    assert first["createClient"]["externalId"] == "crm-1"
    assert theirs["createClient"]["externalId"] == "crm-1"
    acme_id = first["createClient"]["id"]

    # when another client of the agency takes it, or one too long, on create or update
    bolt = await create_client(owner, name="Bolt")
    before = await row_counts(Client)
    taken = await gql.execute(
        query, {"input": {"name": "Copy", "externalId": "crm-1"}}, token=owner.token
    )
    long = await gql.execute(
        update, {"id": str(bolt.id), "input": {"externalId": "x" * 101}}, token=owner.token
    )
    moved = await gql.execute(
        update, {"id": str(bolt.id), "input": {"externalId": "crm-1"}}, token=owner.token
    )

    # then each is refused, naming the field, and nothing is written
    duplicate = {
        "__typename": "ValidationError",
        "code": "DUPLICATE",
        "message": "Another client already has this externalId",
        "field": "externalId",
    }
    assert taken["createClient"] == duplicate
    assert moved["updateClient"] == duplicate
    assert long["updateClient"] == {
        "__typename": "ValidationError",
        "code": "TOO_LONG",
        "message": "externalId must be at most 100 characters",
        "field": "externalId",
    }
    assert await row_counts(Client) == before

    # when the first client is deleted, its external id is free for another
    await gql.execute(DELETE_CLIENT, {"id": acme_id}, token=owner.token)
    retaken = await gql.execute(
        update, {"id": str(bolt.id), "input": {"externalId": "crm-1"}}, token=owner.token
    )
    assert retaken["updateClient"] == {
        "__typename": "Client",
        "id": str(bolt.id),
        "externalId": "crm-1",
    }
    assert (await Client.get(id=acme_id)).external_id is None
