"""Automatic persisted queries, as Apollo's clients speak them (version 1).

A client sends ``extensions.persistedQuery = {version: 1, sha256Hash}`` and no
document. A server that knows the hash runs the document it stands for; one
that does not answers ``PersistedQueryNotFound`` (code
PERSISTED_QUERY_NOT_FOUND, HTTP 200), and the client sends the hash again with
the document, which is checked against the hash and stored. With the feature
off (``SETTLE_GRAPHQL_PERSISTED_QUERIES=false``) a hashed request is answered
``PersistedQueryNotSupported`` (PERSISTED_QUERY_NOT_SUPPORTED), and the client
goes back to sending documents. Apollo's links match those messages, not only
the codes, so both are exactly Apollo's.

The store is bounded: in Redis when it is configured (every replica and
worker process shares it; at most ``SETTLE_GRAPHQL_PERSISTED_QUERY_STORE_SIZE``
documents, the least recently registered or used dropped first, each expiring
after ``..._TTL_SECONDS`` unused), else in this process's memory. A stored
document is only text: it is parsed, held to the limits and validated as if
the client had sent it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any, Protocol

import redis.asyncio as aioredis
from cross_web import HTTPException
from graphql import GraphQLError

from settle.core.settings import Settings
from settle.schema.documents import document_cache, document_hash

NOT_FOUND = "PersistedQueryNotFound"
NOT_SUPPORTED = "PersistedQueryNotSupported"
HASH_MISMATCH = "provided sha does not match query"


class PersistedQueryError(GraphQLError):
    """A hashed request this server cannot run (yet): answered with HTTP 200."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, extensions={"code": code})


class PersistedQueryStore(Protocol):
    async def get(self, sha256: str) -> str | None: ...

    async def put(self, sha256: str, query: str) -> None: ...


class MemoryStore:
    """The embedded store: this process's memory, least recently used out first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._documents: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._documents)

    async def get(self, sha256: str) -> str | None:
        query = self._documents.get(sha256)
        if query is not None:
            self._documents.move_to_end(sha256)
        return query

    async def put(self, sha256: str, query: str) -> None:
        self._documents[sha256] = query
        self._documents.move_to_end(sha256)
        while len(self._documents) > self.size:
            self._documents.popitem(last=False)


# One key per document, and a sorted set of the keys by last use: past the size, the
# least recently used keys go. One script, so two replicas storing at once cannot leave
# the set and the keys disagreeing.
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if excess > 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
  redis.call('DEL', unpack(oldest))
end
return 1
"""


class RedisStore:
    """The shared store: documents in Redis, every replica reading the same ones."""

    PREFIX = "settle:apq:"
    INDEX = "settle:apq-index"

    def __init__(self, client: aioredis.Redis, size: int, ttl_seconds: int) -> None:
        self.client = client
        self.size = size
        self.ttl = ttl_seconds
        self._put = client.register_script(_PUT)

    async def get(self, sha256: str) -> str | None:
        key = self.PREFIX + sha256
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.getex(key, ex=self.ttl)
            pipe.zadd(self.INDEX, {key: time.time()}, xx=True)
            query, _ = await pipe.execute()
        return None if query is None else str(query)

    async def put(self, sha256: str, query: str) -> None:
        await self._put(
            keys=[self.PREFIX + sha256, self.INDEX],
            args=[query, self.ttl, time.time(), self.size],
        )


_redis_clients: dict[tuple[str, int], aioredis.Redis] = {}
_memory_stores: dict[int, MemoryStore] = {}


def store_for(settings: Settings) -> PersistedQueryStore:
    """The store of this process for ``settings``: Redis when configured, else memory."""
    if settings.redis_url:
        # A client per event loop: a Redis connection belongs to the loop that opened it.
        key = (settings.redis_url, id(asyncio.get_running_loop()))
        client = _redis_clients.get(key)
        if client is None:
            client = _redis_clients[key] = aioredis.Redis.from_url(
                settings.redis_url, decode_responses=True
            )
        return RedisStore(
            client,
            settings.graphql_persisted_query_store_size,
            settings.graphql_persisted_query_ttl_seconds,
        )
    size = settings.graphql_persisted_query_store_size
    store = _memory_stores.get(size)
    if store is None:
        store = _memory_stores[size] = MemoryStore(size)
    return store


async def close_stores() -> None:
    """Close this process's Redis clients (at shutdown)."""
    loop = id(asyncio.get_running_loop())
    for key in [key for key in _redis_clients if key[1] == loop]:
        await _redis_clients.pop(key).aclose()


def _persisted_query(extensions: dict[str, Any] | None) -> dict[str, Any] | None:
    value = (extensions or {}).get("persistedQuery")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise HTTPException(400, "extensions.persistedQuery must be an object.")
    return value


async def resolve(
    settings: Settings, query: str | None, extensions: dict[str, Any] | None
) -> str | None:
    """The document a request stands for: its own, or the one its hash names.

    Raises PersistedQueryError (answered with 200, as Apollo's clients expect)
    when the hash is unknown or the feature is off, and HTTPException (400) for
    a hash that does not match the document sent with it or a version other than 1.
    """
    persisted = _persisted_query(extensions)
    if persisted is None:
        return query
    if not settings.graphql_persisted_queries:
        raise PersistedQueryError(NOT_SUPPORTED, "PERSISTED_QUERY_NOT_SUPPORTED")
    if persisted.get("version") != 1:
        raise HTTPException(400, "Unsupported persisted query version")
    sha256 = persisted.get("sha256Hash")
    if not isinstance(sha256, str) or not sha256:
        raise HTTPException(400, "extensions.persistedQuery.sha256Hash must be a string.")
    sha256 = sha256.lower()
    if query is not None:
        if document_hash(query) != sha256:
            raise HTTPException(400, HASH_MISMATCH)
        # Stored only within the size limit: a larger one is refused when it runs anyway.
        if (
            len(query.encode("utf-8", errors="surrogatepass"))
            <= settings.graphql_max_document_bytes
        ):
            await store_for(settings).put(sha256, query)
        return query
    # This process may have parsed the document already: no round trip to the store.
    entry = document_cache(settings).get(sha256)
    if entry is not None:
        return entry.query
    found = await store_for(settings).get(sha256)
    if found is None or document_hash(found) != sha256:
        raise PersistedQueryError(NOT_FOUND, "PERSISTED_QUERY_NOT_FOUND")
    return found
