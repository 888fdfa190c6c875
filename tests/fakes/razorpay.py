"""A small stateful fake of Razorpay's REST API and webhook sender, for tests.

It speaks the part of Razorpay's v1 API that Settle uses, as Razorpay documents
it: Basic auth with ``key_id:key_secret``; orders (``receipt`` is not deduped:
two orders with one receipt are two orders); an order's payments; payment links
(a second link with the same ``reference_id`` is refused); payments; refunds
(partial or full, never above what was captured, idempotent under the
``X-Refund-Idempotency`` header). Errors come back as Razorpay's do:
``{"error": {"code": "BAD_REQUEST_ERROR", "description": ...}}`` with 400 (an
unknown id too) or 401, ``SERVER_ERROR`` with 500.

What a payer or Razorpay's own machinery would do is driven through test
controls under ``/_fake/`` (never part of Razorpay's API): pay, authorize or fail
an order, pay a link, settle a pending refund, and make the next requests fail
with 500 or hang past the client's timeout.

``build_webhook`` makes a delivery exactly as Razorpay sends one: the event
envelope, ``X-Razorpay-Signature`` (HMAC-SHA256 of the raw body with the
webhook secret, hex) and ``X-Razorpay-Event-Id``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

Entity = dict[str, Any]
Handler = Callable[[Request], Awaitable[Response]]

_ALPHABET = string.ascii_letters + string.digits
# Razorpay's minimum order amount in the smallest unit, where it documents one.
_MINIMUMS = {"INR": 100}
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{10,}$")
# What each kind of event carries, in Razorpay's order.
_CONTAINS = {
    "payment": ("payment",),
    "order": ("payment", "order"),
    "refund": ("refund", "payment"),
    "payment_link": ("payment_link", "order", "payment"),
}


class RazorpayError(Exception):
    def __init__(
        self, description: str, *, status: int = 400, code: str = "BAD_REQUEST_ERROR"
    ) -> None:
        super().__init__(description)
        self.description = description
        self.status = status
        self.code = code

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "code": self.code,
                "description": self.description,
                "source": "NA",
                "step": "NA",
                "reason": "NA",
                "metadata": {},
            }
        }
        return JSONResponse(body, status_code=self.status)


def new_id(prefix: str) -> str:
    """An id shaped like Razorpay's: a prefix and 14 base62 characters."""
    return f"{prefix}_{''.join(secrets.choice(_ALPHABET) for _ in range(14))}"


def checkout_signature(key_secret: str, order_id: str, payment_id: str) -> str:
    """What Razorpay Checkout hands the browser after a payment: HMAC of ``order|payment``."""
    message = f"{order_id}|{payment_id}".encode()
    return hmac.new(key_secret.encode(), message, hashlib.sha256).hexdigest()


