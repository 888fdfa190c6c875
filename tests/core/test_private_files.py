"""What Settle keeps under var/ is its owner's alone: directories 0700, files 0600.

Each test runs under the most permissive umask (000), so the modes cannot come
from the umask: Settle sets them itself.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from settle.core.settings import Settings
from settle.core.storage import LocalStorage
from settle.notifications.email import _write_eml


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tree_modes(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): mode(path) for path in sorted(root.rglob("*"))}


@pytest.fixture
def umask_000() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


# Runs in a process of its own (Tortoise is process-wide): migrates a new embedded
# database, opens it as `settle serve` does (WAL), writes, and reports the modes of
# what exists while it is open.
EMBEDDED = textwrap.dedent(
    """
    import asyncio, json, os, stat, sys
    from pathlib import Path
    from tortoise import Tortoise
    from settle.core.db import close_db, init_db, migrate

    async def main(var):
        url = f"sqlite://{var / 'settle.sqlite3'}"
        await migrate(url)
        await init_db(url)
        await Tortoise.get_connection("default").execute_script(
            "CREATE TABLE probe (x); INSERT INTO probe VALUES (1);"
        )
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [var, *var.iterdir()]}
        await close_db()
        print(json.dumps(modes))

    os.umask(0)
    asyncio.run(main(Path(sys.argv[1])))
    """
)


def test_the_embedded_database_is_owner_only(tmp_path: Path) -> None:
    # when a process creates the embedded database under a new var directory
    var = tmp_path / "var"
    done = subprocess.run(
        [sys.executable, "-c", EMBEDDED, str(var)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    modes = json.loads(done.stdout.strip().splitlines()[-1])

    # then the directory is 0700 and the database and its WAL files are 0600
    assert modes == {
        "var": 0o700,
        "settle.sqlite3": 0o600,
        "settle.sqlite3-wal": 0o600,
        "settle.sqlite3-shm": 0o600,
    }


def test_the_generated_secret_key_is_owner_only(tmp_path: Path, umask_000: None) -> None:
    # when a development process generates its secret key into a new var directory
    var = tmp_path / "var"
    key = Settings(var_dir=var).signing_key()
    # then the directory is 0700 and the key 0600, and the key is the one kept
    assert len(key) > 40
    assert (mode(var), mode(var / "secret_key")) == (0o700, 0o600)
    assert Settings(var_dir=var).signing_key() == key


async def test_stored_files_are_owner_only(tmp_path: Path, umask_000: None) -> None:
    # when a file is stored under a key two directories deep, in a new storage root
    root = tmp_path / "var" / "files"
    await LocalStorage(root).put("deliverables/d1/beta.txt", one_chunk(b"beta"))
    # then every directory it made is 0700 and the file 0600
    assert tree_modes(tmp_path) == {
        "var": 0o700,
        "var/files": 0o700,
        "var/files/deliverables": 0o700,
        "var/files/deliverables/d1": 0o700,
        "var/files/deliverables/d1/beta.txt": 0o600,
    }


def test_mail_files_are_owner_only(tmp_path: Path, umask_000: None) -> None:
    # when an email is written as an .eml file into a new mail directory
    message = EmailMessage()
    message["Subject"] = "Join Northwind Studio"
    message.set_content("Your invitation link")
    path = _write_eml(message, "<m1@settle.test>", tmp_path / "var" / "mail")
    # then the directory is 0700 and the message 0600
    assert (mode(tmp_path / "var"), mode(path.parent), mode(path)) == (0o700, 0o700, 0o600)
