"""The outbox relay: publish events and send jobs that committed transactions wrote.

Events are published in outbox id order, one relay at a time: a turn per process
(an asyncio lock), and on PostgreSQL a transaction-level advisory lock across
processes. Commits waiting for the turn are relayed together by the next one.
Each relay publishes every unpublished event up to its own, oldest first, and
stops at the first it cannot publish, leaving the rest in order for the next. An
event that has failed ``MAX_EVENT_ATTEMPTS`` times is passed over (it stays in the
outbox with its last error, and is logged) so that it cannot hold back the rest.

Why: an outbox id is taken when the row is inserted, not when its transaction
commits, and concurrent transactions commit in any order. Two changes of one row
are ordered by the row's lock, though: the second transaction writes its event
after the first committed, so its id is higher and the first's row is visible
to its relay. Publishing in id order under the lock therefore puts every two
events of one row in the stream in the order their changes committed; events
of unrelated concurrent transactions are ordered by id, which is an order they
could have committed in.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import timedelta

from tortoise import Tortoise
from tortoise.expressions import F
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from settle.core import clock
from settle.models.outbox import OutboxKind, OutboxMessage

log = logging.getLogger(__name__)

BATCH_SIZE = 200
# An event is tried this many times; then it is passed over (kept, with its last error,
# and logged) so that one event the bus always refuses cannot hold back every later one.
MAX_EVENT_ATTEMPTS = 5
# The advisory lock every process's event relay takes on PostgreSQL (an arbitrary
# constant: "settle" read as hex digits, near enough).
EVENT_RELAY_LOCK = 0x5E771E


class _Turns:
    """This event loop's turn at publishing events (SQLite has no row locks to order by),
    and the ids of committed events waiting for one."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting: set[int] = set()


_turns_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turns] = (
    weakref.WeakKeyDictionary()
)


def _turns() -> _Turns:
    loop = asyncio.get_running_loop()
    turns = _turns_by_loop.get(loop)
    if turns is None:
        turns = _turns_by_loop[loop] = _Turns()
    return turns


async def relay_committed_jobs(jobs: Sequence[int]) -> int:
    """Send the jobs a transaction wrote, right after it committed; returns how many."""
    query = OutboxMessage.filter(id__in=list(jobs), kind=OutboxKind.JOB, published_at__isnull=True)
    sent, _, _ = await _relay(query)
    return sent


async def relay_committed_events(events: Sequence[int]) -> int:
    """Publish the events a transaction wrote, right after it committed; returns how
    many this call published.

    Unpublished events older than them go first, so the stream keeps id order.
    Commits that wait for the turn together are relayed together: the turn takes
    every event waiting when it starts, so a burst of commits (a hundred payments at
    once) costs a few relay transactions rather than one each, one after another.
    """
    turns = _turns()
    mine = set(events)
    turns.waiting |= mine
    try:
        async with turns.lock:
            if not mine & turns.waiting:
                return 0  # an earlier turn took them, with everything waiting then
            upto = max(turns.waiting)
            return await _relay_all_events(
                lambda: OutboxMessage.filter(id__lte=upto), turns.waiting
            )
    finally:
        # Sent or not, they are off the list: a failed event is the catch-up's.
        turns.waiting -= mine


async def relay_pending(older_than: timedelta = timedelta(seconds=30)) -> int:
    """Catch-up: relay rows a crash left behind, oldest first; returns how many."""
    cutoff = clock.now() - older_than
    turns = _turns()
    total = await _relay_all_events(
        lambda: OutboxMessage.filter(created_at__lte=cutoff), turns.waiting, turn=turns.lock
    )
    after = 0
    while True:
        # Walk on past the rows this run tried, so rows that keep failing (an actor
        # that no longer exists) cannot hold back everything queued behind them.
        sent, fetched, after = await _relay(
            OutboxMessage.filter(
                kind=OutboxKind.JOB,
                published_at__isnull=True,
                created_at__lte=cutoff,
                id__gt=after,
            )
        )
        total += sent
        if fetched < BATCH_SIZE:
            return total


