"""Client-side confirmations: the payer's browser reports a payment the gateway signed.

Razorpay Checkout hands the browser ``razorpay_order_id``, ``razorpay_payment_id``
and a signature over them. Settle checks that signature against the order id
it stored for the payment (never the one sent, which a forger would choose),
then applies the success through the same path as a webhook: stored once as an
event of its own, applied under the payment's row lock, so a confirmation
racing the ``payment.captured`` webhook credits the payment once.
"""

from __future__ import annotations

from settle.core import validation
from settle.core.errors import NotFoundError, ValidationError
from settle.core.tenancy import Actor, scoped
from settle.gateways.base import EventKind, GatewayEvent
from settle.models.payment import Payment, PaymentProvider
from settle.services import payment as payment_service
from settle.services import webhook as webhook_service


async def verify_razorpay_payment(
    actor: Actor, order_id: str | None, payment_id: str | None, signature: str | None
) -> Payment:
    """Check a Razorpay Checkout confirmation and apply it; ValidationError if it is forged."""
    order = validation.required_text("orderId", order_id, max_length=255)
    paid = validation.required_text("paymentId", payment_id, max_length=255)
    signed = validation.required_text("signature", signature, max_length=255)
    payment = await scoped(Payment, actor).get_or_none(
        provider=PaymentProvider.RAZORPAY, provider_order_id=order
    )
    if payment is None or payment.provider_order_id is None:
        raise NotFoundError("Payment", order)
    from settle.gateways.razorpay import RazorpayGateway

    gateway = payment_service.gateway_for(PaymentProvider.RAZORPAY)
    assert isinstance(gateway, RazorpayGateway)
    if not gateway.verify_checkout_signature(
        order_id=payment.provider_order_id, payment_id=paid, signature=signed
    ):
        raise ValidationError(
            "signature", "The signature does not match this payment", code="INVALID_SIGNATURE"
        )
    received = await webhook_service.store(
        GatewayEvent(
            provider=PaymentProvider.RAZORPAY,
            event_id=f"checkout:{paid}",
            event_type="checkout.verified",
            kind=EventKind.PAYMENT_SUCCEEDED,
            payload={"razorpay_order_id": order, "razorpay_payment_id": paid},
            provider_order_id=payment.provider_order_id,
            provider_payment_id=paid,
            payment_id=str(payment.id),
        )
    )
    # Applied now, in the caller's request, so the payer's page can say "paid" at once;
    # the job the store sent finds it processed and does nothing.
    await webhook_service.process(received.event.id)
    return await Payment.get(id=payment.id)
