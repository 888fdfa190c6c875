"""Local storage: streamed writes that land whole or not at all, under keys that stay inside."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from settle.core.settings import Settings
from settle.core.storage import (
    WRITE_BUFFER,
    InvalidKeyError,
    LocalStorage,
    ObjectExistsError,
    ObjectNotFoundError,
    StoredObject,
)

KEY = "deliverables/agency/project/file-1"


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_all(storage: LocalStorage, key: str) -> bytes:
    reader = await storage.open(key)
    return b"".join([chunk async for chunk in reader])


def files_under(root: Path) -> list[str]:
    """Every file below the root, temporary ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files")


async def test_put_streams_and_reports_size_and_checksum(storage: LocalStorage) -> None:
    # given a body larger than the write buffer, in uneven chunks
    body = os.urandom(WRITE_BUFFER * 2 + 12_345)
    parts = [body[i : i + 70_001] for i in range(0, len(body), 70_001)]
    # when it is stored
    stored = await storage.put(KEY, chunks(*parts))
    # then its size and SHA-256 come back, and reading it gives the same bytes
    assert stored == StoredObject(size=len(body), sha256=hashlib.sha256(body).hexdigest())
    assert await read_all(storage, KEY) == body
    assert await storage.exists(KEY)
    # and the only file under the root is the object itself
    assert files_under(storage.root) == [KEY]


async def test_a_failing_stream_leaves_nothing(storage: LocalStorage) -> None:
    # given a stream that breaks after sending part of a large body
    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(WRITE_BUFFER + 1)
        yield b"more"
        raise ConnectionResetError("client went away")

    # when it is stored
    with pytest.raises(ConnectionResetError):
        await storage.put(KEY, broken())
    # then no object exists and no temporary file is left
    assert not await storage.exists(KEY)
    assert files_under(storage.root) == []


async def test_a_cancelled_upload_leaves_nothing(storage: LocalStorage) -> None:
    # given an upload that has sent some bytes and waits for more
    sent = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"first part"
        sent.set()
        await asyncio.Event().wait()
        yield b"never"

    task = asyncio.create_task(storage.put(KEY, stalled()))
    await sent.wait()
    # when its request is cancelled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # then nothing is left under the root
    assert files_under(storage.root) == []


async def test_put_never_replaces_an_object(storage: LocalStorage) -> None:
    # given a stored object
    await storage.put(KEY, chunks(b"original"))
    # when another write to the same key is made
    with pytest.raises(ObjectExistsError):
        await storage.put(KEY, chunks(b"replacement"))
    # then the original is intact and the loser's temporary file is gone
    assert await read_all(storage, KEY) == b"original"
    assert files_under(storage.root) == [KEY]


async def test_racing_writers_one_wins_whole(storage: LocalStorage) -> None:
    # given two writers of different bodies to one key, interleaving their chunks
    bodies = [bytes([n]) * (WRITE_BUFFER + 10) for n in (1, 2)]

    async def slow(body: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(body), 4096):
            await asyncio.sleep(0)
            yield body[i : i + 4096]

    # when they run at once
    results = await asyncio.gather(
        *(storage.put(KEY, slow(body)) for body in bodies), return_exceptions=True
    )
    # then exactly one succeeded, the other was told the object exists
    won = [r for r in results if isinstance(r, StoredObject)]
    lost = [r for r in results if isinstance(r, ObjectExistsError)]
    assert (len(won), len(lost)) == (1, 1)
    # and the stored bytes are the winner's, whole
    stored = await read_all(storage, KEY)
    assert stored in bodies
    assert hashlib.sha256(stored).hexdigest() == won[0].sha256
    assert files_under(storage.root) == [KEY]


async def test_open_and_delete(storage: LocalStorage) -> None:
    # given one stored object
    await storage.put(KEY, chunks(b"hello"))
    # when a missing key is opened, then it is reported before any byte
    with pytest.raises(ObjectNotFoundError):
        await storage.open("deliverables/missing")
    # when a reader is closed early, the object is unaffected
    reader = await storage.open(KEY)
    await reader.aclose()
    assert [chunk async for chunk in reader] == []
    # when the object is deleted (twice), it is gone and the second delete is quiet
    await storage.delete(KEY)
    await storage.delete(KEY)
    assert not await storage.exists(KEY)
    with pytest.raises(ObjectNotFoundError):
        await storage.open(KEY)


@pytest.mark.parametrize(
    "key",
    [
        "../outside",
        "a/../../outside",
        "a/..",
        "/etc/passwd",
        "a//b",
        "a/",
        ".hidden",
        "a/.b",
        "a\\b",
        "",
        "a/b c",
        "x" * 501,
    ],
)
async def test_unsafe_keys_are_refused(storage: LocalStorage, tmp_path: Path, key: str) -> None:
    # given storage under a root
    # when an unsafe key is used for any operation, then it is refused
    with pytest.raises(InvalidKeyError):
        await storage.put(key, chunks(b"x"))
    with pytest.raises(InvalidKeyError):
        await storage.open(key)
    with pytest.raises(InvalidKeyError):
        await storage.delete(key)
    with pytest.raises(InvalidKeyError):
        await storage.exists(key)
    # and nothing was written anywhere
    assert files_under(tmp_path) == []


async def test_a_symlink_cannot_lead_outside_the_root(
    storage: LocalStorage, tmp_path: Path
) -> None:
    # given a directory inside the root that is a link to a directory outside it
    outside = tmp_path / "outside"
    outside.mkdir()
    storage.root.mkdir()
    (storage.root / "link").symlink_to(outside)
    # when a key through the link is written, then it is refused and nothing lands outside
    with pytest.raises(InvalidKeyError):
        await storage.put("link/file", chunks(b"x"))
    assert list(outside.iterdir()) == []


def test_storage_dir_defaults_under_the_var_dir(tmp_path: Path) -> None:
    assert Settings(var_dir=tmp_path).resolved_storage_dir == tmp_path / "files"
    assert Settings(var_dir=tmp_path, storage_dir=tmp_path / "s3").resolved_storage_dir == (
        tmp_path / "s3"
    )
