"""The compiled read path against graphql-core's executor and a raw floor, in one process.

`invoices(first: 100) { edges { node { id number status issueDate dueDate
total subtotal client { name } lineItems { ... } } } }` over 100 issued
invoices of three lines each, executed in this process through the Schema
(every extension, the read snapshot, the DataLoaders) and encoded to JSON:

- **graphql-core**: ``SETTLE_COMPILED_READS=false``, the ordinary executor;
- **compiled**: the compiled read path (the default);
- **floor (baseline)**: the same answer from raw asyncpg: one read-only
  snapshot, the page, its lines and its clients in three statements, dicts
  built by hand and encoded with the same JSON encoder. No GraphQL, no ORM.

Each answer is checked against the floor's (the same JSON). The three run
interleaved, round by round, on the same data, machine and moment; the ratios
to the floor are the figures that mean something on another machine.

    uv run python bench/compiled.py [--requests 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
from _common import DEFAULT_POSTGRES_URL, _create_database, _drop_database, asyncpg_url, ms

from settle.core.db import close_db, init_db, migrate
from settle.core.money import Money
from settle.core.outbox import transaction
from settle.core.settings import Settings, configure_settings
from settle.core.tenancy import Actor
from settle.schema.context import Context
from settle.schema.schema import schema
from settle.services import auth as auth_service
from settle.services import client as client_service
from settle.services import invoice as invoice_service
from settle.subscriptions.bus import create_bus, set_bus

DESCRIPTION = "100 invoices with lines and clients: graphql-core vs compiled vs raw asyncpg."
INVOICES = 100
LINES = 3

LIST = """
query Page {
  invoices(first: 100) {
    edges {
      node {
        id number status issueDate dueDate
        total { amount currency } subtotal { amount }
        client { name }
        lineItems { description quantity unitPrice { amount } amount { amount } }
      }
    }
  }
}
"""

FLOOR_PAGE = """
SELECT id, number, status, issue_date, due_date, currency, total_minor, subtotal_minor, client_id
FROM invoice WHERE agency_id = $1 ORDER BY created_at DESC, id DESC LIMIT 101
"""
FLOOR_LINES = """
SELECT invoice_id, description, quantity, unit_price_minor, amount_minor
FROM invoice_line WHERE invoice_id = ANY($1::uuid[]) ORDER BY invoice_id, position, id
"""
FLOOR_CLIENTS = "SELECT id, name FROM client WHERE id = ANY($1::uuid[])"


async def seed(settings: Settings) -> Actor:
    """An agency, a client and ``INVOICES`` issued invoices of ``LINES`` lines."""
    async with transaction():
        signed_up = await auth_service.sign_up(
            settings,
            agency_name="Bench Studio",
            name="Bea Owner",
            email="bea@example.com",
            password="correct horse",
        )
    actor = Actor.from_user(signed_up.user)
    async with transaction():
        client = await client_service.create_client(
            actor, {"name": "Acme Ltd", "email": "billing@acme.example", "currency": "USD"}
        )
    lines = [
        {"description": f"Line {n}", "quantity": "1.5", "unit_price": "120.00"}
        for n in range(LINES)
    ]
    for _ in range(INVOICES):
        async with transaction():
            draft = await invoice_service.create_invoice(actor, client.id, None, {}, lines)
        async with transaction():
            await invoice_service.finalize_invoice(actor, draft.id)
    return actor


def graphql_request(settings: Settings, actor: Actor) -> Callable[[], Awaitable[str]]:
    async def run() -> str:
        context = Context(settings=settings, request=None, actor=actor)
        result = await schema.execute(LIST, context_value=context)
        assert result.errors is None, result.errors
        return json.dumps({"data": result.data})

    return run


def floor_request(pool: asyncpg.Pool, agency_id: uuid.UUID) -> Callable[[], Awaitable[str]]:
    async def run() -> str:
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            page = (await conn.fetch(FLOOR_PAGE, agency_id))[:100]
            ids = [row["id"] for row in page]
            lines = await conn.fetch(FLOOR_LINES, ids)
            clients = await conn.fetch(FLOOR_CLIENTS, list({row["client_id"] for row in page}))
        names = {row["id"]: row["name"] for row in clients}
        by_invoice: dict[uuid.UUID, list[dict[str, Any]]] = {id_: [] for id_ in ids}
        currency = {row["id"]: row["currency"] for row in page}
        for line in lines:
            code = currency[line["invoice_id"]]
            by_invoice[line["invoice_id"]].append(
                {
                    "description": line["description"],
                    "quantity": f"{line['quantity'].quantize(Decimal('0.01'))}",
                    "unitPrice": {"amount": Money(line["unit_price_minor"], code).format_amount()},
                    "amount": {"amount": Money(line["amount_minor"], code).format_amount()},
                }
            )
        edges = [
            {
                "node": {
                    "id": str(row["id"]),
                    "number": row["number"],
                    "status": row["status"].upper(),
                    "issueDate": row["issue_date"].isoformat() if row["issue_date"] else None,
                    "dueDate": row["due_date"].isoformat() if row["due_date"] else None,
                    "total": {
                        "amount": Money(row["total_minor"], row["currency"]).format_amount(),
                        "currency": row["currency"],
                    },
                    "subtotal": {
                        "amount": Money(row["subtotal_minor"], row["currency"]).format_amount()
                    },
                    "client": {"name": names[row["client_id"]]},
                    "lineItems": by_invoice[row["id"]],
                }
            }
            for row in page
        ]
        return json.dumps({"data": {"invoices": {"edges": edges}}})

    return run


async def timed(run: Callable[[], Awaitable[str]], requests: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each request. The CPU time is this process's alone: on a
    shared machine it moves less with the neighbours' load than the wall time does."""
    samples = []
    for _ in range(requests):
        wall, cpu = time.perf_counter(), time.process_time()
        await run()
        samples.append((time.perf_counter() - wall, time.process_time() - cpu))
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("SETTLE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a PostgreSQL server to create the bench's database on (any database of it)",
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per round and path")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    database_url = await _create_database(args.postgres_url)
    try:
        await migrate(database_url)
        compiled = Settings(
            database_url=database_url,
            secret_key="bench-secret-key-not-for-production-use",
            rate_limits_enabled=False,
        )
        ordinary = compiled.model_copy(update={"compiled_reads": False})
        configure_settings(compiled)
        await init_db(database_url)
        # Seeding writes outbox rows; their events go to an in-process bus nobody hears.
        set_bus(create_bus(None))
        pool = await asyncpg.create_pool(asyncpg_url(database_url), min_size=1, max_size=2)
        try:
            actor = await seed(compiled)
            paths = {
                "graphql-core": graphql_request(ordinary, actor),
                "compiled": graphql_request(compiled, actor),
                "floor (raw asyncpg)": floor_request(pool, actor.agency_id),
            }
            # Every path answers the same JSON, and warms up (plans, statement caches).
            bodies = {name: await run() for name, run in paths.items()}
            for _ in range(20):
                for run in paths.values():
                    await run()
            floor_body = bodies["floor (raw asyncpg)"]
            for name, body in bodies.items():
                assert body == floor_body, f"{name} answers differently from the floor"
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, run in paths.items():
                    samples[name] += await timed(run, args.requests)
        finally:
            await pool.close()
            await close_db()
            set_bus(None)
    finally:
        await _drop_database(args.postgres_url, database_url)

    def median(name: str, which: int) -> float:
        return statistics.median(sample[which] for sample in samples[name])

    floor = "floor (raw asyncpg)"
    print(f"\n{DESCRIPTION}")
    print(f"{args.rounds} rounds x {args.requests} requests per path, one at a time\n")
    header = (
        f"{'path':<22}{'wall p50':>11}{'wall p95':>11}{'x floor':>9}{'CPU p50':>11}{'x floor':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, values in samples.items():
        walls = sorted(wall for wall, _ in values)
        p95 = walls[int(0.95 * (len(walls) - 1))]
        wall, cpu = median(name, 0), median(name, 1)
        print(
            f"{name:<22}{ms(wall):>11}{ms(p95):>11}{wall / median(floor, 0):>8.1f}x"
            f"{ms(cpu):>11}{cpu / median(floor, 1):>8.1f}x"
        )
    print(
        f"\ncompiled / graphql-core: wall {median('compiled', 0) / median('graphql-core', 0):.2f}x,"
        f" CPU {median('compiled', 1) / median('graphql-core', 1):.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
