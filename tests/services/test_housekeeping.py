"""Housekeeping: spent rows go after their keep; everything an operator may need stays."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from settle.core import clock
from settle.core.settings import Settings
from settle.models.outbox import OutboxKind, OutboxMessage
from settle.models.telegram import TelegramUpdate
from settle.services import housekeeping
from settle.tasks.broker import send_by_name
from settle.tasks.scheduler import default_jobs
from tests.conftest import Backend
from tests.fixtures.db import drain_jobs

DAY = timedelta(days=1)


async def outbox_row(*, created_days_ago: float, published_days_ago: float | None) -> int:
    now = clock.now()
    row = await OutboxMessage.create(
        kind=OutboxKind.EVENT,
        topic="settle.test",
        payload={},
        created_at=now - created_days_ago * DAY,
        published_at=None if published_days_ago is None else now - published_days_ago * DAY,
    )
    return row.id


async def test_published_outbox_rows_go_after_their_keep_and_unpublished_ones_stay(
    db: Backend,
) -> None:
    # given rows published 8 and 6 days ago, and rows never published, old and new
    old = await outbox_row(created_days_ago=8, published_days_ago=8)
    recent = await outbox_row(created_days_ago=8, published_days_ago=6)
    given_up = await outbox_row(created_days_ago=30, published_days_ago=None)
    waiting = await outbox_row(created_days_ago=0, published_days_ago=None)

    # when housekeeping runs with the default keep (7 days)
    pruned = await housekeeping.prune(Settings())

    # then only the row published more than 7 days ago is gone
    assert pruned.outbox_messages == 1
    kept = await OutboxMessage.all().order_by("id").values_list("id", flat=True)
    assert list(kept) == sorted([recent, given_up, waiting])
    assert old not in kept

    # and a shorter keep takes the other published row on the next run, and nothing twice
    again = await housekeeping.prune(Settings(outbox_keep_days=5))
    assert again.outbox_messages == 1
    assert sorted(await OutboxMessage.all().values_list("id", flat=True)) == sorted(
        [given_up, waiting]
    )


async def test_a_backlog_is_deleted_in_batches_to_the_last_row(
    db: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given more old published rows than one batch holds, and one to keep
    monkeypatch.setattr(housekeeping, "BATCH_SIZE", 3)
    for _ in range(7):
        await outbox_row(created_days_ago=10, published_days_ago=10)
    keep = await outbox_row(created_days_ago=1, published_days_ago=1)

    # when
    pruned = await housekeeping.prune(Settings())

    # then every old row went, in batches, and the recent one stayed
    assert pruned.outbox_messages == 7
    assert list(await OutboxMessage.all().values_list("id", flat=True)) == [keep]


async def test_telegram_updates_are_kept_a_week_then_go(db: Backend) -> None:
    # given an update handled 8 days ago and one handled 2 days ago
    now = clock.now()
    await TelegramUpdate.create(update_id=1, received_at=now - 8 * DAY)
    await TelegramUpdate.create(update_id=2, received_at=now - 2 * DAY)

    # when
    pruned = await housekeeping.prune(Settings())

    # then the old one is gone: Telegram stopped redelivering it long ago
    assert pruned.telegram_updates == 1
    assert list(await TelegramUpdate.all().values_list("update_id", flat=True)) == [2]
    assert pruned.counts() == {"outbox_messages": 0, "telegram_updates": 1}


def test_housekeeping_runs_daily_and_its_keep_is_validated() -> None:
    jobs = {job.name: job for job in default_jobs(Settings())}
    assert jobs["housekeeping.prune"].cron == "30 3 * * *"
    with pytest.raises(ValueError, match="outbox_keep_days"):
        Settings(outbox_keep_days=0)


async def test_the_scheduled_job_prunes_through_the_worker(db: Backend) -> None:
    # given an outbox row published long ago
    await outbox_row(created_days_ago=30, published_days_ago=30)

    # when the scheduler's job runs on the worker
    await asyncio.to_thread(send_by_name, "housekeeping.prune", [], {})
    await drain_jobs()

    # then the row is gone
    assert await OutboxMessage.all().count() == 0
