"""The offline sandbox gateway: a hosted Pay / Fail page instead of a real processor.

For ``make run``, demos and frontend development with no account anywhere. A
payment's checkout is Settle's own page ``/sandbox/pay/<token>``; its buttons
deliver webhooks signed like a real gateway's (HMAC-SHA256 of the raw body with
a key derived from the secret key) through the same ``/webhooks`` pipeline:
verify, store once, process in a worker. Refunds settle at once. The sandbox
keeps no state of its own, so reconciliation hears "pending" until a button is
pressed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from settle.core.settings import Settings
from settle.core.signing import UrlSigner
from settle.gateways.base import (
    Checkout,
    EventKind,
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

SIGNATURE_HEADER = "x-sandbox-signature"
PAGE_PURPOSE = "sandbox.pay"
# A sandbox checkout link works for a day, like a payment link sent to a client.
PAGE_TTL_SECONDS = 24 * 3600

_KINDS = {
    "payment.succeeded": EventKind.PAYMENT_SUCCEEDED,
    "payment.failed": EventKind.PAYMENT_FAILED,
    "refund.succeeded": EventKind.REFUND_SUCCEEDED,
}


class SandboxGateway:
    provider = PaymentProvider.SANDBOX
    minimums: Mapping[str, int] = {}

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        secret = settings.signing_key()
        self._webhook_key = hashlib.sha256(f"settle.sandbox.webhook:{secret}".encode()).digest()
        self._pages = UrlSigner(secret, PAGE_PURPOSE)

    async def create_payment(self, request: PaymentRequest) -> Checkout:
        token, _ = self._pages.sign({"p": request.payment_id}, ttl_seconds=PAGE_TTL_SECONDS)
        base = self._settings.public_base_url.rstrip("/")
        return Checkout(
            provider_order_id=f"sbx_{request.payment_id}",
            checkout_url=f"{base}/sandbox/pay/{token}",
        )

    def page_payment_id(self, token: str) -> str:
        """The payment a checkout page token is for; SignedTokenError if forged or expired."""
        return self._pages.verify(token)["p"]

    def sign(self, body: bytes) -> str:
        return hmac.new(self._webhook_key, body, hashlib.sha256).hexdigest()

    def event_body(self, event_type: str, **fields: Any) -> bytes:
        """The raw body of a sandbox webhook, as the page's buttons deliver it."""
        return json.dumps({"type": event_type, **fields}, sort_keys=True).encode()

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> GatewayEvent:
        given = {k.lower(): v for k, v in headers.items()}.get(SIGNATURE_HEADER, "")
        if not given or not hmac.compare_digest(given, self.sign(body)):
            raise InvalidSignatureError("The sandbox signature does not match the body")
        data = parse_signed_body(body)
        try:
            event_type = str(data["type"])
            event_id = str(data["id"])
        except (KeyError, TypeError):
            raise InvalidPayloadError("The sandbox event is malformed") from None
        return GatewayEvent(
            provider=self.provider,
            event_id=event_id,
            event_type=event_type,
            kind=_KINDS.get(event_type, EventKind.OTHER),
            payload=data,
            provider_order_id=data.get("order_id"),
            provider_payment_id=data.get("payment_ref"),
            payment_id=data.get("payment_id"),
            amount_minor=data.get("amount_minor"),
            currency=data.get("currency"),
            provider_refund_id=data.get("refund_id"),
            refund_amount_minor=data.get("refund_amount_minor"),
            failure_reason=data.get("failure_reason"),
        )

    async def refund(
        self, *, provider_payment_id: str, amount_minor: int, refund_id: str, reason: str
    ) -> RefundResult:
        return RefundResult(provider_refund_id=f"sbx_rf_{refund_id}", settled=True)

    async def fetch_status(
        self, *, provider_order_id: str, provider_payment_id: str | None
    ) -> RemoteStatus:
        return RemoteStatus(state=RemoteState.PENDING)

    async def close_payment(self, *, provider_order_id: str) -> bool:
        # The page reads the payment's status from Settle: a superseded payment's page is
        # gone (410) and its buttons deliver nothing, so there is nothing to close here.
        return True
