"""Invoice files through the real ASGI app: PDF downloads, draft previews, uploaded PDFs.

Each test makes invoices through the services, gets signed URLs from them, and
uses the URLs as the agency's and its client's users would.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fpdf import FPDF

from settle.core import clock
from settle.core.outbox import transaction
from settle.core.settings import configure_settings, get_settings
from settle.models.activity import ActivityEvent
from settle.models.agency import Role, User
from settle.models.client import Client
from settle.models.invoice import Invoice, InvoiceStatus
from settle.services import invoice as invoice_service
from settle.services import invoice_files
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.files import forged_url, pdf_headers, pdf_text, stored_files, tamper

pytestmark = pytest.mark.usefixtures("files_dir")

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
PDF_HEADERS = pdf_headers("INV-2026-0001.pdf")


@dataclass
class Clock:
    now: datetime


@pytest.fixture(autouse=True)
def frozen() -> Iterator[Clock]:
    current = Clock(NOW)
    clock.set_clock(lambda: current.now)
    yield current
    clock.set_clock(None)


def small_pdf(text: str) -> bytes:
    """A real one-page PDF saying ``text``, as another invoicing tool would produce."""
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=14)
    pdf.cell(text=text)
    return bytes(pdf.output())


def small_png() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


async def stream(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    """A request body sent in chunks, without a Content-Length (as a proxy might)."""
    for i in range(0, len(body), size):
        yield body[i : i + size]


@dataclass
class Setup:
    client: Client
    invoice: Invoice
    viewer: Account


async def draft(owner: Account, client: Client) -> Invoice:
    async with transaction():
        return await invoice_service.create_invoice(
            owner.actor,
            client.id,
            None,
            {"tax_rate": "18"},
            [
                {"description": "Brand identity", "quantity": "1", "unit_price": "2000"},
                {"description": "Landing page", "quantity": "3", "unit_price": "250.50"},
            ],
        )


async def finalize(owner: Account, invoice: Invoice) -> Invoice:
    async with transaction():
        return await invoice_service.finalize_invoice(owner.actor, invoice.id)


async def setup_issued(db: Backend, owner: Account) -> Setup:
    """An issued invoice INV-2026-0001 of $2,751.50 + 18%, rendered, and a client viewer."""
    client = await create_client(owner, name="Acme", currency="USD")
    invoice = await finalize(owner, await draft(owner, client))
    # The worker renders the PDF after finalization.
    await db.drain()
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client, name="Vic Viewer")
    return Setup(client, await Invoice.get(id=invoice.id), viewer)


async def pdf_url(account: Account, invoice: Invoice) -> str:
    signed = await invoice_files.pdf_url(account.actor, invoice.id)
    assert signed is not None
    return signed.url


async def upload_url(account: Account, invoice: Invoice, body: bytes, **values: Any) -> str:
    created = await invoice_files.create_upload(
        account.actor,
        invoice.id,
        filename=values.get("filename", "acme-0001.pdf"),
        size_bytes=values.get("size_bytes", len(body)),
    )
    return created.upload.url


UPLOAD_FIELDS = (
    "uploaded_pdf_key",
    "uploaded_pdf_filename",
    "uploaded_pdf_size",
    "uploaded_pdf_at",
)


async def upload_fields(invoice: Invoice) -> tuple[Any, ...]:
    row = await Invoice.get(id=invoice.id)
    return tuple(getattr(row, field) for field in UPLOAD_FIELDS)


# --- downloading the PDF ----------------------------------------------------------------


async def test_the_owner_and_the_clients_user_download_the_pdf(
    db: Backend, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given an issued invoice with its rendered PDF
    setup = await setup_issued(db, owner)
    stored = stored_files(files_dir)[str(setup.invoice.pdf_key)]

    # when the owner downloads it
    response = await http.get(await pdf_url(owner, setup.invoice))

    # then it gets the stored PDF, named after the number, never cached
    assert response.status_code == 200
    assert {key: response.headers.get(key) for key in PDF_HEADERS} == PDF_HEADERS
    assert response.content == stored
    text = pdf_text(response.content)
    for expected in ("INV-2026-0001", "Brand identity", "Landing page", "$751.50", "$3,246.77"):
        assert expected in text, expected
    # and the agency's download does not count as the client viewing it
    assert (await Invoice.get(id=setup.invoice.id)).status == InvoiceStatus.SENT

    # when the client's own user downloads it
    response = await http.get(await pdf_url(setup.viewer, setup.invoice))

    # then it gets the same PDF, and the invoice is marked viewed, once
    assert (response.status_code, response.content) == (200, stored)
    row = await Invoice.get(id=setup.invoice.id)
    assert (row.status, row.viewed_at) == (InvoiceStatus.VIEWED, NOW)
    again = await http.get(await pdf_url(setup.viewer, setup.invoice))
    assert again.status_code == 200
    viewed = await ActivityEvent.filter(entity_id=setup.invoice.id, verb="viewed")
    assert [(e.actor_id, e.summary) for e in viewed] == [
        (setup.viewer.user.id, "Invoice INV-2026-0001 viewed by Vic Viewer")
    ]


async def test_head_describes_the_pdf_without_opening_it(
    db: Backend, http: httpx.AsyncClient, owner: Account
) -> None:
    # given an issued invoice and its client's download URL
    setup = await setup_issued(db, owner)
    url = await pdf_url(setup.viewer, setup.invoice)
    # when the URL is asked for its headers only
    head = await http.head(url)
    # then they describe the PDF (a rendered one's length is not known before reading it),
    # and the invoice is not marked viewed
    assert head.status_code == 200
    assert {key: head.headers.get(key) for key in PDF_HEADERS} == PDF_HEADERS
    assert "content-length" not in head.headers
    assert (await Invoice.get(id=setup.invoice.id)).viewed_at is None


async def test_users_who_cannot_see_the_invoice_get_not_found(
    db: Backend, http: httpx.AsyncClient, owner: Account, rival: Account
) -> None:
    # given an issued invoice, and URLs signed for users who cannot (or no longer) see it
    setup = await setup_issued(db, owner)
    other = await create_client(owner, name="Other", currency="USD")
    other_user = await create_user(owner, role=Role.CLIENT_LEAD, client=other)
    waiting = await draft(owner, setup.client)
    attempts = [
        forged_url("invoices", "invoice.download", setup.invoice.id, rival.user),
        forged_url("invoices", "invoice.download", setup.invoice.id, other_user.user),
        forged_url("invoices", "invoice.preview", setup.invoice.id, rival.user).replace(
            "/files/invoices/", "/files/invoice-previews/"
        ),
    ]
    # and the client's URL of an invoice that is a draft (it has no document)
    draft_url = forged_url("invoices", "invoice.download", waiting.id, setup.viewer.user)

    # when each is used
    responses = [await http.get(url) for url in [*attempts, draft_url]]

    # then each finds nothing
    assert [(r.status_code, r.json()) for r in responses] == [
        (404, {"code": "NOT_FOUND", "message": "Invoice not found"})
    ] * 4
    assert (await Invoice.get(id=setup.invoice.id)).viewed_at is None


async def test_a_deactivated_user_or_a_tampered_or_expired_url_is_forbidden(
    frozen: Clock, db: Backend, http: httpx.AsyncClient, owner: Account
) -> None:
    # given download URLs of the owner and of the client's user
    setup = await setup_issued(db, owner)
    owner_url = await pdf_url(owner, setup.invoice)
    viewer_url = await pdf_url(setup.viewer, setup.invoice)
    forbidden = {"code": "INVALID_SIGNATURE", "message": "Invalid signature"}

    # when one is altered, used on another route, or its user is deactivated
    await User.filter(id=setup.viewer.user.id).update(is_active=False)
    attempts = [
        await http.get(tamper(owner_url)),
        await http.get(owner_url.replace("/files/invoices/", "/files/invoice-previews/")),
        await http.get(owner_url.replace("/files/invoices/", "/files/download/")),
        await http.get("/files/invoices/not-a-token"),
        await http.get(viewer_url),
    ]
    # then each is forbidden
    assert [(r.status_code, r.json()) for r in attempts] == [
        (403, forbidden),
        (403, forbidden),
        (403, forbidden),
        (403, forbidden),
        (403, {"code": "INVALID_SIGNATURE", "message": "This link is no longer valid"}),
    ]

    # when the owner's URL is used 15 minutes later
    frozen.now = NOW + timedelta(minutes=15)
    late = await http.get(owner_url)
    # then it has expired
    assert (late.status_code, late.json()) == (
        403,
        {"code": "URL_EXPIRED", "message": "This link has expired"},
    )


async def test_a_pdf_lost_from_storage_is_not_found(
    db: Backend, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given an issued invoice whose stored PDF has gone
    setup = await setup_issued(db, owner)
    url = await pdf_url(setup.viewer, setup.invoice)
    (files_dir / str(setup.invoice.pdf_key)).unlink()
    # when it is downloaded
    response = await http.get(url)
    # then there is nothing to serve, and nothing counts as viewed
    assert (response.status_code, response.json()) == (
        404,
        {"code": "NOT_FOUND", "message": "Invoice PDF not found"},
    )
    assert (await Invoice.get(id=setup.invoice.id)).viewed_at is None


# --- previewing a draft -------------------------------------------------------------------


async def test_a_draft_preview_renders_the_draft_as_it_stands(
    http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given a draft and its preview URL
    client = await create_client(owner, name="Acme", currency="USD")
    invoice = await draft(owner, client)
    url = (await invoice_files.preview_url(owner.actor, invoice.id)).url

    # when it is previewed
    response = await http.get(url)

    # then the draft is rendered, marked DRAFT, shown inline and never cached
    assert response.status_code == 200
    assert {key: response.headers.get(key) for key in PDF_HEADERS} == {
        **PDF_HEADERS,
        "content-disposition": (
            "inline; filename=\"draft-invoice.pdf\"; filename*=UTF-8''draft-invoice.pdf"
        ),
    }
    text = pdf_text(response.content)
    for expected in ("DRAFT", "Brand identity", "Landing page", "$3,246.77"):
        assert expected in text, expected
    assert "INV-" not in text
    # and nothing is stored
    assert stored_files(files_dir) == {}

    # when the draft changes and the same URL is used again
    async with transaction():
        await invoice_service.add_invoice_line(
            owner.actor,
            invoice.id,
            {"description": "Copywriting", "quantity": "1", "unit_price": "100"},
        )
    again = pdf_text((await http.get(url)).content)
    # then the preview shows the change
    assert "Copywriting" in again
    assert "$3,364.77" in again

    # when the draft is issued
    await finalize(owner, invoice)
    issued = await http.get(url)
    # then its preview is gone: the issued invoice has its PDF
    assert (issued.status_code, issued.json()["code"]) == (409, "CONFLICT")


async def test_a_preview_is_refused_to_a_user_no_longer_managing_invoices(
    http: httpx.AsyncClient, owner: Account
) -> None:
    # given an admin's preview URL of a draft
    client = await create_client(owner, name="Acme", currency="USD")
    invoice = await draft(owner, client)
    admin = await create_user(owner, role=Role.ADMIN)
    url = (await invoice_files.preview_url(admin.actor, invoice.id)).url
    # when the admin becomes a member and uses it
    await User.filter(id=admin.user.id).update(role=Role.MEMBER)
    response = await http.get(url)
    # then it is forbidden
    assert (response.status_code, response.json()["code"]) == (403, "PERMISSION_DENIED")


# --- uploading a PDF ------------------------------------------------------------------------


async def test_an_uploaded_pdf_becomes_the_invoices_document(
    frozen: Clock, db: Backend, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given an issued invoice with its rendered PDF, and a PDF issued elsewhere
    setup = await setup_issued(db, owner)
    rendered = stored_files(files_dir)
    body = small_pdf("Acme invoice 0001 issued by our accounting system")
    url = await upload_url(owner, setup.invoice, body)

    # when the PDF is PUT to the upload URL, in chunks
    frozen.now = NOW + timedelta(minutes=2)
    response = await http.put(url, content=stream(body, 1000))

    # then the invoice holds it, under a key of its own beside the rendered PDF
    row = await Invoice.get(id=setup.invoice.id)
    assert (response.status_code, response.json()) == (
        200,
        {
            "id": str(setup.invoice.id),
            "filename": "acme-0001.pdf",
            "sizeBytes": len(body),
            "uploadedAt": "2026-05-04T09:32:00+00:00",
        },
    )
    assert str(row.uploaded_pdf_key).startswith(f"invoices/{owner.agency_id}/{row.id}/uploads/")
    assert stored_files(files_dir) == {**rendered, str(row.uploaded_pdf_key): body}
    assert (row.uploaded_pdf_filename, row.uploaded_pdf_size, row.uploaded_pdf_at) == (
        "acme-0001.pdf",
        len(body),
        NOW + timedelta(minutes=2),
    )
    # and the timeline says who attached what
    events = await ActivityEvent.filter(entity_id=row.id, verb="pdf_uploaded")
    assert [(e.actor_id, e.client_id, e.summary, e.changes) for e in events] == [
        (
            owner.user.id,
            setup.client.id,
            "Invoice INV-2026-0001: Olive Owner uploaded acme-0001.pdf as its PDF",
            {
                "uploaded_pdf_at": {"before": None, "after": "2026-05-04T09:32:00+00:00"},
                "uploaded_pdf_filename": {"before": None, "after": "acme-0001.pdf"},
                "uploaded_pdf_size": {"before": None, "after": len(body)},
            },
        )
    ]
    # and the client downloads the uploaded PDF now, with its length
    download = await http.get(await pdf_url(setup.viewer, setup.invoice))
    assert (download.status_code, download.content) == (200, body)
    assert download.headers["content-length"] == str(len(body))
    head = await http.head(await pdf_url(setup.viewer, setup.invoice))
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(body)))
    assert download.headers["content-disposition"] == PDF_HEADERS["content-disposition"]
    assert "our accounting system" in pdf_text(download.content)
    # and the email worker attaches it
    assert await invoice_files.document(row) == ("INV-2026-0001.pdf", body)

    # when the same URL is used again
    reused = await http.put(url, content=body)
    # then it is refused, and the stored files are untouched
    assert (reused.status_code, reused.json()["code"]) == (409, "CONFLICT")
    assert stored_files(files_dir) == {**rendered, str(row.uploaded_pdf_key): body}


async def test_a_new_upload_replaces_the_previous_one(
    http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given a draft with an uploaded PDF
    client = await create_client(owner, name="Acme", currency="USD")
    invoice = await draft(owner, client)
    first = small_pdf("first version")
    assert (
        await http.put(await upload_url(owner, invoice, first), content=first)
    ).status_code == 200
    first_key = (await Invoice.get(id=invoice.id)).uploaded_pdf_key

    # when a second PDF is uploaded
    second = small_pdf("second version")
    url = await upload_url(owner, invoice, second, filename="v2.pdf")
    response = await http.put(url, content=second)

    # then it is stored under a new key and the first file is removed
    row = await Invoice.get(id=invoice.id)
    assert response.status_code == 200
    assert row.uploaded_pdf_key != first_key
    assert stored_files(files_dir) == {str(row.uploaded_pdf_key): second}
    assert (row.uploaded_pdf_filename, row.status) == ("v2.pdf", InvoiceStatus.DRAFT)
    assert await ActivityEvent.filter(entity_id=invoice.id, verb="pdf_uploaded").count() == 2
    # and the draft's document is the upload, under the draft's name
    download = await http.get(await pdf_url(owner, invoice))
    assert (download.status_code, download.content) == (200, second)
    assert download.headers["content-disposition"] == (
        "attachment; filename=\"draft-invoice.pdf\"; filename*=UTF-8''draft-invoice.pdf"
    )


async def test_racing_uploads_of_one_url_store_one_file(
    http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given an upload URL of a draft
    client = await create_client(owner, name="Acme", currency="USD")
    invoice = await draft(owner, client)
    # Two different PDFs of one size (a PDF may end in white space after its %%EOF).
    left, right = small_pdf("left"), small_pdf("right")
    size = max(len(left), len(right))
    body_a, body_b = left.ljust(size, b"\n"), right.ljust(size, b"\n")
    url = await upload_url(owner, invoice, body_a)

    # when two uploads to it run at once
    responses = await asyncio.gather(
        *(http.put(url, content=stream(body, 500)) for body in (body_a, body_b))
    )

    # then one is taken and the other refused, and one file is kept
    assert sorted(r.status_code for r in responses) == [200, 409]
    winner = (body_a, body_b)[[r.status_code for r in responses].index(200)]
    row = await Invoice.get(id=invoice.id)
    assert stored_files(files_dir) == {str(row.uploaded_pdf_key): winner}
    assert await ActivityEvent.filter(entity_id=invoice.id, verb="pdf_uploaded").count() == 1


PDF = small_pdf("A real invoice")
PNG = small_png()

WRONG_UPLOADS: dict[str, tuple[Any, int, dict[str, str], int, str]] = {
    "a PNG named .pdf": (PNG, len(PNG), {}, 415, "NOT_A_PDF"),
    "a PNG, streamed": (lambda: stream(PNG, 3), len(PNG), {}, 415, "NOT_A_PDF"),
    "cut short of %%EOF": (PDF[:-200], len(PDF) - 200, {}, 415, "NOT_A_PDF"),
    "%%EOF far from the end": (PDF + b" " * 2000, len(PDF) + 2000, {}, 415, "NOT_A_PDF"),
    "one byte more": (PDF + b"\n", len(PDF), {}, 400, "SIZE_MISMATCH"),
    "one byte less": (PDF[:-1], len(PDF), {}, 400, "SIZE_MISMATCH"),
    "more, streamed": (lambda: stream(PDF + b"\n" * 5000), len(PDF), {}, 400, "SIZE_MISMATCH"),
    "less, streamed": (lambda: stream(PDF[:-1]), len(PDF), {}, 400, "SIZE_MISMATCH"),
    "empty": (b"", len(PDF), {}, 400, "SIZE_MISMATCH"),
    "a length over the limit": (
        lambda: stream(PDF),
        len(PDF),
        {"Content-Length": str(10 * 1024 * 1024 + 1)},
        413,
        "TOO_LARGE",
    ),
}


@pytest.mark.parametrize("case", list(WRONG_UPLOADS), ids=list(WRONG_UPLOADS))
async def test_a_wrong_body_leaves_nothing(
    db: Backend, http: httpx.AsyncClient, owner: Account, files_dir: Path, case: str
) -> None:
    # given an issued invoice with its rendered PDF, and an upload URL for it
    setup = await setup_issued(db, owner)
    body, declared, headers, status, code = WRONG_UPLOADS[case]
    url = await upload_url(owner, setup.invoice, b"", size_bytes=declared)
    files = stored_files(files_dir)
    counts = await row_counts(Invoice)
    # when a body that is not the declared PDF is PUT
    response = await http.put(url, content=body() if callable(body) else body, headers=headers)
    # then it is refused with the reason
    assert (response.status_code, response.json()["code"]) == (status, code)
    # and nothing is stored, not even a partial file, and no row changed
    assert stored_files(files_dir) == files
    assert await row_counts(Invoice) == counts
    assert await upload_fields(setup.invoice) == (None, None, None, None)


async def test_a_body_over_the_limit_is_cut_off_while_streaming(
    http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given uploads limited to 64 KiB, and a PDF declared at exactly the limit
    limit = 64 * 1024
    configure_settings(get_settings().model_copy(update={"invoice_upload_max_bytes": limit}))
    client = await create_client(owner, name="Acme", currency="USD")
    invoice = await draft(owner, client)
    url = await upload_url(owner, invoice, b"", size_bytes=limit)
    # when a larger body is streamed without a length
    body = PDF + b" " * limit
    response = await http.put(url, content=stream(body, 8192))
    # then it is refused as too large, and nothing is stored
    assert (response.status_code, response.json()["code"]) == (413, "TOO_LARGE")
    assert stored_files(files_dir) == {}
    assert await upload_fields(invoice) == (None, None, None, None)


async def test_uploads_are_refused_to_void_invoices_and_non_managers(
    db: Backend, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given upload URLs of an admin and of the owner for an issued invoice
    setup = await setup_issued(db, owner)
    admin = await create_user(owner, role=Role.ADMIN)
    admin_url = await upload_url(admin, setup.invoice, PDF)
    owner_url = await upload_url(owner, setup.invoice, PDF)
    files = stored_files(files_dir)

    # when the admin becomes a member, and the invoice is voided, before the PDFs arrive
    await User.filter(id=admin.user.id).update(role=Role.MEMBER)
    demoted = await http.put(admin_url, content=PDF)
    async with transaction():
        await invoice_service.void_invoice(owner.actor, setup.invoice.id, "Wrong client")
    voided = await http.put(owner_url, content=PDF)

    # then both are refused and nothing is kept
    assert [(r.status_code, r.json()["code"]) for r in (demoted, voided)] == [
        (403, "PERMISSION_DENIED"),
        (409, "CONFLICT"),
    ]
    assert stored_files(files_dir) == files
    assert await upload_fields(setup.invoice) == (None, None, None, None)


async def test_tampered_and_expired_upload_urls_are_forbidden(
    frozen: Clock, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given an upload URL of a draft
    client = await create_client(owner, name="Acme", currency="USD")
    invoice = await draft(owner, client)
    url = await upload_url(owner, invoice, PDF)
    # when it is altered, used as a download URL, or used 15 minutes later
    tampered = await http.put(tamper(url), content=PDF)
    misused = await http.get(url.replace("/files/invoice-uploads/", "/files/invoices/"))
    frozen.now = NOW + timedelta(minutes=15)
    late = await http.put(url, content=PDF)
    # then each is forbidden, and nothing is stored
    forbidden = {"code": "INVALID_SIGNATURE", "message": "Invalid signature"}
    assert [(r.status_code, r.json()) for r in (tampered, misused, late)] == [
        (403, forbidden),
        (403, forbidden),
        (403, {"code": "URL_EXPIRED", "message": "This link has expired"}),
    ]
    assert stored_files(files_dir) == {}
    assert await upload_fields(invoice) == (None, None, None, None)
