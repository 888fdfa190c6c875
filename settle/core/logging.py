"""JSON logs, one object per line, with the request id of the request being served."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from settle.core import signed_urls

request_id_var: ContextVar[str | None] = ContextVar("settle_request_id", default=None)

# Attributes every LogRecord has; anything else was passed through ``extra=``.
# uvicorn adds "color_message", a copy of the message with terminal colours.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(entry, default=str)


class RedactSignedUrls(logging.Filter):
    """Log lines keep a URL's path but not its signed token (see ``signed_urls``).

    A download, upload, checkout, payment or invitation link lets whoever holds it
    act on it; logs are read by more people, and kept longer, than the URL was
    meant to live. Set on the handler, so it covers every logger: uvicorn's access
    lines, and any library that logs the URLs it requests (httpx does, at INFO).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # The message as it will be written: arguments may be any objects (httpx
        # passes a URL object), so the formatted text is what gets redacted.
        message = record.getMessage()
        redacted = signed_urls.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSignedUrls())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dramatiq"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # fpdf2 subsets the invoice font with fontTools, which reports every table it
    # prunes at INFO: dozens of lines per PDF, most of what a worker would log.
    logging.getLogger("fontTools").setLevel(max(root.level, logging.WARNING))
