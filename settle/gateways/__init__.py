"""Payment gateways: one protocol (``base.PaymentGateway``), one module per provider.

``get_gateway`` builds the gateway of a provider from the settings; a provider
whose credentials are not configured is ``GatewayNotConfiguredError``, which the
webhook endpoint answers with 404 and the API with a typed error.
"""

from __future__ import annotations

from settle.core.settings import Settings, get_settings
from settle.gateways.base import PaymentGateway
from settle.models.payment import PaymentProvider


class GatewayNotConfiguredError(LookupError):
    def __init__(self, provider: PaymentProvider) -> None:
        super().__init__(f"The {provider.value} gateway is not configured")
        self.provider = provider


def get_gateway(provider: PaymentProvider, settings: Settings | None = None) -> PaymentGateway:
    """The gateway of ``provider`` for these settings (the process's by default)."""
    settings = settings or get_settings()
    if provider is PaymentProvider.STRIPE:
        from settle.gateways.stripe import StripeGateway

        if settings.stripe_secret_key is None or settings.stripe_webhook_secret is None:
            raise GatewayNotConfiguredError(provider)
        return StripeGateway(settings)
    if provider is PaymentProvider.RAZORPAY:
        from settle.gateways.razorpay import RazorpayGateway

        if (
            settings.razorpay_key_id is None
            or settings.razorpay_key_secret is None
            or settings.razorpay_webhook_secret is None
        ):
            raise GatewayNotConfiguredError(provider)
        return RazorpayGateway(settings)
    if provider is PaymentProvider.SANDBOX:
        from settle.gateways.sandbox import SandboxGateway

        if not settings.sandbox_payments_enabled:
            raise GatewayNotConfiguredError(provider)
        return SandboxGateway(settings)
    raise GatewayNotConfiguredError(provider)
