"""Razorpay through its official SDK: orders for Checkout, payment links, refunds, webhooks.

A payment is a Razorpay *order*: the frontend opens Razorpay Checkout with the
order id and the public key id, and the payer's browser gets back
``razorpay_payment_id`` and ``razorpay_signature``, an HMAC-SHA256 of
``"<order_id>|<payment_id>"`` with the key secret (``verify_checkout_signature``).
A hosted alternative is a *payment link* (``create_payment_link``). Webhooks are
signed with a separate webhook secret: an HMAC-SHA256 of the raw body.

Idempotency: Razorpay orders take no idempotency key and do not dedupe by
``receipt``, so this gateway cannot make a repeated ``create_payment`` harmless
by itself. Settle asks for a payment's order once, under the payment's row lock,
and stores the order id on the row (``services.payment.ensure_checkout``); that
row is what prevents a second order. The order still carries ``receipt`` = the
payment id, so one can be traced back in the dashboard. Payment links reject a
second link with the same ``reference_id`` (the payment id), and refunds take
Razorpay's ``X-Refund-Idempotency`` key (the refund id), so both are safe to retry.

Amounts go to Razorpay in the currency's smallest unit, as Settle stores them:
paise for INR, cents for USD, whole yen for JPY (a zero-decimal currency). For
three-decimal currencies (KWD, BHD, OMR) Razorpay wants the last digit to be 0.

The SDK is blocking (``requests``): every call runs in a thread, with a timeout,
and its errors become ``GatewayError``: temporary for timeouts, lost connections
and 5xx answers (the job retries), permanent for Razorpay's refusals.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

import razorpay
import razorpay.errors
import requests

from settle.core.money import exponent
from settle.core.settings import Settings
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

SIGNATURE_HEADER = "x-razorpay-signature"
EVENT_ID_HEADER = "x-razorpay-event-id"
REFUND_IDEMPOTENCY_HEADER = "X-Refund-Idempotency"
# A hung gateway must fail a job in bounded time, not hold a worker thread forever.
DEFAULT_TIMEOUT_SECONDS = 15.0
# Razorpay's limits on notes: 15 pairs of at most 256 characters each.
MAX_NOTES = 15
MAX_NOTE_LENGTH = 256
# ``receipt`` and ``reference_id`` are at most 40 characters (a UUID is 36).
MAX_REFERENCE_LENGTH = 40
# The width of WebhookEvent.event_id.
MAX_EVENT_ID_LENGTH = 255

_KINDS: dict[str, EventKind] = {
    "payment.authorized": EventKind.PAYMENT_PENDING,
    "payment.captured": EventKind.PAYMENT_SUCCEEDED,
    "order.paid": EventKind.PAYMENT_SUCCEEDED,
    "payment_link.paid": EventKind.PAYMENT_SUCCEEDED,
    "payment.failed": EventKind.PAYMENT_FAILED,
    # A link that can no longer be paid ends its payment's attempt.
    "payment_link.cancelled": EventKind.PAYMENT_CANCELLED,
    "payment_link.expired": EventKind.PAYMENT_CANCELLED,
    "refund.processed": EventKind.REFUND_SUCCEEDED,
    "refund.failed": EventKind.REFUND_FAILED,
}


class _TimeoutSession(requests.Session):
    """A requests session with a default timeout: the SDK passes none of its own."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(
        self, method: str, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


