"""Tortoise models, one module per domain; Tortoise discovers them from here."""

from settle.models.activity import ActivityEvent
from settle.models.agency import Agency, Invitation, Role, User
from settle.models.client import Client, Contact, Note
from settle.models.outbox import OutboxKind, OutboxMessage

__all__ = [
    "ActivityEvent",
    "Agency",
    "Client",
    "Contact",
    "Invitation",
    "Note",
    "OutboxKind",
    "OutboxMessage",
    "Role",
    "User",
]
