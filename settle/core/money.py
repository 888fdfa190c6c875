"""Money: integer minor units beside an ISO 4217 code. Never a float."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)

from settle.core.errors import ValidationError

# ISO 4217 minor-unit exponents for the currencies Settle accepts. A currency
# missing here is rejected rather than guessed: a wrong exponent is a 100x error.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AED": 2, "AUD": 2, "BDT": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0,
    "CNY": 2, "CZK": 2, "DKK": 2, "EGP": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2,
    "IDR": 2, "ILS": 2, "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KES": 2, "KRW": 0,
    "KWD": 3, "LKR": 2, "MXN": 2, "MYR": 2, "NGN": 2, "NOK": 2, "NPR": 2, "NZD": 2,
    "OMR": 3, "PHP": 2, "PKR": 2, "PLN": 2, "QAR": 2, "RON": 2, "SAR": 2, "SEK": 2,
    "SGD": 2, "THB": 2, "TND": 3, "TRY": 2, "TWD": 2, "UAH": 2, "USD": 2, "VND": 0,
    "ZAR": 2,
}  # fmt: skip

# Far beyond any real amount (a quadrillion in major units), and small enough that
# every currency's minor units fit a signed 64-bit column.
MAX_AMOUNT = Decimal(10) ** 15

# Scaling a parsed amount must neither round nor underflow: with unbounded
# precision and exponent range any inexact step raises instead of rounding.
_EXACT = Context(
    prec=MAX_PREC,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)


def normalize_currency(code: str, field: str = "currency") -> str:
    """Upper-case and check an ISO 4217 code; raises ValidationError if unknown."""
    normalized = (code or "").strip().upper()
    if normalized not in CURRENCY_EXPONENTS:
        raise ValidationError(field, f"Unknown currency code {code!r}", code="INVALID_CURRENCY")
    return normalized


def exponent(currency: str) -> int:
    return CURRENCY_EXPONENTS[normalize_currency(currency)]


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units of one currency."""

    minor_units: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.minor_units, bool) or not isinstance(self.minor_units, int):
            raise TypeError("Money.minor_units must be an int")
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    @property
    def amount(self) -> Decimal:
        """The decimal amount in major units (exact)."""
        return Decimal(self.minor_units).scaleb(-exponent(self.currency))

    def format_amount(self) -> str:
        """The amount as a plain decimal string with the currency's digits: ``"1250.00"``."""
        return amount_string(self.minor_units, self.currency)

    @classmethod
    def parse(cls, amount: str | Decimal | int, currency: str, field: str = "amount") -> Money:
        """Parse a decimal amount exactly; more digits than the currency allows is an error."""
        code = normalize_currency(currency)
        try:
            value = Decimal(str(amount).strip())
        except InvalidOperation:
            raise ValidationError(field, f"{amount!r} is not a decimal amount") from None
        if not value.is_finite():
            raise ValidationError(field, "Amount must be a finite number")
        if value.copy_abs() >= MAX_AMOUNT:
            raise ValidationError(
                field,
                f"Amount must be less than {MAX_AMOUNT:f} in absolute value",
                code="OUT_OF_RANGE",
            )
        places = CURRENCY_EXPONENTS[code]
        scaled = value.scaleb(places, context=_EXACT)
        if scaled != scaled.to_integral_value(context=_EXACT):
            raise ValidationError(field, f"{code} amounts have at most {places} decimal places")
        return cls(int(scaled), code)

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.minor_units + other.minor_units, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.minor_units - other.minor_units, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"Cannot combine {self.currency} and {other.currency}")


def amount_string(minor_units: int, currency: str) -> str:
    """``minor_units`` of ``currency`` (a valid, upper-case code) as ``"1250.00"``.

    From the integer alone: the hot path of every response that shows money.
    """
    digits = CURRENCY_EXPONENTS[currency]
    if not digits:
        return str(minor_units)
    whole, fraction = divmod(abs(minor_units), _SCALES[digits])
    sign = "-" if minor_units < 0 else ""
    return f"{sign}{whole}.{fraction:0{digits}d}"


_SCALES = {digits: 10**digits for digits in set(CURRENCY_EXPONENTS.values())}


# Currencies whose readers expect a sign before the amount. Any other currency is
# written with its code ("AED 1,234.50"): a bare "$" or "kr" would be ambiguous.
CURRENCY_SYMBOLS: dict[str, str] = {"INR": "₹", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def format_money(money: Money) -> str:
    """The amount as its readers expect it: ``₹1,00,000.00``, ``$100,000.00``, ``AED 12.50``.

    Built from the integer minor units, never through a float or the process locale,
    so the same amount reads the same on every machine.
    """
    digits = CURRENCY_EXPONENTS[money.currency]
    whole, fraction = divmod(abs(money.minor_units), 10**digits)
    # Indian readers group lakhs and crores: the last three digits, then pairs.
    grouped = _group_indian(whole) if money.currency == "INR" else f"{whole:,}"
    number = f"{grouped}.{fraction:0{digits}d}" if digits else grouped
    symbol = CURRENCY_SYMBOLS.get(money.currency)
    prefix = symbol if symbol is not None else f"{money.currency} "
    sign = "-" if money.minor_units < 0 else ""
    return f"{sign}{prefix}{number}"


def _group_indian(whole: int) -> str:
    digits = str(whole)
    head, tail = digits[:-3], digits[-3:]
    pairs: list[str] = []
    while head:
        head, pair = head[:-2], head[-2:]
        pairs.insert(0, pair)
    return ",".join([*pairs, tail])
