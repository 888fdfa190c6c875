"""Subscription: an agency's billing at a glance, for its owners and admins.

Every subscriber of one agency on a process shares one ``_AgencyFeed``: one bus
subscription to the agency's payment and invoice channels, and one computation
per push. A burst of events is coalesced: the feed computes at most once per
``PUSH_INTERVAL_SECONDS`` and sends the result only when it changed. The feed
runs while the agency has a subscriber here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator
from contextlib import suppress

from graphql import GraphQLError

from settle.core.errors import PermissionDeniedError
from settle.core.tenancy import MANAGERS
from settle.resolvers.common import require_actor
from settle.schema.context import Info
from settle.schema.dashboard import Dashboard
from settle.services import dashboard as dashboard_service
from settle.subscriptions import channels
from settle.subscriptions.bus import GAP, get_bus

log = logging.getLogger(__name__)

PUSH_INTERVAL_SECONDS = 1.0


class _AgencyFeed:
    def __init__(self, agency_id: uuid.UUID) -> None:
        self.agency_id = agency_id
        self.subscribers: set[asyncio.Queue[Dashboard]] = set()
        self.value: Dashboard | None = None
        self.ready = asyncio.Event()  # set once the first value is computed
        self._dirty = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"settle.dashboard.{agency_id}")

    async def _run(self) -> None:
        agency = str(self.agency_id)
        bus_channels = [channels.payments(self.agency_id), channels.invoices(self.agency_id)]
        async with get_bus().subscribe(bus_channels, gaps=True) as messages:

            async def listen() -> None:
                async for message in messages:
                    # After a gap (the bus lost Redis) a change may have gone unheard.
                    if message is GAP or message.get("agencyId") == agency:
                        self._dirty.set()

            listener = asyncio.create_task(listen())
            self._dirty.set()  # listening now: the first value misses nothing after it
            try:
                while True:
                    await self._dirty.wait()
                    self._dirty.clear()
                    await self._push()
                    # At most one computation and push per interval: a burst in between
                    # leaves the flag set, and the next round reads all of it at once.
                    await asyncio.sleep(PUSH_INTERVAL_SECONDS)
            finally:
                listener.cancel()
                with suppress(asyncio.CancelledError):
                    await listener

    async def _push(self) -> None:
        try:
            value = Dashboard.from_value(await dashboard_service.agency_dashboard(self.agency_id))
        except Exception:
            log.exception("dashboard.compute_failed", extra={"agency_id": str(self.agency_id)})
            self._dirty.set()  # try again next round
            return
        if value == self.value:
            return
        self.value = value
        self.ready.set()
        for queue in self.subscribers:
            _offer(queue, value)

    async def first_value(self) -> None:
        """Wait for the first value; raise what stopped the feed (the bus is away) if it died."""
        ready = asyncio.ensure_future(self.ready.wait())
        try:
            await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self.ready.is_set():
            if _feeds.get(self.agency_id) is self:
                del _feeds[self.agency_id]
            self._task.result()  # raises what the feed died of
            raise RuntimeError("dashboard feed ended")

    async def close(self) -> None:
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task


def _offer(queue: asyncio.Queue[Dashboard], value: Dashboard) -> None:
    """Only the latest value matters: a subscriber behind gets it in place of older ones."""
    with suppress(asyncio.QueueEmpty):
        queue.get_nowait()
    queue.put_nowait(value)


_feeds: dict[uuid.UUID, _AgencyFeed] = {}


async def dashboard(info: Info) -> AsyncGenerator[Dashboard, None]:
    """The agency's dashboard now, then each time it changes, at most once a second."""
    actor = require_actor(info)
    if actor.role not in MANAGERS:
        error = PermissionDeniedError()
        raise GraphQLError(str(error), extensions={"code": error.code})
    feed = _feeds.get(actor.agency_id)
    if feed is None:
        feed = _feeds[actor.agency_id] = _AgencyFeed(actor.agency_id)
    queue: asyncio.Queue[Dashboard] = asyncio.Queue(maxsize=1)
    feed.subscribers.add(queue)
    try:
        await feed.first_value()
        assert feed.value is not None
        last = feed.value
        yield last
        while True:
            value = await queue.get()
            if value != last:
                last = value
                yield value
    finally:
        feed.subscribers.discard(queue)
        if not feed.subscribers and _feeds.get(actor.agency_id) is feed:
            del _feeds[actor.agency_id]
            await feed.close()
