"""Stripe, via the official SDK: PaymentIntents for Elements, Checkout Sessions for a hosted page.

Each gateway holds its own ``stripe.StripeClient`` (never the SDK's module-level
key and base), so several configurations can live in one process. The SDK
blocks, so every call runs in a thread.

Ids in the normalized events:

- ``provider_order_id`` is what ``create_payment`` (a PaymentIntent, ``pi_``) or
  ``create_checkout_session`` (a Checkout Session, ``cs_``) returned, as far as
  the event names it; refund events name the PaymentIntent.
- ``provider_payment_id`` is always the PaymentIntent id. A PaymentIntent keeps
  its id across declined attempts, while each attempt has its own charge, and
  session and refund events name the intent but not always the charge.
- ``payment_id`` is Settle's, from the ``settle_payment_id`` metadata that both
  flows put on the PaymentIntent (and on the session), so an intent event of a
  Checkout payment still finds its payment.
- For refund events ``refund_amount_minor`` is that refund's amount, and
  ``amount_minor`` the total refunded on the payment so far when the event says
  (``charge.refunded``), else ``None``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import stripe

from settle.core import clock
from settle.core.settings import Settings
from settle.gateways import GatewayNotConfiguredError
from settle.gateways.base import (
    Checkout,
    EventKind,
    GatewayError,
    GatewayEvent,
    InvalidPayloadError,
    InvalidSignatureError,
    PaymentRequest,
    RefundResult,
    RemoteState,
    RemoteStatus,
    parse_signed_body,
)
from settle.models.payment import PaymentProvider

SIGNATURE_HEADER = "Stripe-Signature"
# Stripe's own default tolerance. Stripe's SDK only rejects old timestamps; a
# timestamp from the future is rejected as well, since Stripe never sends one.
SIGNATURE_TOLERANCE_SECONDS = 300

# The smallest charge, in minor units. Stripe's table, except INR: Settle asks for
# ₹1.00 where Stripe would take ₹0.50.
MINIMUMS: dict[str, int] = {"USD": 50, "EUR": 50, "GBP": 30, "JPY": 50, "INR": 100}

# Stripe caps each metadata value at 500 characters.
_METADATA_VALUE_LIMIT = 500

_TIMESTAMP = re.compile(r"[0-9]{1,12}")

_T = TypeVar("_T")


def sign_payload(secret: str, body: bytes, timestamp: int) -> str:
    """A ``Stripe-Signature`` header value for ``body`` as Stripe signs it at ``timestamp``."""
    return f"t={timestamp},v1={_signature(secret, str(timestamp), body)}"


def _signature(secret: str, timestamp: str, body: bytes) -> str:
    signed = timestamp.encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> None:
    """Check a ``Stripe-Signature`` header over the raw body; InvalidSignatureError if not."""
    if not header:
        raise InvalidSignatureError("The Stripe-Signature header is missing")
    timestamps: list[str] = []
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not value:
            raise InvalidSignatureError("The Stripe-Signature header is malformed")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            candidates.append(value)
    # Unix seconds; the length cap keeps int() away from absurdly long digit runs.
    if len(timestamps) != 1 or not _TIMESTAMP.fullmatch(timestamps[0]):
        raise InvalidSignatureError("The Stripe-Signature header has no valid timestamp")
    if not candidates:
        raise InvalidSignatureError("The Stripe-Signature header has no v1 signature")
    expected = _signature(secret, timestamps[0], body).encode("ascii")
    # Stripe sends one v1 value per active secret while a secret is being rolled;
    # any one of them may be ours. Every candidate is compared, in constant time
    # (as bytes: compare_digest refuses non-ASCII text, which a forger may send).
    matches = [hmac.compare_digest(expected, c.encode("utf-8", "replace")) for c in candidates]
    if not any(matches):
        raise InvalidSignatureError("No Stripe signature matches the body")
    age = clock.now().timestamp() - int(timestamps[0])
    if abs(age) > SIGNATURE_TOLERANCE_SECONDS:
        raise InvalidSignatureError("The Stripe signature's timestamp is outside the tolerance")


class StripeGateway:
    provider = PaymentProvider.STRIPE
    minimums: Mapping[str, int] = MINIMUMS

    def __init__(self, settings: Settings) -> None:
        if settings.stripe_secret_key is None or settings.stripe_webhook_secret is None:
            raise GatewayNotConfiguredError(PaymentProvider.STRIPE)
        api_base = settings.stripe_api_base
        self._client = stripe.StripeClient(
            settings.stripe_secret_key.get_secret_value(),
            base_addresses={"api": api_base} if api_base else None,
            # Retries reuse the request's idempotency key, so they cannot charge twice.
            max_network_retries=2,
        )
        self._webhook_secret = settings.stripe_webhook_secret.get_secret_value()
        self._publishable_key = settings.stripe_publishable_key

    async def create_payment(self, request: PaymentRequest) -> Checkout:
        """A PaymentIntent whose client secret Stripe Elements confirms in the browser.

        A ``hosted`` request gets a Checkout Session (Stripe's own page) instead.
        """
        if request.hosted:
            return await self.create_checkout_session(request)
        metadata = _metadata(request)
        intent = await _call(
            self._client.v1.payment_intents.create,
            params={
                # Stripe takes the smallest currency unit, as Settle stores it, JPY included.
                "amount": request.amount_minor,
                "currency": request.currency.lower(),
                "description": request.description,
                "metadata": metadata,
                # Cards settle at once; methods that settle days later would leave the
                # payment pending where a client expects it paid.
                "payment_method_types": ["card"],
            },
            options={"idempotency_key": f"settle-payment-{request.payment_id}"},
        )
        return Checkout(
            provider_order_id=intent.id,
            client_secret=intent.client_secret,
            public_key=self._publishable_key,
        )

    async def create_checkout_session(self, request: PaymentRequest) -> Checkout:
        """A Checkout Session: Stripe's hosted payment page, which returns to ``return_url``."""
        if not request.return_url:
            raise ValueError("A Stripe Checkout Session needs a return URL")
        metadata = _metadata(request)
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.amount_minor,
                        "product_data": {"name": request.description},
                    },
                }
            ],
            "payment_method_types": ["card"],
            "success_url": request.return_url,
            "cancel_url": request.return_url,
            "client_reference_id": request.payment_id,
            "metadata": metadata,
            # The intent's events must find the payment too: they carry the intent's
            # metadata, not the session's.
            "payment_intent_data": {"description": request.description, "metadata": metadata},
        }
        if request.customer_email:
            params["customer_email"] = request.customer_email
        session = await _call(
            self._client.v1.checkout.sessions.create,
            params=params,
            options={"idempotency_key": f"settle-checkout-{request.payment_id}"},
        )
        return Checkout(
            provider_order_id=session.id,
            checkout_url=session.url,
            public_key=self._publishable_key,
        )

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> GatewayEvent:
        """Verify the signature over the raw body, then parse the event."""
        verify_signature(self._webhook_secret, body, _header(headers, SIGNATURE_HEADER))
        event = parse_signed_body(body)
        if not (
            isinstance(event, dict)
            and isinstance(event.get("id"), str)
            and isinstance(event.get("type"), str)
            and isinstance(event.get("data"), dict)
            and isinstance(event["data"].get("object"), dict)
        ):
            raise InvalidPayloadError("The signed body is not a Stripe event")
        return parse_event(event)

    async def refund(
        self, *, provider_payment_id: str, amount_minor: int, refund_id: str, reason: str
    ) -> RefundResult:
        """Refund a PaymentIntent (``pi_``) or a charge (``ch_``); ``refund_id`` is the key."""
        target = "charge" if provider_payment_id.startswith("ch_") else "payment_intent"
        metadata = {"settle_refund_id": refund_id}
        if reason:
            # Stripe's own ``reason`` is a short enumeration; Settle's is free text.
            metadata["settle_reason"] = reason[:_METADATA_VALUE_LIMIT]
        refund = await _call(
            self._client.v1.refunds.create,
            params={target: provider_payment_id, "amount": amount_minor, "metadata": metadata},
            options={"idempotency_key": f"settle-refund-{refund_id}"},
        )
        return RefundResult(provider_refund_id=refund.id, settled=refund.status == "succeeded")

    async def close_payment(self, *, provider_order_id: str) -> bool:
        """Expire a Checkout Session (``cs_``) or cancel a PaymentIntent, unless already closed."""
        if provider_order_id.startswith("cs_"):
            session = await _call(self._client.v1.checkout.sessions.retrieve, provider_order_id)
            if session.status == "expired":
                return True
            if session.status != "open":
                raise GatewayError(
                    f"Stripe Checkout Session {provider_order_id} is {session.status}",
                    temporary=False,
                )
            await _call(self._client.v1.checkout.sessions.expire, provider_order_id)
            return True
        intent = await _call(self._client.v1.payment_intents.retrieve, provider_order_id)
        if intent.status == "canceled":
            return True
        if intent.status in ("succeeded", "processing"):
            raise GatewayError(
                f"Stripe PaymentIntent {provider_order_id} is {intent.status}", temporary=False
            )
        await _call(self._client.v1.payment_intents.cancel, provider_order_id)
        return True

    async def fetch_status(
        self, *, provider_order_id: str, provider_payment_id: str | None
    ) -> RemoteStatus:
        """Read the PaymentIntent back (through its Checkout Session for a ``cs_`` order)."""
        if provider_order_id.startswith("cs_"):
            session = await _call(
                self._client.v1.checkout.sessions.retrieve,
                provider_order_id,
                params={"expand": ["payment_intent.latest_charge"]},
            )
            data = session.to_dict()
            intent = data.get("payment_intent")
            if not isinstance(intent, dict):
                # The session creates its intent only once the payer submits the page.
                expired = data.get("status") == "expired"
                return RemoteStatus(
                    state=RemoteState.CANCELLED if expired else RemoteState.PENDING,
                    amount_minor=data.get("amount_total"),
                    currency=_currency(data),
                )
        else:
            fetched = await _call(
                self._client.v1.payment_intents.retrieve,
                provider_order_id,
                params={"expand": ["latest_charge"]},
            )
            intent = fetched.to_dict()
        return _remote_status(intent)


