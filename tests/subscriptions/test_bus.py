"""The event bus: every subscriber of a channel hears each message, nobody else does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from settle.subscriptions.bus import EventBus, MemoryBus, Message, RedisBus, create_bus
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


async def test_a_memory_subscriber_that_lags_loses_messages_not_the_publisher() -> None:
    # given: a subscriber whose queue holds two messages and who does not read
    bus = MemoryBus(max_queue=2)
    channel = new_channel()
    async with bus.subscribe([channel]) as messages:
        # when: a publisher keeps going
        for n in range(4):
            await bus.publish(channel, {"n": n})

        # then: publishing never blocked; the subscriber has the first two
        assert await next_message(messages) == {"n": 0}
        assert await next_message(messages) == {"n": 1}
        assert await fence(bus, channel, messages) == [[]]


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
