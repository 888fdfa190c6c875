"""Webhook to paid: from a signed sandbox delivery's POST to the payment's announcement.

`settle serve` and one `settle worker` share Redis, as in production. For each
of N pending payments the bench posts a signed ``payment.succeeded`` webhook and
stops the clock when ``PaymentStatusChanged`` (status ``succeeded``) arrives on
the agency's payments channel, subscribed on Redis pub/sub. That event is
published after the worker's transaction commits the payment, its invoice and
its milestone as paid, so the figure is "webhook to milestone paid", seen by a
subscriber, without polling skew.

The baseline, in the same run, is a bare Dramatiq round trip through the same
Redis: a message to a trivial async actor in a worker process of its own (same
broker, same AsyncIO middleware, same thread count) that publishes the message's
token back on pub/sub. It contains the queue's polling, the worker hand-off and
one publish, but no HTTP, no database and no Settle code.

    uv run python bench/webhook_to_paid.py [--n 100] [--concurrency 1] [--threads 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
import httpx
import redis.asyncio as aioredis
from _common import (
    add_service_arguments,
    ms,
    payment_rows,
    percentile,
    print_table,
    sandbox_payments,
    signed_webhook,
    stack,
    wait_until,
)
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

from settle.gateways.sandbox import SandboxGateway
from settle.subscriptions import channels

DESCRIPTION = "Time from a webhook's POST to the payment's PaymentStatusChanged, with a baseline."
ECHO_QUEUE = "bench_echo"
ECHO_ACTOR = "bench.echo"
ECHO_CHANNEL = "bench.echo"
WARMUP = 3


# --- the baseline's worker (a process of its own) -----------------------------------------


def echo_worker(redis_url: str, threads: int) -> None:
    """A Dramatiq worker with one async actor that publishes its argument back."""
    broker = RedisBroker(url=redis_url)
    broker.add_middleware(AsyncIO())
    dramatiq.set_broker(broker)
    publishers: dict[int, aioredis.Redis] = {}

    @dramatiq.actor(actor_name=ECHO_ACTOR, queue_name=ECHO_QUEUE, max_retries=0, broker=broker)
    async def echo(token: str) -> None:
        # One client per event loop (AsyncIO runs actors on one loop thread).
        loop_id = id(asyncio.get_running_loop())
        if loop_id not in publishers:
            publishers[loop_id] = aioredis.Redis.from_url(redis_url)
        await publishers[loop_id].publish(ECHO_CHANNEL, token)

    worker = dramatiq.Worker(broker, worker_threads=threads)
    worker.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    worker.stop()


# --- measuring -----------------------------------------------------------------------------


class Arrivals:
    """When each awaited key's message arrived on a pub/sub channel (perf_counter time)."""

    def __init__(self, redis_url: str, channel: str, key: Callable[[bytes], str | None]) -> None:
        self._redis = aioredis.Redis.from_url(redis_url)
        self._channel = channel
        self._key = key
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._reading: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Arrivals:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._channel)
        self._reading = asyncio.create_task(self._read(pubsub))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._reading is not None
        self._reading.cancel()
        await asyncio.gather(self._reading, return_exceptions=True)
        await self._redis.aclose()

    async def _read(self, pubsub: Any) -> None:
        async with pubsub:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None or message["type"] != "message":
                    continue
                arrived = time.perf_counter()
                key = self._key(message["data"])
                waiting = self._waiting.get(key) if key is not None else None
                if waiting is not None and not waiting.done():
                    waiting.set_result(arrived)

    def expect(self, key: str) -> asyncio.Future[float]:
        """A future for ``key``'s arrival; ask before causing it."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        return future


def _succeeded_payment(data: bytes) -> str | None:
    event = json.loads(data)
    return str(event["paymentId"]) if event.get("status") == "succeeded" else None


async def _timed_all(
    keys: list[str],
    concurrency: int,
    arrivals: Arrivals,
    cause: Callable[[str], Awaitable[None]],
) -> list[float]:
    """For each key: start the clock, ``cause`` its message, stop at the message's arrival."""
    gate = asyncio.Semaphore(concurrency)

    async def one(key: str) -> float:
        async with gate:
            arrived = arrivals.expect(key)
            started = time.perf_counter()
            await cause(key)
            return await asyncio.wait_for(arrived, timeout=60) - started

    return list(await asyncio.gather(*(one(key) for key in keys)))


