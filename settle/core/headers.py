"""Security headers on every HTTP response: one pure ASGI middleware.

- ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``
  everywhere: a browser never guesses a type from content (a stored file is
  served as what it was declared), and no URL leaves in a Referer header.
- HTML gets a Content-Security-Policy that forbids framing
  (``frame-ancestors 'none'``) and, on Settle's own pages (the sandbox
  checkout, payment and invitation pages), everything but inline styles and
  forms posting to Settle; a page that sets its own policy keeps it. GraphiQL
  (development only) loads its scripts and styles from a CDN, so it gets only
  ``frame-ancestors``.
- ``Strict-Transport-Security`` when the deployment is HTTPS (``hsts_seconds``).
- ``Cache-Control: no-store`` on answers to requests that carry credentials:
  an ``Authorization`` header, or a signed token in the URL (file downloads and
  uploads, checkout, payment and invitation links).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from settle.core import signed_urls
from settle.core.settings import Settings


def page_policy(settings: Settings) -> str:
    """The Content-Security-Policy of Settle's own HTML pages."""
    forms = "'self'"
    base = urlsplit(settings.public_base_url)
    if base.scheme and base.netloc:
        # The sandbox page's buttons post to the public address, which a proxy may
        # serve under another origin than the one the page was opened at.
        forms += f" {base.scheme}://{base.netloc}"
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        f"form-action {forms}; frame-ancestors 'none'; base-uri 'none'"
    )


IDE_POLICY = "frame-ancestors 'none'"


class SecurityHeaders:
    def __init__(
        self, app: ASGIApp, *, settings: Settings, ide_paths: tuple[str, ...] = ("/graphql",)
    ) -> None:
        self.app = app
        self.ide_paths = ide_paths
        self.page_policy = page_policy(settings)
        seconds = settings.hsts_max_age
        self.hsts = f"max-age={seconds}; includeSubDomains" if seconds > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        private = any(name == b"authorization" for name, _ in scope["headers"])
        private = private or signed_urls.carries_token(path, scope.get("query_string", b""))
        policy = IDE_POLICY if path in self.ide_paths else self.page_policy

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", policy)
                    headers.setdefault("X-Frame-Options", "DENY")
                if self.hsts is not None:
                    headers.setdefault("Strict-Transport-Security", self.hsts)
                if private and "no-store" not in headers.get("cache-control", ""):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