def build_webhook(
    event: str,
    *,
    webhook_secret: str,
    account_id: str,
    payment: Entity | None = None,
    order: Entity | None = None,
    refund: Entity | None = None,
    payment_link: Entity | None = None,
    event_id: str | None = None,
    created_at: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A webhook delivery as Razorpay sends it: the raw body and its headers."""
    given = {
        name: entity
        for name, entity in (
            ("payment", payment),
            ("order", order),
            ("refund", refund),
            ("payment_link", payment_link),
        )
        if entity is not None
    }
    preferred = _CONTAINS.get(event.split(".", 1)[0], ())
    contains = [name for name in preferred if name in given]
    contains += [name for name in given if name not in contains]
    envelope = {
        "entity": "event",
        "account_id": account_id,
        "event": event,
        "contains": contains,
        "payload": {name: {"entity": given[name]} for name in contains},
        "created_at": created_at if created_at is not None else int(time.time()),
    }
    body = json.dumps(envelope, separators=(",", ":")).encode()
    signature = hmac.new(webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Razorpay-Signature": signature,
        "X-Razorpay-Event-Id": event_id or new_id("evt").removeprefix("evt_"),
    }
    return body, headers


def _notes_out(notes: Mapping[str, str]) -> dict[str, str] | list[Any]:
    # Razorpay's API is PHP underneath: empty notes come back as a JSON array.
    return dict(notes) if notes else []


def _notes_in(data: Mapping[str, Any]) -> dict[str, str]:
    notes = data.get("notes", {})
    if notes in ([], None):
        return {}
    if not isinstance(notes, dict):
        raise RazorpayError("notes should be an object")
    if len(notes) > 15:
        raise RazorpayError("Number of fields in notes should be less than or equal to 15")
    for key, value in notes.items():
        if not isinstance(value, str | int) or len(str(value)) > 256:
            raise RazorpayError(f"notes.{key} should be a string of at most 256 characters")
    return {str(key): str(value) for key, value in notes.items()}


def _only(data: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise RazorpayError(f"{', '.join(extra)} is/are not required and should not be sent")


def _amount(data: Mapping[str, Any], currency: str) -> int:
    amount = data.get("amount")
    if amount is None:
        raise RazorpayError("The amount field is required.")
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise RazorpayError("The amount must be an integer.")
    minimum = _MINIMUMS.get(currency, 1)
    if amount < minimum:
        raise RazorpayError("Order amount less than minimum amount allowed")
    return amount


def _currency(data: Mapping[str, Any], default: str | None = None) -> str:
    currency = data.get("currency", default)
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        raise RazorpayError("The currency field is required and must be a valid currency code.")
    return currency


def _reference(data: Mapping[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise RazorpayError(f"The {field} may not be greater than 40 characters.")
    return value


class FakeRazorpay:
    """The fake's state and its Starlette app (``app``); one instance per test session."""

    def __init__(
        self,
        *,
        key_id: str,
        key_secret: str,
        webhook_secret: str,
        account_id: str = "acc_SettleFakeAcct1",
        hang_seconds: float = 60.0,
    ) -> None:
        self.key_id = key_id
        self.key_secret = key_secret
        self.webhook_secret = webhook_secret
        self.account_id = account_id
        self.hang_seconds = hang_seconds
        self.orders: dict[str, Entity] = {}
        self.payments: dict[str, Entity] = {}
        self.refunds: dict[str, Entity] = {}
        self.links: dict[str, Entity] = {}
        # Idempotency key → (the request it answered, the refund it made).
        self.refund_keys: dict[str, tuple[str, str]] = {}
        self.faults: list[str] = []
        self.refund_status = "processed"
        self._release: asyncio.Event | None = None
        api: list[tuple[str, str, Handler]] = [
            ("POST", "/v1/orders", self.create_order),
            ("GET", "/v1/orders", self.list_orders),
            ("GET", "/v1/orders/{id}", self.fetch_order),
            ("GET", "/v1/orders/{id}/payments", self.order_payments),
            ("POST", "/v1/payment_links", self.create_link),
            ("GET", "/v1/payment_links", self.list_links),
            ("GET", "/v1/payment_links/{id}", self.fetch_link),
            ("POST", "/v1/payment_links/{id}/cancel", self.cancel_link),
            ("GET", "/v1/payments/{id}", self.fetch_payment),
            ("POST", "/v1/payments/{id}/refund", self.create_refund),
            ("GET", "/v1/refunds/{id}", self.fetch_refund),
        ]
        controls: list[tuple[str, str, Handler]] = [
            ("GET", "/_fake/health", self.health),
            ("POST", "/_fake/orders/{id}/pay", self.pay_order),
            ("POST", "/_fake/orders/{id}/authorize", self.authorize_order),
            ("POST", "/_fake/orders/{id}/fail", self.fail_order),
            ("POST", "/_fake/payment_links/{id}/pay", self.pay_link),
            ("POST", "/_fake/refunds/{id}", self.settle_refund),
            ("POST", "/_fake/settings", self.configure),
            ("POST", "/_fake/faults", self.add_faults),
            ("POST", "/_fake/reset", self.reset),
        ]
        routes = [Route(path, self._api(handler), methods=[m]) for m, path, handler in api]
        routes += [
            Route(path, self._control(handler), methods=[m]) for m, path, handler in controls
        ]
        routes.append(Route("/i/{code}", self.hosted_page, methods=["GET"]))
        self.app = Starlette(routes=routes)

    # --- plumbing -------------------------------------------------------------------------

    def _api(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            if self.faults:
                fault = self.faults.pop(0)
                if fault == "hang":
                    await self._hang()
                return RazorpayError(
                    "The server encountered an error. The incident has been reported to admins.",
                    status=500,
                    code="SERVER_ERROR",
                ).response()
            try:
                self._authenticate(request)
                return await handler(request)
            except RazorpayError as exc:
                return exc.response()

        return endpoint

    def _control(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except RazorpayError as exc:
                return exc.response()

        return endpoint

    async def _hang(self) -> None:
        if self._release is None:
            self._release = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), self.hang_seconds)

    def _authenticate(self, request: Request) -> None:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            given = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            given = ""
        expected = f"{self.key_id}:{self.key_secret}"
        if scheme.lower() != "basic" or not hmac.compare_digest(given, expected):
            raise RazorpayError("Authentication failed", status=401)

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise RazorpayError("The request body must be valid JSON") from None
        if not isinstance(data, dict):
            raise RazorpayError("The request body must be a JSON object")
        return data

    @staticmethod
    def _get(table: Mapping[str, Entity], entity_id: str) -> Entity:
        if entity_id not in table:
            raise RazorpayError("The id provided does not exist")
        return table[entity_id]

    # --- orders ---------------------------------------------------------------------------

    async def create_order(self, request: Request) -> Response:
        data = await self._body(request)
        _only(
            data,
            {
                "amount",
                "currency",
                "receipt",
                "notes",
                "partial_payment",
                "first_payment_min_amount",
                "payment_capture",
            },
        )
        currency = _currency(data)
        order = self._new_order(
            amount=_amount(data, currency),
            currency=currency,
            receipt=_reference(data, "receipt"),
            notes=_notes_in(data),
        )
        return JSONResponse(order)

    def _new_order(
        self, *, amount: int, currency: str, receipt: str | None, notes: Mapping[str, str]
    ) -> Entity:
        order: Entity = {
            "id": new_id("order"),
            "entity": "order",
            "amount": amount,
            "amount_paid": 0,
            "amount_due": amount,
            "currency": currency,
            "receipt": receipt,
            "offer_id": None,
            "status": "created",
            "attempts": 0,
            "notes": _notes_out(notes),
            "created_at": int(time.time()),
        }
        self.orders[order["id"]] = order
        return order

    async def list_orders(self, request: Request) -> Response:
        receipt = request.query_params.get("receipt")
        items = [o for o in self.orders.values() if receipt is None or o["receipt"] == receipt]
        return JSONResponse(_collection(items))

    async def fetch_order(self, request: Request) -> Response:
        return JSONResponse(self._get(self.orders, request.path_params["id"]))

    async def order_payments(self, request: Request) -> Response:
        order = self._get(self.orders, request.path_params["id"])
        items = [p for p in self.payments.values() if p["order_id"] == order["id"]]
        return JSONResponse(_collection(items))

    # --- payment links --------------------------------------------------------------------

    async def create_link(self, request: Request) -> Response:
        data = await self._body(request)
        _only(
            data,
            {
                "amount",
                "currency",
                "accept_partial",
                "first_min_partial_amount",
                "expire_by",
                "reference_id",
                "description",
                "customer",
                "notify",
                "reminder_enable",
                "notes",
                "callback_url",
                "callback_method",
                "upi_link",
            },
        )
        currency = _currency(data, default="INR")
        amount = _amount(data, currency)
        reference_id = _reference(data, "reference_id")
        if reference_id is not None and any(
            link["reference_id"] == reference_id for link in self.links.values()
        ):
            raise RazorpayError(f"Payment Link with reference id {reference_id} already exists")
        if data.get("callback_url") and data.get("callback_method") != "get":
            raise RazorpayError("callback_method should be get when callback_url is sent")
        notify = data.get("notify") or {}
        now = int(time.time())
        link: Entity = {
            "id": new_id("plink"),
            "accept_partial": bool(data.get("accept_partial", False)),
            "amount": amount,
            "amount_paid": 0,
            "callback_method": data.get("callback_method", ""),
            "callback_url": data.get("callback_url", ""),
            "cancelled_at": 0,
            "created_at": now,
            "currency": currency,
            "customer": data.get("customer") or [],
            "description": data.get("description", ""),
            "expire_by": data.get("expire_by", 0),
            "expired_at": 0,
            "first_min_partial_amount": data.get("first_min_partial_amount", 0),
            "notes": _notes_out(_notes_in(data)),
            "notify": {"email": bool(notify.get("email")), "sms": bool(notify.get("sms"))},
            "order_id": "",
            "payments": None,
            "reference_id": reference_id or "",
            "reminder_enable": bool(data.get("reminder_enable", False)),
            "reminders": [],
            "status": "created",
            "updated_at": now,
            "upi_link": bool(data.get("upi_link", False)),
            "user_id": "",
        }
        link["short_url"] = f"{str(request.base_url).rstrip('/')}/i/{link['id'][6:14]}"
        self.links[link["id"]] = link
        return JSONResponse(link)

    async def list_links(self, request: Request) -> Response:
        reference_id = request.query_params.get("reference_id")
        payment_id = request.query_params.get("payment_id")
        items = [
            link
            for link in self.links.values()
            if (reference_id is None or link["reference_id"] == reference_id)
            and (
                payment_id is None
                or any(p["payment_id"] == payment_id for p in link["payments"] or [])
            )
        ]
        return JSONResponse({"payment_links": items})

    async def fetch_link(self, request: Request) -> Response:
        return JSONResponse(self._get(self.links, request.path_params["id"]))

    async def cancel_link(self, request: Request) -> Response:
        link = self._get(self.links, request.path_params["id"])
        if link["status"] != "created":
            raise RazorpayError(f"Payment link cannot be cancelled in {link['status']} state")
        link["status"] = "cancelled"
        link["cancelled_at"] = link["updated_at"] = int(time.time())
        return JSONResponse(link)

    async def hosted_page(self, request: Request) -> Response:
        code = request.path_params["code"]
        link = next((v for k, v in self.links.items() if k[6:14] == code), None)
        if link is None:
            return PlainTextResponse("Not found", status_code=404)
        return PlainTextResponse(f"Payment link {link['id']}: {link['amount']} {link['currency']}")

    # --- payments and refunds -------------------------------------------------------------

    async def fetch_payment(self, request: Request) -> Response:
        return JSONResponse(self._get(self.payments, request.path_params["id"]))

    async def create_refund(self, request: Request) -> Response:
        payment = self._get(self.payments, request.path_params["id"])
        raw = await request.body()
        data = await self._body(request)
        key = request.headers.get("x-refund-idempotency")
        if key is not None:
            if not _IDEMPOTENCY_KEY.fullmatch(key):
                raise RazorpayError("The idempotency key is invalid")
            fingerprint = f"{payment['id']}:{hashlib.sha256(raw).hexdigest()}"
            if key in self.refund_keys:
                seen, refund_id = self.refund_keys[key]
                if seen != fingerprint:
                    raise RazorpayError(
                        "Different request with the same idempotency key has already been "
                        "processed."
                    )
                return JSONResponse(self.refunds[refund_id])
        _only(data, {"amount", "speed", "notes", "receipt"})
        if payment["status"] == "refunded":
            raise RazorpayError("The payment has been fully refunded already")
        if payment["status"] != "captured":
            raise RazorpayError("Only payments which have been captured can be refunded")
        left = payment["amount"] - payment["amount_refunded"]
        amount = data.get("amount", left)
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
            raise RazorpayError("The amount must be at least 1.")
        if amount > left:
            raise RazorpayError("The refund amount provided is greater than amount captured")
        refund: Entity = {
            "id": new_id("rfnd"),
            "entity": "refund",
            "amount": amount,
            "currency": payment["currency"],
            "payment_id": payment["id"],
            "notes": _notes_out(_notes_in(data)),
            "receipt": _reference(data, "receipt"),
            "acquirer_data": {"arn": None},
            "created_at": int(time.time()),
            "batch_id": None,
            "status": self.refund_status,
            "speed_processed": "normal",
            "speed_requested": data.get("speed", "normal"),
        }
        self.refunds[refund["id"]] = refund
        self._refunded(payment, amount)
        if key is not None:
            self.refund_keys[key] = (fingerprint, refund["id"])
        return JSONResponse(refund)

    @staticmethod
    def _refunded(payment: Entity, amount: int) -> None:
        payment["amount_refunded"] += amount
        refunded = payment["amount_refunded"]
        full = refunded >= payment["amount"]
        payment["refund_status"] = None if refunded == 0 else "full" if full else "partial"
        payment["status"] = "refunded" if full else "captured"

    async def fetch_refund(self, request: Request) -> Response:
        return JSONResponse(self._get(self.refunds, request.path_params["id"]))

    # --- test controls --------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    def _attempt(self, order: Entity, status: str, data: Mapping[str, Any]) -> Entity:
        if order["status"] == "paid":
            raise RazorpayError("Order is already paid")
        captured = status == "captured"
        failed = status == "failed"
        fee = order["amount"] * 2 // 100 if captured else None
        payment: Entity = {
            "id": new_id("pay"),
            "entity": "payment",
            "amount": order["amount"],
            "currency": order["currency"],
            "status": status,
            "order_id": order["id"],
            "invoice_id": None,
            "international": False,
            "method": data.get("method", "upi"),
            "amount_refunded": 0,
            "refund_status": None,
            "captured": captured,
            "description": None,
            "card_id": None,
            "bank": None,
            "wallet": None,
            "vpa": "success@razorpay",
            "email": "void@razorpay.com",
            "contact": "+919000090000",
            "notes": _notes_out(_notes_in(data)),
            "fee": fee,
            "tax": fee * 18 // 118 if fee is not None else None,
            "error_code": "BAD_REQUEST_ERROR" if failed else None,
            "error_description": (
                data.get("error_description", "Payment failed") if failed else None
            ),
            "error_source": "customer" if failed else None,
            "error_step": "payment_authentication" if failed else None,
            "error_reason": "payment_failed" if failed else None,
            "acquirer_data": {"rrn": None},
            "created_at": int(time.time()),
        }
        self.payments[payment["id"]] = payment
        order["attempts"] += 1
        if captured:
            order["status"] = "paid"
            order["amount_paid"] = order["amount"]
            order["amount_due"] = 0
        else:
            order["status"] = "attempted"
        return payment

    def _paid(self, order: Entity, payment: Entity) -> JSONResponse:
        return JSONResponse(
            {
                "order_id": order["id"],
                "payment_id": payment["id"],
                "signature": checkout_signature(self.key_secret, order["id"], payment["id"]),
                "payment": payment,
                "order": order,
            }
        )

    async def pay_order(self, request: Request) -> Response:
        """The payer pays in Checkout: a captured payment (auto-capture, Razorpay's default)."""
        order = self._get(self.orders, request.path_params["id"])
        payment = self._attempt(order, "captured", await self._body(request))
        return self._paid(order, payment)

    async def authorize_order(self, request: Request) -> Response:
        order = self._get(self.orders, request.path_params["id"])
        payment = self._attempt(order, "authorized", await self._body(request))
        return self._paid(order, payment)

    async def fail_order(self, request: Request) -> Response:
        order = self._get(self.orders, request.path_params["id"])
        payment = self._attempt(order, "failed", await self._body(request))
        return JSONResponse({"order_id": order["id"], "payment_id": payment["id"]})

    async def pay_link(self, request: Request) -> Response:
        """The payer pays a link: its order is made then, and carries the link's notes."""
        link = self._get(self.links, request.path_params["id"])
        if link["status"] != "created":
            raise RazorpayError(f"Payment link cannot be paid in {link['status']} state")
        notes = link["notes"] or {}
        order = self._new_order(
            amount=link["amount"],
            currency=link["currency"],
            receipt=link["reference_id"] or None,
            notes=notes,
        )
        payment = self._attempt(order, "captured", {"notes": notes})
        link.update(
            status="paid",
            amount_paid=link["amount"],
            order_id=order["id"],
            updated_at=int(time.time()),
            payments=[
                {
                    "amount": payment["amount"],
                    "created_at": payment["created_at"],
                    "method": payment["method"],
                    "payment_id": payment["id"],
                    "status": "captured",
                }
            ],
        )
        return self._paid(order, payment)

    async def settle_refund(self, request: Request) -> Response:
        """Razorpay finishes a pending refund: ``{"status": "processed" | "failed"}``."""
        refund = self._get(self.refunds, request.path_params["id"])
        status = (await self._body(request)).get("status")
        if status not in ("processed", "failed") or refund["status"] != "pending":
            raise RazorpayError(f"Cannot move a {refund['status']} refund to {status}")
        refund["status"] = status
        if status == "failed":
            self._refunded(self.payments[refund["payment_id"]], -refund["amount"])
        return JSONResponse(refund)

    async def configure(self, request: Request) -> Response:
        """``{"refund_status": "pending" | "processed"}``: the status new refunds start in."""
        status = (await self._body(request)).get("refund_status")
        if status not in ("pending", "processed"):
            raise RazorpayError("refund_status is pending or processed")
        self.refund_status = status
        return JSONResponse({"refund_status": status})

    async def add_faults(self, request: Request) -> Response:
        """``{"mode": "error" | "hang", "count": n}``: the next n API requests fail so."""
        data = await self._body(request)
        mode, count = data.get("mode"), data.get("count", 1)
        if mode not in ("error", "hang") or not isinstance(count, int) or count < 1:
            raise RazorpayError("mode is error or hang; count is a positive integer")
        self.faults.extend([mode] * count)
        return JSONResponse({"faults": self.faults})

    async def reset(self, request: Request) -> Response:
        """Forget pending faults, let hung requests go, and settle new refunds at once again."""
        self.faults.clear()
        self.refund_status = "processed"
        if self._release is not None:
            self._release.set()
            self._release = None
        return JSONResponse({"ok": True})


def _collection(items: list[Entity]) -> dict[str, Any]:
    # Razorpay lists the newest first; created_at is in seconds, so ties go by creation.
    ranked = sorted(enumerate(items), key=lambda pair: (pair[1]["created_at"], pair[0]))
    newest_first = [item for _, item in reversed(ranked)]
    return {"entity": "collection", "count": len(newest_first), "items": newest_first}
