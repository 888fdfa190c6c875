"""The event bus: Redis pub/sub across replicas, or in-process for the embedded run.

Both buses fan messages out in memory to the process's subscriptions (``Fanout``):
a message is decoded once and the same (read-only) dict reaches every local
subscriber of its channel. ``RedisBus`` holds one pub/sub connection per process,
whatever the number of subscriptions: it SUBSCRIBEs to a channel when the channel's
first local subscriber arrives and UNSUBSCRIBEs when its last one leaves, and a
reader task feeds the fan-out. When Redis drops the connection, the reader
reconnects with backoff and subscribes again to every channel that still has
subscribers; the subscriptions stay open, but what was published during the gap
never reaches them (pub/sub keeps nothing).

Each subscription has a bounded queue. A subscriber that does not keep up (its
queue is full when a message arrives) is ended: its iterator raises
``SubscriberTooSlow``, which a GraphQL subscription reports as an error with code
``SUBSCRIBER_TOO_SLOW``. The publisher and the other subscribers never wait for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import redis.asyncio as aioredis
from graphql import GraphQLError
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

Message = dict[str, Any]
T = TypeVar("T")

DEFAULT_QUEUE_SIZE = 256
# Reconnection backoff of the Redis reader: doubled after each failure, up to the cap.
RECONNECT_FIRST_DELAY = 0.05
RECONNECT_MAX_DELAY = 5.0


class SubscriberTooSlow(GraphQLError):
    """A subscription fell a whole queue behind its channel and was ended."""

    code = "SUBSCRIBER_TOO_SLOW"

    def __init__(self, queue_size: int) -> None:
        super().__init__(
            f"This subscription fell more than {queue_size} events behind and was ended; "
            "subscribe again (and refetch what you show).",
            extensions={"code": self.code},
        )


class EventBus(ABC):
    @abstractmethod
    async def publish(self, channel: str, message: Message) -> None:
        """Deliver ``message`` to every current subscriber of ``channel``."""

    @abstractmethod
    def subscribe(
        self, channels: Sequence[str], *, queue_size: int | None = None
    ) -> AbstractSubscription:
        """Listen on ``channels``; use as ``async with bus.subscribe([...]) as messages``.

        The messages are shared by every local subscriber: read them, never change them.
        ``queue_size`` overrides the bus's bound on how far this subscription may lag.
        """

    @abstractmethod
    async def subscriber_count(self, channel: str) -> int:
        """How many subscriptions listen on ``channel`` (for Redis, see ``RedisBus``)."""

    async def ping(self) -> None:  # noqa: B027 - the in-process bus is always up
        """Raise if the bus is unreachable."""

    async def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections."""


AbstractSubscription = Any  # an async context manager yielding AsyncIterator[Message]


class _Subscriber:
    """One subscription's bounded queue; ended for good when it overflows."""

    __slots__ = ("_items", "_size", "_waiter", "channels", "overflowed")

    def __init__(self, size: int, channels: tuple[str, ...]) -> None:
        self.channels = channels
        self._items: deque[Message] = deque()
        self._size = size
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False

    def push(self, message: Message) -> bool:
        """Queue ``message``; False when this subscriber has just overflowed."""
        if self.overflowed:
            return True
        if len(self._items) >= self._size:
            self.overflowed = True
            self._items.clear()
            self._wake()
            return False
        self._items.append(message)
        self._wake()
        return True

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> _Subscriber:
        return self

    async def __anext__(self) -> Message:
        # Ended for good: every later read says so again.
        while not self._items:
            if self.overflowed:
                raise SubscriberTooSlow(self._size)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class Fanout:
    """The process's subscriptions by channel; delivers each message to them in memory."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._by_channel: dict[str, set[_Subscriber]] = {}

    def add(self, channels: Iterable[str], queue_size: int | None = None) -> _Subscriber:
        subscriber = _Subscriber(queue_size or self.queue_size, tuple(channels))
        for channel in subscriber.channels:
            self._by_channel.setdefault(channel, set()).add(subscriber)
        return subscriber

    def remove(self, subscriber: _Subscriber) -> None:
        for channel in subscriber.channels:
            subscribers = self._by_channel.get(channel)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._by_channel[channel]

    def channels(self) -> set[str]:
        """The channels with at least one local subscriber."""
        return set(self._by_channel)

    def count(self, channel: str) -> int:
        return len(self._by_channel.get(channel, ()))

    def deliver(self, channel: str, message: Message) -> None:
        # No await in here: a message reaches every subscriber in one step, in order.
        for subscriber in tuple(self._by_channel.get(channel, ())):
            if not subscriber.push(message):
                # Ended: it hears nothing more and no longer counts as a subscriber.
                self.remove(subscriber)
                log.warning(
                    "bus.subscriber_too_slow",
                    extra={"channel": channel, "queue_size": self.queue_size},
                )


class MemoryBus(EventBus):
    """One process only: the embedded default and unit tests."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.fanout = Fanout(queue_size)

    async def publish(self, channel: str, message: Message) -> None:
        # A JSON round trip gives subscribers what Redis would: plain data, no shared objects.
        self.fanout.deliver(channel, json.loads(json.dumps(message)))

    @asynccontextmanager
    async def subscribe(
        self, channels: Sequence[str], *, queue_size: int | None = None
    ) -> AsyncIterator[AsyncIterator[Message]]:
        subscriber = self.fanout.add(channels, queue_size)
        try:
            yield subscriber
        finally:
            self.fanout.remove(subscriber)

    async def subscriber_count(self, channel: str) -> int:
        return self.fanout.count(channel)


