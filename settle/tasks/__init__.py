"""Dramatiq actors, one module per domain; importing this package declares them all."""

from settle.tasks import (
    auth,
    credit_note,
    csv_import,
    export,
    housekeeping,
    invoice,
    janitor,
    notification,
    outbox,
    payment,
)

__all__ = [
    "auth",
    "credit_note",
    "csv_import",
    "export",
    "housekeeping",
    "invoice",
    "janitor",
    "notification",
    "outbox",
    "payment",
]
