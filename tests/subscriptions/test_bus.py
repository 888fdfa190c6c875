"""The event bus: every subscriber of a channel hears each message, nobody else does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from settle.subscriptions import channels
from settle.subscriptions.bus import (
    GAP,
    CursorExpired,
    EventBus,
    MemoryBus,
    Message,
    RedisBus,
    SubscriberTooSlow,
    create_bus,
    cursor_key,
)
from tests.conftest import wait_for
from tests.fixtures.services import REDIS_URL, check_redis, unavailable


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    if request.param == "redis":
        try:
            await check_redis()
        except Exception as exc:
            unavailable("Redis", exc)
        created = create_bus(REDIS_URL)
        assert isinstance(created, RedisBus)
    else:
        created = create_bus(None)
        assert isinstance(created, MemoryBus)
    try:
        yield created
    finally:
        await created.close()


async def pubsub_connections() -> list[str]:
    """The ids of the pub/sub connections to the test's Redis database."""
    db = int(urlsplit(REDIS_URL).path.strip("/") or 0)
    admin = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        clients = await admin.client_list()
    finally:
        await admin.aclose()
    return sorted(c["id"] for c in clients if int(c["db"]) == db and "P" in c["flags"])


def new_channel() -> str:
    return f"test.bus.{uuid.uuid4().hex}"


async def next_message(messages: AsyncIterator[Message], timeout: float = 5.0) -> Message:
    return await asyncio.wait_for(anext(messages), timeout)


async def until_subscribers(bus: EventBus, channel: str, count: int) -> None:
    """Redis counts a subscription once it has processed it; poll until it has."""

    async def reached() -> bool:
        return await bus.subscriber_count(channel) == count

    await wait_for(reached)


async def fence(
    bus: EventBus, channel: str, *subscriptions: AsyncIterator[Message]
) -> list[list[Message]]:
    """What each subscription received before a marker published on ``channel`` now.

    The marker follows anything published before it, so an empty list proves that
    nothing else arrived: no sleeping needed.
    """
    marker = {"fence": uuid.uuid4().hex}
    await bus.publish(channel, marker)
    received: list[list[Message]] = []
    for messages in subscriptions:
        before: list[Message] = []
        while (message := await next_message(messages)) != marker:
            before.append(message)
        received.append(before)
    return received


async def test_every_subscriber_of_a_channel_receives_each_message(bus: EventBus) -> None:
    # given: two subscribers on one channel, one on another
    invoices, payments = new_channel(), new_channel()
    async with (
        bus.subscribe([invoices]) as first,
        bus.subscribe([invoices]) as second,
        bus.subscribe([payments]) as other,
    ):
        await until_subscribers(bus, invoices, 2)
        await until_subscribers(bus, payments, 1)

        # when
        await bus.publish(invoices, {"id": "inv-1", "total": {"amount": "12.50"}})
        await bus.publish(invoices, {"id": "inv-2", "total": None})

        # then: both invoice subscribers get both, in order; the payments one gets nothing
        for messages in (first, second):
            assert await next_message(messages) == {"id": "inv-1", "total": {"amount": "12.50"}}
            assert await next_message(messages) == {"id": "inv-2", "total": None}
        assert await fence(bus, invoices, first, second) == [[], []]
        assert await fence(bus, payments, other) == [[]]


async def test_one_subscription_hears_all_of_its_channels(bus: EventBus) -> None:
    # given
    first, second, unrelated = new_channel(), new_channel(), new_channel()
    async with bus.subscribe([first, second]) as messages:
        await until_subscribers(bus, first, 1)
        await until_subscribers(bus, second, 1)

        # when
        await bus.publish(unrelated, {"n": 0})
        await bus.publish(first, {"n": 1})
        await bus.publish(second, {"n": 2})

        # then
        assert await next_message(messages) == {"n": 1}
        assert await next_message(messages) == {"n": 2}
        assert await fence(bus, first, messages) == [[]]


async def test_messages_arrive_as_plain_json_data(bus: EventBus) -> None:
    # given
    channel = new_channel()
    sent: Message = {"tags": ("a", "b"), "nested": {"ok": True}}
    async with bus.subscribe([channel]) as messages:
        await until_subscribers(bus, channel, 1)

        # when
        await bus.publish(channel, sent)
        sent["nested"]["ok"] = False

        # then: a copy in JSON types, not the publisher's object
        assert await next_message(messages) == {"tags": ["a", "b"], "nested": {"ok": True}}


async def test_subscriber_count_follows_subscriptions_in_and_out(bus: EventBus) -> None:
    # given
    channel = new_channel()
    assert await bus.subscriber_count(channel) == 0

    # when / then
    async with bus.subscribe([channel]):
        await until_subscribers(bus, channel, 1)
        async with bus.subscribe([channel]):
            await until_subscribers(bus, channel, 2)
        await until_subscribers(bus, channel, 1)
    await until_subscribers(bus, channel, 0)


