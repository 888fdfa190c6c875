"""Cursors: opaque, round-trip exactly, and a bad one is a ValidationError naming ``after``."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from settle.core.errors import ValidationError
from settle.core.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Ordering,
    check_page_size,
    decode_cursor,
    encode_cursor,
)
from settle.models.client import Client

CLIENT_ID = uuid.UUID("0b5c8a7e-3c1f-4d4b-9a51-6c1d2e3f4a5b")
CREATED_AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
BY_NAME = Ordering("name")
NEWEST_FIRST = Ordering("created_at", descending=True)


def _client() -> Client:
    return Client(id=CLIENT_ID, name="Acme Ltd", currency="USD", created_at=CREATED_AT)


def _forge(parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


@pytest.mark.parametrize(("ordering", "value"), [(BY_NAME, "Acme Ltd"), (NEWEST_FIRST, CREATED_AT)])
def test_cursor_round_trips(ordering: Ordering, value: object) -> None:
    # given a row
    # when its cursor is encoded and decoded for the same ordering
    cursor = encode_cursor(_client(), ordering)
    # then the sort value (to the microsecond, with its zone) and the id come back
    assert decode_cursor(cursor, ordering, Client) == (value, CLIENT_ID)


def test_cursor_is_url_safe_and_unpadded() -> None:
    cursor = encode_cursor(_client(), NEWEST_FIRST)
    assert "=" not in cursor
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_cursor_of_another_ordering_is_invalid() -> None:
    # given a cursor taken from a list sorted by name
    cursor = encode_cursor(_client(), BY_NAME)
    # when it is used with a list sorted by creation time
    with pytest.raises(ValidationError) as caught:
        decode_cursor(cursor, NEWEST_FIRST, Client)
    # then it is rejected instead of starting at a meaningless position
    assert (caught.value.field, caught.value.code) == ("after", "INVALID_CURSOR")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "zzz",
        "!!!",
        "a",
        "é",
        _forge(None),
        _forge("created_at"),
        _forge(5),
        _forge({"field": "created_at"}),
        _forge(["created_at", "2026-01-02T03:04:05+00:00"]),
        _forge(["created_at", "2026-01-02T03:04:05+00:00", str(CLIENT_ID), "extra"]),
        _forge(["created_at", "not a date", str(CLIENT_ID)]),
        _forge(["created_at", "2026-01-02T03:04:05", str(CLIENT_ID)]),  # no time zone
        _forge(["created_at", None, str(CLIENT_ID)]),
        _forge(["created_at", 5, str(CLIENT_ID)]),
        _forge(["created_at", [1], str(CLIENT_ID)]),
        _forge(["created_at", "2026-01-02T03:04:05+00:00", "not-a-uuid"]),
        _forge(["created_at", "2026-01-02T03:04:05+00:00", 5]),
        _forge(["created_at", "2026-01-02T03:04:05+00:00", None]),
        _forge(["updated_at", "2026-01-02T03:04:05+00:00", str(CLIENT_ID)]),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
    ],
)
def test_invalid_cursor_is_a_validation_error_on_after(cursor: str) -> None:
    # given a cursor that is garbage, forged, or carries values of the wrong type
    # when it is decoded
    with pytest.raises(ValidationError) as caught:
        decode_cursor(cursor, NEWEST_FIRST, Client)
    # then it is a ValidationError on `after`, never a bad value sent to the database
    assert (caught.value.field, caught.value.code, caught.value.message) == (
        "after",
        "INVALID_CURSOR",
        "Invalid cursor",
    )


@pytest.mark.parametrize(
    "parts",
    [
        ["name", 5, str(CLIENT_ID)],
        ["name", None, str(CLIENT_ID)],
        ["name", True, str(CLIENT_ID)],
        ["name", ["Acme"], str(CLIENT_ID)],
        ["name", "Acme", 7],
    ],
)
def test_text_sort_value_must_be_text(parts: list[Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_cursor(_forge(parts), BY_NAME, Client)
    assert (caught.value.field, caught.value.code) == ("after", "INVALID_CURSOR")


@pytest.mark.parametrize(("first", "size"), [(None, DEFAULT_PAGE_SIZE), (1, 1), (100, 100)])
def test_page_size_in_range(first: int | None, size: int) -> None:
    assert check_page_size(first) == size


@pytest.mark.parametrize("first", [0, -1, MAX_PAGE_SIZE + 1, 10_000])
def test_page_size_out_of_range_names_first(first: int) -> None:
    with pytest.raises(ValidationError) as caught:
        check_page_size(first)
    assert (caught.value.field, caught.value.code, caught.value.message) == (
        "first",
        "OUT_OF_RANGE",
        "first must be between 1 and 100",
    )
