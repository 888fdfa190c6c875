"""Settings that shape how Settle connects: the database URL and its pool."""

from __future__ import annotations

import pytest

from settle.core.settings import Settings


@pytest.mark.parametrize(
    ("database_url", "pool_size", "expected"),
    [
        ("postgres://app@db:5432/settle", 20, "postgres://app@db:5432/settle?maxsize=20"),
        ("postgres://app@db/settle?ssl=true", 8, "postgres://app@db/settle?ssl=true&maxsize=8"),
        ("postgres://app@db/settle?maxsize=3", 20, "postgres://app@db/settle?maxsize=3"),
        ("sqlite:///srv/settle.sqlite3", 20, "sqlite:///srv/settle.sqlite3"),
    ],
)
def test_a_postgres_url_gets_the_pool_size_unless_it_names_its_own(
    database_url: str, pool_size: int, expected: str
) -> None:
    # given a database URL and a pool size
    settings = Settings(database_url=database_url, database_pool_size=pool_size)
    # when the URL Settle connects with is worked out
    resolved = settings.resolved_database_url
    # then PostgreSQL gets the pool size, unless the URL says otherwise, and SQLite has none
    assert resolved == expected
