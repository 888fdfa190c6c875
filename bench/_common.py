"""What both benchmarks share: a throwaway stack of settle processes, sandbox payments, figures.

A bench creates its own PostgreSQL database and drops it at the end, and uses
one Redis database that must be empty when it starts (it is emptied at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import redis.asyncio as aioredis

from settle.core.settings import Settings
from settle.gateways.sandbox import SIGNATURE_HEADER, SandboxGateway

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# Not the test suite's Redis databases (0 and 13): a bench may run while tests do.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("SETTLE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a PostgreSQL server to create the bench's database on (any database of it)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("SETTLE_BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="an empty Redis database for the run; emptied at the end",
    )
    parser.add_argument(
        "--code",
        type=Path,
        default=ROOT,
        help="run the settle processes from this checkout (to measure another commit)",
    )


# --- the stack -----------------------------------------------------------------------------


@dataclass
class Stack:
    """A migrated database, `settle serve` on a free port, and optionally workers."""

    database_url: str
    redis_url: str
    env: dict[str, str]
    base_url: str
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    code: Path = ROOT

    def spawn(
        self, name: str, args: Sequence[str], extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a process (``python -m settle ...`` or a script) logging to ``<logs>/<name>``.

        ``extra_env`` adds to (or overrides) the stack's environment for this process.
        """
        env = {**self.env, **(extra_env or {})}
        with (self.logs / f"{name}.log").open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, *args], cwd=self.code, env=env, stdout=out, stderr=out
            )
        self.processes.append(process)
        return process

    def settings(self) -> Settings:
        """The settings the processes run with (to sign sandbox webhooks as they verify them)."""
        return Settings(
            database_url=self.env["SETTLE_DATABASE_URL"],
            redis_url=self.env["SETTLE_REDIS_URL"],
            secret_key=self.env["SETTLE_SECRET_KEY"],
            public_base_url=self.env["SETTLE_PUBLIC_BASE_URL"],
        )


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def asyncpg_url(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


async def _create_database(server_url: str) -> str:
    name = f"settle_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(asyncpg_url(server_url), timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(server_url, name)


async def _drop_database(server_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(asyncpg_url(server_url), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _run(args: Sequence[str], env: dict[str, str], code: Path = ROOT) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=code,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{output.decode()}")


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], what: str, *, timeout: float = 60.0
) -> None:
    """Poll ``predicate`` until it is true; give up (exit) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout:.0f}s")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def stack(
    postgres_url: str,
    redis_url: str,
    *,
    code: Path = ROOT,
    serve_args: Sequence[str] = (),
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """A fresh database, migrated, and `settle serve` ready on a free port; all gone after.

    ``code`` is the checkout the processes run from; ``serve_args`` and ``extra_env``
    go to `settle serve` only.
    """
    redis = aioredis.Redis.from_url(redis_url)
    if await redis.dbsize():
        await redis.aclose()
        raise SystemExit(f"{redis_url} is not empty; pass an empty database with --redis-url")
    try:
        database_url = await _create_database(postgres_url)
        with tempfile.TemporaryDirectory(prefix="settle-bench-") as var_dir:
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLE_")}
            env.update(
                {
                    "SETTLE_DATABASE_URL": database_url,
                    "SETTLE_REDIS_URL": redis_url,
                    "SETTLE_VAR_DIR": var_dir,
                    "SETTLE_SECRET_KEY": secrets.token_urlsafe(32),
                    "SETTLE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                    # One token sends every request of a run: a per-user rate limit
                    # would measure the limit, not the work.
                    "SETTLE_RATE_LIMITS_ENABLED": "false",
                }
            )
            running = Stack(
                database_url, redis_url, env, f"http://127.0.0.1:{port}", Path(var_dir), code=code
            )
            try:
                await _run(["-m", "settle", "migrate"], env, code)
                running.spawn(
                    "serve",
                    ["-m", "settle", "serve", "--port", str(port), *serve_args],
                    extra_env,
                )
                await wait_ready(running.base_url)
                yield running
            finally:
                _stop(running.processes)
                await _drop_database(postgres_url, database_url)
    finally:
        await redis.flushdb()
        await redis.aclose()


async def wait_ready(base_url: str) -> None:
    """Wait until the `settle serve` at ``base_url`` answers ``/readyz`` with 200."""
    async with httpx.AsyncClient(base_url=base_url) as http:

        async def ready() -> bool:
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        # Generous: with --workers, several processes import the app at once.
        await wait_until(ready, f"settle serve at {base_url}", timeout=300)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- sandbox payments through the API ------------------------------------------------------

SIGN_UP = """
mutation {
  signUp(input: {agencyName: "Bench Studio", name: "Bea Owner",
                 email: "bea@bench.example", password: "correct horse"}) {
    ... on AuthPayload { token user { agency { id } } }
  }
}
"""
CREATE_CLIENT = """
mutation {
  createClient(input: {name: "Acme Ltd", email: "billing@acme.example", currency: "USD"}) {
    ... on Client { id }
  }
}
"""
CREATE_CONTACT = """
mutation Contact($clientId: ID!) {
  createContact(input: {clientId: $clientId, name: "Ada Acme", email: "ada@acme.example",
                        isPrimary: true}) {
    ... on Contact { id }
  }
}
"""
CREATE_PROJECT = """
mutation Project($clientId: ID!) {
  createProject(input: {clientId: $clientId, name: "Website"}) { ... on Project { id } }
}
"""
CREATE_MILESTONE = """
mutation Milestone($projectId: ID!, $title: String!) {
  createMilestone(input: {projectId: $projectId, title: $title, amount: "250.00"}) {
    ... on Milestone { id }
  }
}
"""
MILESTONE_STEP = """
mutation Step($id: ID!) { %s(id: $id) { __typename } }
"""
MILESTONE_INVOICED = """
query Invoiced($id: ID!) { milestone(id: $id) { invoice { id } } }
"""
PAY_MILESTONES = """
mutation Pay($ids: [ID!]!) {
  payMilestones(milestoneIds: $ids, provider: SANDBOX) {
    __typename
    ... on PaymentCheckout { payment { id } }
  }
}
"""


@dataclass(frozen=True)
class Payments:
    agency_id: str
    payment_ids: list[str]
    token: str  # the signed-up owner's


class Api:
    """GraphQL over HTTP as one signed-in user."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.token: str | None = None

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        body = response.json()
        if response.status_code != 200 or body.get("errors"):
            raise SystemExit(f"GraphQL failed: {body}")
        return body["data"]


async def sandbox_payments(
    http: httpx.AsyncClient, count: int, *, wait_for_invoices: bool
) -> Payments:
    """``count`` approved milestones, each with a pending sandbox payment of its own.

    With ``wait_for_invoices`` the approval's invoice is left to a worker (as in
    production); otherwise payMilestones issues it on the spot.
    """
    api = Api(http)
    signed_up = (await api.execute(SIGN_UP))["signUp"]
    api.token = signed_up["token"]
    client_id = (await api.execute(CREATE_CLIENT))["createClient"]["id"]
    await api.execute(CREATE_CONTACT, {"clientId": client_id})
    project_id = (await api.execute(CREATE_PROJECT, {"clientId": client_id}))["createProject"]["id"]
    gate = asyncio.Semaphore(8)

    async def one(index: int) -> str:
        async with gate:
            created = await api.execute(
                CREATE_MILESTONE, {"projectId": project_id, "title": f"Stage {index + 1}"}
            )
            milestone_id: str = created["createMilestone"]["id"]
            for step in ("startMilestone", "submitMilestone", "approveMilestone"):
                moved = await api.execute(MILESTONE_STEP % step, {"id": milestone_id})
                if moved[step]["__typename"] != "Milestone":
                    raise SystemExit(f"{step} answered {moved}")
        if wait_for_invoices:

            async def invoiced() -> bool:
                found = await api.execute(MILESTONE_INVOICED, {"id": milestone_id})
                return found["milestone"]["invoice"] is not None

            await wait_until(invoiced, "the approval's invoice")
        async with gate:
            paying = (await api.execute(PAY_MILESTONES, {"ids": [milestone_id]}))["payMilestones"]
        if paying["__typename"] != "PaymentCheckout":
            raise SystemExit(f"payMilestones answered {paying}")
        payment_id: str = paying["payment"]["id"]
        return payment_id

    payment_ids = await asyncio.gather(*(one(i) for i in range(count)))
    return Payments(signed_up["user"]["agency"]["id"], list(payment_ids), api.token)


async def payment_rows(database_url: str, payment_ids: Sequence[str]) -> list[dict[str, Any]]:
    """What a sandbox webhook about each payment carries."""
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        rows = await conn.fetch(
            "SELECT id::text AS id, provider_order_id, amount_minor, currency"
            " FROM payment WHERE id = ANY($1::uuid[])",
            list(payment_ids),
        )
    finally:
        await conn.close()
    by_id = {row["id"]: dict(row) for row in rows}
    return [by_id[payment_id] for payment_id in payment_ids]


def signed_webhook(
    gateway: SandboxGateway, payment: dict[str, Any], event_id: str
) -> tuple[bytes, dict[str, str]]:
    """A sandbox ``payment.succeeded`` delivery as the hosted page's Pay button sends it."""
    body = gateway.event_body(
        "payment.succeeded",
        id=event_id,
        payment_id=payment["id"],
        order_id=payment["provider_order_id"],
        payment_ref=f"sbx_pay_{payment['id']}",
        amount_minor=payment["amount_minor"],
        currency=payment["currency"],
        failure_reason=None,
    )
    return body, {SIGNATURE_HEADER: gateway.sign(body), "Content-Type": "application/json"}


# --- figures --------------------------------------------------------------------------------


def percentile(samples: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (p in 0..100) of non-empty ``samples``."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    line = "  ".join(
        h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)
    )
    print(line)
    print("-" * len(line))
    for row in rows:
        print(
            "  ".join(
                str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
                for i, c in enumerate(row)
            )
        )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --- a light load generator -----------------------------------------------------------------


class Lane:
    """One kept-alive HTTP/1.1 connection sending one request at a time, as wrk does.

    A few lines over asyncio streams rather than an HTTP library: the client shares
    the machine with the server, and the less CPU it takes the more the figures are
    the server's. It reads exactly what uvicorn writes: a status line, headers with a
    Content-Length, the body.
    """

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Lane:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()

    @staticmethod
    def post_request(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
        """The bytes of one POST, built once and sent many times."""
        lines = [
            f"POST {path} HTTP/1.1",
            "Host: bench",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request``; returns the status and the body."""
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)
