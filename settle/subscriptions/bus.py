"""The event bus: Redis pub/sub across replicas, or in-process for the embedded run."""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

Message = dict[str, Any]


class EventBus(ABC):
    @abstractmethod
    async def publish(self, channel: str, message: Message) -> None:
        """Deliver ``message`` to every current subscriber of ``channel``."""

    @abstractmethod
    def subscribe(self, channels: Sequence[str]) -> AbstractSubscription:
        """Listen on ``channels``; use as ``async with bus.subscribe([...]) as messages``."""

    @abstractmethod
    async def subscriber_count(self, channel: str) -> int:
        """How many subscriptions listen on ``channel`` (across replicas for Redis)."""

    async def ping(self) -> None:  # noqa: B027 - the in-process bus is always up
        """Raise if the bus is unreachable."""

    async def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections."""


AbstractSubscription = Any  # an async context manager yielding AsyncIterator[Message]


class MemoryBus(EventBus):
    """One process only: the embedded default and unit tests."""

    def __init__(self, max_queue: int = 1000) -> None:
        self._queues: dict[str, set[asyncio.Queue[Message]]] = {}
        self._max_queue = max_queue

    async def publish(self, channel: str, message: Message) -> None:
        # A JSON round trip gives subscribers what Redis would: plain data, no shared objects.
        data = json.loads(json.dumps(message))
        for queue in list(self._queues.get(channel, ())):
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:
                log.warning("bus.subscriber_lagging", extra={"channel": channel})

    @asynccontextmanager
    async def subscribe(self, channels: Sequence[str]) -> AsyncIterator[AsyncIterator[Message]]:
        queue: asyncio.Queue[Message] = asyncio.Queue(self._max_queue)
        for channel in channels:
            self._queues.setdefault(channel, set()).add(queue)

        async def messages() -> AsyncIterator[Message]:
            while True:
                yield await queue.get()

        try:
            yield messages()
        finally:
            for channel in channels:
                subscribers = self._queues.get(channel)
                if subscribers is not None:
                    subscribers.discard(queue)
                    if not subscribers:
                        del self._queues[channel]

    async def subscriber_count(self, channel: str) -> int:
        return len(self._queues.get(channel, ()))


class RedisBus(EventBus):
    """Redis pub/sub: an event published on any replica reaches subscribers on all."""

    def __init__(self, url: str) -> None:
        self._redis = aioredis.Redis.from_url(url, decode_responses=True)

    async def publish(self, channel: str, message: Message) -> None:
        await self._redis.publish(channel, json.dumps(message, separators=(",", ":")))

    @asynccontextmanager
    async def subscribe(self, channels: Sequence[str]) -> AsyncIterator[AsyncIterator[Message]]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(*channels)

        async def messages() -> AsyncIterator[Message]:
            while True:
                raw = await pubsub.get_message(timeout=None)
                if raw is None or raw.get("type") != "message":
                    continue
                try:
                    yield json.loads(raw["data"])
                except json.JSONDecodeError:
                    log.warning("bus.bad_message", extra={"channel": raw.get("channel")})

        try:
            yield messages()
        finally:
            with suppress(Exception):
                await pubsub.unsubscribe()
            await pubsub.aclose()

    async def subscriber_count(self, channel: str) -> int:
        counts = await self._redis.pubsub_numsub(channel)
        return int(counts[0][1]) if counts else 0

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
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


def create_bus(redis_url: str | None) -> EventBus:
    return RedisBus(redis_url) if redis_url else MemoryBus()
