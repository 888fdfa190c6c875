"""Housekeeping: rows whose purpose has passed, deleted in small batches.

=====================  ================================================  ==================
rows                   deleted once                                      kept meanwhile for
=====================  ================================================  ==================
outbox messages        published more than ``outbox_keep_days`` ago      tracing what left
                       (7 days by default)                               and when
Telegram updates       received more than ``TELEGRAM_UPDATE_KEEP`` ago   a redelivery not
                       (7 days; Telegram redelivers for at most 24 h)    acted on twice
=====================  ================================================  ==================

An outbox row that was never published (an event passed over after its
attempts, a job that could not be sent) is kept whatever its age: it is what an
operator looks at. Each batch is one short statement, so pruning a large backlog
never holds a long lock or transaction; a crash in the middle leaves the rest for
the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from tortoise.models import Model
from tortoise.queryset import QuerySet

from settle.core import clock
from settle.core.settings import Settings
from settle.models.outbox import OutboxMessage
from settle.models.telegram import TelegramUpdate

BATCH_SIZE = 5000
TELEGRAM_UPDATE_KEEP = timedelta(days=7)

M = TypeVar("M", bound=Model)


@dataclass(frozen=True, slots=True)
class Pruned:
    outbox_messages: int
    telegram_updates: int

    def counts(self) -> dict[str, int]:
        return {"outbox_messages": self.outbox_messages, "telegram_updates": self.telegram_updates}


async def prune(settings: Settings) -> Pruned:
    """Delete the rows past their keep; how many of each kind went."""
    now = clock.now()
    published_before = now - timedelta(days=settings.outbox_keep_days)
    received_before = now - TELEGRAM_UPDATE_KEEP
    return Pruned(
        outbox_messages=await _delete_in_batches(
            OutboxMessage, lambda: OutboxMessage.filter(published_at__lt=published_before)
        ),
        telegram_updates=await _delete_in_batches(
            TelegramUpdate, lambda: TelegramUpdate.filter(received_at__lt=received_before)
        ),
    )


async def _delete_in_batches(model: type[M], query: Callable[[], QuerySet[M]]) -> int:
    total = 0
    while True:
        ids = await query().order_by("id").limit(BATCH_SIZE).values_list("id", flat=True)
        if not ids:
            return total
        total += await model.filter(id__in=list(ids)).delete()
        if len(ids) < BATCH_SIZE:
            return total
