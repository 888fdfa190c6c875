"""Webhook acknowledgement: N concurrent signed sandbox deliveries against one `settle serve`.

Each delivery is verified, stored under its (provider, event id), its
processing job sent to Redis after commit, and answered 200: what a gateway
waits for. No worker runs, so nothing competes with the API for the database.
The baseline, in the same run against the same server process and over the
same connections, is N concurrent ``GET /healthz`` (routing, middleware and the
HTTP round trip, no database): the ratio is what acknowledging a webhook adds.

    uv run python bench/webhook_ack.py [--n 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import asyncpg
import httpx
from _common import (
    add_service_arguments,
    asyncpg_url,
    ms,
    payment_rows,
    percentile,
    print_table,
    sandbox_payments,
    signed_webhook,
    stack,
)

from settle.gateways.sandbox import SandboxGateway

DESCRIPTION = "Webhook acknowledgement latency under N concurrent deliveries, with a baseline."


async def _burst(
    lanes: list[httpx.AsyncClient],
    request: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
) -> list[float]:
    """One request per lane, all at once; each one's latency from its send to its whole answer."""

    async def timed(lane: httpx.AsyncClient, index: int) -> float:
        started = time.perf_counter()
        response = await request(lane, index)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"{response.request.url} answered {response.status_code}")
        if response.request.method == "POST" and response.json()["duplicate"] is not False:
            raise SystemExit(f"a delivery was taken for a duplicate: {response.json()}")
        return elapsed

    return list(await asyncio.gather(*(timed(lane, i) for i, lane in enumerate(lanes))))


async def run(args: argparse.Namespace) -> None:
    async with stack(args.postgres_url, args.redis_url) as running, AsyncExitStack() as opened:
        # One client and one kept-alive connection per concurrent request: httpx's pool
        # slows down sharply with hundreds of requests in one client, which would be
        # measured as server latency.
        lanes = [
            await opened.enter_async_context(
                httpx.AsyncClient(
                    base_url=running.base_url, limits=httpx.Limits(max_connections=1), timeout=120
                )
            )
            for _ in range(args.n)
        ]
        payments = await sandbox_payments(lanes[0], 1, wait_for_invoices=False)
        (payment,) = await payment_rows(running.database_url, payments.payment_ids)
        gateway = SandboxGateway(running.settings())

        def healthz(lane: httpx.AsyncClient, index: int) -> Awaitable[httpx.Response]:
            return lane.get("/healthz")

        def webhooks(label: str) -> Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]:
            # A distinct event id each, so every delivery is new and stored; signed before
            # the clock starts, as a gateway signs before it sends.
            signed = [
                signed_webhook(gateway, payment, f"bench_{label}_{index}")
                for index in range(args.n)
            ]

            def deliver(lane: httpx.AsyncClient, index: int) -> Awaitable[httpx.Response]:
                body, headers = signed[index]
                return lane.post("/webhooks/sandbox", content=body, headers=headers)

            return deliver

        # Warm up: open the connections, import and compile what each path uses.
        await _burst(lanes, healthz)
        await _burst(lanes, webhooks("warmup"))
        baseline: list[float] = []
        acknowledged: list[float] = []
        walls = {"healthz": 0.0, "webhook": 0.0}
        # Interleaved rounds, so both sides see the same machine at the same moments.
        for round_number in range(args.rounds):
            started = time.perf_counter()
            baseline += await _burst(lanes, healthz)
            walls["healthz"] += time.perf_counter() - started
            deliveries = webhooks(f"r{round_number}")
            started = time.perf_counter()
            acknowledged += await _burst(lanes, deliveries)
            walls["webhook"] += time.perf_counter() - started
        conn = await asyncpg.connect(asyncpg_url(running.database_url))
        try:
            stored = await conn.fetchval("SELECT count(*) FROM webhook_event")
        finally:
            await conn.close()
    if stored != args.n * (args.rounds + 1):
        raise SystemExit(f"{stored} webhook events stored, not {args.n * (args.rounds + 1)}")

    def row(name: str, samples: list[float], wall: float) -> list[str]:
        figures = [ms(percentile(samples, p)) for p in (50, 95, 99)]
        throughput = f"{len(samples) / wall:.0f}/s"
        return [name, *figures, ms(max(samples)), throughput]

    print_table(
        f"{args.n} concurrent requests x {args.rounds} rounds (one `settle serve` process)",
        ["", "p50", "p95", "p99", "max", "rate"],
        [
            row("GET /healthz (baseline)", baseline, walls["healthz"]),
            row("POST /webhooks/sandbox", acknowledged, walls["webhook"]),
            [
                "ratio webhook / baseline",
                *(
                    f"{percentile(acknowledged, p) / percentile(baseline, p):.1f}x"
                    for p in (50, 95, 99)
                ),
                f"{max(acknowledged) / max(baseline):.1f}x",
                "",
            ],
        ],
    )
    print(f"\n{stored} webhook events stored, each once.")


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--n", type=int, default=200, help="concurrent requests (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    add_service_arguments(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
