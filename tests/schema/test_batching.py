"""No list resolves row by row: every connection of the schema, with what hangs below it.

The queries are not written by hand. They are derived from the schema: each
top-level connection with every field of its nodes, and below them every
child object, list and connection, a few levels deep. A resolver added later
that reads the database once per row makes this test fail, without anyone
having to remember to add it here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLUnionType,
    get_named_type,
    is_leaf_type,
)
from graphql.pyutils import Undefined
from strawberry.types.base import StrawberryObjectDefinition

from settle.app import create_app
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.project import Project
from settle.schema.schema import schema
from tests.conftest import Backend
from tests.fixtures.csv_import import start, uploaded
from tests.fixtures.factories import Account, create_final_deliverable, create_user
from tests.fixtures.graphql import GraphQLClient, count_queries
from tests.fixtures.sandbox import sandbox, signed

# How many object levels below a list's nodes the queries reach: a client's
# timeline (1), each event's client (2), that client's notes (3).
LEVELS = 3
# The page asked of every child connection; each seeded parent has fewer children.
CHILD_PAGE = 3
TOP_PAGE = 100

# Object fields left out of the generated queries, each with the reason.
# (Empty: every field below a list can be asked for. A field with a required
# argument would have to be listed here, since the walk cannot invent one.)
EXCLUDED_FIELDS: dict[tuple[str, str], str] = {}

# Types reachable from a list whose fields have resolvers, but that the seeded
# data cannot show, each with the reason. (Empty: the seed shows them all.)
NOT_SEEDED: dict[str, str] = {}


# --- the queries, from the schema -------------------------------------------------------


def _connections() -> list[str]:
    """The Query fields that return a connection."""
    query = schema._schema.query_type
    assert query is not None
    return sorted(
        name
        for name, field in query.fields.items()
        if get_named_type(field.type).name.endswith("Connection")
    )


def _node_type(connection: GraphQLObjectType) -> GraphQLObjectType:
    edge = get_named_type(connection.fields["edges"].type)
    assert isinstance(edge, GraphQLObjectType)
    node = get_named_type(edge.fields["node"].type)
    assert isinstance(node, GraphQLObjectType)
    return node


def _arguments(field: GraphQLField, page: int) -> str:
    if "first" in field.args:
        return f"(first: {page})"
    return ""


def _has_required_argument(field: GraphQLField) -> bool:
    return any(
        isinstance(arg.type, GraphQLNonNull) and arg.default_value is Undefined
        for arg in field.args.values()
    )


def _connection_selection(connection: GraphQLObjectType, level: int) -> str:
    node = _selection(_node_type(connection), level)
    return f"totalCount pageInfo {{ hasNextPage endCursor }} edges {{ cursor node {{ {node} }} }}"


def _selection(parent: GraphQLNamedType, level: int) -> str:
    """Every field of ``parent`` (a node at ``level``), and the objects below it to LEVELS."""
    if isinstance(parent, GraphQLUnionType | GraphQLInterfaceType):
        kinds = schema._schema.get_possible_types(parent)
        spreads = " ".join(f"... on {kind.name} {{ {_selection(kind, level)} }}" for kind in kinds)
        return f"__typename {spreads}"
    assert isinstance(parent, GraphQLObjectType)
    parts = ["__typename"]
    for name, field in parent.fields.items():
        if (parent.name, name) in EXCLUDED_FIELDS:
            continue
        assert not _has_required_argument(field), (
            f"{parent.name}.{name} needs an argument: list it in EXCLUDED_FIELDS with the reason"
        )
        named = get_named_type(field.type)
        if is_leaf_type(named):
            parts.append(name)
        elif level < LEVELS:
            if named.name.endswith("Connection"):
                assert isinstance(named, GraphQLObjectType)
                inner = _connection_selection(named, level + 1)
            else:
                inner = _selection(named, level + 1)
            parts.append(f"{name}{_arguments(field, CHILD_PAGE)} {{ {inner} }}")
    return " ".join(parts)


def connection_query(name: str) -> str:
    query = schema._schema.query_type
    assert query is not None
    connection = get_named_type(query.fields[name].type)
    assert isinstance(connection, GraphQLObjectType)
    return f"query {{ {name}(first: {TOP_PAGE}) {{ {_connection_selection(connection, 0)} }} }}"


def with_resolvers(type_name: str) -> bool:
    """Whether any field of the type runs code of ours (only those can query per row)."""
    definition = schema.get_type_by_name(type_name)
    return isinstance(definition, StrawberryObjectDefinition) and any(
        field.base_resolver is not None for field in definition.fields
    )


def typenames(value: Any) -> Iterator[str]:
    """Every ``__typename`` in a response."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "__typename":
                yield item
            else:
                yield from typenames(item)
    elif isinstance(value, list):
        for item in value:
            yield from typenames(item)


