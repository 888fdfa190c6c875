"""Simple reads while 100 payments start at once.

One `settle serve` (``--workers`` as given, else its default) and one
`settle worker`, on PostgreSQL and Redis, as in production. Each round sets
up ``--payments`` approved milestones, each invoiced by the worker (as an
approval is), then sends one ``payMilestones`` (sandbox gateway) per milestone,
all at once, each on its own connection, while ``--probes`` clients time
``clients(first: 10)`` one after another, 20 ms apart.

**Baseline:** the same probes against the same server with nothing else going
on, for ``--idle-seconds`` before each round's payments. The figures are the
probes' p50 and p95 idle and under the payments, and the payments' own p50 and
p95 (from the send of each to its answer).

    uv run python bench/payments_load.py [--payments 100] [--rounds 2] [--probes 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx
from _common import (
    CREATE_CLIENT,
    CREATE_CONTACT,
    CREATE_MILESTONE,
    CREATE_PROJECT,
    MILESTONE_INVOICED,
    MILESTONE_STEP,
    PAY_MILESTONES,
    SIGN_UP,
    Api,
    Lane,
    add_service_arguments,
    ms,
    percentile,
    print_table,
    stack,
    wait_until,
)

DESCRIPTION = "clients(first: 10) latency while 100 payMilestones run at once."
PROBE = "query Probe { clients(first: 10) { edges { node { id name } } } }"
PROBE_PAUSE = 0.02


async def approved_milestones(api: Api, project_id: str, count: int, label: str) -> list[str]:
    """``count`` approved milestones, each with the invoice its approval issued."""
    gate = asyncio.Semaphore(8)

    async def one(index: int) -> str:
        async with gate:
            created = await api.execute(
                CREATE_MILESTONE, {"projectId": project_id, "title": f"{label} {index + 1}"}
            )
            milestone_id: str = created["createMilestone"]["id"]
            for step in ("startMilestone", "submitMilestone", "approveMilestone"):
                moved = await api.execute(MILESTONE_STEP % step, {"id": milestone_id})
                if moved[step]["__typename"] != "Milestone":
                    raise SystemExit(f"{step} answered {moved}")

        async def invoiced() -> bool:
            async with gate:
                found = await api.execute(MILESTONE_INVOICED, {"id": milestone_id})
            return found["milestone"]["invoice"] is not None

        await wait_until(invoiced, "the approval's invoice", timeout=600)
        return milestone_id

    return list(await asyncio.gather(*(one(i) for i in range(count))))


class Probes:
    """``count`` clients timing the probe query back to back, a pause between."""

    def __init__(self, base_url: str, token: str, count: int) -> None:
        self.base_url = base_url
        self.count = count
        self.request = Lane.post_request(
            "/graphql", json.dumps({"query": PROBE}).encode(), {"Authorization": f"Bearer {token}"}
        )
        self.stop = asyncio.Event()

    async def run(self) -> list[float]:
        self.stop.clear()
        lanes = [await Lane(self.base_url).open() for _ in range(self.count)]
        timings: list[float] = []

        async def loop(lane: Lane) -> None:
            while not self.stop.is_set():
                started = time.perf_counter()
                status, body = await lane.send(self.request)
                timings.append(time.perf_counter() - started)
                if status != 200 or b'"errors"' in body:
                    raise SystemExit(f"the probe answered {status}: {body[:300]!r}")
                await asyncio.sleep(PROBE_PAUSE)

        try:
            await asyncio.gather(*(loop(lane) for lane in lanes))
        finally:
            for lane in lanes:
                await lane.close()
        return timings


async def pay_all(base_url: str, token: str, milestone_ids: list[str]) -> list[float]:
    """One payMilestones per milestone, all at once; each one's latency."""
    lanes = [await Lane(base_url).open() for _ in milestone_ids]
    headers = {"Authorization": f"Bearer {token}"}

    async def one(lane: Lane, milestone_id: str) -> float:
        body = json.dumps({"query": PAY_MILESTONES, "variables": {"ids": [milestone_id]}})
        request = Lane.post_request("/graphql", body.encode(), headers)
        started = time.perf_counter()
        status, answer = await lane.send(request)
        elapsed = time.perf_counter() - started
        paying: Any = json.loads(answer).get("data") or {}
        if status != 200 or (paying.get("payMilestones") or {}).get("__typename") != (
            "PaymentCheckout"
        ):
            raise SystemExit(f"payMilestones answered {status}: {answer[:500]!r}")
        return elapsed

    try:
        return list(
            await asyncio.gather(
                *(one(lane, m) for lane, m in zip(lanes, milestone_ids, strict=True))
            )
        )
    finally:
        for lane in lanes:
            await lane.close()


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
        running.spawn("worker", ["-m", "settle", "worker", "--threads", "4"])
        async with httpx.AsyncClient(base_url=running.base_url, timeout=120) as http:
            api = Api(http)
            api.token = (await api.execute(SIGN_UP))["signUp"]["token"]
            assert api.token is not None
            client_id = (await api.execute(CREATE_CLIENT))["createClient"]["id"]
            await api.execute(CREATE_CONTACT, {"clientId": client_id})
            for index in range(9):
                await api.execute(
                    CREATE_CLIENT.replace("Acme Ltd", f"Client {index}").replace(
                        "billing@acme", f"billing{index}@acme"
                    )
                )
            project = await api.execute(CREATE_PROJECT, {"clientId": client_id})
            project_id = project["createProject"]["id"]
            probes = Probes(running.base_url, api.token, args.probes)
            idle: list[float] = []
            loaded: list[float] = []
            payments: list[float] = []
            for number in range(args.rounds):
                print(f"round {number + 1}: {args.payments} approved milestones ...", flush=True)
                milestones = await approved_milestones(
                    api, project_id, args.payments, f"Round {number + 1}"
                )
                await asyncio.sleep(2)  # the worker's last jobs settle
                probing = asyncio.create_task(probes.run())
                await asyncio.sleep(args.idle_seconds)
                probes.stop.set()
                idle += await probing
                probing = asyncio.create_task(probes.run())
                await asyncio.sleep(0.5)
                print(f"round {number + 1}: paying ...", flush=True)
                payments += await pay_all(running.base_url, api.token, milestones)
                probes.stop.set()
                loaded += await probing

    def row(label: str, samples: list[float]) -> list[str]:
        return [label, str(len(samples)), ms(percentile(samples, 50)), ms(percentile(samples, 95))]

    print_table(
        f"{args.rounds} rounds of {args.payments} payMilestones at once, {args.probes} probes",
        ["", "n", "p50", "p95"],
        [
            row("clients(first: 10), idle", idle),
            row(f"clients(first: 10), during {args.payments} payments", loaded),
            [
                "ratio loaded / idle",
                "",
                f"{percentile(loaded, 50) / percentile(idle, 50):.1f}x",
                f"{percentile(loaded, 95) / percentile(idle, 95):.1f}x",
            ],
            row("payMilestones", payments),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--payments", type=int, default=100, help="payments at once (100)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    parser.add_argument("--probes", type=int, default=4, help="probe clients (default 4)")
    parser.add_argument(
        "--idle-seconds", type=float, default=5, help="idle probing per round (default 5)"
    )
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