async def _relay_all_events(
    query: Callable[[], QuerySet[OutboxMessage]],
    waiting: set[int],
    *,
    turn: asyncio.Lock | None = None,
) -> int:
    """Publish what ``query`` selects, batch after batch, until done or an event fails.

    Each batch takes ``turn`` if given (else the caller holds it), so a long catch-up
    lets commits relay in between. The events handled (sent, or passed over) leave
    ``waiting``.
    """
    total = 0
    while True:
        async with turn if turn is not None else nullcontext():
            sent, finished = await _relay_events(query(), waiting)
        total += sent
        if finished or not sent:
            return total


async def _relay_events(query: QuerySet[OutboxMessage], waiting: set[int]) -> tuple[int, bool]:
    """Publish the unpublished events ``query`` selects, in id order, up to BATCH_SIZE.

    Returns (sent, finished): finished when nothing selected is left unpublished
    (the batch was not full and nothing failed).
    """
    async with in_transaction() as connection:
        if _is_postgres():
            await connection.execute_query(f"SELECT pg_advisory_xact_lock({EVENT_RELAY_LOCK})")
        qs = (
            query.filter(
                kind=OutboxKind.EVENT,
                published_at__isnull=True,
                attempts__lt=MAX_EVENT_ATTEMPTS,
            )
            .order_by("id")
            .limit(BATCH_SIZE)
        )
        if _is_postgres():
            qs = qs.select_for_update()
        rows = await qs
        sent: list[int] = []
        finished = len(rows) < BATCH_SIZE
        handled: list[int] = []
        for row in rows:
            if await _send(row):
                sent.append(row.id)
            elif row.attempts >= MAX_EVENT_ATTEMPTS:
                log.error("outbox.event_given_up", extra={"outbox_id": row.id})
            else:
                finished = False  # later events wait: the stream keeps their order
                break
            handled.append(row.id)
        await _mark_published(sent)
    waiting.difference_update(handled)  # once committed: a rollback sends them again
    return len(sent), finished


async def _send(row: OutboxMessage) -> bool:
    """Deliver one row; False when it failed, with the failure recorded on the row."""
    try:
        await _deliver(row)
    except Exception as exc:
        log.exception("outbox.relay_failed", extra={"outbox_id": row.id})
        row.attempts += 1
        row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        await row.save(update_fields=["attempts", "last_error"])
        return False
    return True


async def _mark_published(ids: list[int]) -> None:
    """Mark delivered rows in one statement: a payment's commit relays half a dozen rows,
    and a statement each was a fifth of its round trips. A crash before this re-sends
    the batch: jobs are idempotent and the stream keeps each event once."""
    if ids:
        await OutboxMessage.filter(id__in=ids).update(
            published_at=clock.now(), attempts=F("attempts") + 1
        )


async def _relay(query: QuerySet[OutboxMessage]) -> tuple[int, int, int]:
    """Send one batch of jobs; returns (sent, rows taken, highest id taken)."""
    async with in_transaction():
        qs = query.order_by("id").limit(BATCH_SIZE)
        if _is_postgres():
            # Two relays (the request that committed and the catch-up, or two
            # replicas) must not both send a row: each takes the rows it locked.
            qs = qs.select_for_update(skip_locked=True)
        rows = await qs
        sent: list[int] = []
        for row in rows:
            if await _send(row):
                sent.append(row.id)
        await _mark_published(sent)
        return len(sent), len(rows), rows[-1].id if rows else 0


async def _deliver(row: OutboxMessage) -> None:
    if row.kind is OutboxKind.EVENT:
        from settle.subscriptions.bus import get_bus

        # Named by its row: published again after a crash, the stream keeps it once.
        await get_bus().publish(row.topic, row.payload, once=f"outbox.{row.id}")
    else:
        from settle.tasks.broker import send_by_name

        # Enqueueing on Redis is a blocking call; keep it off the event loop.
        await asyncio.to_thread(
            send_by_name, row.topic, row.payload.get("args", []), row.payload.get("kwargs", {})
        )


def _is_postgres() -> bool:
    return Tortoise.get_connection("default").capabilities.dialect == "postgres"
