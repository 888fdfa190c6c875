"""The ``settle`` command: serve, worker, scheduler, migrate, demo, telegram-webhook and more."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from settle.core.logging import configure_logging
from settle.core.settings import Settings, configure_settings, get_settings

log = logging.getLogger("settle.cli")


def serve_workers(settings: Settings, requested: int | None) -> int:
    """How many processes `settle serve` runs: ``--workers``, else one per core.

    The embedded run (no SETTLE_REDIS_URL) keeps its bus, worker, scheduler and
    rate limits in the one process, so it runs one; asking it for more is refused
    (SystemExit with the reason).
    """
    if requested is None:
        return 1 if settings.embedded else max(1, os.cpu_count() or 1)
    if requested > 1 and settings.embedded:
        raise SystemExit(
            f"settle serve --workers {requested} needs SETTLE_REDIS_URL: the embedded run "
            "keeps its event bus, background worker, scheduler and rate limits in one "
            "process. Set SETTLE_REDIS_URL (and run `settle worker`), or use --workers 1."
        )
    return requested


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    # The whole process (its in-process worker too) links to the port it serves on.
    settings = settings.for_server(args.host, args.port)
    try:
        workers = serve_workers(settings, args.workers)
    except SystemExit as refusal:
        print(refusal, file=sys.stderr)
        return 2
    configure_settings(settings)
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_config": None,
        "proxy_headers": True,
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; Settle believes
        # exactly the proxies SETTLE_TRUSTED_PROXIES names (see settle.core.rate_limit).
        "forwarded_allow_ips": list(settings.trusted_proxies),
    }
    if workers == 1:
        from settle.app import create_app

        uvicorn.run(create_app(settings), **options)
        return 0
    # Each worker process builds its app from the environment: the same settings, with
    # the links this command gave them.
    os.environ["SETTLE_PUBLIC_BASE_URL"] = settings.public_base_url
    log.info("serve.workers", extra={"workers": workers})
    uvicorn.run("settle.app:app_from_environment", factory=True, workers=workers, **options)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    import dramatiq

    from settle.tasks.broker import configure_broker
    from settle.tasks.runtime import WorkerRuntime

    if settings.embedded:
        print(
            "settle worker needs SETTLE_REDIS_URL; the embedded run has a worker "
            "inside `settle serve` already.",
            file=sys.stderr,
        )
        return 2
    broker = configure_broker(settings.redis_url)
    broker.add_middleware(WorkerRuntime(settings))
    worker = dramatiq.Worker(broker, worker_threads=args.threads)
    worker.start()
    log.info("worker.started", extra={"threads": args.threads})
    _wait_for_signal()
    worker.stop()
    log.info("worker.stopped")
    return 0


def _scheduler(settings: Settings, args: argparse.Namespace) -> int:
    import redis.asyncio as aioredis

    from settle.tasks.broker import configure_broker
    from settle.tasks.scheduler import RedisSchedulerLock, Scheduler, default_jobs, send_job

    if settings.embedded or settings.redis_url is None:
        print(
            "settle scheduler needs SETTLE_REDIS_URL; the embedded run has a scheduler "
            "inside `settle serve` already.",
            file=sys.stderr,
        )
        return 2
    redis_url = settings.redis_url
    configure_broker(redis_url)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        client = aioredis.Redis.from_url(redis_url)
        try:
            scheduler = Scheduler(default_jobs(settings), RedisSchedulerLock(client), send_job)
            log.info("scheduler.started")
            await scheduler.run(stop)
        finally:
            await client.aclose()

    asyncio.run(run())
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from settle.core.db import migrate

    asyncio.run(migrate(settings.resolved_database_url))
    print("migrations applied")
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from settle.core.db import close_db, init_db
    from settle.core.outbox import relay_later
    from settle.services.demo import DEMO_EMAIL, DEMO_PASSWORD, load_demo
    from settle.subscriptions.bus import MemoryBus, set_bus
    from settle.tasks.broker import configure_broker

    async def run() -> bool:
        await init_db(settings.resolved_database_url)
        # Demo data is written before any server runs: its events have no listener.
        # With Redis its jobs go to the workers at once; embedded, they wait in the
        # outbox for the server's relay (an in-memory broker would exit with us).
        set_bus(MemoryBus())
        configure_broker(settings.redis_url, host_loop=asyncio.get_running_loop())
        try:
            if settings.embedded:
                with relay_later():
                    return await load_demo(settings)
            return await load_demo(settings)
        finally:
            await close_db()

    created = asyncio.run(run())
    state = "loaded" if created else "already present"
    print(f"demo data {state}: log in as {DEMO_EMAIL} / {DEMO_PASSWORD}")
    return 0


def _telegram_webhook(settings: Settings, args: argparse.Namespace) -> int:
    from settle.notifications.telegram import (
        TelegramError,
        TelegramNotConfiguredError,
        register_webhook,
    )

    try:
        registered = asyncio.run(
            register_webhook(settings, drop_pending_updates=args.drop_pending_updates)
        )
    except (TelegramError, TelegramNotConfiguredError) as exc:
        print(f"settle telegram-webhook: {exc}", file=sys.stderr)
        return 1
    print(f"Telegram delivers @{registered.bot_username}'s messages to {registered.url}")
    return 0


def _export_schema(settings: Settings, args: argparse.Namespace) -> int:
    from settle.schema.schema import schema

    sys.stdout.write(schema.as_str() + "\n")
    return 0


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="settle",
        description="Settle: billing for agencies. Configured by SETTLE_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve the API (with an in-process worker when no Redis is set)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="processes serving the port (default: one per core with SETTLE_REDIS_URL; "
        "the embedded run serves with one)",
    )
    serve.set_defaults(handler=_serve)

    worker = commands.add_parser("worker", help="run background jobs from the Redis broker")
    worker.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    worker.set_defaults(handler=_worker)

    scheduler = commands.add_parser(
        "scheduler", help="send periodic jobs on their cron schedules (one leader via Redis)"
    )
    scheduler.set_defaults(handler=_scheduler)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(handler=_migrate)

    demo = commands.add_parser("demo", help="load the demo agency, once")
    demo.set_defaults(handler=_demo)

    telegram = commands.add_parser(
        "telegram-webhook",
        help="register <SETTLE_PUBLIC_BASE_URL>/webhooks/telegram as the bot's webhook",
    )
    telegram.add_argument(
        "--drop-pending-updates",
        action="store_true",
        help="discard the updates Telegram holds for the bot",
    )
    telegram.set_defaults(handler=_telegram_webhook)

    export = commands.add_parser("export-schema", help="print the GraphQL SDL")
    export.set_defaults(handler=_export_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_settings(settings)
    configure_logging(settings.log_level)
    return int(args.handler(settings, args))


if __name__ == "__main__":
    raise SystemExit(main())
