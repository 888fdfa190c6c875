"""The HTTP surface: health, readiness, request ids in headers and logs, GraphiQL, masking."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from settle.app import create_app
from settle.core.logging import JsonFormatter
from settle.core.settings import Environment, Settings
from settle.services import client as client_service
from tests.conftest import Backend
from tests.fixtures.factories import Account
from tests.fixtures.graphql import GraphQLClient

CLIENT_COUNT = """
query ClientCount {
  clients { totalCount }
}
"""

TOO_MANY_CLIENTS = """
query TooMany {
  clients(first: 101) { totalCount }
}
"""


class JsonLines(logging.Handler):
    """Formats each record as it is emitted, while the request's context is current."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@contextmanager
def json_logs() -> Iterator[list[dict[str, Any]]]:
    handler = JsonLines()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as client:
        yield client


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound by nobody's listener: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def settings_with(db: Backend, **changes: Any) -> Settings:
    return db.settings.model_copy(update=changes)


async def test_healthz_answers_while_the_process_lives(http: httpx.AsyncClient) -> None:
    # when
    response = await http.get("/healthz")

    # then
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_each_service_it_needs(db: Backend, http: httpx.AsyncClient) -> None:
    # when
    response = await http.get("/readyz")

    # then: the database, and Redis where one is configured (the PostgreSQL run)
    assert response.status_code == 200
    checks = {"database": "ok"} | ({"redis": "ok"} if db.name == "postgres" else {})
    assert response.json() == {"status": "ready", "checks": checks}


async def test_readyz_is_unavailable_when_redis_does_not_answer(
    db: Backend, closed_port: int
) -> None:
    # given: an app whose Redis is down
    app = create_app(
        settings_with(db, redis_url=f"redis://127.0.0.1:{closed_port}/0"), manage_runtime=False
    )

    # when
    async with serve(app) as client:
        response = await client.get("/readyz")

    # then
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "redis": "error: ConnectionError"},
    }


async def test_a_caller_request_id_is_echoed(http: httpx.AsyncClient) -> None:
    # when
    response = await http.get("/healthz", headers={"X-Request-ID": "checkout-7f3a"})

    # then
    assert response.headers["X-Request-ID"] == "checkout-7f3a"


async def test_a_request_without_an_id_gets_a_new_one(http: httpx.AsyncClient) -> None:
    # when
    first = await http.get("/healthz")
    second = await http.get("/healthz")

    # then
    ids = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in ids)
    assert ids[0] != ids[1]


async def test_an_unprintable_or_overlong_request_id_is_not_trusted(
    http: httpx.AsyncClient,
) -> None:
    # when
    tabbed = await http.get("/healthz", headers={"X-Request-ID": "evil\tline"})
    overlong = await http.get("/healthz", headers={"X-Request-ID": "x" * 200})

    # then: a control character gets a fresh id; a long one is cut to 64 characters
    assert tabbed.headers["X-Request-ID"] != "evil\tline"
    assert len(tabbed.headers["X-Request-ID"]) == 32
    assert overlong.headers["X-Request-ID"] == "x" * 64


async def test_an_unexpected_error_is_masked_for_the_caller_and_logged_with_the_request_id(
    http: httpx.AsyncClient, owner: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a bug deep in a service
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("pool exhausted at db-3.internal:5432")

    monkeypatch.setattr(client_service, "list_clients", broken)

    # when
    with json_logs() as lines:
        response = await http.post(
            "/graphql",
            json={"query": CLIENT_COUNT},
            headers={"Authorization": f"Bearer {owner.token}", "X-Request-ID": "req-boom-1"},
        )

    # then: the caller learns nothing of the internals
    assert response.status_code == 200
    assert response.json() == {
        "data": None,
        "errors": [
            {
                "message": "Unexpected error.",
                "locations": [{"line": 3, "column": 3}],
                "path": ["clients"],
            }
        ],
    }
    assert "db-3.internal" not in response.text

    # then: the log has the real error, as JSON, tagged with the request id
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "req-boom-1"
    assert "RuntimeError: pool exhausted at db-3.internal:5432" in errors[0]["exception"]


async def test_an_expected_error_keeps_its_message_and_code(
    gql: GraphQLClient, owner: Account
) -> None:
    # when
    body = await gql.execute(TOO_MANY_CLIENTS, token=owner.token, expect_errors=True)

    # then: not masked; the caller gets the message and a code to act on
    assert body["errors"] == [
        {
            "message": "first must be between 1 and 100",
            "locations": [{"line": 3, "column": 3}],
            "path": ["clients"],
            "extensions": {"code": "OUT_OF_RANGE", "field": "first"},
        }
    ]


async def test_an_expected_error_is_not_logged_as_a_failure(
    gql: GraphQLClient, owner: Account
) -> None:
    # when
    with json_logs() as lines:
        await gql.execute(TOO_MANY_CLIENTS, token=owner.token, expect_errors=True)
        await gql.execute(CLIENT_COUNT, expect_errors=True)

    # then: a caller's mistake is not an operator's alarm
    assert [line for line in lines if line["level"] in ("error", "critical")] == []


async def test_graphiql_is_served_in_development(db: Backend) -> None:
    # given
    app = create_app(settings_with(db, env=Environment.DEVELOPMENT), manage_runtime=False)

    # when
    async with serve(app) as client:
        response = await client.get("/graphql", headers={"Accept": "text/html"})

    # then
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_graphiql_is_not_served_in_production(db: Backend, owner: Account) -> None:
    # given: production settings (which refuse to run without a secret key)
    production = settings_with(db, env=Environment.PRODUCTION)
    assert production.secret_key is not None
    app = create_app(production, manage_runtime=False)

    # when
    async with serve(app) as client:
        page = await client.get("/graphql", headers={"Accept": "text/html"})
        query = await client.post(
            "/graphql",
            json={"query": "{ me { email } }"},
            headers={"Authorization": f"Bearer {owner.token}"},
        )

    # then: no IDE, but the API itself answers
    assert page.status_code == 404
    assert "graphiql" not in page.text.lower()
    assert query.json() == {"data": {"me": {"email": owner.user.email}}}
