"""What a ``settle worker`` process opens on its event loop before running actors."""

from __future__ import annotations

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware

from settle.core.db import close_db, init_db
from settle.core.settings import Settings
from settle.subscriptions.bus import EventBus, create_bus, set_bus


class WorkerRuntime(Middleware):
    """Opens the database and the bus on Dramatiq's event loop, where async actors run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bus: EventBus | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            raise RuntimeError("the AsyncIO middleware must run before WorkerRuntime")
        loop_thread.run_coroutine(init_db(self.settings.resolved_database_url))
        self.bus = create_bus(
            self.settings.redis_url,
            self.settings.subscription_queue_size,
            retention_seconds=self.settings.stream_retention_seconds,
            max_entries=self.settings.stream_max_entries,
        )
        set_bus(self.bus)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            return
        if self.bus is not None:
            loop_thread.run_coroutine(self.bus.close())
        loop_thread.run_coroutine(close_db())
