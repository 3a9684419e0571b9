"""The terminal's syncs (an adapter): one sync run, recorded; and "sync now" in the
background for the daemon.

Every sync, by the nightly timer (``unioncard sync``) or from the cashier page, goes
through :func:`sync_terminal`, which records its outcome in ``sync.json`` in the data
folder (0600; written atomically): when the last one was tried, when the last one
succeeded, what it did, and the last error (cleared by the next success). The page and
``unioncard terminal status`` show it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pact.errors import UnioncardError
from pact.files import atomic_write
from pact.timefmt import Clock, iso
from sync.client import CentralClient
from sync.run import SyncReport, run_sync
from terminal.journal import Journal
from terminal.service import journal_event
from terminal.state import TerminalState

RECORD_FILE = "sync.json"
log = logging.getLogger(__name__)


def last_sync(data_dir: Path) -> dict[str, Any]:
    """``last_attempt_at``, ``last_success_at``, ``last_summary``, ``last_error`` (each
    None until known)."""
    record: dict[str, Any] = dict.fromkeys(
        ("last_attempt_at", "last_success_at", "last_summary", "last_error")
    )
    try:
        kept = json.loads((data_dir / RECORD_FILE).read_bytes())
    except (FileNotFoundError, ValueError):
        return record
    if isinstance(kept, dict):
        record.update({k: kept.get(k) for k in record})
    return record


def _keep(data_dir: Path, **changes: Any) -> None:
    record = {**last_sync(data_dir), **changes}
    atomic_write(data_dir / RECORD_FILE, json.dumps(record).encode(), mode=0o600)


def sync_terminal(
    state: TerminalState, journal: Journal, clock: Clock, batch_size: int = 500
) -> SyncReport:
    """Upload the journal, pull the union's updates (sync.run), and record the outcome.
    A failure is recorded and raised again."""
    enrolment = state.enrolment
    started = clock()

    def event(code: str, detail: str) -> None:
        journal_event(journal, state, code, detail, clock())

    try:
        client = CentralClient(
            enrolment.central_url,
            enrolment.terminal_id,
            enrolment.api_secret,
            ca_cert=enrolment.ca_cert,  # the union's CA, the only one trusted
        )  # refuses plain http to another machine, https without the CA: recorded too
        try:
            report = run_sync(
                enrolment.terminal_id,
                state,
                journal,
                client,
                clock,
                batch_size=batch_size,
                events=event,
            )
        finally:
            client.close()
    except Exception as exc:
        _keep(state.dir, last_attempt_at=iso(started), last_error=str(exc))
        raise
    if report.problems:
        _keep(state.dir, last_attempt_at=iso(started), last_error="; ".join(report.problems))
    else:
        _keep(
            state.dir,
            last_attempt_at=iso(started),
            last_success_at=iso(clock()),
            last_summary=report.describe(),
            last_error=None,
        )
    return report


class BackgroundSync:
    """One sync at a time, in a thread of its own, so that a checkout never waits for
    the network. ``start()`` says whether it started one (False: one is running)."""

    def __init__(self, run: Callable[[], object], done: Callable[[], None]) -> None:
        self._run = run
        self._done = done  # told when a sync ends (the page's live updates)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        with self._lock:
            if self.running:
                return False
            self._thread = threading.Thread(target=self._work, name="sync", daemon=True)
            self._thread.start()
        self._done()
        return True

    def _work(self) -> None:
        try:
            self._run()
        except UnioncardError as exc:
            log.warning("sync now failed: %s", exc)
        except Exception:
            log.exception("sync now failed unexpectedly")
        finally:
            self._done()

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
