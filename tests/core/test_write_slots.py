"""A burst of writes leaves connections for reads: at most snapshot_slots transactions at once."""

from __future__ import annotations

import asyncio

import pytest
from tortoise import Tortoise

from settle.core.db import snapshot_slots
from settle.core.outbox import transaction
from settle.models.client import Client
from tests.conftest import Backend, wait_for


async def _true(value: bool) -> bool:
    return value


async def test_a_read_is_not_queued_behind_a_burst_of_writes(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite has no pool: its writers queue on its one writer lock")
    pool = Tortoise.get_connection("default")
    slots = snapshot_slots(pool.pool_maxsize)
    inside = 0
    most = 0
    finished = 0
    release = asyncio.Event()

    async def writer() -> None:
        nonlocal inside, most, finished
        async with transaction() as conn:
            await conn.execute_query("SELECT 1")
            inside += 1
            most = max(most, inside)
            # Holds its connection until the test lets it go.
            await release.wait()
            inside -= 1
        finished += 1

    # given more writers than the pool has connections, each holding one
    writers = [asyncio.create_task(writer()) for _ in range(pool.pool_maxsize + 10)]
    await wait_for(lambda: _true(inside >= slots))
    # when a read comes while they hold their connections
    count = await asyncio.wait_for(Client.all().count(), timeout=10)
    # then it is answered at once, no writer having finished, and only `slots` wrote at once
    assert (count, finished, most) == (0, 0, slots)
    release.set()
    await asyncio.gather(*writers)
    assert (finished, most) == (len(writers), slots)
