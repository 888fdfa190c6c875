"""Date and DateTime as Settle takes them: ISO 8601 text within the business date range.

They replace Strawberry's scalars of the same names (``scalar_overrides``), so
every Date and DateTime argument and input field, filters included, is checked
in one place, before any resolver runs. A value out of range is refused with
code OUT_OF_RANGE and one that is no date with INVALID_DATE, as top-level
errors (a value that cannot be read fails the whole operation, as every
GraphQL coercion error does).
"""

from __future__ import annotations

import datetime as dt

import dateutil.parser
from strawberry.types.scalar import ScalarDefinition

from settle.core.errors import ValidationError
from settle.core.validation import EARLIEST_DATE, LATEST_DATE, business_date

_RANGE = f"from {EARLIEST_DATE.isoformat()} to {LATEST_DATE.isoformat()}"


def _invalid(kind: str, value: object) -> ValidationError:
    return ValidationError(
        None, f"{kind} must be an ISO 8601 string, got {str(value)[:40]!r}", code="INVALID_DATE"
    )


def parse_date(value: object) -> dt.date:
    if not isinstance(value, str):
        raise _invalid("A Date", value)
    try:
        parsed = dt.date.fromisoformat(value)
    except ValueError:
        raise _invalid("A Date", value) from None
    return business_date(None, parsed)


def parse_datetime(value: object) -> dt.datetime:
    if not isinstance(value, str):
        raise _invalid("A DateTime", value)
    try:
        parsed = dateutil.parser.isoparse(value)
    except (ValueError, OverflowError):
        raise _invalid("A DateTime", value) from None
    return business_date(None, parsed)


def _isoformat(value: dt.date) -> str:
    return value.isoformat()


Date = ScalarDefinition(
    name="Date",
    description=f"Date (isoformat), {_RANGE}",
    specified_by_url=None,
    serialize=_isoformat,
    parse_value=parse_date,
    parse_literal=None,
    origin=dt.date,
)

DateTime = ScalarDefinition(
    name="DateTime",
    description=f"Date with time (isoformat), {_RANGE}",
    specified_by_url=None,
    serialize=_isoformat,
    parse_value=parse_datetime,
    parse_literal=None,
    origin=dt.datetime,
)

SCALAR_OVERRIDES: dict[object, ScalarDefinition] = {dt.date: Date, dt.datetime: DateTime}