def parse_event(event: dict[str, Any]) -> GatewayEvent:
    """Normalize a (verified) Stripe event."""
    event_type: str = event["type"]
    obj: dict[str, Any] = event["data"]["object"]
    base: dict[str, Any] = {
        "provider": PaymentProvider.STRIPE,
        "event_id": event["id"],
        "event_type": event_type,
        "payload": event,
    }
    if event_type.startswith("payment_intent."):
        kind = _INTENT_EVENTS.get(event_type, EventKind.OTHER)
        return GatewayEvent(
            **base,
            kind=kind,
            provider_order_id=obj.get("id"),
            provider_payment_id=obj.get("id"),
            payment_id=_settle_payment_id(obj),
            amount_minor=_intent_amount(obj),
            currency=_currency(obj),
            failure_reason=_intent_failure(obj) if kind in _FAILURE_KINDS else None,
        )
    if event_type.startswith("checkout.session."):
        return GatewayEvent(
            **base,
            kind=_session_kind(event_type, obj),
            provider_order_id=obj.get("id"),
            provider_payment_id=_id(obj.get("payment_intent")),
            payment_id=_settle_payment_id(obj) or obj.get("client_reference_id"),
            amount_minor=obj.get("amount_total"),
            currency=_currency(obj),
        )
    if event_type == "charge.refunded":
        refunds = (obj.get("refunds") or {}).get("data") or []
        # Since API version 2022-11-15 a charge no longer lists its refunds; the
        # refund's own events name it then.
        latest = max(refunds, key=lambda refund: refund.get("created", 0), default=None)
        return GatewayEvent(
            **base,
            kind=EventKind.REFUND_SUCCEEDED,
            provider_order_id=_id(obj.get("payment_intent")),
            provider_payment_id=_id(obj.get("payment_intent")),
            payment_id=_settle_payment_id(obj),
            amount_minor=obj.get("amount_refunded"),
            currency=_currency(obj),
            provider_refund_id=latest.get("id") if latest else None,
            refund_amount_minor=latest.get("amount") if latest else None,
        )
    if event_type in _REFUND_EVENTS:
        return GatewayEvent(
            **base,
            kind=_REFUND_STATES.get(obj.get("status") or "", EventKind.OTHER),
            provider_order_id=_id(obj.get("payment_intent")),
            provider_payment_id=_id(obj.get("payment_intent")),
            currency=_currency(obj),
            provider_refund_id=obj.get("id"),
            refund_amount_minor=obj.get("amount"),
            failure_reason=obj.get("failure_reason"),
        )
    return GatewayEvent(**base, kind=EventKind.OTHER)


