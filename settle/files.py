"""Signed file URLs: ``PUT /files/upload/<token>`` and ``GET /files/download/<token>``.

The token is the whole permission (no bearer header), so a browser can send
the file straight from a form or follow a download link. Each request is its
own boundary: the upload streams to storage outside any transaction, then
marks the row ready in one; the download logs itself in one, then streams.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
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
    ValidationError,
)
from settle.core.outbox import transaction
from settle.core.signing import SignedTokenError
from settle.core.storage import ObjectNotFoundError, ObjectReader
from settle.services import deliverable as deliverable_service

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, **extra}, status_code=status)


def _app_error(exc: AppError) -> JSONResponse:
    if isinstance(exc, NotFoundError):
        return _error(404, exc.code, exc.message)
    if isinstance(exc, ConflictError):
        return _error(409, exc.code, exc.message)
    if isinstance(exc, AccessLockedError):
        return _error(403, exc.code, exc.message)
    if isinstance(exc, ValidationError):
        status = 415 if exc.code == "CONTENT_TYPE_MISMATCH" else 400
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


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact name in RFC 5987 form."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def file_routes() -> list[Route]:
    return [
        Route("/files/upload/{token}", upload, methods=["PUT"]),
        Route("/files/download/{token}", download, methods=["GET", "HEAD"]),
    ]
