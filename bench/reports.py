"""The reports over 100,000 payments: each service call against one hand-written statement.

One agency (America/New_York) with 100,000 payments over two years in two currencies
(succeeded, refunded, failed, cancelled, pending), one allocation each (a third of
them paying advance, balance or standard milestones), 15,000 refunds, 20,000
invoices, 100,000 webhook events and a project with 200 files, written with COPY
into a database of its own. Each report is then timed as the API runs it (the
service function: the agency's zone, the report's statements, the Python that
shapes the result), and beside it the same figures computed by one raw SQL
statement sent straight through asyncpg, written as one would by hand for
PostgreSQL (GROUPING SETS where the service, which also runs on SQLite, uses
UNION ALL). Rounds interleave the two, so both see the same machine and moment.

    uv run python bench/reports.py [--payments 100000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from _common import (
    _create_database,
    _drop_database,
    add_service_arguments,
    ms,
    print_table,
)
from tortoise import Tortoise

from settle.core.db import close_db, init_db, migrate
from settle.core.settings import Settings, configure_settings
from settle.core.tenancy import Actor
from settle.models.agency import Agency, Role
from settle.models.client import Client
from settle.models.milestone import Milestone, MilestoneKind, MilestoneStatus
from settle.models.project import Project
from settle.services import report as report_service

DESCRIPTION = "Each report over 100,000 payments, against one raw SQL statement."
ZONE = "America/New_York"
START, END = date(2025, 1, 1), date(2026, 12, 31)


def _now() -> datetime:
    return datetime.now(UTC)


async def _copy(table: str, columns: list[str], records: list[tuple[Any, ...]]) -> None:
    conn = Tortoise.get_connection("default")
    async with conn.acquire_connection() as raw:  # type: ignore[attr-defined]
        await raw.copy_records_to_table(table, records=records, columns=columns)


async def seed(payments: int, rng: random.Random) -> tuple[Actor, uuid.UUID]:
    agency = await Agency.create(name="Bench Agency", timezone=ZONE)
    actor = Actor(uuid.uuid4(), agency.id, Role.OWNER, None, "Owner", "owner@bench.example")
    clients = [
        await Client.create(agency_id=agency.id, name=f"Client {n:03d}", currency="USD")
        for n in range(50)
    ]
    project = await Project.create(
        agency_id=agency.id, client_id=clients[0].id, name="Site", currency="USD"
    )
    milestones = [
        await Milestone.create(
            agency_id=agency.id,
            project_id=project.id,
            client_id=clients[0].id,
            title=kind.value,
            kind=kind,
            amount_minor=100_00,
            currency="USD",
            status=MilestoneStatus.PAID,
            paid_at=_now() - timedelta(days=30),
        )
        for kind in MilestoneKind
    ]
    now = _now()
    span = (END - START).days * 86400
    base = datetime.combine(START, datetime.min.time(), UTC)
    invoices = []
    for _ in range(20_000):
        issue = START + timedelta(days=rng.randrange((END - START).days))
        total = rng.randrange(1_00, 50_000_00)
        invoices.append(
            (
                uuid.uuid4(), now, now, agency.id, rng.choice(clients).id,
                rng.choice(["USD", "USD", "INR"]),
                rng.choice(["sent", "viewed", "partially_paid", "overdue", "paid"]),
                "manual", 0, total, 0, 0, total, rng.choice([0, total // 2]), 0, 0,
                issue, issue + timedelta(days=30),
            )
        )  # fmt: skip
    await _copy(
        "invoice",
        [
            "id", "created_at", "updated_at", "agency_id", "client_id", "currency", "status",
            "source", "tax_rate", "subtotal_minor", "discount_minor", "tax_minor", "total_minor",
            "amount_paid_minor", "amount_refunded_minor", "amount_credited_minor",
            "issue_date", "due_date",
        ],
        invoices,
    )  # fmt: skip
    payment_rows, allocations, refunds, events = [], [], [], []
    statuses = ["succeeded"] * 6 + ["partially_refunded", "refunded", "failed", "cancelled"]
    for _ in range(payments):
        invoice = rng.choice(invoices)
        at = base + timedelta(seconds=rng.randrange(span))
        status = rng.choice([*statuses, "pending"])
        provider = rng.choice(["stripe", "razorpay", "sandbox", "offline"])
        amount = rng.randrange(50, 2_000_000)
        ok = status in ("succeeded", "partially_refunded", "refunded")
        payment_id = uuid.uuid4()
        payment_rows.append(
            (
                payment_id, now, now, agency.id, invoice[4], invoice[0], provider, status,
                amount, invoice[5], 0, 0,
                rng.choice(["bank_transfer", "cash", "crypto"]) if provider == "offline" else None,
                at if ok else None, at if status in ("failed", "cancelled") else None,
            )
        )  # fmt: skip
        milestone = rng.choice([None, None, *milestones])
        allocations.append(
            (uuid.uuid4(), now, now, agency.id, payment_id, invoice[0],
             milestone.id if milestone else None, amount, 0)
        )  # fmt: skip
        if ok and status != "succeeded":
            refunds.append(
                (uuid.uuid4(), now, now, agency.id, payment_id, amount // 2, invoice[5],
                 "Bench", "succeeded", at + timedelta(days=2))
            )  # fmt: skip
        events.append(
            (uuid.uuid4(), provider if provider != "offline" else "sandbox",
             f"evt_{payment_id}", "payment.succeeded", json.dumps({}), agency.id, payment_id,
             at, at, rng.choice(["applied", "ignored", "flagged"]), 1)
        )  # fmt: skip
    await _copy(
        "payment",
        [
            "id", "created_at", "updated_at", "agency_id", "client_id", "invoice_id",
            "provider", "status", "amount_minor", "currency", "amount_refunded_minor",
            "reconcile_attempts", "method", "succeeded_at", "failed_at",
        ],
        payment_rows,
    )  # fmt: skip
    await _copy(
        "payment_allocation",
        [
            "id", "created_at", "updated_at", "agency_id", "payment_id", "invoice_id",
            "milestone_id", "amount_minor", "amount_refunded_minor",
        ],
        allocations,
    )  # fmt: skip
    await _copy(
        "refund",
        [
            "id", "created_at", "updated_at", "agency_id", "payment_id", "amount_minor",
            "currency", "reason", "status", "settled_at",
        ],
        refunds,
    )  # fmt: skip
    await _copy(
        "webhook_event",
        [
            "id", "provider", "event_id", "event_type", "payload", "agency_id", "payment_id",
            "received_at", "processed_at", "outcome", "attempts",
        ],
        events,
    )  # fmt: skip
    files = [
        (uuid.uuid4(), now, now, agency.id, project.id, clients[0].id, f"File {n}",
         rng.choice(["beta", "final"]), "ready", "f.zip", "application/zip", 3,
         f"deliverables/bench/{n}", 0)
        for n in range(200)
    ]  # fmt: skip
    await _copy(
        "deliverable",
        [
            "id", "created_at", "updated_at", "agency_id", "project_id", "client_id", "title",
            "kind", "status", "filename", "content_type", "size_bytes", "storage_key",
            "download_count",
        ],
        files,
    )  # fmt: skip
    conn = Tortoise.get_connection("default")
    await conn.execute_script("ANALYZE")
    return actor, project.id


# --- the raw statements -------------------------------------------------------------------

RAW_ANALYTICS = """
WITH facts AS (
    SELECT p.succeeded_at AS at, p.provider, COALESCE(p.method, 'gateway') AS method,
           p.amount_minor AS collected, 0::bigint AS refunded, 1 AS ok, 0 AS bad,
           NULL::int AS days, NULL::text AS kind, 0::bigint AS kind_amount, NULL::uuid AS pid
    FROM payment p
    WHERE p.agency_id = $1 AND p.currency = $2 AND p.succeeded_at >= $3 AND p.succeeded_at < $4
    UNION ALL
    SELECT p.failed_at, p.provider, COALESCE(p.method, 'gateway'), 0, 0, 0, 1, NULL, NULL, 0, NULL
    FROM payment p
    WHERE p.agency_id = $1 AND p.currency = $2 AND p.failed_at >= $3 AND p.failed_at < $4
      AND p.status IN ('failed', 'cancelled')
    UNION ALL
    SELECT r.settled_at, p.provider, COALESCE(p.method, 'gateway'), 0, r.amount_minor, 0, 0,
           NULL, NULL, 0, NULL
    FROM refund r JOIN payment p ON p.id = r.payment_id
    WHERE r.agency_id = $1 AND r.currency = $2 AND r.status = 'succeeded'
      AND r.settled_at >= $3 AND r.settled_at < $4
    UNION ALL
    SELECT p.succeeded_at, p.provider, COALESCE(p.method, 'gateway'), 0, 0, 0, 0,
           (p.succeeded_at AT TIME ZONE $5)::date - i.issue_date,
           COALESCE(m.kind, 'invoice'), a.amount_minor, p.id
    FROM payment_allocation a JOIN payment p ON p.id = a.payment_id
    JOIN invoice i ON i.id = a.invoice_id LEFT JOIN milestone m ON m.id = a.milestone_id
    WHERE p.agency_id = $1 AND p.currency = $2 AND p.succeeded_at >= $3 AND p.succeeded_at < $4
)
SELECT date_trunc($6, at AT TIME ZONE $5)::date AS period, provider, method, kind,
       SUM(collected), SUM(refunded), SUM(ok), SUM(bad), SUM(days), COUNT(days),
       SUM(kind_amount), COUNT(DISTINCT pid)
