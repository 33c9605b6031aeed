"""Keeps ``flare archive run`` and a running embedded server apart: the server holds a shared lock on a file
in its data directory for as long as it runs; the archiver takes it exclusively or refuses (the server loads
the archive catalog when it starts and writes the rows the archiver would delete)."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

LOCK_FILE = "serve.lock"


class ServerRunning(Exception):
    pass


def hold_shared(data_dir: Path) -> Callable[[], Awaitable[None]]:
    """Take the server's (shared) lock; returns the closer that releases it."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)

    async def release() -> None:
        os.close(fd)

    return release


def take_exclusive(data_dir: Path) -> int:
    """The lock's fd, held exclusively until closed; ServerRunning when a server holds it."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ServerRunning(f"a server is running on {data_dir}: stop it before flare archive run") from None
    return fd


def has_archived_parts(reader: sqlite3.Connection) -> bool:
    """Whether ``flare archive run`` ever moved rows out of this message store. Needs no pyarrow: a server
    installed without the archive extra starts as long as nothing was archived."""
    if reader.execute("SELECT 1 FROM sqlite_master WHERE name = 'archive_parts'").fetchone() is None:
        return False
    return reader.execute("SELECT 1 FROM archive_parts LIMIT 1").fetchone() is not None
