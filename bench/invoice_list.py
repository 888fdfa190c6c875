"""A page of invoices: what reading one response in one snapshot costs.

`invoices(first: 100) { ... lineItems { ... } client { name } }` over 100
issued invoices of three lines each. Two `settle serve` processes share one
database: one reads each query operation in one read-only REPEATABLE READ
transaction (the default), the other runs with ``SETTLE_SNAPSHOT_READS=false``,
each statement on its own, as before. The second is the baseline: the same
code, data, machine and moment, interleaved round by round, so the ratio is
what the snapshot adds (``BEGIN ... READ ONLY`` and ``COMMIT``, and a
connection held for the whole operation instead of taken for each statement).

    uv run python bench/invoice_list.py [--requests 100] [--concurrency 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx
from _common import (
    SIGN_UP,
    Api,
    add_service_arguments,
    free_port,
    ms,
    percentile,
    print_table,
    stack,
    wait_ready,
)

from settle.core.db import snapshot_slots
from settle.core.settings import Settings

DESCRIPTION = "A page of 100 invoices with lines and clients, with and without a read snapshot."
INVOICES = 100
LINES = 3

CREATE_CLIENT = """
mutation {
  createClient(input: {name: "Acme Ltd", email: "billing@acme.example", currency: "USD"}) {
    ... on Client { id }
  }
}
"""
CREATE_INVOICE = """
mutation Draft($input: CreateInvoiceInput!) {
  createInvoice(input: $input) { __typename ... on Invoice { id } }
}
"""
FINALIZE_INVOICE = """
mutation Finalize($id: ID!) { finalizeInvoice(id: $id) { __typename } }
"""
LIST = """
query Page {
  invoices(first: 100) {
    totalCount
    edges {
      node {
        id number status issueDate dueDate
        total { amount currency } amountDue { amount }
        lineItems { description quantity unitPrice { amount } amount { amount } }
        client { name }
      }
    }
  }
}
"""


async def issued_invoices(http: httpx.AsyncClient) -> str:
    """Sign up and issue ``INVOICES`` invoices of ``LINES`` lines; returns the owner's token."""
    api = Api(http)
    api.token = (await api.execute(SIGN_UP))["signUp"]["token"]
    client_id = (await api.execute(CREATE_CLIENT))["createClient"]["id"]
    gate = asyncio.Semaphore(8)

    async def one(index: int) -> None:
        lines = [
            {"description": f"Work {index}.{n}", "quantity": "1.5", "unitPrice": "120.00"}
            for n in range(LINES)
        ]
        async with gate:
            draft = await api.execute(
                CREATE_INVOICE, {"input": {"clientId": client_id, "lines": lines}}
            )
            invoice_id = draft["createInvoice"]["id"]
            issued = await api.execute(FINALIZE_INVOICE, {"id": invoice_id})
        if issued["finalizeInvoice"]["__typename"] != "Invoice":
            raise SystemExit(f"finalizeInvoice answered {issued}")

    await asyncio.gather(*(one(i) for i in range(INVOICES)))
    assert api.token is not None
    return api.token


class Server:
    """One `settle serve` and its lanes: one client with one kept-alive connection each."""

    def __init__(self, name: str, lanes: list[httpx.AsyncClient], token: str) -> None:
        self.name = name
        self.lanes = lanes
        self.headers = {"Authorization": f"Bearer {token}"}
        self.latencies: list[float] = []
        self.wall = 0.0
        self.body: Any = None

    async def _one(self, lane: httpx.AsyncClient) -> float:
        started = time.perf_counter()
        response = await lane.post("/graphql", json={"query": LIST}, headers=self.headers)
        elapsed = time.perf_counter() - started
        body = response.json()
        if response.status_code != 200 or body.get("errors"):
            raise SystemExit(f"{self.name} answered {response.status_code}: {body}")
        page = body["data"]["invoices"]
        if len(page["edges"]) != INVOICES or any(
            len(edge["node"]["lineItems"]) != LINES for edge in page["edges"]
        ):
            raise SystemExit(f"{self.name} answered an incomplete page")
        if self.body is None:
            self.body = body
        elif body != self.body:
            raise SystemExit(f"{self.name} answered differently from one request to the next")
        return elapsed

    async def round(self, requests: int, concurrency: int, *, record: bool = True) -> None:
        """``requests`` queries, ``concurrency`` in flight at once (one per lane)."""
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(requests):
            queue.put_nowait(index)
        timings: list[float] = []

        async def lane_loop(lane: httpx.AsyncClient) -> None:
            while not queue.empty():
                queue.get_nowait()
                timings.append(await self._one(lane))

        started = time.perf_counter()
        await asyncio.gather(*(lane_loop(lane) for lane in self.lanes[:concurrency]))
        if record:
            self.wall += time.perf_counter() - started
            self.latencies += timings


