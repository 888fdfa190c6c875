"""Resuming across processes: two API replicas, a replica restarted, Redis restarted.

Each test runs its own redis-server on a free port (so it may stop and start it)
and two ``settle serve`` processes on one PostgreSQL database, and subscribes
over real websockets.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from gql.transport.exceptions import TransportQueryError

from tests.conftest import wait_for
from tests.e2e.test_processes import ROOT, SIGN_UP, _free_port, _spawn
from tests.fixtures.services import create_postgres_database, drop_postgres_database, unavailable
from tests.fixtures.websocket import Subscription
from tests.subscriptions.test_resume import EXPIRED

ACTIVITY = """
subscription Activity($after: String) {
  activityAdded(after: $after) { summary cursor }
}
"""

CREATE_CLIENT = """
mutation CreateClient($name: String!) {
  createClient(input: {name: $name}) { __typename }
}
"""


class RedisServer:
    """A redis-server of the test's own, stopped and started again on the same port."""

    def __init__(self, directory: Path, *, persistent: bool) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.persistent = persistent
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        # With persistence, every write is in the append-only file before Redis answers,
        # as the README asks of a production Redis; without, a restart loses everything.
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        if not self.persistent:
            persistence = ["--appendonly", "no"]
        return subprocess.Popen(
            [
                self.binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.directory), "--save", ""),
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        self.process = self._spawn()
        client = aioredis.Redis.from_url(self.url)

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except (OSError, aioredis.ConnectionError):
                return False

        try:
            await wait_for(answers, timeout=15)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # a clean shutdown: the append-only file is complete
            self.process.wait(timeout=15)
            self.process = None


class Stack:
    """Two API replicas on one database and one Redis, started and stopped by the test."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.replicas: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    async def start(self, name: str) -> None:
        port = _free_port()
        log = self.logs / f"{name}-{len(list(self.logs.glob(f'{name}*.log')))}.log"
        self.replicas[name] = (_spawn(["serve", "--port", str(port)], self.env, log), port)
        async with httpx.AsyncClient(base_url=self.base(name), timeout=5) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(ready, timeout=180)

    def stop(self, name: str) -> None:
        process, _ = self.replicas.pop(name)
        process.terminate()
        process.wait(timeout=15)

    def base(self, name: str) -> str:
        return f"http://127.0.0.1:{self.replicas[name][1]}"

    def ws(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.replicas[name][1]}/graphql"

    async def graphql(
        self, name: str, query: str, variables: dict[str, Any], token: str | None = None
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=self.base(name), timeout=30) as http:
            body = (
                await http.post(
                    "/graphql", json={"query": query, "variables": variables}, headers=headers
                )
            ).json()
        assert "errors" not in body, body
        return body["data"]

    async def create_client(self, name: str, token: str, client_name: str) -> str:
        data = await self.graphql(name, CREATE_CLIENT, {"name": client_name}, token)
        assert data == {"createClient": {"__typename": "Client"}}
        return f"Client {client_name} created"

    def subscribe(self, name: str, token: str, after: str | None = None) -> Subscription:
        return Subscription(
            self.ws(name), ACTIVITY, "activityAdded", token=token, variables={"after": after}
        )

    def stop_all(self) -> None:
        for name in list(self.replicas):
            self.stop(name)


async def migrate(env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "settle",
        "migrate",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, output.decode()


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    try:
        url = await create_postgres_database()
    except Exception as exc:
        unavailable("PostgreSQL", exc)
    try:
        yield url
    finally:
        await drop_postgres_database(url)


def environment(database_url: str, redis: RedisServer, var_dir: Path) -> dict[str, str]:
    import os

    env = {key: value for key, value in os.environ.items() if not key.startswith("SETTLE_")}
    env.update(
        {
            "SETTLE_DATABASE_URL": database_url,
            "SETTLE_REDIS_URL": redis.url,
            "SETTLE_VAR_DIR": str(var_dir),
            "SETTLE_SECRET_KEY": "settle-e2e-secret-for-tests-only",
            "SETTLE_RATE_LIMITS_ENABLED": "false",
        }
    )
    return env


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Stacks and Redis servers to stop when the test ends, whatever happened."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, Stack):
            thing.stop_all()
        else:
            thing.stop()


async def stack_with(
    database_url: str, tmp_path: Path, cleanup: list[Any], *, persistent: bool
) -> tuple[Stack, RedisServer, str]:
    """A private Redis, two replicas A and B, and the token of a new agency's owner."""
    redis = RedisServer(tmp_path / "redis", persistent=persistent)
    cleanup.append(redis)
    await redis.start()
    env = environment(database_url, redis, tmp_path / "var")
    await migrate(env)
    stack = Stack(env, tmp_path)
    cleanup.append(stack)
    await asyncio.gather(stack.start("a"), stack.start("b"))
    token = (await stack.graphql("a", SIGN_UP, {}))["signUp"]["token"]
    return stack, redis, token


