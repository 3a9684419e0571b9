"""One sync: upload every un-acknowledged sale, then pull roster and policy updates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sync.client import CentralClient
from sync.wire import encode_sales
from terminal.errors import SignatureError
from terminal.journal import Journal
from terminal.state import TerminalState


@dataclass
class SyncReport:
    uploaded: int = 0
    roster_version: int | None = None  # set when a new roster was installed
    policy_version: int | None = None
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
    have = state.roster.version if state.roster is not None else 0
    data = client.fetch_roster(have)
    if data is not None:
        try:
            report.roster_version = state.install_roster(data, clock()).version
        except SignatureError as exc:
            report.problems.append(str(exc))
    have = state.policy.version if state.policy is not None else 0
    data = client.fetch_policy(have)
    if data is not None:
        try:
            report.policy_version = state.install_policy(data).version
        except SignatureError as exc:
            report.problems.append(str(exc))
    return report
