"""The scheduler fires each job once per cron slot, from one leader, across hand-overs."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import dramatiq
import dramatiq.broker
import pytest
from dramatiq.brokers.stub import StubBroker
from redis.asyncio import Redis
from redis.exceptions import RedisError

from settle.core.settings import Settings
from settle.tasks.scheduler import (
    LocalSchedulerLock,
    RedisSchedulerLock,
    ScheduledJob,
    Scheduler,
    SchedulerLock,
    default_jobs,
    send_job,
)

REDIS_URL = os.environ.get("SETTLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# A Monday at 09:00 UTC: every minute, every other minute and the hour are all slots.
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

EVERY_MINUTE = ScheduledJob("test.every_minute", "* * * * *", "test.every_minute")
EVERY_TWO_MINUTES = ScheduledJob("test.every_two_minutes", "*/2 * * * *", "test.every_two_minutes")
DAILY = ScheduledJob("test.daily", "0 0 * * *", "test.daily")


class Sends:
    """Records the actor names a scheduler sends, in order."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def __call__(self, actor_name: str) -> None:
        self.names.append(actor_name)


async def eventually(condition: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll ``condition`` until it holds, failing the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition still false after {within} s")
        await asyncio.sleep(0.02)


async def _connect() -> Redis:
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is required under CI=true: {exc}")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    return client


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = await _connect()
    yield client
    await client.aclose()


@pytest.fixture
async def other_redis_client(redis_client: Redis) -> AsyncIterator[Redis]:
    # A second connection pool, as a second scheduler process would have.
    client = await _connect()
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: Redis) -> AsyncIterator[str]:
    prefix = f"test:settle:scheduler:{uuid.uuid4().hex}"
    yield prefix
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await redis_client.delete(*keys)


def minutes(start: datetime, count: int, step: timedelta = timedelta(seconds=15)) -> list[datetime]:
    """Tick instants from ``start`` every ``step`` for ``count`` minutes."""
    ticks = int(timedelta(minutes=count) / step)
    return [start + i * step for i in range(ticks)]


def test_invalid_cron_raises_value_error() -> None:
    # given / when / then
    with pytest.raises(
        ValueError, match=r"'test\.broken' has an invalid cron expression: '61 \* \* \* \*'"
    ):
        ScheduledJob("test.broken", "61 * * * *", "test.broken")


def test_default_jobs_relay_the_outbox_and_run_the_janitor_on_the_configured_crons() -> None:
    # given
    settings = Settings(
        outbox_relay_cron="*/5 * * * *",
        janitor_cron="*/2 * * * *",
        notification_sweep_cron="*/30 * * * *",
    )

    # when
    jobs = default_jobs(settings)

    # then
    assert jobs == [
        ScheduledJob("outbox.relay_pending", "*/5 * * * *", "outbox.relay_pending"),
        ScheduledJob("invoice.mark_overdue", "15 0 * * *", "invoice.mark_overdue"),
        ScheduledJob("payment.reconcile", "*/10 * * * *", "payment.reconcile"),
        ScheduledJob("janitor.resend_stuck", "*/2 * * * *", "janitor.resend_stuck"),
        ScheduledJob("notification.sweep", "*/30 * * * *", "notification.sweep"),
        ScheduledJob("export.expire", "40 * * * *", "export.expire"),
        ScheduledJob("housekeeping.prune", "30 3 * * *", "housekeeping.prune"),
    ]


def test_default_jobs_reject_an_invalid_configured_cron() -> None:
    # given
    settings = Settings(outbox_relay_cron="every minute")

    # when / then
    with pytest.raises(ValueError, match="invalid cron expression"):
        default_jobs(settings)


async def test_two_schedulers_fire_each_slot_once_from_one_leader(
    redis_client: Redis, other_redis_client: Redis, prefix: str
) -> None:
    # given
    jobs = [EVERY_MINUTE, EVERY_TWO_MINUTES]
    sends_a, sends_b = Sends(), Sends()
    a = Scheduler(jobs, RedisSchedulerLock(redis_client, prefix), sends_a, owner="a")
    b = Scheduler(jobs, RedisSchedulerLock(other_redis_client, prefix), sends_b, owner="b")
    fired_at: dict[datetime, list[str]] = {}

    # when: six minutes of fake time, both ticking at the same instants
    for now in minutes(T0, 6):
        fired_a, fired_b = await asyncio.gather(a.tick(now), b.tick(now))
        assert [a.is_leader, b.is_leader].count(True) == 1
        if fired_a or fired_b:
            fired_at[now] = sorted(fired_a + fired_b)

    # then: one firing per slot in total, at the tick that lands on the slot
    assert fired_at == {
        T0: ["test.every_minute", "test.every_two_minutes"],
        T0 + timedelta(minutes=1): ["test.every_minute"],
        T0 + timedelta(minutes=2): ["test.every_minute", "test.every_two_minutes"],
        T0 + timedelta(minutes=3): ["test.every_minute"],
        T0 + timedelta(minutes=4): ["test.every_minute", "test.every_two_minutes"],
        T0 + timedelta(minutes=5): ["test.every_minute"],
    }
    assert sorted(sends_a.names + sends_b.names) == sorted(
        ["test.every_minute"] * 6 + ["test.every_two_minutes"] * 3
    )
    assert [] in (sends_a.names, sends_b.names)


