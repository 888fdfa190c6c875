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

Every message published on an agency's channel is also appended to that agency's
stream (a Redis stream, or a bounded in-memory one), and carries its entry id as
``cursor``: the append and the publish are one step, so no subscriber hears an
event that the stream lacks, and the stream's order is the order of publication.
The stream keeps the entries of the last ``retention_seconds``, at most
``max_entries`` of them; ``read_stream`` replays what follows a cursor, and
refuses (``CursorExpired``) a cursor whose entry is gone: trimmed, or lost with
a Redis that restarted without persistence. See ``settle.subscriptions.stream``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from itertools import islice
from typing import Any, TypeVar

import redis.asyncio as aioredis
from graphql import GraphQLError
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from settle.subscriptions import channels as channel_names

log = logging.getLogger(__name__)

Message = dict[str, Any]
T = TypeVar("T")

DEFAULT_QUEUE_SIZE = 256
# Reconnection backoff of the Redis reader: doubled after each failure, up to the cap.
RECONNECT_FIRST_DELAY = 0.05
RECONNECT_MAX_DELAY = 5.0
DEFAULT_STREAM_RETENTION_SECONDS = 24 * 3600
DEFAULT_STREAM_MAX_ENTRIES = 100_000
# How long a resuming subscription waits for Redis to confirm its SUBSCRIBE before it
# reads the stream (the read must not start before the live events are heard).
LISTEN_TIMEOUT_SECONDS = 10.0
# Commands in flight at once on a process's Redis connections (the pub/sub reader's
# connection aside), and how long a command waits for one of them to come free.
POOL_SIZE = 100
POOL_WAIT_SECONDS = 10.0

# A stream entry id, as Redis writes it: milliseconds and a sequence number.
CURSOR = re.compile(r"\A(\d{1,20})-(\d{1,20})\Z")

# What a subscription that asked for gaps (``subscribe(..., gaps=True)``) hears when the
# bus may have missed messages of its channels: Redis dropped the connection, and it is
# now subscribed again. Compared by identity.
GAP: Message = {"gap": True}


def cursor_key(cursor: str) -> tuple[int, int]:
    """A cursor's place in its stream, for comparing two cursors."""
    match = CURSOR.match(cursor)
    if match is None:
        raise ValueError(cursor)
    return int(match[1]), int(match[2])


class CursorExpired(Exception):
    """The entry a cursor names is no longer in its stream: what followed may be lost."""


StreamEntry = tuple[str, str, Message]  # (cursor, channel, message with its cursor)


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
    async def publish(self, channel: str, message: Message, *, once: str | None = None) -> None:
        """Deliver ``message`` to every current subscriber of ``channel``.

        On an agency's channel the message is appended to the agency's stream first and
        delivered with its ``cursor``. ``once`` names the message for the stream's
        retention: published again under the same name (a relay retried after a crash),
        it is neither appended nor delivered again.
        """

    @abstractmethod
    def subscribe(
        self, channels: Sequence[str], *, queue_size: int | None = None, gaps: bool = False
    ) -> AbstractSubscription:
        """Listen on ``channels``; use as ``async with bus.subscribe([...]) as messages``.

        The messages are shared by every local subscriber: read them, never change them.
        ``queue_size`` overrides the bus's bound on how far this subscription may lag.
        With ``gaps``, the subscription hears ``GAP`` where messages may have been lost.
        """

    async def listening(self, channels: Sequence[str]) -> None:  # noqa: B027 - at once here
        """Wait until what is published on ``channels`` reaches this process's subscribers."""

    @abstractmethod
    async def read_stream(self, agency_id: str, after: str, count: int) -> list[StreamEntry]:
        """Up to ``count`` entries of the agency's stream after ``after``, oldest first.

        Raises ``CursorExpired`` when the entry ``after`` names is not in the stream.
        """

    @abstractmethod
    async def stream_tail(self, agency_id: str) -> str:
        """The cursor of the agency's newest entry (one is made when the stream is empty)."""

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

    __slots__ = ("_items", "_size", "_waiter", "channels", "gaps", "overflowed")

    def __init__(self, size: int, channels: tuple[str, ...], gaps: bool = False) -> None:
        self.channels = channels
        self.gaps = gaps
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

    def add(
        self, channels: Iterable[str], queue_size: int | None = None, gaps: bool = False
    ) -> _Subscriber:
        subscriber = _Subscriber(queue_size or self.queue_size, tuple(channels), gaps)
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

    def deliver_gap(self, channel: str) -> None:
        """Tell the subscribers of ``channel`` that asked for it that messages may be lost."""
        for subscriber in tuple(self._by_channel.get(channel, ())):
            if subscriber.gaps and not subscriber.push(GAP):
                self.remove(subscriber)


