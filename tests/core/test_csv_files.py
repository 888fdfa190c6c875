"""Reading uploaded CSV files: encodings, delimiters and records streamed across chunks.

Storage hands a file over in 64 KiB chunks; these files are several chunks long,
with quoted cells (holding delimiters, quotes and line breaks) and multi-byte
characters placed across the chunk boundaries, and each must read exactly as
Python's csv module reads the whole text at once.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import pytest

from settle.core.csv_files import (
    Dialect,
    Encoding,
    UnreadableFileError,
    detect_delimiter,
    detect_encoding,
    dialect_of,
    records,
)
from settle.core.storage import CHUNK_SIZE, get_storage
from tests.conftest import Backend

pytestmark = pytest.mark.usefixtures("files_dir")


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def stored(data: bytes, key: str = "imports/test/source.csv") -> str:
    await get_storage().put(key, _single(data))
    return key


def big_table(rows: int = 10_000) -> list[list[str]]:
    """A header and ``rows`` rows, every fifth with a cell spanning lines with quotes in it."""
    table = [["name", "note", "city"]]
    for n in range(rows):
        note = f'Line one of {n}, "quoted"\r\nline two; tab\there' if n % 5 == 0 else f"plain {n}"
        table.append([f"Café {n} Zoë", note, "Zürich" if n % 2 else "Paris"])
    return table


def written(table: list[list[str]], delimiter: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(table)
    return out.getvalue()


async def read_all(key: str, dialect: Dialect) -> list[list[str]]:
    return [row async for row in records(key, dialect)]


@pytest.mark.parametrize(
    ("encoding", "prefix", "expected"),
    [
        ("utf-8", b"", Encoding.UTF8),
        ("utf-8", b"\xef\xbb\xbf", Encoding.UTF8_BOM),
        ("cp1252", b"", Encoding.WINDOWS_1252),
    ],
    ids=["utf-8", "utf-8-bom", "windows-1252"],
)
@pytest.mark.parametrize("delimiter", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
async def test_a_file_of_many_chunks_reads_as_the_whole_text_does(
    db: Backend, encoding: str, prefix: bytes, expected: Encoding, delimiter: str
) -> None:
    # given a file of several chunks, quoted multi-line cells among them
    table = big_table()
    text = written(table, delimiter)
    data = prefix + text.encode(encoding)
    assert len(data) > 4 * CHUNK_SIZE
    key = await stored(data)

    # when its dialect is detected and its records read
    dialect = await dialect_of(key)
    rows = await read_all(key, dialect)

    # then the encoding and delimiter are found and every record is exactly the table's
    assert dialect == Dialect(expected, delimiter)
    assert rows == table


async def test_a_character_split_across_chunks_is_still_utf8(db: Backend) -> None:
    # given a UTF-8 file whose "é" (two bytes) straddles the first chunk boundary
    head = b"name\r\n" + b"a" * (CHUNK_SIZE - len(b"name\r\n") - 1)
    data = head + "é\r\nZoë\r\n".encode()
    assert data[CHUNK_SIZE - 1 : CHUNK_SIZE + 1] == "é".encode()
    key = await stored(data)

    # when it is read
    encoding = await detect_encoding(key)
    rows = await read_all(key, Dialect(encoding, ","))

    # then it is UTF-8, and the character is whole
    assert encoding is Encoding.UTF8
    assert rows[1:] == [["a" * (CHUNK_SIZE - 7) + "é"], ["Zoë"]]


async def test_windows_1252_is_chosen_when_a_late_byte_is_not_utf8(db: Backend) -> None:
    # given a file that is ASCII for three chunks, then has "é" as Windows-1252 writes it
    data = b"name\r\n" + b"plain\r\n" * (3 * CHUNK_SIZE // 7) + "Café\r\n".encode("cp1252")
    key = await stored(data)

    # when it is read
    encoding = await detect_encoding(key)
    rows = await read_all(key, Dialect(encoding, ","))

    # then it is Windows-1252 throughout
    assert encoding is Encoding.WINDOWS_1252
    assert rows[-1] == ["Café"]


async def test_blank_lines_are_not_records(db: Backend) -> None:
    key = await stored(b"name,email\r\n\r\nAcme,a@acme.test\r\n ,  \r\n\r\nBolt,\r\n")
    assert await read_all(key, Dialect(Encoding.UTF8, ",")) == [
        ["name", "email"],
        ["Acme", "a@acme.test"],
        ["Bolt", ""],
    ]


async def test_the_delimiter_is_the_one_that_splits_rows_consistently(db: Backend) -> None:
    # given a semicolon file whose cells hold commas (a European spreadsheet's amounts)
    text = 'name;amount;note\r\nAcme;1,50;"a, b"\r\nBolt;2,75;c\r\n'
    key = await stored(text.encode())
    # when the delimiter is detected, then it is the semicolon
    assert await detect_delimiter(key, Encoding.UTF8) == ";"
    # and a single column file falls back to the comma
    single = await stored(b"name\r\nAcme\r\n", "imports/test/single.csv")
    assert await detect_delimiter(single, Encoding.UTF8) == ","


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"name\r\n\x00\x01\x02", "The file is not text (it holds NUL bytes)"),
        ("name\r\nA\r\n".encode("utf-16"), "The file is not text (it holds NUL bytes)"),
        (b"\xef\xbb\xbfname\r\n\xff\r\n", "The file starts as UTF-8 but is not UTF-8 throughout"),
    ],
    ids=["binary", "utf-16", "bom-then-not-utf8"],
)
async def test_files_that_are_not_csv_text_are_refused(
    db: Backend, data: bytes, message: str
) -> None:
    key = await stored(data)
    with pytest.raises(UnreadableFileError) as raised:
        await detect_encoding(key)
    assert str(raised.value) == message


async def test_a_quoted_cell_that_never_ends_is_refused(db: Backend) -> None:
    # given a file whose last quoted cell lost its closing quote
    key = await stored(b'name,note\r\nAcme,"fine"\r\nBolt,"never closed\r\nCo,x\r\n')
    # when it is read, then it is refused rather than read as one long cell
    with pytest.raises(UnreadableFileError, match="The file ends inside a quoted cell"):
        await read_all(key, Dialect(Encoding.UTF8, ","))


async def test_windows_1252_bytes_it_does_not_define_are_refused(db: Backend) -> None:
    # given a file that is neither UTF-8 nor Windows-1252 (0x81 is undefined there)
    key = await stored(b"name\r\nA\x81\r\n")
    # when it is read as what it was detected to be, then it is refused
    encoding = await detect_encoding(key)
    assert encoding is Encoding.WINDOWS_1252
    with pytest.raises(UnreadableFileError, match="The file is not valid cp1252"):
        await read_all(key, Dialect(encoding, ","))
