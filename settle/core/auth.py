"""Passwords (argon2) and signed, expiring access tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from settle.core.errors import AuthenticationError

_hasher = PasswordHasher()
# A real hash to verify against when the email is unknown, so a login for a
# missing account costs the same time as one with a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def use_password_hasher(hasher: PasswordHasher) -> None:
    """Swap the argon2 parameters (tests use cheap ones; production keeps the defaults)."""
    global _hasher, _DUMMY_HASH
    _hasher = hasher
    _DUMMY_HASH = hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; always spends the same work, even without a hash."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid access token says: whose it is, which session, and until when."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: datetime


class TokenSigner:
    """Issues and checks access tokens: ``{"uid": ..., "sid": ...}`` signed with the secret key."""

    SALT = "settle.access-token.v1"

    def __init__(self, secret_key: str, ttl_seconds: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt=self.SALT)
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: uuid.UUID, session_id: uuid.UUID) -> str:
        return self._serializer.dumps({"uid": str(user_id), "sid": str(session_id)})

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; AuthenticationError if it is malformed or expired."""
        try:
            data, signed_at = self._serializer.loads(
                token, max_age=self.ttl_seconds, return_timestamp=True
            )
            return TokenClaims(
                user_id=uuid.UUID(data["uid"]),
                session_id=uuid.UUID(data["sid"]),
                expires_at=signed_at + timedelta(seconds=self.ttl_seconds),
            )
        except SignatureExpired:
            raise AuthenticationError("Access token expired") from None
        except (BadSignature, KeyError, TypeError, ValueError):
            raise AuthenticationError("Invalid access token") from None


def new_opaque_token() -> tuple[str, str]:
    """A random token for a link (invitations) and the SHA-256 hash that is stored."""
    token = secrets.token_urlsafe(32)
    return token, hash_opaque_token(token)


def hash_opaque_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
