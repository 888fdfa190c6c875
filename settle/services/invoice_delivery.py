"""Invoice emails: send one requested delivery with the invoice's PDF, and record how it went.

The invoice service writes an ``InvoiceDelivery`` when an invoice is sent or
resent; the ``invoice.send_email`` actor calls ``deliver`` after commit. The
SMTP conversation happens outside any transaction, so a slow mail server holds
no database lock, and its outcome is recorded in a transaction of its own.

Only a delivery the server accepted is ``sent`` and stamps the invoice's
``last_sent_at``; a failure is recorded on the delivery (attempts, last error)
and never marks the invoice delivered.

A run claims its attempt before talking to the server: it counts the attempt
and leaves the delivery ``pending`` until it records the outcome. A second run
of the same delivery meanwhile (a message redelivered from a worker presumed
dead, or one the janitor sent again) finds the claim younger than
``SEND_LEASE`` and stands back, so one delivery is never sent by two runs at
once. A claim older than the lease belongs to a run that died.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

from settle.core import clock
from settle.core.db import lock_rows
from settle.core.money import Money
from settle.core.outbox import transaction
from settle.core.settings import get_settings
from settle.models.agency import Agency
from settle.models.invoice import DeliveryStatus, Invoice, InvoiceDelivery, InvoiceStatus
from settle.notifications.email import (
    Attachment,
    DeliveryResult,
    EmailDeliveryError,
    build_message,
)
from settle.notifications.email import deliver as send_message
from settle.notifications.templates import render_email
from settle.services import activity, invoice_files, payment_link, settlement
from settle.services.invoice import label

log = logging.getLogger(__name__)

# Attempts of one delivery before a temporary failure counts as final. The actor
# retries one time fewer, so its last try is the one that records the failure.
MAX_ATTEMPTS = 11

ERROR_MAX_LENGTH = 2_000

# The whole SMTP conversation of one attempt, beyond aiosmtplib's per-command
# timeout, so an attempt's claim has a known end.
SEND_TIMEOUT_SECONDS = 300.0
# How long a claimed attempt may be running before the claim counts as abandoned
# (its run died): the SMTP conversation plus room for recording the outcome.
SEND_LEASE = timedelta(seconds=SEND_TIMEOUT_SECONDS + 60)

# Shown when the attempt failed for a reason that is not the mail server's answer.
SEND_FAILED = "The email could not be sent; it will be retried"

# Shown on the delivery instead of the exception, whose text (paths, storage
# errors) is for the log rather than for the agency.
DOCUMENT_FAILED = "The invoice PDF could not be prepared for the email"


class DeliveryInProgressError(Exception):
    """Another run is sending this delivery right now; the actor retries later."""


async def deliver(delivery_id: uuid.UUID) -> None:
    """Email a requested delivery with the invoice's PDF; a sent delivery is never sent again.

    A temporary failure (a busy or unreachable server) is recorded and raised,
    so the actor retries with backoff, and so is DeliveryInProgressError while
    another run's attempt is under way. A permanent one (a refused message, or
    the last attempt) is recorded on the delivery and the invoice's timeline and
    returns: retrying would not change the answer.
    """
    delivery = await InvoiceDelivery.get_or_none(id=delivery_id)
    if delivery is None or delivery.status == DeliveryStatus.SENT:
        return
    invoice = await Invoice.get(id=delivery.invoice_id)
    if invoice.status == InvoiceStatus.VOID:
        # Voided between the request and this run: the client must not get it.
        async with transaction():
            await _record_not_sent(delivery.id, "Not sent: the invoice was voided")
        return
    async with transaction():
        claimed = await _claim(delivery.id)
    if not claimed:
        return
    try:
        filename, pdf = await invoice_files.document(invoice)
    except Exception as error:
        # The actor raises this for a retry, and Dramatiq logs its traceback.
        log.warning(
            "invoice.email_document_failed",
            extra={
                "delivery_id": str(delivery.id),
                "invoice_id": str(invoice.id),
                "error": f"{type(error).__name__}: {error}",
            },
        )
        async with transaction():
            await _record_failure(delivery.id, DOCUMENT_FAILED, permanent=False)
        raise
    try:
        message = await _compose(delivery, invoice, Attachment(filename, "application/pdf", pdf))
        result = await _send(message)
    except EmailDeliveryError as error:
        async with transaction():
            final = await _record_failure(delivery.id, str(error), permanent=not error.temporary)
        if not final:
            raise
        log.error(
            "invoice.email_failed",
            extra={
                "delivery_id": str(delivery.id),
                "invoice_id": str(invoice.id),
                "smtp_code": error.smtp_code,
            },
        )
        return
    except Exception:
        # Not the server's answer (a template, the database): close the attempt
        # so the retry need not wait out the claim.
        async with transaction():
            await _record_failure(delivery.id, SEND_FAILED, permanent=False)
        raise
    async with transaction():
        await _record_sent(delivery.id, result.refused)


async def _send(message: EmailMessage) -> DeliveryResult:
    try:
        return await asyncio.wait_for(
            send_message(message, settings=get_settings()), SEND_TIMEOUT_SECONDS
        )
    except TimeoutError:
        # The server may have taken it before going quiet; a retry risks a second copy,
        # as with any timeout, rather than losing the email.
        raise EmailDeliveryError(
            f"The mail server did not finish within {SEND_TIMEOUT_SECONDS:.0f} seconds",
            temporary=True,
        ) from None


async def _claim(delivery_id: uuid.UUID) -> bool:
    """Count an attempt and mark it running; False once sent, DeliveryInProgressError if taken.

    ``pending`` with attempts counted means an attempt was claimed and has not
    recorded its outcome: running, or abandoned once its claim is older than
    ``SEND_LEASE``.
    """
    delivery = await _lock_delivery(delivery_id)
    if delivery is None:
        return False
    now = clock.now()
    claimed_at = delivery.updated_at
    running = delivery.status == DeliveryStatus.PENDING and delivery.attempts > 0
    if running and claimed_at is not None and claimed_at > now - SEND_LEASE:
        raise DeliveryInProgressError(f"delivery {delivery_id} is being sent by another run")
    # A queryset update, so ``updated_at`` is Settle's clock (the lease's) and not auto_now's.
    await InvoiceDelivery.filter(id=delivery_id).update(
        status=DeliveryStatus.PENDING, attempts=delivery.attempts + 1, updated_at=now
    )
    return True


async def _compose(
    delivery: InvoiceDelivery, invoice: Invoice, document: Attachment
) -> EmailMessage:
    agency = await Agency.get(id=invoice.agency_id)
    total = Money(invoice.total_minor, invoice.currency)
    paid = Money(invoice.amount_paid_minor, invoice.currency)
    rendered = render_email(
        "invoice",
        agency_name=agency.name,
        agency_email=agency.email,
        number=invoice.number,
        issue_date=invoice.issue_date,
        due_date=invoice.due_date,
        total=total,
        amount_paid=paid,
        amount_due=Money(settlement.invoice_due(invoice), invoice.currency),
        message=delivery.message,
        filename=document.filename,
        payment_url=payment_link.payment_url(invoice),
    )
    message = build_message(
        settings=get_settings(),
        to=delivery.recipients,
        cc=delivery.cc,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        attachments=[document],
    )
    if agency.email:
        # The mail leaves from the platform's address; the client's questions
        # belong with the agency.
        message["Reply-To"] = agency.email
    return message


async def _lock_delivery(delivery_id: uuid.UUID) -> InvoiceDelivery | None:
    """The delivery under its row lock, or None once it is sent (by a concurrent run)."""
    delivery = await lock_rows(InvoiceDelivery.filter(id=delivery_id)).first()
    if delivery is None or delivery.status == DeliveryStatus.SENT:
        return None
    return delivery


async def _record_sent(delivery_id: uuid.UUID, refused: Mapping[str, str]) -> None:
    delivery = await _lock_delivery(delivery_id)
    if delivery is None:
        return
    now = clock.now()
    data: dict[str, Any] = {
        "status": DeliveryStatus.SENT,
        "sent_at": now,
        # The server took the message for the other recipients: it is sent, and a
        # retry would duplicate it for them. Who was refused stays visible.
        "last_error": _refusals(refused),
    }
    delivery.update_from_dict(data)
    await delivery.save(update_fields=[*data.keys(), "updated_at"])
    invoice = await Invoice.get(id=delivery.invoice_id)
    invoice.last_sent_at = now
    await invoice.save(update_fields=["last_sent_at", "updated_at"])
    await _record_event(
        invoice,
        "emailed",
        f"{label(invoice)} emailed to {', '.join(delivery.recipients)}",
        {"to": delivery.recipients, "cc": delivery.cc or None, "refused": dict(refused) or None},
    )


def _refusals(refused: Mapping[str, str]) -> str | None:
    if not refused:
        return None
    replies = "; ".join(f"{address}: {reply}" for address, reply in refused.items())
    return f"Refused by the mail server: {replies}"[:ERROR_MAX_LENGTH]


async def _record_failure(delivery_id: uuid.UUID, error: str, *, permanent: bool) -> bool:
    """Close a failed attempt; True when no retry follows (permanent, or the last attempt)."""
    delivery = await _lock_delivery(delivery_id)
    if delivery is None:
        return True
    data: dict[str, Any] = {
        "status": DeliveryStatus.FAILED,
        "last_error": error[:ERROR_MAX_LENGTH],
    }
    delivery.update_from_dict(data)
    await delivery.save(update_fields=[*data.keys(), "updated_at"])
    final = permanent or delivery.attempts >= MAX_ATTEMPTS
    if final:
        invoice = await Invoice.get(id=delivery.invoice_id)
        await _record_event(
            invoice,
            "email_failed",
            f"{label(invoice)} could not be emailed to {', '.join(delivery.recipients)}: {error}",
            {"to": delivery.recipients, "cc": delivery.cc or None, "error": delivery.last_error},
        )
    return final


async def _record_not_sent(delivery_id: uuid.UUID, reason: str) -> None:
    """Close a delivery that must not go out; no attempt was made, so none is counted."""
    delivery = await _lock_delivery(delivery_id)
    if delivery is None:
        return
    data: dict[str, Any] = {"status": DeliveryStatus.FAILED, "last_error": reason}
    delivery.update_from_dict(data)
    await delivery.save(update_fields=[*data.keys(), "updated_at"])


async def _record_event(invoice: Invoice, verb: str, summary: str, values: dict[str, Any]) -> None:
    await activity.record(
        None,
        agency_id=invoice.agency_id,
        client_id=invoice.client_id,
        entity_type="invoice",
        entity_id=invoice.id,
        verb=verb,
        summary=summary,
        changes=activity.snapshot(values),
    )
