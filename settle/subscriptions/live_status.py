"""Subscriptions: live status a dashboard can use directly.

Each checks, when it starts, that the caller may see what it names, with the
same rules (and the same NOT_FOUND) as the queries: a client user only their
own client. From then on the agency's channel carries only that agency's
events, and each event is matched against the subscription's arguments.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import strawberry
from graphql import GraphQLError

from settle.core.errors import NotFoundError
from settle.models.project import Project
from settle.resolvers.common import parse_optional_id, require_actor
from settle.schema.context import Info
from settle.schema.live_status import InvoiceStatusChanged, MilestoneStatusChanged
from settle.schema.payment import ProjectPaymentStatus
from settle.services import client as client_service
from settle.services import invoice as invoice_service
from settle.services import milestone as milestone_service
from settle.services import payment as payment_service
from settle.services import project as project_service
from settle.subscriptions import channels
from settle.subscriptions.bus import GAP, Message, get_bus
from settle.subscriptions.stream import After, parse_cursor, resumable


class SubscriptionNotFound(GraphQLError):
    """The subscription names something the caller may not see: the query's NOT_FOUND."""

    def __init__(self, error: NotFoundError) -> None:
        super().__init__(str(error), extensions={"code": error.code})


async def _visible(entity: str, row_id: Any, fetch: Callable[[uuid.UUID], Awaitable[Any]]) -> Any:
    """The row a subscription names; malformed, unknown and foreign ids are all not found."""
    parsed = parse_optional_id(row_id)
    try:
        if parsed is None:
            raise NotFoundError(entity, row_id)
        return await fetch(parsed)
    except NotFoundError as exc:
        raise SubscriptionNotFound(exc) from None


async def milestone_status_changed(
    info: Info,
    project_id: strawberry.ID,
    milestone_id: strawberry.ID | None = None,
    after: After = None,
) -> AsyncGenerator[MilestoneStatusChanged, None]:
    """Status changes of a project's milestones (created ones too), or of one of them.

    With ``after`` (an event's ``cursor``), the changes since that event come first.
    """
    actor = require_actor(info)
    parse_cursor(after)
    project = await _visible(
        "Project", project_id, lambda pid: project_service.get_project(actor, pid)
    )
    only: str | None = None
    if milestone_id is not None:
        milestone = await _visible(
            "Milestone", milestone_id, lambda mid: milestone_service.get_milestone(actor, mid)
        )
        if milestone.project_id != project.id:
            raise SubscriptionNotFound(NotFoundError("Milestone", milestone.id))
        only = str(milestone.id)
    agency, wanted = str(actor.agency_id), str(project.id)

    def keep(message: Message) -> bool:
        return (
            message.get("agencyId") == agency
            and message.get("projectId") == wanted
            and bool(message.get("statusChanged"))
            and (only is None or message.get("milestoneId") == only)
        )

    async for message in resumable(agency, [channels.milestones(agency)], after, keep):
        yield MilestoneStatusChanged.from_message(message)


async def invoice_status_changed(
    info: Info,
    client_id: strawberry.ID,
    invoice_id: strawberry.ID | None = None,
    after: After = None,
) -> AsyncGenerator[InvoiceStatusChanged, None]:
    """Status changes of a client's invoices (created ones too), or of one of them.

    With ``after`` (an event's ``cursor``), the changes since that event come first.
    """
    actor = require_actor(info)
    parse_cursor(after)
    client = await _visible("Client", client_id, lambda cid: client_service.get_client(actor, cid))
    only: str | None = None
    if invoice_id is not None:
        invoice = await _visible(
            "Invoice", invoice_id, lambda iid: invoice_service.get_invoice(actor, iid)
        )
        if invoice.client_id != client.id:
            raise SubscriptionNotFound(NotFoundError("Invoice", invoice.id))
        only = str(invoice.id)
    agency, wanted = str(actor.agency_id), str(client.id)

    def keep(message: Message) -> bool:
        return (
            message.get("agencyId") == agency
            and message.get("clientId") == wanted
            # A draft is the agency's own working, as in the invoices query.
            and not (actor.is_client_user and message.get("internal"))
            and (only is None or message.get("invoiceId") == only)
        )

    async for message in resumable(agency, [channels.invoices(agency)], after, keep):
        yield InvoiceStatusChanged.from_message(message)


class _Shared:
    """One computation per key for every subscriber of the process, the latest few kept.

    A milestone event reaches every subscriber of its project on this process; the
    first to ask computes the project's payment status, the others await the same.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._results: OrderedDict[tuple[str, str], asyncio.Future[ProjectPaymentStatus]] = (
            OrderedDict()
        )

    async def get(
        self, key: tuple[str, str], compute: Callable[[], Awaitable[ProjectPaymentStatus]]
    ) -> ProjectPaymentStatus:
        result = self._results.get(key)
        if result is None:
            result = asyncio.ensure_future(compute())
            self._results[key] = result
            while len(self._results) > self._size:
                self._results.popitem(last=False)
        try:
            # One subscriber leaving must not cancel the computation the others await.
            return await asyncio.shield(result)
        except Exception:
            if self._results.get(key) is result:
                del self._results[key]  # the next event tries again
            raise


_project_statuses = _Shared()


async def _payment_status(project: Project) -> ProjectPaymentStatus:
    return ProjectPaymentStatus.from_value(await payment_service.payment_status_of(project))


async def project_payment_status_changed(
    info: Info, project_id: strawberry.ID
) -> AsyncGenerator[ProjectPaymentStatus, None]:
    """The project's payment status now, then again each time it changes."""
    actor = require_actor(info)
    project = await _visible(
        "Project", project_id, lambda pid: project_service.get_project(actor, pid)
    )
    agency, wanted = str(actor.agency_id), str(project.id)
    # Listen before the first read: a change committed in between is heard, not lost.
    async with get_bus().subscribe([channels.milestones(actor.agency_id)], gaps=True) as messages:
        last = await _payment_status(project)
        yield last
        async for message in messages:
            if message is GAP:
                # The bus lost Redis for a while: a change may have gone unheard. The
                # project's subscribers here hear the gap together and share one reading.
                key = (f"gap.{int(time.monotonic())}", wanted)
            elif message.get("agencyId") != agency or message.get("projectId") != wanted:
                continue
            else:
                key = (str(message.get("eventId")), wanted)
            current = await _project_statuses.get(key, lambda: _payment_status(project))
            # Pushed only when it differs from what this subscriber was last sent.
            if current != last:
                last = current
                yield current