async def test_slot_claim_goes_to_exactly_one_of_many_claimers(
    redis_client: Redis, other_redis_client: Redis, prefix: str
) -> None:
    # given
    locks = [
        RedisSchedulerLock(client, prefix) for client in (redis_client, other_redis_client)
    ] * 5

    # when
    claims = await asyncio.gather(*(lock.claim_slot("test.job", T0, 60) for lock in locks))

    # then
    assert claims.count(True) == 1


async def test_hand_over_after_release_does_not_refire_the_claimed_slot(
    redis_client: Redis, other_redis_client: Redis, prefix: str
) -> None:
    # given: a leader fired the 09:00 slot, then stopped cleanly
    sends_a, sends_b = Sends(), Sends()
    a = Scheduler([EVERY_MINUTE], RedisSchedulerLock(redis_client, prefix), sends_a, owner="a")
    b = Scheduler(
        [EVERY_MINUTE], RedisSchedulerLock(other_redis_client, prefix), sends_b, owner="b"
    )
    assert await a.tick(T0 + timedelta(seconds=10)) == ["test.every_minute"]
    assert await b.tick(T0 + timedelta(seconds=10)) == []
    await RedisSchedulerLock(redis_client, prefix).release_leadership("a")

    # when: the other scheduler ticks in the same minute, then in the next
    same_minute = await b.tick(T0 + timedelta(seconds=40))
    next_minute = await b.tick(T0 + timedelta(minutes=1, seconds=1))

    # then
    assert b.is_leader
    assert same_minute == []
    assert next_minute == ["test.every_minute"]
    assert sends_a.names == ["test.every_minute"]
    assert sends_b.names == ["test.every_minute"]


async def test_expired_lease_hands_over_without_refiring_the_claimed_slot(
    redis_client: Redis, other_redis_client: Redis, prefix: str
) -> None:
    # given: a leader with a 200 ms lease fired the 09:00 slot, then went silent
    sends_a, sends_b = Sends(), Sends()
    a = Scheduler(
        [EVERY_MINUTE],
        RedisSchedulerLock(redis_client, prefix),
        sends_a,
        owner="a",
        leadership_ttl=0.2,
    )
    b = Scheduler(
        [EVERY_MINUTE], RedisSchedulerLock(other_redis_client, prefix), sends_b, owner="b"
    )
    first = T0 + timedelta(seconds=5)
    assert await asyncio.gather(a.tick(first), b.tick(first)) == [["test.every_minute"], []]

    # when: the other scheduler keeps ticking in the same minute until the lease lapses
    in_same_minute: list[str] = []

    async def b_took_over() -> bool:
        in_same_minute.extend(await b.tick(T0 + timedelta(seconds=30)))
        return b.is_leader

    await eventually(b_took_over)
    next_minute = T0 + timedelta(minutes=1)
    fired_a, fired_b = await asyncio.gather(a.tick(next_minute), b.tick(next_minute))

    # then
    assert in_same_minute == []
    assert (fired_a, fired_b) == ([], ["test.every_minute"])
    assert not a.is_leader
    assert sends_a.names == ["test.every_minute"]
    assert sends_b.names == ["test.every_minute"]


async def test_stale_owner_cannot_renew_or_release_a_lease_another_holds(
    redis_client: Redis, prefix: str
) -> None:
    # given: "stale" held a short lease that lapsed, and "current" took it
    lock = RedisSchedulerLock(redis_client, prefix)
    assert await lock.acquire_leadership("stale", 0.2)

    async def current_took_over() -> bool:
        return await lock.acquire_leadership("current", 30)

    await eventually(current_took_over)

    # when
    renewed = await lock.acquire_leadership("stale", 0.2)
    await lock.release_leadership("stale")

    # then: the lease is still "current"'s, with its own TTL untouched
    assert renewed is False
    assert await redis_client.get(f"{prefix}:leader") == b"current"
    assert await redis_client.pttl(f"{prefix}:leader") > 20_000
    assert await lock.acquire_leadership("current", 30)


