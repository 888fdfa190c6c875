"""Subscription: payment status changes of the subscriber's agency, as they happen."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import strawberry

from settle.resolvers.common import parse_id, require_actor
from settle.schema.context import Info
from settle.schema.payment import PaymentStatusChanged
from settle.subscriptions import channels
from settle.subscriptions.bus import once_per_event
from settle.subscriptions.stream import After, resumable


async def payment_status_changed(
    info: Info,
    project_id: strawberry.ID | None = None,
    invoice_id: strawberry.ID | None = None,
    payment_id: strawberry.ID | None = None,
    after: After = None,
) -> AsyncGenerator[PaymentStatusChanged, None]:
    """Every change to a payment the subscriber may see; the arguments given narrow it (AND).

    With ``after`` (an event's ``cursor``), the changes since that event come first.
    """
    actor = require_actor(info)
    wanted: dict[str, str] = {}
    if project_id is not None:
        wanted["projectId"] = str(parse_id(project_id, "projectId"))
    if payment_id is not None:
        wanted["paymentId"] = str(parse_id(payment_id, "paymentId"))
    if actor.is_client_user:
        # A client user sees only their own client's payments, as in every query.
        wanted["clientId"] = str(actor.client_id)
    invoice = None if invoice_id is None else str(parse_id(invoice_id, "invoiceId"))
    agency = str(actor.agency_id)
    async for message in resumable(
        agency,
        [channels.payments(actor.agency_id)],
        after,
        lambda message: _matches(message, agency, wanted, invoice),
    ):
        # Shaped once per event for every subscriber of this process that may see it.
        yield once_per_event(message, "payment", PaymentStatusChanged.from_message)


def _matches(
    message: dict[str, Any], agency_id: str, wanted: dict[str, str], invoice_id: str | None
) -> bool:
    if message.get("agencyId") != agency_id:
        return False
    if any(message.get(key) != value for key, value in wanted.items()):
        return False
    return invoice_id is None or invoice_id in (message.get("invoiceIds") or [])