async def test_a_subscription_left_by_an_error_is_unsubscribed(bus: EventBus) -> None:
    # given
    channel = new_channel()

    async def listen_then_fail() -> None:
        async with bus.subscribe([channel]):
            await until_subscribers(bus, channel, 1)
            raise LookupError("subscriber went away")

    # when
    with pytest.raises(LookupError):
        await listen_then_fail()

    # then
    await until_subscribers(bus, channel, 0)


async def test_a_message_published_with_nobody_listening_is_dropped(bus: EventBus) -> None:
    # given: a message published before anyone subscribed
    channel = new_channel()
    await bus.publish(channel, {"n": 1})

    # when
    async with bus.subscribe([channel]) as messages:
        await until_subscribers(bus, channel, 1)

        # then: a subscriber hears only what is published from now on
        assert await fence(bus, channel, messages) == [[]]


@pytest.fixture(params=["memory", "redis"])
async def small_bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    """A bus whose subscriptions may fall two messages behind."""
    if request.param == "redis":
        try:
            await check_redis()
        except Exception as exc:
            unavailable("Redis", exc)
    created = create_bus(REDIS_URL if request.param == "redis" else None, queue_size=2)
    try:
        yield created
    finally:
        await created.close()


async def test_a_subscriber_that_falls_a_queue_behind_is_ended_and_nobody_waits(
    small_bus: EventBus,
) -> None:
    # given a subscriber that reads and one that does not, each with a queue of two
    bus, channel = small_bus, new_channel()
    async with bus.subscribe([channel]) as reader, bus.subscribe([channel]) as sleeper:
        await until_subscribers(bus, channel, 2)

        # when three messages are published while the reader keeps up
        for n in range(3):
            await bus.publish(channel, {"n": n})
            assert await next_message(reader) == {"n": n}

        # then the sleeper is ended with SUBSCRIBER_TOO_SLOW, without its queued messages
        with pytest.raises(SubscriberTooSlow) as ended:
            await next_message(sleeper)
        assert ended.value.extensions == {"code": "SUBSCRIBER_TOO_SLOW"}
        with pytest.raises(SubscriberTooSlow):
            await next_message(sleeper)
        # and the reader goes on hearing everything
        assert await fence(bus, channel, reader) == [[]]


async def test_subscribers_joining_and_leaving_at_once_leave_the_channel_subscribed(
    bus: EventBus,
) -> None:
    # given one subscriber that stays
    channel = new_channel()
    async with bus.subscribe([channel]) as staying:
        await until_subscribers(bus, channel, 1)

        # when 50 others join and leave at the same time, twice over
        async def visit() -> None:
            async with bus.subscribe([channel]):
                await asyncio.sleep(0)

        for _ in range(2):
            await asyncio.gather(*(visit() for _ in range(50)))

        # then the channel is still subscribed, with one subscriber, who hears what follows
        await until_subscribers(bus, channel, 1)
        await bus.publish(channel, {"n": 1})
        assert await next_message(staying) == {"n": 1}
    await until_subscribers(bus, channel, 0)


async def test_a_redis_bus_holds_one_connection_for_many_subscriptions() -> None:
    # given
    try:
        await check_redis()
    except Exception as exc:
        unavailable("Redis", exc)
    others = await pubsub_connections()
    bus = RedisBus(REDIS_URL)
    channels = [new_channel() for _ in range(3)]
    try:
        async with AsyncExitStack() as stack:
            # when 150 subscriptions open on three channels
            for n in range(150):
                await stack.enter_async_context(bus.subscribe([channels[n % 3]]))
            for channel in channels:
                await until_subscribers(bus, channel, 50)

            # then the bus holds one pub/sub connection to Redis
            assert len(set(await pubsub_connections()) - set(others)) == 1
    finally:
        await bus.close()


