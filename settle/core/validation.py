"""Input checks shared by services; each failure names the field."""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import cache
from importlib.resources import files
from typing import TypeVar

from email_validator import EmailNotValidError
from email_validator import validate_email as _validate_email

from settle.core.errors import ValidationError

_PHONE = re.compile(r"^\+?[0-9 ()./-]{5,40}$")
# Control characters other than tab and line breaks: PostgreSQL cannot store NUL in
# text at all (the insert would fail as an internal error), and the rest are never
# meant in a name or a note.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def required_text(field: str, value: str | None, *, max_length: int) -> str:
    """A non-blank string of at most ``max_length`` characters, stripped."""
    text = optional_text(field, value, max_length=max_length)
    if text is None:
        raise ValidationError(field, f"{field} must not be empty", code="REQUIRED")
    return text


def optional_text(field: str, value: str | None, *, max_length: int) -> str | None:
    """Like required_text, but blank becomes None."""
    text = (value or "").strip()
    if not text:
        return None
    if len(text) > max_length:
        raise ValidationError(
            field, f"{field} must be at most {max_length} characters", code="TOO_LONG"
        )
    if _CONTROL.search(text):
        raise ValidationError(
            field, f"{field} must not contain control characters", code="INVALID_CHARACTERS"
        )
    return text


# A search term longer than any name or email it could match is a mistake or an abuse:
# SQLite refuses LIKE patterns over 50,000 bytes, and both databases would scan with it.
MAX_SEARCH_LENGTH = 200


def search_term(field: str, value: str | None) -> str | None:
    """A search term stripped (None when blank); ValidationError TOO_LONG past the limit."""
    text = (value or "").strip()
    if not text:
        return None
    if len(text) > MAX_SEARCH_LENGTH:
        raise ValidationError(
            field, f"{field} must be at most {MAX_SEARCH_LENGTH} characters", code="TOO_LONG"
        )
    return text


def email(field: str, value: str | None, *, required: bool = False) -> str | None:
    """A syntactically valid email address, normalised; no DNS lookup."""
    text = (value or "").strip()
    if not text:
        if required:
            raise ValidationError(field, f"{field} must not be empty", code="REQUIRED")
        return None
    if len(text) > 254:
        raise ValidationError(field, f"{field} must be at most 254 characters", code="TOO_LONG")
    try:
        # test_environment admits the reserved .test domain (demo and staging accounts).
        result = _validate_email(text, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise ValidationError(
            field, f"Invalid email address: {exc}", code="INVALID_EMAIL"
        ) from None
    return result.normalized.lower()


def phone(field: str, value: str | None) -> str | None:
    text = (value or "").strip()
    if not text:
        return None
    if not _PHONE.match(text):
        raise ValidationError(field, "Invalid phone number", code="INVALID_PHONE")
    return text


def password(field: str, value: str) -> str:
    """A password a person chose: long enough, not blank, not one of the most common.

    NIST SP 800-63B asks for exactly this (a minimum length and a check against
    known-common passwords) instead of composition rules, which push people to
    ``Password1!`` without making passwords harder to guess.
    """
    if len(value) < 8:
        raise ValidationError(field, "Password must be at least 8 characters", code="TOO_SHORT")
    if len(value) > 256:
        raise ValidationError(field, "Password must be at most 256 characters", code="TOO_LONG")
    if not value.strip():
        raise ValidationError(field, "Password must not be only spaces", code="REQUIRED")
    if value.strip().lower() in common_passwords():
        raise ValidationError(
            field,
            "This password is one of the most common ones; choose one that is harder to guess",
            code="COMMON_PASSWORD",
        )
    return value


@cache
def common_passwords() -> frozenset[str]:
    """The most common passwords of at least 8 characters, lower case (see data/README.md)."""
    text = files("settle.core").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line)


# Business dates (due, issue, work and project dates, and every date filter) fall in
# this range. Wider dates are typing mistakes (0001-01-01, 9999-12-31) that break date
# arithmetic (a due date 30 days after 9999-12-31 does not exist) and sort orders.
D = TypeVar("D", bound=date)
EARLIEST_DATE = date(1970, 1, 1)
LATEST_DATE = date(2199, 12, 31)


def business_date(field: str | None, value: D) -> D:
    """``value`` if it is within EARLIEST_DATE..LATEST_DATE; ValidationError OUT_OF_RANGE if not."""
    day = value.date() if isinstance(value, datetime) else value
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        raise ValidationError(
            field,
            f"Dates must be between {EARLIEST_DATE.isoformat()} and {LATEST_DATE.isoformat()}",
            code="OUT_OF_RANGE",
        )
    return value
