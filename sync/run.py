"""One sync: upload every un-acknowledged sale, then pull roster and policy updates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from pact.errors import RefusedError
from pact.wire import encode_sales
from sync.client import CentralClient
from terminal.journal import Journal
from terminal.state import TerminalState

MAX_ROOT_STEPS = 100  # root versions walked in one sync at the most


@dataclass
class SyncReport:
    uploaded: int = 0
    roster_version: int | None = None  # set when a new roster was installed
    policy_version: int | None = None
    root_version: int | None = None  # set when the root metadata moved forward
    problems: list[str] = field(default_factory=list)  # refused downloads (old copy kept)


def run_sync(
    state: TerminalState,
    journal: Journal,
    client: CentralClient,
    clock: Callable[[], datetime],
    batch_size: int = 500,
) -> SyncReport:
    report = SyncReport()
    terminal_id = state.enrolment.terminal_id
    while True:
        pending = journal.pending(batch_size)
        if not pending:
            break
        acked = client.upload_sales(encode_sales(terminal_id, pending))
        report.uploaded += journal.mark_uploaded(acked, clock())
        if acked < pending[-1]["seq"]:
            break  # the server holds less than we sent; try again next sync
    update(state, client, clock(), report)
    return report


def update(state: TerminalState, client: CentralClient, now: datetime, report: SyncReport) -> None:
    """Walk the root forward, then install the snapshot's roster and policy as one."""
    root = state.trusted_root()
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
    have = state.snapshot.version if state.snapshot is not None else 0
    snapshot_data = client.fetch_snapshot(have)
    if snapshot_data is None:
        return
    try:
        wanted = state.check_snapshot(snapshot_data, now)
        roster_data = policy_data = None
        installed_roster = state.roster.version if state.roster is not None else 0
        if wanted.roster_version != installed_roster:
            download = state.dir / ".roster-download.tmp"
            roster_data = client.fetch_roster(installed_roster, wanted.roster_version, download)
        installed_policy = state.policy.version if state.policy is not None else 0
        if wanted.policy_version != installed_policy:
            policy_data = client.fetch_policy(wanted.policy_version)
        state.install(snapshot_data, now, roster_data, policy_data)
    except RefusedError as exc:
        report.problems.append(str(exc))
        return
    finally:
        (state.dir / ".roster-download.tmp").unlink(missing_ok=True)  # if not installed
    if wanted.roster_version != installed_roster:
        report.roster_version = wanted.roster_version
    if wanted.policy_version != installed_policy:
        report.policy_version = wanted.policy_version
