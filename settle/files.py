"""Signed file URLs of deliverables and invoices.

- ``PUT /files/upload/<token>`` and ``GET /files/download/<token>``: deliverables.
- ``GET /files/invoices/<token>``: an invoice's document (uploaded or rendered PDF).
- ``GET /files/invoice-previews/<token>``: a draft invoice, rendered on each request.
- ``PUT /files/invoice-uploads/<token>``: a PDF issued elsewhere, attached to an invoice.
- ``GET /files/credit-notes/<token>``: a credit note's rendered PDF.
- ``GET /files/exports/<token>``: a completed CSV export.
- ``PUT /files/imports/<token>``: a CSV file to import (``createImport``).
- ``GET /files/import-failed-rows/<token>``: an import's refused rows, as CSV.

The token is the whole permission (no bearer header), so a browser can send
the file straight from a form or follow a download link. Each request is its
own boundary: an upload streams to storage outside any transaction, then
updates its row in one; a download logs itself in one, then streams.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from settle.core.errors import (
    AccessLockedError,
    AppError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.core.outbox import transaction
from settle.core.signing import SignedTokenError
from settle.core.storage import ObjectNotFoundError, ObjectReader
from settle.services import credit_note_files as credit_note_files_service
from settle.services import csv_import as csv_import_service
from settle.services import deliverable as deliverable_service
from settle.services import document_files
from settle.services import export as export_service
from settle.services import invoice_files as invoice_files_service

log = logging.getLogger(__name__)


# Upload refusals with a status of their own; every other validation error is a 400.
_VALIDATION_STATUS = {"CONTENT_TYPE_MISMATCH": 415, "NOT_A_PDF": 415, "TOO_LARGE": 413}


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, **extra}, status_code=status)


def _app_error(exc: AppError) -> JSONResponse:
    if isinstance(exc, NotFoundError):
        return _error(404, exc.code, exc.message)
    if isinstance(exc, ConflictError):
        return _error(409, exc.code, exc.message)
    if isinstance(exc, AccessLockedError | PermissionDeniedError):
        return _error(403, exc.code, exc.message)
    if isinstance(exc, ValidationError):
        status = _VALIDATION_STATUS.get(exc.code, 400)
        return _error(status, exc.code, exc.message, field=exc.field)
    return _error(400, exc.code, exc.message)


def _forbidden(exc: SignedTokenError) -> JSONResponse:
    return _error(403, exc.reason, str(exc))


async def upload(request: Request) -> Response:
    """Receive a deliverable's file: exactly the declared bytes and type, once."""
    token: str = request.path_params["token"]
    try:
        pending = await deliverable_service.open_upload(
            token,
            content_type=request.headers.get("content-type"),
            content_length=request.headers.get("content-length"),
        )
        stored = await deliverable_service.store_upload(pending, request.stream())
        try:
            async with transaction():
                deliverable = await deliverable_service.complete_upload(pending, stored)
        except BaseException:
            # The row did not take the file (deleted meanwhile, or the write failed).
            await deliverable_service.discard_file(pending.deliverable)
            raise
    except SignedTokenError as exc:
        return _forbidden(exc)
    except AppError as exc:
        return _app_error(exc)
    return JSONResponse(
        {
            "id": str(deliverable.id),
            "status": deliverable.status.value,
            "sizeBytes": deliverable.size_bytes,
            "checksum": deliverable.checksum_sha256,
        }
    )


async def download(request: Request) -> Response:
    """Serve a deliverable's file to the holder of a download URL, logging each download."""
    token: str = request.path_params["token"]
    try:
        found = await deliverable_service.open_download(token)
    except SignedTokenError as exc:
        return _forbidden(exc)
    except AppError as exc:
        return _app_error(exc)
    deliverable = found.deliverable
    headers = {
        "Content-Type": deliverable.content_type,
        "Content-Length": str(deliverable.size_bytes),
        "Content-Disposition": content_disposition(deliverable.filename),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    }
    if deliverable.checksum_sha256:
        headers["ETag"] = f'"{deliverable.checksum_sha256}"'
    if request.method == "HEAD":
        return Response(headers=headers)
    try:
        reader = await deliverable_service.read_file(deliverable)
    except ObjectNotFoundError:
        log.error("deliverable.file_missing", extra={"deliverable_id": str(deliverable.id)})
        return _error(404, "NOT_FOUND", "Deliverable not found")
    try:
        async with transaction():
            await deliverable_service.record_download(found)
    except BaseException:
        await reader.aclose()
        raise
    return StreamingResponse(_stream(reader), headers=headers)