def asked_types(name: str) -> dict[str, int]:
    """The object types the query of connection ``name`` selects, each at its shallowest level."""
    found: dict[str, int] = {}

    def walk(parent: GraphQLNamedType, level: int) -> None:
        if isinstance(parent, GraphQLUnionType | GraphQLInterfaceType):
            for kind in schema._schema.get_possible_types(parent):
                walk(kind, level)
            return
        assert isinstance(parent, GraphQLObjectType)
        if found.get(parent.name, LEVELS + 1) <= level:
            return
        found[parent.name] = level
        if level >= LEVELS:
            return
        for field_name, field in parent.fields.items():
            named = get_named_type(field.type)
            if (parent.name, field_name) in EXCLUDED_FIELDS or is_leaf_type(named):
                continue
            if named.name.endswith("Connection"):
                assert isinstance(named, GraphQLObjectType)
                walk(_node_type(named), level + 1)
            else:
                walk(named, level + 1)

    root = schema._schema.query_type
    assert root is not None
    connection = get_named_type(root.fields[name].type)
    assert isinstance(connection, GraphQLObjectType)
    walk(_node_type(connection), 0)
    return found


# --- the data -------------------------------------------------------------------------------

ERRORS = "... on Error { code message }"


async def _mutate(gql: GraphQLClient, owner: Account, text: str, **variables: Any) -> str:
    """Run a mutation whose result has an ``id`` (or a ``payment``'s); returns that id."""
    data = await gql.execute(text, variables, token=owner.token)
    result = data["result"]
    assert "code" not in result, result
    return str(result["payment"]["id"] if "payment" in result else result["id"])


