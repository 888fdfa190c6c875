"""The scheduler: sends periodic jobs to Dramatiq on cron slots, from one leader at a time.

Every scheduler process ticks, but only the holder of the leadership lease sends.
Each firing is also claimed per job and cron slot, so a hand-over between leaders
(or a restart in the middle of a minute) never sends the same slot twice.

Slots are evaluated in UTC. On each tick only the most recent slot at or before
``now`` is considered: slots missed while no scheduler was running are coalesced
into that one, and a slot older than the grace window (five minutes by default) is
not fired at all, so a scheduler that was down for an hour sends each job once
for the current slot rather than replaying sixty of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from croniter import croniter

from settle.core import clock
from settle.core.settings import Settings
from settle.tasks.broker import send_by_name

log = logging.getLogger(__name__)

DEFAULT_GRACE = timedelta(minutes=5)

# croniter's get_prev is strictly before its base; nudging the base forward makes a
# tick that lands exactly on a slot see that slot.
_EPSILON = timedelta(microseconds=1)


@dataclass(frozen=True)
class ScheduledJob:
    """A Dramatiq actor (taking no arguments) sent on every slot of a cron expression."""

    name: str
    cron: str
    actor_name: str

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.cron):
            raise ValueError(
                f"scheduled job {self.name!r} has an invalid cron expression: {self.cron!r}"
            )

    def latest_slot(self, now: datetime) -> datetime:
        """The most recent slot of this job at or before ``now``, in UTC."""
        base = now.astimezone(UTC) + _EPSILON
        slot: datetime = croniter(self.cron, base).get_prev(datetime)
        return slot.astimezone(UTC)


def default_jobs(settings: Settings) -> list[ScheduledJob]:
    """The jobs every Settle deployment schedules."""
    return [
        ScheduledJob("outbox.relay_pending", settings.outbox_relay_cron, "outbox.relay_pending"),
        # Daily, soon after the UTC date changes: overdue is judged by the UTC date.
        ScheduledJob("invoice.mark_overdue", "15 0 * * *", "invoice.mark_overdue"),
        ScheduledJob("payment.reconcile", settings.payment_reconcile_cron, "payment.reconcile"),
        ScheduledJob("janitor.resend_stuck", settings.janitor_cron, "janitor.resend_stuck"),
        ScheduledJob("notification.sweep", settings.notification_sweep_cron, "notification.sweep"),
        ScheduledJob("export.expire", "40 * * * *", "export.expire"),
        ScheduledJob("housekeeping.prune", "30 3 * * *", "housekeeping.prune"),
    ]


class SchedulerLock(ABC):
    """Leadership lease and per-slot claims shared by the schedulers of one deployment."""

    @abstractmethod
    async def acquire_leadership(self, owner: str, ttl_seconds: float) -> bool:
        """Take the lease if free, or renew it if ``owner`` holds it; False if another does."""

    @abstractmethod
    async def release_leadership(self, owner: str) -> None:
        """Give the lease up, only if ``owner`` still holds it."""

    @abstractmethod
    async def claim_slot(self, job_name: str, slot: datetime, ttl_seconds: float) -> bool:
        """Claim one firing of ``job_name`` for ``slot``; False if it was already claimed."""

    @abstractmethod
    async def release_slot(self, job_name: str, slot: datetime) -> None:
        """Drop a claim whose send failed, so the slot can be fired again."""


# One script for take-or-renew: a GET followed by a separate PEXPIRE would let a
# scheduler whose lease just expired extend the lease of the one that took over.
_ACQUIRE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if not holder then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""

_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _milliseconds(seconds: float) -> int:
    # PX takes whole milliseconds and rejects zero.
    return max(1, round(seconds * 1000))


class RedisSchedulerLock(SchedulerLock):
    """The lease and slot claims in Redis, for several scheduler processes."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "settle:scheduler") -> None:
        self._redis = redis
        self._prefix = prefix
        self._leader_key = f"{prefix}:leader"
        self._acquire = redis.register_script(_ACQUIRE_SCRIPT)
        self._release = redis.register_script(_RELEASE_SCRIPT)

    def _slot_key(self, job_name: str, slot: datetime) -> str:
        return f"{self._prefix}:slot:{job_name}:{slot.astimezone(UTC).isoformat()}"

    async def acquire_leadership(self, owner: str, ttl_seconds: float) -> bool:
        """Take or renew the lease in one atomic script."""
        result = await self._acquire(
            keys=[self._leader_key], args=[owner, _milliseconds(ttl_seconds)]
        )
        return bool(result)

    async def release_leadership(self, owner: str) -> None:
        """Delete the lease only if ``owner`` still holds it."""
        await self._release(keys=[self._leader_key], args=[owner])

    async def claim_slot(self, job_name: str, slot: datetime, ttl_seconds: float) -> bool:
        """SET NX: the first scheduler to claim the slot fires it."""
        claimed = await self._redis.set(
            self._slot_key(job_name, slot), "1", nx=True, px=_milliseconds(ttl_seconds)
        )
        return bool(claimed)

    async def release_slot(self, job_name: str, slot: datetime) -> None:
        """Delete the claim; only its claimer calls this, so no ownership check is needed."""
        await self._redis.delete(self._slot_key(job_name, slot))


