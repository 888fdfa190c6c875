"""An invoice's payment link: printed on its PDF and in its email, it opens a hosted checkout.

The link carries its own permission, like a file link: a signed token naming
the invoice, good for ``PAYMENT_LINK_DAYS``. Opening it starts (or resumes) the
payment of what the invoice still owes through the agency's gateway for its
currency, and sends the payer to that gateway's hosted page (the sandbox's,
Stripe Checkout, a Razorpay payment link).
"""

from __future__ import annotations

import uuid

from settle.core.settings import get_settings
from settle.core.signing import SignedTokenError, UrlSigner
from settle.models.invoice import Invoice
from settle.models.payment import Payment
from settle.services import invoice as invoice_service
from settle.services import payment as payment_service
from settle.services import settlement

PURPOSE = "invoice.pay"
PAYMENT_LINK_DAYS = 90


def _signer() -> UrlSigner:
    return UrlSigner(get_settings().signing_key(), PURPOSE)


def payment_url(invoice: Invoice) -> str | None:
    """The link to pay an issued invoice's balance; None when nothing is owed on it."""
    owed = settlement.invoice_due(invoice)
    if invoice.status not in invoice_service.OPEN_STATUSES or owed <= 0:
        return None
    token, _ = _signer().sign({"i": str(invoice.id)}, ttl_seconds=PAYMENT_LINK_DAYS * 86_400)
    return f"{get_settings().public_base_url.rstrip('/')}/pay/invoices/{token}"


def invoice_of(token: str) -> uuid.UUID:
    """The invoice a link is for; SignedTokenError when forged or expired."""
    try:
        return uuid.UUID(_signer().verify(token)["i"])
    except (KeyError, ValueError):
        raise SignedTokenError("Invalid signature") from None


async def prepare(invoice_id: uuid.UUID) -> tuple[Payment, bool]:
    """Start or resume the payment of the invoice's balance (the link's holder pays)."""
    return await payment_service.prepare_invoice_payment(None, invoice_id, None)


async def checkout(payment: Payment) -> Payment:
    """The payment's hosted checkout, asked for once."""
    invoice = await Invoice.get_or_none(id=payment.invoice_id) if payment.invoice_id else None
    description = invoice_service.label(invoice) if invoice else "Payment"
    return await payment_service.ensure_checkout(payment.id, description=description, hosted=True)
