"""Report resolvers (owners and admins): payment analytics, receivables aging, webhook events
and deliverable access."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import strawberry

from settle.core.tenancy import MANAGERS
from settle.resolvers.common import parse_id, public_errors, require_actor
from settle.schema.common import Connection
from settle.schema.context import Info
from settle.schema.payment import WebhookEvent, WebhookEventFilter
from settle.schema.report import (
    DeliverableAccess,
    PaymentAnalytics,
    ReceivablesAging,
    ReportGroupBy,
)
from settle.services import report as report_service


async def payment_analytics(
    info: Info,
    from_: Annotated[date, strawberry.argument(name="from")],
    to: date,
    currency: str,
    group_by: ReportGroupBy = report_service.GroupBy.MONTH,  # type: ignore[valid-type]
) -> PaymentAnalytics:
    """Payments in one currency per day, week or month of the agency's calendar."""
    actor = require_actor(info)
    with public_errors():
        value = await report_service.payment_analytics(
            actor, start=from_, end=to, currency=currency, group_by=group_by
        )
    return PaymentAnalytics.from_value(value)


async def receivables_aging(
    info: Info, currency: str, as_of: date | None = None
) -> ReceivablesAging:
    actor = require_actor(info)
    with public_errors():
        value = await report_service.receivables_aging(actor, currency=currency, as_of=as_of)
    return ReceivablesAging.from_value(value)


async def webhook_events(
    info: Info,
    first: int = 20,
    after: str | None = None,
    filter: WebhookEventFilter | None = None,
) -> Connection[WebhookEvent]:
    actor = require_actor(info)
    flt = filter or WebhookEventFilter()
    with public_errors():
        page = await report_service.list_webhook_events(
            actor,
            report_service.WebhookEventFilter(
                provider=flt.provider, status=flt.status, since=flt.from_, until=flt.to
            ),
            first=first,
            after=after,
        )
    return Connection.from_page(page, WebhookEvent.from_model)


async def deliverable_access(info: Info, project_id: strawberry.ID) -> list[DeliverableAccess]:
    actor = require_actor(info)
    with public_errors():
        actor.require(*MANAGERS)
        rows = await report_service.deliverable_access(actor, parse_id(project_id, "projectId"))
    return [DeliverableAccess.from_value(row) for row in rows]


@strawberry.type
class ReportQuery:
    payment_analytics: PaymentAnalytics = strawberry.field(
        resolver=payment_analytics,
        description="Collected, refunded, net, payments, success rate and days to pay per "
        "period of the agency's calendar in one currency, with totals by provider, method "
        "and kind (owners and admins).",
    )
    receivables_aging: ReceivablesAging = strawberry.field(
        resolver=receivables_aging,
        description="What each client owes in one currency by days past due on asOf (today "
        "in the agency's zone by default): current, 1-30, 31-60, 61-90, over 90 (owners and "
        "admins).",
    )
    webhook_events: Connection[WebhookEvent] = strawberry.field(
        resolver=webhook_events,
        description="The agency's gateway webhook events, newest first (owners and admins).",
    )
    deliverable_access: list[DeliverableAccess] = strawberry.field(
        resolver=deliverable_access,
        description="For each uploaded file of a project, whether its client can open it now, "
        "why not, and until when (owners and admins; NOT_FOUND for a project you cannot see).",
    )
