"""Database: the Tortoise configuration, start-up, shutdown and migrations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from tortoise import Tortoise
from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import (
    BaseDBAsyncClient,
    TransactionalDBClient,
    TransactionContextPooled,
)
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.connection import get_connections
from tortoise.migrations.api import migrate as run_migrations
from tortoise.models import Model
from tortoise.queryset import QuerySet

from settle.core.errors import NotFoundError
from settle.core.private_files import private_dir, private_file

APP_LABEL = "settle"

M = TypeVar("M", bound=Model)


def tortoise_config(database_url: str) -> dict[str, Any]:
    """The Tortoise config for one database URL (``sqlite://...`` or ``postgres://...``)."""
    connection: str | dict[str, Any] = database_url
    if is_postgres(database_url):
        # Tortoise's asyncpg client, with connections reset only when a statement changed
        # session state (see settle.core.pg).
        connection = expand_db_url(database_url)
        connection["engine"] = "settle.core.pg"
    return {
        "connections": {"default": connection},
        "apps": {
            APP_LABEL: {
                "models": ["settle.models"],
                "migrations": "settle.migrations",
                "default_connection": "default",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def is_postgres(database_url: str) -> bool:
    return database_url.startswith(("postgres://", "postgresql://", "asyncpg://"))


async def init_db(database_url: str) -> None:
    """Open the ORM for this process; queries connect lazily."""
    _ensure_sqlite_dir(database_url)
    # Requests, the lifespan and worker tasks run in different asyncio tasks; the
    # global fallback lets all of them find the one context this process uses.
    await Tortoise.init(config=tortoise_config(database_url), _enable_global_fallback=True)
    if not is_postgres(database_url):
        conn = Tortoise.get_connection("default")
        # WAL lets the embedded worker read while a request writes; the busy
        # timeout makes a second writer wait instead of failing at once.
        await conn.execute_script("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;")


async def close_db() -> None:
    await Tortoise.close_connections()


async def migrate(database_url: str) -> None:
    """Apply every pending migration; the same files run on SQLite and PostgreSQL."""
    _ensure_sqlite_dir(database_url)
    await run_migrations(config=tortoise_config(database_url))
    await Tortoise.close_connections()


def _ensure_sqlite_dir(database_url: str) -> None:
    if database_url.startswith("sqlite://"):
        path = database_url.removeprefix("sqlite://").split("?", 1)[0]
        if path and path != ":memory:":
            from pathlib import Path

            # Created here, owner-only, before SQLite opens it: SQLite would create it
            # with the umask's mode, and gives its -wal and -shm files the database's.
            private_file(private_dir(Path(path).parent) / Path(path).name)


# For Tortoise's own CLI (`tortoise makemigrations`); the autodetector compares
# the models with the migration files, so the in-memory database is never read.
MIGRATIONS_CONFIG = tortoise_config("sqlite://:memory:")


# --- one snapshot per query operation --------------------------------------------------------


@dataclass(eq=False)
class ReadSnapshot:
    """The read-only transaction a query operation reads through (see ``read_snapshot``)."""

    pool: BaseDBAsyncClient
    """The pool the snapshot's connection came from, where a write steps out to."""


_snapshot: ContextVar[ReadSnapshot | None] = ContextVar("settle_read_snapshot", default=None)
_snapshot_slots: WeakKeyDictionary[BaseDBAsyncClient, asyncio.Semaphore] = WeakKeyDictionary()


def snapshot_slots(pool_size: int) -> int:
    """How many operations may hold a snapshot at once: the pool less a quarter (at least one).

    A query holds its connection until it has answered, and a query that
    writes (a client opening an invoice marks it viewed) needs a second one for
    that write. Were every connection held by such queries, each would wait for
    another forever; the connections kept back serve those writes, mutations
    and webhooks, none of which waits for a second connection while holding one.
    """
    return pool_size - max(1, pool_size // 4)


def current_snapshot() -> ReadSnapshot | None:
    """The snapshot the running operation reads through, if any."""
    return _snapshot.get()


class _SnapshotTransaction(TransactionWrapper):
    """Tortoise's asyncpg transaction, begun read-only at REPEATABLE READ.

    ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`` in one statement, where
    a ``SET TRANSACTION`` after Tortoise's plain ``BEGIN`` would cost a round trip.
    """

    async def begin(self) -> None:
        self.transaction = self._connection.transaction(isolation="repeatable_read", readonly=True)
        await self.transaction.start()


@asynccontextmanager
async def read_snapshot() -> AsyncIterator[ReadSnapshot | None]:
    """Run the block's reads in one read-only REPEATABLE READ transaction (PostgreSQL).

    Every statement inside, in this task and in the tasks it starts (resolvers
    of a list, DataLoader batches), uses the transaction's one connection: the
    connection is a context variable, which a new task copies. PostgreSQL takes
    the snapshot at the first statement, so all of them see the database as it
    was then. Writes step out of it (``outside_snapshot``).

    Yields None, and changes nothing, on SQLite, inside a transaction already,
    or with a pool of one connection (a query that writes would wait for itself).
    """
    pool = Tortoise.get_connection("default")
    if (
        not isinstance(pool, AsyncpgDBClient)
        or isinstance(pool, TransactionalDBClient)
        or snapshot_slots(pool.pool_maxsize) < 1
    ):
        yield None
        return
    slots = _snapshot_slots.get(pool)
    if slots is None:
        slots = _snapshot_slots[pool] = asyncio.Semaphore(snapshot_slots(pool.pool_maxsize))
    async with slots, TransactionContextPooled(_SnapshotTransaction(pool), pool._pool_init_lock):
        snapshot = ReadSnapshot(pool)
        token = _snapshot.set(snapshot)
        try:
            yield snapshot
        finally:
            _snapshot.reset(token)


_write_slots: WeakKeyDictionary[BaseDBAsyncClient, asyncio.Semaphore] = WeakKeyDictionary()


@asynccontextmanager
async def write_slot() -> AsyncIterator[None]:
    """Hold one of the pool's write slots for the block (a boundary's transaction).

    As many transactions write at once as snapshots read (the pool less a quarter,
    ``snapshot_slots``); the others wait here, holding no connection and taking no
    turn on the event loop. Without it a burst of writes (a hundred payments
    started at once) took every connection, and a simple read queued behind all of
    them for one. Nothing on SQLite, or inside a transaction already.
    """
    pool = Tortoise.get_connection("default")
    if not isinstance(pool, AsyncpgDBClient) or isinstance(pool, TransactionalDBClient):
        yield
        return
    slots = _write_slots.get(pool)
    if slots is None:
        slots = _write_slots[pool] = asyncio.Semaphore(max(1, snapshot_slots(pool.pool_maxsize)))
    async with slots:
        yield


@contextmanager
def outside_snapshot() -> Iterator[None]:
    """Run the block on the pool instead of the operation's snapshot (for a write of a query).

    What the block writes commits on its own connection; the snapshot, taken
    already or not, shows the database of its own moment.
    """
    snapshot = _snapshot.get()
    if snapshot is None:
        yield
        return
    connection_token = get_connections().set("default", snapshot.pool)
    snapshot_token = _snapshot.set(None)
    try:
        yield
    finally:
        _snapshot.reset(snapshot_token)
        get_connections().reset(connection_token)


def lock_rows(qs: QuerySet[M]) -> QuerySet[M]:
    """Lock the selected rows until commit (PostgreSQL; SQLite already serialises writers).

    ``FOR NO KEY UPDATE``, not ``FOR UPDATE``: inserting a child row (a time
    entry under a project) takes ``FOR KEY SHARE`` on its parent, which
    ``FOR UPDATE`` would wait for, so two requests that each inserted a child and
    then locked the parent would deadlock. ``NO KEY UPDATE`` still serialises the
    lockers. ``OF`` the model's own table: tenant scopes join rows (the client)
    that are not ours to lock.
    """
    if Tortoise.get_connection("default").capabilities.dialect == "postgres":
        return qs.select_for_update(no_key=True, of=(qs.model._meta.db_table,))
    return qs


async def get_visible(qs: QuerySet[M], row_id: Any, entity: str, *, lock: bool = False) -> M:
    """The row ``row_id`` of a tenant-scoped queryset, or NotFoundError naming ``entity``.

    With ``lock`` the row stays locked until commit (see ``lock_rows``). A row of
    another agency is simply not in the scope, so it is "not found" like any other.
    """
    query = qs.filter(id=row_id)
    row = await (lock_rows(query) if lock else query).first()
    if row is None:
        raise NotFoundError(entity, row_id)
    return row


def as_uuid(value: Any) -> uuid.UUID:
    """A UUID column read through ``values()``: SQLite gives it back as text."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


class SqlParams:
    """Values bound into hand-written SQL, in the order the text names them.

    ``params(value)`` appends the value and returns its placeholder: ``$n`` on
    PostgreSQL, ``?`` on SQLite (which binds by position, so the text order is
    the binding order). UUIDs go to SQLite as text, as Tortoise stores them.
    """

    def __init__(self, conn: Any) -> None:
        self.postgres = conn.capabilities.dialect == "postgres"
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        if not self.postgres and isinstance(value, uuid.UUID):
            value = str(value)
        self.values.append(value)
        return f"${len(self.values)}" if self.postgres else "?"
