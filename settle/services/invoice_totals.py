"""Invoice arithmetic: line amounts, discount, tax and totals, exact to the minor unit.

The one rounding rule, applied in integer arithmetic (never a float):

1. A line's amount is quantity * unit price, rounded half up to the minor unit.
2. The subtotal is the sum of the line amounts.
3. A percent discount is subtotal * percent / 100, rounded half up; an amount
   discount is taken as given, capped at the subtotal. The discount is shared
   out over the lines in proportion to their amounts (largest remainder), so
   the lines' discounted amounts add up to subtotal - discount exactly.
4. Tax is computed once per rate, on the sum of the discounted amounts of the
   lines at that rate (a line's own rate, else the invoice's), rounded half up;
   each rate's tax is then shared out over its lines the same way.
5. Total = subtotal - discount + tax.

Rounding per rate rather than per line keeps the tax the client sees on the
invoice equal to the rate applied to the amount it is charged on: 18% GST on
three lines of 0.10 is 0.05, not 3 * 0.02 = 0.06.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from settle.models.invoice import DiscountKind

QUANTITY_PLACES = 2
RATE_PLACES = 3
_RATE_SCALE = 10**RATE_PLACES
_QUANTITY_SCALE = 10**QUANTITY_PLACES
_RATE_QUANTUM = Decimal(1).scaleb(-RATE_PLACES)


@dataclass(frozen=True, slots=True)
class LineInput:
    quantity: Decimal
    unit_price_minor: int
    tax_rate: Decimal | None = None


@dataclass(frozen=True, slots=True)
class LineTotals:
    amount_minor: int
    discount_minor: int
    tax_minor: int


@dataclass(frozen=True, slots=True)
class TaxTotal:
    rate: Decimal
    taxable_minor: int
    tax_minor: int


@dataclass(frozen=True, slots=True)
class Totals:
    subtotal_minor: int
    discount_minor: int
    tax_minor: int
    total_minor: int
    lines: tuple[LineTotals, ...]
    taxes: tuple[TaxTotal, ...]


@dataclass(frozen=True, slots=True)
class Discount:
    kind: DiscountKind
    percent: Decimal | None = None
    amount_minor: int | None = None


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, for a non-negative numerator."""
    if numerator < 0 or denominator <= 0:
        raise ValueError("round_half_up takes a non-negative numerator and a positive denominator")
    return (2 * numerator + denominator) // (2 * denominator)


def _scaled(value: Decimal, places: int) -> int:
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than {places} decimal places")
    return int(scaled)


def line_amount(quantity: Decimal, unit_price_minor: int) -> int:
    """quantity * unit price in minor units, rounded half up."""
    return round_half_up(_scaled(quantity, QUANTITY_PLACES) * unit_price_minor, _QUANTITY_SCALE)


def percent_of(amount_minor: int, percent: Decimal) -> int:
    """``percent`` % of an amount, rounded half up."""
    return round_half_up(amount_minor * _scaled(percent, RATE_PLACES), 100 * _RATE_SCALE)


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Share ``total`` out in proportion to ``weights``; the shares add up to ``total``.

    Largest remainder: each share is rounded down, and the units left over go to
    the largest fractional parts (the earlier weight on a tie). With no weight,
    everything goes nowhere: callers only share out what their weights can carry.
    """
    weight_sum = sum(weights)
    if total == 0 or weight_sum == 0:
        return [0] * len(weights)
    shares = [total * weight // weight_sum for weight in weights]
    remainders = [total * weight % weight_sum for weight in weights]
    left = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for index in order[:left]:
        shares[index] += 1
    return shares


def compute_totals(
    lines: Sequence[LineInput], *, tax_rate: Decimal, discount: Discount | None
) -> Totals:
    """The invoice's totals and each line's share, by the rule in the module docstring."""
    amounts = [line_amount(line.quantity, line.unit_price_minor) for line in lines]
    subtotal = sum(amounts)
    discount_minor = 0
    if discount is not None and discount.kind == DiscountKind.PERCENT:
        discount_minor = percent_of(subtotal, discount.percent or Decimal(0))
    elif discount is not None and discount.kind == DiscountKind.AMOUNT:
        discount_minor = min(discount.amount_minor or 0, subtotal)
    line_discounts = allocate(discount_minor, amounts)
    taxable = [amount - share for amount, share in zip(amounts, line_discounts, strict=True)]

    by_rate: dict[Decimal, list[int]] = {}
    for index, line in enumerate(lines):
        rate = tax_rate if line.tax_rate is None else line.tax_rate
        # 18, 18.0 and 18.000 are one rate, kept with the places rates are stored with.
        by_rate.setdefault(rate.quantize(_RATE_QUANTUM), []).append(index)
    line_taxes = [0] * len(lines)
    taxes: list[TaxTotal] = []
    for rate in sorted(by_rate):
        indexes = by_rate[rate]
        base = sum(taxable[i] for i in indexes)
        tax = percent_of(base, rate)
        for i, share in zip(indexes, allocate(tax, [taxable[i] for i in indexes]), strict=True):
            line_taxes[i] = share
        if rate:
            taxes.append(TaxTotal(rate=rate, taxable_minor=base, tax_minor=tax))
    tax_minor = sum(line_taxes)
    return Totals(
        subtotal_minor=subtotal,
        discount_minor=discount_minor,
        tax_minor=tax_minor,
        total_minor=subtotal - discount_minor + tax_minor,
        lines=tuple(
            LineTotals(amount, share, tax)
            for amount, share, tax in zip(amounts, line_discounts, line_taxes, strict=True)
        ),
        taxes=tuple(taxes),
    )
