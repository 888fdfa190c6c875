"""The transaction boundary and the outbox.

A service writes its change and, in the same transaction, outbox rows for the
events to publish and the jobs to send. The boundary (a request, a task, a
command) opens the transaction with ``transaction()``; after it commits, the
rows it wrote are relayed at once. A rolled-back transaction leaves no rows,
so nobody hears of it; a crash between commit and relay leaves rows that the
relay's catch-up publishes later.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from settle.core import clock
from settle.core.db import outside_snapshot, write_slot
from settle.models.outbox import OutboxKind, OutboxMessage

log = logging.getLogger(__name__)

# The rows the current boundary wrote, by kind: (events, jobs).
_written: ContextVar[tuple[list[int], list[int]] | None] = ContextVar(
    "settle_outbox_written", default=None
)
_deferred: ContextVar[bool] = ContextVar("settle_outbox_deferred", default=False)


@contextmanager
def relay_later() -> Iterator[None]:
    """Leave the rows written inside to the catch-up relay instead of relaying on commit.

    For a process with no consumer of its own: ``settle demo`` in the embedded
    setup would hand jobs to an in-memory broker that exits with it, so they
    wait in the outbox for the server's relay instead.
    """
    token = _deferred.set(True)
    try:
        yield
    finally:
        _deferred.reset(token)


@asynccontextmanager
async def transaction() -> AsyncIterator[BaseDBAsyncClient]:
    """Open the one transaction of a boundary; relay its outbox rows after commit.

    Nested use joins the outer transaction (as a savepoint) and leaves the relay
    to the outermost boundary. Inside a query operation's read-only snapshot,
    the transaction (and the relay after it) runs on a connection of its own.
    At most ``snapshot_slots`` boundaries write at once (``write_slot``).
    """
    if _written.get() is not None:
        async with in_transaction() as conn:
            yield conn
        return
    with outside_snapshot():
        events: list[int] = []
        jobs: list[int] = []
        relay_now = not _deferred.get()
        async with write_slot():
            token = _written.set((events, jobs))
            try:
                async with in_transaction() as conn:
                    yield conn
            finally:
                _written.reset(token)
            if jobs and relay_now:
                await _relay_after_commit("relay_committed_jobs", jobs)
        # Out of the write slot: waiting for the event relay's turn holds no connection,
        # and the transactions behind this one need not wait for it.
        if events and relay_now:
            await _relay_after_commit("relay_committed_events", events)


async def _relay_after_commit(name: str, ids: list[int]) -> None:
    from settle.core import relay

    try:
        await getattr(relay, name)(ids)
    except Exception:
        # The change is committed: failing the caller now would report a write that
        # happened as one that did not. The catch-up relay sends the rows.
        log.exception("outbox.relay_after_commit_failed", extra={"outbox_ids": ids})


def _require_transaction() -> tuple[list[int], list[int]]:
    written = _written.get()
    if written is None:
        raise RuntimeError("outbox writes need a boundary: wrap the call in transaction()")
    return written


async def emit_event(channel: str, payload: dict[str, Any]) -> None:
    """Publish ``payload`` on ``channel`` once the current transaction commits."""
    events, _ = _require_transaction()
    row = await OutboxMessage.create(
        kind=OutboxKind.EVENT, topic=channel, payload=payload, created_at=clock.now()
    )
    events.append(row.id)


async def send_job(actor_name: str, *args: Any, **kwargs: Any) -> None:
    """Send a Dramatiq message to ``actor_name`` once the current transaction commits."""
    _, jobs = _require_transaction()
    row = await OutboxMessage.create(
        kind=OutboxKind.JOB,
        topic=actor_name,
        payload={"args": list(args), "kwargs": kwargs},
        created_at=clock.now(),
    )
    jobs.append(row.id)