class RazorpayGateway:
    provider = PaymentProvider.RAZORPAY
    # Razorpay's smallest payment: ₹1.00 and $0.50.
    minimums: Mapping[str, int] = {"INR": 100, "USD": 50}

    def __init__(self, settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if (
            settings.razorpay_key_id is None
            or settings.razorpay_key_secret is None
            or settings.razorpay_webhook_secret is None
        ):
            from settle.gateways import GatewayNotConfiguredError

            raise GatewayNotConfiguredError(self.provider)
        self.key_id = settings.razorpay_key_id
        self._key_secret = settings.razorpay_key_secret.get_secret_value().encode()
        self._webhook_secret = settings.razorpay_webhook_secret.get_secret_value().encode()
        options: dict[str, Any] = {}
        if settings.razorpay_api_base:
            # The SDK's base URL is the API's origin: its paths carry the ``/v1``.
            options["base_url"] = settings.razorpay_api_base.rstrip("/").removesuffix("/v1")
        self._client = razorpay.Client(
            session=_TimeoutSession(timeout),
            auth=(self.key_id, settings.razorpay_key_secret.get_secret_value()),
            **options,
        )

    # --- creating payments ---------------------------------------------------------------

    async def create_payment(self, request: PaymentRequest) -> Checkout:
        """A Razorpay order for Checkout; Settle's payment row keeps it from being made twice.

        A ``hosted`` request gets a payment link (Razorpay's own page) instead.
        """
        if request.hosted:
            return await self.create_payment_link(request)
        _check_amount(request)
        order = await self._call(
            self._client.order.create,
            {
                "amount": request.amount_minor,
                "currency": request.currency,
                "receipt": request.payment_id[:MAX_REFERENCE_LENGTH],
                "notes": _notes(request),
            },
        )
        return Checkout(provider_order_id=str(order["id"]), public_key=self.key_id)

    async def create_payment_link(self, request: PaymentRequest) -> Checkout:
        """A hosted payment link; asked again for the same payment, returns the same link."""
        _check_amount(request)
        reference_id = request.payment_id[:MAX_REFERENCE_LENGTH]
        data: dict[str, Any] = {
            "amount": request.amount_minor,
            "currency": request.currency,
            "reference_id": reference_id,
            "description": request.description,
            # Settle sends its own emails; Razorpay's would be a second copy.
            "notify": {"sms": False, "email": False},
            "notes": _notes(request),
        }
        customer = {
            key: value
            for key, value in (("name", request.customer_name), ("email", request.customer_email))
            if value
        }
        if customer:
            data["customer"] = customer
        if request.return_url:
            data["callback_url"] = request.return_url
            data["callback_method"] = "get"
        try:
            link = await self._call(self._client.payment_link.create, data)
        except GatewayError as exc:
            if exc.temporary:
                raise
            # Razorpay refuses a second link with the same reference_id: the first
            # attempt made it and its answer was lost. That link is the answer.
            existing = await self._link_by_reference(reference_id)
            if existing is None:
                raise
            if existing.get("amount") != request.amount_minor or (
                str(existing.get("currency", "")).upper() != request.currency.upper()
            ):
                raise GatewayError(
                    f"Razorpay already has link {existing.get('id')} for this payment with "
                    f"another amount or currency",
                    temporary=False,
                ) from exc
            link = existing
        return Checkout(provider_order_id=str(link["id"]), checkout_url=str(link["short_url"]))

    async def _link_by_reference(self, reference_id: str) -> dict[str, Any] | None:
        found = await self._call(self._client.payment_link.all, {"reference_id": reference_id})
        for link in found.get("payment_links") or []:
            if isinstance(link, dict) and link.get("reference_id") == reference_id:
                return link
        return None

    # --- verifying what the payer and Razorpay send --------------------------------------

    def verify_checkout_signature(self, *, order_id: str, payment_id: str, signature: str) -> bool:
        """Whether Checkout's ``razorpay_signature`` is Razorpay's for this order and payment.

        ``order_id`` must be the one Settle stored, never the one the browser sent.
        """
        message = f"{order_id}|{payment_id}".encode()
        expected = hmac.new(self._key_secret, message, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), signature.encode())

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> GatewayEvent:
        lowered = {key.lower(): value for key, value in headers.items()}
        given = lowered.get(SIGNATURE_HEADER, "")
        expected = hmac.new(self._webhook_secret, body, hashlib.sha256).hexdigest()
        if not given or not hmac.compare_digest(expected.encode(), given.strip().encode()):
            raise InvalidSignatureError("The Razorpay signature does not match the body")
        data = parse_signed_body(body)
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            raise InvalidPayloadError("The Razorpay event is malformed")
        header_id = lowered.get(EVENT_ID_HEADER, "").strip() or None
        return _parse_event(_signed_event_id(body, data), data, gateway_event_id=header_id)

    # --- after the payment ---------------------------------------------------------------

    async def refund(
        self, *, provider_payment_id: str, amount_minor: int, refund_id: str, reason: str
    ) -> RefundResult:
        notes = {"settle_refund_id": refund_id}
        if reason:
            notes["reason"] = reason[:MAX_NOTE_LENGTH]
        result = await self._call(
            self._client.payment.refund,
            provider_payment_id,
            {"amount": amount_minor, "notes": notes, "receipt": refund_id[:MAX_REFERENCE_LENGTH]},
            # The same refund id asks for the same refund: a retried job cannot refund twice.
            headers={REFUND_IDEMPOTENCY_HEADER: refund_id},
        )
        return RefundResult(
            provider_refund_id=str(result["id"]), settled=result.get("status") == "processed"
        )

    async def close_payment(self, *, provider_order_id: str) -> bool:
        """Cancel a payment link; an order cannot be closed (Razorpay has no such call)."""
        if not provider_order_id.startswith("plink_"):
            return False
        link = await self._call(self._client.payment_link.fetch, provider_order_id)
        status = link.get("status")
        if status in ("cancelled", "expired"):
            return True
        if status != "created":
            raise GatewayError(
                f"Razorpay payment link {provider_order_id} is {status} and cannot be cancelled",
                temporary=False,
            )
        await self._call(self._client.payment_link.cancel, provider_order_id)
        return True

    async def fetch_status(
        self, *, provider_order_id: str, provider_payment_id: str | None
    ) -> RemoteStatus:
        order_id: str | None = provider_order_id
        link_closed = False
        if provider_order_id.startswith("plink_"):
            link = await self._call(self._client.payment_link.fetch, provider_order_id)
            order_id = link.get("order_id") or None
            link_closed = link.get("status") in ("cancelled", "expired")
        payments: list[dict[str, Any]] = []
        if order_id:
            found = await self._call(self._client.order.payments, order_id)
            payments = [item for item in found.get("items") or [] if isinstance(item, dict)]
        if not payments and provider_payment_id:
            payments = [await self._call(self._client.payment.fetch, provider_payment_id)]
        return _remote_status(payments, link_closed=link_closed)

    # --- calling the SDK -----------------------------------------------------------------

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            result = await asyncio.to_thread(method, *args, **kwargs)
        except razorpay.errors.BadRequestError as exc:
            raise GatewayError(f"Razorpay refused the request: {exc}", temporary=False) from exc
        except (razorpay.errors.ServerError, razorpay.errors.GatewayError) as exc:
            raise GatewayError(f"Razorpay failed: {exc}", temporary=True) from exc
        except requests.RequestException as exc:
            # Timeouts, lost connections, and a proxy's non-JSON error page alike.
            raise GatewayError(
                f"Razorpay could not be reached: {type(exc).__name__}", temporary=True
            ) from exc
        if not isinstance(result, dict):
            raise GatewayError("Razorpay answered something unexpected", temporary=True)
        return result


