"""Bad input of every shape gets a typed error, never "Unexpected error." nor a 500.

One table: each case is a request as a client (or a gateway) sends it, bytes and
all, and the status and error code it must get. Every case runs on SQLite and
on PostgreSQL, with one client in the database (so a search really compares
rows), and changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from pydantic import SecretStr

from settle.core import clock
from settle.core.settings import configure_settings, get_settings
from settle.gateways.stripe import sign_payload
from settle.models.client import Client
from settle.models.invoice import Invoice
from settle.models.payment import WebhookEvent
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account, create_client
from tests.fixtures.sandbox import signed as sandbox_signed

STRIPE_SECRET = "whsec_bad_input_tests_only"
RAZORPAY_SECRET = "razorpay_bad_input_tests_only"

DEEP = 100_000

SEARCH_CLIENTS = "query($s: String) { clients(filter: {search: $s}) { totalCount } }"
CREATE_CLIENT = """
mutation($input: CreateClientInput!) {
  createClient(input: $input) { __typename ... on Error { code message } }
}
"""
CLIENTS_AFTER = "query($a: String) { clients(first: 1, after: $a) { totalCount } }"
CREATE_INVOICE = """
mutation($input: CreateInvoiceInput!) {
  createInvoice(input: $input) { __typename ... on Error { code message } }
}
"""


def _chain(links: int) -> str:
    """A query spreading a chain of ``links`` fragments, each into the next."""
    fragments = "\n".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(1, links))
    return f"{{ ...F1 }}\n{fragments}\nfragment F{links} on Query {{ me {{ name }} }}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass
class Case:
    """A request and the answer it must get."""

    name: str
    build: Callable[[Account, str], tuple[str, str, bytes, dict[str, str]]]
    status: int
    code: str
    # The field a GraphQL error names, where it names one.
    field: str | None = None


def graphql(query: str, variables: dict[str, Any] | None = None) -> Callable[..., Any]:
    """A POST /graphql with this operation, as JSON."""
    payload = {"query": query, "variables": variables or {}}

    def build(account: Account, client_id: str) -> tuple[str, str, bytes, dict[str, str]]:
        return "POST", "/graphql", json.dumps(payload).encode(), _json_auth(account)

    return build


def raw_graphql(body: bytes) -> Callable[..., Any]:
    """A POST /graphql with exactly these bytes."""

    def build(account: Account, client_id: str) -> tuple[str, str, bytes, dict[str, str]]:
        return "POST", "/graphql", body, _json_auth(account)

    return build


def _json_auth(account: Account) -> dict[str, str]:
    return {"content-type": "application/json", "authorization": f"Bearer {account.token}"}


def sandbox_webhook(body: bytes) -> Callable[..., Any]:
    def build(account: Account, client_id: str) -> tuple[str, str, bytes, dict[str, str]]:
        headers = {"content-type": "application/json", **sandbox_signed(body)}
        return "POST", "/webhooks/sandbox", body, headers

    return build


def stripe_webhook(body: bytes) -> Callable[..., Any]:
    def build(account: Account, client_id: str) -> tuple[str, str, bytes, dict[str, str]]:
        stamp = int(clock.now().timestamp())
        headers = {
            "content-type": "application/json",
            "Stripe-Signature": sign_payload(STRIPE_SECRET, body, stamp),
        }
        return "POST", "/webhooks/stripe", body, headers

    return build


def razorpay_webhook(body: bytes) -> Callable[..., Any]:
    def build(account: Account, client_id: str) -> tuple[str, str, bytes, dict[str, str]]:
        signature = hmac.new(RAZORPAY_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {"content-type": "application/json", "X-Razorpay-Signature": signature}
        return "POST", "/webhooks/razorpay", body, headers

    return build


DEEP_JSON = b"[" * DEEP + b"]" * DEEP
DEEP_EVENT = b'{"type": "payment.succeeded", "id": "evt_deep", "x": ' + DEEP_JSON + b"}"

CASES = [
    # -- text that is not text -------------------------------------------------------
    Case(
        "lone surrogate in a query variable",
        graphql(SEARCH_CLIENTS, {"s": "\udcff"}),
        200,
        "INVALID_CHARACTERS",
        field="s",
    ),
    Case(
        "lone surrogate in a mutation's input",
        graphql(CREATE_CLIENT, {"input": {"name": "Acme \udcff"}}),
        200,
        "INVALID_CHARACTERS",
        field="input.name",
    ),
    Case(
        "lone surrogate escaped in an inline literal",
        graphql('{ clients(filter: {search: "\\udcff"}) { totalCount } }'),
        200,
        "GRAPHQL_PARSE_FAILED",
    ),
    Case(
        "lone surrogate raw in an inline literal",
        graphql('mutation { createClient(input: {name: "\udcff"}) { __typename } }'),
        200,
        "GRAPHQL_PARSE_FAILED",
    ),
    Case(
        "NUL escaped in an inline literal",
        graphql('mutation { createClient(input: {name: "A\\u0000B"}) { __typename } }'),
        200,
        "INVALID_CHARACTERS",
        field="input.name",
    ),
    Case(
        "NUL in a mutation's input",
        graphql(CREATE_CLIENT, {"input": {"name": "Acme\x00Ltd"}}),
        200,
        "INVALID_CHARACTERS",
        field="input.name",
    ),
    Case(
        "a variable named with a lone surrogate",
        graphql("{ __typename }", {"\udcff": 1}),
        200,
        "INVALID_CHARACTERS",
        field="\\udcff",
    ),
    Case(
        "an operation name with a lone surrogate",
        lambda account, _: (
            "POST",
            "/graphql",
            json.dumps({"query": "{ __typename }", "operationName": "\udcff"}).encode(),
            _json_auth(account),
        ),
        400,
        "BAD_REQUEST",
    ),
    Case(
        "NUL in the search variable",
        graphql(SEARCH_CLIENTS, {"s": "Ac\x00me"}),
        200,
        "INVALID_CHARACTERS",
        field="s",
    ),
    # -- filters -----------------------------------------------------------------------
    Case(
        "invoices filtered by a currency that is not one",
        graphql("""{ invoices(filter: {currency: "USD' OR '1'='1"}) { totalCount } }"""),
        200,
        "INVALID_CURRENCY",
        field="filter.currency",
    ),
    Case(
        "payments filtered by a currency that is not one",
        graphql("""{ payments(filter: {currency: "usd; DROP TABLE"}) { totalCount } }"""),
        200,
        "INVALID_CURRENCY",
        field="filter.currency",
    ),
    Case(
        "a 60,000-character client search",
        graphql(SEARCH_CLIENTS, {"s": "x" * 60_000}),
        200,
        "TOO_LONG",
        field="filter.search",
    ),
    Case(
        "a 60,000-character project search",
        graphql(
            "query($s: String) { projects(filter: {search: $s}) { totalCount } }",
            {"s": "%_" * 30_000},
        ),
        200,
        "TOO_LONG",
        field="filter.search",
    ),
    Case(
        "a cursor holding deeply nested JSON",
        graphql(CLIENTS_AFTER, {"a": _b64(b"[" * 5000 + b"]" * 5000)}),
        200,
        "INVALID_CURSOR",
        field="after",
    ),
    Case(
        "a cursor of the right shape with a nested value",
        graphql(
            CLIENTS_AFTER, {"a": _b64(b'["name",[[["x"]]],"00000000-0000-0000-0000-000000000000"]')}
        ),
        200,
        "INVALID_CURSOR",
        field="after",
    ),
    # -- bodies ------------------------------------------------------------------------
    Case(
        "a body with raw \\xff bytes",
        raw_graphql(b'{"query": "{ me { name } }\xff"}'),
        400,
        "INVALID_JSON",
    ),
    Case(
        "a body that is not JSON",
        raw_graphql(b'{"query": '),
        400,
        "INVALID_JSON",
    ),
    Case(
        "a body with a 5,000-digit number",
        raw_graphql(b'{"query": "{ me { name } }", "variables": {"n": ' + b"9" * 5000 + b"}}"),
        400,
        "INVALID_JSON",
    ),
    Case(
        "a body nested 100,000 deep",
        raw_graphql(b'{"query": "{ me { name } }", "variables": {"v": ' + DEEP_JSON + b"}}"),
        400,
        "JSON_TOO_DEEP",
    ),
    Case(
        "a GraphQL GET with variables nested 5,000 deep",
        lambda account, _: (
            "GET",
            "/graphql?query=%7B__typename%7D&variables=" + "%5B" * 5000 + "%5D" * 5000,
            b"",
            {"authorization": f"Bearer {account.token}"},
        ),
        400,
        "JSON_TOO_DEEP",
    ),
    # -- signed webhooks whose body is bad -------------------------------------------
    Case(
        "a signed sandbox webhook nested 100,000 deep",
        sandbox_webhook(DEEP_EVENT),
        400,
        "INVALID_PAYLOAD",
    ),
    Case(
        "a signed Stripe webhook nested 100,000 deep",
        stripe_webhook(DEEP_EVENT),
        400,
        "INVALID_PAYLOAD",
    ),
    Case(
        "a signed Razorpay webhook nested 100,000 deep",
        razorpay_webhook(DEEP_EVENT),
        400,
        "INVALID_PAYLOAD",
    ),
    Case(
        "a signed sandbox webhook with a lone surrogate",
        sandbox_webhook(b'{"type": "payment.succeeded", "id": "evt_\\udcff"}'),
        400,
        "INVALID_PAYLOAD",
    ),
    Case(
        "a signed Razorpay webhook with a NUL",
        razorpay_webhook(b'{"event": "payment.captured\\u0000", "created_at": 1}'),
        400,
        "INVALID_PAYLOAD",
    ),
    Case(
        "a signed Stripe webhook with raw \\xff bytes",
        stripe_webhook(b'{"id": "evt_\xff", "type": "x", "data": {"object": {}}}'),
        400,
        "INVALID_PAYLOAD",
    ),
    Case(
        "a body of another content type",
        lambda account, _: ("POST", "/graphql", b"{ me { name } }", {"content-type": "text/plain"}),
        400,
        "BAD_REQUEST",
    ),
    # -- operations --------------------------------------------------------------------
    Case(
        "a variable that does not fit its type",
        graphql("query($n: Int) { clients(first: $n) { totalCount } }", {"n": "ten"}),
        200,
        "BAD_USER_INPUT",
    ),
    Case(
        "a field the schema does not have",
        graphql("{ clientz { id } }"),
        200,
        "GRAPHQL_VALIDATION_FAILED",
    ),
    Case("a chain of 500 fragments", graphql(_chain(500)), 200, "QUERY_TOO_LARGE"),
    # -- business dates ----------------------------------------------------------------
    Case(
        "an invoice filter from 0001-01-01",
        graphql('{ invoices(filter: {from: "0001-01-01"}) { totalCount } }'),
        200,
        "OUT_OF_RANGE",
    ),
    Case(
        "a time entry filter to 9999-12-31, as a variable",
        graphql(
            "query($to: Date) { timeEntries(filter: {to: $to}) { totalCount } }",
            {"to": "9999-12-31"},
        ),
        200,
        "OUT_OF_RANGE",
    ),
    Case(
        "an invoice due 9999-12-31",
        lambda account, client_id: graphql(
            CREATE_INVOICE, {"input": {"clientId": client_id, "dueDate": "9999-12-31"}}
        )(account, client_id),
        200,
        "OUT_OF_RANGE",
    ),
    Case(
        "a timeline from 0001-01-01T00:00:00Z",
        graphql('{ timeline(filter: {from: "0001-01-01T00:00:00Z"}) { totalCount } }'),
        200,
        "OUT_OF_RANGE",
    ),
    Case(
        "a date that is no date",
        graphql(
            "query($to: Date) { timeEntries(filter: {to: $to}) { totalCount } }",
            {"to": "2026-02-30"},
        ),
        200,
        "INVALID_DATE",
    ),
]


@pytest.fixture
def gateways_configured(db: Backend) -> Iterator[None]:
    """Stripe and Razorpay webhook secrets set (no gateway is called)."""
    previous = get_settings()
    configure_settings(
        previous.model_copy(
            update={
                "stripe_secret_key": SecretStr("sk_test_bad_input"),
                "stripe_webhook_secret": SecretStr(STRIPE_SECRET),
                "razorpay_key_id": "rzp_test_bad_input",
                "razorpay_key_secret": SecretStr("razorpay_key_secret_bad_input"),
                "razorpay_webhook_secret": SecretStr(RAZORPAY_SECRET),
            }
        )
    )
    try:
        yield
    finally:
        configure_settings(previous)


def code_of(answer: dict[str, Any]) -> str:
    """The error code of an answer: a GraphQL error's, or a plain JSON error's."""
    if "errors" in answer:
        assert len(answer["errors"]) == 1, answer
        return str(answer["errors"][0]["extensions"]["code"])
    return str(answer["code"])


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_bad_input_gets_a_typed_error(
    db: Backend,
    http: httpx.AsyncClient,
    owner: Account,
    gateways_configured: None,
    case: Case,
) -> None:
    # given a client to search, and the database as it is
    client = await create_client(owner, name="Acme")
    before = await row_counts(Client, Invoice, WebhookEvent)

    # when the request is sent as it is
    method, path, body, headers = case.build(owner, str(client.id))
    response = await http.request(method, path, content=body, headers=headers)

    # then it gets its status and typed error, and nothing changed
    answer = response.json()
    assert (response.status_code, code_of(answer)) == (case.status, case.code), answer
    if case.field is not None:
        assert answer["errors"][0]["extensions"]["field"] == case.field, answer
    assert "Unexpected error." not in response.text
    assert "recursion" not in response.text
    assert await row_counts(Client, Invoice, WebhookEvent) == before


WS_FRAMES = [
    ("a JSON array", "[]"),
    ("a JSON array of messages", '[{"type": "connection_init"}]'),
    ("a JSON string", '"connection_init"'),
    ("a JSON number", "42"),
    ("an object whose type is not a string", '{"type": ["subscribe"]}'),
    ("JSON nested 100,000 deep", "[" * DEEP + "]" * DEEP),
    ("not JSON", "{"),
]


@pytest.mark.parametrize("frame", [frame for _, frame in WS_FRAMES], ids=[n for n, _ in WS_FRAMES])
async def test_a_websocket_frame_that_is_no_message_closes_with_4400(
    ws_url: str, frame: str
) -> None:
    # given a graphql-transport-ws connection
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as socket:  # type: ignore[list-item]
        # when its first frame is JSON but no message
        await socket.send(frame)
        # then the server closes it with 4400 (and the handler did not crash)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4400


async def test_the_dates_at_the_ends_of_the_range_are_taken(
    db: Backend, http: httpx.AsyncClient, owner: Account
) -> None:
    # when lists are filtered from the first to the last business date
    response = await http.post(
        "/graphql",
        json={
            "query": '{ invoices(filter: {from: "1970-01-01", to: "2199-12-31"}) { totalCount } '
            'timeline(filter: {from: "1970-01-01T00:00:00Z", to: "2199-12-31T23:59:59Z"}) '
            "{ totalCount } }"
        },
        headers={"authorization": f"Bearer {owner.token}"},
    )
    # then both answer
    answer = response.json()
    assert "errors" not in answer, answer
    assert answer["data"]["invoices"] == {"totalCount": 0}


async def test_the_legacy_protocol_ignores_a_frame_that_is_no_message(ws_url: str) -> None:
    # given a legacy graphql-ws connection
    async with websockets.connect(ws_url, subprotocols=["graphql-ws"]) as socket:  # type: ignore[list-item]
        # when a JSON array arrives, then a connection_init
        await socket.send("[]")
        await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        # then the array was ignored (the handler lives on) and the init acknowledged
        assert json.loads(await socket.recv())["type"] == "connection_ack"


async def test_a_subscription_with_a_lone_surrogate_gets_a_typed_error(
    ws_url: str, owner: Account
) -> None:
    # given a graphql-transport-ws connection, initialised with a token
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as socket:  # type: ignore[list-item]
        await socket.send(
            json.dumps({"type": "connection_init", "payload": {"token": owner.token}})
        )
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        # when a subscription's variable holds a lone surrogate
        await socket.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {
                        "query": "subscription($c: ID) { activityAdded(clientId: $c) { verb } }",
                        "variables": {"c": "\udcff"},
                    },
                }
            )
        )
        # then the operation gets an error naming the variable, and the socket stays open
        answer = json.loads(await socket.recv())
    assert answer["type"] == "error"
    assert [error["extensions"] for error in answer["payload"]] == [
        {"code": "INVALID_CHARACTERS", "field": "c"}
    ]
