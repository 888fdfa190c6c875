"""JSON logs on stderr: what the process's loggers write, and what they leave out."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from settle.core.logging import configure_logging


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Logging configured as a process does, its stderr handler writing here; undone after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    access = logging.getLogger("uvicorn.access")
    saved_filters = access.filters[:]
    configure_logging("INFO")
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    written = io.StringIO()
    handler.setStream(written)
    yield written
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    access.filters[:] = saved_filters


def lines(written: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in written.getvalue().splitlines()]


def test_access_lines_leave_out_the_token_of_a_link(json_logs: io.StringIO) -> None:
    # when uvicorn logs requests for an invitation link and other paths (its own format)
    access = logging.getLogger("uvicorn.access")
    for path in (
        "/invitations/accept?token=Sx4pQ-secret_9",
        "/invitations/accept?from=email&token=Sx4pQ-secret_9&lang=en",
        "/graphql",
    ):
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:51000", "GET", path, "1.1", 200)
    # then the path is logged with the token redacted, and other paths as they were
    assert [line["message"] for line in lines(json_logs)] == [
        '127.0.0.1:51000 - "GET /invitations/accept?token=[redacted] HTTP/1.1" 200',
        '127.0.0.1:51000 - "GET /invitations/accept?from=email&token=[redacted]&lang=en '
        'HTTP/1.1" 200',
        '127.0.0.1:51000 - "GET /graphql HTTP/1.1" 200',
    ]