async def _stream(reader: ObjectReader) -> AsyncIterator[bytes]:
    try:
        async for chunk in reader:
            yield chunk
    finally:
        await reader.aclose()


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """``attachment`` (or ``inline``) with an ASCII fallback name and the exact name (RFC 5987)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


# --- invoices and credit notes ------------------------------------------------------------


def _file_headers(
    filename: str,
    *,
    content_type: str = document_files.PDF_CONTENT_TYPE,
    disposition: str = "attachment",
) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        "Content-Disposition": content_disposition(filename, disposition),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    }


async def _send_stored(
    request: Request,
    *,
    key: str,
    filename: str,
    content_type: str = document_files.PDF_CONTENT_TYPE,
    size_bytes: int | None,
    what: str,
    log_event: str,
    log_context: dict[str, str],
    record: Callable[[], Awaitable[None]] | None = None,
) -> Response:
    """Stream a stored file, a PDF unless ``content_type`` says otherwise (HEAD: its headers);
    ``record`` logs the download in a transaction.

    A file storage has lost is logged (``log_event``) and answered 404 "<what> not found".
    """
    headers = _file_headers(filename, content_type=content_type)
    if size_bytes is not None:
        headers["Content-Length"] = str(size_bytes)
    if request.method == "HEAD":
        response = Response(headers=headers)
        if size_bytes is None:
            # A rendered PDF's length is not kept; "0" would misstate the body a GET sends.
            del response.headers["content-length"]
        return response
    try:
        reader = await document_files.read_file(key)
    except ObjectNotFoundError:
        log.error(log_event, extra=log_context)
        return _error(404, "NOT_FOUND", f"{what} not found")
    if record is not None:
        try:
            async with transaction():
                await record()
        except BaseException:
            await reader.aclose()
            raise
    return StreamingResponse(_stream(reader), headers=headers)


async def invoice_download(request: Request) -> Response:
    """Serve an invoice's document (its uploaded PDF, else the rendered one)."""
    token: str = request.path_params["token"]
    try:
        found = await invoice_files_service.open_download(token)
    except SignedTokenError as exc:
        return _forbidden(exc)
    except AppError as exc:
        return _app_error(exc)
    return await _send_stored(
        request,
        key=found.key,
        filename=found.filename,
        size_bytes=found.size_bytes,
        what="Invoice PDF",
        log_event="invoice.file_missing",
        log_context={"invoice_id": str(found.invoice.id)},
        record=lambda: invoice_files_service.record_download(found),
    )


async def credit_note_download(request: Request) -> Response:
    """Serve a credit note's rendered PDF."""
    token: str = request.path_params["token"]
    try:
        found = await credit_note_files_service.open_download(token)
    except SignedTokenError as exc:
        return _forbidden(exc)
    except AppError as exc:
        return _app_error(exc)
    return await _send_stored(
        request,
        key=found.key,
        filename=found.filename,
        size_bytes=None,
        what="Credit note PDF",
        log_event="credit_note.file_missing",
        log_context={"credit_note_id": str(found.credit_note.id)},
    )


async def invoice_preview(request: Request) -> Response:
    """Render a draft invoice as it stands now, marked DRAFT, to show in the browser."""
    token: str = request.path_params["token"]
    try:
        invoice = await invoice_files_service.open_preview(token)
        body = await invoice_files_service.render_preview(invoice)
    except SignedTokenError as exc:
        return _forbidden(exc)
    except AppError as exc:
        return _app_error(exc)
    headers = _file_headers(invoice_files_service.document_filename(invoice), disposition="inline")
    return Response(body, headers=headers)


