"""Invoice arithmetic: awkward invoices exact to the minor unit, and the sharing rule."""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

import pytest

from settle.models.invoice import DiscountKind
from settle.services.invoice_totals import (
    Discount,
    LineInput,
    TaxTotal,
    allocate,
    compute_totals,
    line_amount,
    percent_of,
    round_half_up,
)


def _half_up(value: Decimal) -> int:
    """The documented rule computed independently: a decimal of minor units, ROUND_HALF_UP."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _line(quantity: str, unit_price_minor: int, tax_rate: str | None = None) -> LineInput:
    return LineInput(
        Decimal(quantity), unit_price_minor, None if tax_rate is None else Decimal(tax_rate)
    )


def _percent(value: str) -> Discount:
    return Discount(DiscountKind.PERCENT, percent=Decimal(value))


def _amount(minor: int) -> Discount:
    return Discount(DiscountKind.AMOUNT, amount_minor=minor)


@dataclass(frozen=True)
class Case:
    """An invoice and its totals worked out by hand; line tuples are (amount, discount, tax)."""

    lines: tuple[LineInput, ...]
    tax_rate: str
    discount: Discount | None
    subtotal: int
    discount_minor: int
    tax: int
    total: int
    line_totals: tuple[tuple[int, int, int], ...]
    taxes: tuple[tuple[str, int, int], ...] = ()


CASES: dict[str, Case] = {
    # 3 x 0.33 at 18%: 0.99 x 18% = 0.1782 -> 0.18 (each line's 0.0594 shares it evenly)
    "thirds: three lines of 0.33 at 18%": Case(
        (_line("1", 33),) * 3, "18", None, 99, 0, 18, 117, ((33, 0, 6),) * 3, (("18", 99, 18),)
    ),
    # 0.33 h and 0.67 h of 100.00: 33.00 + 67.00, a whole hour
    "thirds: a third of an hour at 100.00": Case(
        (_line("0.33", 10_000), _line("0.67", 10_000)),
        "0",
        None,
        10_000,
        0,
        0,
        10_000,
        ((3_300, 0, 0), (6_700, 0, 0)),
    ),
    # 0.33 x 1.01 = 0.3333 -> 0.33 and 0.67 x 1.01 = 0.6767 -> 0.68: each line rounds on its own
    "thirds: quantities of 1.01": Case(
        (_line("0.33", 101), _line("0.67", 101)),
        "0",
        None,
        101,
        0,
        0,
        101,
        ((33, 0, 0), (68, 0, 0)),
    ),
    # 33.333% of 100.00 = 33.333 -> 33.33, shared 11.00 / 11.00 / 11.33 (two remainders of .98
    # win the leftover paise); 18% of 66.67 = 12.0006 -> 12.00, shared 3.96 / 3.96 / 4.08
    "thirds: a third off three lines at 18%": Case(
        (_line("0.33", 10_000), _line("0.33", 10_000), _line("0.34", 10_000)),
        "18",
        _percent("33.333"),
        10_000,
        3_333,
        1_200,
        7_867,
        ((3_300, 1_100, 396), (3_300, 1_100, 396), (3_400, 1_133, 408)),
        (("18", 6_667, 1_200),),
    ),
    # 0.5 x 0.01 = half a paisa -> 0.01
    "half paisa: half of 0.01": Case((_line("0.5", 1),), "0", None, 1, 0, 0, 1, ((1, 0, 0),)),
    # 0.005 -> 0.01 twice, 0.0049 -> 0.00, 0.015 -> 0.02: lines round before they are added
    "half paisa: on every line": Case(
        (_line("0.5", 1), _line("0.5", 1), _line("0.49", 1), _line("1.5", 1)),
        "0",
        None,
        4,
        0,
        0,
        4,
        ((1, 0, 0), (1, 0, 0), (0, 0, 0), (2, 0, 0)),
    ),
    # 18% of 0.25 = 0.045 -> 0.05
    "half paisa: 18% of 0.25": Case(
        (_line("1", 25),), "18", None, 25, 0, 5, 30, ((25, 0, 5),), (("18", 25, 5),)
    ),
    # 10% of 0.05 = 0.005 -> 0.01
    "half paisa: 10% of 0.05": Case(
        (_line("1", 5),), "10", None, 5, 0, 1, 6, ((5, 0, 1),), (("10", 5, 1),)
    ),
    # 18% of 999.99 = 179.9982 -> 180.00
    "GST: 18% of 999.99": Case(
        (_line("1", 99_999),),
        "18",
        None,
        99_999,
        0,
        18_000,
        117_999,
        ((99_999, 0, 18_000),),
        (("18", 99_999, 18_000),),
    ),
    # 18% of 0.05 = 0.009 -> 0.01
    "GST: 18% of 0.05": Case((_line("1", 5),), "18", None, 5, 0, 1, 6, ((5, 0, 1),)),
    # 18% of 3.33 = 0.5994 -> 0.60
    "GST: 3 lines of 1.11": Case(
        (_line("1", 111),) * 3, "18", None, 333, 0, 60, 393, ((111, 0, 20),) * 3
    ),
    # 18% of 0.30 = 0.054 -> 0.05 once, not 3 x (0.018 -> 0.02) = 0.06
    "GST: 3 lines of 0.10, one rounding not three": Case(
        (_line("1", 10),) * 3,
        "18",
        None,
        30,
        0,
        5,
        35,
        ((10, 0, 2), (10, 0, 2), (10, 0, 1)),
        (("18", 30, 5),),
    ),
    # 7.375% of 999.99 = 73.7492625 -> 73.75
    "a rate with three decimals": Case(
        (_line("1", 99_999),), "7.375", None, 99_999, 0, 7_375, 107_374, ((99_999, 0, 7_375),)
    ),
    # 5% of 333.33 = 16.6665 -> 16.67 on the line's own rate; 18% of (0.99 + 1.98) = 0.5346
    # -> 0.53 on the invoice's (per line it would have been 0.18 + 0.36)
    "mixed rates: a line at 5% on an 18% invoice": Case(
        (_line("1", 33_333, "5"), _line("1", 99), _line("2", 99)),
        "18",
        None,
        33_630,
        0,
        1_720,
        35_350,
        ((33_333, 0, 1_667), (99, 0, 18), (198, 0, 35)),
        (("5", 33_333, 1_667), ("18", 297, 53)),
    ),
    # 12.5% of 133.41 = 16.67625 -> 16.68, shared 12.50 / 4.17 / 0.01 (exact shares 12.504,
    # 4.167, 0.00875: the two largest remainders take the leftover paise); 18% of 116.73 =
    # 21.0114 -> 21.01, shared 15.75 / 5.25 / 0.01
    "percent discount 12.5% with remainders": Case(
        (_line("1", 10_001), _line("1", 3_333), _line("1", 7)),
        "18",
        _percent("12.5"),
        13_341,
        1_668,
        2_101,
        13_774,
        ((10_001, 1_250, 1_575), (3_333, 417, 525), (7, 1, 1)),
        (("18", 11_673, 2_101),),
    ),
    # 60.00 off 50.00: the discount stops at the subtotal, and nothing is left to tax
    "amount discount above the subtotal": Case(
        (_line("1", 5_000),),
        "18",
        _amount(6_000),
        5_000,
        5_000,
        0,
        0,
        ((5_000, 5_000, 0),),
        (("18", 0, 0),),
    ),
    # 25.00 off 30.00 + 10.00 (shared 18.75 / 6.25 -> 18.75 / 6.25); 18% of 15.00 = 2.70
    "amount discount shared by amount": Case(
        (_line("1", 3_000), _line("1", 1_000)),
        "18",
        _amount(2_500),
        4_000,
        2_500,
        270,
        1_770,
        ((3_000, 1_875, 203), (1_000, 625, 67)),
    ),
    # yen have no minor unit: 1.5 x 333 = 499.5 -> 500, 0.33 x 1000 = 330; 12.5% of 830 =
    # 103.75 -> 104 (63 / 41); 10% of 726 = 72.6 -> 73 (44 / 29)
    "JPY: exponent 0": Case(
        (_line("1.5", 333), _line("0.33", 1_000)),
        "10",
        _percent("12.5"),
        830,
        104,
        73,
        799,
        ((500, 63, 44), (330, 41, 29)),
        (("10", 726, 73),),
    ),
    # a zero-rated line on an 18% invoice pays no tax and shows no tax row of its own
    "zero-rated line": Case(
        (_line("1", 10_000, "0"), _line("1", 10_000)),
        "18",
        None,
        20_000,
        0,
        1_800,
        21_800,
        ((10_000, 0, 0), (10_000, 0, 1_800)),
        (("18", 10_000, 1_800),),
    ),
    "no tax at all": Case(
        (_line("2", 12_345),), "0", None, 24_690, 0, 0, 24_690, ((24_690, 0, 0),)
    ),
    "no lines": Case((), "18", _percent("10"), 0, 0, 0, 0, ()),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_awkward_invoices_total_exactly(case: Case) -> None:
    # given an awkward invoice
    # when its totals are computed
    totals = compute_totals(case.lines, tax_rate=Decimal(case.tax_rate), discount=case.discount)
    # then the totals are exactly those worked out by hand
    assert (
        totals.subtotal_minor,
        totals.discount_minor,
        totals.tax_minor,
        totals.total_minor,
    ) == (case.subtotal, case.discount_minor, case.tax, case.total)
    assert (
        tuple((t.amount_minor, t.discount_minor, t.tax_minor) for t in totals.lines)
        == case.line_totals
    )
    # and each line's amount is quantity x unit price rounded half up on its own
    assert [t.amount_minor for t in totals.lines] == [
        _half_up(line.quantity * line.unit_price_minor) for line in case.lines
    ]
    # and the lines' shares add up to the invoice's amounts exactly
    assert sum(t.amount_minor for t in totals.lines) == totals.subtotal_minor
    assert sum(t.discount_minor for t in totals.lines) == totals.discount_minor
    assert sum(t.tax_minor for t in totals.lines) == totals.tax_minor
    assert sum(tax.tax_minor for tax in totals.taxes) == totals.tax_minor
    assert totals.total_minor == totals.subtotal_minor - totals.discount_minor + totals.tax_minor
    if case.taxes:
        assert [(tax.rate, tax.taxable_minor, tax.tax_minor) for tax in totals.taxes] == [
            (Decimal(rate), taxable, tax) for rate, taxable, tax in case.taxes
        ]


def test_tax_is_rounded_once_per_rate() -> None:
    # given one line at 5% on an 18% invoice, and two lines at the invoice's 18%
    lines = [_line("1", 33_333, "5"), _line("1", 99), _line("2", 99)]
    # when the totals are computed
    totals = compute_totals(lines, tax_rate=Decimal(18), discount=None)
    # then each rate's tax is its rate applied to its lines' sum, rounded once, half up
    assert totals.taxes == (
        TaxTotal(rate=Decimal(5), taxable_minor=33_333, tax_minor=_half_up(Decimal("1666.65"))),
        TaxTotal(rate=Decimal(18), taxable_minor=297, tax_minor=_half_up(Decimal("53.46"))),
    )


def test_equal_rates_written_differently_are_one_rate() -> None:
    # given lines whose rates are 18, 18.0 and 18.000 (and the invoice's 18.00)
    lines = [_line("1", 10, "18"), _line("1", 10, "18.0"), _line("1", 10, "18.000"), _line("1", 10)]
    # when the totals are computed
    totals = compute_totals(lines, tax_rate=Decimal("18.00"), discount=None)
    # then they are taxed as one rate: 18% of 0.40 = 0.072 -> 0.07, not 4 x 0.02
    assert [(t.rate, t.taxable_minor, t.tax_minor) for t in totals.taxes] == [(18, 40, 7)]
    assert totals.tax_minor == 7


# --- the pieces --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("numerator", "denominator", "rounded"),
    [
        (0, 1, 0),
        (0, 7, 0),
        (1, 1, 1),
        (1, 2, 1),  # exactly half: up
        (1, 3, 0),
        (2, 3, 1),
        (3, 2, 2),
        (5, 2, 3),
        (149, 100, 1),
        (150, 100, 2),
        (249, 100, 2),
        (250, 100, 3),
        (4_999, 10_000, 0),
        (5_000, 10_000, 1),
        # far beyond a float's 53 bits: still exact
        (10**30 + 5, 10, 10**29 + 1),
        (10**30 + 4, 10, 10**29),
        (2 * 10**40 + 1, 2, 10**40 + 1),
    ],
)
def test_round_half_up(numerator: int, denominator: int, rounded: int) -> None:
    # given a fraction; when it is rounded; then it is the nearest integer, halves up
    assert round_half_up(numerator, denominator) == rounded
    with localcontext(prec=60):
        assert rounded == _half_up(Decimal(numerator) / Decimal(denominator))


@pytest.mark.parametrize(("numerator", "denominator"), [(-1, 2), (1, 0), (1, -2)])
def test_round_half_up_refuses_negative_and_zero(numerator: int, denominator: int) -> None:
    with pytest.raises(ValueError, match="non-negative numerator"):
        round_half_up(numerator, denominator)


def test_line_amount_refuses_a_third_decimal_place() -> None:
    # given a quantity with three places; then it is refused rather than rounded silently
    with pytest.raises(ValueError, match="more than 2 decimal places"):
        line_amount(Decimal("0.333"), 100)
    # while trailing zeros are only notation
    assert line_amount(Decimal("0.3300"), 100) == 33


def test_percent_of_refuses_a_fourth_decimal_place() -> None:
    with pytest.raises(ValueError, match="more than 3 decimal places"):
        percent_of(100, Decimal("12.5005"))
    assert percent_of(99_999, Decimal("7.375")) == 7_375


@pytest.mark.parametrize(
    ("total", "weights", "shares"),
    [
        (0, [1, 2, 3], [0, 0, 0]),
        (5, [], []),
        (5, [0, 0], [0, 0]),
        (10, [1], [10]),
        (2, [1, 1, 1], [1, 1, 0]),  # a tie: the earlier weight first
        (1, [1, 3], [0, 1]),  # the largest remainder, not the first
        (7, [0, 5, 0, 2], [0, 5, 0, 2]),
        (100, [1, 1, 1], [34, 33, 33]),
        (1_668, [10_001, 3_333, 7], [1_250, 417, 1]),
    ],
)
def test_allocate_examples(total: int, weights: list[int], shares: list[int]) -> None:
    assert allocate(total, weights) == shares


def test_allocate_shares_add_up_for_random_inputs() -> None:
    # given many random totals and weights (seeded: a failure can be replayed)
    rng = random.Random(20_260_504)
    for _ in range(3_000):
        weights = [rng.choice([0, 1, 7, rng.randrange(10**9)]) for _ in range(rng.randint(1, 12))]
        if not any(weights):
            weights[0] = 1
        total = rng.choice([0, 1, 2, rng.randrange(1_000), rng.randrange(10**12)])
        # when the total is shared out by the weights
        shares = allocate(total, weights)
        # then the shares add up to the total, none negative, and each is its exact
        # proportion rounded down or up (never further off)
        assert sum(shares) == total, (total, weights)
        exact = [Fraction(total * weight, sum(weights)) for weight in weights]
        for share, proportion in zip(shares, exact, strict=True):
            assert share >= 0
            assert abs(share - proportion) < 1, (total, weights, shares)
        # and a zero weight gets nothing
        assert all(share == 0 for share, weight in zip(shares, weights, strict=True) if not weight)


def test_totals_of_random_invoices_add_up() -> None:
    # given many random invoices with mixed rates and both kinds of discount (seeded)
    rng = random.Random(4)
    rates = [Decimal(0), Decimal(5), Decimal(12), Decimal(18), Decimal("7.375"), None]
    for _ in range(500):
        lines = [
            LineInput(
                Decimal(rng.randrange(1, 100_000)).scaleb(-2),
                rng.randrange(0, 10**7),
                rng.choice(rates),
            )
            for _ in range(rng.randint(1, 8))
        ]
        discount = rng.choice(
            [
                None,
                _percent(str(Decimal(rng.randrange(0, 100_001)).scaleb(-3))),
                _amount(rng.randrange(0, 10**9)),
            ]
        )
        invoice_rate = Decimal(rng.choice([0, 5, 18, 28]))
        # when the totals are computed
        totals = compute_totals(lines, tax_rate=invoice_rate, discount=discount)
        # then the subtotal and the discount follow the rule, computed independently
        subtotal = sum(_half_up(line.quantity * line.unit_price_minor) for line in lines)
        assert totals.subtotal_minor == subtotal
        if discount is None:
            assert totals.discount_minor == 0
        elif discount.kind == DiscountKind.PERCENT:
            assert discount.percent is not None
            assert totals.discount_minor == _half_up(subtotal * discount.percent / 100)
        else:
            assert totals.discount_minor == min(discount.amount_minor or 0, subtotal)
        # and each rate's tax is that rate of its lines' discounted amounts, rounded once
        for tax in totals.taxes:
            assert tax.tax_minor == _half_up(tax.taxable_minor * tax.rate / 100)
        # and every share adds up
        assert sum(t.discount_minor for t in totals.lines) == totals.discount_minor
        assert sum(t.tax_minor for t in totals.lines) == totals.tax_minor
        assert sum(t.taxable_minor for t in totals.taxes) + sum(
            t.amount_minor - t.discount_minor
            for t, line in zip(totals.lines, lines, strict=True)
            if (invoice_rate if line.tax_rate is None else line.tax_rate) == 0
        ) == (totals.subtotal_minor - totals.discount_minor)
        assert totals.total_minor == subtotal - totals.discount_minor + totals.tax_minor
