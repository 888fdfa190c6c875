"""Directories and files only their owner may read: the embedded database, mail, stored files.

Everything Settle keeps under ``var/`` is private: the SQLite database (every
agency's data), the generated secret key, ``.eml`` mail (invitation links) and
stored files (deliverables, invoices). Directories are created 0700 and files
0600 whatever the process's umask: the mode is set explicitly after creation,
since the mode given to ``mkdir`` and ``open`` is only ever narrowed by the
umask, never widened or tightened to what is asked.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents, each 0700; an existing one is left as it is."""
    missing: list[Path] = []
    current = Path(path)
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        # Another process may create it between the check and here: that is fine.
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
            os.chmod(directory, DIR_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` creating ``path`` 0600 (``flags`` must include O_CREAT)."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_file(path: Path) -> Path:
    """Create ``path`` empty and 0600 if it does not exist (before another library opens it)."""
    with contextlib.suppress(FileExistsError):
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    return path
