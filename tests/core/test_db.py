"""Read snapshots: one moment for a query operation's reads, and writes that step out of it."""

from __future__ import annotations

import asyncio

import pytest
from tortoise import Tortoise
from tortoise.exceptions import TransactionManagementError

from settle.core import clock
from settle.core.db import read_snapshot, snapshot_slots
from settle.core.outbox import emit_event, transaction
from settle.models.outbox import OutboxKind, OutboxMessage
from tests.conftest import Backend

CHANNEL = "test.snapshot"


def require_postgres(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite reads are not wrapped in a snapshot")


async def test_a_snapshot_keeps_its_moment_while_a_write_inside_commits_on_its_own(
    db: Backend,
) -> None:
    require_postgres(db)
    async with read_snapshot() as snapshot:
        assert snapshot is not None
        # given the snapshot taken by its first read
        assert await OutboxMessage.filter(topic=CHANNEL).count() == 0
        # when a write inside it goes through a transaction, with an event to relay
        async with transaction():
            await emit_event(CHANNEL, {"n": 1})
        # then the snapshot still shows its moment
        assert await OutboxMessage.filter(topic=CHANNEL).count() == 0
    # while the write committed, and its event was relayed after the commit
    (row,) = await OutboxMessage.filter(topic=CHANNEL)
    assert (row.payload, row.published_at is not None) == ({"n": 1}, True)


async def test_a_write_that_does_not_step_out_is_refused(db: Backend) -> None:
    require_postgres(db)
    # when something writes straight into the snapshot
    with pytest.raises(TransactionManagementError, match="read-only transaction"):
        async with read_snapshot():
            await OutboxMessage.create(
                kind=OutboxKind.EVENT, topic=CHANNEL, payload={}, created_at=clock.now()
            )
    # then nothing was written
    assert await OutboxMessage.filter(topic=CHANNEL).count() == 0


async def test_snapshots_leave_connections_for_the_writes_they_make(db: Backend) -> None:
    require_postgres(db)
    pool_size = db.settings.database_pool_size
    slots = snapshot_slots(pool_size)
    # given three times as many operations as the pool has connections, each holding its
    # snapshot until as many hold one as may, then writing
    holding = 0
    everyone_holds = asyncio.Event()

    async def operation(n: int) -> None:
        nonlocal holding
        async with read_snapshot():
            await OutboxMessage.filter(topic=CHANNEL).count()
            holding += 1
            if holding == slots:
                everyone_holds.set()
            await everyone_holds.wait()
            async with transaction():
                await emit_event(CHANNEL, {"n": n})

    # when they run at once
    await asyncio.wait_for(
        asyncio.gather(*(operation(n) for n in range(3 * pool_size))), timeout=60
    )
    # then every write committed and was relayed: no operation waited forever for a
    # connection the others held
    published = OutboxMessage.filter(topic=CHANNEL, published_at__isnull=False)
    assert await published.count() == 3 * pool_size


async def test_reads_inside_a_transaction_stay_in_it(db: Backend) -> None:
    async with transaction() as conn, read_snapshot() as snapshot:
        assert snapshot is None
        assert Tortoise.get_connection("default") is conn


async def test_sqlite_reads_are_not_wrapped(db: Backend) -> None:
    if db.name != "sqlite":
        pytest.skip("the SQLite case")
    async with read_snapshot() as snapshot:
        assert snapshot is None
