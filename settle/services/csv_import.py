"""CSV import of clients (with their primary contact) and of contacts of existing clients.

The flow:

1. ``create_import`` makes the import row and a signed URL; the file is ``PUT`` to
   ``/files/imports/<token>`` (``open_upload`` / ``store_upload`` / ``complete_upload``),
   at most ``import_max_bytes``, exactly the declared size.
2. ``preview`` reads the file once through (encoding, delimiter, header, row count,
   kept on the row) and validates the first rows with the services' own rules.
3. ``start`` checks the mapping and sends ``csv_import.run`` through the outbox.
4. ``run`` (the job) streams the file and writes ``import_batch_size`` rows per
   transaction. Each batch also moves the checkpoint (``rows_done``) and the
   counters, under the import's row lock, so a job killed between batches starts
   again after the last committed one, and a second copy of the job (the janitor's,
   or a redelivery) skips what the first committed and never writes a row twice.

Rows are matched before they are written: a client by its external id when the row
has one, else by name (ignoring case); a contact by email within its client, else by
name. A match is skipped (``SKIP``) or updated with the row's non-empty cells
(``UPDATE``); an update that changes nothing counts as skipped. So importing the
same file again changes nothing.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from tortoise.exceptions import IntegrityError

from settle.core import clock
from settle.core.csv_cells import UTF8_BOM, text_cell, typed_text
from settle.core.csv_files import Dialect, Encoding, UnreadableFileError, dialect_of, records
from settle.core.db import get_visible, lock_rows
from settle.core.errors import (
    AppError,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.core.outbox import emit_event, send_job, transaction
from settle.core.pagination import Ordering, Page, paginate, paginate_each
from settle.core.settings import get_settings
from settle.core.signing import SignedUrl
from settle.core.storage import ObjectExistsError, StoredObject, get_storage
from settle.core.tenancy import MANAGERS, Actor, scoped
from settle.models.agency import Agency, User
from settle.models.client import Client, Contact
from settle.models.csv_import import (
    CsvImport,
    CsvImportError,
    CsvImportFailedRow,
    DuplicateAction,
    ImportEntity,
    ImportStatus,
)
from settle.services import activity, document_files
from settle.services import client as client_service
from settle.subscriptions import channels

log = logging.getLogger(__name__)

T = TypeVar("T")

RUN_JOB = "csv_import.run"
UPLOAD_PURPOSE = "import.upload"
FAILED_ROWS_PURPOSE = "import.failed_rows"
PREVIEW_ROWS = 20
MAX_MAPPING_COLUMNS = 200
# The header is row 1: the first data row is row 2, as a spreadsheet numbers it.
FIRST_DATA_ROW = 2
TERMINAL = frozenset({ImportStatus.COMPLETED, ImportStatus.FAILED})

# --- the columns -----------------------------------------------------------------------

CLIENT_TARGETS = (
    "name",
    "email",
    "phone",
    "address",
    "tax_id",
    "currency",
    "is_active",
    "external_id",
    "contact_name",
    "contact_email",
    "contact_phone",
    "contact_title",
)
CONTACT_TARGETS = (
    "client_external_id",
    "client_name",
    "name",
    "email",
    "phone",
    "title",
    "is_primary",
)
TARGETS = {ImportEntity.CLIENTS: CLIENT_TARGETS, ImportEntity.CONTACTS: CONTACT_TARGETS}

# Column names a spreadsheet may use for each target, squashed (lower case, letters
# and digits only), so "E-mail", "e_mail" and "EMAIL" all read "email".
_SYNONYMS: dict[ImportEntity, dict[str, tuple[str, ...]]] = {
    ImportEntity.CLIENTS: {
        "name": (
            "name",
            "company",
            "companyname",
            "client",
            "clientname",
            "organisation",
            "organization",
            "business",
            "customer",
            "customername",
        ),
        "email": ("email", "emailaddress", "mail"),
        "phone": ("phone", "phonenumber", "telephone", "tel"),
        "address": ("address", "billingaddress", "postaladdress"),
        "tax_id": ("taxid", "taxnumber", "vat", "vatid", "vatnumber", "gstin", "tin"),
        "currency": ("currency", "currencycode"),
        "is_active": ("isactive", "active"),
        "external_id": ("externalid", "extid", "externalreference"),
        "contact_name": ("contactname", "contact", "contactperson", "primarycontact"),
        "contact_email": ("contactemail", "contactemailaddress"),
        "contact_phone": ("contactphone", "contactphonenumber", "contacttelephone"),
        "contact_title": ("contacttitle", "contactjobtitle"),
    },
    ImportEntity.CONTACTS: {
        "client_external_id": ("clientexternalid", "clientextid"),
        "client_name": (
            "clientname",
            "client",
            "company",
            "companyname",
            "organisation",
            "organization",
            "customer",
        ),
        "name": ("name", "contactname", "fullname", "contact"),
        "email": ("email", "emailaddress", "mail", "contactemail"),
        "phone": ("phone", "phonenumber", "telephone", "tel", "mobile", "contactphone"),
        "title": ("title", "jobtitle", "position", "role"),
        "is_primary": ("isprimary", "primary", "primarycontact"),
    },
}

_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_CLIENT_FIELDS = ("name", "email", "phone", "address", "tax_id", "currency", "external_id")
_CONTACT_FIELDS = ("name", "email", "phone", "title")


def squash(column: str) -> str:
    return re.sub(r"[^a-z0-9]", "", column.lower())


def suggest_mapping(entity: ImportEntity, header: Sequence[str]) -> dict[str, str]:
    """Target -> column for the columns whose names say what they hold; the rest unmapped."""
    synonyms = _SYNONYMS[entity]
    mapping: dict[str, str] = {}
    used: set[int] = set()
    # Exact field names first (the export's own headers), then synonyms.
    for exact in (True, False):
        for target in TARGETS[entity]:
            if target in mapping:
                continue
            wanted = {squash(target)} if exact else set(synonyms[target])
            for index, column in enumerate(header):
                if index not in used and squash(column) in wanted:
                    mapping[target] = column
                    used.add(index)
                    break
    return {target: mapping[target] for target in TARGETS[entity] if target in mapping}


class ImportFileError(ValidationError):
    """The file as a whole cannot be imported (the code says why); nothing was written."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__("file", message, code=code)


