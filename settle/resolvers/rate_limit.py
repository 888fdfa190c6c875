"""Attempts to log in, sign up and join: counted per address and per email before they run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from settle.core import rate_limit
from settle.schema.context import Info
from settle.schema.errors import RateLimitedError


async def over_limit(
    info: Info, action: str, email: str | Callable[[], Awaitable[str | None]]
) -> RateLimitedError | None:
    """Count an attempt at ``action``; the error to return if it is over a limit, else None.

    Over the limit, the field is a ``RateLimitedError`` and the HTTP response is 429
    with ``Retry-After``: a client that reads the union and one that only looks at the
    status both learn to wait. ``email`` may be a lookup (an invitation's address),
    made only once the address's own limit has let the attempt through.
    """
    scope = info.context.request.scope
    try:
        await rate_limit.limit_by_ip(scope, action)
        address = email if isinstance(email, str) else await email()
        if address:
            await rate_limit.limit_by_email(scope, action, address)
    except rate_limit.RateLimitedError as exc:
        response = info.context.response
        if response is not None:  # a websocket has no status to set
            response.status_code = 429
            response.headers["Retry-After"] = str(exc.retry_after)
        return RateLimitedError(code=exc.code, message=exc.message, retry_after=exc.retry_after)
    return None