class _MemoryStream:
    """One agency's stream in memory: entries with Redis-style ids, trimmed like Redis's."""

    __slots__ = ("entries", "index", "last")

    def __init__(self) -> None:
        self.entries: deque[tuple[tuple[int, int], str, str]] = deque()  # key, channel, JSON
        self.index: dict[tuple[int, int], int] = {}  # key -> position counted from the start
        self.last = (0, 0)

    @property
    def first_position(self) -> int:
        return self.index[self.entries[0][0]] if self.entries else 0

    def add(self, channel: str, data: str, retention_ms: int, max_entries: int) -> str:
        now = int(time.time() * 1000)
        key = (now, 0) if now > self.last[0] else (self.last[0], self.last[1] + 1)
        position = self.first_position + len(self.entries)
        self.entries.append((key, channel, data))
        self.index[key] = position
        self.last = key
        while len(self.entries) > max_entries or (
            len(self.entries) > 1 and self.entries[0][0][0] < now - retention_ms
        ):
            del self.index[self.entries.popleft()[0]]
        return f"{key[0]}-{key[1]}"


class MemoryBus(EventBus):
    """One process only: the embedded default and unit tests.

    The streams live as long as the process: a cursor from before a restart has expired.
    """

    def __init__(
        self,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        *,
        retention_seconds: int = DEFAULT_STREAM_RETENTION_SECONDS,
        max_entries: int = DEFAULT_STREAM_MAX_ENTRIES,
    ) -> None:
        self.fanout = Fanout(queue_size)
        self.retention_seconds = retention_seconds
        self.max_entries = max_entries
        self._streams: dict[str, _MemoryStream] = {}
        self._published: OrderedDict[str, float] = OrderedDict()  # ``once`` names -> expiry

    async def publish(self, channel: str, message: Message, *, once: str | None = None) -> None:
        data = json.dumps(message, separators=(",", ":"))
        agency = channel_names.agency_of(channel)
        if agency is None:
            # A JSON round trip gives subscribers what Redis would: plain data, no sharing.
            self.fanout.deliver(channel, json.loads(data))
            return
        if once is not None and self._seen(f"{agency}.{once}"):
            return
        stream = self._streams.setdefault(agency, _MemoryStream())
        cursor = stream.add(channel, data, self.retention_seconds * 1000, self.max_entries)
        self.fanout.deliver(channel, {"cursor": cursor, **json.loads(data)})

    def _seen(self, name: str) -> bool:
        now = time.monotonic()
        while self._published and next(iter(self._published.values())) <= now:
            self._published.popitem(last=False)
        if name in self._published:
            return True
        self._published[name] = now + self.retention_seconds
        return False

    async def read_stream(self, agency_id: str, after: str, count: int) -> list[StreamEntry]:
        stream = self._streams.get(agency_id)
        position = None if stream is None else stream.index.get(cursor_key(after))
        if stream is None or position is None:
            raise CursorExpired(after)
        start = position - stream.first_position + 1
        return [
            (f"{key[0]}-{key[1]}", channel, {"cursor": f"{key[0]}-{key[1]}", **json.loads(data)})
            for key, channel, data in islice(stream.entries, start, start + count)
        ]

    async def stream_tail(self, agency_id: str) -> str:
        stream = self._streams.setdefault(agency_id, _MemoryStream())
        if not stream.entries:
            # A mark to resume from: the stream's start, as good as any entry after it.
            return stream.add("", "{}", self.retention_seconds * 1000, self.max_entries)
        key = stream.entries[-1][0]
        return f"{key[0]}-{key[1]}"

    @asynccontextmanager
    async def subscribe(
        self, channels: Sequence[str], *, queue_size: int | None = None, gaps: bool = False
    ) -> AsyncIterator[AsyncIterator[Message]]:
        subscriber = self.fanout.add(channels, queue_size, gaps)
        try:
            yield subscriber
        finally:
            self.fanout.remove(subscriber)

    async def subscriber_count(self, channel: str) -> int:
        return self.fanout.count(channel)