class ImportNotUploadedError(ConflictError):
    code = "NOT_UPLOADED"


class ImportFinishedError(ConflictError):
    code = "IMPORT_FINISHED"


@dataclass(frozen=True, slots=True)
class ColumnChoice:
    """One column of the file and the field it fills (None: not imported)."""

    column: str
    target: str | None


def clean_mapping(
    entity: ImportEntity, header: Sequence[str], choices: Sequence[ColumnChoice] | None
) -> dict[str, str]:
    """The mapping asked for (the suggested one when None), checked against the header."""
    if choices is None:
        mapping = suggest_mapping(entity, header)
    else:
        if len(choices) > MAX_MAPPING_COLUMNS:
            raise ValidationError(
                "mapping", f"mapping has at most {MAX_MAPPING_COLUMNS} columns", code="TOO_LONG"
            )
        mapping = {}
        for index, choice in enumerate(choices):
            path = f"mapping[{index}]"
            if choice.column not in header:
                raise ValidationError(
                    f"{path}.column",
                    f"The file has no column {choice.column!r}",
                    code="UNKNOWN_COLUMN",
                )
            if choice.target is None or choice.target == "":
                continue
            if choice.target not in TARGETS[entity]:
                raise ValidationError(
                    f"{path}.target",
                    f"{choice.target!r} is not a field of {entity.value}; expected one of "
                    + ", ".join(TARGETS[entity]),
                    code="UNKNOWN_TARGET",
                )
            if choice.target in mapping:
                raise ValidationError(
                    f"{path}.target",
                    f"Two columns fill {choice.target}",
                    code="DUPLICATE",
                )
            mapping[choice.target] = choice.column
    if "name" not in mapping:
        raise ValidationError(
            "mapping", "No column is mapped to name", code="MISSING_REQUIRED_COLUMN"
        )
    if entity is ImportEntity.CONTACTS and not (
        "client_external_id" in mapping or "client_name" in mapping
    ):
        raise ValidationError(
            "mapping",
            "No column is mapped to client_external_id or client_name",
            code="MISSING_REQUIRED_COLUMN",
        )
    return mapping


# --- finding and creating imports ------------------------------------------------------


def _imports(actor: Actor) -> Any:
    # Imports are the agency's own working: client users never see them.
    return scoped(CsvImport, actor, client_field=None)


async def get_import(actor: Actor, import_id: uuid.UUID, *, lock: bool = False) -> CsvImport:
    """An import of the actor's agency, or NotFoundError (other agencies', client users)."""
    return await get_visible(_imports(actor), import_id, "Import", lock=lock)


async def list_imports(actor: Actor, *, first: int | None, after: str | None) -> Page[CsvImport]:
    """The agency's imports, newest first."""
    return await paginate(
        _imports(actor),
        first=first,
        after=after,
        ordering=Ordering("created_at", descending=True),
    )


@dataclass(frozen=True, slots=True)
class ImportUpload:
    csv_import: CsvImport
    upload: SignedUrl


def clean_upload(filename: str, size_bytes: int) -> tuple[str, int]:
    """A file name (not a path) and a size from 1 byte to ``import_max_bytes``."""
    return document_files.clean_declared_file(
        filename, size_bytes, limit=get_settings().import_max_bytes
    )


