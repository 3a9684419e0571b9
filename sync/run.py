"""One sync: upload every un-acknowledged sale, then pull roster and policy updates.

The sync knows the terminal only through two small interfaces, :class:`Outbox`
(the journal's queue of sales) and :class:`Installer` (the terminal's signed
files), which ``terminal.journal.Journal`` and ``terminal.state.TerminalState``
provide; it imports nothing of the terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pact.errors import RefusedError
from pact.event import UPDATE_INSTALLED, UPDATE_REFUSED
from pact.generation import Generation
from pact.sale import Sale
from pact.snapshot import Snapshot
from pact.timefmt import Clock
from pact.trust import Root
from pact.wire import encode_device_key, encode_sales
from sync.client import CentralClient

MAX_ROOT_STEPS = 100  # root versions walked in one sync at the most
EventSink = Callable[[str, str], object]  # (event code, detail): journal an event entry


class Outbox(Protocol):
    """The sales waiting for the central service (``terminal.journal.Journal``)."""

    def pending(self, limit: int = 500) -> Sequence[Sale]: ...

    def mark_uploaded(self, through_seq: int, at: datetime) -> int: ...


class Installer(Protocol):
    """The terminal's signed files (``terminal.state.TerminalState``)."""

    roster_download: Path  # where a roster is downloaded before it is verified

    def device_public_key(self) -> str: ...

    @property
    def current(self) -> Generation: ...

    def update_root(self, data: bytes) -> Root: ...

    def check_snapshot(self, snapshot_data: bytes, now: datetime) -> Snapshot: ...

    def install(
        self,
        snapshot_data: bytes,
        now: datetime,
        roster_data: bytes | Path | None = None,
        policy_data: bytes | None = None,
    ) -> Snapshot: ...


@dataclass
class SyncReport:
    uploaded: int = 0
    roster_version: int | None = None  # set when a new roster was installed
    policy_version: int | None = None
    root_version: int | None = None  # set when the root metadata moved forward
    problems: list[str] = field(default_factory=list)  # refused downloads (old copy kept)

    def describe(self) -> str:
        """One line for the command line and the demo."""
        parts = [f"uploaded {self.uploaded} {'entry' if self.uploaded == 1 else 'entries'}"]
        if self.root_version is not None:
            parts.append(f"trusted root now v{self.root_version}")
        if self.roster_version is not None:
            parts.append(f"installed roster v{self.roster_version}")
        if self.policy_version is not None:
            parts.append(f"installed policy v{self.policy_version}")
        return ", ".join(parts)


def run_sync(
    terminal_id: str,
    state: Installer,
    journal: Outbox,
    client: CentralClient,
    clock: Clock,
    batch_size: int = 500,
    events: EventSink | None = None,
) -> SyncReport:
    """Upload, then update. ``events`` (the terminal's: it journals an event entry,
    pact.event) hears of each update installed or refused; the events it journals are
    uploaded before the sync ends."""
    report = SyncReport()
    # The union learns the device key once (and refuses another one later); every
    # upload is checked against it.
    client.register_device_key(encode_device_key(terminal_id, state.device_public_key()))
    if not _upload(terminal_id, journal, client, clock, batch_size, report):
        return report
    update(state, client, clock(), report)
    if events is not None:
        installed = [
            f"{what} v{version}"
            for what, version in (
                ("root", report.root_version),
                ("roster", report.roster_version),
                ("policy", report.policy_version),
            )
            if version is not None
        ]
        if installed:
            events(UPDATE_INSTALLED, ", ".join(installed))
        for problem in report.problems:
            events(UPDATE_REFUSED, problem)
        if installed or report.problems:
            _upload(terminal_id, journal, client, clock, batch_size, report)
    return report


def _upload(
    terminal_id: str,
    journal: Outbox,
    client: CentralClient,
    clock: Clock,
    batch_size: int,
    report: SyncReport,
) -> bool:
    """Upload every pending entry; False when the union held less than was sent."""
    while True:
        pending = journal.pending(batch_size)
        if not pending:
            return True
        acked = client.upload_sales(encode_sales(terminal_id, pending))
        report.uploaded += journal.mark_uploaded(acked, clock())
        if acked < pending[-1].seq:
            return False  # the server holds less than we sent; try again next sync


def update(state: Installer, client: CentralClient, now: datetime, report: SyncReport) -> None:
    """Walk the root forward, then install the snapshot's roster and policy as one."""
    root = state.current.root
    for _ in range(MAX_ROOT_STEPS):
        data = client.fetch_root(root.version + 1)
        if data is None:
            break
        try:
            root = state.update_root(data)
        except RefusedError as exc:
            report.problems.append(str(exc))
            return
        report.root_version = root.version
    installed = state.current
    have = installed.snapshot.version if installed.snapshot is not None else 0
    snapshot_data = client.fetch_snapshot(have)
    if snapshot_data is None:
        return
    download = state.roster_download
    try:
        wanted = state.check_snapshot(snapshot_data, now)
        roster_data: Path | None = None
        policy_data: bytes | None = None
        if wanted.roster_version != installed.roster_version:
            roster_data = client.fetch_roster(
                installed.roster_version, wanted.roster_version, download
            )
        if wanted.policy_version != installed.policy_version:
            policy_data = client.fetch_policy(wanted.policy_version)
        state.install(snapshot_data, now, roster_data, policy_data)
    except RefusedError as exc:
        report.problems.append(str(exc))
        return
    finally:
        download.unlink(missing_ok=True)  # if not installed
    if wanted.roster_version != installed.roster_version:
        report.roster_version = wanted.roster_version
    if wanted.policy_version != installed.policy_version:
        report.policy_version = wanted.policy_version
