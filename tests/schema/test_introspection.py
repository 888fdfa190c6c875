"""Introspection: on in development and tests, off in production unless a setting allows it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from settle.app import create_app
from settle.core.settings import Environment, Settings
from tests.conftest import Backend

SCHEMA = "{ __schema { queryType { name } } }"
TYPE = '{ __type(name: "Client") { name } }'
TYPENAME = "{ __typename }"


async def ask(settings: Settings, query: str) -> tuple[int, dict[str, Any]]:
    transport = httpx.ASGITransport(app=create_app(settings, manage_runtime=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as http:
        response = await http.post("/graphql", json={"query": query})
    return response.status_code, response.json()


def production(db: Backend, **values: Any) -> Settings:
    return db.settings.model_copy(update={"env": Environment.PRODUCTION, **values})


def refused(field: str) -> dict[str, Any]:
    return {
        "message": f"Introspection is disabled on this server: '{field}' cannot be queried.",
        "locations": [{"line": 1, "column": 3}],
        "extensions": {"code": "INTROSPECTION_DISABLED"},
    }


@pytest.mark.parametrize(("query", "field"), [(SCHEMA, "__schema"), (TYPE, "__type")])
async def test_production_refuses_introspection(db: Backend, query: str, field: str) -> None:
    # when a production server is asked for its schema
    status, body = await ask(production(db), query)
    # then it refuses with a typed error, and runs nothing
    assert (status, body) == (200, {"data": None, "errors": [refused(field)]})


async def test_production_still_answers_typename(db: Backend) -> None:
    # when a production server is asked for __typename (clients read unions with it)
    status, body = await ask(production(db), TYPENAME)
    # then it answers
    assert (status, body) == (200, {"data": {"__typename": "Query"}})


async def test_development_and_tests_allow_introspection(db: Backend) -> None:
    for env in (Environment.DEVELOPMENT, Environment.TEST):
        # when a development or test server is asked for its schema
        status, body = await ask(db.settings.model_copy(update={"env": env}), SCHEMA)
        # then it answers
        assert (status, body) == (200, {"data": {"__schema": {"queryType": {"name": "Query"}}}})


async def test_the_setting_turns_it_on_in_production_and_off_elsewhere(db: Backend) -> None:
    # when production allows it, and a test server does not
    allowed = await ask(production(db, graphql_introspection=True), SCHEMA)
    denied = await ask(db.settings.model_copy(update={"graphql_introspection": False}), SCHEMA)
    # then each does as its setting says
    assert allowed == (200, {"data": {"__schema": {"queryType": {"name": "Query"}}}})
    assert denied == (200, {"data": None, "errors": [refused("__schema")]})


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # given production with SETTLE_GRAPHQL_INTROSPECTION=true
    monkeypatch.setenv("SETTLE_ENV", "production")
    monkeypatch.setenv("SETTLE_GRAPHQL_INTROSPECTION", "true")
    # then introspection is on; and without the variable, off
    assert Settings().graphql_introspection_enabled is True
    monkeypatch.delenv("SETTLE_GRAPHQL_INTROSPECTION")
    assert Settings().graphql_introspection_enabled is False