def _storage_key(agency_id: uuid.UUID, import_id: uuid.UUID) -> str:
    return f"imports/{agency_id}/{import_id}/source.csv"


async def create_import(
    actor: Actor, entity: ImportEntity, *, filename: str, size_bytes: int
) -> ImportUpload:
    """An import waiting for its file, and the signed URL to PUT the file to (owners, admins)."""
    actor.require(*MANAGERS)
    name, size = clean_upload(filename, size_bytes)
    import_id = uuid.uuid4()
    row = await CsvImport.create(
        id=import_id,
        agency_id=actor.agency_id,
        created_by_id=actor.user_id,
        entity=entity,
        filename=name,
        size_bytes=size,
        storage_key=_storage_key(actor.agency_id, import_id),
    )
    return ImportUpload(row, upload_url(row, actor))


def upload_url(row: CsvImport, actor: Actor) -> SignedUrl:
    return document_files.sign(
        UPLOAD_PURPOSE, "imports", {"i": str(row.id), "u": str(actor.user_id)}
    )


# --- receiving the file ------------------------------------------------------------------


class UploadRejectedError(ValidationError):
    """The body is not the file that was declared."""


@dataclass(frozen=True, slots=True)
class PendingUpload:
    csv_import: CsvImport
    actor: Actor


def _size_mismatch(size: int) -> UploadRejectedError:
    return UploadRejectedError(
        "sizeBytes", f"The body must be exactly {size} bytes, as declared", code="SIZE_MISMATCH"
    )


def _too_large() -> UploadRejectedError:
    limit = get_settings().import_max_bytes
    return UploadRejectedError(
        "sizeBytes", f"A CSV import is at most {limit} bytes", code="TOO_LARGE"
    )


async def _manageable(actor: Actor, import_id: uuid.UUID, *, lock: bool = False) -> CsvImport:
    row = await get_import(actor, import_id, lock=lock)
    actor.require(*MANAGERS)
    return row


async def open_upload(token: str, *, content_length: str | None) -> PendingUpload:
    """Check an upload URL before its body: the import still waits for this file.

    SignedTokenError for a forged or expired URL; NotFoundError, PermissionDeniedError;
    ConflictError once a file was received; UploadRejectedError for a bad Content-Length.
    """
    import_id, actor = await document_files.open_token(UPLOAD_PURPOSE, token)
    row = await _manageable(actor, import_id)
    if row.status is not ImportStatus.AWAITING_UPLOAD:
        raise ConflictError("This import already has its file")
    if content_length is not None:
        declared = content_length.strip()
        if declared.isdigit() and int(declared) > get_settings().import_max_bytes:
            raise _too_large()
        if declared != str(row.size_bytes):
            raise _size_mismatch(row.size_bytes)
    return PendingUpload(row, actor)


async def _checked(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """The chunks, failing (so storage keeps nothing) past the declared size or the limit."""
    limit = get_settings().import_max_bytes
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise _too_large()
        if received > size:
            raise _size_mismatch(size)
        yield chunk
    if received != size:
        raise _size_mismatch(size)


async def store_upload(pending: PendingUpload, chunks: AsyncIterator[bytes]) -> StoredObject:
    """Stream the body to the import's key (outside any transaction); all or nothing."""
    row = pending.csv_import
    try:
        return await get_storage().put(row.storage_key, _checked(chunks, row.size_bytes))
    except ObjectExistsError:
        raise ConflictError("This import already has its file") from None


async def complete_upload(pending: PendingUpload) -> CsvImport:
    """Mark the file received (inside the request's transaction)."""
    row = await lock_rows(CsvImport.filter(id=pending.csv_import.id)).first()
    if row is None:
        raise NotFoundError("Import", pending.csv_import.id)
    if row.status is not ImportStatus.AWAITING_UPLOAD:
        raise ConflictError("This import already has its file")
    row.status = ImportStatus.UPLOADED
    row.uploaded_at = clock.now()
    await row.save(update_fields=["status", "uploaded_at", "updated_at"])
    return row


async def discard_file(row: CsvImport) -> None:
    await get_storage().delete(row.storage_key)


# --- reading the file ----------------------------------------------------------------------


def _file_error(exc: UnreadableFileError) -> ImportFileError:
    return ImportFileError("UNPARSEABLE_FILE", str(exc))


def dialect(row: CsvImport) -> Dialect:
    if row.encoding is None or row.delimiter is None:
        raise RuntimeError("the import's file has not been inspected")
    return Dialect(Encoding(row.encoding), row.delimiter)


async def inspect(row: CsvImport) -> CsvImport:
    """Read the file once through: encoding, delimiter, header, data rows (kept on the row).

    ImportFileError UNPARSEABLE_FILE (not CSV text, no header) or TOO_MANY_ROWS.
    """
    if row.total_rows is not None:
        return row
    if row.status is ImportStatus.AWAITING_UPLOAD:
        raise ImportNotUploadedError("The file has not been uploaded yet")
    limit = get_settings().import_max_rows
    header: list[str] | None = None
    count = 0
    try:
        found = await dialect_of(row.storage_key)
        async with aclosing(records(row.storage_key, found)) as read:
            async for record in read:
                if header is None:
                    header = [cell.strip() for cell in record]
                    continue
                count += 1
                if count > limit:
                    raise ImportFileError(
                        "TOO_MANY_ROWS", f"An import has at most {limit} rows after the header"
                    )
    except UnreadableFileError as exc:
        raise _file_error(exc) from None
    if header is None:
        raise ImportFileError("UNPARSEABLE_FILE", "The file has no header row")
    row.encoding = found.encoding.value
    row.delimiter = found.delimiter
    row.header = header
    row.total_rows = count
    await CsvImport.filter(id=row.id).update(
        encoding=row.encoding,
        delimiter=row.delimiter,
        header=header,
        total_rows=count,
        updated_at=clock.now(),
    )
    return row


async def data_rows(row: CsvImport) -> AsyncGenerator[tuple[int, list[str]], None]:
    """(row number, cells) of every data row: the header is row 1, blank lines do not count."""
    number = 0
    try:
        async for record in records(row.storage_key, dialect(row)):
            number += 1
            if number >= FIRST_DATA_ROW:
                yield number, record
    except UnreadableFileError as exc:
        raise _file_error(exc) from None


# --- validating a row ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str | None
    code: str
    message: str


@dataclass(slots=True)
class ParsedRow:
    """A data row read through the mapping: the services' values, or its errors."""

    row: int
    cells: list[str]
    values: dict[str, Any] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)