async def summaries(subscription: Subscription, count: int) -> list[str]:
    return [(await subscription.next(timeout=30))["summary"] for _ in range(count)]


async def test_a_client_resumes_on_another_replica_and_after_its_replica_restarts(
    database_url: str, tmp_path: Path, cleanup: list[Any]
) -> None:
    # given replicas A and B, and a subscriber on A that heard a client made on B
    stack, _, token = await stack_with(database_url, tmp_path, cleanup, persistent=True)
    async with stack.subscribe("a", token) as on_a:
        made = await stack.create_client("b", token, "One")
        event = await on_a.next(timeout=30)
        assert event["summary"] == made
        cursor = event["cursor"]

        # when replica A stops (its socket goes with it) and clients are made on B
        stack.stop("a")
    missed = [await stack.create_client("b", token, name) for name in ("Two", "Three")]

    # then the client, back on B with its cursor, hears what it missed, then live events
    async with stack.subscribe("b", token, after=cursor) as on_b:
        assert await summaries(on_b, 2) == missed
        later = await stack.create_client("b", token, "Four")
        assert await summaries(on_b, 1) == [later]
        fence = await stack.create_client("b", token, "Five")
        assert await summaries(on_b, 1) == [fence]

    # and on A started again, the same cursor gives the same events, in the same order
    await stack.start("a")
    async with stack.subscribe("a", token, after=cursor) as on_a:
        assert await summaries(on_a, 4) == [*missed, later, fence]


async def test_nothing_is_lost_when_redis_restarts_with_its_append_only_file(
    database_url: str, tmp_path: Path, cleanup: list[Any]
) -> None:
    # given a subscriber that stays on A, and one on B that goes away after its first event
    stack, redis, token = await stack_with(database_url, tmp_path, cleanup, persistent=True)
    async with stack.subscribe("a", token) as staying:
        async with stack.subscribe("b", token) as leaving:
            first = await stack.create_client("b", token, "One")
            assert await summaries(staying, 1) == [first]
            event = await leaving.next(timeout=30)
            assert event["summary"] == first

        # when Redis stops, a client is made while it is down (committed, its event held
        # in the outbox), Redis starts again, and another client is made
        redis.stop()
        during = await stack.create_client("b", token, "Two")
        await redis.start()
        after = await stack.create_client("b", token, "Three")

        # then the subscriber that stayed hears both, in order, without subscribing again
        assert await summaries(staying, 2) == [during, after]

        # and the one that left, back with its cursor, hears them too, then live events
        async with stack.subscribe("a", token, after=event["cursor"]) as back:
            assert await summaries(back, 2) == [during, after]
            fence = await stack.create_client("a", token, "Four")
            assert await summaries(back, 1) == [fence]
            assert await summaries(staying, 1) == [fence]


async def test_a_redis_restart_that_lost_the_stream_is_cursor_expired_not_silence(
    database_url: str, tmp_path: Path, cleanup: list[Any]
) -> None:
    # given a Redis without persistence, and a subscriber on A that heard one event
    stack, redis, token = await stack_with(database_url, tmp_path, cleanup, persistent=False)
    async with stack.subscribe("a", token) as staying:
        first = await stack.create_client("b", token, "One")
        event = await staying.next(timeout=30)
        assert event["summary"] == first

        # when Redis restarts empty
        redis.stop()
        await redis.start()

        # then the open subscription ends with CURSOR_EXPIRED (refetch), once the
        # replica is back on Redis: what it may have missed is unknowable
        with pytest.raises(TransportQueryError) as raised:
            await staying.next(timeout=30)
        assert raised.value.errors == EXPIRED

    # and a client back with its cursor is told the same, on either replica
    for replica in ("a", "b"):
        async with stack.subscribe(replica, token, after=event["cursor"]) as back:
            with pytest.raises(TransportQueryError) as raised:
                await back.next(timeout=30)
            assert raised.value.errors == EXPIRED