# Append to the agency's stream, trim it and publish, in one step: a subscriber never
# hears an event the stream lacks, and the stream's order is the channels' order.
# KEYS: the stream, and the ``once`` marker ('' for none).
# ARGV: channel, JSON, max entries, retention in ms.
_PUBLISH = """
local stream, once = KEYS[1], KEYS[2]
local channel, data, max_entries, retention = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if once ~= '' then
  if not redis.call('SET', once, '1', 'NX', 'PX', retention) then return false end
end
local id = redis.call('XADD', stream, 'MAXLEN', max_entries, '*', 'c', channel, 'd', data)
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - retention
if floor > 0 then redis.call('XTRIM', stream, 'MINID', floor) end
redis.call('PEXPIRE', stream, retention)
local payload
if data == '{}' then
  payload = '{"cursor":"' .. id .. '"}'
else
  payload = '{"cursor":"' .. id .. '",' .. string.sub(data, 2)
end
redis.call('PUBLISH', channel, payload)
return id
"""

# The entries after a cursor, or false when the cursor's own entry is gone (trimmed, or
# the stream was lost): trimming only ever removes the oldest entries, so while a
# cursor's entry is there, every entry after it is too.
_READ = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
return redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
"""

# The newest entry's id; an empty stream gets a mark entry (channel '') to resume from.
_TAIL = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then return last[1][1] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'c', '', 'd', '{}')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return id
"""


