"""Shared fixtures: each database-backed test runs on SQLite and on PostgreSQL.

The SQLite run is the embedded default (in-process bus and worker). The
PostgreSQL run also uses Redis for the event bus, as production does. A test
whose service is missing is skipped, or fails under CI=true.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import httpx
import pytest
from argon2 import PasswordHasher
from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE

from settle.app import Runtime, create_app, start_runtime, stop_runtime
from settle.core.auth import use_password_hasher
from settle.core.db import is_postgres, migrate
from settle.core.rate_limit import reset_counts
from settle.core.settings import Environment, Settings, configure_settings
from tests.fixtures.compiled import Differences, differential
from tests.fixtures.db import drain_jobs
from tests.fixtures.factories import Account, create_agency

# Fixtures used by name: a test's own file storage, the session-wide fake gateways
# (started once for every test that asks for them), the websocket server.
from tests.fixtures.files import files_dir  # noqa: F401
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.localstripe import localstripe_server  # noqa: F401
from tests.fixtures.razorpay import razorpay_fake  # noqa: F401
from tests.fixtures.services import (
    REDIS_URL,
    check_redis,
    create_postgres_database,
    drop_postgres_database,
    unavailable,
)
from tests.fixtures.telegram import telegram_fake, telegram_server  # noqa: F401
from tests.fixtures.websocket import ws_url  # noqa: F401

TEST_SECRET = "settle-test-secret-key-for-tests-only"


@dataclass
class Backend:
    name: str
    settings: Settings
    runtime: Runtime

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until the in-process worker has run every job sent so far."""
        worker = self.runtime.worker
        assert worker is not None, "this backend has no in-process worker"
        assert worker.broker is dramatiq.get_broker(), "the worker consumes another broker"
        await drain_jobs(timeout)


def make_settings(var_dir: Path, database_url: str, redis_url: str | None) -> Settings:
    return Settings(
        env=Environment.TEST,
        var_dir=var_dir,
        database_url=database_url,
        redis_url=redis_url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        public_base_url="http://settle.test",
        embedded_worker_threads=2,
    )


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> None:
    """Argon2 at production strength would dominate the suite's time; tests need no strength."""
    use_password_hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(autouse=True)
def compiled_reads_match() -> Iterator[Differences]:
    """Every query operation of every test runs on both executors; they must agree."""
    with differential(Differences()) as differences:
        yield differences
    assert not differences.found, "\n\n".join(differences.found)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Backend]:
    """A migrated database with the runtime around it (bus, in-process worker)."""
    name: str = request.param
    var_dir = tmp_path_factory.mktemp(f"var-{name}")
    redis_url: str | None = None
    if name == "postgres":
        try:
            database_url = await create_postgres_database()
        except Exception as exc:
            unavailable("PostgreSQL", exc)
        try:
            await check_redis()
        except Exception as exc:
            await drop_postgres_database(database_url)
            unavailable("Redis", exc)
        redis_url = REDIS_URL
    else:
        database_url = f"sqlite://{(var_dir / 'settle.sqlite3').as_posix()}"
    settings = make_settings(var_dir, database_url, redis_url)
    configure_settings(settings)
    await migrate(database_url)
    runtime = await start_runtime(settings, in_process_worker=True, scheduler=False)
    try:
        yield Backend(name, settings, runtime)
    finally:
        await stop_runtime(runtime)
        configure_settings(None)
        # Tortoise caches insert/delete SQL per connection name, not per dialect;
        # the next backend reuses the name "default" with another dialect.
        EXECUTOR_CACHE.clear()
        if is_postgres(database_url):
            await drop_postgres_database(database_url)


async def _truncate_all(backend: Backend) -> None:
    conn = Tortoise.get_connection("default")
    tables = [model._meta.db_table for model in Tortoise.apps["settle"].values()]
    if backend.name == "postgres":
        quoted = ", ".join(f'"{table}"' for table in tables)
        await conn.execute_script(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
    else:
        # The audit log refuses deletes (migration 0007); between tests its triggers step
        # aside. PostgreSQL's TRUNCATE fires no row triggers, so it needs no such dance.
        append_only = importlib.import_module("settle.migrations.0007_payment_audit_append_only")
        statements = "".join(f'DELETE FROM "{table}";' for table in tables)
        await conn.execute_script(
            f"PRAGMA foreign_keys=OFF;{append_only.SQLITE_DOWN}{statements}"
            f"{append_only.SQLITE_UP}PRAGMA foreign_keys=ON;"
        )


@pytest.fixture
async def db(backend: Backend) -> AsyncIterator[Backend]:
    """A test's database: empty at the start; emptied again afterwards."""
    configure_settings(backend.settings)
    # Every test's client has the same address; each starts with nothing counted.
    await reset_counts(backend.settings)
    yield backend
    await backend.drain()
    await _truncate_all(backend)


@pytest.fixture
def settings(db: Backend) -> Settings:
    return db.settings


@pytest.fixture
async def http(db: Backend) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(db.settings, manage_runtime=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as client:
        yield client


@pytest.fixture
def gql(http: httpx.AsyncClient) -> GraphQLClient:
    return GraphQLClient(http)


@pytest.fixture
async def owner(db: Backend) -> Account:
    return await create_agency(agency_name="Northwind Studio", name="Olive Owner")


@pytest.fixture
async def rival(db: Backend) -> Account:
    """The owner of another agency, who must never see the first one's rows."""
    return await create_agency(agency_name="Rival Works", name="Rita Rival")


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
