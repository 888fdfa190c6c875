"""Money: exact decimal parsing into minor units, per-currency exponents, no floats."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from settle.core.errors import ValidationError
from settle.core.money import (
    CURRENCY_EXPONENTS,
    Money,
    amount_string,
    exponent,
    format_money,
    normalize_currency,
)
from settle.schema.common import Money as SchemaMoney


@pytest.mark.parametrize(
    ("amount", "currency", "minor_units"),
    [
        ("1250.00", "USD", 125000),
        ("1250", "USD", 125000),
        ("0.01", "usd", 1),
        (" 19.9 ", "EUR", 1990),
        ("-3.50", "GBP", -350),
        ("10000000.00", "INR", 1000000000),
        (Decimal("0.10"), "USD", 10),
        (7, "USD", 700),
        ("1500", "JPY", 1500),
        ("1500.0", "JPY", 1500),
        ("1.234", "KWD", 1234),
        ("1e2", "USD", 10000),
    ],
)
def test_parse_is_exact(amount: str | Decimal | int, currency: str, minor_units: int) -> None:
    # given a decimal amount in major units
    # when it is parsed for a currency
    money = Money.parse(amount, currency)
    # then the minor units are exact and the code is normalised
    assert money == Money(minor_units, currency.upper())


def test_parse_never_goes_through_a_float() -> None:
    # given an amount whose float form is inexact (0.1 + 0.2 != 0.3 in binary)
    # when it is parsed and added up
    total = Money.parse("0.1", "USD") + Money.parse("0.2", "USD")
    # then the sum is exactly 0.30
    assert total == Money.parse("0.30", "USD")
    assert total.amount == Decimal("0.30")


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("1.001", "USD", "USD amounts have at most 2 decimal places"),
        ("0.5", "JPY", "JPY amounts have at most 0 decimal places"),
        ("1.2345", "KWD", "KWD amounts have at most 3 decimal places"),
    ],
)
def test_parse_rejects_more_decimals_than_the_currency_has(
    amount: str, currency: str, message: str
) -> None:
    # given an amount with more digits than the currency's minor unit
    # when it is parsed
    with pytest.raises(ValidationError) as caught:
        Money.parse(amount, currency, field="total")
    # then it is rejected, naming the field, never rounded
    assert (caught.value.field, caught.value.code, caught.value.message) == (
        "total",
        "VALIDATION_ERROR",
        message,
    )


@pytest.mark.parametrize("amount", ["", "abc", "1,000.00", "1.2.3", "NaN", "Infinity", "-inf"])
def test_parse_rejects_what_is_not_a_finite_decimal(amount: str) -> None:
    # given text that is not a finite decimal number
    # when it is parsed
    with pytest.raises(ValidationError) as caught:
        Money.parse(amount, "USD")
    # then the amount field is named
    assert caught.value.field == "amount"
    assert caught.value.code == "VALIDATION_ERROR"


@pytest.mark.parametrize("code", ["XYZ", "", "US", "usd1", "DOLLAR"])
def test_unknown_currency_is_rejected(code: str) -> None:
    # given a code that is not a supported ISO 4217 currency
    # when it is used
    with pytest.raises(ValidationError) as caught:
        Money.parse("1.00", code)
    # then the error is INVALID_CURRENCY on the currency field
    assert (caught.value.field, caught.value.code) == ("currency", "INVALID_CURRENCY")
    with pytest.raises(ValidationError):
        Money(100, code)


def test_normalize_currency_names_the_given_field() -> None:
    # given a currency check for a nested input field
    # when the code is unknown / known in lower case with spaces
    with pytest.raises(ValidationError) as caught:
        normalize_currency("ABC", "filter.currency")
    # then the error names that field, and a valid code comes back upper-cased
    assert (caught.value.field, caught.value.code) == ("filter.currency", "INVALID_CURRENCY")
    assert normalize_currency(" inr ") == "INR"


@pytest.mark.parametrize(
    ("currency", "digits"), [("USD", 2), ("INR", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3)]
)
def test_exponent_follows_iso_4217(currency: str, digits: int) -> None:
    assert exponent(currency) == digits


@pytest.mark.parametrize(
    ("money", "amount", "text"),
    [
        (Money(125000, "USD"), Decimal("1250.00"), "1250.00"),
        (Money(5, "USD"), Decimal("0.05"), "0.05"),
        (Money(-350, "EUR"), Decimal("-3.50"), "-3.50"),
        (Money(1500, "JPY"), Decimal("1500"), "1500"),
        (Money(1234, "KWD"), Decimal("1.234"), "1.234"),
        (Money(0, "USD"), Decimal("0"), "0.00"),
    ],
)
def test_amount_and_format(money: Money, amount: Decimal, text: str) -> None:
    # given an amount in minor units
    # then its decimal amount is exact and its text has the currency's digits
    assert money.amount == amount
    assert money.format_amount() == text


def test_format_round_trips_through_parse() -> None:
    for money in (Money(1, "USD"), Money(99999999, "INR"), Money(7, "JPY"), Money(1001, "BHD")):
        assert Money.parse(money.format_amount(), money.currency) == money


@pytest.mark.parametrize("bad", [1.5, "100", True, Decimal("1")])
def test_minor_units_must_be_an_int(bad: object) -> None:
    # given a float, string, bool or Decimal as minor units
    # then Money refuses it: a float must never become money
    with pytest.raises(TypeError):
        Money(bad, "USD")  # type: ignore[arg-type]


def test_arithmetic_needs_one_currency() -> None:
    # given amounts in two currencies
    usd, eur = Money(100, "USD"), Money(100, "EUR")
    # then they add and subtract only within one currency
    assert usd + usd == Money(200, "USD")
    assert usd - Money(150, "USD") == Money(-50, "USD")
    with pytest.raises(ValueError, match="Cannot combine USD and EUR"):
        usd + eur
    with pytest.raises(ValueError, match="Cannot combine USD and EUR"):
        usd - eur


@pytest.mark.parametrize(
    "amount", ["1e-999999999", "0." + "0" * 40 + "1", "1.000000000000000000000000000001"]
)
def test_tiny_fractions_are_rejected_not_rounded_to_zero(amount: str) -> None:
    # given an amount with a fraction far below a cent (beyond Decimal's default precision)
    # when it is parsed
    with pytest.raises(ValidationError) as caught:
        Money.parse(amount, "USD")
    # then it is rejected rather than silently rounded
    assert caught.value.message == "USD amounts have at most 2 decimal places"


def test_trailing_zeros_beyond_the_exponent_are_exact() -> None:
    # given an amount written with many trailing zeros (more digits than Decimal's precision)
    # then it is still the exact amount
    assert Money.parse("12.3" + "0" * 60, "USD") == Money(1230, "USD")


@pytest.mark.parametrize("amount", ["1e999999999", "1e15", "-1000000000000000", "1E+100000"])
def test_absurd_magnitudes_are_a_validation_error(amount: str) -> None:
    # given an amount of a quadrillion or more (or an exponent that overflows Decimal)
    # when it is parsed
    with pytest.raises(ValidationError) as caught:
        Money.parse(amount, "USD")
    # then it is a validation error, not an overflow or a number no column can hold
    assert (caught.value.field, caught.value.code) == ("amount", "OUT_OF_RANGE")


def test_largest_accepted_amount_fits_a_64_bit_column() -> None:
    # given the largest amount accepted in a three-decimal currency
    money = Money.parse("999999999999999.999", "KWD")
    # then its minor units fit a signed 64-bit integer
    assert money.minor_units == 999999999999999999 < 2**63


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(10000000, "INR"), "₹1,00,000.00"),
        (Money(12345678950, "INR"), "₹12,34,56,789.50"),
        (Money(99900, "INR"), "₹999.00"),
        (Money(100000, "INR"), "₹1,000.00"),
        (Money(1, "INR"), "₹0.01"),
        (Money(0, "INR"), "₹0.00"),
        (Money(-50000, "INR"), "-₹500.00"),
        (Money(99999999999999999, "INR"), "₹99,99,99,99,99,99,999.99"),
        (Money(10000000, "USD"), "$100,000.00"),
        (Money(99900, "USD"), "$999.00"),
        (Money(-5, "USD"), "-$0.05"),
        (Money(123450, "EUR"), "€1,234.50"),
        (Money(123456789, "GBP"), "£1,234,567.89"),
        (Money(100000, "JPY"), "¥100,000"),
        (Money(-7, "JPY"), "-¥7"),
        (Money(123450, "AED"), "AED 1,234.50"),
        (Money(1234, "BHD"), "BHD 1.234"),
        (Money(1234567, "KWD"), "KWD 1,234.567"),
        (Money(-100, "CHF"), "-CHF 1.00"),
        (Money(1000000, "KRW"), "KRW 1,000,000"),
    ],
)
def test_format_money_reads_as_the_currency_expects(money: Money, text: str) -> None:
    # given an amount in minor units
    # when it is formatted for a reader
    # then it has the currency's sign or code, grouping and number of digits
    assert format_money(money) == text


EDGES = [0, 1, -1, 5, -5, 9, 10, 99, 100, -100, 101, 12_345, -12_345, 999_999, 10**17 - 1]


@pytest.mark.parametrize("currency", sorted(CURRENCY_EXPONENTS))
def test_amount_string_is_the_decimal_amount(currency: str) -> None:
    # given amounts at every edge of the minor unit, and many in between
    generator = random.Random(currency)
    amounts = (
        EDGES + [-m for m in EDGES] + [generator.randint(-(10**17), 10**17) for _ in range(500)]
    )
    for minor_units in amounts:
        digits = CURRENCY_EXPONENTS[currency]
        # then the integer formatting says what the exact decimal amount says
        expected = f"{Decimal(minor_units).scaleb(-digits):.{digits}f}"
        assert amount_string(minor_units, currency) == expected
        assert Money(minor_units, currency).format_amount() == expected


def test_schema_money_is_formatted_only_when_read_and_reads_the_same() -> None:
    # given the schema's money built from stored minor units
    shown = SchemaMoney.of(-123_456, "INR")
    # then its fields are what the eager Money showed, the amount made when read
    assert "amount" not in vars(shown)
    assert (shown.amount, shown.currency, shown.minor_units) == ("-1234.56", "INR", -123_456)
    from_value = SchemaMoney.from_value(Money(150, "JPY"))
    assert (from_value.amount, from_value.currency, from_value.minor_units) == ("150", "JPY", 150)