class LocalSchedulerLock(SchedulerLock):
    """The lease and slot claims in this process, for the embedded scheduler.

    No method awaits, so each runs whole on the event loop and needs no lock.
    Expiry uses the monotonic clock, like Redis's real-time TTLs, not ``clock.now``.
    """

    def __init__(self) -> None:
        self._holder: str | None = None
        self._holder_expires = 0.0
        self._slots: dict[tuple[str, datetime], float] = {}

    async def acquire_leadership(self, owner: str, ttl_seconds: float) -> bool:
        """Take the lease if free or expired, or renew it for the same owner."""
        current = time.monotonic()
        if self._holder not in (None, owner) and self._holder_expires > current:
            return False
        self._holder = owner
        self._holder_expires = current + ttl_seconds
        return True

    async def release_leadership(self, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        if self._holder == owner:
            self._holder = None

    async def claim_slot(self, job_name: str, slot: datetime, ttl_seconds: float) -> bool:
        """Remember the slot until its claim expires; False if it is already remembered."""
        current = time.monotonic()
        # Pruning expired claims keeps the dict to the slots still inside their TTL.
        for key in [key for key, expires in self._slots.items() if expires <= current]:
            del self._slots[key]
        key = (job_name, slot.astimezone(UTC))
        if key in self._slots:
            return False
        self._slots[key] = current + ttl_seconds
        return True

    async def release_slot(self, job_name: str, slot: datetime) -> None:
        """Forget the claim so the slot can be fired again."""
        self._slots.pop((job_name, slot.astimezone(UTC)), None)


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Scheduler:
    """Ticks the jobs: while leader, sends each job once per cron slot."""

    def __init__(
        self,
        jobs: list[ScheduledJob],
        lock: SchedulerLock,
        send: Callable[[str], Awaitable[None]],
        *,
        owner: str | None = None,
        leadership_ttl: float = 30.0,
        grace: timedelta = DEFAULT_GRACE,
    ) -> None:
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"scheduled job names must be unique: {names}")
        self.jobs = list(jobs)
        self.owner = owner or _default_owner()
        self.leadership_ttl = leadership_ttl
        self.grace = grace
        self.is_leader = False
        self._lock = lock
        self._send = send
        # Slots this scheduler has fired or seen claimed, so it asks Redis once per slot.
        self._done: dict[str, datetime] = {}
        # A claim must outlive the slot's eligibility (grace) on every scheduler,
        # with room for clock skew between hosts and a leadership hand-over.
        self._claim_ttl = (
            grace + timedelta(seconds=leadership_ttl) + timedelta(minutes=1)
        ).total_seconds()

    async def tick(self, now: datetime) -> list[str]:
        """Fire every job whose current slot is due and unclaimed; return the names fired."""
        if now.tzinfo is None:
            raise ValueError("Scheduler.tick needs a timezone-aware datetime")
        was_leader = self.is_leader
        self.is_leader = await self._lock.acquire_leadership(self.owner, self.leadership_ttl)
        if self.is_leader != was_leader:
            log.info(
                "scheduler.leadership_acquired" if self.is_leader else "scheduler.leadership_lost",
                extra={"owner": self.owner},
            )
        if not self.is_leader:
            return []
        fired: list[str] = []
        for job in self.jobs:
            if await self._fire_if_due(job, now):
                fired.append(job.name)
        return fired

    async def _fire_if_due(self, job: ScheduledJob, now: datetime) -> bool:
        slot = job.latest_slot(now)
        if self._done.get(job.name) == slot:
            return False
        context: dict[str, Any] = {"job": job.name, "slot": slot.isoformat(), "owner": self.owner}
        if now - slot > self.grace:
            # Too late for this slot. Info, not warning: every start sees one such slot
            # for a job rarer than the grace window (a daily sweep started at noon).
            # Remembering it keeps the log to one line per slot.
            self._done[job.name] = slot
            log.info("scheduler.slot_skipped", extra=context)
            return False
        if not await self._lock.claim_slot(job.name, slot, self._claim_ttl):
            # Fired by another scheduler (or by this one before a restart).
            self._done[job.name] = slot
            return False
        try:
            await self._send(job.actor_name)
        except Exception:
            # Give the claim back so the next tick retries within the grace window:
            # jobs are idempotent, so a send that did get through is harmless twice,
            # while a slot lost to a broker blip would silently skip a run.
            log.exception("scheduler.send_failed", extra=context)
            await self._lock.release_slot(job.name, slot)
            return False
        self._done[job.name] = slot
        log.info("scheduler.fired", extra=context)
        return True

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set, then give leadership up."""
        log.info(
            "scheduler.started", extra={"owner": self.owner, "jobs": [j.name for j in self.jobs]}
        )
        try:
            while not stop.is_set():
                try:
                    await self.tick(clock.now())
                except Exception:
                    # A Redis blip must not end the scheduler; the lease simply lapses
                    # if it lasts, and another scheduler takes over.
                    log.exception("scheduler.tick_failed", extra={"owner": self.owner})
                # The stop event doubles as the pause, so setting it ends the wait at once.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            try:
                await self._lock.release_leadership(self.owner)
            except Exception:
                log.exception("scheduler.release_failed", extra={"owner": self.owner})
            self.is_leader = False
            log.info("scheduler.stopped", extra={"owner": self.owner})


async def send_job(actor_name: str) -> None:
    """Send a no-argument message to ``actor_name`` through the configured Dramatiq broker."""
    # send_by_name blocks on the broker's connection, so it runs off the event loop.
    await asyncio.to_thread(send_by_name, actor_name, [], {})
