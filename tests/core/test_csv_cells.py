from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from settle.core.csv_cells import text_cell, typed_text, value_cell


@pytest.mark.parametrize(
    ("typed", "written"),
    [
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("Acme = fine", "Acme = fine"),
        ("", ""),
        (None, ""),
    ],
)
def test_text_cells_that_a_spreadsheet_would_evaluate_are_quoted(
    typed: str | None, written: str
) -> None:
    assert text_cell(typed) == written


def test_values_settle_formats_stay_as_they_are() -> None:
    assert value_cell(Decimal("-12.50")) == "-12.50"
    assert value_cell(7) == "7"
    assert value_cell(dt.date(2026, 1, 2)) == "2026-01-02"
    assert value_cell(None) == ""
    assert value_cell(True) == "true"
    assert value_cell("=cmd") == "'=cmd"


@pytest.mark.parametrize(
    "typed", ["=cmd", "+44 20", "-2+3", "@SUM", "\tx", "\rx", "'quoted'", "'", "plain"]
)
def test_a_quoted_cell_reads_back_as_it_was_typed(typed: str) -> None:
    assert typed_text(text_cell(typed)) == typed