class RedisBus(EventBus):
    """Redis pub/sub: an event published on any replica reaches subscribers on all.

    ``subscriber_count`` counts this process's subscriptions on a channel once Redis has
    confirmed the channel's SUBSCRIBE; for a channel this process does not listen on, it
    is the number of processes that do (Redis sees a connection, not its subscriptions).
    """

    def __init__(self, url: str, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._redis = aioredis.Redis.from_url(url, decode_responses=True)
        self.fanout = Fanout(queue_size)
        # The reader's own channel: the connection is always subscribed to something,
        # so a read blocks on the socket rather than polling.
        self._control = f"settle.bus.{uuid.uuid4().hex}"
        self._pubsub: aioredis.client.PubSub | None = None
        self._sent: set[str] = set()  # channels this connection has SUBSCRIBEd to
        self._confirmed: set[str] = set()  # ... and Redis has confirmed
        self._sync_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, channel: str, message: Message) -> None:
        await self._redis.publish(channel, json.dumps(message, separators=(",", ":")))

    @asynccontextmanager
    async def subscribe(
        self, channels: Sequence[str], *, queue_size: int | None = None
    ) -> AsyncIterator[AsyncIterator[Message]]:
        self._start()
        subscriber = self.fanout.add(channels, queue_size)
        try:
            await self._sync()
            yield subscriber
        finally:
            self.fanout.remove(subscriber)
            await self._sync()

    async def _sync(self) -> None:
        """Make the connection's SUBSCRIBEs match the channels with local subscribers.

        One at a time, each from the state as it is then: a channel left by its last
        subscriber and joined again before the lock comes free is never unsubscribed.
        """
        async with self._sync_lock:
            pubsub = self._pubsub
            if pubsub is None:
                return  # the reader subscribes to everything wanted when it connects
            wanted = self.fanout.channels()
            joined, left = wanted - self._sent, self._sent - wanted
            # Noted before sending: the reader may see Redis's confirmation first.
            self._sent = wanted
            self._confirmed -= left
            try:
                if joined:
                    await pubsub.subscribe(*sorted(joined))
                if left:
                    await pubsub.unsubscribe(*sorted(left))
            except (RedisError, OSError) as exc:
                # The reader notices the broken connection and subscribes afresh.
                log.warning("bus.sync_failed", extra={"error": repr(exc)})

    def _start(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="settle.bus-reader")

    async def _read(self) -> None:
        delay = RECONNECT_FIRST_DELAY
        while not self._closed:
            pubsub = self._redis.pubsub()
            try:
                async with self._sync_lock:
                    self._confirmed.clear()
                    self._sent = self.fanout.channels()
                    await pubsub.subscribe(self._control, *sorted(self._sent))
                    self._pubsub = pubsub
                while True:
                    raw = await pubsub.get_message(timeout=None)
                    if raw is None:
                        continue
                    delay = RECONNECT_FIRST_DELAY
                    self._receive(raw)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("bus.connection_lost", extra={"error": repr(exc), "retry_in": delay})
            finally:
                if self._pubsub is pubsub:
                    self._pubsub = None
                    self._confirmed.clear()
                with suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    def _receive(self, raw: dict[str, Any]) -> None:
        kind, channel = raw.get("type"), raw.get("channel")
        if not isinstance(channel, str):
            return
        if kind == "subscribe":
            if channel in self._sent:
                self._confirmed.add(channel)
        elif kind == "unsubscribe":
            if channel not in self._sent:
                self._confirmed.discard(channel)
        elif kind == "message":
            try:
                message = json.loads(raw["data"])
            except json.JSONDecodeError:
                log.warning("bus.bad_message", extra={"channel": channel})
                return
            self.fanout.deliver(channel, message)

    async def subscriber_count(self, channel: str) -> int:
        if channel in self._confirmed:
            return self.fanout.count(channel)
        counts = await self._redis.pubsub_numsub(channel)
        return int(counts[0][1]) if counts else 0

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._redis.aclose()


_bus: EventBus | None = None


def set_bus(bus: EventBus | None) -> None:
    global _bus
    _bus = bus


def get_bus() -> EventBus:
    """The process's bus; configured at start-up by the app, worker or test."""
    if _bus is None:
        raise RuntimeError("event bus not configured")
    return _bus


def create_bus(redis_url: str | None, queue_size: int = DEFAULT_QUEUE_SIZE) -> EventBus:
    return RedisBus(redis_url, queue_size) if redis_url else MemoryBus(queue_size)


_shaped: OrderedDict[tuple[int, str], tuple[Message, Any]] = OrderedDict()
_SHAPED_KEPT = 256


def once_per_event(message: Message, key: str, build: Callable[[Message], T]) -> T:
    """``build(message)`` once for all local subscribers of one event (per ``key``).

    Every local subscriber receives the same message object, so the first to shape it
    (into a GraphQL type, say) does it for the rest. Entries hold their message: an
    id is never reused while it is cached.
    """
    slot = (id(message), key)
    hit = _shaped.get(slot)
    if hit is not None and hit[0] is message:
        return hit[1]
    value = build(message)
    _shaped[slot] = (message, value)
    if len(_shaped) > _SHAPED_KEPT:
        _shaped.popitem(last=False)
    return value
