"""JSON logs on stderr: what the process's loggers write, and what they leave out."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
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


SIGNED_REQUESTS = [
    ("GET", "/files/download/SECRETa1.b2", "/files/download/[redacted]"),
    ("PUT", "/files/upload/SECRETc3.d4", "/files/upload/[redacted]"),
    ("GET", "/files/invoices/SECRETe5.f6", "/files/invoices/[redacted]"),
    ("GET", "/files/credit-notes/SECRETg7", "/files/credit-notes/[redacted]"),
    ("GET", "/sandbox/pay/SECRETh8.i9", "/sandbox/pay/[redacted]"),
    ("POST", "/sandbox/pay/SECRETj0.k1/succeed", "/sandbox/pay/[redacted]/succeed"),
    ("GET", "/pay/invoices/SECRETl2.m3", "/pay/invoices/[redacted]"),
    ("GET", "/invitations/accept?token=SECRETn4", "/invitations/accept?token=[redacted]"),
    ("GET", "/healthz?probe=1", "/healthz?probe=1"),
]


async def test_a_served_request_logs_no_signed_token(json_logs: io.StringIO, ws_url: str) -> None:
    # given the app served by uvicorn as `settle serve` serves it (log_config=None, our logging)
    base = ws_url.replace("ws://", "http://").removesuffix("/graphql")

    # when every kind of signed URL is requested
    async with httpx.AsyncClient(base_url=base) as http:
        for method, path, _ in SIGNED_REQUESTS:
            await http.request(method, path)

    # then uvicorn's access lines name each path with its token redacted
    access = [line["message"] for line in lines(json_logs) if line["logger"] == "uvicorn.access"]
    logged = [re.search(r'"[A-Z]+ (\S+) HTTP/1\.1"', message) for message in access]
    assert [match.group(1) for match in logged if match] == [
        expected for _, _, expected in SIGNED_REQUESTS
    ]
    # and no token is anywhere in the logs
    assert "SECRET" not in json_logs.getvalue()
