"""The free space of the terminal's data folder (an adapter).

A full disk is refused before anything is written, with one line that names the
folder and what to do (:class:`terminal.errors.DiskFullError`), rather than letting
SQLite or a half-written file find out: the journal keeps :data:`RESERVE` free, so
that a checkpoint, the start-up's event and the status page still have room.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import NoReturn

from pact.text import N_, Msg
from terminal.errors import DiskFullError

RESERVE = 2 * 1024 * 1024  # bytes: below this free in the data folder, no sale is journaled
SQLITE_FULL = 13  # sqlite3.OperationalError.sqlite_errorcode of "database or disk is full"

SALE_REFUSED = N_(
    "the sale was NOT recorded: the disk of the terminal's data folder %(folder)s is full "
    "(%(free)s free); free space there (docs/operations.md, Recover) and try again: the "
    "sales already journaled are safe"
)
OPEN_REFUSED = N_(
    "cannot open the journal: the disk of the terminal's data folder %(folder)s is full "
    "(%(free)s free); free space there (docs/operations.md, Recover): the sales already "
    "journaled are safe"
)
UPDATE_REFUSED = N_(
    "the update was NOT installed: the disk of the terminal's data folder %(folder)s is full "
    "(%(free)s free); free space there (docs/operations.md, Recover): the installed roster "
    "and policy stay in service"
)
SYNC_REFUSED = N_(
    "sync stopped: the disk of the terminal's data folder %(folder)s is full (%(free)s free); "
    "free space there (docs/operations.md, Recover): the sales not yet uploaded stay queued, "
    "the installed roster and policy stay in service"
)
STATUS_WARNING = N_(
    "the disk of the terminal's data folder %(folder)s is full (%(free)s free): no sale can be "
    "recorded; free space there (docs/operations.md, Recover)"
)


def free_bytes(folder: Path) -> int:
    """Bytes free in ``folder``'s file system for an unprivileged writer."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def size_text(n: int) -> str:
    """``n`` bytes for a person: 0 B, 812 KiB, 3.5 MiB."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n // 1024} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def fail_full(folder: Path, message: str) -> NoReturn:
    """Raise DiskFullError: ``message`` (one of the ids above) for ``folder`` as it is."""
    try:
        free = free_bytes(folder)
    except OSError:
        free = 0
    raise DiskFullError(message, folder=str(folder), free=size_text(free)) from None


def check_space(folder: Path, message: str, need: int = RESERVE) -> None:
    """Raise :class:`DiskFullError` (``message``) when less than ``need`` bytes are free."""
    try:
        free = free_bytes(folder)
    except OSError:
        return  # a folder that cannot be asked: let the write itself find out
    if free < need:
        raise DiskFullError(message, folder=str(folder), free=size_text(free))


def space_warning(folder: Path, need: int = RESERVE) -> Msg | None:
    """The status's warning when the data folder's disk is full, else None."""
    try:
        free = free_bytes(folder)
    except OSError:
        return None
    if free >= need:
        return None
    return Msg.of(STATUS_WARNING, folder=str(folder), free=size_text(free))


def is_short(folder: Path, need: int = RESERVE) -> bool:
    """Whether less than ``need`` bytes are free in ``folder`` (False if it cannot tell)."""
    try:
        return free_bytes(folder) < need
    except OSError:
        return False


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the owner's quota) is full."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
