"""Taking a terminal out of service (an adapter): ``unioncard terminal decommission``.

Once the union holds every journal entry, the terminal tells the union (which revokes
it, recording its last seq), leaves the shop an export of its own journal, and wipes
its keys and data. It refuses while anything is unacknowledged, and while the daemon
serves from the same data folder (:func:`data_folder_lock`).

The export (``unioncard.journal-export.v1``, docs/protocol.md) holds every entry as the
journal keeps it (the same JSON as an upload: no card number, tokens only), the
terminal's device public key, and the chain's last hash, so the shop, or an auditor,
can check it with the public key alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pact.bundle import JOURNAL_EXPORT
from pact.files import atomic_write, fsync_dir
from pact.text import N_
from pact.timefmt import Clock, iso
from terminal.devicekey import KEY_FILE, load_public_key
from terminal.errors import ConfigError, JournalError
from terminal.journal import Journal
from terminal.state import TerminalState

EXPORT_FORMAT = JOURNAL_EXPORT
LOCK_FILE = ".serve.lock"
SECRET_FILES = ("enrolment.json", KEY_FILE)  # overwritten before they are unlinked


class DaemonRunningError(ConfigError):
    """The daemon serves from this data folder."""


class PendingEntriesError(JournalError):
    """Entries the union has not acknowledged are still in the journal."""


@contextmanager
def data_folder_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data folder for the daemon (``terminal serve``) or a decommissioning:
    one at a time. Released when the process ends, however it ends."""
    path = data_dir / LOCK_FILE
    # read-only: whoever made it; not through a symbolic link planted in its place
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DaemonRunningError(
                N_(
                    "the terminal daemon is running on %(folder)s: stop it first "
                    "(systemctl stop unioncard-terminal unioncard-sync.timer)"
                ),
                folder=str(data_dir),
            ) from None
        yield
    finally:
        os.close(fd)


def pending_problem(journal: Journal) -> PendingEntriesError | None:
    """What stops a decommissioning: entries not yet acknowledged by the union."""
    pending = journal.pending(limit=1_000_000)
    if not pending:
        return None
    return PendingEntriesError(
        N_(
            "%(count)s journal entries (seq %(first)s to %(last)s) are not yet acknowledged "
            "by the union: run `unioncard sync`, then decommission again"
        ),
        count=len(pending),
        first=pending[0].seq,
        last=pending[-1].seq,
    )


@contextmanager
def journal_held(journal_path: Path, last_seq: int) -> Iterator[None]:
    """Hold the journal's write lock (no process journals anything) from here to the
    wipe, and check first that it still ends at ``last_seq`` with nothing pending: an
    entry journaled since the export (a sync's event, a checkout from the command
    line) would otherwise be wiped with neither the shop's export nor the union
    holding it."""
    db = sqlite3.connect(journal_path, timeout=10, isolation_level=None)
    try:
        try:
            db.execute("BEGIN EXCLUSIVE")
            last, pending = db.execute(
                "SELECT coalesce(max(seq), 0), count(*) FILTER (WHERE uploaded_at IS NULL) "
                "FROM sales"
            ).fetchone()
        except sqlite3.Error as exc:
            raise JournalError(
                N_("the journal is busy (%(why)s): stop what uses it, then try again"),
                why=str(exc),
            ) from None
        if last != last_seq or pending:
            raise PendingEntriesError(
                N_(
                    "the journal changed while it was exported (now up to seq %(last)s): "
                    "run `unioncard sync`, then decommission again"
                ),
                last=last,
            )
        yield
    finally:
        db.close()  # rolls back: nothing was written


@dataclass(frozen=True)
class JournalExport:
    entries: int
    last_seq: int
    data: bytes


def export_journal(state: TerminalState, journal: Journal, clock: Clock) -> JournalExport:
    """The shop's export of its journal, after checking its chain and every signature."""
    key = load_public_key(state.dir)
    journal.verify(key)
    entries = journal.sales()
    enrolment = state.enrolment
    last = entries[-1] if entries else None
    document: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "terminal_id": enrolment.terminal_id,
        "merchant_id": enrolment.merchant_id,
        "device_key": state.device_public_key(),
        "exported_at": iso(clock()),
        "last_seq": last.seq if last else 0,
        "last_hash": last.hash if last else None,
        "entries": [e.as_json() for e in entries],
    }
    data = json.dumps(document, ensure_ascii=False, indent=1).encode() + b"\n"
    return JournalExport(len(entries), last.seq if last else 0, data)


def write_export(export: JournalExport, out: Path) -> None:
    """Write the export whole or not at all (0644: it holds no secret)."""
    try:
        atomic_write(out, export.data, mode=0o644)
    except OSError as exc:
        raise ConfigError(
            N_("cannot write the journal export %(file)s (%(why)s): give another --out"),
            file=str(out),
            why=exc.strerror or str(exc),
        ) from None


def wipe(data_dir: Path) -> None:
    """Remove the terminal's keys and data; the folder itself stays, empty. The secret
    files are overwritten first (on an SD card's wear-levelling this is best effort:
    the union has revoked the terminal's secret, and the device key signs nothing it
    would accept any more)."""
    for name in SECRET_FILES:
        path = data_dir / name
        try:
            found = path.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(found.st_mode):
            continue  # a symbolic link (or worse) is removed below, never written through
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.write(fd, b"\0" * found.st_size)
            os.fsync(fd)
        finally:
            os.close(fd)
    for child in sorted(data_dir.iterdir()):
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    fsync_dir(data_dir)