_INTENT_EVENTS: dict[str, EventKind] = {
    "payment_intent.succeeded": EventKind.PAYMENT_SUCCEEDED,
    "payment_intent.payment_failed": EventKind.PAYMENT_FAILED,
    "payment_intent.canceled": EventKind.PAYMENT_CANCELLED,
    "payment_intent.processing": EventKind.PAYMENT_PENDING,
}

_FAILURE_KINDS = frozenset({EventKind.PAYMENT_FAILED, EventKind.PAYMENT_CANCELLED})

# ``charge.refund.updated`` is what older API versions send for a refund's change.
_REFUND_EVENTS = frozenset(
    {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
)
_REFUND_STATES: dict[str, EventKind] = {
    "succeeded": EventKind.REFUND_SUCCEEDED,
    "failed": EventKind.REFUND_FAILED,
    "canceled": EventKind.REFUND_FAILED,
}


def _session_kind(event_type: str, session: dict[str, Any]) -> EventKind:
    if event_type == "checkout.session.completed":
        # A payment method that settles later completes the session unpaid; its
        # ``async_payment_succeeded`` or ``async_payment_failed`` follows.
        return {
            "paid": EventKind.PAYMENT_SUCCEEDED,
            "unpaid": EventKind.PAYMENT_PENDING,
        }.get(session.get("payment_status") or "", EventKind.OTHER)
    return {
        "checkout.session.async_payment_succeeded": EventKind.PAYMENT_SUCCEEDED,
        "checkout.session.async_payment_failed": EventKind.PAYMENT_FAILED,
        "checkout.session.expired": EventKind.PAYMENT_CANCELLED,
    }.get(event_type, EventKind.OTHER)


def _remote_status(intent: dict[str, Any]) -> RemoteStatus:
    status = intent.get("status")
    failure = _intent_failure(intent)
    if status == "succeeded":
        state = RemoteState.SUCCEEDED
    elif status == "canceled":
        state = RemoteState.CANCELLED
    elif status == "requires_payment_method" and failure is not None:
        # A declined attempt returns the intent to ``requires_payment_method`` with the
        # error; the payer may still try another card, but this attempt failed.
        state = RemoteState.FAILED
    else:
        state = RemoteState.PENDING
    charge = intent.get("latest_charge")
    refunded = charge.get("amount_refunded", 0) if isinstance(charge, dict) else 0
    return RemoteStatus(
        state=state,
        provider_payment_id=intent.get("id"),
        amount_minor=_intent_amount(intent),
        currency=_currency(intent),
        amount_refunded_minor=refunded or 0,
        failure_reason=failure if state is RemoteState.FAILED else None,
    )


def _intent_amount(intent: dict[str, Any]) -> int | None:
    """What was received once it succeeded (a partial capture takes less), else what is asked."""
    if intent.get("status") == "succeeded" and intent.get("amount_received") is not None:
        return int(intent["amount_received"])
    amount = intent.get("amount")
    return int(amount) if amount is not None else None


def _intent_failure(intent: dict[str, Any]) -> str | None:
    error = intent.get("last_payment_error")
    if isinstance(error, dict):
        return error.get("message") or error.get("code")
    cancellation: str | None = intent.get("cancellation_reason")
    return cancellation


def _settle_payment_id(obj: dict[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    return metadata.get("settle_payment_id") if isinstance(metadata, dict) else None


def _currency(obj: dict[str, Any]) -> str | None:
    currency = obj.get("currency")
    return currency.upper() if isinstance(currency, str) and currency else None


def _id(value: Any) -> str | None:
    """The id of an expandable field: a bare id, or the object when it was expanded."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        identifier: str = value["id"]
        return identifier
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    # A plain dict is case-sensitive where HTTP headers are not.
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def _metadata(request: PaymentRequest) -> dict[str, str]:
    return {**request.metadata, "settle_payment_id": request.payment_id}


async def _call(func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run a blocking SDK call in a thread and map Stripe's errors to GatewayError."""
    try:
        return await asyncio.to_thread(func, *args, **kwargs)
    except stripe.StripeError as exc:
        raise GatewayError(f"Stripe: {exc.user_message or exc}", temporary=_temporary(exc)) from exc


def _temporary(exc: stripe.StripeError) -> bool:
    """Whether the same call may succeed later: network trouble, Stripe's 5xx, 409 and 429."""
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    status = exc.http_status
    if status is None:
        # An APIError without a status is a response the SDK could not read.
        return isinstance(exc, stripe.APIError)
    # 409: the same idempotency key is still being processed, or a lock timed out.
    return status >= 500 or status in (409, 429)
