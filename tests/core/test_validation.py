"""Input checks: each failure is a ValidationError naming the field, with a stable code."""

from __future__ import annotations

import pytest

from settle.core import validation
from settle.core.errors import ValidationError


def _error(call: object, *args: object, **kwargs: object) -> tuple[str | None, str]:
    with pytest.raises(ValidationError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value.field, caught.value.code


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Acme", "Acme"),
        ("  Acme Ltd  ", "Acme Ltd"),
        ("x" * 200, "x" * 200),
        ("Zoë 東京", "Zoë 東京"),
    ],
)
def test_required_text_strips_and_accepts(value: str, expected: str) -> None:
    assert validation.required_text("name", value, max_length=200) == expected


@pytest.mark.parametrize("value", [None, "", "   ", "\t\n "])
def test_required_text_rejects_blank(value: str | None) -> None:
    # given nothing, or only whitespace
    # then the field is REQUIRED
    assert _error(validation.required_text, "name", value, max_length=200) == ("name", "REQUIRED")


def test_required_text_rejects_over_long_after_stripping() -> None:
    # given the maximum length (surrounding spaces do not count), it is accepted
    assert validation.required_text("name", f"  {'x' * 200}  ", max_length=200) == "x" * 200
    # then one character more is TOO_LONG
    assert _error(validation.required_text, "name", "x" * 201, max_length=200) == (
        "name",
        "TOO_LONG",
    )


@pytest.mark.parametrize("value", ["Acme\x00Ltd", "Acme\x1b[31m", "bell\x07", "del\x7f"])
def test_text_rejects_control_characters(value: str) -> None:
    # given a control character (PostgreSQL cannot even store NUL in text)
    # then both text checks reject it instead of failing at the database
    assert _error(validation.required_text, "name", value, max_length=200) == (
        "name",
        "INVALID_CHARACTERS",
    )
    assert _error(validation.optional_text, "address", value, max_length=200) == (
        "address",
        "INVALID_CHARACTERS",
    )


def test_text_keeps_tabs_and_line_breaks() -> None:
    # given a multi-line note
    body = "Line one\r\nLine two\n\tindented"
    # then it is kept as written
    assert validation.required_text("body", body, max_length=100) == body


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("", None), ("  ", None), (" a ", "a")]
)
def test_optional_text_blank_is_none(value: str | None, expected: str | None) -> None:
    assert validation.optional_text("taxId", value, max_length=64) == expected


def test_optional_text_too_long() -> None:
    assert _error(validation.optional_text, "taxId", "1" * 65, max_length=64) == (
        "taxId",
        "TOO_LONG",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ann@example.com", "ann@example.com"),
        ("  Ann@Example.COM ", "ann@example.com"),
        ("demo@settle.test", "demo@settle.test"),
        (None, None),
        ("", None),
        ("   ", None),
    ],
)
def test_email_normalises(value: str | None, expected: str | None) -> None:
    assert validation.email("email", value) == expected


@pytest.mark.parametrize(
    "value",
    ["not-an-email", "ann@", "@example.com", "ann@localhost", "a b@example.com", "ann@@x.com"],
)
def test_email_rejects_invalid(value: str) -> None:
    assert _error(validation.email, "email", value) == ("email", "INVALID_EMAIL")


def test_email_too_long_and_required() -> None:
    # given an address over 254 characters, or none where one is required
    assert _error(validation.email, "email", f"{'a' * 250}@example.com") == ("email", "TOO_LONG")
    assert _error(validation.email, "email", "  ", required=True) == ("email", "REQUIRED")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("+1 (555) 010-0000", "+1 (555) 010-0000"), (" 98765 43210 ", "98765 43210"), ("", None)],
)
def test_phone_accepts(value: str, expected: str | None) -> None:
    assert validation.phone("phone", value) == expected


@pytest.mark.parametrize("value", ["call me", "1234", "+1 555 CALL", "1" * 41, "++15550100"])
def test_phone_rejects(value: str) -> None:
    assert _error(validation.phone, "phone", value) == ("phone", "INVALID_PHONE")


def test_password_length() -> None:
    assert validation.password("password", "tram-lines-84") == "tram-lines-84"
    assert _error(validation.password, "password", "1234567") == ("password", "TOO_SHORT")
    assert _error(validation.password, "password", "x" * 257) == ("password", "TOO_LONG")


@pytest.mark.parametrize("value", [" " * 8, "\t" * 8, " \t\n " * 3, "\u3000" * 8])
def test_password_of_only_whitespace_is_refused(value: str) -> None:
    # given a password long enough, but nothing except whitespace
    # then it counts as no password at all
    with pytest.raises(ValidationError) as caught:
        validation.password("password", value)
    assert (caught.value.field, caught.value.code, caught.value.message) == (
        "password",
        "REQUIRED",
        "Password must not be only spaces",
    )


@pytest.mark.parametrize(
    "value",
    ["password", "12345678", "Password", "PASSWORD", "  password  ", "iloveyou", "qwertyuiop"],
)
def test_a_common_password_is_refused(value: str) -> None:
    # given one of the most common passwords (in any case, with spaces around it)
    # then it is refused as NIST SP 800-63B asks, whatever its composition
    with pytest.raises(ValidationError) as caught:
        validation.password("password", value)
    assert (caught.value.field, caught.value.code, caught.value.message) == (
        "password",
        "COMMON_PASSWORD",
        "This password is one of the most common ones; choose one that is harder to guess",
    )


@pytest.mark.parametrize("value", ["correct horse", "tram-lines-84", "P@ssw0rd-for-settle"])
def test_an_uncommon_password_is_accepted_whatever_its_composition(value: str) -> None:
    assert validation.password("password", value) == value
