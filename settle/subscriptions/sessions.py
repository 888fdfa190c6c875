"""Open websockets end with their session.

A websocket is authenticated once, at ``connection_init``; from then on nothing
in the protocol carries the token again. So each API process keeps its
authenticated sockets here, and one task closes a socket with 4403 as soon as
its token expires, its session ends (logout, a password change) or its user is
removed. Ended sessions are announced on the bus (every replica hears it); a
check against the database every ``SETTLE_SESSION_CHECK_SECONDS`` catches what
the bus missed. One task and one bus subscription serve every socket of the
process, and they run only while there is a socket to watch.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from settle.core.tenancy import Actor
from settle.services import auth as auth_service
from settle.subscriptions import channels
from settle.subscriptions.bus import get_bus

log = logging.getLogger(__name__)

CLOSE_CODE = 4403
# Ids per liveness query, so thousands of sockets never make one huge IN list.
CHECK_BATCH = 1000


@dataclass(eq=False)
class _Socket:
    websocket: WebSocket
    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: float  # a Unix time, the clock tokens are checked against


class SocketSessions:
    """The authenticated websockets of one app, closed when their session ends."""

    def __init__(self, check_seconds: float) -> None:
        self.check_seconds = check_seconds
        self._sockets: dict[int, _Socket] = {}  # by id() of the connection's ASGI scope
        self._ended_users: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def watch(self, websocket: WebSocket, actor: Actor, expires_at: datetime) -> None:
        """Close ``websocket`` when the session of ``actor`` ends or expires."""
        assert actor.session_id is not None
        self._sockets[id(websocket.scope)] = _Socket(
            websocket, actor.user_id, actor.session_id, expires_at.timestamp()
        )
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="settle.socket-sessions")
        else:
            self._wake.set()  # its expiry may be the next one

    def forget(self, scope: Any) -> None:
        """The socket of ``scope`` has closed."""
        if self._sockets.pop(id(scope), None) is not None:
            self._wake.set()  # the last one gone ends the task and its bus subscription

    async def _run(self) -> None:
        listener = asyncio.create_task(self._listen())
        next_check = time.monotonic() + self.check_seconds
        try:
            while True:
                if not self._sockets:
                    # Set before any await: a socket watched from now on starts a new task.
                    self._task = None
                    return
                earliest = min(socket.expires_at for socket in self._sockets.values())
                timeout = min(next_check - time.monotonic(), earliest - time.time())
                if timeout > 0:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                self._wake.clear()
                await self._close_expired()
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.check_seconds
                    self._ended_users.clear()
                    await self._check(list(self._sockets.values()))
                elif self._ended_users:
                    users, self._ended_users = self._ended_users, set()
                    await self._check(
                        [s for s in self._sockets.values() if str(s.user_id) in users]
                    )
        finally:
            listener.cancel()
            with suppress(asyncio.CancelledError):
                await listener

    async def _listen(self) -> None:
        """Hear of ended sessions from any process; a lost bus is retried, the clock covers."""
        while True:
            try:
                async with get_bus().subscribe([channels.sessions()]) as messages:
                    async for message in messages:
                        if isinstance(message.get("userId"), str):
                            self._ended_users.add(message["userId"])
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("sessions.bus_unavailable", exc_info=True)
                await asyncio.sleep(self.check_seconds)

    async def _close_expired(self) -> None:
        now = time.time()
        expired = [socket for socket in self._sockets.values() if socket.expires_at <= now]
        await self._close(expired, "Session expired")

    async def _check(self, sockets: list[_Socket]) -> None:
        """Close those of ``sockets`` whose session has ended or whose user was removed."""
        sockets = [s for s in sockets if self._is_open(s)]
        if not sockets:
            return  # a session ended on another replica, or of a user with no socket here
        live: set[uuid.UUID] = set()
        try:
            for start in range(0, len(sockets), CHECK_BATCH):
                batch = sockets[start : start + CHECK_BATCH]
                live |= await auth_service.live_sessions({s.session_id for s in batch})
        except Exception:
            # The database is away: keep the sockets, and ask again on the next check.
            log.warning("sessions.check_failed", exc_info=True)
            return
        await self._close([s for s in sockets if s.session_id not in live], "Session ended")

    def _is_open(self, socket: _Socket) -> bool:
        if socket.websocket.application_state is WebSocketState.DISCONNECTED:
            self.forget(socket.websocket.scope)
            return False
        return True

    async def _close(self, sockets: Iterable[_Socket], reason: str) -> None:
        for socket in sockets:
            self.forget(socket.websocket.scope)
            log.info(
                "sessions.socket_closed",
                extra={"user_id": str(socket.user_id), "reason": reason},
            )
            # Already closing from the other side: nothing to send.
            with suppress(RuntimeError, OSError, WebSocketDisconnect):
                await socket.websocket.close(code=CLOSE_CODE, reason=reason)
