"""Invoice PDF: an A4 billing document rendered from plain values with fpdf2.

The renderer knows nothing of models or the database: the invoice service builds an
``InvoiceDocument`` and calls ``render_invoice_pdf`` (in a thread, as it is CPU work).
Each call builds its own FPDF object, so concurrent renders share no state, and the
same document always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

import font_source_sans_pro
from fpdf import FPDF
from fpdf.enums import Align, MethodReturnValue, XPos, YPos

from settle.core.money import Money, format_money


@dataclass(frozen=True, slots=True)
class Party:
    """The agency (issuer) or the client (bill to)."""

    name: str
    # Address lines, email, tax id...: each printed on its own line.
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DocumentLine:
    description: str
    quantity: Decimal
    unit_price: Money
    amount: Money
    # Percent; None when the invoice's rate applies (the cell stays empty).
    tax_rate: Decimal | None


@dataclass(frozen=True, slots=True)
class TaxLine:
    rate: Decimal  # percent
    amount: Money


@dataclass(frozen=True, slots=True)
class TotalRow:
    """A row of the totals block of a document that prints its own (a credit note)."""

    label: str
    amount: Money
    emphasised: bool = False


@dataclass(frozen=True, slots=True)
class InvoiceDocument:
    """Everything printed on an invoice, already computed by the invoice service.

    ``discount`` is the positive amount taken off (zero when none). A document
    without a number is printed as a draft even when ``draft`` is not set: an
    unnumbered invoice is never valid.

    Another billing document (a credit note) is printed the same way under its
    own ``title`` and ``party_heading``; its ``total_rows`` then replace the
    invoice's totals (subtotal to amount due), the last one shaded.
    """

    agency: Party
    client: Party
    number: str | None
    issue_date: date | None
    due_date: date | None
    currency: str
    lines: tuple[DocumentLine, ...]
    subtotal: Money
    discount: Money
    discount_label: str | None
    taxes: tuple[TaxLine, ...]
    tax: Money
    total: Money
    amount_paid: Money
    amount_due: Money
    notes: str | None = None
    terms: str | None = None
    payment_url: str | None = None
    draft: bool = False
    title: str = "Invoice"
    party_heading: str = "BILL TO"
    total_rows: tuple[TotalRow, ...] | None = None


def render_invoice_pdf(document: InvoiceDocument) -> bytes:
    """The invoice as PDF bytes; sync and self-contained, so callers may run it in a thread."""
    pdf = _InvoicePdf(document)
    pdf.render()
    return bytes(pdf.output())


_FONT_DIRECTORY = Path(font_source_sans_pro.font_directory)
_FONT = "SourceSansPro"

# A draft has no issue date; any fixed date keeps its bytes stable between renders.
_UNDATED = date(2000, 1, 1)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Colours (RGB) and sizes; lengths are millimetres, font sizes points.
_INK = (33, 37, 41)
_MUTED = (108, 117, 125)
_RULE = (206, 212, 218)
_SHADE = (241, 243, 245)
_LINK = (13, 82, 181)
_WATERMARK = (232, 232, 232)
_MARGIN = 18.0
_BOTTOM_MARGIN = 20.0
_BODY_SIZE = 9.5
_SMALL_SIZE = 8.0
_LINE_HEIGHT = 4.6
_ROW_PADDING = 1.4
_HEADING_HEIGHT = 7.0
_RUNNING_HEADER_HEIGHT = 10.0
_TOTAL_ROW_HEIGHT = 6.0
_PAYMENT_HEIGHT = 10.0

# Lines table: description takes what the fixed numeric columns leave.
_QTY_WIDTH = 16.0
_PRICE_WIDTH = 32.0
_TAX_WIDTH = 16.0
_AMOUNT_WIDTH = 32.0


class _InvoicePdf(FPDF):
    def __init__(self, document: InvoiceDocument) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.document = document
        self.is_draft = document.draft or document.number is None
        self.number_text = "Draft" if self.is_draft else str(document.number)
        # While the lines table flows, every new page starts with its heading row.
        self.table_open = False
        # Where the body starts on the current page, below the page and table headers,
        # and where the table's rows start on it.
        self.body_top = 0.0
        self.rows_top = 0.0

        for style, filename in (("", "SourceSansPro-Regular.ttf"), ("B", "SourceSansPro-Bold.ttf")):
            self.add_font(_FONT, style, str(_FONT_DIRECTORY / filename))
        self.set_margins(_MARGIN, _MARGIN, _MARGIN)
        self.set_auto_page_break(True, margin=_BOTTOM_MARGIN)
        self.c_margin = 1.5
        self.alias_nb_pages()
        self.set_title(f"{document.title} {self.number_text}")
        self.set_author(document.agency.name)
        self.set_creator("Settle")
        self.set_lang("en")
        self.set_creation_date(
            datetime.combine(document.issue_date or _UNDATED, time(), tzinfo=UTC)
        )

        self.description_width = self.epw - _QTY_WIDTH - _PRICE_WIDTH - _TAX_WIDTH - _AMOUNT_WIDTH

    # Page furniture (called by fpdf2 on every page) -----------------------------------

    def header(self) -> None:
        if self.is_draft:
            self._draft_mark()
        if self.page_no() > 1:
            self._running_header()
        if self.table_open:
            self._table_heading()
        self.body_top = self.y

    def footer(self) -> None:
        self.set_y(-(_BOTTOM_MARGIN - 4))
        if self.is_draft:
            self._font(_SMALL_SIZE, bold=True, color=_MUTED)
            self.cell(0, 4, "DRAFT — not a valid invoice", align=Align.C)
        self.set_y(-(_BOTTOM_MARGIN - 8.5))
        self._font(_SMALL_SIZE, color=_MUTED)
        self.cell(0, 4, f"Page {self.page_no()} of {{nb}}", align=Align.C)

    def _draft_mark(self) -> None:
        # Drawn first, so everything printed afterwards on the page lies on top of it.
        self._font(110, bold=True, color=_WATERMARK)
        width = self.get_string_width("DRAFT")
        center_x, center_y = self.w / 2, self.h / 2
        # text() places the baseline: half the capital height below the centre centres it.
        baseline = center_y + self.font_size * 0.33
        with self.rotation(45, x=center_x, y=center_y):
            self.text(center_x - width / 2, baseline, "DRAFT")
        self.set_xy(self.l_margin, self.t_margin)

    def _running_header(self) -> None:
        self._font(_SMALL_SIZE + 1, bold=True)
        self.cell(self.epw / 2, 5, self.document.agency.name)
        self._font(_SMALL_SIZE + 1, color=_MUTED)
        self.set_x(self.l_margin + self.epw / 2)
        self.cell(
            self.epw / 2,
            5,
            f"{self.document.title} {self.number_text}",
            align=Align.R,
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        self._rule(self.y + 1)
        self.set_y(self.t_margin + _RUNNING_HEADER_HEIGHT)

    # The document ---------------------------------------------------------------------

    def render(self) -> None:
        self.add_page()
        self._title_block()
        self._bill_to()
        self._lines_table()
        self._totals()
        if self.document.notes:
            self._section("Notes", self.document.notes)
        if self.document.terms:
            self._section("Terms", self.document.terms)

    def _title_block(self) -> None:
        document = self.document
        top = self.y
        left_width = self.epw * 0.55
        self._font(16, bold=True)
        self._paragraph(left_width, 7, document.agency.name)
        self._font(_BODY_SIZE, color=_MUTED)
        for detail in document.agency.details:
            self._paragraph(left_width, _LINE_HEIGHT, detail)
        left_bottom = self.y

        right_x = self.l_margin + left_width
        right_width = self.epw - left_width
        self.set_xy(right_x, top)
        self._font(20, bold=True)
        self.cell(
            right_width, 8, document.title.upper(), align=Align.R, new_x=XPos.LEFT, new_y=YPos.NEXT
        )
        self.set_y(self.y + 1)
        facts = [("Number", self.number_text)]
        if document.issue_date is not None:
            facts.append(("Issue date", _format_date(document.issue_date)))
        if document.due_date is not None:
            facts.append(("Due date", _format_date(document.due_date)))
        label_width, value_width = 24.0, 44.0
        for label, value in facts:
            self.set_x(right_x + right_width - label_width - value_width)
            self._font(_BODY_SIZE, color=_MUTED)
            self.cell(label_width, 5, label)
            self._font(_BODY_SIZE, bold=True)
            self._fitted_cell(value_width, 5, value)
            self.set_xy(self.l_margin, self.y + 5)
        self.set_y(max(left_bottom, self.y) + 8)

    def _bill_to(self) -> None:
        client = self.document.client
        self._font(_SMALL_SIZE, bold=True, color=_MUTED)
        self.cell(0, 4.5, self.document.party_heading, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self._font(11, bold=True)
        self._paragraph(self.epw * 0.6, 5.5, client.name)
        self._font(_BODY_SIZE, color=_MUTED)
        for detail in client.details:
            self._paragraph(self.epw * 0.6, _LINE_HEIGHT, detail)
        self.set_y(self.y + 7)

    # Lines table ----------------------------------------------------------------------

    def _table_heading(self) -> None:
        y = self.y
        self.set_fill_color(*_SHADE)
        self.rect(self.l_margin, y, self.epw, _HEADING_HEIGHT, style="F")
        self._font(_BODY_SIZE, bold=True)
        self.set_xy(self.l_margin, y)
        self.cell(self.description_width, _HEADING_HEIGHT, "Description")
        for width, label in (
            (_QTY_WIDTH, "Qty"),
            (_PRICE_WIDTH, "Unit price"),
            (_TAX_WIDTH, "Tax"),
            (_AMOUNT_WIDTH, "Amount"),
        ):
            self.cell(width, _HEADING_HEIGHT, label, align=Align.R)
        self.set_xy(self.l_margin, y + _HEADING_HEIGHT)
        self.rows_top = self.y

    def _lines_table(self) -> None:
        self._ensure_room(_HEADING_HEIGHT + _row_height(1))
        self._table_heading()
        self.table_open = True
        lines = self.document.lines
        for index, line in enumerate(lines):
            # The last row moves to the next page with the totals rather than leave
            # them alone on a page without any line.
            keep_with = self._totals_height() if index == len(lines) - 1 else 0.0
            self._line_row(line, keep_with)
        self.table_open = False

    def _line_row(self, line: DocumentLine, keep_with: float) -> None:
        """One table row; ``keep_with`` is the height that must follow it on its page."""
        self._font(_BODY_SIZE)
        wrapped = self._wrap(line.description, self.description_width) or [""]
        fresh_room = self.page_break_trigger - (
            self.t_margin + _RUNNING_HEADER_HEIGHT + _HEADING_HEIGHT
        )
        first = True
        while wrapped:
            room = self.page_break_trigger - self.y
            needed = _row_height(len(wrapped)) + keep_with
            # A row moves to the next page whole when it fits there; only a description
            # too long for any page is split, starting where it is. The page's first
            # row never moves: that would leave the heading alone on the page.
            at_top = self.y <= self.rows_top + 0.01
            if not at_top and needed > room and (needed <= fresh_room or room < _row_height(3)):
                self.add_page()
                continue
            fitting = max(1, int((room - 2 * _ROW_PADDING) / _LINE_HEIGHT + 1e-6))
            if needed > room and len(wrapped) > 2:
                # What must follow does not fit below the rest of the row: carry its last
                # lines over, so the next page does not start with the totals alone.
                fitting = min(fitting, len(wrapped) - 2)
            chunk, wrapped = wrapped[:fitting], wrapped[fitting:]
            self._draw_row(line if first else None, chunk)
            first = False
            if wrapped:
                self.add_page()

    def _draw_row(self, line: DocumentLine | None, description: Sequence[str]) -> None:
        top = self.y
        text_top = top + _ROW_PADDING
        self._font(_BODY_SIZE)
        for offset, text in enumerate(description):
            self.set_xy(self.l_margin, text_top + offset * _LINE_HEIGHT)
            self.cell(self.description_width, _LINE_HEIGHT, text)
        if line is not None:
            self.set_xy(self.l_margin + self.description_width, text_top)
            self._fitted_cell(_QTY_WIDTH, _LINE_HEIGHT, _format_decimal(line.quantity))
            self._fitted_cell(_PRICE_WIDTH, _LINE_HEIGHT, format_money(line.unit_price))
            rate = "" if line.tax_rate is None else f"{_format_decimal(line.tax_rate)}%"
            self._fitted_cell(_TAX_WIDTH, _LINE_HEIGHT, rate)
            self._fitted_cell(_AMOUNT_WIDTH, _LINE_HEIGHT, format_money(line.amount))
        bottom = top + _row_height(len(description))
        self._rule(bottom)
        self.set_xy(self.l_margin, bottom)

    def _wrap(self, text: str, width: float) -> list[str]:
        lines = self.multi_cell(
            width, _LINE_HEIGHT, _clean(text), dry_run=True, output=MethodReturnValue.LINES
        )
        # With output=LINES alone, fpdf2 returns just the list of wrapped lines.
        assert isinstance(lines, list)
        return lines

    # Totals and closing sections --------------------------------------------------------

    def _total_rows(self) -> list[tuple[str, str, bool]]:
        """(label, amount, emphasised) for each totals row, top to bottom."""
        document = self.document
        if document.total_rows is not None:
            return [
                (row.label, format_money(row.amount), row.emphasised) for row in document.total_rows
            ]
        rows = [("Subtotal", format_money(document.subtotal), False)]
        if document.discount.minor_units:
            label = document.discount_label or "Discount"
            rows.append((label, format_money(_negated(document.discount)), False))
        rows.extend(
            (f"Tax {_format_decimal(tax.rate)}%", format_money(tax.amount), False)
            for tax in document.taxes
        )
        rows.append(("Total", format_money(document.total), True))
        if document.amount_paid.minor_units:
            rows.append(("Paid", format_money(document.amount_paid), False))
        rows.append(("Amount due", format_money(document.amount_due), True))
        return rows

    def _totals_height(self) -> float:
        height = 4 + len(self._total_rows()) * _TOTAL_ROW_HEIGHT + 2
        if self.document.payment_url:
            height += _PAYMENT_HEIGHT
        return height

    def _totals(self) -> None:
        self._ensure_room(self._totals_height())
        self.set_y(self.y + 4)
        label_width, amount_width = 52.0, 40.0
        left = self.l_margin + self.epw - label_width - amount_width
        rows = self._total_rows()
        for index, (label, amount, emphasised) in enumerate(rows):
            is_due = index == len(rows) - 1
            if is_due:
                self.set_fill_color(*_SHADE)
                self.rect(left, self.y, label_width + amount_width, _TOTAL_ROW_HEIGHT, style="F")
            elif emphasised:
                self._rule(self.y, left=left)
            size = _BODY_SIZE + 1 if is_due else _BODY_SIZE
            self.set_x(left)
            self._font(size, bold=emphasised, color=_INK if emphasised else _MUTED)
            self.cell(label_width, _TOTAL_ROW_HEIGHT, _clean(label))
            self._font(size, bold=emphasised)
            self._fitted_cell(amount_width, _TOTAL_ROW_HEIGHT, amount)
            self.set_xy(self.l_margin, self.y + _TOTAL_ROW_HEIGHT)
        self.set_y(self.y + 2)
        if self.document.payment_url:
            self._payment_link(self.document.payment_url)

    def _payment_link(self, url: str) -> None:
        self.set_y(self.y + 4)
        self._font(_BODY_SIZE, bold=True)
        self.write(_LINE_HEIGHT, "Pay online: ")
        self._font(_BODY_SIZE, color=_LINK)
        self.write(_LINE_HEIGHT, url, link=url)
        self.set_xy(self.l_margin, self.y + _LINE_HEIGHT)

    def _section(self, heading: str, text: str) -> None:
        # A heading never ends a page: it keeps at least two lines of its text.
        self.set_y(self.y + 6)
        self._ensure_room(5 + 2 * _LINE_HEIGHT)
        self._font(_BODY_SIZE, bold=True)
        self.cell(0, 5, heading, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self._font(_BODY_SIZE, color=_MUTED)
        self._paragraph(self.epw, _LINE_HEIGHT, text)

    # Helpers ----------------------------------------------------------------------------

    def _font(self, size: float, *, bold: bool = False, color: tuple[int, int, int] = _INK) -> None:
        self.set_font(_FONT, "B" if bold else "", size)
        self.set_text_color(*color)

    def _paragraph(self, width: float, line_height: float, text: str) -> None:
        """Left-aligned wrapped text; the cursor goes back to the left margin below it."""
        self.multi_cell(
            width,
            line_height,
            _clean(text),
            align=Align.L,
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )

    def _fitted_cell(self, width: float, height: float, text: str) -> None:
        """A right-aligned cell whose text shrinks rather than run into its neighbour."""
        size = self.font_size_pt
        room = width - 2 * self.c_margin
        needed = self.get_string_width(text)
        if needed > room:
            self.set_font_size(size * room / needed)
        self.cell(width, height, text, align=Align.R)
        self.set_font_size(size)

    def _rule(self, y: float, *, left: float | None = None) -> None:
        start = self.l_margin if left is None else left
        self.set_draw_color(*_RULE)
        self.set_line_width(0.2)
        self.line(start, y, self.l_margin + self.epw, y)

    def _ensure_room(self, height: float) -> None:
        if self.y + height > self.page_break_trigger and self.y > self.body_top + 0.01:
            self.add_page()


def _row_height(line_count: int) -> float:
    return line_count * _LINE_HEIGHT + 2 * _ROW_PADDING


def _negated(money: Money) -> Money:
    return Money(-money.minor_units, money.currency)


def _format_decimal(value: Decimal) -> str:
    """A quantity or rate without trailing zeros: ``2.50`` prints ``2.5``, ``18.00`` ``18``."""
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


def _format_date(value: date) -> str:
    # Month names from a fixed table: the process locale must not change a document.
    return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"


def _clean(text: str) -> str:
    """Line breaks normalised and tabs as spaces: the font has no glyph for control characters."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
