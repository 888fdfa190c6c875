"""The compiled read path answers exactly as graphql-core does, and is the one that runs.

Every query operation of the suite is already run on both executors and
compared (``compiled_reads_match`` in conftest). These tests send the shapes a
differential check must see at least once (variables, aliases, fragments,
inline fragments on a union, ``__typename``, ``@skip`` / ``@include``, errors
nulling a nested field, a non-null root field and a masked unexpected error,
pagination arguments) and check the exact answer as well; and they check when
the compiled path steps aside.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from settle.core.settings import Settings
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.invoice import Invoice
from settle.models.project import Project
from settle.resolvers.loaders import Loaders
from settle.schema.compiled.executor import _drive
from settle.schema.context import Context
from settle.schema.schema import schema
from tests.fixtures.compiled import Differences, compiled_only
from tests.fixtures.factories import (
    Account,
    create_client,
    create_invoice,
    create_project,
    create_user,
    issue_invoice,
)
from tests.fixtures.graphql import GraphQLClient

LINES = [
    {"description": "Design", "quantity": "1", "unit_price": "100.00"},
    {"description": "Build", "quantity": "2.5", "unit_price": "40.00"},
    {"description": "Hosting", "quantity": "3", "unit_price": "9.99"},
]

INVOICE_LIST = """
query List($first: Int!) {
  invoices(first: $first, orderBy: {field: CREATED_AT, direction: ASC}) {
    edges { node { id number status issueDate dueDate total { amount currency minorUnits }
      subtotal { amount } client { name }
      lineItems { description quantity unitPrice { amount } amount { amount } } } }
  }
}
"""


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="INR")


@pytest.fixture
async def project(owner: Account, client: Client) -> Project:
    return await create_project(owner, client, hourly_rate="1000.00")


@pytest.fixture
async def invoices(owner: Account, client: Client, project: Project) -> list[Invoice]:
    """Three issued invoices of three lines, oldest first."""
    return [
        await issue_invoice(owner, await create_invoice(owner, client, project, lines=LINES))
        for _ in range(3)
    ]


async def post(gql: GraphQLClient, query: str, token: str, **variables: Any) -> dict[str, Any]:
    return await gql.execute(query, variables, token=token, expect_errors=True)


async def test_the_invoice_list_is_answered_by_the_compiled_path(
    gql: GraphQLClient,
    owner: Account,
    invoices: list[Invoice],
    compiled_reads_match: Differences,
) -> None:
    # when the issue's list is asked for
    body = await post(gql, INVOICE_LIST, owner.token, first=100)
    # then every invoice is there with its client and its lines in order
    edges = body["data"]["invoices"]["edges"]
    assert [edge["node"]["id"] for edge in edges] == [str(row.id) for row in invoices]
    node = edges[0]["node"]
    assert list(node) == [
        "id", "number", "status", "issueDate", "dueDate", "total", "subtotal", "client",
        "lineItems",
    ]  # fmt: skip
    assert node["status"] == "SENT"
    assert node["client"] == {"name": "Acme"}
    assert node["subtotal"] == {"amount": "229.97"}
    assert node["lineItems"] == [
        {"description": "Design", "quantity": "1.00", "unitPrice": {"amount": "100.00"},
         "amount": {"amount": "100.00"}},
        {"description": "Build", "quantity": "2.50", "unitPrice": {"amount": "40.00"},
         "amount": {"amount": "100.00"}},
        {"description": "Hosting", "quantity": "3.00", "unitPrice": {"amount": "9.99"},
         "amount": {"amount": "29.97"}},
    ]  # fmt: skip
    assert "errors" not in body
    # and it was the compiled path that answered (checked against graphql-core)
    assert compiled_reads_match.compared == 1


SHAPES = """
query Shapes($first: Int!, $withLines: Boolean!, $skipClient: Boolean!, $missing: ID!) {
  __typename
  older: invoices(first: $first, orderBy: {field: CREATED_AT, direction: ASC}) {
    ...Page
  }
  newer: invoices(first: 1) { totalCount edges { node { ...Head } } }
  preview: invoicePreviewUrl(id: $missing) {
    __typename
    ... on DownloadUrl { url }
    ... on Error { code message }
    ... on NotFoundError { code }
  }
  download: deliverableDownloadUrl(id: $missing) {
    ... on DownloadUrl { url expiresAt }
    ... on NotFoundError { __typename message }
  }
}

fragment Page on InvoiceConnection {
  __typename
  totalCount
  pageInfo { hasNextPage endCursor }
  edges {
    cursor
    node {
      ...Head
      kind: __typename
      lineItems @include(if: $withLines) { description position }
      client @skip(if: $skipClient) { name id: name }
      ... on Invoice { ref: number }
    }
  }
}