async def _queue_idle(redis_url: str) -> None:
    """Wait until the worker has done the setup's jobs (invoices, PDFs, emails)."""
    client = aioredis.Redis.from_url(redis_url)
    try:

        async def idle() -> bool:
            if await client.llen("dramatiq:default"):
                return False
            for key in await client.keys("dramatiq:__acks__.*"):
                if await client.scard(key):
                    return False
            return True

        await wait_until(idle, "the worker to finish the setup's jobs", timeout=300)
    finally:
        await client.aclose()


async def run(args: argparse.Namespace) -> None:
    async with stack(args.postgres_url, args.redis_url) as running:
        running.spawn("worker", ["-m", "settle", "worker", "--threads", str(args.threads)])
        async with httpx.AsyncClient(base_url=running.base_url, timeout=60) as http:
            print(f"setting up {args.n + WARMUP} pending sandbox payments ...", flush=True)
            payments = await sandbox_payments(http, args.n + WARMUP, wait_for_invoices=True)
            await _queue_idle(running.redis_url)
            rows = {
                row["id"]: row
                for row in await payment_rows(running.database_url, payments.payment_ids)
            }
            gateway = SandboxGateway(running.settings())

            async def deliver(payment_id: str) -> None:
                body, headers = signed_webhook(gateway, rows[payment_id], f"bench_{payment_id}")
                response = await http.post("/webhooks/sandbox", content=body, headers=headers)
                if response.status_code != 200:
                    raise SystemExit(f"the webhook answered {response.status_code}")

            channel = channels.payments(payments.agency_id)
            async with Arrivals(running.redis_url, channel, _succeeded_payment) as paid:
                warmup, measured = payments.payment_ids[:WARMUP], payments.payment_ids[WARMUP:]
                await _timed_all(warmup, 1, paid, deliver)
                to_paid = await _timed_all(measured, args.concurrency, paid, deliver)

        running.spawn(
            "echo-worker",
            [
                __file__,
                "--echo-worker",
                "--threads",
                str(args.threads),
                "--redis-url",
                running.redis_url,
            ],
        )
        sender = RedisBroker(url=running.redis_url)
        try:

            async def enqueue(token: str) -> None:
                message: dramatiq.Message[Any] = dramatiq.Message(
                    queue_name=ECHO_QUEUE,
                    actor_name=ECHO_ACTOR,
                    args=(token,),
                    kwargs={},
                    options={},
                )
                # As the outbox relay sends a job: the blocking client in a thread.
                await asyncio.to_thread(sender.enqueue, message)

            async with Arrivals(running.redis_url, ECHO_CHANNEL, bytes.decode) as echoed:
                # The first also waits for the echo worker to start.
                warmup = [uuid.uuid4().hex for _ in range(WARMUP)]
                first = echoed.expect(warmup[0])
                await enqueue(warmup[0])
                await asyncio.wait_for(first, timeout=60)
                await _timed_all(warmup[1:], 1, echoed, enqueue)
                tokens = [uuid.uuid4().hex for _ in range(args.n)]
                round_trip = await _timed_all(tokens, args.concurrency, echoed, enqueue)
        finally:
            sender.close()

    def row(name: str, samples: list[float]) -> list[str]:
        return [name, *(ms(percentile(samples, p)) for p in (50, 95)), ms(max(samples))]

    print_table(
        f"{args.n} payments, {args.concurrency} at a time; one worker, {args.threads} threads",
        ["", "p50", "p95", "max"],
        [
            row("Dramatiq round trip (baseline)", round_trip),
            row("webhook POST -> payment paid", to_paid),
            [
                "ratio paid / baseline",
                *(f"{percentile(to_paid, p) / percentile(round_trip, p):.1f}x" for p in (50, 95)),
                f"{max(to_paid) / max(round_trip):.1f}x",
            ],
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--n", type=int, default=100, help="payments measured (default 100)")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="webhooks in flight at once (default 1)"
    )
    parser.add_argument(
        "--threads", type=int, default=8, help="the worker's threads (default 8, as settle's)"
    )
    parser.add_argument("--echo-worker", action="store_true", help=argparse.SUPPRESS)
    add_service_arguments(parser)
    args = parser.parse_args()
    if args.echo_worker:
        echo_worker(args.redis_url, args.threads)
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
