"""Cells of the CSV files Settle writes: exports and import error reports.

A spreadsheet treats a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or
a carriage return as a formula, so a client named ``=HYPERLINK(...)`` would run
on the reader's machine (OWASP "CSV injection"). Every cell that holds text a
user typed goes through :func:`text_cell`, which prefixes such a cell with a
single quote: the spreadsheet then shows the text as typed.

The import reads such a cell back as it was typed (:func:`typed_text`), so a file
Settle exported imports unchanged.

Figures Settle formats itself (amounts as decimal strings, ISO dates, ids) go
through :func:`value_cell`: a negative amount stays a number a spreadsheet can
add up, and anything else is treated as text.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

#: Written first, so spreadsheets open the file as UTF-8.
UTF8_BOM = "\ufeff"

_FORMULA_STARTS = frozenset("=+-@\t\r")


def text_cell(value: str | None) -> str:
    """``value`` as a cell no spreadsheet evaluates; ``None`` is an empty cell."""
    if not value:
        return ""
    if value[0] in _FORMULA_STARTS:
        return "'" + value
    return value


def typed_text(cell: str) -> str:
    """A cell :func:`text_cell` may have written, as it was typed: the guard quote dropped."""
    if len(cell) > 1 and cell[0] == "'" and cell[1] in _FORMULA_STARTS:
        return cell[1:]
    return cell


def value_cell(value: object) -> str:
    """A value Settle formatted itself: numbers and dates as they are, text made safe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return text_cell(str(value))