def _cell(cells: Sequence[str], header: Sequence[str], column: str | None) -> str:
    if column is None:
        return ""
    index = header.index(column)
    return typed_text(cells[index]).strip() if index < len(cells) else ""


def _boolean(row: ParsedRow, column: str, raw: str) -> bool | None:
    value = _BOOLEANS.get(raw.lower())
    if value is None:
        row.errors.append(
            FieldError(column, "INVALID_BOOLEAN", f"{column} must be true, false, yes, no, 1 or 0")
        )
    return value


def _check(row: ParsedRow, column: str, clean: Any, key: str, raw: str) -> Any:
    """The value as the service cleans it, or the service's error recorded for the column."""
    try:
        return clean({key: raw})[key]
    except ValidationError as exc:
        row.errors.append(FieldError(column, exc.code, exc.message))
        return None


def parse_row(
    entity: ImportEntity,
    header: Sequence[str],
    mapping: dict[str, str],
    number: int,
    cells: list[str],
) -> ParsedRow:
    """Validate a row with the client service's rules; empty cells are left out."""
    row = ParsedRow(number, cells)
    raw = {target: _cell(cells, header, column) for target, column in mapping.items()}
    if entity is ImportEntity.CLIENTS:
        client: dict[str, Any] = {}
        for key in _CLIENT_FIELDS:
            if raw.get(key):
                client[key] = _check(
                    row, mapping[key], client_service.clean_client_fields, key, raw[key]
                )
        if raw.get("is_active"):
            client["is_active"] = _boolean(row, mapping["is_active"], raw["is_active"])
        if not raw.get("name"):
            row.errors.append(FieldError(mapping["name"], "REQUIRED", "name must not be empty"))
        contact: dict[str, Any] = {}
        for key in _CONTACT_FIELDS:
            target = f"contact_{key}"
            if raw.get(target):
                contact[key] = _check(
                    row, mapping[target], client_service.clean_contact_fields, key, raw[target]
                )
        if contact and "name" not in contact and not row.errors:
            column = mapping.get("contact_name")
            row.errors.append(
                FieldError(column, "REQUIRED", "contact_name is required for a contact")
            )
        row.values = {"client": client, "contact": contact}
    else:
        contact = {}
        for key in _CONTACT_FIELDS:
            if raw.get(key):
                contact[key] = _check(
                    row, mapping[key], client_service.clean_contact_fields, key, raw[key]
                )
        if not raw.get("name"):
            row.errors.append(FieldError(mapping["name"], "REQUIRED", "name must not be empty"))
        primary = None
        if raw.get("is_primary"):
            primary = _boolean(row, mapping["is_primary"], raw["is_primary"])
        external_id = None
        if raw.get("client_external_id"):
            external_id = _check(
                row,
                mapping["client_external_id"],
                client_service.clean_client_fields,
                "external_id",
                raw["client_external_id"],
            )
        client_name = raw.get("client_name") or None
        if external_id is None and client_name is None and not row.errors:
            column = mapping.get("client_external_id") or mapping.get("client_name")
            row.errors.append(
                FieldError(
                    column, "REQUIRED", "client_external_id or client_name must not be empty"
                )
            )
        row.values = {
            "contact": contact,
            "is_primary": primary,
            "client_external_id": external_id,
            "client_name": client_name,
        }
    return row


