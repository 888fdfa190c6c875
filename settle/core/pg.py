"""PostgreSQL through asyncpg, without resetting pool connections that nothing changed.

asyncpg resets every connection it takes back into the pool with
``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``: one more
round trip, and for a statement run outside a transaction (Tortoise takes a
connection per statement there) a second one for each. It undoes session state:
settings changed with ``SET``, advisory locks, ``LISTEN``, cursors held open,
temporary tables, prepared statements. Settle creates none of it (it uses
``SET LOCAL`` and transaction-scoped locks, which end with their transaction).

So the connection watches the statements it is given, and resets only after
one that may change session state (any ``SET`` other than ``SET LOCAL`` or
``SET TRANSACTION``, ``RESET``, ``LISTEN``, ``DECLARE``, ``PREPARE``,
``DISCARD``, ``LOAD``, a temporary table, a session advisory lock or
``set_config``). An open transaction is still rolled back on release, always.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import asyncpg
from tortoise.backends.asyncpg.client import AsyncpgDBClient

_SESSION_STATE = re.compile(
    r"(?:^|;)\s*(?:SET\b(?!\s+(?:LOCAL|TRANSACTION)\b)|RESET\b|LISTEN\b|DECLARE\b|PREPARE\b"
    r"|DISCARD\b|LOAD\b|CREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?TEMP)"
    r"|pg_(?:try_)?advisory_lock|set_config\s*\(",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)
def changes_session(query: str) -> bool:
    """Whether ``query`` may leave state on the connection after its transaction."""
    return _SESSION_STATE.search(query) is not None


class SessionTrackingConnection(asyncpg.Connection):
    """An asyncpg connection that is reset on release only when a statement asked for it."""

    _session_changed = False

    def get_reset_query(self) -> str:
        return str(super().get_reset_query()) if self._session_changed else ""

    async def reset(self, *, timeout: float | None = None) -> None:
        await super().reset(timeout=timeout)
        self._session_changed = False

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        if changes_session(query):
            self._session_changed = True
        return str(await super().execute(query, *args, timeout=timeout))

    async def _get_statement(self, query: str, timeout: Any, **kwargs: Any) -> Any:
        # Every other way of running a statement (fetch, executemany, prepare, cursors)
        # goes through here.
        if changes_session(query):
            self._session_changed = True
        return await super()._get_statement(query, timeout, **kwargs)


class SettleAsyncpgClient(AsyncpgDBClient):
    connection_class = SessionTrackingConnection


# Tortoise loads an engine module and takes its ``client_class``.
client_class = SettleAsyncpgClient
