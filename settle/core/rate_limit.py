"""Rate limits: attempts to log in, sign up and join, requests per user, sockets per IP.

Counted by the `limits` library with its moving-window strategy, in Redis when
``SETTLE_REDIS_URL`` is set (so every replica shares the counts) and in memory
otherwise. Each limit is a setting in the library's notation
(``"10/minute;100/hour"``: every part must hold). A refused attempt is not
counted, so ``Retry-After`` is when the oldest counted attempt leaves the window.

The client's address is the ASGI peer; ``X-Forwarded-For`` is believed only
when the peer is one of ``SETTLE_TRUSTED_PROXIES``, and then only as far back as
the hops are trusted proxies too (the right-most address no trusted proxy
vouches for is the client). IPv6 clients are counted per /64, the block one
subscriber gets, so rotating addresses inside it does not reset the count.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Receive, Scope, Send

from settle.core.errors import AppError
from settle.core.settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "settle-rate"

# What each limit counts, and the setting that says how many.
RULES: dict[str, str] = {
    "login.ip": "rate_limit_login_per_ip",
    "login.email": "rate_limit_login_per_email",
    "sign_up.ip": "rate_limit_sign_up_per_ip",
    "sign_up.email": "rate_limit_sign_up_per_email",
    "accept_invitation.ip": "rate_limit_accept_invitation_per_ip",
    "accept_invitation.email": "rate_limit_accept_invitation_per_email",
    "user": "rate_limit_authenticated",
    "websocket.ip": "rate_limit_websocket_per_ip",
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimitedError(AppError):
    """Too many attempts or requests: refused until ``retry_after`` seconds have passed."""

    code = "RATE_LIMITED"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many attempts; try again in {retry_after} seconds")
        self.retry_after = retry_after


_storages: dict[str, Storage] = {}


def storage_for(settings: Settings) -> Storage:
    """The process's storage for these settings: Redis when configured, else memory."""
    if settings.redis_url:
        uri = "async+" + settings.redis_url
        options: dict[str, Any] = {"implementation": "redispy", "key_prefix": KEY_PREFIX}
    else:
        uri, options = "async+memory://", {}
    if uri not in _storages:
        storage = storage_from_string(uri, wrap_exceptions=True, **options)
        assert isinstance(storage, Storage)
        _storages[uri] = storage
    return _storages[uri]


async def reset_counts(settings: Settings) -> None:
    """Forget every count (tests, between cases)."""
    await storage_for(settings).reset()


class RateLimiter:
    """The limits of one app, counted in the process's storage."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limits_enabled
        self._limiter = MovingWindowRateLimiter(storage_for(settings))
        self._rules: dict[str, list[RateLimitItem]] = {
            rule: parse_many(getattr(settings, setting)) for rule, setting in RULES.items()
        }
        self._trusted = parse_networks(settings.trusted_proxies)
        self._secret = settings.signing_key().encode()

    async def hit(self, rule: str, key: str) -> None:
        """Count one attempt at ``rule`` by ``key``; RateLimitedError if it is one too many."""
        if not self.enabled:
            return
        try:
            for item in self._rules[rule]:
                if not await self._limiter.hit(item, rule, key):
                    stats = await self._limiter.get_window_stats(item, rule, key)
                    raise RateLimitedError(max(1, math.ceil(stats.reset_time - time.time())))
        except StorageError as exc:
            # Redis being away must not lock everyone out: the attempt goes ahead unlimited.
            log.error("rate_limit.storage_error", extra={"rule": rule, "error": str(exc)})

    def client_ip(self, scope: Scope) -> str:
        return client_ip(scope, self._trusted)

    def email_key(self, email: str) -> str:
        """The key an address is counted under: a keyed hash, so no address sits in Redis."""
        digest = hmac.new(self._secret, normalize_email(email).encode(), hashlib.sha256)
        return digest.hexdigest()[:32]


def parse_networks(values: Iterable[str]) -> tuple[Network, ...] | None:
    """The trusted proxies as networks; None for ``*`` (every peer is trusted)."""
    networks: list[Network] = []
    for value in values:
        if value.strip() == "*":
            return None
        networks.append(ipaddress.ip_network(value.strip(), strict=False))
    return tuple(networks)


def _trusted(address: str, trusted: Sequence[Network] | None) -> bool:
    if trusted is None:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_ip(scope: Scope, trusted: Sequence[Network] | None) -> str:
    """The client's address: the peer, or what trusted proxies say in X-Forwarded-For."""
    client = scope.get("client")
    peer = client[0] if client else ""
    if not peer or not _trusted(peer, trusted):
        return peer
    hops = [
        hop.strip()
        for name, value in scope.get("headers") or ()
        if name == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def rate_key(address: str) -> str:
    """The key an address is counted under: itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def normalize_email(email: str) -> str:
    return (email or "").strip().lower()


def limiter_of(scope: Scope) -> RateLimiter:
    """The limiter the RateLimits middleware put on this request or socket."""
    limiter: RateLimiter = scope["state"]["rate_limiter"]
    return limiter


async def limit_by_ip(scope: Scope, action: str) -> None:
    """Count an attempt at ``action`` (login, sign_up, accept_invitation) from this client."""
    limiter = limiter_of(scope)
    await limiter.hit(f"{action}.ip", rate_key(limiter.client_ip(scope)))


async def limit_by_email(scope: Scope, action: str, email: str) -> None:
    """Count an attempt at ``action`` for this email address, wherever it comes from."""
    limiter = limiter_of(scope)
    await limiter.hit(f"{action}.email", limiter.email_key(email))


def refused_body(exc: RateLimitedError) -> bytes:
    """The body of a request refused as a whole: one top-level error, as GraphQL has it."""
    return json.dumps(
        {
            "data": None,
            "errors": [
                {
                    "message": exc.message,
                    "extensions": {"code": exc.code, "retryAfter": exc.retry_after},
                }
            ],
        }
    ).encode()


def _refused_headers(exc: RateLimitedError, body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(exc.retry_after).encode()),
    ]


async def admit_user(scope: Scope, send: Send, user_id: object) -> bool:
    """Count an authenticated request; False after answering 429 when the user is over."""
    try:
        await limiter_of(scope).hit("user", str(user_id))
    except RateLimitedError as exc:
        body = refused_body(exc)
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": _refused_headers(exc, body),
            }
        )
        await send({"type": "http.response.body", "body": body})
        return False
    return True


class RateLimits:
    """Pure ASGI middleware: puts the limiter on every request, limits sockets per IP."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limiter = RateLimiter(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["rate_limiter"] = self.limiter
        if scope["type"] == "websocket":
            try:
                await self.limiter.hit("websocket.ip", rate_key(self.limiter.client_ip(scope)))
            except RateLimitedError as exc:
                await _deny_socket(scope, receive, send, exc)
                return
        await self.app(scope, receive, send)


async def _deny_socket(scope: Scope, receive: Receive, send: Send, exc: RateLimitedError) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        # The handshake is answered with a plain HTTP 429, Retry-After and all.
        body = refused_body(exc)
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 429,
                "headers": _refused_headers(exc, body),
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    # A server without that extension turns a close before accept into a 403.
    await send({"type": "websocket.close", "code": 1008, "reason": "RATE_LIMITED"})