# --- preview ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preview:
    csv_import: CsvImport
    encoding: Encoding
    delimiter: str
    header: list[str]
    suggested_mapping: dict[str, str]
    mapping: dict[str, str]
    rows: list[ParsedRow]


async def preview(
    actor: Actor, import_id: uuid.UUID, choices: Sequence[ColumnChoice] | None
) -> Preview:
    """What the file is, the suggested mapping, and its first rows validated (owners, admins).

    ImportFinishedError once the import has finished: its file is no longer kept.
    """
    row = await _manageable(actor, import_id)
    if row.status in TERMINAL:
        raise ImportFinishedError("This import has finished; its file is no longer kept")
    row = await inspect(row)
    header = list(row.header or [])
    entity = ImportEntity(row.entity)
    mapping = clean_mapping(entity, header, choices)
    rows: list[ParsedRow] = []
    async with aclosing(data_rows(row)) as read:
        async for number, cells in read:
            rows.append(parse_row(entity, header, mapping, number, cells))
            if len(rows) >= PREVIEW_ROWS:
                break
    found = dialect(row)
    return Preview(
        row,
        found.encoding,
        found.delimiter,
        header,
        suggest_mapping(entity, header),
        mapping,
        rows,
    )


# --- start -------------------------------------------------------------------------------


async def start(
    actor: Actor,
    import_id: uuid.UUID,
    choices: Sequence[ColumnChoice] | None,
    on_duplicate: DuplicateAction,
) -> CsvImport:
    """Check the file and mapping, then queue the import's job (owners, admins), once."""
    row = await _manageable(actor, import_id, lock=True)
    if row.status is ImportStatus.AWAITING_UPLOAD:
        raise ImportNotUploadedError("The file has not been uploaded yet")
    if row.status is not ImportStatus.UPLOADED:
        raise InvalidTransitionError("Import", row.status.value, ImportStatus.QUEUED.value)
    row = await inspect(row)
    mapping = clean_mapping(ImportEntity(row.entity), list(row.header or []), choices)
    row.mapping = mapping
    row.on_duplicate = on_duplicate
    row.status = ImportStatus.QUEUED
    await row.save(update_fields=["mapping", "on_duplicate", "status", "updated_at"])
    await activity.record(
        actor,
        agency_id=row.agency_id,
        entity_type="import",
        entity_id=row.id,
        verb="started",
        summary=f"{actor.name} started importing {row.filename} ({row.total_rows} rows)",
        internal=True,
    )
    await _announce(row)
    await send_job(RUN_JOB, str(row.id))
    return row


# --- the job -------------------------------------------------------------------------------


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    SKIPPED = "skipped"


def progress_message(row: CsvImport) -> dict[str, Any]:
    return {
        "importId": str(row.id),
        "agencyId": str(row.agency_id),
        "status": row.status.value,
        "processed": row.rows_done,
        "total": row.total_rows,
        "created": row.created_count,
        "updated": row.updated_count,
        "skipped": row.skipped_count,
        "failed": row.failed_count,
    }


async def _announce(row: CsvImport) -> None:
    await emit_event(channels.imports(row.agency_id), progress_message(row))


async def _import_actor(row: CsvImport) -> Actor:
    """The user who started the import, if they may still import."""
    user = None
    if row.created_by_id is not None:
        user = await User.get_or_none(id=row.created_by_id, is_active=True)
    if user is None:
        raise PermissionDeniedError("The user who started this import can no longer import")
    actor = Actor.from_user(user)
    actor.require(*MANAGERS)
    return actor


def _changed(model: Any, values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if getattr(model, key) != value}