CREATE_CLIENT = f"""
mutation ($name: String!) {{
  result: createClient(input: {{name: $name, currency: "USD"}}) {{
    ... on Client {{ id }} {ERRORS}
  }}
}}"""
CREATE_CONTACT = f"""
mutation ($clientId: ID!) {{
  result: createContact(input: {{clientId: $clientId, name: "Ada", phone: "+1 555 0100"}}) {{
    ... on Contact {{ id }} {ERRORS}
  }}
}}"""
ADD_NOTE = f"""
mutation ($clientId: ID!) {{
  result: addNote(input: {{clientId: $clientId, body: "Prefers email", pinned: true}}) {{
    ... on Note {{ id }} {ERRORS}
  }}
}}"""
CREATE_PROJECT = f"""
mutation ($clientId: ID!) {{
  result: createProject(input: {{
    clientId: $clientId, name: "Website", budget: "1000.00", hourlyRate: "100.00"
  }}) {{ ... on Project {{ id }} {ERRORS} }}
}}"""
CREATE_TASK = f"""
mutation ($projectId: ID!, $assigneeId: ID!) {{
  result: createTask(input: {{projectId: $projectId, title: "Design", assigneeId: $assigneeId}}) {{
    ... on Task {{ id }} {ERRORS}
  }}
}}"""
LOG_TIME = f"""
mutation ($projectId: ID!, $taskId: ID!) {{
  result: logTime(input: {{projectId: $projectId, taskId: $taskId, hours: "2"}}) {{
    ... on TimeEntry {{ id }} {ERRORS}
  }}
}}"""
CREATE_MILESTONE = f"""
mutation ($projectId: ID!) {{
  result: createMilestone(input: {{projectId: $projectId, title: "Advance", amount: "300.00"}}) {{
    ... on Milestone {{ id }} {ERRORS}
  }}
}}"""
MILESTONE_STEPS = [
    f"""
mutation ($id: ID!) {{ result: {step}(id: $id) {{ ... on Milestone {{ id }} {ERRORS} }} }}"""
    for step in ("startMilestone", "submitMilestone", "approveMilestone")
]
CREATE_INVOICE = f"""
mutation ($clientId: ID!, $projectId: ID!) {{
  result: createInvoice(input: {{
    clientId: $clientId, projectId: $projectId, taxRate: "18",
    discount: {{kind: PERCENT, value: "10"}},
    lines: [{{description: "Build", quantity: "2", unitPrice: "500.00"}}]
  }}) {{ ... on Invoice {{ id }} {ERRORS} }}
}}"""
FINALIZE_INVOICE = f"""
mutation ($id: ID!) {{ result: finalizeInvoice(id: $id) {{ ... on Invoice {{ id }} {ERRORS} }} }}"""
RECORD_OFFLINE_PAYMENT = f"""
mutation ($invoiceId: ID!) {{
  result: recordOfflinePayment(
    invoiceId: $invoiceId, amount: "100.00", method: CASH, reference: "R-1"
  ) {{ ... on Payment {{ id }} {ERRORS} }}
}}"""
PAY_INVOICE = f"""
mutation ($invoiceId: ID!) {{
  result: payInvoice(invoiceId: $invoiceId) {{
    ... on PaymentCheckout {{ payment {{ id }} }} {ERRORS}
  }}
}}"""
ISSUE_CREDIT_NOTE = f"""
mutation ($invoiceId: ID!) {{
  result: issueCreditNote(input: {{invoiceId: $invoiceId, amount: "10.00", reason: "Late"}}) {{
    ... on CreditNotePayload {{ creditNote {{ id }} }} {ERRORS}
  }}
}}"""
CREATE_EXPORT = f"""
mutation ($clientId: ID!) {{
  result: createExport(input: {{entity: INVOICES, filter: {{clientId: $clientId}}}}) {{
    ... on Export {{ id }} {ERRORS}
  }}
}}"""


