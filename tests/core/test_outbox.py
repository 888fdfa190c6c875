"""The outbox: events and jobs leave only after commit, exactly once, even after a crash."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import dramatiq
import pytest

from settle.core import clock, relay
from settle.core.outbox import emit_event, send_job, transaction
from settle.core.relay import relay_pending
from settle.models.outbox import OutboxKind, OutboxMessage
from settle.subscriptions.bus import EventBus, Message, StreamEntry, get_bus, set_bus
from tests.conftest import Backend, wait_for

TEST_ACTOR = "test.outbox.record"

Calls = list[tuple[list[Any], dict[str, Any]]]


class Boom(Exception):
    """Raised inside a transaction to roll it back."""


class BrokenBus(EventBus):
    """A bus whose every publish fails, as when Redis is down at commit time."""

    async def publish(self, channel: str, message: Message, *, once: str | None = None) -> None:
        raise ConnectionError("bus unreachable")

    def subscribe(self, channels: Any, *, queue_size: int | None = None, gaps: bool = False) -> Any:
        raise NotImplementedError

    async def read_stream(self, agency_id: str, after: str, count: int) -> list[StreamEntry]:
        raise ConnectionError("bus unreachable")

    async def stream_tail(self, agency_id: str) -> str:
        raise ConnectionError("bus unreachable")

    async def subscriber_count(self, channel: str) -> int:
        return 0


class Listener:
    def __init__(self, bus: EventBus, channel: str, messages: AsyncIterator[Message]) -> None:
        self.bus = bus
        self.channel = channel
        self.messages = messages

    async def next(self, timeout: float = 5.0) -> Message:
        return await asyncio.wait_for(anext(self.messages), timeout)

    async def fence(self) -> list[Message]:
        """Everything that arrived before a marker published now.

        The marker follows anything published before it, so an empty list proves
        nothing was published on the channel up to this point: no sleeping needed.
        """
        marker = {"fence": uuid.uuid4().hex}
        await self.bus.publish(self.channel, marker)
        received: list[Message] = []
        while (message := await self.next()) != marker:
            received.append(message)
        return received


@pytest.fixture
async def job_calls(db: Backend) -> AsyncIterator[Calls]:
    """The calls a test actor received, declared on the running in-process broker.

    Declaring on the live broker (not through ``settle.tasks.broker.actor``) keeps the
    test actor out of the app's registry and needs no ``configure_broker`` re-run; it
    is removed again afterwards, so the next test declares a fresh one.
    """
    assert db.runtime.worker is not None
    broker = db.runtime.worker.broker
    assert dramatiq.get_broker() is broker
    calls: Calls = []

    async def record(*args: Any, **kwargs: Any) -> None:
        calls.append((list(args), kwargs))

    dramatiq.actor(actor_name=TEST_ACTOR, broker=broker, max_retries=0)(record)
    try:
        yield calls
    finally:
        await db.drain()
        del broker.actors[TEST_ACTOR]


@pytest.fixture
async def listener(db: Backend) -> AsyncIterator[Listener]:
    """A subscriber on a channel of its own, subscribed before the test starts."""
    bus = get_bus()
    channel = f"test.outbox.{uuid.uuid4().hex}"
    # Room for every row a test relays before it reads (up to 450 at once).
    async with bus.subscribe([channel], queue_size=1000) as messages:

        async def subscribed() -> bool:
            return await bus.subscriber_count(channel) == 1

        # Redis confirms a subscription asynchronously; publish only once it counts.
        await wait_for(subscribed)
        yield Listener(bus, channel, messages)


async def stale_row(kind: OutboxKind, topic: str, payload: dict[str, Any]) -> OutboxMessage:
    """A row a committed transaction wrote before its process died, minutes ago."""
    return await OutboxMessage.create(
        kind=kind,
        topic=topic,
        payload=payload,
        created_at=clock.now() - timedelta(minutes=5),
    )


async def test_an_event_is_published_only_after_its_transaction_commits(
    listener: Listener,
) -> None:
    # given / when: an event emitted inside an open transaction
    async with transaction():
        await emit_event(listener.channel, {"invoice": "INV-1", "amount": 1250})

        # then: it is written, and nobody has heard of it yet
        assert await listener.fence() == []
        row = await OutboxMessage.get(topic=listener.channel)
        assert row.kind is OutboxKind.EVENT
        assert row.published_at is None

    # then: the commit publishes it, once, and marks the row
    assert await listener.next() == {"invoice": "INV-1", "amount": 1250}
    assert await listener.fence() == []
    row = await OutboxMessage.get(topic=listener.channel)
    assert row.published_at is not None
    assert row.attempts == 1
    assert row.last_error is None


async def test_a_nested_transaction_leaves_publishing_to_the_outermost(
    listener: Listener,
) -> None:
    # given: an outer boundary around a service that opens its own
    async with transaction():
        async with transaction():
            await emit_event(listener.channel, {"n": 1})

        # then: leaving the inner block publishes nothing, the outer one is still open
        assert await listener.fence() == []

    # then
    assert await listener.next() == {"n": 1}
    assert await listener.fence() == []


async def test_a_rolled_back_transaction_publishes_nothing_and_sends_nothing(
    db: Backend, listener: Listener, job_calls: Calls
) -> None:
    # when: the block fails after emitting an event and asking for a job
    async def fail_after_writing() -> None:
        async with transaction():
            await emit_event(listener.channel, {"n": 1})
            await send_job(TEST_ACTOR, "never")
            raise Boom

    with pytest.raises(Boom):
        await fail_after_writing()

    # then: no event, no job, no outbox row
    assert await listener.fence() == []
    await db.drain()
    assert job_calls == []
    assert await OutboxMessage.all().count() == 0


async def test_a_job_reaches_its_actor_after_commit(db: Backend, job_calls: Calls) -> None:
    # when
    async with transaction():
        await send_job(TEST_ACTOR, "inv-1", reason="sent")

        # then: the worker, given every chance to run it, has nothing yet
        await db.drain()
        assert job_calls == []

    # then: after commit the actor runs once with the arguments given
    await db.drain()
    assert job_calls == [(["inv-1"], {"reason": "sent"})]
    row = await OutboxMessage.get(topic=TEST_ACTOR)
    assert row.kind is OutboxKind.JOB
    assert row.payload == {"args": ["inv-1"], "kwargs": {"reason": "sent"}}
    assert row.published_at is not None


async def test_emitting_outside_a_transaction_is_refused() -> None:
    # when / then
    with pytest.raises(RuntimeError, match="transaction"):
        await emit_event("settle.test", {"n": 1})
    with pytest.raises(RuntimeError, match="transaction"):
        await send_job(TEST_ACTOR, "x")


async def test_emitting_outside_a_transaction_writes_nothing(db: Backend) -> None:
    # when
    with pytest.raises(RuntimeError):
        await emit_event("settle.test", {"n": 1})

    # then
    assert await OutboxMessage.all().count() == 0


async def test_the_relay_publishes_what_a_crash_left_behind_exactly_once(
    db: Backend, listener: Listener, job_calls: Calls
) -> None:
    # given: rows committed before a crash, never relayed; and one from a transaction
    # that just committed, whose own relay is still on its way
    left = [await stale_row(OutboxKind.EVENT, listener.channel, {"n": n}) for n in range(3)]
    left.append(await stale_row(OutboxKind.JOB, TEST_ACTOR, {"args": ["late"], "kwargs": {}}))
    fresh = await OutboxMessage.create(
        kind=OutboxKind.EVENT, topic=listener.channel, payload={"n": 99}, created_at=clock.now()
    )

    # when
    sent = await relay_pending()

    # then: the stale rows go out in order, once; the fresh one is left to its own relay
    assert sent == 4
    assert [await listener.next() for _ in range(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert await listener.fence() == []
    await db.drain()
    assert job_calls == [(["late"], {})]
    for row in left:
        await row.refresh_from_db()
        assert row.published_at is not None
        assert row.attempts == 1
    await fresh.refresh_from_db()
    assert fresh.published_at is None

    # when: the catch-up runs again
    again = await relay_pending()

    # then: nothing is sent twice
    assert again == 0
    assert await listener.fence() == []
    await db.drain()
    assert job_calls == [(["late"], {})]


async def test_rows_that_keep_failing_do_not_hold_back_the_rows_behind_them(
    db: Backend, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a full batch of jobs for an actor that no longer exists, then an event
    monkeypatch.setattr(relay, "BATCH_SIZE", 2)
    poisoned = [
        await stale_row(OutboxKind.JOB, "test.outbox.removed", {"args": [], "kwargs": {}})
        for _ in range(2)
    ]
    await stale_row(OutboxKind.EVENT, listener.channel, {"n": 1})

    # when
    sent = await relay_pending()

    # then: the event goes out; the failing jobs stay, with their error, for later
    assert sent == 1
    assert await listener.next() == {"n": 1}
    for row in poisoned:
        await row.refresh_from_db()
        assert row.published_at is None
        assert row.attempts == 1
        assert row.last_error is not None
        assert row.last_error.startswith("ActorNotFound")


async def test_an_event_the_bus_refused_at_commit_is_kept_for_the_catch_up(
    db: Backend, listener: Listener
) -> None:
    # given: the bus is down when the transaction commits
    bus = get_bus()
    set_bus(BrokenBus())
    try:
        # when: the commit succeeds even though publishing fails
        async with transaction():
            await emit_event(listener.channel, {"n": 1})
    finally:
        set_bus(bus)

    # then: the row stays unpublished, with the failure noted
    row = await OutboxMessage.get(topic=listener.channel)
    assert row.published_at is None
    assert row.attempts == 1
    assert row.last_error == "ConnectionError: bus unreachable"
    assert await listener.fence() == []

    # when: the bus is back and the catch-up runs
    sent = await relay_pending(older_than=timedelta(0))

    # then
    assert sent == 1
    assert await listener.next() == {"n": 1}
    await row.refresh_from_db()
    assert row.published_at is not None
    assert row.attempts == 2


async def test_a_relay_that_fails_after_commit_does_not_fail_the_committed_change(
    db: Backend,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given: the relay itself breaks (its database connection dropped) right after commit
    async def broken_relay(ids: list[int]) -> int:
        raise OSError("connection reset")

    monkeypatch.setattr(relay, "relay_committed_events", broken_relay)

    # when: the boundary exits without an error
    async with transaction():
        await emit_event(listener.channel, {"n": 1})

    # then: the row is committed for the catch-up, and the failure is logged
    row = await OutboxMessage.get(topic=listener.channel)
    assert row.published_at is None
    assert [r.getMessage() for r in caplog.records if r.name == "settle.core.outbox"] == [
        "outbox.relay_after_commit_failed"
    ]
    monkeypatch.undo()
    assert await relay_pending(older_than=timedelta(0)) == 1
    assert await listener.next() == {"n": 1}


async def test_concurrent_relays_publish_each_row_exactly_once(
    db: Backend, listener: Listener
) -> None:
    if db.name != "postgres":
        pytest.skip("row locks (SKIP LOCKED) are what keeps relays apart; PostgreSQL only")
    # given: more stale rows than one relay batch
    total = 450
    old = clock.now() - timedelta(minutes=5)
    await OutboxMessage.bulk_create(
        [
            OutboxMessage(
                kind=OutboxKind.EVENT, topic=listener.channel, payload={"n": n}, created_at=old
            )
            for n in range(total)
        ]
    )

    # when: four replicas run the catch-up at the same time
    counts = await asyncio.gather(*(relay_pending() for _ in range(4)))

    # then: every row was published by exactly one of them
    assert sum(counts) == total
    received = await listener.fence()
    assert sorted(message["n"] for message in received) == list(range(total))
    assert await OutboxMessage.filter(published_at__isnull=True).count() == 0
    assert await OutboxMessage.exclude(attempts=1).count() == 0


async def test_an_event_that_keeps_failing_stops_holding_back_the_events_behind_it(
    db: Backend, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: an event the bus refuses every time (its channel is refused), then one it takes
    bus = get_bus()
    publish = bus.publish

    async def refusing(channel: str, message: Message, *, once: str | None = None) -> None:
        if message.get("poison"):
            raise ValueError("refused")
        await publish(channel, message, once=once)

    monkeypatch.setattr(bus, "publish", refusing)
    poisoned = await stale_row(OutboxKind.EVENT, listener.channel, {"poison": True})
    await stale_row(OutboxKind.EVENT, listener.channel, {"n": 1})

    # when: the catch-up runs as often as an event may be tried
    for _ in range(relay.MAX_EVENT_ATTEMPTS - 1):
        assert await relay_pending() == 0
        # then: while it may still go out, the events behind it wait, in order
        assert await listener.fence() == []
    sent = await relay_pending()

    # then: once it has used up its attempts it is passed over, kept with its error,
    # and the next event goes out
    assert sent == 1
    assert await listener.next() == {"n": 1}
    await poisoned.refresh_from_db()
    assert poisoned.published_at is None
    assert poisoned.attempts == relay.MAX_EVENT_ATTEMPTS
    assert poisoned.last_error == "ValueError: refused"

    # and later runs do not try it again
    assert await relay_pending() == 0
    await poisoned.refresh_from_db()
    assert poisoned.attempts == relay.MAX_EVENT_ATTEMPTS


async def test_commits_waiting_for_the_relay_are_relayed_together_in_order(
    db: Backend, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a relay turn in progress, and twenty transactions committing meanwhile
    batches: list[int] = []
    relay_events = relay._relay_events

    async def counted(query: Any, waiting: set[int]) -> tuple[int, bool]:
        sent, finished = await relay_events(query, waiting)
        batches.append(sent)
        return sent, finished

    monkeypatch.setattr(relay, "_relay_events", counted)

    async def commit(n: int) -> None:
        async with transaction():
            await emit_event(listener.channel, {"n": n})

    turn = relay._turns().lock
    await turn.acquire()
    committing = asyncio.gather(*(commit(n) for n in range(20)))

    async def all_committed_and_waiting() -> bool:
        return len(relay._turns().waiting) == 20  # each registers right after its commit

    await wait_for(all_committed_and_waiting)

    # when: the turn comes free
    turn.release()
    await committing

    # then: one relay transaction published all twenty, in id order, each once
    assert batches == [20]
    received = await listener.fence()
    rows = await OutboxMessage.filter(topic=listener.channel).order_by("id")
    assert received == [row.payload for row in rows]
    assert all(row.published_at is not None and row.attempts == 1 for row in rows)
    assert relay._turns().waiting == set()


async def test_an_event_committed_after_a_later_one_was_relayed_still_goes_out(
    db: Backend, listener: Listener
) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite runs one transaction at a time; the interleaving needs PostgreSQL")
    # given: a transaction that wrote its event and has not committed yet
    written, release = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        async with transaction():
            await emit_event(listener.channel, {"n": "first written"})
            written.set()
            await release.wait()

    slow_commit = asyncio.create_task(slow())
    await written.wait()

    # when: a later-written event commits and is relayed first (the earlier one unseen)
    async with transaction():
        await emit_event(listener.channel, {"n": "second written"})
    assert await listener.next() == {"n": "second written"}

    # then: the earlier one goes out as soon as its own transaction commits
    release.set()
    await slow_commit
    assert await listener.next() == {"n": "first written"}
    assert await listener.fence() == []
    assert await OutboxMessage.filter(published_at__isnull=True).count() == 0
