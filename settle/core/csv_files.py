"""Reading CSV files people upload: encoding, delimiter and records, streamed from storage.

Spreadsheets write CSV in a few dialects. Settle reads:

- UTF-8, with or without the byte order mark Excel puts first, and otherwise
  Windows-1252 (what Excel on Windows writes as "CSV"), chosen by reading the
  whole file once: a file that is valid UTF-8 throughout is UTF-8;
- a comma, semicolon, tab or pipe between cells (Excel in many European locales
  writes semicolons), chosen from the first 64 KiB;
- RFC 4180 quoting: quoted cells may hold delimiters, doubled quotes and line breaks.

A file is never held whole in memory: records are parsed from the decoded text
in pieces that end at a record boundary (after a line break outside quotes).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from enum import StrEnum

from settle.core.storage import get_storage

UTF8_BOM_BYTES = codecs.BOM_UTF8
SAMPLE_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t", "|")
# csv's default field limit (128 KiB) is far above any cell Settle keeps.
MAX_CELL_CHARACTERS = 131_072


class Encoding(StrEnum):
    UTF8 = "utf-8"
    UTF8_BOM = "utf-8-sig"
    WINDOWS_1252 = "cp1252"


class UnreadableFileError(Exception):
    """The bytes are not a CSV file Settle can read (binary, bad encoding, broken quoting)."""


@dataclass(frozen=True, slots=True)
class Dialect:
    encoding: Encoding
    delimiter: str


async def detect_encoding(key: str) -> Encoding:
    """UTF-8 (with or without BOM) when the whole file decodes as UTF-8, else Windows-1252.

    UnreadableFileError for a file with NUL bytes (a spreadsheet's binary format,
    UTF-16) or a BOM followed by bytes that are not UTF-8.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    head = b""
    utf8 = True
    reader = await get_storage().open(key)
    try:
        async for chunk in reader:
            if len(head) < len(UTF8_BOM_BYTES):
                head = (head + chunk)[: len(UTF8_BOM_BYTES)]
            if b"\x00" in chunk:
                raise UnreadableFileError("The file is not text (it holds NUL bytes)")
            if utf8:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    utf8 = False
    finally:
        await reader.aclose()
    if utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    bom = head == UTF8_BOM_BYTES
    if bom and not utf8:
        raise UnreadableFileError("The file starts as UTF-8 but is not UTF-8 throughout")
    if utf8:
        return Encoding.UTF8_BOM if bom else Encoding.UTF8
    return Encoding.WINDOWS_1252


async def _text(key: str, encoding: Encoding) -> AsyncGenerator[str, None]:
    """The file's decoded text, chunk by chunk; UnreadableFileError for undecodable bytes."""
    decoder = codecs.getincrementaldecoder(encoding.value)()
    reader = await get_storage().open(key)
    try:
        async for chunk in reader:
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError:
                raise UnreadableFileError(f"The file is not valid {encoding.value}") from None
            if text:
                yield text
        try:
            tail = decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UnreadableFileError(f"The file is not valid {encoding.value}") from None
        if tail:
            yield tail
    finally:
        await reader.aclose()


async def detect_delimiter(key: str, encoding: Encoding) -> str:
    """The delimiter that splits the first lines into the most columns, consistently."""
    sample = ""
    # aclosing: leaving the loop early closes the stored file now, not when collected.
    async with aclosing(_text(key, encoding)) as texts:
        async for text in texts:
            sample += text
            if len(sample) >= SAMPLE_BYTES:
                break
    cut = _record_boundary(sample)
    lines = sample[:cut] if cut else sample
    best, best_score = ",", (0, 0)
    for delimiter in DELIMITERS:
        try:
            rows = [row for row in _parse(lines, delimiter) if row]
        except UnreadableFileError:
            continue
        if not rows:
            continue
        width = len(rows[0])
        if width < 2:
            continue
        # Rows as wide as the header, then the header's width: a delimiter that merely
        # occurs inside some cells splits few rows the header's way.
        score = (sum(1 for row in rows if len(row) == width), width)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _record_boundary(text: str) -> int:
    """The length of the longest prefix of ``text`` that ends a record (0 if none does).

    A line break ends a record when the quotes before it are balanced: RFC 4180
    doubles a quote inside a quoted cell, so an odd count means a cell is still open.
    """
    quotes = 0
    position = 0
    cut = 0
    for line in text.split("\n")[:-1]:
        position += len(line) + 1
        quotes += line.count('"')
        if quotes % 2 == 0:
            cut = position
    return cut


def _parse(text: str, delimiter: str) -> Iterator[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    try:
        yield from reader
    except csv.Error as exc:
        raise UnreadableFileError(f"The file is not valid CSV ({exc})") from None


async def records(key: str, dialect: Dialect) -> AsyncGenerator[list[str], None]:
    """Every non-blank record of the file, the header first; UnreadableFileError on bad bytes."""
    pending = ""
    async for text in _text(key, dialect.encoding):
        pending += text
        cut = _record_boundary(pending)
        if cut:
            for row in _parse(pending[:cut], dialect.delimiter):
                if _has_content(row):
                    yield row
            pending = pending[cut:]
        if len(pending) > MAX_CELL_CHARACTERS * 8:
            # An unbalanced quote keeps a record open: csv reads the rest as one cell.
            raise UnreadableFileError("The file is not valid CSV (a quoted cell never ends)")
    _check_closed(pending, dialect.delimiter)
    for row in _parse(pending, dialect.delimiter):
        if _has_content(row):
            yield row


def _check_closed(text: str, delimiter: str) -> None:
    """UnreadableFileError when the file ends inside a quoted cell (its closing quote lost).

    Read leniently, the rest of the file would become one cell of one row.
    """
    try:
        for _ in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise UnreadableFileError("The file ends inside a quoted cell") from None


def _has_content(row: list[str]) -> bool:
    return any(cell.strip() for cell in row)


async def dialect_of(key: str) -> Dialect:
    """The encoding and delimiter of a stored CSV file."""
    encoding = await detect_encoding(key)
    return Dialect(encoding, await detect_delimiter(key, encoding))