async def test_tick_after_an_hour_gap_fires_each_job_once_not_a_backlog(
    redis_client: Redis, prefix: str
) -> None:
    # given: a scheduler that last ticked at 09:00
    sends = Sends()
    scheduler = Scheduler(
        [EVERY_MINUTE, EVERY_TWO_MINUTES], RedisSchedulerLock(redis_client, prefix), sends
    )
    await scheduler.tick(T0)
    sends.names.clear()

    # when: it ticks again an hour later
    fired = await scheduler.tick(T0 + timedelta(hours=1, seconds=30))

    # then: the current slots only
    assert fired == ["test.every_minute", "test.every_two_minutes"]
    assert sends.names == ["test.every_minute", "test.every_two_minutes"]


async def test_slot_older_than_the_grace_window_is_not_fired() -> None:
    # given: a daily job at midnight and a scheduler starting at noon
    sends = Sends()
    scheduler = Scheduler([DAILY], LocalSchedulerLock(), sends)

    # when
    at_noon = await scheduler.tick(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    after_midnight = await scheduler.tick(datetime(2026, 3, 3, 0, 4, 59, tzinfo=UTC))

    # then: noon is hours past the slot; 00:04:59 is inside the five-minute grace
    assert at_noon == []
    assert after_midnight == ["test.daily"]


async def test_local_lock_fires_once_per_slot_starting_mid_minute() -> None:
    # given: a scheduler started at 09:00:30, after its slot began
    sends = Sends()
    scheduler = Scheduler([EVERY_MINUTE, EVERY_TWO_MINUTES], LocalSchedulerLock(), sends)
    fired_at: dict[datetime, list[str]] = {}

    # when
    for now in minutes(T0 + timedelta(seconds=30), 3, step=timedelta(seconds=10)):
        fired = await scheduler.tick(now)
        if fired:
            fired_at[now] = fired

    # then: the current slot fires at once, then each slot at its first tick
    assert fired_at == {
        T0 + timedelta(seconds=30): ["test.every_minute", "test.every_two_minutes"],
        T0 + timedelta(minutes=1): ["test.every_minute"],
        T0 + timedelta(minutes=2): ["test.every_minute", "test.every_two_minutes"],
        T0 + timedelta(minutes=3): ["test.every_minute"],
    }
    assert scheduler.is_leader


async def test_restart_in_mid_minute_does_not_refire_the_claimed_slot() -> None:
    # given: one scheduler fired 09:00 and stopped; the lock outlives it, as Redis does
    lock = LocalSchedulerLock()
    sends = Sends()
    before = Scheduler([EVERY_MINUTE], lock, sends)
    await before.tick(T0 + timedelta(seconds=10))
    await lock.release_leadership(before.owner)

    # when
    after = Scheduler([EVERY_MINUTE], lock, sends)
    fired = await after.tick(T0 + timedelta(seconds=40))

    # then
    assert fired == []
    assert sends.names == ["test.every_minute"]


async def test_failed_send_is_retried_on_the_next_tick() -> None:
    # given: a broker that fails the first send
    attempts: list[str] = []

    async def flaky_send(actor_name: str) -> None:
        attempts.append(actor_name)
        if len(attempts) == 1:
            raise ConnectionError("broker unavailable")

    scheduler = Scheduler([EVERY_MINUTE], LocalSchedulerLock(), flaky_send)

    # when
    first = await scheduler.tick(T0 + timedelta(seconds=1))
    second = await scheduler.tick(T0 + timedelta(seconds=2))
    third = await scheduler.tick(T0 + timedelta(seconds=3))

    # then
    assert (first, second, third) == ([], ["test.every_minute"], [])
    assert attempts == ["test.every_minute", "test.every_minute"]


async def test_run_stops_promptly_and_releases_leadership() -> None:
    # given: a running scheduler with a long interval, past its first firing
    lock: SchedulerLock = LocalSchedulerLock()
    sends = Sends()
    scheduler = Scheduler([EVERY_MINUTE], lock, sends, owner="runner")
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop, interval=30.0))

    async def fired_once() -> bool:
        return sends.names == ["test.every_minute"]

    await eventually(fired_once)

    # when
    stop.set()

    # then: it returns well before the interval ends, and gives the lease up
    await asyncio.wait_for(task, timeout=2.0)
    assert not scheduler.is_leader
    assert await lock.acquire_leadership("another", 30)


async def test_send_job_sends_a_message_through_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    # given: a stub broker of our own with one declared actor
    broker = StubBroker()
    monkeypatch.setattr(dramatiq.broker, "global_broker", broker)

    def ping() -> None:
        return None

    dramatiq.actor(actor_name="test.scheduler.ping", broker=broker)(ping)

    # when
    await send_job("test.scheduler.ping")

    # then
    message = broker.queues["default"].get_nowait()
    assert message is not None
    assert b'"actor_name":"test.scheduler.ping"' in message
    assert broker.queues["default"].qsize() == 0
