"""Demo data for the embedded run: one agency with clients, contacts and notes."""

from __future__ import annotations

from dataclasses import dataclass, field

from settle.core.outbox import transaction
from settle.core.settings import Settings
from settle.core.tenancy import Actor
from settle.models.agency import User
from settle.services import auth as auth_service
from settle.services import client as client_service

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
        for spec in _CLIENTS:
            client = await client_service.create_client(actor, dict(spec.client))
            for contact in spec.contacts:
                await client_service.create_contact(actor, client.id, dict(contact))
            for body, pinned in spec.notes:
                await client_service.add_note(actor, client.id, body, pinned=pinned)
    return True
