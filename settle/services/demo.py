"""Demo data for the embedded run: one agency with clients, projects, milestones, files,
invoices in every status and a credit note."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from settle.core import clock
from settle.core.outbox import transaction
from settle.core.settings import Settings
from settle.core.tenancy import Actor
from settle.gateways.base import EventKind, GatewayEvent
from settle.models.agency import User
from settle.models.client import Client
from settle.models.invoice import DiscountKind
from settle.models.milestone import MilestoneKind
from settle.models.payment import OfflineMethod, Payment, PaymentProvider, WebhookEvent
from settle.models.project import TaskStatus
from settle.services import agency as agency_service
from settle.services import auth as auth_service
from settle.services import client as client_service
from settle.services import credit_note as credit_note_service
from settle.services import deliverable as deliverable_service
from settle.services import invoice as invoice_service
from settle.services import milestone as milestone_service
from settle.services import payment as payment_service
from settle.services import project as project_service
from settle.services import task as task_service
from settle.services import time_entry as time_entry_service
from settle.services import webhook as webhook_service

DEMO_EMAIL = "demo@settle.test"
DEMO_PASSWORD = "settle-demo"
DEMO_AGENCY = "Northwind Studio"


@dataclass(frozen=True)
class DemoClient:
    client: dict[str, str]
    contacts: list[dict[str, str]]
    notes: list[tuple[str, bool]] = field(default_factory=list)


_CLIENTS = [
    DemoClient(
        client={
            "name": "Acme Robotics",
            "email": "accounts@acme-robotics.example",
            "phone": "+1 415 555 0100",
            "address": "500 Market Street, San Francisco, CA 94105, USA",
            "tax_id": "US-94-1234567",
            "currency": "USD",
        },
        contacts=[
            {"name": "Dana Whitfield", "email": "dana@acme-robotics.example", "title": "CTO"},
            {"name": "Luis Ortega", "email": "luis@acme-robotics.example", "title": "Finance"},
        ],
        notes=[
            ("Prefers invoices on the 1st of the month; net 30.", True),
            ("Kick-off call went well; wants a beta in six weeks.", False),
        ],
    ),
    DemoClient(
        client={
            "name": "Chai Point Foods",
            "email": "finance@chaipoint.example",
            "phone": "+91 80 5555 0199",
            "address": "12 MG Road, Bengaluru 560001, India",
            "tax_id": "29ABCDE1234F1Z5",
            "currency": "INR",
        },
        contacts=[
            {"name": "Priya Raman", "email": "priya@chaipoint.example", "title": "Founder"},
            {"name": "Arjun Mehta", "email": "arjun@chaipoint.example", "title": "Ops lead"},
        ],
        notes=[
            ("GST invoices required; pays by Razorpay.", True),
            ("Asked for a Hindi version of the ordering app.", False),
        ],
    ),
    DemoClient(
        client={
            "name": "Blue Fjord Media",
            "email": "hello@bluefjord.example",
            "phone": "+44 20 5555 0142",
            "address": "1 Shoreditch High Street, London E1 6JE, UK",
            "currency": "GBP",
        },
        contacts=[
            {"name": "Freya Lund", "email": "freya@bluefjord.example", "title": "Producer"},
        ],
        notes=[("Retainer renewal due in March.", False)],
    ),
]


async def load_demo(settings: Settings) -> bool:
    """Create the demo agency once; returns False when it already exists."""
    if await User.filter(email=DEMO_EMAIL).exists():
        return False
    async with transaction():
        result = await auth_service.sign_up(
            settings,
            agency_name=DEMO_AGENCY,
            name="Demo Owner",
            email=DEMO_EMAIL,
            password=DEMO_PASSWORD,
        )
        actor = Actor.from_user(result.user)
        await agency_service.update_agency(
            actor,
            {
                "address": "4 Canal Street, Amsterdam 1017 AB, Netherlands",
                "email": "billing@northwind.example",
                "tax_id": "NL123456789B01",
                "invoice_due_days": 30,
            },
        )
        clients = {}
        for spec in _CLIENTS:
            client = await client_service.create_client(actor, dict(spec.client))
            clients[client.name] = client
            for contact in spec.contacts:
                await client_service.create_contact(actor, client.id, dict(contact))
            for body, pinned in spec.notes:
                await client_service.add_note(actor, client.id, body, pinned=pinned)
        await _load_dashboard_project(actor, clients["Acme Robotics"].id)
        ordering_app = await _load_ordering_app_project(actor, clients["Chai Point Foods"].id)
        # History first: the invoices of _load_invoices stay the newest of their statuses.
        await _load_history(actor, clients)
        await _load_invoices(actor, clients, ordering_app)
    return True


async def _load_dashboard_project(actor: Actor, client_id: uuid.UUID) -> None:
    """A USD project with a 40% advance, paid, and a beta and a final file."""
    project = await project_service.create_project(
        actor,
        client_id,
        {
            "name": "Warehouse robot dashboard",
            "description": "Live fleet status and alerts for the warehouse floor.",
            "budget": "24000.00",
            "hourly_rate": "120.00",
            "advance_percent": 40,
            "invoice_due_days": 15,
        },
    )
    tasks = []
    for title, status in [
        ("Fleet map view", TaskStatus.COMPLETED),
        ("Battery alerts", TaskStatus.IN_PROGRESS),
        ("Shift report export", TaskStatus.TODO),
        ("Accessibility pass", TaskStatus.TODO),
    ]:
        tasks.append(
            await task_service.create_task(actor, project.id, {"title": title, "status": status})
        )
    today = clock.now().date()
    for days_ago, task, hours, description in [
        (6, tasks[0], "6.5", "Map tiles and robot markers"),
        (5, tasks[0], "4", "Live positions over websocket"),
        (2, tasks[1], "3.25", "Alert thresholds"),
    ]:
        await time_entry_service.log_time(
            actor,
            project.id,
            {
                "task_id": task.id,
                "hours": hours,
                "description": description,
                "work_date": today - timedelta(days=days_ago),
            },
        )
    terms = await milestone_service.apply_payment_terms(actor, project.id, "20000.00")
    (advance,) = [m for m in terms.milestones if m.kind is MilestoneKind.ADVANCE]
    await milestone_service.start_milestone(actor, advance.id)
    await milestone_service.submit_milestone(actor, advance.id)
    await milestone_service.approve_milestone(actor, advance.id)
    await milestone_service.mark_milestone_paid(actor, advance.id, "Wire ACME-2026-0412")
    for title, kind, filename, body in [
        ("Dashboard beta build", "beta", "dashboard-beta-notes.txt", _BETA_NOTES),
        ("Dashboard handover pack", "final", "dashboard-handover.txt", _HANDOVER),
    ]:
        data = body.encode()
        upload = await deliverable_service.create_upload(
            actor,
            project.id,
            {
                "title": title,
                "kind": kind,
                "filename": filename,
                "content_type": "text/plain",
                "size_bytes": len(data),
            },
        )
        pending = deliverable_service.PendingUpload(upload.deliverable, actor)
        stored = await deliverable_service.store_upload(pending, _chunks(data))
        await deliverable_service.complete_upload(pending, stored)


async def _load_ordering_app_project(actor: Actor, client_id: uuid.UUID) -> uuid.UUID:
    """An INR project paid by custom milestones, one of them waiting for approval."""
    project = await project_service.create_project(
        actor,
        client_id,
        {
            "name": "Ordering app in Hindi",
            "budget": "600000.00",
            "hourly_rate": "2500.00",
            "advance_percent": 50,
        },
    )
    task = await task_service.create_task(
        actor, project.id, {"title": "Translate the menu flow", "status": TaskStatus.IN_PROGRESS}
    )
    await time_entry_service.log_time(
        actor, project.id, {"task_id": task.id, "hours": "2.5", "description": "Glossary"}
    )
    for title, amount in [("Design", "150000.00"), ("Build", "350000.00")]:
        milestone = await milestone_service.create_milestone(
            actor, project.id, {"title": title, "amount": amount}
        )
        if title == "Design":
            await milestone_service.start_milestone(actor, milestone.id)
            await milestone_service.submit_milestone(actor, milestone.id)
    return project.id


@contextmanager
def _days_ago(days: int) -> Iterator[None]:
    """Write what happens inside as if it were ``days`` ago (history the demo starts with)."""
    then = clock.now() - timedelta(days=days)
    start = clock.now()
    # The demo runs as its own command before any server, so moving its clock moves no one else's.
    clock.set_clock(lambda: then + (datetime.now(then.tzinfo) - start))
    try:
        yield
    finally:
        clock.set_clock(None)


def _line(description: str, quantity: str, unit_price: str, **extra: str) -> dict[str, str]:
    return {"description": description, "quantity": quantity, "unit_price": unit_price, **extra}


async def _load_invoices(
    actor: Actor, clients: dict[str, Client], ordering_app_id: uuid.UUID
) -> None:
    """One invoice in each status: overdue, void, paid, partially paid, viewed, sent, draft.

    The partly paid one also has a credit note forgiving half an hour billed twice.
    """
    acme, chai, fjord = (
        clients["Acme Robotics"],
        clients["Chai Point Foods"],
        clients["Blue Fjord Media"],
    )

    async def issue(client: Client, lines: list[dict[str, str]], **values: object) -> uuid.UUID:
        invoice = await invoice_service.create_invoice(actor, client.id, None, values, lines)
        await invoice_service.finalize_invoice(actor, invoice.id)
        return invoice.id

    with _days_ago(45):
        await issue(
            fjord,
            [_line("Brand film edit, September", "1", "4800.00")],
            notes="Thank you for your business.",
        )
    await invoice_service.mark_overdue()
    with _days_ago(20):
        void = await issue(acme, [_line("Discovery workshop", "1", "3000.00")])
        await invoice_service.void_invoice(actor, void, "Issued to the wrong entity; reissued")
    paid = await issue(
        chai,
        [
            _line("Menu photography", "1", "45000.00"),
            _line("Retouching", "12", "1250.00", tax_rate="12"),
        ],
        tax_rate="18",
        terms="GST 18% on services; 12% on retouching.",
    )
    await payment_service.record_offline_payment(
        actor,
        paid,
        amount="69900.00",
        method=OfflineMethod.BANK_TRANSFER,
        reference="NEFT UTIB0000123 / 88231",
        explorer_url=None,
    )
    partly = await issue(
        acme,
        [
            _line("Support retainer, November", "1", "2500.00"),
            _line("On-call hours", "6.5", "120.00"),
        ],
    )
    await payment_service.record_offline_payment(
        actor,
        partly,
        amount="1000.00",
        method=OfflineMethod.CRYPTO,
        reference="0x5c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e",
        explorer_url="https://etherscan.io/tx/0x5c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e",
    )
    await credit_note_service.issue_credit_note(
        actor, partly, "60.00", "Half an on-call hour was also billed in October"
    )
    viewed = await issue(fjord, [_line("Podcast intro animation", "1", "1200.00")])
    await invoice_service.mark_invoice_viewed(actor, viewed)
    await invoice_service.create_invoice_from_time_entries(
        actor,
        ordering_app_id,
        clock.now().date() - timedelta(days=30),
        clock.now().date(),
        invoice_service.TimeGrouping.TASK,
    )
    sent = await invoice_service.create_invoice(
        actor,
        chai.id,
        ordering_app_id,
        {"tax_rate": "18"},
        [_line("Hindi copywriting", "40", "1800.00"), _line("App store listing", "1", "7500.00")],
    )
    await invoice_service.finalize_invoice(actor, sent.id)
    await invoice_service.create_invoice(
        actor,
        acme.id,
        None,
        {
            "notes": "Draft for December; hours still being logged.",
            "discount": invoice_service.DiscountInput(DiscountKind.PERCENT, "10"),
        },
        [_line("Support retainer, December", "1", "2500.00")],
    )


async def _upload(actor: Actor, project_id: uuid.UUID, title: str, kind: str, body: str) -> None:
    data = body.encode()
    upload = await deliverable_service.create_upload(
        actor,
        project_id,
        {
            "title": title,
            "kind": kind,
            "filename": f"{kind}-notes.txt",
            "content_type": "text/plain",
            "size_bytes": len(data),
        },
    )
    pending = deliverable_service.PendingUpload(upload.deliverable, actor)
    stored = await deliverable_service.store_upload(pending, _chunks(data))
    await deliverable_service.complete_upload(pending, stored)


async def _sandbox_event(payment: Payment, event_type: str, kind: EventKind, **values: Any) -> None:
    """A sandbox webhook about ``payment``, stored and processed as the worker would."""
    event = GatewayEvent(
        provider=PaymentProvider.SANDBOX,
        event_id=f"sbx_evt_demo_{payment.id}_{event_type}",
        event_type=event_type,
        kind=kind,
        payload={"type": event_type, "payment_id": str(payment.id)},
        provider_order_id=payment.provider_order_id,
        payment_id=str(payment.id),
        currency=payment.currency,
        **values,
    )
    received = await webhook_service.store(event)
    await webhook_service.process(received.event.id)


async def _load_history(actor: Actor, clients: dict[str, Client]) -> None:
    """Half a year of money, so every report shows something.

    Payments in each of the last six months (offline and through the sandbox), a refund,
    a failed and a flagged gateway payment, a gateway event whose processing gave up,
    overdue invoices in every aging bucket, and files in every access state: a project
    whose advance is unpaid, and one paid in full more than a year ago.
    """
    acme, fjord = clients["Acme Robotics"], clients["Blue Fjord Media"]

    async def issue(client: Client, description: str, amount: str) -> uuid.UUID:
        invoice = await invoice_service.create_invoice(
            actor, client.id, None, {}, [_line(description, "1", amount)]
        )
        await invoice_service.finalize_invoice(actor, invoice.id)
        return invoice.id

    async def sandbox_payment(invoice_id: uuid.UUID) -> Payment:
        payment, _ = await payment_service.prepare_invoice_payment(
            actor, invoice_id, PaymentProvider.SANDBOX
        )
        return await payment_service.ensure_checkout(payment.id, description="Demo")

    methods = [OfflineMethod.BANK_TRANSFER, OfflineMethod.CASH, OfflineMethod.BANK_TRANSFER]
    for month in range(6, 0, -1):
        with _days_ago(month * 30 + 5):
            invoice = await issue(acme, f"Support retainer, {month} months ago", "2500.00")
        with _days_ago(month * 30 - 4):
            if month % 2:
                payment = await sandbox_payment(invoice)
                await _sandbox_event(
                    payment,
                    "payment.succeeded",
                    EventKind.PAYMENT_SUCCEEDED,
                    provider_payment_id=f"sbx_pay_{payment.id}",
                    amount_minor=payment.amount_minor,
                )
            else:
                payment = await payment_service.record_offline_payment(
                    actor,
                    invoice,
                    amount="2500.00",
                    method=methods[month % 3],
                    reference=f"Demo transfer {month}",
                    explorer_url=None,
                )
        if month == 4:
            with _days_ago(month * 30 - 10):
                await payment_service.request_refund(
                    actor, payment.id, "300.00", "Two support days were not used"
                )
    # A card declined, then an amount that did not match (flagged), both through webhooks.
    with _days_ago(50):
        declined = await sandbox_payment(await issue(acme, "Robot fleet trailer", "900.00"))
        await _sandbox_event(
            declined,
            "payment.failed",
            EventKind.PAYMENT_FAILED,
            failure_reason="Card declined in the sandbox",
        )
    with _days_ago(12):
        flagged = await sandbox_payment(await issue(acme, "Control room artwork", "640.00"))
        await _sandbox_event(
            flagged,
            "payment.succeeded",
            EventKind.PAYMENT_SUCCEEDED,
            provider_payment_id=f"sbx_pay_{flagged.id}",
            amount_minor=flagged.amount_minor - 100,
        )
    # An event whose processing kept failing until Settle gave up: left for a person.
    with _days_ago(3):
        stuck = await sandbox_payment(await issue(acme, "Hardware courier", "180.00"))
        gave_up = await WebhookEvent.create(
            provider=PaymentProvider.SANDBOX,
            event_id=f"sbx_evt_demo_{stuck.id}_stuck",
            event_type="payment.succeeded",
            payload={
                "raw": {"type": "payment.succeeded", "payment_id": str(stuck.id)},
                "event": payment_service.as_dict(
                    GatewayEvent(
                        provider=PaymentProvider.SANDBOX,
                        event_id=f"sbx_evt_demo_{stuck.id}_stuck",
                        event_type="payment.succeeded",
                        kind=EventKind.PAYMENT_SUCCEEDED,
                        payload={},
                        payment_id=str(stuck.id),
                    )
                ),
            },
            received_at=clock.now(),
            attempts=webhook_service.MAX_ATTEMPTS - 1,
        )
        await webhook_service.record_failure(gave_up.id, "GatewayError: the sandbox timed out")
    # Overdue invoices, one in each bucket past due (due 30 days after issue).
    for days, what in [
        (50, "Sensor calibration"),
        (75, "Render farm hours"),
        (100, "Field test travel"),
        (140, "Prototype enclosure"),
    ]:
        with _days_ago(days):
            await issue(acme, what, "750.00")
    await invoice_service.mark_overdue()
    # Files in every access state.
    brand = await project_service.create_project(
        actor, fjord.id, {"name": "Brand refresh", "advance_percent": 30}
    )
    await milestone_service.apply_payment_terms(actor, brand.id, "5000.00")
    await _upload(actor, brand.id, "Logo concepts", "beta", "Three logo directions.\n")
    with _days_ago(420):
        archive = await project_service.create_project(
            actor, fjord.id, {"name": "Showreel 2025", "advance_percent": 0}
        )
        terms = await milestone_service.apply_payment_terms(actor, archive.id, "1500.00")
        for milestone in terms.milestones:
            await milestone_service.start_milestone(actor, milestone.id)
            await milestone_service.submit_milestone(actor, milestone.id)
            await milestone_service.approve_milestone(actor, milestone.id)
            await milestone_service.mark_milestone_paid(actor, milestone.id, "Wire FJORD-0107")
        await _upload(actor, archive.id, "Showreel master", "final", "The 2025 showreel.\n")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


_BETA_NOTES = """Warehouse robot dashboard - beta 1

What is in this build:
- the fleet map with live robot positions
- battery alerts (thresholds still being tuned)

Known gaps: shift report export, accessibility pass.
"""

_HANDOVER = """Warehouse robot dashboard - handover pack

Source, deployment notes and the operations runbook.
"""
