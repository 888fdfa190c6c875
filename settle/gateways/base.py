"""The one protocol every payment gateway implements, and the normalized shapes it speaks.

A gateway turns Settle's request into what the frontend needs to collect the
money (``Checkout``), turns a verified webhook into one ``GatewayEvent``,
refunds, and answers what it knows of a payment (``RemoteStatus``) for
reconciliation. Services never see a provider's own payloads.

Every call that creates something at the gateway carries an idempotency key
derived from Settle's own ids, never a random one, so a retried job cannot
charge or refund twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from settle.core import json_input
from settle.models.payment import PaymentProvider


class GatewayError(Exception):
    """The gateway could not be reached or refused the call; ``temporary`` says retry."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


class InvalidSignatureError(Exception):
    """A webhook whose signature does not verify (or is missing, stale, or from the future)."""

    code = "INVALID_SIGNATURE"


class InvalidPayloadError(InvalidSignatureError):
    """A webhook signed as it should be whose body is not an event Settle can take.

    Refused like a bad signature (400, nothing stored), with its own code: the
    sender's secret is right, and what it sent is not.
    """

    code = "INVALID_PAYLOAD"


def parse_signed_body(body: bytes) -> Any:
    """The JSON of a webhook body whose signature was verified; InvalidPayloadError if it is
    not UTF-8 JSON nested at most ``MAX_DEPTH`` deep with text a database can store."""
    try:
        data = json_input.loads(body)
    except json_input.InvalidJSONError as exc:
        raise InvalidPayloadError(f"The signed body is not an event: {exc.message}") from None
    where = json_input.invalid_text(data)
    if where is not None:
        raise InvalidPayloadError(
            f"The signed body holds a NUL or a lone surrogate at {where or 'its top'}"
        )
    return data


class EventKind(StrEnum):
    PAYMENT_PENDING = "payment_pending"
    PAYMENT_SUCCEEDED = "payment_succeeded"
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_CANCELLED = "payment_cancelled"
    REFUND_SUCCEEDED = "refund_succeeded"
    REFUND_FAILED = "refund_failed"
    # Verified, but nothing Settle acts on (stored, then marked ignored).
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """What Settle asks a gateway to collect. ``payment_id`` is Settle's (the idempotency base)."""

    payment_id: str
    amount_minor: int
    currency: str
    description: str
    customer_email: str | None = None
    customer_name: str | None = None
    # Where a hosted page sends the payer afterwards.
    return_url: str | None = None
    # A hosted page (``Checkout.checkout_url``) rather than what a frontend SDK confirms.
    hosted: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Checkout:
    """What the frontend needs to collect a payment, and the gateway's id for it."""

    provider_order_id: str
    # A hosted page to send the payer to (Stripe Checkout, a Razorpay link, the sandbox).
    checkout_url: str | None = None
    # Stripe Elements' client secret of the PaymentIntent.
    client_secret: str | None = None
    # Public key the frontend SDK needs (Razorpay Checkout's key id, Stripe's publishable key).
    public_key: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    """One verified webhook, normalized.

    ``event_id`` identifies the event, the same for a redelivery, and is what a
    delivery is deduplicated on: the gateway's own id where the signature covers
    it, else one derived from the signed body (Razorpay); ``gateway_event_id``
    then keeps the gateway's unsigned id for reference. The payment is found by
    ``provider_order_id`` (what ``create_payment`` returned) or
    ``provider_payment_id``, and Settle's ``payment_id`` when the gateway echoes
    it back in metadata.
    """

    provider: PaymentProvider
    event_id: str
    event_type: str
    kind: EventKind
    payload: dict[str, Any]
    provider_order_id: str | None = None
    provider_payment_id: str | None = None
    payment_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    provider_refund_id: str | None = None
    # The refund's own amount (refund events).
    refund_amount_minor: int | None = None
    failure_reason: str | None = None
    gateway_event_id: str | None = None


class RemoteState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    """What the gateway says of a payment now (reconciliation)."""

    state: RemoteState
    provider_payment_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    amount_refunded_minor: int = 0
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class RefundResult:
    provider_refund_id: str
    # True when the gateway settled it at once (no webhook will follow to wait for).
    settled: bool = False


class PaymentGateway(Protocol):
    provider: PaymentProvider
    # The smallest amount the gateway takes, in minor units per currency.
    minimums: Mapping[str, int]

    async def create_payment(self, request: PaymentRequest) -> Checkout:
        """Create the gateway's order / intent / session; same ``payment_id``, same result."""
        ...

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> GatewayEvent:
        """Check the signature over the raw body and parse it; InvalidSignatureError if not."""
        ...

    async def refund(
        self, *, provider_payment_id: str, amount_minor: int, refund_id: str, reason: str
    ) -> RefundResult:
        """Refund part or all of a captured payment; ``refund_id`` (Settle's) is the key."""
        ...

    async def fetch_status(
        self, *, provider_order_id: str, provider_payment_id: str | None
    ) -> RemoteStatus:
        """What the gateway knows of a payment now."""
        ...

    async def close_payment(self, *, provider_order_id: str) -> bool:
        """Close a checkout so it can take no money; False when the gateway has no way to.

        Closing one already closed is not an error. GatewayError(temporary=False)
        when it can no longer be closed because it was paid meanwhile.
        """
        ...