def _row(label: str, server: Server) -> list[str]:
    figures = [ms(percentile(server.latencies, p)) for p in (50, 95, 99)]
    return [label, *figures, f"{len(server.latencies) / server.wall:.1f}/s"]


def _ratio(snapshot: Server, plain: Server) -> list[str]:
    ratios = [
        f"{percentile(snapshot.latencies, p) / percentile(plain.latencies, p):.2f}x"
        for p in (50, 95, 99)
    ]
    rates = (len(snapshot.latencies) / snapshot.wall) / (len(plain.latencies) / plain.wall)
    return ["ratio snapshot / baseline", *ratios, f"{rates:.2f}x"]


async def run(args: argparse.Namespace) -> None:
    async with stack(args.postgres_url, args.redis_url) as running, AsyncExitStack() as opened:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=120) as http:
            print(f"issuing {INVOICES} invoices of {LINES} lines ...", flush=True)
            token = await issued_invoices(http)
        plain_url = f"http://127.0.0.1:{free_port()}"
        running.spawn(
            "serve-plain",
            ["-m", "settle", "serve", "--port", plain_url.rsplit(":", 1)[1]],
            extra_env={"SETTLE_SNAPSHOT_READS": "false"},
        )
        await wait_ready(plain_url)

        async def lanes(base_url: str, count: int) -> list[httpx.AsyncClient]:
            return [
                await opened.enter_async_context(
                    httpx.AsyncClient(
                        base_url=base_url, limits=httpx.Limits(max_connections=1), timeout=120
                    )
                )
                for _ in range(count)
            ]

        results: dict[int, tuple[Server, Server]] = {}
        for concurrency in (1, args.concurrency):
            snapshot = Server("snapshot", await lanes(running.base_url, concurrency), token)
            plain = Server("baseline", await lanes(plain_url, concurrency), token)
            # Warm up: open the connections and the pools, compile what the path uses.
            for server in (snapshot, plain):
                await server.round(concurrency, concurrency, record=False)
            # Interleaved, and each side first in turn, so both meet the same machine.
            for round_number in range(args.rounds):
                order = (snapshot, plain) if round_number % 2 == 0 else (plain, snapshot)
                for server in order:
                    await server.round(args.requests, concurrency)
            if snapshot.body != plain.body:
                raise SystemExit("the two servers answered differently")
            results[concurrency] = (snapshot, plain)

    # The stack's processes run with the default pool (it passes no SETTLE_ variable of ours).
    pool_size = int(Settings.model_fields["database_pool_size"].default)
    rows: list[list[str]] = []
    for concurrency, (snapshot, plain) in results.items():
        what = "one at a time" if concurrency == 1 else f"{concurrency} at once"
        rows += [
            _row(f"{what}, baseline (no snapshot)", plain),
            _row(f"{what}, snapshot", snapshot),
            _ratio(snapshot, plain),
        ]
    print_table(
        f"invoices(first: {INVOICES}) with lineItems and client: {args.requests} requests"
        f" x {args.rounds} rounds per side (pool {pool_size}, {snapshot_slots(pool_size)}"
        " snapshots at once)",
        ["", "p50", "p95", "p99", "rate"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument(
        "--requests", type=int, default=100, help="requests per side and round (default 100)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=40, help="requests in flight at once (default 40)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    add_service_arguments(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