class RowRefusedError(AppError):
    """A row the import cannot apply; ``field`` is the file's column it concerns."""

    def __init__(self, field: str | None, code: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.code = code  # type: ignore[misc]


_SERVICE_FIELDS = {"taxId": "tax_id", "isActive": "is_active", "externalId": "external_id"}


def _column_of(service_field: str | None, mapping: dict[str, str]) -> str | None:
    """The file's column for a field a service named (``taxId`` -> the tax_id column)."""
    if service_field is None:
        return None
    target = _SERVICE_FIELDS.get(service_field, service_field)
    return mapping.get(target, service_field)


async def _contact_step(mapping: dict[str, str], step: Awaitable[T]) -> T:
    """Run a contact service call of a clients row; its errors name the contact_* column."""
    try:
        return await step
    except ValidationError as exc:
        column = None
        if exc.field is not None:
            target = f"contact_{_SERVICE_FIELDS.get(exc.field, exc.field)}"
            column = mapping.get(target, target)
        raise RowRefusedError(column, exc.code, exc.message) from None


async def _apply_client(
    actor: Actor, row: ParsedRow, mapping: dict[str, str], on_duplicate: DuplicateAction
) -> Outcome:
    client_values: dict[str, Any] = row.values["client"]
    contact_values: dict[str, Any] = row.values["contact"]
    existing = await client_service.find_client_for_import(
        actor.agency_id,
        external_id=client_values.get("external_id"),
        name=client_values.get("name"),
    )
    if existing is None:
        client = await client_service.create_client(actor, client_values)
        if contact_values:
            await _contact_step(
                mapping,
                client_service.create_contact(actor, client.id, contact_values, primary=True),
            )
        return Outcome.CREATED
    if on_duplicate is DuplicateAction.SKIP:
        return Outcome.SKIPPED
    changed = bool(_changed(existing, client_values))
    if changed:
        await client_service.update_client(actor, existing.id, client_values)
    if contact_values:
        contact = await _find_contact(existing.id, contact_values)
        if contact is None:
            await _contact_step(
                mapping,
                client_service.create_contact(actor, existing.id, contact_values, primary=True),
            )
            changed = True
        else:
            if _changed(contact, contact_values):
                await _contact_step(
                    mapping, client_service.update_contact(actor, contact.id, contact_values)
                )
                changed = True
            if not contact.is_primary:
                await client_service.set_primary_contact(actor, contact.id)
                changed = True
    return Outcome.UPDATED if changed else Outcome.SKIPPED


async def _find_contact(client_id: uuid.UUID, values: dict[str, Any]) -> Contact | None:
    """A client's contact the row means: by email, else (no email in the row) by name."""
    contacts = Contact.filter(client_id=client_id)
    if values.get("email"):
        return await contacts.filter(email__iexact=values["email"]).order_by("created_at").first()
    return await contacts.filter(name__iexact=values["name"]).order_by("created_at").first()


async def _apply_contact(
    actor: Actor, row: ParsedRow, mapping: dict[str, str], on_duplicate: DuplicateAction
) -> Outcome:
    external_id = row.values["client_external_id"]
    client_name = row.values["client_name"]
    client: Client | None = await client_service.find_client_for_import(
        actor.agency_id, external_id=external_id, name=client_name
    )
    if client is None:
        column = mapping["client_external_id"] if external_id else mapping["client_name"]
        raise RowRefusedError(column, "CLIENT_NOT_FOUND", "No client of the agency matches")
    contact_values: dict[str, Any] = row.values["contact"]
    primary: bool | None = row.values["is_primary"]
    existing = await _find_contact(client.id, contact_values)
    if existing is None:
        await client_service.create_contact(actor, client.id, contact_values, primary=bool(primary))
        return Outcome.CREATED
    if on_duplicate is DuplicateAction.SKIP:
        return Outcome.SKIPPED
    changed = False
    if _changed(existing, contact_values):
        await client_service.update_contact(actor, existing.id, contact_values)
        changed = True
    if primary and not existing.is_primary:
        await client_service.set_primary_contact(actor, existing.id)
        changed = True
    return Outcome.UPDATED if changed else Outcome.SKIPPED


async def _apply(
    actor: Actor, row_model: CsvImport, row: ParsedRow, mapping: dict[str, str]
) -> Outcome:
    if row_model.entity is ImportEntity.CLIENTS:
        return await _apply_client(actor, row, mapping, row_model.on_duplicate)
    return await _apply_contact(actor, row, mapping, row_model.on_duplicate)


async def _refuse(row_model: CsvImport, row: ParsedRow, errors: Sequence[FieldError]) -> None:
    await CsvImportFailedRow.create(
        agency_id=row_model.agency_id, csv_import_id=row_model.id, row=row.row, cells=row.cells
    )
    for error in errors:
        await CsvImportError.create(
            agency_id=row_model.agency_id,
            csv_import_id=row_model.id,
            row=row.row,
            field=error.field,
            code=error.code[:40],
            message=error.message[:500],
        )


@dataclass(slots=True)
class _Run:
    """One run of the job: where it stands and when it last announced progress."""

    import_id: uuid.UUID
    actor: Actor
    done: int
    announced_at: float = float("-inf")


class Committed(StrEnum):
    WRITTEN = "written"
    # Another run of the job moved the checkpoint: nothing written, ``done`` caught up.
    MOVED = "moved"
    # The import is no longer running (finished by another run, or gone).
    STOPPED = "stopped"


async def _commit_batch(run: _Run, batch: list[tuple[int, list[str]]], *, last: bool) -> Committed:
    """Write one batch and move the checkpoint, in one transaction.

    The batch starts at data row ``run.done + 1``. Under the import's row lock the
    checkpoint is read again: if another run of the job has moved it, nothing is
    written here and ``run.done`` catches up, so no row is applied twice.
    """
    settings = get_settings()
    async with transaction():
        row_model = await lock_rows(CsvImport.filter(id=run.import_id)).first()
        if row_model is None or row_model.status is not ImportStatus.RUNNING:
            return Committed.STOPPED
        if row_model.rows_done != run.done:
            run.done = row_model.rows_done
            return Committed.MOVED
        # Matching reads before it writes: two imports of one agency at once would both
        # miss a client the other is creating. Their batches take turns on the agency row.
        await lock_rows(Agency.filter(id=row_model.agency_id)).first()
        header = list(row_model.header or [])
        mapping = dict(row_model.mapping or {})
        entity = ImportEntity(row_model.entity)
        counts = dict.fromkeys(Outcome, 0)
        failed = 0
        for number, cells in batch:
            parsed = parse_row(entity, header, mapping, number, cells)
            errors = list(parsed.errors)
            if not errors:
                try:
                    # A savepoint per row: a row the services refuse leaves nothing behind.
                    async with transaction():
                        counts[await _apply(run.actor, row_model, parsed, mapping)] += 1
                        continue
                except RowRefusedError as exc:
                    errors = [FieldError(exc.field, exc.code, exc.message)]
                except ValidationError as exc:
                    errors = [FieldError(_column_of(exc.field, mapping), exc.code, exc.message)]
                except AppError as exc:
                    errors = [FieldError(None, exc.code, exc.message)]
                except IntegrityError:
                    errors = [
                        FieldError(
                            None, "CONFLICT", "The row conflicts with a change made meanwhile"
                        )
                    ]
            await _refuse(row_model, parsed, errors)
            failed += 1
        row_model.rows_done += len(batch)
        row_model.created_count += counts[Outcome.CREATED]
        row_model.updated_count += counts[Outcome.UPDATED]
        row_model.skipped_count += counts[Outcome.SKIPPED]
        row_model.failed_count += failed
        fields = [
            "rows_done",
            "created_count",
            "updated_count",
            "skipped_count",
            "failed_count",
            "updated_at",
        ]
        if last:
            row_model.status = ImportStatus.COMPLETED
            row_model.finished_at = clock.now()
            fields += ["status", "finished_at"]
            await activity.record(
                run.actor,
                agency_id=row_model.agency_id,
                entity_type="import",
                entity_id=row_model.id,
                verb="completed",
                summary=(
                    f"Import of {row_model.filename}: {row_model.created_count} created, "
                    f"{row_model.updated_count} updated, {row_model.skipped_count} skipped, "
                    f"{row_model.failed_count} failed"
                ),
                internal=True,
            )
        await row_model.save(update_fields=fields)
        now = time.monotonic()
        if last or now - run.announced_at >= settings.import_progress_interval_seconds:
            run.announced_at = now
            await _announce(row_model)
        run.done = row_model.rows_done
        return Committed.WRITTEN


async def _fail(import_id: uuid.UUID, error: AppError) -> None:
    log.warning(
        "csv_import.failed",
        extra={"import_id": str(import_id), "code": error.code, "error": error.message},
    )
    async with transaction():
        row = await lock_rows(CsvImport.filter(id=import_id)).first()
        if row is None or row.status in TERMINAL:
            return
        row.status = ImportStatus.FAILED
        row.failure_code = error.code[:40]
        row.failure_message = error.message[:500]
        row.finished_at = clock.now()
        await row.save(
            update_fields=["status", "failure_code", "failure_message", "finished_at", "updated_at"]
        )
        await activity.record(
            None,
            agency_id=row.agency_id,
            entity_type="import",
            entity_id=row.id,
            verb="failed",
            summary=f"Import of {row.filename} failed: {error.message}"[:500],
            internal=True,
        )
        await _announce(row)


async def run(import_id: uuid.UUID) -> None:
    """The job: import every row not yet committed, a batch per transaction, then finish.

    Safe to run twice, also at the same time: see ``_commit_batch``. A file or
    permission problem fails the import; anything else is raised for a retry, and
    the committed batches stay.
    """
    row = await CsvImport.get_or_none(id=import_id)
    if row is None or row.status not in (ImportStatus.QUEUED, ImportStatus.RUNNING):
        return
    try:
        actor = await _import_actor(row)
        row = await inspect(row)
    except AppError as exc:
        await _fail(import_id, exc)
        return
    async with transaction():
        claimed = await CsvImport.filter(
            id=import_id, status__in=[ImportStatus.QUEUED, ImportStatus.RUNNING]
        ).update(status=ImportStatus.RUNNING, updated_at=clock.now())
        if claimed and row.started_at is None:
            await CsvImport.filter(id=import_id, started_at__isnull=True).update(
                started_at=clock.now()
            )
    if not claimed:
        return
    try:
        await _import_rows(row, actor)
    except ImportFileError as exc:
        await _fail(import_id, exc)
    finished = await CsvImport.filter(id=import_id, status__in=list(TERMINAL)).exists()
    if finished:
        # Every row is in (or the file was refused): nothing reads the file again.
        await discard_file(row)


async def _import_rows(row: CsvImport, actor: Actor) -> None:
    """Stream the file and commit its rows after the checkpoint, a batch at a time."""
    state = _Run(row.id, actor, row.rows_done)
    batch_size = get_settings().import_batch_size
    batch: list[tuple[int, list[str]]] = []
    async with aclosing(data_rows(row)) as read:
        async for number, cells in read:
            if _index(number) <= state.done:
                continue
            batch.append((number, cells))
            if len(batch) < batch_size:
                continue
            last = _index(number) == row.total_rows
            batch, stopped = await _commit(state, batch, last=last)
            if stopped or last:
                return
    await _commit(state, batch, last=True)


def _index(number: int) -> int:
    """The data row's position (1 for the first after the header), what ``rows_done`` counts."""
    return number - FIRST_DATA_ROW + 1


async def _commit(
    state: _Run, batch: list[tuple[int, list[str]]], *, last: bool
) -> tuple[list[tuple[int, list[str]]], bool]:
    """Commit ``batch``; returns the rows still to write and whether the import stopped."""
    while True:
        committed = await _commit_batch(state, batch, last=last)
        if committed is Committed.WRITTEN:
            return [], False
        if committed is Committed.STOPPED:
            return [], True
        # Another run committed some of these rows: only the rest are this run's.
        batch = [item for item in batch if _index(item[0]) > state.done]
        if not last:
            return batch, False


# --- errors and the failed rows ------------------------------------------------------------


async def errors_of_imports(
    actor: Actor, import_ids: Sequence[uuid.UUID], *, first: int | None, after: str | None
) -> dict[uuid.UUID, Page[CsvImportError]]:
    """A page of row errors per import, by row, in a fixed number of queries."""
    return await paginate_each(
        scoped(CsvImportError, actor, client_field=None),
        "csv_import_id",
        import_ids,
        first=first,
        after=after,
        ordering=Ordering("row"),
    )


def failed_rows_url(actor: Actor, row: CsvImport) -> SignedUrl | None:
    """A signed URL of the failed rows as CSV; None while no row failed."""
    if row.failed_count == 0:
        return None
    return document_files.sign_for(FAILED_ROWS_PURPOSE, "import-failed-rows", row.id, actor)


async def open_failed_rows(token: str) -> CsvImport:
    """Check a failed-rows URL, and that its user may still see the import."""
    import_id, actor = await document_files.open_token(FAILED_ROWS_PURPOSE, token)
    return await get_import(actor, import_id)


def failed_rows_filename(row: CsvImport) -> str:
    stem = row.filename.rsplit(".", 1)[0] or "import"
    return f"{stem}-failed-rows.csv"


FAILED_ROWS_PAGE = 500


def _csv_line(cells: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow([text_cell(cell) for cell in cells])
    return out.getvalue()


def _error_text(errors: Sequence[CsvImportError]) -> str:
    return "; ".join(
        f"{error.field}: {error.message}" if error.field else error.message for error in errors
    )


async def failed_rows_csv(row: CsvImport) -> AsyncIterator[bytes]:
    """The failed rows as they were read plus an ``error`` column, every cell made safe."""
    header = list(row.header or [])
    yield (UTF8_BOM + _csv_line([*header, "error"])).encode()
    after = -1
    while True:
        failed = (
            await CsvImportFailedRow.filter(csv_import_id=row.id, row__gt=after)
            .order_by("row")
            .limit(FAILED_ROWS_PAGE)
        )
        if not failed:
            return
        errors: dict[int, list[CsvImportError]] = {}
        for error in await CsvImportError.filter(
            csv_import_id=row.id, row__in=[item.row for item in failed]
        ).order_by("row", "created_at"):
            errors.setdefault(error.row, []).append(error)
        lines = []
        for item in failed:
            # Cells past the header were never imported; the error column comes after it.
            cells = (list(item.cells) + [""] * len(header))[: len(header)]
            lines.append(_csv_line([*cells, _error_text(errors.get(item.row, []))]))
        yield "".join(lines).encode()
        after = failed[-1].row


# --- the janitor -----------------------------------------------------------------------------

UNFINISHED = (ImportStatus.QUEUED, ImportStatus.RUNNING)
