"""File storage: objects under string keys, written and read as streams.

``Storage`` is what the rest of Settle sees. ``LocalStorage`` keeps objects as
files under one directory (the embedded default). An S3-compatible backend
fits the same protocol: ``put`` as a multipart upload aborted on failure and
created with ``If-None-Match: *``, ``open`` as a streamed ``GetObject``.

Two promises every backend keeps:

- ``put`` is all or nothing. If reading the chunks raises (the client went
  away, the body was longer than declared) nothing is left under the key.
- ``put`` never replaces an object: a key that already exists raises
  ``ObjectExistsError``, so two racing writers cannot both believe they won.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from settle.core.private_files import open_private, private_dir
from settle.core.settings import get_settings

# Slash-separated segments of letters, digits, dot, dash and underscore, each
# starting with a letter or digit: no "..", no hidden or temporary names, no
# absolute paths, no backslashes. The model's column holds 500 characters.
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
MAX_KEY_LENGTH = 500
CHUNK_SIZE = 64 * 1024
# Writes are batched to this size so a large upload costs few thread hand-offs.
WRITE_BUFFER = 1024 * 1024


class StorageError(Exception):
    pass


class InvalidKeyError(StorageError, ValueError):
    pass


class ObjectExistsError(StorageError):
    pass


class ObjectNotFoundError(StorageError):
    pass


@dataclass(frozen=True, slots=True)
class StoredObject:
    size: int
    sha256: str


class ObjectReader(Protocol):
    """A stored object's bytes, chunk by chunk; ``aclose`` releases it if not read to the end."""

    def __aiter__(self) -> ObjectReader: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Storage(Protocol):
    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> StoredObject:
        """Store the stream under a new ``key``; all or nothing; the size and SHA-256 written."""
        ...

    async def open(self, key: str) -> ObjectReader:
        """The object's bytes as a stream; ObjectNotFoundError before any byte if it is missing."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""
        ...

    async def exists(self, key: str) -> bool: ...


def check_key(key: str) -> str:
    """``key`` if it is a safe relative key; InvalidKeyError otherwise."""
    if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise InvalidKeyError(f"invalid storage key: {key!r}")
    return key


class LocalStorage:
    """Objects as files under ``root``; each write lands by one atomic link."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file of ``key``, which must stay inside the root (symlinks included)."""
        check_key(key)
        root = self.root.resolve()
        path = (root / key).resolve()
        if not path.is_relative_to(root) or path == root:
            raise InvalidKeyError(f"storage key escapes the root: {key!r}")
        return path

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> StoredObject:
        path = self.path(key)
        await asyncio.to_thread(private_dir, path.parent)
        # A hidden name in the same directory: the same filesystem, so the final
        # link is atomic, and no valid key can ever name it.
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        digest = hashlib.sha256()
        size = 0
        fh = await asyncio.to_thread(_create, temp)
        try:
            buffer = bytearray()
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                if len(buffer) >= WRITE_BUFFER:
                    await asyncio.to_thread(fh.write, bytes(buffer))
                    buffer.clear()
            await asyncio.to_thread(_finish, fh, bytes(buffer))
            # link() refuses an existing name, which rename() would silently replace.
            await asyncio.to_thread(os.link, temp, path)
        except FileExistsError:
            raise ObjectExistsError(f"object exists: {key}") from None
        finally:
            # Runs on every path, cancellation included: the temporary file never stays.
            await asyncio.shield(asyncio.to_thread(_discard, fh, temp))
        return StoredObject(size=size, sha256=digest.hexdigest())

    async def open(self, key: str) -> ObjectReader:
        path = self.path(key)
        try:
            fh = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(f"no object: {key}") from None
        return _FileReader(fh)

    async def delete(self, key: str) -> None:
        path = self.path(key)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(path.unlink)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)


def _create(path: Path) -> IO[bytes]:
    """A new file, owner-only (the link that names it keeps its mode)."""
    return os.fdopen(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb")


def _finish(fh: IO[bytes], tail: bytes) -> None:
    fh.write(tail)
    fh.flush()
    # On disk before it is visible: a crash must not leave a named, truncated file.
    os.fsync(fh.fileno())


def _discard(fh: IO[bytes], temp: Path) -> None:
    fh.close()
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()


class _FileReader:
    """An open file read in chunks off the event loop; closed at the end or by ``aclose``."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh

    def __aiter__(self) -> _FileReader:
        return self

    async def __anext__(self) -> bytes:
        if self._fh.closed:
            raise StopAsyncIteration
        chunk = await asyncio.to_thread(self._fh.read, CHUNK_SIZE)
        if not chunk:
            self._fh.close()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self._fh.close()


def get_storage() -> Storage:
    """The storage of the current settings (the local directory; the only backend so far)."""
    return LocalStorage(get_settings().resolved_storage_dir)
