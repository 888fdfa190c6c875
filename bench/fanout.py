"""Fan-out: one payment event to N graphql-transport-ws subscribers on one `settle serve`.

`settle serve` and one `settle worker` share Redis and PostgreSQL, as in production.
N websockets (one subscription each, ``paymentStatusChanged`` of the agency, as a
dashboard would) connect to the one API process; one sandbox payment is paid through
its signed webhook, and each subscriber's latency is timed from the moment the
committed payment's event is published (a bare Redis subscriber in this process
stamps it) to that subscriber's receipt of the ``succeeded`` event. Also: how many
received it, and the server's RSS growth per subscriber.

The baseline, in the same run: a bare Starlette websocket app (one uvicorn process,
no GraphQL, no bus) holding the same number of sockets broadcasts the same frame
(the one Settle sent) to all of them; timed from the broadcast's start.

    uv run python bench/fanout.py [--n 1000] [--n 3000] [--n 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import websockets
from _common import (
    add_service_arguments,
    free_port,
    ms,
    payment_rows,
    percentile,
    print_table,
    sandbox_payments,
    signed_webhook,
    stack,
    wait_until,
)

from settle.gateways.sandbox import SandboxGateway
from settle.subscriptions import channels
from settle.subscriptions.bus import RedisBus

DESCRIPTION = "One payment event to N websocket subscribers, beside a bare broadcast."
SUBPROTOCOL = websockets.Subprotocol("graphql-transport-ws")
SUBSCRIPTION = """
subscription { paymentStatusChanged {
  paymentId status provider amount { amount currency minorUnits } projectId invoiceIds
} }
"""
CONNECTS_AT_ONCE = 100


def raise_open_files() -> None:
    """Each socket is a descriptor on both ends; children inherit the raised limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit(f"no RSS for {pid}")


# --- the baseline's server (a process of its own) ------------------------------------------


