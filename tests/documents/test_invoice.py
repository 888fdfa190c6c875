"""Invoice PDFs are parsed back and checked for their numbers, pages and links."""

from __future__ import annotations

import dataclasses
import io
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pypdf import PdfReader

from settle.core.money import Money
from settle.documents.invoice import (
    DocumentLine,
    InvoiceDocument,
    Party,
    TaxLine,
    TotalRow,
    render_invoice_pdf,
)

NUMBER = "INV-2026-0042"
PAY_URL = "https://pay.settle.test/i/inv_0042"
TABLE_HEADING = "Description Qty Unit price Tax Amount"


def inr(amount: str) -> Money:
    return Money.parse(amount, "INR")


def usd(amount: str) -> Money:
    return Money.parse(amount, "USD")


def rupee_invoice(**changes: Any) -> InvoiceDocument:
    document = InvoiceDocument(
        agency=Party(
            "Northwind Studio LLP",
            ("12 Residency Road", "Bengaluru 560025", "GSTIN 29ABCDE1234F1Z5"),
        ),
        client=Party("Globex Retail Pvt Ltd", ("7 Marine Drive", "Mumbai 400002")),
        number=NUMBER,
        issue_date=date(2026, 3, 5),
        due_date=date(2026, 4, 4),
        currency="INR",
        lines=(
            DocumentLine(
                "Brand identity workshop",
                Decimal("1"),
                inr("60000"),
                inr("60000"),
                Decimal("18.00"),
            ),
            DocumentLine(
                "Design hours", Decimal("2.50"), inr("16000"), inr("40000"), Decimal("12.5")
            ),
            DocumentLine("Stock licence", Decimal("0.25"), inr("0"), inr("0"), None),
        ),
        subtotal=inr("100000"),
        discount=inr("10000"),
        discount_label="Discount (10%)",
        taxes=(TaxLine(Decimal("12.5"), inr("4500")), TaxLine(Decimal("18"), inr("9720"))),
        tax=inr("14220"),
        total=inr("104220"),
        amount_paid=inr("4220"),
        amount_due=inr("100000"),
        notes="Thank you for your business.",
        terms="Payable within 30 days.",
    )
    return dataclasses.replace(document, **changes)


def dollar_invoice(**changes: Any) -> InvoiceDocument:
    document = InvoiceDocument(
        agency=Party("Northwind Studio LLC"),
        client=Party("Initech Inc."),
        number="INV-2026-0007",
        issue_date=date(2026, 1, 15),
        due_date=None,
        currency="USD",
        lines=(DocumentLine("Annual retainer", Decimal("1"), usd("100000"), usd("100000"), None),),
        subtotal=usd("100000"),
        discount=usd("0"),
        discount_label=None,
        taxes=(),
        tax=usd("0"),
        total=usd("100000"),
        amount_paid=usd("0"),
        amount_due=usd("100000"),
    )
    return dataclasses.replace(document, **changes)


def many_lines(count: int) -> tuple[DocumentLine, ...]:
    return tuple(
        DocumentLine(
            f"Line item {index:03d} design and build",
            Decimal("1"),
            inr("1000"),
            inr("1000"),
            None,
        )
        for index in range(1, count + 1)
    )


def page_texts(data: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


def text_lines(data: bytes) -> list[str]:
    return [line for text in page_texts(data) for line in text.splitlines()]


def test_invoice_shows_parties_lines_and_totals_in_rupees() -> None:
    # given an INR invoice with a discount, two tax rates and a part payment
    document = rupee_invoice()
    # when it is rendered and read back
    data = render_invoice_pdf(document)
    lines = text_lines(data)
    # then it is one A4 page with the parties, every line and every total, grouped in lakhs
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) == 1
    assert (round(reader.pages[0].mediabox.width), round(reader.pages[0].mediabox.height)) == (
        595,
        842,
    )
    for expected in [
        "Northwind Studio LLP",
        "GSTIN 29ABCDE1234F1Z5",
        "INVOICE",
        f"Number {NUMBER}",
        "Issue date 5 Mar 2026",
        "Due date 4 Apr 2026",
        "BILL TO",
        "Globex Retail Pvt Ltd",
        "Mumbai 400002",
        TABLE_HEADING,
        "Brand identity workshop 1 ₹60,000.00 18% ₹60,000.00",
        "Design hours 2.5 ₹16,000.00 12.5% ₹40,000.00",
        "Stock licence 0.25 ₹0.00 ₹0.00",
        "Subtotal ₹1,00,000.00",
        "Discount (10%) -₹10,000.00",
        "Tax 12.5% ₹4,500.00",
        "Tax 18% ₹9,720.00",
        "Total ₹1,04,220.00",
        "Paid ₹4,220.00",
        "Amount due ₹1,00,000.00",
        "Notes",
        "Thank you for your business.",
        "Terms",
        "Payable within 30 days.",
        "Page 1 of 1",
    ]:
        assert expected in lines
    assert "DRAFT" not in "\n".join(lines)


