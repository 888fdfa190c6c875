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


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 8123, "http://127.0.0.1:8123"),
        ("0.0.0.0", 8000, "http://127.0.0.1:8000"),
        ("localhost", 9000, "http://localhost:9000"),
        ("::", 8123, "http://[::1]:8123"),
        ("::1", 8123, "http://[::1]:8123"),
    ],
)
def test_a_server_links_to_the_address_it_listens_on(
    host: str, port: int, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given no SETTLE_PUBLIC_BASE_URL
    monkeypatch.delenv("SETTLE_PUBLIC_BASE_URL", raising=False)
    # when a server listens on host:port
    settings = Settings().for_server(host, port)
    # then its links point there
    assert settings.public_base_url == expected


def test_a_configured_public_base_url_wins_over_the_address_served_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given SETTLE_PUBLIC_BASE_URL (a proxy in front, say)
    monkeypatch.setenv("SETTLE_PUBLIC_BASE_URL", "https://billing.example.com")
    # when a server listens on another port, then its links keep the configured base
    assert Settings().for_server("0.0.0.0", 8123).public_base_url == "https://billing.example.com"
