"""Cursor pagination: keyset over (sort field, id), so pages stay stable under inserts."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from pypika_tortoise.analytics import Count as WindowCount
from pypika_tortoise.analytics import RowNumber
from pypika_tortoise.enums import Order
from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.models import Model
from tortoise.queryset import QuerySet

from settle.core import json_input
from settle.core.errors import ValidationError

MAX_PAGE_SIZE = 100
# Our cursors are under 200 characters (a field name, a value of at most a timestamp or
# a UUID, an id); a longer one is not ours.
MAX_CURSOR_LENGTH = 512
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
    """An opaque cursor: the sort field's name and value and the row's id."""
    value = getattr(item, ordering.field)
    raw = json.dumps([ordering.field, _to_json(value), str(item.pk)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, ordering: Ordering, model: type[Model]) -> tuple[Any, uuid.UUID]:
    """The (sort value, id) of a cursor; ValidationError naming ``after`` if it is not ours.

    Every part is type-checked: a forged or foreign cursor must be a validation
    error, never a value of the wrong type handed to the database.
    """
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("cursor too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        # One flat array: anything nested is not ours, and is refused before it is parsed.
        field, value, pk = json_input.loads(base64.urlsafe_b64decode(padded.encode()), max_depth=1)
        if field != ordering.field or not isinstance(pk, str):
            raise ValueError("cursor of another ordering")
        field_type = model._meta.fields_map[ordering.field].field_type
        return _from_json(value, field_type), uuid.UUID(pk)
    except (ValueError, TypeError, KeyError, ArithmeticError):
        raise ValidationError("after", "Invalid cursor", code="INVALID_CURSOR") from None


async def paginate(
    qs: QuerySet[M], *, first: int | None, after: str | None, ordering: Ordering
) -> Page[M]:
    """One page of ``qs``: ``first`` rows after the ``after`` cursor, plus the total count."""
    size = check_page_size(first)
    total = await qs.count()
    page_qs = _after_cursor(qs, after, ordering)
    prefix = "-" if ordering.descending else ""
    rows = await page_qs.order_by(f"{prefix}{ordering.field}", f"{prefix}id").limit(size + 1)
    return _page(list(rows), total, size, ordering)


def _after_cursor(qs: QuerySet[M], after: str | None, ordering: Ordering) -> QuerySet[M]:
    """The rows of ``qs`` that come after the ``after`` cursor (all of them without one)."""
    if not after:
        return qs
    value, pk = decode_cursor(after, ordering, qs.model)
    op = "lt" if ordering.descending else "gt"
    return qs.filter(
        Q(**{f"{ordering.field}__{op}": value}) | Q(**{ordering.field: value, f"id__{op}": pk})
    )


def _page(rows: list[M], total: int, size: int, ordering: Ordering) -> Page[M]:
    """A page from up to ``size + 1`` rows in order (one more than fits tells of a next page)."""
    items = rows[:size]
    return Page(
        items=items,
        cursors=[encode_cursor(item, ordering) for item in items],
        total_count=total,
        has_next_page=len(rows) > size,
    )


async def paginate_each(
    qs: QuerySet[M],
    key: str,
    keys: Sequence[Any],
    *,
    first: int | None,
    after: str | None,
    ordering: Ordering,
) -> dict[Any, Page[M]]:
    """For each value of the column ``key`` in ``keys``, the page ``paginate`` gives of its rows.

    This is how a list's children are read: all parents at once, in a fixed
    number of statements however many parents and rows there are. A window
    numbers (and counts) each parent's rows and keeps ``first`` + 1 of each;
    a second statement loads them; with ``after``, whose cursor narrows the
    rows but not the count, a third counts.
    """
    size = check_page_size(first)
    wanted = list(dict.fromkeys(keys))
    pages: dict[Any, Page[M]] = {k: Page([], [], 0, False) for k in wanted}
    if not wanted:
        return pages
    model = qs.model
    base = qs.filter(**{f"{key}__in": wanted})
    table = model._meta.basetable
    column = model._meta.fields_db_projection
    direction = Order.desc if ordering.descending else Order.asc
    parent = table[column[key]]
    rank = (
        RowNumber()
        .over(parent)
        .orderby(table[column[ordering.field]], order=direction)
        .orderby(table[column["id"]], order=direction)
    )
    to_key = model._meta.fields_map[key].to_python_value
    ranked = _after_cursor(base, after, ordering).annotate(_rank=rank)
    if after:
        counts = base.group_by(key).annotate(_count=Count("id")).values(key, "_count")
        totals = {to_key(row[key]): int(row["_count"]) for row in await counts}
        values = ranked.values("id", "_rank")
    else:
        ranked = ranked.annotate(_count=WindowCount(table[column["id"]]).over(parent))
        values = ranked.values("id", key, "_rank", "_count")
    # Rows are numbered in a subquery and kept by their number outside it:
    # SQL cannot filter on a window function where it is computed. Tortoise
    # has no public way to nest a query in FROM; this builds the inner one as
    # its own Subquery expression does, so scoping, joins and values stay its.
    values._choose_db_if_not_chosen()
    values._make_query()
    inner, params = values.query.get_parameterized_sql()
    sql = f'SELECT * FROM ({inner}) AS "ranked" WHERE "_rank" <= {size + 1:d}'
    _, rows = await values._db.execute_query(sql, params)
    if not after:
        totals = {to_key(row[key]): int(row["_count"]) for row in rows}
    chosen = [row["id"] for row in rows]
    prefix = "-" if ordering.descending else ""
    found = (
        await model.filter(id__in=chosen).order_by(f"{prefix}{ordering.field}", f"{prefix}id")
        if chosen
        else []
    )
    grouped: dict[Any, list[M]] = {k: [] for k in wanted}
    for row in found:
        grouped[getattr(row, key)].append(row)
    for k, children in grouped.items():
        pages[k] = _page(children, totals.get(k, 0), size, ordering)
    return pages


def _to_json(value: Any) -> Any:
    if isinstance(value, date):  # also datetime
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    return value


def _from_json(value: Any, field_type: type | None) -> Any:
    """The sort value of a cursor, checked against the field's type."""
    if field_type is None:
        raise TypeError("unsupported sort field")
    if field_type in (datetime, date, uuid.UUID, Decimal):
        if not isinstance(value, str):
            raise TypeError("expected a string")
        if field_type is datetime:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise ValueError("naive datetime")
            return parsed
        if field_type is date:
            return date.fromisoformat(value)
        if field_type is Decimal:
            number = Decimal(value)
            if not number.is_finite():
                raise ValueError("not a finite number")
            return number
        return uuid.UUID(value)
    # bool is an int in Python, so compare exact types.
    if type(value) is not field_type:
        raise TypeError(f"expected {field_type.__name__}")
    return value