def test_invoice_leaves_out_empty_totals_and_uses_the_currency_sign() -> None:
    # given a USD invoice without discount, tax or payment
    document = dollar_invoice()
    # when it is rendered
    lines = text_lines(render_invoice_pdf(document))
    # then only subtotal, total and amount due are printed, in dollars
    totals = [line for line in lines if line.startswith(("Subtotal", "Discount", "Tax", "Total"))]
    assert totals == ["Subtotal $100,000.00", "Total $100,000.00"]
    assert "Amount due $100,000.00" in lines
    assert "Annual retainer 1 $100,000.00 $100,000.00" in lines
    assert not [line for line in lines if line.startswith(("Paid", "Due date", "Pay online"))]


def test_discount_without_a_label_is_called_discount() -> None:
    # given a discount without a label
    document = rupee_invoice(discount_label=None)
    # then its row says "Discount"
    assert "Discount -₹10,000.00" in text_lines(render_invoice_pdf(document))


def test_metadata_names_the_invoice_and_its_date() -> None:
    # given an issued invoice
    # when it is rendered
    reader = PdfReader(io.BytesIO(render_invoice_pdf(rupee_invoice())))
    # then the PDF's title is the invoice's and its creation date is the issue date
    assert reader.metadata is not None
    assert reader.metadata.title == f"Invoice {NUMBER}"
    assert reader.metadata.author == "Northwind Studio LLP"
    assert reader.metadata.creation_date == datetime(2026, 3, 5, tzinfo=UTC)


def test_draft_is_marked_on_every_page_and_has_no_number() -> None:
    # given a draft without number or issue date, long enough for two pages
    document = rupee_invoice(number=None, issue_date=None, draft=True, lines=many_lines(40))
    # when it is rendered
    data = render_invoice_pdf(document)
    pages = page_texts(data)
    # then every page says it is a draft, and no number is printed anywhere
    assert len(pages) == 2
    for text in pages:
        assert "DRAFT — not a valid invoice" in text.splitlines()
        assert "DRAFT" in text.splitlines()
        assert "INV-" not in text
    assert "Number Draft" in pages[0].splitlines()
    assert "Invoice Draft" in pages[1]
    assert "Issue date" not in pages[0]
    reader = PdfReader(io.BytesIO(data))
    assert reader.metadata is not None
    assert reader.metadata.title == "Invoice Draft"


def test_invoice_without_a_number_is_printed_as_a_draft() -> None:
    # given a document without a number whose draft flag was not set
    document = rupee_invoice(number=None)
    # when it is rendered
    lines = text_lines(render_invoice_pdf(document))
    # then it still carries the draft mark: an unnumbered invoice is never valid
    assert "DRAFT — not a valid invoice" in lines
    assert "Number Draft" in lines


def test_long_invoice_repeats_heading_and_number_on_every_page() -> None:
    # given an invoice of 150 lines
    document = rupee_invoice(
        lines=many_lines(150), notes=None, terms=None, payment_url=None, amount_paid=inr("0")
    )
    # when it is rendered
    pages = page_texts(render_invoice_pdf(document))
    # then it flows onto several pages, each with the table heading, the number and its page
    assert len(pages) > 3
    for page_number, text in enumerate(pages, start=1):
        page_lines = text.splitlines()
        assert TABLE_HEADING in page_lines
        assert NUMBER in text
        assert f"Page {page_number} of {len(pages)}" in page_lines
    # pages after the first carry a header with the agency and the invoice number
    for text in pages[1:]:
        assert "Northwind Studio LLP Invoice INV-2026-0042" in text.splitlines()
    # every line is printed exactly once, in order
    printed = re.findall(r"Line item (\d{3}) design and build", "\n".join(pages))
    assert printed == [f"{index:03d}" for index in range(1, 151)]
    # and the totals close the last page, together with at least one line
    last_lines = pages[-1].splitlines()
    assert "Total ₹1,04,220.00" in last_lines
    assert "Amount due ₹1,00,000.00" in last_lines
    assert "Line item 150 design and build 1 ₹1,000.00 ₹1,000.00" in last_lines
    assert all("Total" not in text for text in pages[:-1])


