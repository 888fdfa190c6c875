"""Documents are parsed and validated once per process; each request is held to its limits."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import strawberry.schema.schema as strawberry_schema

from settle.app import create_app
from settle.core.settings import Environment, Settings
from settle.schema import documents, inputs, limits
from tests.conftest import Backend
from tests.fixtures.factories import Account

ME = "query Me { me { name agency { name } } }"
# 1 + 100 x (1 + 1 + 10): within an owner's budget, over an anonymous caller's (1000).
FIELDS = "id name email phone address taxId currency isActive createdAt"
PAGE = f"{{ clients(first: 100) {{ edges {{ node {{ {FIELDS} }} }} }} }}"
PAGE_OF_N = f"query Page($n: Int!) {{ clients(first: $n) {{ edges {{ node {{ {FIELDS} }} }} }} }}"
SCHEMA = "{ __schema { queryType { name } } }"


class Calls:
    def __init__(self) -> None:
        self.parses = 0
        self.validations = 0


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Counts the parses and the validations that really run."""
    counted = Calls()
    parse_document = limits._LimitedParser.parse_document
    validate = strawberry_schema.validate

    def counting_parse(self: limits._LimitedParser) -> Any:
        counted.parses += 1
        return parse_document(self)

    def counting_validate(*args: Any, **kwargs: Any) -> Any:
        counted.validations += 1
        return validate(*args, **kwargs)

    monkeypatch.setattr(limits._LimitedParser, "parse_document", counting_parse)
    monkeypatch.setattr(strawberry_schema, "validate", counting_validate)
    documents.document_cache(documents.get_settings()).clear()
    return counted


async def post(
    settings: Settings,
    query: str,
    variables: dict[str, Any] | None = None,
    token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    transport = httpx.ASGITransport(app=create_app(settings, manage_runtime=False))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as http:
        response = await http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
    return response.status_code, response.json()


def code_of(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])


