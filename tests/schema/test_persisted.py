"""Automatic persisted queries: Apollo's protocol, a bounded store, shared through Redis."""

from __future__ import annotations

import json
from typing import Any

import httpx

from settle.app import create_app
from settle.core.settings import Settings
from settle.schema import documents, persisted
from tests.conftest import Backend
from tests.fixtures.factories import Account

ME = "query Me { me { name } }"
ANSWER = {"data": {"me": {"name": "Olive Owner"}}}
NOT_FOUND = {
    "data": None,
    "errors": [
        {"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}
    ],
}


def hashed(query: str, version: int = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": documents.document_hash(query)}}


class Api:
    """One app (a replica) and a client of it."""

    def __init__(self, settings: Settings, token: str) -> None:
        self.app = create_app(settings, manage_runtime=False)
        self.headers = {"Authorization": f"Bearer {token}"}

    async def post(self, body: dict[str, Any]) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as http:
            return await http.post("/graphql", json=body, headers=self.headers)

    async def get(self, params: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as http:
            return await http.get("/graphql", params=params, headers=self.headers)


def forget_parsed(settings: Settings) -> None:
    """As a new process: nothing parsed yet, so a hash must be found in the store."""
    documents.document_cache(settings).clear()


async def test_apollo_round_trip(db: Backend, owner: Account) -> None:
    forget_parsed(db.settings)
    api = Api(db.settings, owner.token)
    query = ME + " # round trip"
    # when a client sends only the hash of a document the server has never seen
    first = await api.post({"extensions": hashed(query)})
    # then it is told so, with 200, Apollo's message and code, and a response not to cache
    assert (first.status_code, first.json()) == (200, NOT_FOUND)
    assert first.headers["cache-control"] == "no-store"
    # when it sends the hash with the document
    second = await api.post({"query": query, "extensions": hashed(query)})
    # then the document runs, and from now on the hash alone is enough
    assert (second.status_code, second.json()) == (200, ANSWER)
    forget_parsed(db.settings)
    third = await api.post({"extensions": hashed(query)})
    assert (third.status_code, third.json()) == (200, ANSWER)


async def test_get_requests_use_the_hash(db: Backend, owner: Account) -> None:
    api = Api(db.settings, owner.token)
    query = ME + " # over GET"
    extensions = json.dumps(hashed(query))
    # when a GET brings an unknown hash, then the document with it, then the hash again
    unknown = await api.get({"extensions": extensions})
    known = await api.get({"query": query, "extensions": extensions})
    forget_parsed(db.settings)
    again = await api.get({"extensions": extensions, "operationName": "Me"})
    # then it goes as over POST
    assert (unknown.status_code, unknown.json()) == (200, NOT_FOUND)
    assert (known.status_code, known.json()) == (200, ANSWER)
    assert (again.status_code, again.json()) == (200, ANSWER)


async def test_a_hash_that_does_not_match_the_document_is_refused(
    db: Backend, owner: Account
) -> None:
    api = Api(db.settings, owner.token)
    query = ME + " # mismatch"
    # when the hash of one document comes with another
    response = await api.post({"query": query, "extensions": hashed(ME + " # other")})
    # then nothing runs, the request is refused as Apollo Server refuses it
    assert (response.status_code, response.json()) == (
        400,
        {
            "data": None,
            "errors": [
                {
                    "message": "provided sha does not match query",
                    "extensions": {"code": "BAD_REQUEST"},
                }
            ],
        },
    )
    # and the document is not stored under the hash it was sent with
    forget_parsed(db.settings)
    later = await api.post({"extensions": hashed(ME + " # other")})
    assert later.json() == NOT_FOUND


async def test_only_version_1_is_spoken(db: Backend, owner: Account) -> None:
    api = Api(db.settings, owner.token)
    response = await api.post({"query": ME, "extensions": hashed(ME, version=2)})
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"message": "Unsupported persisted query version", "extensions": {"code": "BAD_REQUEST"}}
    ]


async def test_turned_off_the_server_says_it_does_not_support_them(
    db: Backend, owner: Account
) -> None:
    off = db.settings.model_copy(update={"graphql_persisted_queries": False})
    api = Api(off, owner.token)
    # when persisted queries are off, a hash alone or with its document
    alone = await api.post({"extensions": hashed(ME)})
    with_query = await api.post({"query": ME, "extensions": hashed(ME)})
    # then the client is told to stop sending hashes (Apollo's client then sends documents)
    unsupported = {
        "data": None,
        "errors": [
            {
                "message": "PersistedQueryNotSupported",
                "extensions": {"code": "PERSISTED_QUERY_NOT_SUPPORTED"},
            }
        ],
    }
    assert (alone.status_code, alone.json()) == (200, unsupported)
    assert (with_query.status_code, with_query.json()) == (200, unsupported)
    # and a plain request still runs
    assert (await api.post({"query": ME})).json() == ANSWER


async def test_a_stored_document_is_still_held_to_the_limits(db: Backend, owner: Account) -> None:
    api = Api(db.settings, owner.token)
    query = "{ me { agency { name } } } # limits"
    await api.post({"query": query, "extensions": hashed(query)})
    # when a server with a smaller depth limit runs it by its hash
    shallow = Api(db.settings.model_copy(update={"graphql_max_depth": 1}), owner.token)
    response = await shallow.post({"extensions": hashed(query)})
    # then it is refused as if the document had been sent
    assert response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_DEEP"


async def test_replicas_share_the_store(db: Backend, owner: Account) -> None:
    # given two replicas of the API, with the same settings
    first, second = Api(db.settings, owner.token), Api(db.settings, owner.token)
    query = ME + " # shared"
    # when one learns a document
    await first.post({"query": query, "extensions": hashed(query)})
    forget_parsed(db.settings)
    # then the other runs it by its hash (with Redis, from Redis)
    response = await second.post({"extensions": hashed(query)})
    assert response.json() == ANSWER
    store = persisted.store_for(db.settings)
    expected = persisted.RedisStore if db.settings.redis_url else persisted.MemoryStore
    assert isinstance(store, expected)


async def test_the_store_is_bounded(db: Backend) -> None:
    settings = db.settings.model_copy(update={"graphql_persisted_query_store_size": 2})
    store = persisted.store_for(settings)
    queries = [f"{{ me {{ id }} }} # bounded {n} {db.name}" for n in range(3)]
    # when three documents are stored where two fit
    for query in queries:
        await store.put(documents.document_hash(query), query)
    # then the oldest is gone and the newest two remain
    found = [await store.get(documents.document_hash(query)) for query in queries]
    assert found == [None, queries[1], queries[2]]
