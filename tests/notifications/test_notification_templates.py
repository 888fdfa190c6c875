"""Every notification kind renders from plain data, links to real routes, and reads as recorded.

The expected text of each kind is a snapshot under tests/notifications/snapshots/.
After changing a template on purpose, write them again with
``SETTLE_UPDATE_SNAPSHOTS=1 make test PYTEST_ARGS=tests/notifications`` and read the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.routing import Match

from settle.app import create_app
from settle.core.settings import Settings
from settle.models.notification import NotificationKind
from settle.notifications.templates import render_notification

SNAPSHOTS = Path(__file__).parent / "snapshots"
BASE = "http://settle.test"
URL = re.compile(r"https?://[^\s\"<>)]+")


def inr(minor: int) -> dict[str, Any]:
    return {"minor": minor, "currency": "INR"}


def usd(minor: int) -> dict[str, Any]:
    return {"minor": minor, "currency": "USD"}


# One context with every field any template reads; StrictUndefined fails a render
# that reads something else.
SAMPLE: dict[str, Any] = {
    "agency_name": "Northwind Studio",
    "recipient_name": "Priya Shah",
    "base_url": BASE,
    "unsubscribe_url": f"{BASE}/notifications/unsubscribe?token=SAMPLE.TOKEN",
    "amount": inr(10_000_000),
    "payment_amount": inr(11_800_000),
    "total": inr(11_800_000),
    "amount_due": inr(11_800_000),
    "client_name": "Acme Corp",
    "project_name": "Website redesign",
    "provider": "razorpay",
    "reference": "pay_SAMPLE123",
    "reason": "Card declined",
    "milestones": [
        {"title": "Advance", "kind": "advance", "amount": inr(4_000_000)},
        {"title": "Design", "kind": "standard", "amount": inr(6_000_000)},
    ],
    "invoice_numbers": ["INV-2026-0007"],
    "attach_invoice_ids": ["00000000-0000-0000-0000-000000000007"],
    "invoice_number": "INV-2026-0007",
    "pay_url": f"{BASE}/pay/invoices/SAMPLE.TOKEN",
    "paid_on": "2026-12-03",
    "due_date": "2027-01-02",
    "requested_on": "2026-11-30",
    "days_overdue": 7,
    "deliverable_title": "Final artwork",
    "expires_on": "2026-12-10",
    "expired_on": "2026-12-03",
    "milestone_title": "Design",
    "approved_by": "Carl Client",
    "rejected_by": "Carl Client",
    "day": "2026-12-03",
    "revenue": [inr(10_000_000), usd(1_250_00)],
    "payments": [{"client_name": "Acme Corp", "amount": inr(10_000_000)}],
    "overdue_invoices": [
        {"number": "INV-2026-0003", "amount_due": usd(99_999_99), "due_date": "2026-11-01"}
    ],
    "overdue_milestones": [{"title": "Design", "amount": inr(6_000_000), "due_date": "2026-11-20"}],
    "failed_payments": [{"client_name": "Globex", "amount": usd(500_00)}],
    "expiring": [{"title": "Final artwork", "expires_on": "2026-12-10"}],
    "flagged": ["Payment pay_X: the gateway reported another amount"],
    "held": ["Milestone Design was approved by Carl Client."],
}


def rendered_text(kind: NotificationKind) -> str:
    rendered = render_notification(kind.value, **SAMPLE)
    return (
        f"== subject ==\n{rendered.subject}\n== body.txt ==\n{rendered.text}"
        f"== body.html ==\n{rendered.html}== telegram.txt ==\n{rendered.telegram}"
    )


@pytest.mark.parametrize("kind", list(NotificationKind), ids=lambda kind: kind.value)
def test_every_kind_renders_as_its_snapshot(kind: NotificationKind) -> None:
    # given the sample data of every kind
    # when the kind's four templates render it
    text = rendered_text(kind)
    # then the text is exactly the recorded one
    path = SNAPSHOTS / f"{kind.value}.txt"
    if os.environ.get("SETTLE_UPDATE_SNAPSHOTS"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no snapshot for {kind.value}: run with SETTLE_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", list(NotificationKind), ids=lambda kind: kind.value)
def test_every_link_resolves_to_a_route_of_the_app(kind: NotificationKind) -> None:
    # given the app's routes
    app = create_app(Settings(public_base_url=BASE), manage_runtime=False)
    # when a kind renders
    links = set(URL.findall(rendered_text(kind)))
    # then each link is on the public base URL and some route answers its path
    for link in links:
        assert link.startswith(f"{BASE}/"), link
        path = urlsplit(link).path
        scope = {"type": "http", "path": path, "method": "GET"}
        assert any(route.matches(scope)[0] is Match.FULL for route in app.routes), link


def test_money_reads_in_each_currency_format() -> None:
    # given an INR and a USD amount
    # when payment received renders them
    indian = render_notification("payment_received", **{**SAMPLE, "amount": inr(10_000_000)})
    dollars = render_notification("payment_received", **{**SAMPLE, "amount": usd(10_000_000)})
    # then each is grouped as its readers expect
    assert indian.subject == "Payment received from Acme Corp: ₹1,00,000.00"
    assert dollars.subject == "Payment received from Acme Corp: $100,000.00"
