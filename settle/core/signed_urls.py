"""The URL shapes that carry a signed token, where the token is the whole permission.

Whoever holds one of these URLs can do what it allows (download a file, upload
to a deliverable, pay or fail a sandbox checkout, start an invoice's payment,
join an agency), so it must not outlive its purpose: access logs write it
redacted, and answers to it are never cached.

- ``/files/<kind>/<token>``: downloads and uploads of deliverables and invoices,
  invoice previews, credit notes, CSV exports;
- ``/sandbox/pay/<token>`` (and its ``/succeed``, ``/fail`` buttons);
- ``/pay/invoices/<token>``: an invoice's payment link;
- ``?token=`` (or ``&token=``) in a query string: the invitation page.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

_PATH_TOKEN = re.compile(r"(/files/[^/?#\s\"]+/|/sandbox/pay/|/pay/invoices/)[^/?#\s\"]+")
_QUERY_TOKEN = re.compile(r"([?&]token=)[^&#\s\"]*")
_TOKEN_PATH = re.compile(r"^(/files/[^/]+|/sandbox/pay|/pay/invoices)/[^/]+")


def redact(text: str) -> str:
    """``text`` with the token of every signed URL in it replaced by ``[redacted]``."""
    text = _PATH_TOKEN.sub(rf"\1{REDACTED}", text)
    return _QUERY_TOKEN.sub(rf"\1{REDACTED}", text)


def carries_token(path: str, query_string: bytes = b"") -> bool:
    """True when a request's path or query string holds a signed token."""
    if _TOKEN_PATH.match(path):
        return True
    query = b"&" + query_string
    return b"&token=" in query
