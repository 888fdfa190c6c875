"""Demo data for the embedded run: one agency with clients, projects, milestones and files."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

from settle.core import clock
from settle.core.outbox import transaction
from settle.core.settings import Settings
from settle.core.tenancy import Actor
from settle.models.agency import User
from settle.models.milestone import MilestoneKind
from settle.models.project import TaskStatus
from settle.services import auth as auth_service
from settle.services import client as client_service
from settle.services import deliverable as deliverable_service
from settle.services import milestone as milestone_service
from settle.services import project as project_service
from settle.services import task as task_service
from settle.services import time_entry as time_entry_service

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
        clients = {}
        for spec in _CLIENTS:
            client = await client_service.create_client(actor, dict(spec.client))
            clients[client.name] = client
            for contact in spec.contacts:
                await client_service.create_contact(actor, client.id, dict(contact))
            for body, pinned in spec.notes:
                await client_service.add_note(actor, client.id, body, pinned=pinned)
        await _load_dashboard_project(actor, clients["Acme Robotics"].id)
        await _load_ordering_app_project(actor, clients["Chai Point Foods"].id)
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


async def _load_ordering_app_project(actor: Actor, client_id: uuid.UUID) -> None:
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