async def seed_client(gql: GraphQLClient, owner: Account, index: int) -> None:
    """One client with one of everything below it, made through the API (its user through
    a real invitation)."""
    run = _mutate
    client_id = await run(gql, owner, CREATE_CLIENT, name=f"Client {index}")
    await run(gql, owner, CREATE_CONTACT, clientId=client_id)
    await run(gql, owner, ADD_NOTE, clientId=client_id)
    project_id = await run(gql, owner, CREATE_PROJECT, clientId=client_id)
    task_id = await run(
        gql, owner, CREATE_TASK, projectId=project_id, assigneeId=str(owner.user.id)
    )
    await run(gql, owner, LOG_TIME, projectId=project_id, taskId=task_id)
    milestone_id = await run(gql, owner, CREATE_MILESTONE, projectId=project_id)
    for step in MILESTONE_STEPS:
        await run(gql, owner, step, id=milestone_id)
    invoice_id = await run(gql, owner, CREATE_INVOICE, clientId=client_id, projectId=project_id)
    await run(gql, owner, FINALIZE_INVOICE, id=invoice_id)
    await run(gql, owner, RECORD_OFFLINE_PAYMENT, invoiceId=invoice_id)
    payment_id = await run(gql, owner, PAY_INVOICE, invoiceId=invoice_id)
    data = await gql.execute(ISSUE_CREDIT_NOTE, {"invoiceId": invoice_id}, token=owner.token)
    assert "creditNote" in data["result"], data
    await run(gql, owner, CREATE_EXPORT, clientId=client_id)
    # A gateway event about the payment, of a kind Settle ignores: the agency's webhookEvents.
    body = sandbox().event_body(
        "payment.noted", id=f"sbx_evt_noted_{payment_id}", payment_id=payment_id
    )
    response = await gql.http.post("/webhooks/sandbox", content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    await create_final_deliverable(await Project.get(id=project_id))
    await create_user(owner, role=Role.CLIENT_VIEWER, client=await Client.get(id=client_id))
    # and a CSV import with a refused row (imports are the agency's, one per seeded client)
    body = f"name,email\nImported {index},not-an-email\nKept {index},\n".encode()
    import_id = await uploaded(gql, gql.http, owner, body)
    assert (await start(gql, owner, import_id))["__typename"] == "Import"


# --- the test ---------------------------------------------------------------------------


@pytest.fixture
async def roomy(db: Backend) -> AsyncIterator[GraphQLClient]:
    """The API with operation limits wide enough for the generated queries."""
    settings = db.settings.model_copy(
        update={
            "graphql_max_document_bytes": 4 * 1024 * 1024,
            "graphql_max_tokens": 1_000_000,
            "graphql_max_depth": 50,
            "graphql_max_aliases": 1000,
            "graphql_max_cost": 10**12,
        }
    )
    app = create_app(settings, manage_runtime=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as http:
        yield GraphQLClient(http)


async def test_every_list_reads_its_children_in_a_fixed_number_of_statements(
    db: Backend, gql: GraphQLClient, roomy: GraphQLClient, owner: Account
) -> None:
    # given every connection of the schema, each asked with everything below its nodes
    names = _connections()
    assert len(names) >= 10, names
    queries = {name: connection_query(name) for name in names}
    # and one client with one of everything (its invoice's PDF rendered, so no job runs
    # while statements are counted)
    await seed_client(gql, owner, 0)
    await db.drain()

    async def read_all() -> dict[str, tuple[int, list[str], dict[str, Any]]]:
        found = {}
        for name, text in queries.items():
            with count_queries() as counted:
                data = await roomy.execute(text, token=owner.token)
            found[name] = (counted.count, counted.queries, data)
        return found

    # when every list is read
    one = await read_all()
    # and again with five such clients
    for index in range(1, 5):
        await seed_client(gql, owner, index)
    await db.drain()
    five = await read_all()

    # then every list holds more rows than before
    for name in names:
        assert five[name][2][name]["totalCount"] > one[name][2][name]["totalCount"], name
    # and every type below a list that runs resolvers was in the answers, so was exercised,
    # and had all its fields asked (it was reached above the last level)
    levels: dict[str, int] = {}
    for name in names:
        for kind, level in asked_types(name).items():
            levels[kind] = min(level, levels.get(kind, level))
    resolving = {kind for kind in levels if with_resolvers(kind)}
    too_deep = {kind for kind in resolving if levels[kind] >= LEVELS}
    assert not too_deep, f"raise LEVELS: these types' fields are not all asked: {too_deep}"
    seen = {kind for _, _, data in five.values() for kind in typenames(data)}
    unseen = resolving - seen - set(NOT_SEEDED)
    assert not unseen, f"seed these (or list them in NOT_SEEDED with the reason): {unseen}"
    # and no list took more SQL statements for five clients than for one
    grew = {
        name: (one[name][0], five[name][0], grown(one[name][1], five[name][1]))
        for name in names
        if one[name][0] != five[name][0]
    }
    assert not grew, "\n".join(
        f"{name}: {few} -> {many} statements; more often: {shapes}"
        for name, (few, many, shapes) in grew.items()
    )


def grown(few: list[str], many: list[str]) -> list[str]:
    """The statements (without their values) that ran more often for more rows."""

    def shapes(statements: list[str]) -> Counter[str]:
        return Counter(statement.split(": [", 1)[0] for statement in statements)

    return sorted((shapes(many) - shapes(few)).keys())