async def test_a_redis_bus_subscribes_again_after_its_connection_drops() -> None:
    # given two subscribers on a Redis bus, and a publisher with its own connection
    try:
        await check_redis()
    except Exception as exc:
        unavailable("Redis", exc)
    others = set(await pubsub_connections())
    bus, publisher = RedisBus(REDIS_URL), RedisBus(REDIS_URL)
    first, second = new_channel(), new_channel()
    try:
        async with bus.subscribe([first]) as one, bus.subscribe([first, second]) as other:
            await until_subscribers(bus, first, 2)
            await until_subscribers(bus, second, 1)
            dropped = set(await pubsub_connections()) - others
            assert len(dropped) == 1

            # when Redis drops the bus's pub/sub connection
            admin = aioredis.Redis.from_url(REDIS_URL)
            try:
                await admin.client_kill_filter(_id=next(iter(dropped)))
            finally:
                await admin.aclose()

            # then the bus reconnects on a new connection and subscribes to both channels
            # again; the open subscriptions hear what is published from then on
            async def reconnected() -> bool:
                new = set(await pubsub_connections()) - others
                return len(new) == 1 and not new & dropped

            await wait_for(reconnected)
            await until_subscribers(publisher, first, 1)
            await until_subscribers(publisher, second, 1)
            await publisher.publish(first, {"n": 1})
            await publisher.publish(second, {"n": 2})
            assert await next_message(one) == {"n": 1}
            assert [await next_message(other), await next_message(other)] == [
                {"n": 1},
                {"n": 2},
            ]
            assert await fence(bus, first, one, other) == [[], []]
    finally:
        await bus.close()
        await publisher.close()


async def test_redis_bus_skips_a_message_that_is_not_json() -> None:
    # given
    try:
        await check_redis()
    except Exception as exc:
        unavailable("Redis", exc)
    bus = RedisBus(REDIS_URL)
    raw = aioredis.Redis.from_url(REDIS_URL)
    channel = new_channel()
    try:
        async with bus.subscribe([channel]) as messages:
            await until_subscribers(bus, channel, 1)

            # when: another program publishes garbage, then a real message
            await raw.publish(channel, b"not json {")
            await bus.publish(channel, {"n": 1})

            # then
            assert await next_message(messages) == {"n": 1}
    finally:
        await raw.aclose()
        await bus.close()


async def test_redis_bus_reaches_a_subscriber_in_another_process() -> None:
    # given: two buses with their own connections, as two replicas would have
    try:
        await check_redis()
    except Exception as exc:
        unavailable("Redis", exc)
    api, worker = RedisBus(REDIS_URL), RedisBus(REDIS_URL)
    channel = new_channel()
    try:
        async with api.subscribe([channel]) as messages:
            await until_subscribers(worker, channel, 1)

            # when: the worker publishes
            await worker.publish(channel, {"paid": "inv-1"})

            # then: the API replica's subscriber receives it
            assert await next_message(messages) == {"paid": "inv-1"}
    finally:
        await api.close()
        await worker.close()


async def test_redis_bus_ping_fails_when_redis_is_unreachable() -> None:
    # given: a port nobody listens on
    bus = RedisBus("redis://127.0.0.1:1/0")
    try:
        # when / then
        with pytest.raises(RedisConnectionError):
            await bus.ping()
    finally:
        await bus.close()


# --- streams ------------------------------------------------------------------


async def test_an_agency_channel_message_is_kept_in_the_agency_stream_with_its_cursor(
    bus: EventBus,
) -> None:
    # given a subscriber of an agency's payments channel
    agency = str(uuid.uuid4())
    channel = channels.payments(agency)
    start = await bus.stream_tail(agency)
    async with bus.subscribe([channel]) as messages:
        await until_subscribers(bus, channel, 1)

        # when two messages are published, one of them twice under one name
        await bus.publish(channel, {"n": 1}, once="a")
        await bus.publish(channel, {"n": 1}, once="a")
        await bus.publish(channels.invoices(agency), {"n": 2})

        # then the subscriber hears the first once, with the cursor the stream keeps it by
        heard = await next_message(messages)
        entries = await bus.read_stream(agency, start, 10)
        assert entries == [
            (entries[0][0], channel, {"cursor": entries[0][0], "n": 1}),
            (entries[1][0], channels.invoices(agency), {"cursor": entries[1][0], "n": 2}),
        ]
        assert heard == {"cursor": entries[0][0], "n": 1}
        assert cursor_key(entries[0][0]) < cursor_key(entries[1][0])
        # and a channel of no agency has no stream: its messages carry no cursor
        plain = new_channel()
        async with bus.subscribe([plain]) as other:
            await until_subscribers(bus, plain, 1)
            await bus.publish(plain, {"n": 3})
            assert await next_message(other) == {"n": 3}


@pytest.mark.parametrize("progress", [channels.imports, channels.exports])
async def test_import_and_export_progress_is_heard_live_and_kept_out_of_the_stream(
    bus: EventBus, progress: Any
) -> None:
    # given a subscriber of an agency's import (or export) progress
    agency = str(uuid.uuid4())
    channel = progress(agency)
    start = await bus.stream_tail(agency)
    async with bus.subscribe([channel]) as messages:
        await until_subscribers(bus, channel, 1)

        # when a long job publishes its progress, then a payment changes
        for n in range(50):
            await bus.publish(channel, {"processed": n})
        await bus.publish(channels.payments(agency), {"n": 1})

        # then the subscriber hears every update, without a cursor, and the agency's
        # stream holds the payment alone: progress never crowds out what resumes
        assert [await next_message(messages) for _ in range(50)] == [
            {"processed": n} for n in range(50)
        ]
        entries = await bus.read_stream(agency, start, 100)
        assert [(name, message) for _, name, message in entries] == [
            (channels.payments(agency), {"cursor": entries[0][0], "n": 1})
        ]