def test_payment_link_is_printed_and_clickable() -> None:
    # given an invoice with an online payment page
    document = dollar_invoice(payment_url=PAY_URL)
    # when it is rendered
    data = render_invoice_pdf(document)
    # then the link is printed and annotated with its target
    assert f"Pay online: {PAY_URL}" in text_lines(data)
    page = PdfReader(io.BytesIO(data)).pages[0]
    targets = [annotation.get_object()["/A"]["/URI"] for annotation in page["/Annots"]]
    assert targets == [PAY_URL]


def test_same_document_renders_the_same_bytes() -> None:
    # given one document
    document = rupee_invoice(lines=many_lines(60), payment_url=PAY_URL)
    # when it is rendered twice in a row and four times at once in threads
    first = render_invoice_pdf(document)
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(render_invoice_pdf, [document] * 4))
    # then every render gives identical bytes
    assert render_invoice_pdf(document) == first
    assert concurrent == [first] * 4
    # and a different document gives different bytes
    assert render_invoice_pdf(rupee_invoice(number="INV-2026-0043")) != first


def test_long_description_wraps_within_its_column() -> None:
    # given a description of 2,000 characters of words, and one of 2,000 without a space
    words = " ".join(f"w{index:04d}" for index in range(333))[:2000]
    unbroken = "x" * 2000
    document = dollar_invoice(
        lines=(
            DocumentLine(words, Decimal("1"), usd("10"), usd("10"), None),
            DocumentLine(unbroken, Decimal("1"), usd("10"), usd("10"), None),
        )
    )
    # when it is rendered
    pages = page_texts(render_invoice_pdf(document))
    text = "\n".join(pages)
    # then both wrap over many lines and every character is printed
    assert re.findall(r"w\d{4}", text) == words.split()
    assert "".join(re.findall(r"^x+", text, flags=re.MULTILINE)) == unbroken
    assert max(len(line) for line in text.splitlines()) < 100
    assert "Total $100,000.00" in pages[-1].splitlines()


def test_description_longer_than_a_page_is_split_across_pages() -> None:
    # given one line whose description fills several pages
    description = " ".join(f"w{index:05d}" for index in range(4000))
    document = dollar_invoice(
        lines=(DocumentLine(description, Decimal("1"), usd("10"), usd("10"), None),)
    )
    # when it is rendered
    pages = page_texts(render_invoice_pdf(document))
    # then it continues page after page under the repeated heading, nothing lost
    assert len(pages) > 2
    assert all(TABLE_HEADING in text.splitlines() for text in pages)
    assert re.findall(r"w\d{5}", "\n".join(pages)) == description.split()
    assert "Total $100,000.00" in pages[-1].splitlines()


def test_amount_too_wide_for_its_column_still_prints_whole() -> None:
    # given the largest amount Money accepts
    largest = Money.parse("999999999999999.99", "INR")
    document = rupee_invoice(
        lines=(DocumentLine("Everything", Decimal("1"), largest, largest, None),)
    )
    # when it is rendered
    lines = text_lines(render_invoice_pdf(document))
    # then it is printed in full (in a smaller size) rather than cut
    assert "Everything 1 ₹99,99,99,99,99,99,999.99 ₹99,99,99,99,99,99,999.99" in lines


def test_a_credit_note_prints_its_own_title_heading_and_totals() -> None:
    # given a credit note laid out as a document of its own title, heading and totals
    credit = usd("250")
    document = dollar_invoice(
        number="CN-2026-0001",
        lines=(
            DocumentLine(
                "Credit against Invoice INV-2026-0007\nReason: Delivered late",
                Decimal("1"),
                credit,
                credit,
                None,
            ),
        ),
        subtotal=credit,
        total=credit,
        amount_due=usd("0"),
        title="Credit note",
        party_heading="CREDIT TO",
        total_rows=(TotalRow("Total credit", credit, emphasised=True),),
    )
    # when it is rendered
    data = render_invoice_pdf(document)
    lines = text_lines(data)
    # then it is titled a credit note, credits the client, and closes with its one total
    for expected in [
        "Northwind Studio LLC CREDIT NOTE",
        "Number CN-2026-0001",
        "Issue date 15 Jan 2026",
        "CREDIT TO",
        "Initech Inc.",
        "Credit against Invoice INV-2026-0007",
        "Reason: Delivered late",
        "1 $250.00 $250.00",
        "Total credit $250.00",
    ]:
        assert expected in lines
    text = "\n".join(lines)
    for absent in ("INVOICE", "BILL TO", "Subtotal", "Amount due", "Pay online", "DRAFT"):
        assert absent not in text
    reader = PdfReader(io.BytesIO(data))
    assert reader.metadata is not None
    assert reader.metadata.title == "Credit note CN-2026-0001"
