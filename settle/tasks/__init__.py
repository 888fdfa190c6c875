"""Dramatiq actors, one module per domain; importing this package declares them all."""

from settle.tasks import auth, invoice, janitor, outbox, payment

__all__ = ["auth", "invoice", "janitor", "outbox", "payment"]