async def test_entries_older_than_the_retention_are_dropped(
    bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a stream that keeps one second of events
    monkeypatch.setattr(bus, "retention_seconds", 1)
    agency = str(uuid.uuid4())
    channel = channels.activity(agency)
    first = await bus.stream_tail(agency)
    await bus.publish(channel, {"n": 1})

    # when more than a second later another event is published
    await asyncio.sleep(1.2)
    await bus.publish(channel, {"n": 2})

    # then what came before it is gone: a cursor from then has expired
    with pytest.raises(CursorExpired):
        await bus.read_stream(agency, first, 10)
    newest = await bus.stream_tail(agency)
    assert await bus.read_stream(agency, newest, 10) == []


async def test_a_redis_bus_tells_resuming_subscribers_of_a_lost_connection() -> None:
    # given a subscription that asked to hear of gaps, and one that did not
    try:
        await check_redis()
    except Exception as exc:
        unavailable("Redis", exc)
    others = set(await pubsub_connections())
    bus = RedisBus(REDIS_URL)
    channel = new_channel()
    try:
        async with (
            bus.subscribe([channel], gaps=True) as resuming,
            bus.subscribe([channel]) as plain,
        ):
            await bus.listening([channel])
            dropped = set(await pubsub_connections()) - others

            # when Redis drops the bus's connection, and the bus subscribes again
            admin = aioredis.Redis.from_url(REDIS_URL)
            try:
                await admin.client_kill_filter(_id=next(iter(dropped)))
            finally:
                await admin.aclose()

            # then the first hears GAP (once Redis has confirmed the new subscription),
            # the other goes on with messages alone
            assert await next_message(resuming) is GAP
            assert channel in bus._confirmed
            assert await fence(bus, channel, resuming, plain) == [[], []]
    finally:
        await bus.close()


async def test_a_burst_of_new_subscriptions_beyond_the_redis_pool_waits_its_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a Redis bus whose pool holds 4 connections
    try:
        await check_redis()
    except Exception as exc:
        unavailable("Redis", exc)
    monkeypatch.setattr("settle.subscriptions.bus.POOL_SIZE", 4)
    bus = RedisBus(REDIS_URL)
    agency = str(uuid.uuid4())
    try:
        # when 200 subscriptions read their stream's tail at once (as each new one does)
        tails = await asyncio.gather(*(bus.stream_tail(agency) for _ in range(200)))

        # then every one gets the tail, none fails for want of a connection
        assert len(tails) == 200
        assert len(set(tails)) == 1
    finally:
        await bus.close()


@pytest.mark.parametrize("error", [RuntimeError("handler is closed"), RedisConnectionError("lost")])
async def test_a_subscribe_that_fails_on_a_live_connection_is_sent_again(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    # given a Redis bus whose reader is connected, and a SUBSCRIBE that fails once as it
    # does when it meets redis-py reconnecting the connection after a Redis restart (the
    # reader's connection is back, so the reader sees no loss to subscribe again after)
    try:
        await check_redis()
    except Exception as exc:
        unavailable("Redis", exc)
    monkeypatch.setattr("settle.subscriptions.bus.LISTEN_TIMEOUT_SECONDS", 3.0)
    bus, publisher = RedisBus(REDIS_URL), RedisBus(REDIS_URL)
    ready = new_channel()
    try:
        async with bus.subscribe([ready]):
            await bus.listening([ready])
            pubsub = bus._pubsub
            assert pubsub is not None
            subscribe = pubsub.subscribe
            failures: list[tuple[str, ...]] = []

            async def fails_once(*channels: str) -> None:
                if not failures:
                    failures.append(channels)
                    raise error
                await subscribe(*channels)

            monkeypatch.setattr(pubsub, "subscribe", fails_once)

            # when a subscription opens on a new channel
            channel = new_channel()
            async with bus.subscribe([channel]) as messages:
                # then the bus sends the SUBSCRIBE again: Redis confirms it, and the
                # subscription hears what is published
                await bus.listening([channel])
                assert failures == [(channel,)]
                await publisher.publish(channel, {"n": 1})
                assert await next_message(messages) == {"n": 1}
    finally:
        await bus.close()
        await publisher.close()
