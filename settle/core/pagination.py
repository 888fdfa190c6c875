"""Cursor pagination: keyset over (sort field, id), so pages stay stable under inserts."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.queryset import QuerySet

from settle.core.errors import ValidationError

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

M = TypeVar("M", bound=Model)


@dataclass(frozen=True, slots=True)
class Page(Generic[M]):
    items: list[M]
    cursors: list[str]
    total_count: int
    has_next_page: bool

    @property
    def end_cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


@dataclass(frozen=True, slots=True)
class Ordering:
    """Sort by one field, newest/largest first when ``descending``; ``id`` breaks ties."""

    field: str
    descending: bool = False


def check_page_size(first: int | None) -> int:
    """The page size, or ValidationError naming ``first`` when out of 1..100."""
    size = DEFAULT_PAGE_SIZE if first is None else first
    if size < 1 or size > MAX_PAGE_SIZE:
        raise ValidationError(
            "first", f"first must be between 1 and {MAX_PAGE_SIZE}", code="OUT_OF_RANGE"
        )
    return size


def encode_cursor(item: Model, ordering: Ordering) -> str:
    value = getattr(item, ordering.field)
    raw = json.dumps([_to_json(value), str(item.pk)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, ordering: Ordering, model: type[Model]) -> tuple[Any, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value, pk = json.loads(base64.urlsafe_b64decode(padded.encode()))
        field = model._meta.fields_map[ordering.field]
        return _from_json(value, field.field_type), uuid.UUID(pk)
    except (ValueError, TypeError, KeyError):
        raise ValidationError("after", "Invalid cursor", code="INVALID_CURSOR") from None


async def paginate(
    qs: QuerySet[M], *, first: int | None, after: str | None, ordering: Ordering
) -> Page[M]:
    """One page of ``qs``: ``first`` rows after the ``after`` cursor, plus the total count."""
    size = check_page_size(first)
    total = await qs.count()
    page_qs = qs
    if after:
        value, pk = decode_cursor(after, ordering, qs.model)
        op = "lt" if ordering.descending else "gt"
        page_qs = page_qs.filter(
            Q(**{f"{ordering.field}__{op}": value}) | Q(**{ordering.field: value, f"id__{op}": pk})
        )
    prefix = "-" if ordering.descending else ""
    rows = await page_qs.order_by(f"{prefix}{ordering.field}", f"{prefix}id").limit(size + 1)
    items = list(rows[:size])
    return Page(
        items=items,
        cursors=[encode_cursor(item, ordering) for item in items],
        total_count=total,
        has_next_page=len(rows) > size,
    )


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _from_json(value: Any, field_type: type | None) -> Any:
    if field_type is datetime and isinstance(value, str):
        return datetime.fromisoformat(value)
    if field_type is uuid.UUID and isinstance(value, str):
        return uuid.UUID(value)
    return value
