"""Dramatiq setup: the Redis broker in production, an in-process one when embedded.

Actors are declared with ``actor(...)`` below so they can be re-bound when the
process configures its broker (Dramatiq binds an actor to a broker when it is
declared, before settings are known).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import dramatiq
from dramatiq.asyncio import EventLoopThread, set_event_loop_thread
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, Middleware

from settle.core.settings import get_settings

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_actors: dict[str, dramatiq.Actor[Any, Any]] = {}

# Until a process configures its broker, actors bind to a stub that holds
# messages in memory; nothing is sent anywhere by import alone.
dramatiq.set_broker(StubBroker())


def actor(
    name: str, **options: Any
) -> Callable[[Callable[P, Awaitable[R]]], dramatiq.Actor[P, Awaitable[R]]]:
    """Declare an async actor under a dotted ``name`` (``auth.send_invitation``)."""

    def decorator(fn: Callable[P, Awaitable[R]]) -> dramatiq.Actor[P, Awaitable[R]]:
        declared: dramatiq.Actor[P, Awaitable[R]] = dramatiq.actor(actor_name=name, **options)(fn)
        _actors[name] = declared
        return declared

    return decorator


def configure_broker(
    redis_url: str | None, *, host_loop: asyncio.AbstractEventLoop | None = None
) -> dramatiq.Broker:
    """Create the process's broker and re-bind every actor to it.

    With ``redis_url`` the Redis broker is used and async actors run on
    Dramatiq's own event-loop thread (``settle worker``). Without it, messages
    stay in memory and async actors run on ``host_loop``, the API's own loop, so
    they share its database connections (the embedded default).
    """
    import settle.tasks  # noqa: F401 - registers every actor module

    broker: dramatiq.Broker
    if redis_url:
        broker = redis_broker(redis_url)
        broker.add_middleware(AsyncIO())
    else:
        broker = StubBroker()
        if host_loop is None:
            raise ValueError("the in-process broker needs the host event loop")
        broker.add_middleware(HostLoopAsyncIO(host_loop))
    dramatiq.set_broker(broker)
    for declared in _actors.values():
        declared.broker = broker
        broker.declare_actor(declared)
    return broker


def redis_broker(redis_url: str) -> RedisBroker:
    """The Redis broker, set so a dead worker's unacknowledged messages come back in bounded time.

    Dramatiq keeps each fetched message in its worker's ack set until the worker
    acknowledges it. Every broker call (a fetch, an enqueue) refreshes the
    caller's heartbeat, and with ``maintenance_chance`` out of a million it also
    puts back the messages of workers silent for ``heartbeat_timeout`` into that
    call's queue. Dramatiq's default of 1,000 (0.1%) left a killed worker's
    messages waiting about a thousand calls, a quarter of an hour and more. Here
    every call does it: it is two ZRANGEBYSCOREs on small sets inside the call's
    own script, and an idle worker polls each queue about once a second, so a
    dead worker's messages are back within the heartbeat timeout and a second.

    The timeout must stay above the longest silence of a live worker, or its
    messages run twice (safe, every job being idempotent, but wasted): a worker
    polls its delay queue every second even while all its threads are busy.
    """
    timeout = get_settings().broker_heartbeat_timeout_seconds
    return RedisBroker(
        url=redis_url,
        heartbeat_timeout=round(timeout * 1000),
        maintenance_chance=MAINTENANCE_SCALE,
    )


def send_by_name(actor_name: str, args: list[Any], kwargs: dict[str, Any], **options: Any) -> None:
    """Send a message to a declared actor (the outbox relay's and the janitor's way in).

    ``options`` are Dramatiq's message options (``max_retries=0``: one attempt).
    """
    broker = dramatiq.get_broker()
    declared = broker.get_actor(actor_name)
    declared.send_with_options(args=tuple(args), kwargs=kwargs, **options)


def actor_names() -> list[str]:
    return sorted(_actors)


class _HostLoopThread(EventLoopThread):
    """Dramatiq's event-loop handle pointed at a loop that already runs elsewhere."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        threading.Thread.__init__(self, daemon=True)
        self.logger = log
        self.interrupt_check_ival = 0.1
        self.loop = loop

    def start(self, *, timeout: float | None = None) -> None:
        return None

    def stop(self) -> None:
        return None


class HostLoopAsyncIO(Middleware):
    """Runs async actors on an existing event loop instead of a thread of their own."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        set_event_loop_thread(_HostLoopThread(self.loop))

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        set_event_loop_thread(None)
