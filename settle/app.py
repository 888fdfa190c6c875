"""The Starlette application: GraphQL over HTTP and websockets, health and readiness."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hmac
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dramatiq
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.types import ExecutionResult
from tortoise import Tortoise

from settle.core import rate_limit
from settle.core.db import close_db, init_db
from settle.core.errors import AuthenticationError
from settle.core.headers import SecurityHeaders
from settle.core.http_limits import BodySizeLimit
from settle.core.logging import configure_logging, request_id_var
from settle.core.relay import relay_pending
from settle.core.settings import Settings, configure_settings, get_settings
from settle.files import file_routes
from settle.invitations import invitation_routes
from settle.notifications.unsubscribe import unsubscribe_routes
from settle.schema import persisted
from settle.schema.context import Context
from settle.schema.schema import schema
from settle.schema.transport import SafeInputView
from settle.services import auth as auth_service
from settle.services import report as report_service
from settle.subscriptions.bus import EventBus, create_bus, set_bus
from settle.subscriptions.frames import SharedFrameHandler
from settle.subscriptions.sessions import SocketSessions
from settle.tasks.broker import configure_broker
from settle.telegram_webhook import telegram_routes
from settle.webhooks import webhook_routes

log = logging.getLogger(__name__)


class SettleGraphQL(SafeInputView, GraphQL):
    """Strawberry's ASGI view, authenticating the bearer token before anything executes."""

    graphql_transport_ws_handler_class = SharedFrameHandler

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            schema,
            graphql_ide=None if settings.is_production else "graphiql",
            keep_alive=True,
            keep_alive_interval=15,
        )
        self.settings = settings
        self.sockets = SocketSessions(settings.session_check_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            try:
                await super().__call__(scope, receive, send)
            finally:
                self.sockets.forget(scope)
            return
        if scope["type"] == "http":
            request = Request(scope, receive)
            token = _bearer(request.headers.get("authorization"))
            scope.setdefault("state", {})["actor"] = None
            if token is not None:
                try:
                    scope["state"]["actor"] = await auth_service.actor_for_token(
                        self.settings, token
                    )
                except AuthenticationError as exc:
                    # A bad token is a failed request, not an anonymous one: nothing runs.
                    response = JSONResponse(
                        {
                            "data": None,
                            "errors": [{"message": exc.message, "extensions": {"code": exc.code}}],
                        },
                        status_code=401,
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                    await response(scope, receive, send)
                    return
            actor = scope["state"]["actor"]
            if actor is not None and not await rate_limit.admit_user(scope, send, actor.user_id):
                return
        await super().__call__(scope, receive, send)

    def should_render_graphql_ide(self, request: Any) -> bool:
        # A GET with a persisted query's hash and no document is an operation, not a browser.
        return "extensions" not in request.query_params and super().should_render_graphql_ide(
            request
        )

    async def execute_single(  # type: ignore[override]
        self, *, request_data: GraphQLRequestData, **kwargs: Any
    ) -> ExecutionResult:
        # An automatic persisted query becomes the document its hash names, or an answer
        # Apollo's clients act on (send the document; stop sending hashes).
        try:
            query = await persisted.resolve(
                self.settings, request_data.query, request_data.extensions
            )
        except persisted.PersistedQueryError as error:
            return ExecutionResult(data=None, errors=[error])
        if query is not request_data.query:
            request_data = dataclasses.replace(request_data, query=query)
        return await super().execute_single(request_data=request_data, **kwargs)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:  # type: ignore[override]
        is_ws = isinstance(request, WebSocket)
        return Context(
            settings=self.settings,
            request=request,
            response=response,
            actor=None if is_ws else request.state.actor,
            request_id=request_id_var.get(),
            cache_loaders=not is_ws,
        )

    async def on_ws_connect(self, context: Context) -> Any:  # type: ignore[override]
        params = context.connection_params or {}
        token = params.get("token") if isinstance(params, dict) else None
        if token is None and isinstance(params, dict):
            token = _bearer(params.get("Authorization") or params.get("authorization"))
        if token is None:
            # Anonymous sockets are allowed to connect; every subscription needs an actor.
            return None
        try:
            session = await auth_service.authenticate(self.settings, str(token))
        except AuthenticationError as exc:
            raise ConnectionRejectionError({"code": exc.code, "message": exc.message}) from None
        context.actor = session.actor
        # The socket closes (4403) when the session expires, ends or its user is removed.
        self.sockets.watch(context.request, session.actor, session.expires_at)
        return None


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return "" if scheme else None
    return value.strip()


class RequestIdMiddleware:
    """Tags each request with an id (the caller's ``X-Request-ID`` or a new one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = given if given.isprintable() and given else uuid.uuid4().hex
        token = request_id_var.set(request_id)

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


@dataclass
class Runtime:
    """What the app started and must stop: the bus, the embedded worker and scheduler."""

    bus: EventBus | None = None
    worker: dramatiq.Worker | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def start_runtime(
    settings: Settings,
    *,
    in_process_worker: bool | None = None,
    scheduler: bool | None = None,
) -> Runtime:
    """Open the database and the bus; with an in-process worker, the worker and scheduler too.

    By default both run in-process exactly when no Redis is configured (the
    embedded run). With Redis, this process only sends jobs to the Redis broker
    and ``settle worker`` / ``settle scheduler`` run them.
    """
    runtime = Runtime()
    await init_db(settings.resolved_database_url)
    runtime.bus = create_bus(
        settings.redis_url,
        settings.subscription_queue_size,
        retention_seconds=settings.stream_retention_seconds,
        max_entries=settings.stream_max_entries,
    )
    set_bus(runtime.bus)
    in_process = settings.embedded if in_process_worker is None else in_process_worker
    broker = configure_broker(
        None if in_process else settings.redis_url, host_loop=asyncio.get_running_loop()
    )
    if in_process:
        runtime.worker = dramatiq.Worker(broker, worker_threads=settings.embedded_worker_threads)
        runtime.worker.start()
    if in_process if scheduler is None else scheduler:
        from settle.tasks.scheduler import LocalSchedulerLock, Scheduler, default_jobs, send_job

        jobs = Scheduler(default_jobs(settings), LocalSchedulerLock(), send_job)
        runtime.background.append(asyncio.create_task(jobs.run(runtime.stop)))
    # Whatever a crash (or `settle demo`) left in the outbox goes out now rather than at
    # the next sweep. Fresh rows too: SKIP LOCKED and published_at keep a row another
    # process is relaying from being sent twice.
    await relay_pending(older_than=timedelta(0))
    return runtime


async def stop_runtime(runtime: Runtime) -> None:
    runtime.stop.set()
    for task in runtime.background:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if runtime.worker is not None:
        # Worker.stop joins its threads, which may be waiting on this loop: run it aside.
        await asyncio.to_thread(runtime.worker.stop)
    if runtime.bus is not None:
        await runtime.bus.close()
        set_bus(None)
    await persisted.close_stores()
    await close_db()


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


READY_TIMEOUT = 2.0


async def readyz(request: Request) -> Response:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(
            Tortoise.get_connection("default").execute_query("SELECT 1"), timeout=READY_TIMEOUT
        )
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    settings: Settings = request.app.state.settings
    if settings.redis_url:
        try:
            await asyncio.wait_for(_ping_redis(settings.redis_url), timeout=READY_TIMEOUT)
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


async def metrics(request: Request) -> Response:
    """Operations metrics in the Prometheus text format (see settle.services.report)."""
    settings: Settings = request.app.state.settings
    if settings.metrics_token is not None:
        expected = f"Bearer {settings.metrics_token.get_secret_value()}"
        if not hmac.compare_digest(
            request.headers.get("authorization", "").encode(), expected.encode()
        ):
            return JSONResponse(
                {"code": "UNAUTHENTICATED", "message": "Bearer token required"}, 401
            )
    return PlainTextResponse(
        await report_service.metrics_text(), media_type="text/plain; version=0.0.4"
    )


async def _ping_redis(url: str) -> None:
    # A fresh connection to this app's configured Redis, not the process's bus: the
    # probe must answer for this app's settings, and a new connection is what a
    # restarted or failed-over Redis has to accept.
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=READY_TIMEOUT, socket_timeout=READY_TIMEOUT
    )
    try:
        await client.ping()
    finally:
        await client.aclose()


def tune_gc(settings: Settings) -> None:
    """Collect less often, and never again walk what start-up built (a serving process).

    Start-up leaves hundreds of thousands of long-lived objects (modules, the schema,
    the ORM's models) that every full collection walked again, a fifth of a busy
    server's CPU. ``gc.freeze`` moves them out of the collector's sight; a higher
    first threshold lets the short-lived objects of a request die by reference
    counting before a collection looks at them.
    """
    gc.collect()
    if settings.gc_freeze:
        gc.freeze()
    if settings.gc_threshold:
        _, middle, oldest = gc.get_threshold()
        gc.set_threshold(settings.gc_threshold, middle, oldest)


def app_from_environment() -> Starlette:
    """The app of one `settle serve --workers N` process, configured by the environment."""
    settings = get_settings()
    configure_settings(settings)
    configure_logging(settings.log_level)
    return create_app(settings)


def create_app(settings: Settings, *, manage_runtime: bool = True) -> Starlette:
    """The ASGI app. ``manage_runtime=False`` leaves start-up to the caller (tests)."""
    graphql = SettleGraphQL(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not manage_runtime:
            yield
            return
        runtime = await start_runtime(settings)
        tune_gc(settings)
        try:
            yield
        finally:
            await stop_runtime(runtime)

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics, methods=["GET"]),
            *file_routes(),
            *telegram_routes(),
            *webhook_routes(),
            *invitation_routes(),
            *unsubscribe_routes(),
        ],
        middleware=[
            Middleware(RequestIdMiddleware),
            # Outside the limits, so a refused request (413, 429) carries the headers too.
            Middleware(SecurityHeaders, settings=settings),
            Middleware(BodySizeLimit, settings=settings),
            Middleware(rate_limit.RateLimits, settings=settings),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