def raw_server(port: int) -> None:
    """Starlette: /ws keeps sockets; POST /broadcast sends the body to each, stamped."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    sockets: set[WebSocket] = set()

    async def hold(websocket: WebSocket) -> None:
        await websocket.accept()
        sockets.add(websocket)
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            sockets.discard(websocket)

    async def broadcast(request: Request) -> PlainTextResponse:
        frame = (await request.body()).decode()
        started = time.time()
        stamped = json.dumps({"t0": started, "frame": frame})
        for websocket in list(sockets):
            await websocket.send_text(stamped)
        return PlainTextResponse(str(len(sockets)))

    async def count(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(sockets)))

    app = Starlette(
        routes=[
            WebSocketRoute("/ws", hold),
            Route("/broadcast", broadcast, methods=["POST"]),
            Route("/count", count),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=4096)


# --- clients -----------------------------------------------------------------------------------


class Receiver:
    """One websocket; records when the awaited frame arrived (wall clock, shared by processes)."""

    def __init__(self) -> None:
        self.socket: Any = None
        self.arrived: float | None = None
        self.frame: str | None = None
        self.warm = asyncio.Event()
        self.reading: asyncio.Task[None] | None = None


async def connect_all(n: int, connect: Any) -> list[Receiver]:
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)

    async def one() -> Receiver:
        async with gate:
            receiver = Receiver()
            await connect(receiver)
            return receiver

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def settle_side(args: argparse.Namespace, n: int) -> tuple[list[float], int, float, str]:
    # One API process, as the issue measures (and so its RSS is the sockets' own: with
    # several workers, the process started is a supervisor holding none of them).
    async with stack(args.postgres_url, args.redis_url, serve_args=["--workers", "1"]) as running:
        running.spawn("worker", ["-m", "settle", "worker", "--threads", "2"])
        serve_pid = running.processes[0].pid
        async with httpx.AsyncClient(base_url=running.base_url, timeout=60) as http:
            payments = await sandbox_payments(http, 1, wait_for_invoices=False)
            row = (await payment_rows(running.database_url, payments.payment_ids))[0]
            gateway = SandboxGateway(running.settings())
            ws_url = running.base_url.replace("http://", "ws://", 1) + "/graphql"
            channel = channels.payments(payments.agency_id)
            before = rss_kib(serve_pid)

            async def connect(receiver: Receiver) -> None:
                socket = await websockets.connect(
                    ws_url, subprotocols=[SUBPROTOCOL], ping_interval=None, open_timeout=120
                )
                await socket.send(
                    json.dumps({"type": "connection_init", "payload": {"token": payments.token}})
                )
                if json.loads(await socket.recv())["type"] != "connection_ack":
                    raise SystemExit("no connection_ack")
                await socket.send(
                    json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
                )
                receiver.socket = socket
                receiver.reading = asyncio.create_task(read(receiver))

            async def read(receiver: Receiver) -> None:
                async for frame in receiver.socket:
                    message = json.loads(frame)
                    if message.get("type") != "next":
                        continue
                    if message["payload"].get("errors"):
                        raise SystemExit(f"a subscriber got {message['payload']['errors']}")
                    event = message["payload"]["data"]["paymentStatusChanged"]
                    if event["paymentId"] == "warm-up":
                        receiver.warm.set()
                    elif event["status"] == "SUCCEEDED" and receiver.arrived is None:
                        receiver.arrived = time.time()
                        receiver.frame = frame

            print(f"  settle: connecting {n} subscribers ...", flush=True)
            receivers = await connect_all(n, connect)
            publisher = aioredis.Redis.from_url(running.redis_url)
            # Through the bus, as the worker publishes: subscriptions hear only events
            # that carry their place in the agency's stream.
            bus = RedisBus(running.redis_url)
            warm_up = {
                "paymentId": "warm-up",
                "agencyId": payments.agency_id,
                "clientId": None,
                "projectId": None,
                "invoiceIds": [],
                "status": "pending",
                "provider": "sandbox",
                "amountMinor": 1,
                "amountRefundedMinor": 0,
                "currency": "USD",
                "changedAt": "2026-01-01T00:00:00+00:00",
            }

            # Subscriptions start asynchronously: announce, give every one time to hear it,
            # and announce again only if some did not (a flood would end them as too slow).
            for _ in range(20):
                await bus.publish(channel, warm_up)
                with suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.gather(*(r.warm.wait() for r in receivers)), timeout=15
                    )
                    break
            else:
                raise SystemExit("some subscribers never heard the warm-up")
            rss = (rss_kib(serve_pid) - before) / n

            published: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            sniffer = publisher.pubsub(ignore_subscribe_messages=True)
            await sniffer.subscribe(channel)

            async def sniff() -> None:
                while True:
                    message = await sniffer.get_message(timeout=None)
                    if message and json.loads(message["data"]).get("status") == "succeeded":
                        published.set_result(time.time())
                        return

            sniffing = asyncio.create_task(sniff())
            body, headers = signed_webhook(gateway, row, f"bench_{row['id']}")
            response = await http.post("/webhooks/sandbox", content=body, headers=headers)
            if response.status_code != 200:
                raise SystemExit(f"the webhook answered {response.status_code}")
            t0 = await asyncio.wait_for(published, 120)
            await sniffing

            async def all_arrived() -> bool:
                return all(r.arrived is not None for r in receivers)

            with suppress(SystemExit):  # the count below says how many did
                await wait_until(all_arrived, "every subscriber", timeout=30)
            latencies = [r.arrived - t0 for r in receivers if r.arrived is not None]
            frame = next(r.frame for r in receivers if r.frame is not None)
            for receiver in receivers:
                if receiver.reading is not None:
                    receiver.reading.cancel()
            await asyncio.gather(*(r.socket.close() for r in receivers), return_exceptions=True)
            await sniffer.aclose()
            await publisher.aclose()
            await bus.close()
            return latencies, len(latencies), rss, frame


async def raw_side(n: int, frame: str) -> tuple[list[float], int, float]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--raw-server", str(port)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:

            async def up() -> bool:
                try:
                    return (await http.get("/count")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(up, "the raw server")
            before = rss_kib(process.pid)

            async def connect(receiver: Receiver) -> None:
                receiver.socket = await websockets.connect(
                    f"ws://127.0.0.1:{port}/ws", ping_interval=None, open_timeout=120
                )
                receiver.reading = asyncio.create_task(read(receiver))

            async def read(receiver: Receiver) -> None:
                async for data in receiver.socket:
                    stamped = json.loads(data)
                    receiver.arrived = time.time() - stamped["t0"]

            print(f"  raw: connecting {n} sockets ...", flush=True)
            receivers = await connect_all(n, connect)

            async def all_held() -> bool:
                return int((await http.get("/count")).text) == n

            await wait_until(all_held, "the raw server to hold every socket")
            rss = (rss_kib(process.pid) - before) / n
            await http.post("/broadcast", content=frame)

            async def all_arrived() -> bool:
                return all(r.arrived is not None for r in receivers)

            with suppress(SystemExit):
                await wait_until(all_arrived, "every raw socket", timeout=30)
            latencies = [r.arrived for r in receivers if r.arrived is not None]
            for receiver in receivers:
                if receiver.reading is not None:
                    receiver.reading.cancel()
            await asyncio.gather(*(r.socket.close() for r in receivers), return_exceptions=True)
            return latencies, len(latencies), rss
    finally:
        process.terminate()
        await process.wait()


def figures(name: str, n: int, latencies: Sequence[float], received: int, rss: float) -> list[str]:
    if not latencies:
        return [name, f"{received}/{n}", "-", "-", "-", f"{rss:.0f} KiB"]
    return [
        name,
        f"{received}/{n}",
        ms(percentile(latencies, 50)),
        ms(percentile(latencies, 99)),
        ms(max(latencies)),
        f"{rss:.0f} KiB",
    ]


async def run(args: argparse.Namespace) -> None:
    raise_open_files()
    for n in args.n or [1000]:
        print(f"\n{n} subscribers", flush=True)
        settle, settle_received, settle_rss, frame = await settle_side(args, n)
        raw, raw_received, raw_rss = await raw_side(n, frame)
        ratio = percentile(settle, 99) / percentile(raw, 99) if settle and raw else float("nan")
        print_table(
            f"one payment event to {n} subscribers (p99 ratio settle/raw: {ratio:.2f}x, "
            f"memory ratio: {settle_rss / raw_rss if raw_rss else float('nan'):.2f}x)",
            ["", "received", "p50", "p99", "max", "RSS/subscriber"],
            [
                figures(
                    "settle (webhook commit → receipt)", n, settle, settle_received, settle_rss
                ),
                figures("raw Starlette broadcast", n, raw, raw_received, raw_rss),
            ],
        )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--raw-server":
        raise_open_files()
        raw_server(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--n", type=int, action="append", help="subscribers (repeatable)")
    add_service_arguments(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
