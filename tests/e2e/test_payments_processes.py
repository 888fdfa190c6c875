"""Payments in the production shape: `settle serve` and `settle worker` joined by Redis.

The sandbox gateway's hosted page delivers signed webhooks to the API process;
the worker process applies them. One test follows a payment from approval to a
websocket subscriber; the other kills the worker while it is applying the
webhook and proves Dramatiq's Redis broker redelivers it and it applies once.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from dramatiq import Message
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker

from settle.services.payment import PROCESS_WEBHOOK_JOB as PROCESS_WEBHOOK
from settle.subscriptions import channels
from settle.subscriptions.bus import RedisBus
from tests.conftest import wait_for
from tests.e2e.test_processes import (  # noqa: F401 - stack_env and processes are fixtures
    ROOT,
    _free_port,
    _spawn,
    processes,
    stack_env,
)
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.websocket import Subscription

SIGN_UP = """
mutation {
  signUp(input: {agencyName: "Harbor Studio", name: "Hana Owner",
                 email: "hana@harbor.example", password: "correct horse"}) {
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
mutation CreateContact($clientId: ID!) {
  createContact(input: {clientId: $clientId, name: "Ada Acme", email: "ada@acme.example",
                        isPrimary: true}) {
    ... on Contact { id }
  }
}
"""
CREATE_PROJECT = """
mutation CreateProject($clientId: ID!) {
  createProject(input: {clientId: $clientId, name: "Website"}) {
    ... on Project { id }
  }
}
"""
CREATE_MILESTONE = """
mutation CreateMilestone($projectId: ID!) {
  createMilestone(input: {projectId: $projectId, title: "Design", amount: "1250.00"}) {
    ... on Milestone { id }
  }
}
"""
MILESTONE_STEP = """
mutation Step($id: ID!) {
  %s(id: $id) {
    __typename
    ... on Milestone { status }
  }
}
"""
MILESTONE = """
query Milestone($id: ID!) {
  milestone(id: $id) {
    status
    paymentStatus
    amountPaid { amount currency }
    invoice { number status amountPaid { amount } }
  }
}
"""
PAY_MILESTONES = """
mutation Pay($ids: [ID!]!) {
  payMilestones(milestoneIds: $ids, provider: SANDBOX) {
    __typename
    ... on PaymentCheckout { payment { id status } checkout { checkoutUrl } }
  }
}
"""
PAYMENT_STATUS_CHANGED = """
subscription Changed($projectId: ID) {
  paymentStatusChanged(projectId: $projectId) { paymentId status }
}
"""


@dataclass(frozen=True)
class Stack:
    """A migrated database, the API process and its first worker."""

    env: dict[str, str]
    base: str
    api: GraphQLClient
    worker: subprocess.Popen[bytes]
    # Every process started, stopped by the ``processes`` fixture at the end.
    processes: list[subprocess.Popen[bytes]]


@dataclass(frozen=True)
class Started:
    """An approved, invoiced milestone and the sandbox payment started for it."""

    token: str
    agency_id: str
    project_id: str
    milestone_id: str
    payment_id: str
    checkout_path: str


async def _migrate(env: dict[str, str]) -> None:
    migrate = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "settle",
        "migrate",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(migrate.communicate(), timeout=120)
    assert migrate.returncode == 0, output.decode()


@pytest.fixture
async def stack(
    stack_env: dict[str, str],  # noqa: F811 - the fixture imported above
    processes: list[subprocess.Popen[bytes]],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    await _migrate(stack_env)
    port = _free_port()
    # One API process (the default is one per core): it starts fastest, and this test
    # is not about --workers (tests/test_serve_workers.py is).
    processes.append(
        _spawn(["serve", "--port", str(port), "--workers", "1"], stack_env, tmp_path / "api.log")
    )
    worker = _spawn(["worker", "--threads", "2"], stack_env, tmp_path / "worker.log")
    processes.append(worker)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:

        async def api_ready() -> bool:
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(api_ready, timeout=30)
        yield Stack(stack_env, base, GraphQLClient(http), worker, processes)


async def _start_payment(api: GraphQLClient) -> Started:
    """Sign up, approve a milestone, wait for its invoice (the worker's job), start paying it."""
    signed_up = (await api.execute(SIGN_UP))["signUp"]
    token = signed_up["token"]
    client_id = (await api.execute(CREATE_CLIENT, token=token))["createClient"]["id"]
    await api.execute(CREATE_CONTACT, {"clientId": client_id}, token=token)
    project_id = (await api.execute(CREATE_PROJECT, {"clientId": client_id}, token=token))[
        "createProject"
    ]["id"]
    milestone_id = (await api.execute(CREATE_MILESTONE, {"projectId": project_id}, token=token))[
        "createMilestone"
    ]["id"]
    for step, status in (
        ("startMilestone", "IN_PROGRESS"),
        ("submitMilestone", "SUBMITTED"),
        ("approveMilestone", "APPROVED"),
    ):
        moved = await api.execute(MILESTONE_STEP % step, {"id": milestone_id}, token=token)
        assert moved[step] == {"__typename": "Milestone", "status": status}

    async def invoiced() -> bool:
        found = await api.execute(MILESTONE, {"id": milestone_id}, token=token)
        return found["milestone"]["invoice"] is not None

    await wait_for(invoiced, timeout=30)
    paying = (await api.execute(PAY_MILESTONES, {"ids": [milestone_id]}, token=token))[
        "payMilestones"
    ]
    assert paying["__typename"] == "PaymentCheckout", paying
    assert paying["payment"]["status"] == "PENDING"
    return Started(
        token=token,
        agency_id=signed_up["user"]["agency"]["id"],
        project_id=project_id,
        milestone_id=milestone_id,
        payment_id=paying["payment"]["id"],
        # The checkout URL carries the public base URL; the page is served by the API process.
        checkout_path=urlsplit(paying["checkout"]["checkoutUrl"]).path,
    )


class PaymentSubscriber(Subscription):
    """One graphql-transport-ws connection with one paymentStatusChanged subscription."""

    def __init__(self, url: str, *, token: str, project_id: str) -> None:
        super().__init__(
            url,
            PAYMENT_STATUS_CHANGED,
            "paymentStatusChanged",
            token=token,
            variables={"projectId": project_id},
        )


async def _subscribed(redis_url: str, agency_id: str, count: int) -> None:
    """Wait until the API process listens on the agency's payments channel."""
    bus = RedisBus(redis_url)
    try:

        async def listening() -> bool:
            return await bus.subscriber_count(channels.payments(agency_id)) == count

        await wait_for(listening, timeout=10)
    finally:
        await bus.close()


async def test_a_sandbox_payment_is_applied_by_the_worker_process_and_reaches_a_subscriber(
    stack: Stack,
) -> None:
    # given an approved, invoiced milestone with a sandbox payment started for it,
    # and a websocket subscriber on the project's payment status
    started = await _start_payment(stack.api)
    ws_url = stack.base.replace("http://", "ws://", 1) + "/graphql"
    async with PaymentSubscriber(
        ws_url, token=started.token, project_id=started.project_id
    ) as subscriber:
        await _subscribed(stack.env["SETTLE_REDIS_URL"], started.agency_id, 1)

        # when the payer presses Pay on the sandbox's hosted page
        pressed = await stack.api.http.post(f"{started.checkout_path}/succeed")
        assert pressed.status_code == 200

        # then the worker process applies the webhook and the subscriber hears of it
        event = await subscriber.next(timeout=30)
    assert event == {"paymentId": started.payment_id, "status": "SUCCEEDED"}
    # and the milestone and its invoice are paid (the event is published after commit)
    found = await stack.api.execute(MILESTONE, {"id": started.milestone_id}, token=started.token)
    invoice = found["milestone"]["invoice"]
    assert found["milestone"] == {
        "status": "PAID",
        "paymentStatus": "PAID",
        "amountPaid": {"amount": "1250.00", "currency": "USD"},
        "invoice": {
            "number": invoice["number"],
            "status": "PAID",
            "amountPaid": {"amount": "1250.00"},
        },
    }
    assert invoice["number"].startswith("INV-")


def _asyncpg_url(database_url: str) -> str:
    return database_url.replace("postgres://", "postgresql://", 1)


async def _waiting_on(conn: asyncpg.Connection, holder: int) -> list[int]:
    """The backends waiting for a lock ``holder`` (a backend pid) holds."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", holder
    )
    return [row["pid"] for row in rows]


async def _requeue_dead_workers_messages(redis_url: str, queue: str) -> None:
    """Run the Redis broker's maintenance until a dead worker's unacked messages are back.

    Settle's broker runs maintenance on every call and treats a worker silent
    for ``SETTLE_BROKER_HEARTBEAT_TIMEOUT_SECONDS`` (30 s) as dead. Here one
    broker client runs it with a one-second timeout, so the redelivery is the
    broker's own, only sooner (tests/e2e/test_crash_recovery.py waits for a
    worker's own).
    """
    broker = RedisBroker(
        url=redis_url, heartbeat_timeout=1_000, maintenance_chance=MAINTENANCE_SCALE
    )
    client = aioredis.Redis.from_url(redis_url)
    try:

        async def requeued() -> bool:
            await asyncio.to_thread(broker.do_qsize, queue)
            return not await client.keys(f"dramatiq:__acks__.*.{queue}")

        await wait_for(requeued, timeout=15, interval=0.1)
    finally:
        await client.aclose()
        broker.close()


async def test_a_worker_killed_while_applying_a_webhook_is_replaced_and_it_applies_once(
    stack: Stack, tmp_path: Path
) -> None:
    # given a started sandbox payment, and its row locked by someone else for now
    started = await _start_payment(stack.api)
    database_url = _asyncpg_url(stack.env["SETTLE_DATABASE_URL"])
    redis_url = stack.env["SETTLE_REDIS_URL"]
    holder = await asyncpg.connect(database_url)
    observer = await asyncpg.connect(database_url)
    try:
        locking = holder.transaction()
        await locking.start()
        await holder.execute("SELECT id FROM payment WHERE id = $1 FOR UPDATE", started.payment_id)
        holder_pid = holder.get_server_pid()

        # when the webhook arrives and the worker blocks on the lock while applying it
        pressed = await stack.api.http.post(f"{started.checkout_path}/succeed")
        assert pressed.status_code == 200

        async def worker_blocked() -> bool:
            return len(await _waiting_on(observer, holder_pid)) == 1

        await wait_for(worker_blocked, timeout=20)
        (blocked_pid,) = await _waiting_on(observer, holder_pid)
        # the worker fetched the webhook's message and has not acknowledged it
        event_id = await observer.fetchval("SELECT id::text FROM webhook_event")
        assert await _messages(redis_url, PROCESS_WEBHOOK) == {
            "queued": [],
            "unacked": [[event_id]],
        }
        # and the worker process dies there (no shutdown, no ack, no rollback of its own)
        stack.worker.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(stack.worker.wait, 10) == -signal.SIGKILL
        await locking.rollback()

        # its database session ends with nothing committed once it gets the lock and
        # finds its client gone
        async def session_gone() -> bool:
            return not await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", blocked_pid
            )

        await wait_for(session_gone, timeout=10)
        assert (
            await observer.fetchval("SELECT status FROM payment WHERE id = $1", started.payment_id)
            == "pending"
        )

        # then the broker requeues the dead worker's message and a new worker applies it
        await _requeue_dead_workers_messages(redis_url, "default")
        assert await _messages(redis_url, PROCESS_WEBHOOK) == {
            "queued": [[event_id]],
            "unacked": [],
        }
        stack.processes.append(
            _spawn(["worker", "--threads", "2"], stack.env, tmp_path / "worker-2.log")
        )

        async def succeeded() -> bool:
            status = await observer.fetchval(
                "SELECT status FROM payment WHERE id = $1", started.payment_id
            )
            return bool(status == "succeeded")

        await wait_for(succeeded, timeout=30)
        # and exactly once: one audit entry, one announcement, one webhook event, one payment
        # of the milestone and the invoice
        assert await _counts(observer, started) == {
            "audit_succeeded": 1,
            "announced_succeeded": 1,
            "webhook_events": 1,
            "webhook_attempts": 1,
            "milestone_paid_events": 1,
            "milestone": ("paid", 125000),
            "invoice": ("paid", 125000),
        }
    finally:
        await holder.close()
        await observer.close()
    assert stack.processes[-1].poll() is None, (tmp_path / "worker-2.log").read_text()


async def _messages(redis_url: str, actor_name: str) -> dict[str, list[list[Any]]]:
    """The arguments of ``actor_name``'s messages on the default queue, by where they are.

    ``queued`` waits for a worker; ``unacked`` was fetched by a worker that has
    not acknowledged it (Dramatiq's Redis layout: a list of ids, a hash of
    messages, and one set of fetched ids per worker and queue).
    """
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:

        async def decoded(message_ids: Iterable[bytes | str]) -> list[list[Any]]:
            found = []
            for message_id in message_ids:
                data = await client.hget("dramatiq:default.msgs", message_id)
                assert isinstance(data, str)
                message = Message.decode(data.encode())
                if message.actor_name == actor_name:
                    found.append(list(message.args))
            return found

        unacked: list[bytes | str] = []
        for key in await client.keys("dramatiq:__acks__.*.default"):
            unacked += await client.smembers(key)
        return {
            "queued": await decoded(await client.lrange("dramatiq:default", 0, -1)),
            "unacked": await decoded(unacked),
        }
    finally:
        await client.aclose()


async def _counts(conn: asyncpg.Connection, started: Started) -> dict[str, Any]:
    payment_id = started.payment_id
    milestone = await conn.fetchrow(
        "SELECT status, amount_paid_minor, invoice_id FROM milestone WHERE id = $1",
        started.milestone_id,
    )
    invoice = await conn.fetchrow(
        "SELECT status, amount_paid_minor FROM invoice WHERE id = $1", milestone["invoice_id"]
    )
    return {
        "audit_succeeded": await conn.fetchval(
            "SELECT count(*) FROM payment_audit_entry"
            " WHERE payment_id = $1 AND action = 'payment_succeeded'",
            payment_id,
        ),
        "announced_succeeded": await conn.fetchval(
            "SELECT count(*) FROM outbox_message WHERE kind = 'event' AND topic = $1"
            " AND payload->>'paymentId' = $2 AND payload->>'status' = 'succeeded'",
            channels.payments(started.agency_id),
            payment_id,
        ),
        "webhook_events": await conn.fetchval(
            "SELECT count(*) FROM webhook_event WHERE payment_id = $1", payment_id
        ),
        "webhook_attempts": await conn.fetchval(
            "SELECT attempts FROM webhook_event WHERE payment_id = $1", payment_id
        ),
        "milestone_paid_events": await conn.fetchval(
            "SELECT count(*) FROM activity_event"
            " WHERE entity_type = 'milestone' AND entity_id = $1 AND verb = 'paid'",
            started.milestone_id,
        ),
        "milestone": (milestone["status"], milestone["amount_paid_minor"]),
        "invoice": (invoice["status"], invoice["amount_paid_minor"]),
    }
