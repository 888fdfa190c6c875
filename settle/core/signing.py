"""Signed, expiring URL tokens: a link that carries its own permission.

A token is a small JSON payload and its expiry, signed with the secret key
under a purpose (``"deliverable.upload"``, ``"deliverable.download"``), so a
token made for one purpose is worthless for another. The expiry is checked
against ``settle.core.clock`` rather than inside the signature, so it can be
exact to the second and tests can move time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from settle.core import clock


@dataclass(frozen=True, slots=True)
class SignedUrl:
    """A URL carrying a signed token, and the instant it stops working."""

    url: str
    expires_at: datetime


class SignedTokenError(Exception):
    """A token that does not grant anything: forged, altered, or out of date."""

    reason = "INVALID_SIGNATURE"


class TokenExpiredError(SignedTokenError):
    reason = "URL_EXPIRED"


class UrlSigner:
    """Issues and checks the signed tokens of one purpose."""

    def __init__(self, secret_key: str, purpose: str) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt=f"settle.signed-url.{purpose}.v1")

    def sign(self, payload: dict[str, str], *, ttl_seconds: int) -> tuple[str, datetime]:
        """A token for ``payload`` and the instant it stops working (whole seconds)."""
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must not be negative")
        if "exp" in payload:
            raise ValueError("'exp' is reserved for the expiry")
        expires_at = clock.now().replace(microsecond=0) + timedelta(seconds=ttl_seconds)
        token = self._serializer.dumps({**payload, "exp": int(expires_at.timestamp())})
        return token, expires_at

    def verify(self, token: str) -> dict[str, str]:
        """The payload of a genuine token still in date; SignedTokenError otherwise."""
        try:
            data: Any = self._serializer.loads(token)
        except BadSignature:
            raise SignedTokenError("Invalid signature") from None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int):
            raise SignedTokenError("Invalid signature")
        expires_at = datetime.fromtimestamp(data.pop("exp"), UTC)
        if clock.now() >= expires_at:
            raise TokenExpiredError("This link has expired")
        if not all(isinstance(value, str) for value in data.values()):
            raise SignedTokenError("Invalid signature")
        return data