class RedisBus(EventBus):
    """Redis pub/sub: an event published on any replica reaches subscribers on all.

    ``subscriber_count`` counts this process's subscriptions on a channel once Redis has
    confirmed the channel's SUBSCRIBE; for a channel this process does not listen on, it
    is the number of processes that do (Redis sees a connection, not its subscriptions).
    """

    def __init__(
        self,
        url: str,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        *,
        retention_seconds: int = DEFAULT_STREAM_RETENTION_SECONDS,
        max_entries: int = DEFAULT_STREAM_MAX_ENTRIES,
    ) -> None:
        # A command waits for a free pooled connection rather than failing: every new
        # subscription reads its stream's tail, and a burst of them (thousands of
        # dashboards reconnecting at once) must queue for the pool, not end with
        # SERVICE_UNAVAILABLE.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT_SECONDS,
            decode_responses=True,
            # A pooled connection from before a Redis restart fails once: try it again on a
            # fresh one. (A publish tried twice is kept once: see ``once``.)
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
            retry_on_error=[RedisConnectionError],
        )
        self._redis = aioredis.Redis.from_pool(pool)  # closed with the client
        self.fanout = Fanout(queue_size)
        self.retention_seconds = retention_seconds
        self.max_entries = max_entries
        self._publish_script = self._redis.register_script(_PUBLISH)
        self._read_script = self._redis.register_script(_READ)
        self._tail_script = self._redis.register_script(_TAIL)
        self._confirmations = asyncio.Event()  # set (and replaced) on each confirmation
        self._gapped: set[str] = set()  # channels to subscribe again after a lost connection
        self._connected_before = False
        # The reader's own channel: the connection is always subscribed to something,
        # so a read blocks on the socket rather than polling.
        self._control = f"settle.bus.{uuid.uuid4().hex}"
        self._pubsub: aioredis.client.PubSub | None = None
        self._sent: set[str] = set()  # channels this connection has SUBSCRIBEd to
        self._confirmed: set[str] = set()  # ... and Redis has confirmed
        self._sync_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None  # sends a failed _sync again
        self._closed = False

    async def publish(self, channel: str, message: Message, *, once: str | None = None) -> None:
        data = json.dumps(message, separators=(",", ":"))
        agency = channel_names.agency_of(channel)
        if agency is None:
            await self._redis.publish(channel, data)
            return
        stream = channel_names.stream(agency)
        await self._publish_script(
            keys=[stream, f"{stream}.once.{once}" if once is not None else ""],
            args=[channel, data, self.max_entries, self.retention_seconds * 1000],
        )

    async def read_stream(self, agency_id: str, after: str, count: int) -> list[StreamEntry]:
        cursor_key(after)  # a malformed cursor never reaches Redis
        entries = await self._read_script(
            keys=[channel_names.stream(agency_id)], args=[after, count]
        )
        if entries is None:
            raise CursorExpired(after)
        read: list[StreamEntry] = []
        for cursor, fields in entries:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            read.append((cursor, values["c"], {"cursor": cursor, **json.loads(values["d"])}))
        return read

    async def stream_tail(self, agency_id: str) -> str:
        tail: str = await self._tail_script(
            keys=[channel_names.stream(agency_id)],
            args=[self.max_entries, self.retention_seconds * 1000],
        )
        return tail

    async def listening(self, channels: Sequence[str]) -> None:
        async with asyncio.timeout(LISTEN_TIMEOUT_SECONDS):
            while not all(channel in self._confirmed for channel in channels):
                confirmed = self._confirmations
                await confirmed.wait()

    @asynccontextmanager
    async def subscribe(
        self, channels: Sequence[str], *, queue_size: int | None = None, gaps: bool = False
    ) -> AsyncIterator[AsyncIterator[Message]]:
        self._start()
        subscriber = self.fanout.add(channels, queue_size, gaps)
        try:
            await self._sync()
            yield subscriber
        finally:
            self.fanout.remove(subscriber)
            await self._sync()

    async def _sync(self) -> bool:
        """Make the connection's SUBSCRIBEs match the channels with local subscribers.

        One at a time, each from the state as it is then: a channel left by its last
        subscriber and joined again before the lock comes free is never unsubscribed.
        False when the commands failed; they are sent again shortly.
        """
        async with self._sync_lock:
            pubsub = self._pubsub
            if pubsub is None:
                return True  # the reader subscribes to everything wanted when it connects
            wanted, before = self.fanout.channels(), self._sent
            joined, left = wanted - before, before - wanted
            # Noted before sending: the reader may see Redis's confirmation first.
            self._sent = wanted
            self._confirmed -= left
            try:
                if joined:
                    await pubsub.subscribe(*sorted(joined))
                if left:
                    await pubsub.unsubscribe(*sorted(left))
            except (RedisError, OSError, RuntimeError) as exc:
                # After a Redis restart redis-py reconnects the reader's connection by
                # itself (asyncio refuses this command's read meanwhile: RuntimeError), so
                # the reader may never see a loss to subscribe again after: unless sent
                # again, these channels would never be confirmed. A SUBSCRIBE or
                # UNSUBSCRIBE that did reach Redis is harmless twice.
                self._sent = before
                log.warning("bus.sync_failed", extra={"error": repr(exc)})
                self._sync_again()
                return False
            return True

    def _sync_again(self) -> None:
        if self._resync is None or self._resync.done():
            self._resync = asyncio.create_task(self._sync_until_sent(), name="settle.bus-resync")

    async def _sync_until_sent(self) -> None:
        delay = RECONNECT_FIRST_DELAY
        while not self._closed:
            await asyncio.sleep(delay)
            if await self._sync():
                return
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

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
                    if self._connected_before:
                        self._gapped = set(self._sent)
                    self._connected_before = True
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
            except (RedisError, OSError, RuntimeError) as exc:
                # RuntimeError: asyncio's, on a transport redis-py is reconnecting.
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
                # Confirmed again, after a lost connection: by this reader, or by the
                # client's own reconnection (which subscribes again by itself). What was
                # published in between never reached us; the subscriptions that resume
                # hear so.
                again = channel in self._confirmed or channel in self._gapped
                self._gapped.discard(channel)
                self._confirmed.add(channel)
                self._confirmations.set()
                self._confirmations = asyncio.Event()
                if again:
                    self.fanout.deliver_gap(channel)
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
        for task in (self._reader, self._resync):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
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


def create_bus(
    redis_url: str | None,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    *,
    retention_seconds: int = DEFAULT_STREAM_RETENTION_SECONDS,
    max_entries: int = DEFAULT_STREAM_MAX_ENTRIES,
) -> EventBus:
    retention = {"retention_seconds": retention_seconds, "max_entries": max_entries}
    if redis_url:
        return RedisBus(redis_url, queue_size, **retention)
    return MemoryBus(queue_size, **retention)


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