FROM facts
GROUP BY GROUPING SETS ((1), (provider), (method), (kind), ())
"""

RAW_AGING = """
SELECT c.id, c.name, COUNT(*),
       SUM(due) FILTER (WHERE late <= 0), SUM(due) FILTER (WHERE late BETWEEN 1 AND 30),
       SUM(due) FILTER (WHERE late BETWEEN 31 AND 60),
       SUM(due) FILTER (WHERE late BETWEEN 61 AND 90), SUM(due) FILTER (WHERE late > 90)
FROM (
    SELECT client_id, total_minor - amount_paid_minor + amount_refunded_minor
               - amount_credited_minor AS due, COALESCE($3::date - due_date, 0) AS late
    FROM invoice
    WHERE agency_id = $1 AND currency = $2 AND issue_date <= $3
      AND status IN ('sent', 'viewed', 'partially_paid', 'overdue')
) x JOIN client c ON c.id = x.client_id
WHERE due > 0
GROUP BY GROUPING SETS ((c.id, c.name), ())
"""

RAW_EVENTS = """
SELECT *, COUNT(*) OVER () FROM webhook_event WHERE agency_id = $1
ORDER BY received_at DESC, id DESC LIMIT 21
"""

RAW_ACCESS = """
SELECT d.id, d.kind, bool_and(m.status = 'paid'), max(m.paid_at),
       bool_or(m.kind = 'advance'), bool_and(m.kind <> 'advance' OR m.status = 'paid')
