"""The floor of `list.py`: the same page of invoices from Settle's own tables, nothing else.

Starlette on uvicorn, one asyncpg pool, two statements (the page of invoices
with their clients' names, then their lines) and the JSON written by hand in
Settle's shape. No GraphQL, no ORM, no authentication, no snapshot: what any
implementation of this answer costs at least.

    python bench/_raw_list.py --database-url postgres://... --port 8001 --agency-id <uuid>
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from settle.core.money import CURRENCY_EXPONENTS

INVOICES = """
SELECT i.id, i.number, i.status, i.issue_date, i.due_date, i.currency,
       i.total_minor, i.subtotal_minor, c.name AS client_name
FROM invoice i JOIN client c ON c.id = i.client_id
WHERE i.agency_id = $1
ORDER BY i.created_at DESC, i.id DESC
LIMIT 100
"""
LINES = """
SELECT invoice_id, description, quantity, unit_price_minor, amount_minor
FROM invoice_line WHERE invoice_id = ANY($1::uuid[])
ORDER BY invoice_id, position
"""


def money(minor: int, currency: str) -> dict[str, str]:
    digits = CURRENCY_EXPONENTS[currency]
    whole, fraction = divmod(abs(minor), 10**digits)
    sign = "-" if minor < 0 else ""
    amount = f"{sign}{whole}.{fraction:0{digits}d}" if digits else f"{sign}{whole}"
    return {"amount": amount, "currency": currency}


def build_app(database_url: str, agency_id: uuid.UUID) -> Starlette:
    pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(database_url, min_size=4, max_size=20)
        try:
            yield
        finally:
            await pool.close()

    async def graphql(request: Request) -> Response:
        await request.body()
        assert pool is not None
        async with pool.acquire() as conn:
            invoices = await conn.fetch(INVOICES, agency_id)
            lines = await conn.fetch(LINES, [row["id"] for row in invoices])
        by_invoice: dict[uuid.UUID, list[dict[str, Any]]] = {}
        currency_of = {row["id"]: row["currency"] for row in invoices}
        for line in lines:
            currency = currency_of[line["invoice_id"]]
            by_invoice.setdefault(line["invoice_id"], []).append(
                {
                    "description": line["description"],
                    "quantity": f"{line['quantity'].quantize(Decimal('0.01'))}",
                    "unitPrice": money(line["unit_price_minor"], currency),
                    "amount": money(line["amount_minor"], currency),
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
                    "total": money(row["total_minor"], row["currency"]),
                    "subtotal": money(row["subtotal_minor"], row["currency"]),
                    "client": {"name": row["client_name"]},
                    "lineItems": by_invoice.get(row["id"], []),
                }
            }
            for row in invoices
        ]
        body = json.dumps({"data": {"invoices": {"edges": edges}}}, separators=(",", ":"))
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/graphql", graphql, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--agency-id", type=uuid.UUID, required=True)
    args = parser.parse_args()
    url = args.database_url.replace("postgres://", "postgresql://", 1)
    uvicorn.run(
        build_app(url, args.agency_id), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