def _check_amount(request: PaymentRequest) -> None:
    if request.amount_minor <= 0:
        raise GatewayError("The amount must be positive", temporary=False)
    if exponent(request.currency) == 3 and request.amount_minor % 10:
        raise GatewayError(
            f"Razorpay takes {request.currency} amounts whose last digit is 0", temporary=False
        )


def _notes(request: PaymentRequest) -> dict[str, str]:
    # Razorpay keeps at most 15 notes; the payment id is the one that must survive.
    notes = {
        key: value[:MAX_NOTE_LENGTH]
        for key, value in list(request.metadata.items())[: MAX_NOTES - 1]
        if key != "settle_payment_id"
    }
    notes["settle_payment_id"] = request.payment_id
    return notes


def _entity(payload: Any, name: str) -> dict[str, Any]:
    """``payload.<name>.entity`` of an event, or an empty dict."""
    if not isinstance(payload, dict):
        return {}
    wrapper = payload.get(name)
    entity = wrapper.get("entity") if isinstance(wrapper, dict) else None
    return entity if isinstance(entity, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _settle_payment_id(*entities: dict[str, Any]) -> str | None:
    # Razorpay sends notes as an object, or as ``[]`` when there are none.
    for entity in entities:
        notes = entity.get("notes")
        if isinstance(notes, dict) and _text(notes.get("settle_payment_id")):
            return str(notes["settle_payment_id"])
    return None


def _signed_event_id(body: bytes, data: dict[str, Any]) -> str:
    """The id a delivery is deduplicated on, taken from what the signature covers.

    Razorpay's ``X-Razorpay-Event-Id`` header is not signed: a captured body sent
    again under a new header would pass as a new event. So the id is the event's
    name, its ``created_at`` and the id of every entity it carries (``payment.authorized``
    and ``payment.captured`` of one payment differ by name, two refunds of one
    payment by the refund's id). Retries and dashboard replays send the body as
    it was first made, so they keep the same id. A body without those falls back
    to a hash of its signed bytes.
    """
    created_at = _int(data.get("created_at"))
    payload = data.get("payload")
    names = sorted(payload) if isinstance(payload, dict) else []
    ids = [(name, _text(_entity(payload, name).get("id"))) for name in names]
    entities = ",".join(f"{name}={entity_id}" for name, entity_id in ids if entity_id)
    event_id = f"{data['event']}:{created_at}:{entities}"
    if created_at is None or not entities or len(event_id) > MAX_EVENT_ID_LENGTH:
        return f"sha256:{hashlib.sha256(body).hexdigest()}"
    return event_id


def _parse_event(
    event_id: str, data: dict[str, Any], *, gateway_event_id: str | None = None
) -> GatewayEvent:
    event_type: str = data["event"]
    kind = _KINDS.get(event_type, EventKind.OTHER)
    payload = data.get("payload")
    payment = _entity(payload, "payment")
    order = _entity(payload, "order")
    link = _entity(payload, "payment_link")
    refund = _entity(payload, "refund")
    currency = _text(refund.get("currency")) or _text(payment.get("currency"))
    common: dict[str, Any] = {
        "provider": PaymentProvider.RAZORPAY,
        "event_id": event_id,
        "gateway_event_id": gateway_event_id,
        "event_type": event_type,
        "kind": kind,
        "payload": data,
        "payment_id": _settle_payment_id(payment, order, link) or _text(link.get("reference_id")),
        "amount_minor": _int(payment.get("amount")),
        "currency": currency.upper() if currency else None,
    }
    if event_type.startswith("refund."):
        return GatewayEvent(
            **common,
            provider_order_id=_text(payment.get("order_id")),
            provider_payment_id=_text(refund.get("payment_id")) or _text(payment.get("id")),
            provider_refund_id=_text(refund.get("id")),
            refund_amount_minor=_int(refund.get("amount")),
            failure_reason=(
                (_text(refund.get("error_description")) or "Razorpay could not process the refund")
                if kind is EventKind.REFUND_FAILED
                else None
            ),
        )
    # A link's payment is found by the link's id, which is what Settle stored.
    order_id = _text(link.get("id")) or _text(payment.get("order_id")) or _text(order.get("id"))
    return GatewayEvent(
        **common,
        provider_order_id=order_id,
        provider_payment_id=_text(payment.get("id")),
        failure_reason=(
            (_text(payment.get("error_description")) or "The payment failed")
            if kind is EventKind.PAYMENT_FAILED
            else None
        ),
    )


def _remote_status(payments: list[dict[str, Any]], *, link_closed: bool) -> RemoteStatus:
    """The state of a Razorpay order from its payment attempts (a payer may try several)."""
    by_status: dict[str, dict[str, Any]] = {}
    for payment in payments:
        # The latest attempt of each status speaks for it (Razorpay lists the newest first).
        status = str(payment.get("status"))
        if status not in by_status or (payment.get("created_at") or 0) > (
            by_status[status].get("created_at") or 0
        ):
            by_status[status] = payment
    # Razorpay reports a fully refunded payment as ``refunded``: it was captured first.
    for status in ("captured", "refunded"):
        if status in by_status:
            paid = by_status[status]
            currency = _text(paid.get("currency"))
            return RemoteStatus(
                state=RemoteState.SUCCEEDED,
                provider_payment_id=_text(paid.get("id")),
                amount_minor=_int(paid.get("amount")),
                currency=currency.upper() if currency else None,
                amount_refunded_minor=_int(paid.get("amount_refunded")) or 0,
            )
    for status in ("authorized", "created"):
        if status in by_status:
            return RemoteStatus(
                state=RemoteState.PENDING, provider_payment_id=_text(by_status[status].get("id"))
            )
    if "failed" in by_status:
        failed = by_status["failed"]
        return RemoteStatus(
            state=RemoteState.FAILED,
            provider_payment_id=_text(failed.get("id")),
            failure_reason=_text(failed.get("error_description")) or "The payment failed",
        )
    return RemoteStatus(state=RemoteState.CANCELLED if link_closed else RemoteState.PENDING)