FROM deliverable d JOIN milestone m ON m.project_id = d.project_id AND m.status <> 'cancelled'
WHERE d.project_id = $1 AND d.agency_id = $2 AND d.deleted_at IS NULL AND d.status = 'ready'
GROUP BY d.id, d.kind
"""


async def _raw(sql: str, *args: Any) -> None:
    conn = Tortoise.get_connection("default")
    async with conn.acquire_connection() as raw:  # type: ignore[attr-defined]
        await raw.fetch(sql, *args)


async def _time(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    database_url = await _create_database(args.postgres_url)
    try:
        configure_settings(Settings(database_url=database_url, secret_key="bench-" + "x" * 40))  # type: ignore[arg-type]
        await migrate(database_url)
        await init_db(database_url)
        started = time.perf_counter()
        actor, project_id = await seed(args.payments, random.Random(14))
        print(f"seeded {args.payments:,} payments in {time.perf_counter() - started:.1f} s")
        zone = report_service.ZoneInfo(ZONE)
        lo = report_service.local_midnight(START, zone)
        hi = report_service.local_midnight(END + timedelta(days=1), zone)
        cases: list[tuple[str, Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]] = [
            (
                "paymentAnalytics (2 years by month)",
                lambda: report_service.payment_analytics(
                    actor, start=START, end=END, currency="USD",
                    group_by=report_service.GroupBy.MONTH,
                ),
                lambda: _raw(RAW_ANALYTICS, actor.agency_id, "USD", lo, hi, ZONE, "month"),
            ),
            (
                "paymentAnalytics (2 years by day)",
                lambda: report_service.payment_analytics(
                    actor, start=START, end=END, currency="USD",
                    group_by=report_service.GroupBy.DAY,
                ),
                lambda: _raw(RAW_ANALYTICS, actor.agency_id, "USD", lo, hi, ZONE, "day"),
            ),
            (
                "receivablesAging",
                lambda: report_service.receivables_aging(
                    actor, currency="USD", as_of=date(2026, 12, 31)
                ),
                lambda: _raw(RAW_AGING, actor.agency_id, "USD", date(2026, 12, 31)),
            ),
            (
                "webhookEvents (first 20)",
                lambda: report_service.list_webhook_events(
                    actor, report_service.WebhookEventFilter(), first=20, after=None
                ),
                lambda: _raw(RAW_EVENTS, actor.agency_id),
            ),
            (
                "deliverableAccess (200 files)",
                lambda: report_service.deliverable_access(actor, project_id),
                lambda: _raw(RAW_ACCESS, project_id, actor.agency_id),
            ),
        ]  # fmt: skip
        rows = []
        for name, service, raw in cases:
            await service()
            await raw()
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(await _time(service))
                theirs.append(await _time(raw))
            mine, base = statistics.median(ours), statistics.median(theirs)
            rows.append([name, ms(mine), ms(base), f"{mine / base:.2f}x"])
        print_table(
            f"median of {args.rounds} rounds, {args.payments:,} payments, PostgreSQL",
            ["report", "service", "one raw statement", "ratio"],
            rows,
        )
    finally:
        await close_db()
        await _drop_database(args.postgres_url, database_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    add_service_arguments(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
