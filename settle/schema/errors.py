"""Typed errors: expected failures are part of the schema, never top-level errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import strawberry

from settle.core import errors as domain
from settle.services import invoice as invoice_service
from settle.services import payment as payment_service

if TYPE_CHECKING:
    from settle.schema.invoice import InvoiceStatus


@strawberry.interface(description="An expected failure. `code` is stable, upper snake case.")
class Error:
    code: str
    message: str


@strawberry.type
class ValidationError(Error):
    field: str | None


@strawberry.type
class NotFoundError(Error):
    pass


@strawberry.type
class PermissionDeniedError(Error):
    pass


@strawberry.type
class ConflictError(Error):
    pass


@strawberry.type
class AuthenticationError(Error):
    pass


@strawberry.type
class InvalidTransitionError(Error):
    current_state: str


@strawberry.type(
    description="Content locked for the caller: `code` is ADVANCE_UNPAID, BALANCE_UNPAID "
    "or ACCESS_EXPIRED."
)
class AccessLockedError(Error):
    pass


@strawberry.type(
    description="Only a draft invoice can change: `code` is INVOICE_NOT_EDITABLE and `status` "
    "the invoice's current status."
)
class InvoiceNotEditableError(Error):
    status: Annotated[InvoiceStatus, strawberry.lazy("settle.schema.invoice")]  # type: ignore[valid-type]


@strawberry.type(
    description="The payment gateway did not answer: nothing was charged, and the same call "
    "may be repeated. `code` is GATEWAY_UNAVAILABLE."
)
class GatewayUnavailableError(Error):
    pass


@strawberry.type(
    description="Too many attempts (or requests) from this address, for this email or by this "
    "user: nothing was done. `code` is RATE_LIMITED; try again after `retryAfter` seconds "
    "(also the response's Retry-After header, with HTTP status 429)."
)
class RateLimitedError(Error):
    retry_after: int


ERROR_TYPES: tuple[type, ...] = (
    ValidationError,
    NotFoundError,
    PermissionDeniedError,
    ConflictError,
    AuthenticationError,
    InvalidTransitionError,
    AccessLockedError,
    InvoiceNotEditableError,
    GatewayUnavailableError,
    RateLimitedError,
)


def to_error(exc: domain.AppError) -> Error:
    """The schema type for a domain error."""
    if isinstance(exc, domain.ValidationError):
        return ValidationError(code=exc.code, message=exc.message, field=exc.field)
    if isinstance(exc, domain.NotFoundError):
        return NotFoundError(code=exc.code, message=exc.message)
    if isinstance(exc, domain.PermissionDeniedError):
        return PermissionDeniedError(code=exc.code, message=exc.message)
    if isinstance(exc, domain.AuthenticationError):
        return AuthenticationError(code=exc.code, message=exc.message)
    if isinstance(exc, domain.InvalidTransitionError):
        return InvalidTransitionError(code=exc.code, message=exc.message, current_state=exc.current)
    if isinstance(exc, domain.AccessLockedError):
        return AccessLockedError(code=exc.code, message=exc.message)
    if isinstance(exc, invoice_service.InvoiceNotEditableError):
        return InvoiceNotEditableError(code=exc.code, message=exc.message, status=exc.status)
    if isinstance(exc, payment_service.GatewayUnavailableError):
        return GatewayUnavailableError(code=exc.code, message=exc.message)
    if isinstance(exc, domain.ConflictError):
        return ConflictError(code=exc.code, message=exc.message)
    raise TypeError(f"no schema error type for {type(exc).__name__}") from exc
