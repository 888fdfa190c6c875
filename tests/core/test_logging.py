"""JSON logs on stderr: what the process's loggers write, and what they leave out."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from settle.core.logging import configure_logging
from settle.documents.invoice import render_invoice_pdf
from tests.documents.test_invoice import rupee_invoice


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Logging configured as a process does, its stderr handler writing here; undone after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    access = logging.getLogger("uvicorn.access")
    saved_filters, saved_access = access.filters[:], (access.level, access.propagate)
    # A uvicorn started in-process earlier (a test's fake gateway, say) may have turned
    # access lines down; a `settle serve` process starts with them on.
    access.setLevel(logging.NOTSET)
    font_tools = logging.getLogger("fontTools")
    saved_font_tools_level = font_tools.level
    configure_logging("INFO")
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    written = io.StringIO()
    handler.setStream(written)
    yield written
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    access.filters[:] = saved_filters
    access.setLevel(saved_access[0])
    access.propagate = saved_access[1]
    font_tools.setLevel(saved_font_tools_level)


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


def test_rendering_a_pdf_logs_nothing_from_font_subsetting(json_logs: io.StringIO) -> None:
    # given logging at INFO, as a server and a worker run
    # when an invoice PDF is rendered (fpdf2 subsets its font with fontTools)
    pdf = render_invoice_pdf(rupee_invoice())
    # then it is a PDF, and fontTools wrote no lines of its own
    assert pdf.startswith(b"%PDF-")
    assert [line for line in lines(json_logs) if line["logger"].startswith("fontTools")] == []
    # and its warnings still get through
    logging.getLogger("fontTools.subset").warning("glyph table is damaged")
    assert [(line["logger"], line["level"]) for line in lines(json_logs)] == [
        ("fontTools.subset", "warning")
    ]
