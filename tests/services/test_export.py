"""The export run: pages of rows in constant memory, progress, and a killed run restarted."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from settle.core import clock
from settle.core.outbox import relay_later, transaction
from settle.core.settings import configure_settings, get_settings
from settle.core.storage import StoredObject, get_storage
from settle.models.agency import User
from settle.models.client import Client
from settle.models.export import Export, ExportEntity, ExportStatus
from settle.services import export as export_service
from settle.services import janitor
from settle.subscriptions import channels
from settle.subscriptions.bus import get_bus
from settle.tasks.janitor import send_once
from tests.conftest import Backend, wait_for
from tests.fixtures.factories import Account, create_contact
from tests.fixtures.files import StallingStorage, stored_files
from tests.fixtures.graphql import count_queries

pytestmark = pytest.mark.usefixtures("files_dir")


def tune(**changes: Any) -> None:
    """Settings for this test on top of its own storage directory (files_dir restores them)."""
    configure_settings(get_settings().model_copy(update=changes))


async def clients(owner: Account, count: int) -> list[Client]:
    return [
        await Client.create(agency_id=owner.agency_id, name=f"Client {i:03}", currency="USD")
        for i in range(count)
    ]


async def queued_export(owner: Account, entity: ExportEntity = ExportEntity.CLIENTS) -> Export:
    """An export asked for whose job is held back in the outbox: the test runs it itself."""
    with relay_later():
        async with transaction():
            return await export_service.create_export(
                owner.actor, entity, None, export_service.ExportFilter()
            )


def csv_rows(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))


async def test_a_killed_run_is_restarted_by_the_janitor_into_one_complete_file(
    db: Backend, owner: Account, files_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given seven clients, read two at a time, and an export of them
    tune(export_page_size=2, export_progress_interval_seconds=0)
    rows = await clients(owner, 7)
    export = await queued_export(owner)

    # when its run is killed after writing two pages
    real = get_storage()
    stalling = StallingStorage(real, after=3)  # the header, then two pages
    monkeypatch.setattr(export_service, "get_storage", lambda: stalling)
    run = asyncio.create_task(export_service.run_export(export.id))

    async def stalled() -> bool:
        return stalling.stalled.is_set()

    try:
        await wait_for(stalled)
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    finally:
        stalling.resume.set()  # frees the thread the killed write waited in
    monkeypatch.setattr(export_service, "get_storage", lambda: real)

    # then the export is still running, with the first page's progress, and no file
    killed = await Export.get(id=export.id)
    assert (killed.status, killed.attempt, killed.rows, killed.file_key) == (
        ExportStatus.RUNNING,
        1,
        2,
        None,
    )
    assert stored_files(files_dir) == {}
    # and its job delivered again while the claim is fresh does nothing
    await export_service.run_export(export.id)
    assert (await Export.get(id=export.id)).attempt == 1

    # when the janitor looks once the run's claim has lapsed
    shift = export_service.LEASE + timedelta(seconds=get_settings().janitor_stale_seconds + 1)
    clock.set_clock(lambda: datetime.now(UTC) + shift)
    try:
        stuck = await janitor.resend_stuck(send_once)
        await db.drain()
    finally:
        clock.set_clock(None)

    # then it sent the job again, and a new run wrote the whole file from scratch
    assert stuck.jobs[export_service.EXPORT_JOB] == [export.id]
    done = await Export.get(id=export.id)
    assert (done.status, done.attempt, done.rows) == (ExportStatus.COMPLETED, 2, 7)
    files = stored_files(files_dir)
    assert list(files) == [f"exports/{owner.agency_id}/{export.id}/2.csv"]
    assert done.file_key == f"exports/{owner.agency_id}/{export.id}/2.csv"
    assert done.size_bytes == len(files[done.file_key])
    written = csv_rows(files[done.file_key])
    assert [row[0] for row in written[1:]] == [str(client.id) for client in rows]
    # and running it yet again changes nothing
    await export_service.run_export(export.id)
    assert (await Export.get(id=export.id)).attempt == 2
    assert list(stored_files(files_dir)) == [done.file_key]


@pytest.mark.parametrize(("count", "pages"), [(10, 4), (9, 4), (0, 1)])
async def test_rows_are_read_a_page_at_a_time(
    db: Backend, owner: Account, count: int, pages: int
) -> None:
    # given clients each with a primary contact, read three at a time
    tune(export_page_size=3)
    for client in await clients(owner, count):
        await create_contact(owner, client, primary=True, name=f"{client.name} lead")
    export = await queued_export(owner)

    # when the export runs
    with count_queries() as counter:
        await export_service.run_export(export.id)

    # then it read the clients in pages of three (a short or empty page ends it), and each
    # page's primary contacts in one query: memory holds one page, whatever the count
    def reads(table: str) -> list[str]:
        pattern = re.compile(rf'SELECT .* FROM "{table}" .*LIMIT', re.DOTALL)
        return [query for query in counter.queries if pattern.search(query)]

    assert len(reads("client")) == pages, counter.queries
    contact_reads = [
        query
        for query in counter.queries
        if re.search(r'FROM "contact"', query) and "is_primary" in query
    ]
    assert len(contact_reads) == (pages if count % 3 else pages - 1)
    done = await Export.get(id=export.id)
    assert (done.status, done.rows) == (ExportStatus.COMPLETED, count)


@pytest.mark.parametrize(("interval", "progress"), [(0, [2, 4, 6, 7]), (3600, [2])])
async def test_progress_is_announced_at_most_once_per_interval(
    db: Backend, owner: Account, interval: float, progress: list[int]
) -> None:
    # given seven clients read two at a time, and someone listening on the export channel
    tune(export_page_size=2, export_progress_interval_seconds=interval)
    await clients(owner, 7)
    export = await queued_export(owner)
    channel = channels.exports(owner.agency_id)
    async with get_bus().subscribe([channel]) as messages:

        async def listening() -> bool:
            return await get_bus().subscriber_count(channel) == 1

        await wait_for(listening)

        # when the export runs
        await export_service.run_export(export.id)

        # then it is heard claimed, progressing as often as the interval allows, completed
        heard: list[tuple[str, int]] = []

        async def until_done() -> None:
            async for message in messages:
                if message["exportId"] != str(export.id):
                    continue
                heard.append((message["status"], message["rows"]))
                if message["status"] == "completed":
                    return

        await asyncio.wait_for(until_done(), 10)
    assert heard == [
        ("running", 0),
        *[("running", rows) for rows in progress],
        ("completed", 7),
    ]


async def test_a_requester_who_left_fails_the_export(db: Backend, owner: Account) -> None:
    # given an export asked for by a user who is then deactivated
    await clients(owner, 2)
    export = await queued_export(owner)
    await User.filter(id=owner.user.id).update(is_active=False)

    # when it runs
    await export_service.run_export(export.id)

    # then it fails for good, saying why, and stores nothing
    failed = await Export.get(id=export.id)
    assert (failed.status, failed.error_code, failed.file_key) == (
        ExportStatus.FAILED,
        "REQUESTER_INACTIVE",
        None,
    )


async def test_rows_beyond_the_limit_fail_the_export(
    db: Backend, owner: Account, files_dir: Path
) -> None:
    # given an export of five clients asked for, then a limit of four rows
    tune(export_page_size=2)
    await clients(owner, 5)
    export = await queued_export(owner)
    tune(export_max_rows=4)

    # when it runs
    await export_service.run_export(export.id)

    # then it fails as too large, and no file is kept
    failed = await Export.get(id=export.id)
    assert (failed.status, failed.error_code) == (ExportStatus.FAILED, "EXPORT_TOO_LARGE")
    assert failed.file_key is None
    assert stored_files(files_dir) == {}


async def test_files_are_deleted_after_the_retention_period(
    db: Backend, owner: Account, files_dir: Path
) -> None:
    # given two completed exports, one written eight days ago
    await clients(owner, 2)
    old, fresh = await queued_export(owner), await queued_export(owner)
    for export in (old, fresh):
        await export_service.run_export(export.id)
    now = clock.now()
    await Export.filter(id=old.id).update(finished_at=now - timedelta(days=8))
    kept = (await Export.get(id=fresh.id)).file_key
    assert len(stored_files(files_dir)) == 2

    # when the retention sweep runs (twice, as a sweep that died and the next one would)
    first = await export_service.expire_exports(now)
    second = await export_service.expire_exports(now)

    # then the old export's file is gone and it says so; the fresh one is untouched
    assert (first, second) == (1, 0)
    expired = await Export.get(id=old.id)
    assert (expired.status, expired.file_key) == (ExportStatus.EXPIRED, None)
    assert list(stored_files(files_dir)) == [kept]
    assert (await Export.get(id=fresh.id)).status == ExportStatus.COMPLETED
    # and its download links no longer find it
    assert export_service.download_url(owner.actor, expired) is None


class BrokenStorage(StallingStorage):
    """Storage that is away: every write fails."""

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> StoredObject:
        raise OSError("storage unreachable")


async def test_an_unexpected_failure_gives_the_export_back_and_five_runs_fail_it(
    db: Backend, owner: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an export, and storage that is away
    await clients(owner, 2)
    export = await queued_export(owner)
    monkeypatch.setattr(export_service, "get_storage", lambda: BrokenStorage(get_storage(), 0))

    # when its run meets the failure
    with pytest.raises(OSError, match="storage unreachable"):
        await export_service.run_export(export.id)

    # then the export waits for another run (the actor's retry, or the janitor)
    waiting = await Export.get(id=export.id)
    assert (waiting.status, waiting.attempt) == (ExportStatus.PENDING, 1)

    # when runs keep failing, then the one after the fifth fails it for good
    for _ in range(4):
        with pytest.raises(OSError, match="storage unreachable"):
            await export_service.run_export(export.id)
    assert (await Export.get(id=export.id)).attempt == export_service.MAX_ATTEMPTS
    await export_service.run_export(export.id)
    failed = await Export.get(id=export.id)
    assert (failed.status, failed.error_code, failed.attempt) == (
        ExportStatus.FAILED,
        "EXPORT_FAILED",
        export_service.MAX_ATTEMPTS,
    )