async def invoice_upload(request: Request) -> Response:
    """Receive a PDF issued elsewhere and make it the invoice's document."""
    token: str = request.path_params["token"]
    try:
        pending = await invoice_files_service.open_upload(
            token, content_length=request.headers.get("content-length")
        )
        stored = await invoice_files_service.store_upload(pending, request.stream())
        try:
            async with transaction():
                completed = await invoice_files_service.complete_upload(pending, stored)
        except BaseException:
            # The invoice did not take the file (deleted or voided meanwhile, or the write failed).
            await invoice_files_service.discard_file(pending.key)
            raise
    except SignedTokenError as exc:
        return _forbidden(exc)
    except AppError as exc:
        return _app_error(exc)
    if completed.replaced_key is not None:
        await invoice_files_service.discard_file(completed.replaced_key)
    invoice = completed.invoice
    return JSONResponse(
        {
            "id": str(invoice.id),
            "filename": invoice.uploaded_pdf_filename,
            "sizeBytes": invoice.uploaded_pdf_size,
            "uploadedAt": invoice.uploaded_pdf_at.isoformat() if invoice.uploaded_pdf_at else None,
        }
    )


async def export_download(request: Request) -> Response:
    """Serve a completed CSV export to the holder of its download URL."""
    token: str = request.path_params["token"]
    try:
        export = await export_service.open_download(token)
    except SignedTokenError as exc:
        return _forbidden(exc)
    except AppError as exc:
        return _app_error(exc)
    assert export.file_key is not None  # open_download finds only completed exports
    return await _send_stored(
        request,
        key=export.file_key,
        filename=export_service.filename(export),
        content_type=export_service.CSV_CONTENT_TYPE,
        size_bytes=export.size_bytes,
        what="Export file",
        log_event="export.file_missing",
        log_context={"export_id": str(export.id)},
    )


# --- CSV imports ---------------------------------------------------------------------------


async def import_upload(request: Request) -> Response:
    """Receive the CSV file of an import: exactly the declared bytes, once."""
    token: str = request.path_params["token"]
    try:
        pending = await csv_import_service.open_upload(
            token, content_length=request.headers.get("content-length")
        )
        stored = await csv_import_service.store_upload(pending, request.stream())
        try:
            async with transaction():
                row = await csv_import_service.complete_upload(pending)
        except BaseException:
            await csv_import_service.discard_file(pending.csv_import)
            raise
    except SignedTokenError as exc:
        return _forbidden(exc)
    except AppError as exc:
        return _app_error(exc)
    return JSONResponse({"id": str(row.id), "status": row.status.name, "sizeBytes": stored.size})


async def import_failed_rows(request: Request) -> Response:
    """An import's refused rows as CSV, with an error column; cells safe for spreadsheets."""
    token: str = request.path_params["token"]
    try:
        row = await csv_import_service.open_failed_rows(token)
    except SignedTokenError as exc:
        return _forbidden(exc)
    except AppError as exc:
        return _app_error(exc)
    headers = {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": content_disposition(csv_import_service.failed_rows_filename(row)),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    }
    return StreamingResponse(csv_import_service.failed_rows_csv(row), headers=headers)


def file_routes() -> list[Route]:
    return [
        Route("/files/upload/{token}", upload, methods=["PUT"]),
        Route("/files/download/{token}", download, methods=["GET", "HEAD"]),
        Route("/files/invoices/{token}", invoice_download, methods=["GET", "HEAD"]),
        Route("/files/invoice-previews/{token}", invoice_preview, methods=["GET"]),
        Route("/files/invoice-uploads/{token}", invoice_upload, methods=["PUT"]),
        Route("/files/credit-notes/{token}", credit_note_download, methods=["GET", "HEAD"]),
        Route("/files/exports/{token}", export_download, methods=["GET", "HEAD"]),
        Route("/files/imports/{token}", import_upload, methods=["PUT"]),
        Route("/files/import-failed-rows/{token}", import_failed_rows, methods=["GET"]),
    ]