fragment Head on Invoice { id number currency status @skip(if: false) }
"""


@pytest.mark.parametrize(
    ("with_lines", "skip_client"), [(True, False), (False, True)], ids=["lines", "client"]
)
async def test_variables_aliases_fragments_unions_and_directives(
    gql: GraphQLClient,
    owner: Account,
    invoices: list[Invoice],
    compiled_reads_match: Differences,
    with_lines: bool,
    skip_client: bool,
) -> None:
    # when one operation mixes them all (and a page of 2 of the 3 invoices)
    missing = str(uuid.uuid4())
    body = await post(
        gql, SHAPES, owner.token,
        first=2, withLines=with_lines, skipClient=skip_client, missing=missing,
    )  # fmt: skip
    # then each is answered as asked
    assert "errors" not in body
    data = body["data"]
    assert data["__typename"] == "Query"
    older = data["older"]
    assert (older["__typename"], older["totalCount"]) == ("InvoiceConnection", 3)
    assert older["pageInfo"]["hasNextPage"] is True
    assert older["pageInfo"]["endCursor"] == older["edges"][-1]["cursor"]
    node = older["edges"][0]["node"]
    expected_keys = ["id", "number", "currency", "status", "kind"]
    expected_keys += ["lineItems"] if with_lines else []
    expected_keys += [] if skip_client else ["client"]
    assert list(node) == [*expected_keys, "ref"]
    assert node["id"] == str(invoices[0].id)
    assert (node["kind"], node["ref"]) == ("Invoice", node["number"])
    if with_lines:
        assert [line["position"] for line in node["lineItems"]] == [0, 1, 2]
    if not skip_client:
        assert node["client"] == {"name": "Acme", "id": "Acme"}
    assert data["newer"]["edges"][0]["node"]["id"] == str(invoices[-1].id)
    assert data["preview"]["__typename"] == "NotFoundError"
    assert data["preview"]["code"] == "NOT_FOUND"
    assert data["download"]["__typename"] == "NotFoundError"
    assert compiled_reads_match.compared == 1


NESTED_ERROR = """
query Nested($first: Int!) {
  invoices(first: 10, orderBy: {field: CREATED_AT, direction: ASC}) {
    edges { node { number client { name notes(first: $first) { totalCount } } } }
  }
}
"""


async def test_an_error_below_a_list_nulls_the_nearest_nullable_field(
    gql: GraphQLClient,
    owner: Account,
    invoices: list[Invoice],
    compiled_reads_match: Differences,
) -> None:
    # when a connection below each invoice's client is asked for with a page too large
    body = await post(gql, NESTED_ERROR, owner.token, first=500)
    # then notes (non-null) fails, its client (nullable) is null, and each says why
    edges = body["data"]["invoices"]["edges"]
    assert [edge["node"]["client"] for edge in edges] == [None, None, None]
    assert all(edge["node"]["number"] for edge in edges)
    errors = body["errors"]
    assert sorted(tuple(error["path"]) for error in errors) == [
        ("invoices", "edges", index, "node", "client", "notes") for index in range(3)
    ]
    assert {error["extensions"]["code"] for error in errors} == {"OUT_OF_RANGE"}
    assert compiled_reads_match.compared == 1


async def test_an_error_of_a_non_null_root_field_nulls_the_data(
    gql: GraphQLClient, owner: Account, compiled_reads_match: Differences
) -> None:
    # when the list is asked for with a page size out of range
    body = await post(gql, INVOICE_LIST, owner.token, first=0)
    # then there is no data, and one error with the field's code
    assert body["data"] is None
    [error] = body["errors"]
    assert error["path"] == ["invoices"]
    assert error["locations"] == [{"line": 3, "column": 3}]
    assert error["extensions"]["code"] == "OUT_OF_RANGE"
    assert compiled_reads_match.compared == 1


async def test_a_refused_caller_gets_the_same_errors(
    gql: GraphQLClient, owner: Account, client: Client, compiled_reads_match: Differences
) -> None:
    # given a client user, who may not list the agency's members
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client)
    # when they ask for the members and their own client
    body = await post(
        gql,
        "query { me { name } members { totalCount } clients { totalCount } }",
        viewer.token,
    )
    # then the members are refused with a code; the rest is answered
    assert body["data"] is None
    [error] = body["errors"]
    assert (error["path"], error["extensions"]["code"]) == (["members"], "PERMISSION_DENIED")
    assert compiled_reads_match.compared == 1


async def test_an_unexpected_error_is_masked_for_every_row(
    gql: GraphQLClient,
    owner: Account,
    invoices: list[Invoice],
    compiled_reads_match: Differences,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a loader that fails with an exception nobody meant to show
    async def broken(self: Loaders, keys: list[uuid.UUID]) -> list[Any]:
        raise RuntimeError("the database said something private")

    monkeypatch.setattr(Loaders, "_clients", broken)
    # when the list asks for each invoice's client
    body = await post(gql, INVOICE_LIST, owner.token, first=10)
    # then each client is null, and each error is masked
    edges = body["data"]["invoices"]["edges"]
    assert [edge["node"]["client"] for edge in edges] == [None, None, None]
    assert [edge["node"]["lineItems"][0]["description"] for edge in edges] == ["Design"] * 3
    assert sorted(tuple(error["path"]) for error in body["errors"]) == [
        ("invoices", "edges", index, "node", "client") for index in range(3)
    ]
    assert {error["message"] for error in body["errors"]} == {"Unexpected error."}
    assert compiled_reads_match.compared == 1


async def test_paging_on_with_a_cursor(
    gql: GraphQLClient,
    owner: Account,
    invoices: list[Invoice],
    compiled_reads_match: Differences,
) -> None:
    # given the first page of one invoice
    query = """
    query Page($after: String) {
      invoices(first: 1, after: $after, orderBy: {field: CREATED_AT, direction: ASC}) {
        edges { cursor node { id } } pageInfo { hasNextPage endCursor }
      }
    }
    """
    first = (await post(gql, query, owner.token))["data"]["invoices"]
    # when the next page is asked for after its cursor, and after a forged one
    after = first["pageInfo"]["endCursor"]
    second = (await post(gql, query, owner.token, after=after))["data"]["invoices"]
    forged = await post(gql, query, owner.token, after="not-a-cursor")
    # then the pages follow each other, and the forged cursor is refused with its code
    assert [e["node"]["id"] for e in first["edges"] + second["edges"]] == [
        str(row.id) for row in invoices[:2]
    ]
    assert forged["data"] is None
    assert forged["errors"][0]["extensions"]["code"] == "INVALID_CURSOR"
    assert compiled_reads_match.compared == 3


async def test_operations_it_does_not_run_go_to_graphql_core(
    gql: GraphQLClient, owner: Account, compiled_reads_match: Differences
) -> None:
    # when introspection, bad variables and a mutation are sent
    introspected = await post(gql, "query { __schema { queryType { name } } }", owner.token)
    bad = await post(gql, INVOICE_LIST, owner.token, first="ten")
    mutated = await post(gql, "mutation { logout { __typename } }", owner.token)
    # then each is answered as before, and nothing was run on the compiled path
    assert introspected["data"] == {"__schema": {"queryType": {"name": "Query"}}}
    assert mutated["data"] == {"logout": {"__typename": "LogoutPayload"}}
    assert bad["data"] is None
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert compiled_reads_match.compared == 0


async def test_the_setting_turns_it_off(
    gql: GraphQLClient,
    owner: Account,
    settings: Settings,
    invoices: list[Invoice],
    compiled_reads_match: Differences,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given SETTLE_COMPILED_READS=false
    monkeypatch.setattr(settings, "compiled_reads", False)
    # when the list is asked for
    body = await post(gql, INVOICE_LIST, owner.token, first=100)
    # then graphql-core answers it alone
    assert len(body["data"]["invoices"]["edges"]) == 3
    assert compiled_reads_match.compared == 0


async def test_no_task_per_field(
    owner: Account, settings: Settings, invoices: list[Invoice]
) -> None:
    # given a count of the tasks started while an operation runs
    started: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        module = coro.cr_frame.f_globals.get("__name__", "") if hasattr(coro, "cr_frame") else ""
        # Only execution's: not the database driver's own (a pooled connection's release,
        # a thread for SQLite).
        if module.startswith(("graphql", "strawberry", "settle")):
            started.append(getattr(coro, "__qualname__", repr(coro)))
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def tasks_of(compiled: bool) -> list[str]:
        context = Context(
            settings=settings.model_copy(update={"compiled_reads": compiled}),
            request=None,
            actor=owner.actor,
        )
        started.clear()
        loop.set_task_factory(counting)
        try:
            with compiled_only():
                result = await schema.execute(INVOICE_LIST, {"first": 10}, context_value=context)
        finally:
            loop.set_task_factory(previous)
        assert result.errors is None
        assert len(result.data["invoices"]["edges"]) == 3  # type: ignore[index]
        return list(started)

    # when the list of three invoices runs on each executor
    compiled = await tasks_of(True)
    ordinary = await tasks_of(False)
    # then the compiled path starts only the DataLoaders' batches (clients, lines), while
    # graphql-core starts tasks for the fields of every invoice
    assert compiled == ["dispatch_batch"] * len(compiled), compiled
    assert len(compiled) <= 2
    assert len(ordinary) > len(compiled)


async def test_awaitables_are_driven_together_in_one_task() -> None:
    # given awaitables that share a future, one that waits for a lock another holds,
    # a bare yield, and one that fails
    loop = asyncio.get_running_loop()
    shared: asyncio.Future[int] = loop.create_future()
    lock = asyncio.Lock()

    async def on_shared(extra: int) -> int:
        value = await shared
        await asyncio.sleep(0)
        return value + extra

    async def locked(value: int) -> int:
        async with lock:
            await asyncio.sleep(0.01)
            return value

    async def failing() -> int:
        await asyncio.sleep(0)
        raise ValueError("no")

    loop.call_later(0.01, shared.set_result, 1)
    # when they are driven together
    outcomes = await _drive([on_shared(1), on_shared(2), locked(3), locked(4), failing(), shared])
    # then each has its own outcome
    assert outcomes[:4] == [(True, 2), (True, 3), (True, 3), (True, 4)]
    assert outcomes[4][0] is False
    assert isinstance(outcomes[4][1], ValueError)
    assert outcomes[5] == (True, 1)
