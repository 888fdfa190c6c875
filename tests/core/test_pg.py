"""Pool connections are reset on release only when a statement changed session state."""

from __future__ import annotations

from typing import Any

import pytest
from tortoise import Tortoise

from settle.core import pg
from settle.models.client import Client
from tests.conftest import Backend


@pytest.mark.parametrize(
    ("statement", "changes"),
    [
        ('SELECT "id" FROM "client" WHERE "agency_id"=$1', False),
        ('UPDATE "invoice" SET "status"=$1 WHERE "id"=$2', False),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", False),
        ("SET LOCAL statement_timeout = '5s'", False),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", False),
        ("SELECT pg_advisory_xact_lock(42)", False),
        ("SET statement_timeout = '5s'", True),
        ("  set search_path TO other", True),
        ("SELECT 1; SET application_name = 'x'", True),
        ("RESET ALL", True),
        ("LISTEN settle", True),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", True),
        ("PREPARE p AS SELECT 1", True),
        ("CREATE TEMP TABLE t (id int)", True),
        ("CREATE LOCAL TEMPORARY TABLE t (id int)", True),
        ("SELECT pg_advisory_lock(42)", True),
        ("SELECT pg_try_advisory_lock(42)", True),
        ("SELECT set_config('app.x', '1', false)", True),
    ],
)
def test_statements_that_leave_session_state_are_recognised(statement: str, changes: bool) -> None:
    assert pg.changes_session(statement) is changes


@pytest.fixture
def resets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reset queries sent to PostgreSQL as connections go back to the pool."""
    sent: list[str] = []
    reset = pg.SessionTrackingConnection.reset

    async def recording(self: pg.SessionTrackingConnection, **kwargs: Any) -> None:
        query = self.get_reset_query()
        if query:
            sent.append(query)
        await reset(self, **kwargs)

    monkeypatch.setattr(pg.SessionTrackingConnection, "reset", recording)
    return sent


async def test_reads_leave_the_connection_as_it_was_so_it_is_not_reset(
    db: Backend, resets: list[str]
) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite has no pool to reset")
    pool = Tortoise.get_connection("default")
    assert pool._pool._connection_class is pg.SessionTrackingConnection
    # when statements that change nothing but rows run, each on a connection of its own
    for _ in range(5):
        await Client.all().count()
    await pool.execute_query("SELECT 1")
    # then no connection was reset on its way back
    assert resets == []


async def test_a_session_setting_is_reset_before_the_connection_is_used_again(
    db: Backend, resets: list[str]
) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite has no pool to reset")
    pool = Tortoise.get_connection("default")
    # when a statement changes a setting of its session
    await pool.execute_script("SET statement_timeout = '7s'")
    # then the connection is reset on release (asyncpg's full reset)
    assert len(resets) == 1
    assert "RESET ALL" in resets[0]
    # and no later statement, on any connection of the pool, sees the setting
    for _ in range(pool.pool_maxsize):
        _, rows = await pool.execute_query("SHOW statement_timeout")
        assert rows[0]["statement_timeout"] == "0"
    assert len(resets) == 1
