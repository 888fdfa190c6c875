"""Resumable subscriptions: what a client missed from its cursor, then live, nothing twice.

Every event of an agency has a place in the agency's stream, and reaches its
subscribers with that place as ``cursor``. A subscription given ``after`` (the
last cursor its client saw) first listens live, holding what arrives; then it
replays the stream's entries after ``after`` that its arguments and its
caller's audience select, and only then hands over to the live events, dropping
those the replay already sent. An event published during the replay is in the
stream and live: it is sent once, in its place.

The same procedure closes a gap the subscription did not see coming: when the
bus loses Redis and subscribes again, it hears ``GAP`` and re-reads the stream
from the last entry it handled, so a Redis restart (with persistence) loses
nothing either. Without ``after`` the subscription starts from the stream's tail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from redis.exceptions import RedisError

from settle.subscriptions.bus import (
    CURSOR,
    GAP,
    CursorExpired,
    Message,
    cursor_key,
    get_bus,
)

log = logging.getLogger(__name__)

After = Annotated[
    str | None,
    strawberry.argument(
        description="The cursor of the last event you received: the events after it come "
        "first, in order, then live ones (CURSOR_EXPIRED when they are no longer kept)."
    ),
]

# Entries read from the stream per round trip while replaying.
REPLAY_PAGE = 200
# After a gap, how long the stream is asked again (backing off) before the subscription
# ends with SERVICE_UNAVAILABLE.
GAP_RETRY_SECONDS = 30.0
GAP_RETRY_FIRST_DELAY = 0.1
GAP_RETRY_MAX_DELAY = 2.0


class InvalidCursorError(GraphQLError):
    """``after`` is not a cursor Settle gave out."""

    def __init__(self) -> None:
        super().__init__(
            "after is not a cursor of this subscription's events",
            extensions={"code": "INVALID_CURSOR", "field": "after"},
        )


class CursorExpiredError(GraphQLError):
    """The events after ``after`` are no longer all kept: the client must refetch."""

    def __init__(self) -> None:
        super().__init__(
            "The events after this cursor are no longer kept (older than the stream's "
            "retention, or lost when Redis restarted); refetch what you show, then "
            "subscribe again without after.",
            extensions={"code": "CURSOR_EXPIRED", "field": "after"},
        )


class StreamUnavailableError(GraphQLError):
    """Redis did not answer while the subscription read its stream."""

    def __init__(self) -> None:
        super().__init__(
            "Live events are unavailable right now; subscribe again shortly with your last cursor.",
            extensions={"code": "SERVICE_UNAVAILABLE"},
        )


def parse_cursor(after: str | None) -> str | None:
    """``after`` checked; InvalidCursorError when it cannot be one of ours."""
    if after is None:
        return None
    if not isinstance(after, str) or CURSOR.match(after) is None:
        raise InvalidCursorError()
    return after


async def resumable(
    agency_id: Any,
    channels: Sequence[str],
    after: str | None,
    keep: Callable[[Message], bool],
) -> AsyncIterator[Message]:
    """The messages of ``channels`` that ``keep`` accepts: from ``after`` if given, then live.

    Raises CursorExpiredError when the stream no longer holds ``after`` (or, later,
    the last entry handled when the bus had to catch up after losing Redis).
    """
    position = parse_cursor(after)
    try:
        async for message in _resumable(str(agency_id), channels, position, keep):
            yield message
    except (TimeoutError, RedisError, OSError) as exc:
        log.warning("stream.unavailable", extra={"error": repr(exc)}, exc_info=True)
        raise StreamUnavailableError() from None


async def _resumable(
    agency: str, channels: Sequence[str], position: str | None, keep: Callable[[Message], bool]
) -> AsyncIterator[Message]:
    wanted = frozenset(channels)
    bus = get_bus()
    async with bus.subscribe(channels, gaps=True) as live:
        # Heard live from here on; the stream is read only after, so nothing falls between.
        await bus.listening(channels)
        if position is None:
            # Everything heard live from now on is new to this subscriber, even what is
            # older than the tail read here (published between listening and reading):
            # the tail is only where a catch-up after a gap would start.
            position = await bus.stream_tail(agency)
            last = (0, 0)
        else:
            async for cursor, message in _replay(agency, wanted, position, keep):
                position = cursor
                if message is not None:
                    yield message
            last = cursor_key(position)
        async for message in live:
            if message is GAP:
                # Redis may still be coming back (or going again): read until it answers,
                # from wherever the last attempt got to, for a while.
                delay, deadline = GAP_RETRY_FIRST_DELAY, time.monotonic() + GAP_RETRY_SECONDS
                while True:
                    try:
                        async for cursor, replayed in _replay(agency, wanted, position, keep):
                            position = cursor
                            if replayed is not None:
                                yield replayed
                        break
                    except (RedisError, OSError):
                        if time.monotonic() >= deadline:
                            raise
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, GAP_RETRY_MAX_DELAY)
                last = cursor_key(position)
                continue
            cursor = message.get("cursor")
            if not isinstance(cursor, str):
                continue  # not from a stream: nothing to place it by
            place = cursor_key(cursor)
            if place <= last:
                continue  # replayed already
            last = place
            if place > cursor_key(position):
                position = cursor
            if keep(message):
                yield message


async def _replay(
    agency: str, wanted: frozenset[str], after: str, keep: Callable[[Message], bool]
) -> AsyncIterator[tuple[str, Message | None]]:
    """The entries after ``after``, in order: (cursor, message) for those of ``wanted``
    channels that ``keep`` accepts, and (cursor, None) for the last entry of each page,
    so the caller's position moves past what it skipped."""
    bus = get_bus()
    while True:
        try:
            entries = await bus.read_stream(agency, after, REPLAY_PAGE)
        except CursorExpired:
            raise CursorExpiredError() from None
        for cursor, channel, message in entries:
            after = cursor
            if channel in wanted and keep(message):
                yield cursor, message
        if entries:
            yield after, None
        if len(entries) < REPLAY_PAGE:
            return
