"""A page of 100 invoices: Settle against the floor of the same answer.

`invoices(first: 100) { edges { node { id number status issueDate dueDate total
subtotal client { name } lineItems { description quantity unitPrice amount } } } }`
over 100 issued invoices of three lines each, sent by ``--connections`` kept-alive
connections at once for ``--seconds`` a round, as wrk does.

**Floor:** `_raw_list.py`, a Starlette app on uvicorn reading the same rows from
Settle's own tables with asyncpg in two statements and writing the same JSON
(checked equal after sorting keys). Settle and the floor run side by side,
interleaved round by round, each first in turn.

Statements per request are counted by a PostgreSQL wire-protocol counter put
between a third `settle serve` (same code and settings) and the server: each
simple query and each execute of a prepared statement is one.

    uv run python bench/list.py [--connections 16] [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from _common import (
    Api,
    Lane,
    add_service_arguments,
    free_port,
    ms,
    percentile,
    print_table,
    stack,
    wait_ready,
)
from invoice_list import issued_invoices

DESCRIPTION = "A page of 100 invoices with lines and clients: Settle against a raw floor."
HERE = Path(__file__).resolve().parent

LIST = """
query Page {
  invoices(first: 100) {
    edges {
      node {
        id number status issueDate dueDate
        total { amount currency } subtotal { amount currency }
        client { name }
        lineItems { description quantity unitPrice { amount currency } amount { amount currency } }
      }
    }
  }
}
"""
ME = "query { me { agency { id } } }"


@dataclass
class Side:
    """One server under load, and what it answered."""

    name: str
    base_url: str
    request: bytes
    pid: int
    latencies: list[float] = field(default_factory=list)
    answered: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    body: bytes | None = None

    async def round(self, connections: int, seconds: float, *, record: bool = True) -> None:
        lanes = [await Lane(self.base_url).open() for _ in range(connections)]
        deadline = time.perf_counter() + seconds
        timings: list[float] = []

        async def loop(lane: Lane) -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status, body = await lane.send(self.request)
                timings.append(time.perf_counter() - started)
                if status != 200:
                    raise SystemExit(f"{self.name} answered {status}: {body[:500]!r}")
                if self.body is None:
                    self.body = body

        started = time.perf_counter()
        cpu = cpu_seconds(self.pid)
        try:
            await asyncio.gather(*(loop(lane) for lane in lanes))
        finally:
            for lane in lanes:
                await lane.close()
        if record:
            self.wall += time.perf_counter() - started
            self.cpu += cpu_seconds(self.pid) - cpu
            self.latencies += timings
            self.answered += len(timings)

    @property
    def rate(self) -> float:
        return self.answered / self.wall

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / self.answered


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a server process and its children (its workers).

    On a machine shared with other work, latency swings with the neighbours' load;
    the CPU a request costs the server does not.
    """
    pids = [pid] + [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _parent(entry) == pid
    ]
    total = 0
    for each in pids:
        with suppress(OSError):
            fields = (Path("/proc") / str(each) / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _parent(entry: Path) -> int:
    try:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def canonical(body: bytes) -> bytes:
    return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()


# --- counting statements -------------------------------------------------------------------

SSL_REQUEST = 80877103


class StatementCounter:
    """A TCP proxy to PostgreSQL counting what its clients ask it to run.

    It refuses TLS (answers ``N`` to an SSLRequest, as a server without TLS does)
    so it can read the messages: ``Q`` (a simple query, which may hold several
    statements, such as asyncpg's reset) and ``E`` (an execute of a prepared
    statement).
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.simple = 0
        self.executes = 0
        self.resets = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def statements(self) -> int:
        return self.simple + self.executes

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        pump = asyncio.create_task(self._pump(up_reader, writer))
        try:
            while True:
                head = await reader.readexactly(8)
                length, code = struct.unpack("!ii", head)
                if length == 8 and code == SSL_REQUEST:
                    writer.write(b"N")
                    continue
                up_writer.write(head + await reader.readexactly(length - 8))
                break
            while True:
                kind = await reader.readexactly(1)
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                payload = await reader.readexactly(length - 4)
                if kind == b"Q":
                    self.simple += 1
                    if payload.startswith(b"SELECT pg_advisory_unlock_all()"):
                        self.resets += 1
                elif kind == b"E":
                    self.executes += 1
                up_writer.write(kind + struct.pack("!i", length) + payload)
                if kind == b"X":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up_writer.close()
            pump.cancel()
            with suppress(asyncio.CancelledError):
                await pump
            writer.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


async def statements_per_request(
    running: Any, token: str, requests: int, serve_args: list[str]
) -> tuple[float, float]:
    """Statements and pool resets per request, through a counting proxy."""
    parts = urlsplit(running.database_url)
    counter = StatementCounter(parts.hostname or "127.0.0.1", parts.port or 5432)
    await counter.start()
    proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{counter.port}"))
    port = free_port()
    process = running.spawn(
        "serve-counted",
        ["-m", "settle", "serve", "--port", str(port), *serve_args],
        extra_env={"SETTLE_DATABASE_URL": proxied},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base_url)
        request = Lane.post_request(
            "/graphql", json.dumps({"query": LIST}).encode(), {"Authorization": f"Bearer {token}"}
        )
        lane = await Lane(base_url).open()
        for _ in range(3):  # warm up: connections opened, types introspected
            await lane.send(request)
        statements, resets = counter.statements, counter.resets
        for _ in range(requests):
            await lane.send(request)
        await lane.close()
        return (
            (counter.statements - statements) / requests,
            (counter.resets - resets) / requests,
        )
    finally:
        process.terminate()
        process.wait()
        await counter.stop()


async def run(args: argparse.Namespace) -> None:
    serve_args = ["--workers", str(args.workers)] if args.workers else []
    serve_env = dict(item.split("=", 1) for item in args.serve_env)
    async with stack(
        args.postgres_url,
        args.redis_url,
        code=args.code,
        serve_args=serve_args,
        extra_env=serve_env,
    ) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=120) as http:
            print("issuing 100 invoices of 3 lines ...", flush=True)
            token = await issued_invoices(http)
            api = Api(http)
            api.token = token
            agency_id = (await api.execute(ME))["me"]["agency"]["id"]
        raw_port = free_port()
        raw_process = running.spawn(
            "raw",
            [
                str(HERE / "_raw_list.py"),
                "--database-url",
                running.database_url,
                "--port",
                str(raw_port),
                "--agency-id",
                agency_id,
            ],
        )
        raw_url = f"http://127.0.0.1:{raw_port}"
        await wait_until_up(raw_url)
        body = json.dumps({"query": LIST}).encode()
        settle_pid = running.processes[0].pid
        settle = Side(
            "settle",
            running.base_url,
            Lane.post_request("/graphql", body, {"Authorization": f"Bearer {token}"}),
            settle_pid,
        )
        raw = Side("raw", raw_url, Lane.post_request("/graphql", body), raw_process.pid)
        single: dict[str, Side] = {
            "settle": Side("settle", settle.base_url, settle.request, settle_pid),
            "raw": Side("raw", raw.base_url, raw.request, raw_process.pid),
        }
        for side in (settle, raw):
            await side.round(args.connections, 2.0, record=False)
        if settle.body is None or raw.body is None or canonical(settle.body) != canonical(raw.body):
            raise SystemExit(
                "the floor answers differently:\n"
                f"settle {settle.body!r:.600}\nraw {raw.body!r:.600}"
            )
        for number in range(args.rounds):
            order = (settle, raw) if number % 2 == 0 else (raw, settle)
            for side in order:
                await side.round(args.connections, args.seconds)
            order1 = (single["settle"], single["raw"])
            for side in order1 if number % 2 == 0 else reversed(order1):
                await side.round(1, args.seconds / 2)
        statements, resets = await statements_per_request(running, token, 20, serve_args)

    rows = []
    for label, pair in (
        (f"{args.connections} connections", (raw, settle)),
        ("1 connection", (single["raw"], single["settle"])),
    ):
        floor, ours = pair
        for side in pair:
            rows.append(
                [
                    f"{label}, {side.name}",
                    f"{side.rate:.1f}/s",
                    ms(percentile(side.latencies, 50)),
                    ms(percentile(side.latencies, 99)),
                    ms(side.cpu_per_request),
                ]
            )
        rows.append(
            [
                f"{label}, settle / raw",
                f"{floor.rate / ours.rate:.1f}x slower",
                f"{percentile(ours.latencies, 50) / percentile(floor.latencies, 50):.1f}x",
                f"{percentile(ours.latencies, 99) / percentile(floor.latencies, 99):.1f}x",
                f"{ours.cpu_per_request / floor.cpu_per_request:.1f}x",
            ]
        )
    print_table(
        f"invoices(first: 100) with lines and client; {args.rounds} interleaved rounds of "
        f"{args.seconds:.0f} s per side ({args.connections} connections) and "
        f"{args.seconds / 2:.0f} s (1 connection)",
        ["", "rate", "p50", "p99", "server CPU/request"],
        rows,
    )
    print(
        f"\nstatements per request (Settle): {statements:.1f}, of which pool resets: {resets:.1f};"
        " the floor: 2"
    )


async def wait_until_up(base_url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            lane = await Lane(base_url).open()
        except OSError:
            await asyncio.sleep(0.1)
            continue
        await lane.close()
        return
    raise SystemExit(f"nothing listens at {base_url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--connections", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds a round (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (default 3)")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="`settle serve --workers N` (default: none given, the server's own default)",
    )
    parser.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="SETTLE_NAME=VALUE",
        help="a setting for `settle serve` (repeatable), e.g. SETTLE_GC_FREEZE=false",
    )
    add_service_arguments(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