async def test_a_document_is_parsed_and_validated_once(
    db: Backend, owner: Account, calls: Calls
) -> None:
    # given a document the process has answered once
    first = await post(db.settings, ME, token=owner.token)
    assert (calls.parses, calls.validations) == (1, 1)
    # when it comes again, as GET and as POST
    again = await post(db.settings, ME, token=owner.token)
    transport = httpx.ASGITransport(app=create_app(db.settings, manage_runtime=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as http:
        got = await http.get(
            "/graphql", params={"query": ME}, headers={"Authorization": f"Bearer {owner.token}"}
        )
    # then it is neither parsed nor validated again, and the answers are the same
    assert (calls.parses, calls.validations) == (1, 1)
    expected = {"me": {"name": "Olive Owner", "agency": {"name": "Northwind Studio"}}}
    assert first == again == (200, {"data": expected})
    assert got.json() == {"data": expected}


async def test_the_cache_is_bounded(db: Backend, owner: Account, calls: Calls) -> None:
    settings = db.settings.model_copy(update={"graphql_document_cache_size": 2})
    cache = documents.document_cache(settings)
    queries = ["{ me { id } }", "{ me { name } }", "{ me { email } }"]
    # when three documents are answered by a process that keeps two
    for query in queries:
        assert (await post(settings, query, token=owner.token))[0] == 200
    # then it holds the last two, and the first is parsed again when it comes back
    assert len(cache) == 2
    assert cache.get(documents.document_hash(queries[0])) is None
    await post(settings, queries[0], token=owner.token)
    assert calls.parses == 4
    # and a size of 0 keeps nothing
    off = db.settings.model_copy(update={"graphql_document_cache_size": 0})
    await post(off, queries[1], token=owner.token)
    await post(off, queries[1], token=owner.token)
    assert len(documents.document_cache(off)) == 0
    assert calls.parses == 6


async def test_an_anonymous_caller_gets_its_own_budget_for_a_cached_document(
    db: Backend, owner: Account, calls: Calls
) -> None:
    # given a page an owner may ask for, cached
    status, body = await post(db.settings, PAGE, token=owner.token)
    assert (status, body) == (200, {"data": {"clients": {"edges": []}}})
    # when an anonymous caller sends the same document
    status, body = await post(db.settings, PAGE)
    # then it is refused on the anonymous budget, and was not parsed again
    assert code_of(body) == "QUERY_TOO_COSTLY"
    assert body["errors"][0]["extensions"]["allowed"] == 1000
    assert calls.parses == 1


async def test_figures_that_depend_on_variables_are_computed_for_each_request(
    db: Backend, calls: Calls
) -> None:
    # given an anonymous page of one (within the budget; refused only for its caller)
    _, small = await post(db.settings, PAGE_OF_N, {"n": 1})
    assert code_of(small) == "UNAUTHENTICATED"
    # when the same document asks for a hundred
    _, large = await post(db.settings, PAGE_OF_N, {"n": 100})
    # then the page size of this request counts
    assert code_of(large) == "QUERY_TOO_COSTLY"
    assert calls.parses == 1


async def test_smaller_limits_refuse_a_cached_document(db: Backend, owner: Account) -> None:
    # given a document cached under the default limits
    assert (await post(db.settings, ME, token=owner.token))[0] == 200
    # when a process with smaller limits receives it
    tight = db.settings.model_copy(update={"graphql_max_tokens": 5})
    _, by_tokens = await post(tight, ME, token=owner.token)
    small = db.settings.model_copy(update={"graphql_max_document_bytes": 10})
    _, by_size = await post(small, ME, token=owner.token)
    shallow = db.settings.model_copy(update={"graphql_max_depth": 1})
    _, by_depth = await post(shallow, ME, token=owner.token)
    # then each limit refuses it, as if it had never been seen
    assert code_of(by_tokens) == code_of(by_size) == "QUERY_TOO_LARGE"
    assert code_of(by_depth) == "QUERY_TOO_DEEP"


async def test_introspection_turned_off_refuses_a_cached_document(
    db: Backend, calls: Calls
) -> None:
    # given an introspection query validated where introspection is on
    status, body = await post(db.settings, SCHEMA)
    assert (status, body) == (200, {"data": {"__schema": {"queryType": {"name": "Query"}}}})
    # when a production server (introspection off) receives it
    production = db.settings.model_copy(update={"env": Environment.PRODUCTION})
    _, refused = await post(production, SCHEMA)
    # then it is validated under the production rules and refused
    assert code_of(refused) == "INTROSPECTION_DISABLED"
    assert (calls.parses, calls.validations) == (1, 2)


async def test_an_invalid_document_is_refused_every_time(db: Backend, calls: Calls) -> None:
    # when an invalid document comes twice
    answers = [await post(db.settings, "{ me { nope } }") for _ in range(2)]
    # then both answers are the same refusal: a failed validation is not remembered
    assert answers[0] == answers[1]
    assert code_of(answers[0][1]) == "GRAPHQL_VALIDATION_FAILED"
    assert calls.validations == 2


async def test_variables_are_checked_on_every_request(db: Backend, owner: Account) -> None:
    query = (
        "query Find($q: String) { clients(first: 1, filter: {search: $q}) "
        "{ edges { node { id } } } }"
    )
    # given a document cached with harmless variables
    status, _ = await post(db.settings, query, {"q": "acme"}, token=owner.token)
    assert status == 200
    # when the same document comes with a variable of unusable text
    _, body = await post(db.settings, query, {"q": "bad\x00text"}, token=owner.token)
    # then that request is refused, as it would be without the cache
    assert code_of(body) == "INVALID_CHARACTERS"


async def test_a_cached_document_s_literals_are_walked_once_and_refused_every_time(
    db: Backend, owner: Account, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    walks: list[str] = []
    walk = inputs.literal_with_invalid_text

    def counting_walk(document: Any) -> str | None:
        found = walk(document)
        walks.append(str(found))
        return found

    monkeypatch.setattr(inputs, "literal_with_invalid_text", counting_walk)
    bad = '{ clients(first: 1, filter: {search: "bad\\u0000text"}) { edges { node { id } } } }'
    # given a harmless document and one whose literal holds NUL, each answered once
    assert (await post(db.settings, ME, token=owner.token))[0] == 200
    _, first = await post(db.settings, bad, token=owner.token)
    # when each comes again
    assert (await post(db.settings, ME, token=owner.token))[0] == 200
    _, again = await post(db.settings, bad, token=owner.token)
    # then the bad one is refused both times, naming the argument, and each document's
    # tree was walked for bad text once
    assert code_of(first) == code_of(again) == "INVALID_CHARACTERS"
    assert first["errors"][0]["extensions"]["field"] == "filter.search"
    assert first == again
    assert walks == ["None", "filter.search"]
