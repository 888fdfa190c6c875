"""Crash recovery without luck: forty webhooks, a worker killed with SIGKILL in the middle.

The production shape (`settle serve`, `settle worker`, `settle scheduler` over
PostgreSQL and Redis) takes forty signed sandbox webhooks for forty issued
invoices while their PDFs are still to be rendered. The worker dies with
messages fetched and not acknowledged; a new worker starts. Each way back is
proven on its own, with its thresholds shortened by settings:

- ``broker``: Dramatiq's Redis broker gives the dead worker's messages back once
  its heartbeat is older than ``SETTLE_BROKER_HEARTBEAT_TIMEOUT_SECONDS`` (3 s
  here, 30 s by default);
- ``janitor``: with the broker's timeout out of reach (an hour), the scheduler's
  janitor (every 2 s here, stale after 5 s) sends the lost jobs again.

Either way all forty payments are applied exactly once and every invoice has
its PDF within ``RECOVERY_BOUND`` seconds of the restart.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from settle.core.settings import Settings
from settle.gateways.sandbox import SIGNATURE_HEADER, SandboxGateway
from tests.conftest import wait_for
from tests.e2e.test_payments_processes import _asyncpg_url, _migrate
from tests.e2e.test_processes import (  # noqa: F401 - stack_env and processes are fixtures
    _free_port,
    _spawn,
    processes,
    stack_env,
)
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.services import REDIS_URL

WEBHOOKS = 40
# From the new worker's start until all forty are applied with their PDFs: the
# broker's 3 s heartbeat timeout or the janitor's 5 s threshold and 2 s cron, the
# worker's start and the remaining jobs, with room for a loaded machine.
RECOVERY_BOUND = 30.0
# The old worker dies once this many payments are applied: mid-batch, its
# prefetched messages fetched and not acknowledged.
KILL_AFTER_APPLIED = 3

RECOVERY = {
    "broker": {"SETTLE_BROKER_HEARTBEAT_TIMEOUT_SECONDS": "3"},
    "janitor": {
        "SETTLE_BROKER_HEARTBEAT_TIMEOUT_SECONDS": "3600",
        "SETTLE_JANITOR_CRON": "* * * * * */2",
        "SETTLE_JANITOR_STALE_SECONDS": "5",
    },
}

SIGN_UP = """
mutation {
  signUp(input: {agencyName: "Harbor Studio", name: "Hana Owner",
                 email: "hana@harbor.example", password: "correct horse"}) {
    ... on AuthPayload { token }
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
CREATE_INVOICE = """
mutation CreateInvoice($clientId: ID!, $n: String!) {
  createInvoice(input: {clientId: $clientId, taxRate: "0", lines: [
    {description: $n, quantity: "1", unitPrice: "125.00"}
  ]}) {
    ... on Invoice { id }
  }
}
"""
FINALIZE_INVOICE = """
mutation Finalize($id: ID!) {
  finalizeInvoice(id: $id) { ... on Invoice { status } }
}
"""
PAY_INVOICE = """
mutation Pay($id: ID!) {
  payInvoice(invoiceId: $id, provider: SANDBOX) {
    __typename
    ... on PaymentCheckout { payment { id status } }
  }
}
"""


@dataclass(frozen=True)
class Billed:
    invoice_id: str
    payment_id: str


@pytest.fixture(params=sorted(RECOVERY))
def recovery(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def env(
    stack_env: dict[str, str],  # noqa: F811 - the fixture imported above
    recovery: str,
) -> AsyncIterator[dict[str, str]]:
    """The processes' environment on this run's own Redis database, thresholds shortened."""
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.flushdb()
    try:
        yield {**stack_env, "SETTLE_REDIS_URL": REDIS_URL, **RECOVERY[recovery]}
    finally:
        await client.flushdb()
        await client.aclose()


def sandbox(env: dict[str, str]) -> SandboxGateway:
    """The sandbox gateway as the API process has it: the same secret signs its webhooks."""
    return SandboxGateway(Settings(secret_key=env["SETTLE_SECRET_KEY"]))  # type: ignore[arg-type]


async def bill(api: GraphQLClient, token: str, client_id: str, n: int) -> Billed:
    """Issue an invoice (its PDF job leaves for the worker) and start its sandbox payment."""
    created = await api.execute(
        CREATE_INVOICE, {"clientId": client_id, "n": f"Sprint {n}"}, token=token
    )
    invoice_id = created["createInvoice"]["id"]
    finalized = await api.execute(FINALIZE_INVOICE, {"id": invoice_id}, token=token)
    assert finalized["finalizeInvoice"] == {"status": "SENT"}
    paying = (await api.execute(PAY_INVOICE, {"id": invoice_id}, token=token))["payInvoice"]
    assert paying["__typename"] == "PaymentCheckout", paying
    return Billed(invoice_id, paying["payment"]["id"])


async def succeed(
    http: httpx.AsyncClient, gateway: SandboxGateway, db: asyncpg.Connection, billed: Billed
) -> None:
    """POST the signed webhook the sandbox sends when the payer presses Pay."""
    payment = await db.fetchrow(
        "SELECT provider_order_id, amount_minor, currency FROM payment WHERE id = $1",
        billed.payment_id,
    )
    body = gateway.event_body(
        "payment.succeeded",
        id=f"sbx_evt_{billed.payment_id}_succeed",
        payment_id=billed.payment_id,
        order_id=payment["provider_order_id"],
        payment_ref=f"sbx_pay_{billed.payment_id}",
        amount_minor=payment["amount_minor"],
        currency=payment["currency"],
    )
    answer = await http.post(
        "/webhooks/sandbox", content=body, headers={SIGNATURE_HEADER: gateway.sign(body)}
    )
    assert answer.status_code == 200, answer.text


async def unacked(redis_url: str) -> int:
    """Messages fetched by a worker and not acknowledged, on every queue."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        return sum([await client.scard(key) for key in await client.keys("dramatiq:__acks__.*")])
    finally:
        await client.aclose()


async def progress(db: asyncpg.Connection) -> tuple[int, int]:
    """(payments applied, invoices with their PDF)."""
    applied = await db.fetchval("SELECT count(*) FROM payment WHERE status = 'succeeded'")
    rendered = await db.fetchval("SELECT count(*) FROM invoice WHERE pdf_key IS NOT NULL")
    return applied, rendered


async def test_forty_webhooks_survive_a_worker_killed_mid_batch(
    env: dict[str, str],
    recovery: str,
    processes: list[subprocess.Popen[bytes]],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    # given the API (and, for the janitor, the scheduler) running, no worker yet
    await _migrate(env)
    port = _free_port()
    # One API process (the default is one per core): it starts fastest, and this test
    # is not about --workers (tests/test_serve_workers.py is).
    processes.append(
        _spawn(["serve", "--port", str(port), "--workers", "1"], env, tmp_path / "api.log")
    )
    if recovery == "janitor":
        processes.append(_spawn(["scheduler"], env, tmp_path / "scheduler.log"))
    db = await asyncpg.connect(_asyncpg_url(env["SETTLE_DATABASE_URL"]))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            async def api_ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(api_ready, timeout=30)
            api = GraphQLClient(http)
            token = (await api.execute(SIGN_UP))["signUp"]["token"]
            client_id = (await api.execute(CREATE_CLIENT, token=token))["createClient"]["id"]
            # and forty issued invoices being paid, each payment's success webhook received
            # right after its invoice was issued, so PDF jobs and webhook jobs alternate
            gateway = sandbox(env)
            pool = await asyncpg.create_pool(
                _asyncpg_url(env["SETTLE_DATABASE_URL"]), min_size=1, max_size=8
            )
            requests = asyncio.Semaphore(8)

            async def bill_and_pay(n: int) -> None:
                async with requests, pool.acquire() as conn:
                    await succeed(http, gateway, conn, await bill(api, token, client_id, n))

            try:
                await asyncio.gather(*(bill_and_pay(n) for n in range(WEBHOOKS)))
            finally:
                await pool.close()
        assert await db.fetchval("SELECT count(*) FROM webhook_event") == WEBHOOKS

        # when a worker starts on them and is killed with SIGKILL in the middle
        worker = _spawn(["worker", "--threads", "4"], env, tmp_path / "worker.log")
        processes.append(worker)

        async def under_way() -> bool:
            applied, _ = await progress(db)
            return applied >= KILL_AFTER_APPLIED

        await wait_for(under_way, timeout=60)
        worker.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(worker.wait, 10) == -signal.SIGKILL
        # with work left in its hands (fetched, never acknowledged) and undone
        assert await unacked(env["SETTLE_REDIS_URL"]) > 0
        applied, rendered = await progress(db)
        assert applied < WEBHOOKS or rendered < WEBHOOKS
        # and a new worker started in its place
        processes.append(_spawn(["worker", "--threads", "4"], env, tmp_path / "worker-2.log"))

        # then within the bound, every payment is applied and every invoice has its PDF
        async def recovered() -> bool:
            return await progress(db) == (WEBHOOKS, WEBHOOKS)

        await wait_for(recovered, timeout=RECOVERY_BOUND, interval=0.2)

        # and nothing twice: one event per payment, applied on its first attempt; one audit
        # entry, allocation and announcement per payment; each invoice paid its own total
        per_payment = await db.fetch(
            """
            SELECT p.id,
                   (SELECT count(*) FROM webhook_event e WHERE e.payment_id = p.id
                      AND e.outcome = 'applied' AND e.attempts = 1) AS events,
                   (SELECT count(*) FROM payment_audit_entry a WHERE a.payment_id = p.id
                      AND a.action = 'payment_succeeded') AS audits,
                   (SELECT count(*) FROM payment_allocation l WHERE l.payment_id = p.id) AS lines,
                   (SELECT count(*) FROM outbox_message o WHERE o.kind = 'event'
                      AND o.payload->>'paymentId' = p.id::text
                      AND o.payload->>'status' = 'succeeded') AS announced
            FROM payment p
            """
        )
        assert len(per_payment) == WEBHOOKS
        assert {(r["events"], r["audits"], r["lines"], r["announced"]) for r in per_payment} == {
            (1, 1, 1, 1)
        }
        invoices = await db.fetch(
            """
            SELECT i.status, i.amount_paid_minor, i.total_minor, i.pdf_key,
                   (SELECT count(*) FROM activity_event v WHERE v.entity_id = i.id
                      AND v.verb = 'pdf_rendered') AS rendered
            FROM invoice i
            """
        )
        assert {
            (r["status"], r["amount_paid_minor"], r["total_minor"], r["rendered"]) for r in invoices
        } == {("paid", 12_500, 12_500, 1)}
        assert len(invoices) == WEBHOOKS
        # and every PDF is in storage
        files = tmp_path / "files"
        assert all((files / r["pdf_key"]).read_bytes().startswith(b"%PDF-") for r in invoices)
    finally:
        await db.close()
    # and the API, the new worker (and the scheduler) are still up
    assert [p.poll() for p in processes if p is not worker] == [None] * (len(processes) - 1), logs(
        tmp_path
    )


def logs(directory: Path) -> str:
    return "\n".join(f"{path.name}:\n{path.read_text()}" for path in directory.glob("*.log"))
