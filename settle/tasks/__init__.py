"""Dramatiq actors, one module per domain; importing this package declares them all."""

from settle.tasks import auth, outbox

__all__ = ["auth", "outbox"]
