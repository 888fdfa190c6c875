"""Gateway webhooks (``POST /webhooks/<provider>``), invoice payment links and the sandbox page.

A webhook is verified over its raw body, stored once and answered 2xx at once;
a worker applies it (``settle.services.webhook``). A bad or missing signature
is 400 and changes nothing; a provider with no secret configured is 404.
"""

from __future__ import annotations

import html
import logging

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from settle.core.errors import AppError
from settle.core.money import Money, format_money
from settle.core.outbox import transaction
from settle.core.settings import get_settings
from settle.core.signing import SignedTokenError
from settle.gateways import GatewayNotConfiguredError, get_gateway
from settle.gateways.base import InvalidSignatureError
from settle.gateways.sandbox import SIGNATURE_HEADER, SandboxGateway
from settle.models.payment import Payment, PaymentProvider, PaymentStatus
from settle.services import payment_link
from settle.services import webhook as webhook_service
from settle.services.payment import AlreadyPaidError

log = logging.getLogger(__name__)

WEBHOOK_PROVIDERS = {
    "stripe": PaymentProvider.STRIPE,
    "razorpay": PaymentProvider.RAZORPAY,
    "sandbox": PaymentProvider.SANDBOX,
}


async def receive_webhook(request: Request) -> Response:
    provider = WEBHOOK_PROVIDERS.get(request.path_params["provider"])
    if provider is None:
        return JSONResponse({"code": "NOT_FOUND", "message": "Unknown provider"}, 404)
    body = await request.body()
    try:
        received = await webhook_service.receive(provider, body, request.headers)
    except GatewayNotConfiguredError as exc:
        return JSONResponse({"code": "NOT_FOUND", "message": str(exc)}, 404)
    except InvalidSignatureError as exc:
        log.warning("webhook.refused", extra={"provider": provider.value, "code": exc.code})
        return JSONResponse({"code": exc.code, "message": str(exc)}, 400)
    return JSONResponse(
        {"received": True, "id": str(received.event.id), "duplicate": not received.new}
    )


# --- the sandbox's hosted page -------------------------------------------------------------


def _sandbox() -> SandboxGateway | None:
    try:
        gateway = get_gateway(PaymentProvider.SANDBOX)
    except GatewayNotConfiguredError:
        return None
    assert isinstance(gateway, SandboxGateway)
    return gateway


async def _page_payment(gateway: SandboxGateway, token: str) -> Payment | None:
    try:
        payment_id = gateway.page_payment_id(token)
    except SignedTokenError:
        return None
    return await Payment.get_or_none(id=payment_id, provider=PaymentProvider.SANDBOX)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox checkout</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.6rem 1.4rem;margin-right:.6rem;cursor:pointer}}
.note{{color:#666;font-size:.9rem}}</style></head>
<body><h1>Sandbox checkout</h1>
<p>Amount: <strong>{amount}</strong></p><p>Status: <strong>{status}</strong></p>
{actions}
<p class="note">No money moves here: each button sends a signed webhook to Settle, as a real
gateway would.</p></body></html>"""

_ACTIONS = """<form method="post" action="{base}/sandbox/pay/{token}/succeed"
 style="display:inline"><button type="submit">Pay</button></form>
<form method="post" action="{base}/sandbox/pay/{token}/fail"
 style="display:inline"><button type="submit">Fail</button></form>"""


def _superseded_page() -> HTMLResponse:
    # 410: the checkout existed and is gone for good, as a closed gateway checkout is.
    return _message_page(
        "This checkout was replaced",
        "A newer payment of the same invoice took its place, so this one can take no money. "
        "Use the newest payment link or checkout.",
        410,
    )


async def sandbox_page(request: Request) -> Response:
    gateway = _sandbox()
    token: str = request.path_params["token"]
    payment = await _page_payment(gateway, token) if gateway else None
    if gateway is None or payment is None:
        return HTMLResponse("<h1>This checkout link is not valid</h1>", 404)
    if payment.status is PaymentStatus.SUPERSEDED:
        return _superseded_page()
    actions = ""
    if payment.status in (PaymentStatus.CREATED, PaymentStatus.PENDING):
        base = get_settings().public_base_url.rstrip("/")
        actions = _ACTIONS.format(base=html.escape(base), token=html.escape(token))
    return HTMLResponse(
        _PAGE.format(
            amount=html.escape(format_money(Money(payment.amount_minor, payment.currency))),
            status=html.escape(payment.status.value),
            actions=actions,
        ),
        headers={"Cache-Control": "no-store"},
    )


async def sandbox_press(request: Request) -> Response:
    """A button: deliver the signed webhook through the same pipeline as a gateway's."""
    gateway = _sandbox()
    token: str = request.path_params["token"]
    outcome: str = request.path_params["outcome"]
    payment = await _page_payment(gateway, token) if gateway else None
    if gateway is None or payment is None or outcome not in ("succeed", "fail"):
        return HTMLResponse("<h1>This checkout link is not valid</h1>", 404)
    if payment.status is PaymentStatus.SUPERSEDED:
        return _superseded_page()
    event_type = "payment.succeeded" if outcome == "succeed" else "payment.failed"
    body = gateway.event_body(
        event_type,
        # One event per payment and outcome: pressing twice delivers a duplicate.
        id=f"sbx_evt_{payment.id}_{outcome}",
        payment_id=str(payment.id),
        order_id=payment.provider_order_id,
        payment_ref=f"sbx_pay_{payment.id}" if outcome == "succeed" else None,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        failure_reason=None if outcome == "succeed" else "Declined in the sandbox",
    )
    await webhook_service.receive(
        PaymentProvider.SANDBOX, body, {SIGNATURE_HEADER: gateway.sign(body)}
    )
    message = "Payment sent" if outcome == "succeed" else "Payment declined"
    return HTMLResponse(
        f"<!doctype html><html><body style='font-family:system-ui;margin:4rem'>"
        f"<h1>{message}</h1><p>Settle is processing it; you can close this page.</p>"
        "</body></html>"
    )


# --- invoice payment links -------------------------------------------------------------------


def _message_page(title: str, text: str, status: int) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html><body style='font-family:system-ui;margin:4rem'>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>",
        status,
        headers={"Cache-Control": "no-store"},
    )


async def invoice_payment_link(request: Request) -> Response:
    """Start (or resume) the invoice's payment and send the payer to the hosted checkout."""
    try:
        invoice_id = payment_link.invoice_of(request.path_params["token"])
        async with transaction():
            payment, _ = await payment_link.prepare(invoice_id)
        async with transaction():
            payment = await payment_link.checkout(payment)
    except SignedTokenError:
        return _message_page("This payment link is not valid", "Ask for a new one.", 404)
    except AlreadyPaidError:
        return _message_page("This invoice is paid", "Thank you: nothing is owed on it.", 409)
    except AppError as exc:
        return _message_page("This invoice cannot be paid here", exc.message, 409)
    if payment.checkout_url is None:
        # A payment started in the agency's own app (card form, Checkout) is under way.
        return _message_page(
            "A payment of this invoice is under way",
            "Finish it where it was started, or try again once it has ended.",
            409,
        )
    return RedirectResponse(payment.checkout_url, status_code=303)


def webhook_routes() -> list[Route]:
    return [
        Route("/webhooks/{provider}", receive_webhook, methods=["POST"]),
        Route("/pay/invoices/{token}", invoice_payment_link, methods=["GET"]),
        Route("/sandbox/pay/{token}", sandbox_page, methods=["GET"]),
        Route("/sandbox/pay/{token}/{outcome}", sandbox_press, methods=["POST"]),
    ]