async def paginate_nulls_last(
    qs: QuerySet[M], field: str, *, first: int | None, after: str | None, descending: bool
) -> Page[M]:
    """Pages by a nullable ``field``, rows without a value last in either direction.

    Keyset pagination compares sort values, and NULL compares with nothing; so
    rows with a value page by (value, id) and the null tail by id, each with
    cursors of its own ordering, which is how a cursor tells where it points.
    """
    size = check_page_size(first)
    by_value = Ordering(field, descending)
    by_id = Ordering("id", descending)
    valued = qs.filter(**{f"{field}__isnull": False})
    unvalued = qs.filter(**{f"{field}__isnull": True})
    in_tail = False
    if after:
        try:
            decode_cursor(after, by_value, qs.model)
        except ValidationError:
            # Either a tail cursor or garbage; paginate() tells them apart.
            in_tail = True
    if in_tail:
        tail = await paginate(unvalued, first=size, after=after, ordering=by_id)
        return Page(
            items=tail.items,
            cursors=tail.cursors,
            total_count=await valued.count() + tail.total_count,
            has_next_page=tail.has_next_page,
        )
    head = await paginate(valued, first=size, after=after, ordering=by_value)
    unvalued_count = await unvalued.count()
    items, cursors, has_next = list(head.items), list(head.cursors), head.has_next_page
    if not has_next and unvalued_count:
        if len(items) < size:
            tail = await paginate(unvalued, first=size - len(items), after=None, ordering=by_id)
            items += tail.items
            cursors += tail.cursors
            has_next = tail.has_next_page
        else:
            has_next = True
    return Page(
        items=items,
        cursors=cursors,
        total_count=head.total_count + unvalued_count,
        has_next_page=has_next,
    )
