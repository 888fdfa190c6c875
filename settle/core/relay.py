"""The outbox relay: publish events and send jobs that committed transactions wrote."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

from tortoise import Tortoise
from tortoise.expressions import F
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from settle.core import clock
from settle.models.outbox import OutboxKind, OutboxMessage

log = logging.getLogger(__name__)

BATCH_SIZE = 200


async def relay_ids(ids: Sequence[int]) -> int:
    """Relay the given rows right after their transaction committed; returns how many."""
    sent, _, _ = await _relay(OutboxMessage.filter(id__in=list(ids), published_at__isnull=True))
    return sent


async def relay_pending(older_than: timedelta = timedelta(seconds=30)) -> int:
    """Catch-up: relay rows a crash left behind, oldest first; returns how many."""
    cutoff = clock.now() - older_than
    total = 0
    after = 0
    while True:
        # Walk on past the rows this run tried, so rows that keep failing (an actor
        # that no longer exists) cannot hold back everything queued behind them.
        sent, fetched, after = await _relay(
            OutboxMessage.filter(published_at__isnull=True, created_at__lte=cutoff, id__gt=after)
        )
        total += sent
        if fetched < BATCH_SIZE:
            return total


async def _relay(query: QuerySet[OutboxMessage]) -> tuple[int, int, int]:
    """Deliver one batch; returns (sent, rows taken, highest id taken)."""
    async with in_transaction():
        qs = query.order_by("id").limit(BATCH_SIZE)
        if _supports_skip_locked():
            # Two relays (the request that committed and the catch-up, or two
            # replicas) must not both send a row: each takes the rows it locked.
            qs = qs.select_for_update(skip_locked=True)
        rows = await qs
        sent: list[int] = []
        for row in rows:
            try:
                await _deliver(row)
            except Exception as exc:
                log.exception("outbox.relay_failed", extra={"outbox_id": row.id})
                row.attempts += 1
                row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                await row.save(update_fields=["attempts", "last_error"])
                continue
            sent.append(row.id)
        if sent:
            # One statement for the batch: a payment's commit relays half a dozen rows,
            # and a statement each was a fifth of its round trips.
            await OutboxMessage.filter(id__in=sent).update(
                published_at=clock.now(), attempts=F("attempts") + 1
            )
        return len(sent), len(rows), rows[-1].id if rows else 0


async def _deliver(row: OutboxMessage) -> None:
    if row.kind is OutboxKind.EVENT:
        from settle.subscriptions.bus import get_bus

        await get_bus().publish(row.topic, row.payload)
    else:
        from settle.tasks.broker import send_by_name

        # Enqueueing on Redis is a blocking call; keep it off the event loop.
        await asyncio.to_thread(
            send_by_name, row.topic, row.payload.get("args", []), row.payload.get("kwargs", {})
        )


def _supports_skip_locked() -> bool:
    return Tortoise.get_connection("default").capabilities.dialect == "postgres"
