"""One sync: upload every un-acknowledged sale, then pull roster and policy updates.

The sync knows the terminal only through two small interfaces, :class:`Outbox`
(the journal's queue of sales) and :class:`Installer` (the terminal's signed
files), which ``terminal.journal.Journal`` and ``terminal.state.TerminalState``
provide; it imports nothing of the terminal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
from pact.wire import encode_device_key, encode_sales, sales_head
from sync.client import CentralClient, entry_bodies, upload_bodies, upload_limits

MAX_ROOT_STEPS = 100  # root versions walked in one sync at the most
EventSink = Callable[[str, str], object]  # (event code, detail): journal an event entry
Progress = Callable[[int], object]  # entries acknowledged by one more batch


class Outbox(Protocol):
    """The sales waiting for the central service (``terminal.journal.Journal``)."""

    def pending(self, limit: int = 500, after: int = 0) -> Sequence[Sale]: ...

    def pending_json(self, limit: int = 500, after: int = 0) -> Sequence[tuple[int, bytes]]: ...

    def mark_uploaded(self, through_seq: int, at: datetime) -> int: ...

    def entries_after(self, after_seq: int, limit: int) -> Sequence[Sale]: ...

    def entry(self, seq: int) -> Sale | None: ...

    def counts(self) -> tuple[int, int]: ...  # (entries, entries not yet uploaded)


class Installer(Protocol):
    """The terminal's signed files (``terminal.state.TerminalState``). One sync at a
    time changes them: the terminal's caller holds its update lock for the whole run
    (``terminal.syncing.sync_terminal``), the download file included."""

    roster_download: Path  # where a roster is downloaded before it is verified

    def device_public_key(self) -> str: ...

    @property
    def current(self) -> Generation: ...

    def update_root(self, data: bytes) -> Root: ...

    def check_snapshot(self, snapshot_data: bytes, now: datetime) -> Snapshot: ...

    def install_usage(self, data: bytes, now: datetime) -> object: ...

    def install(
        self,
        snapshot_data: bytes,
        now: datetime,
        roster_data: bytes | Path | None = None,
        policy_data: bytes | None = None,
    ) -> Snapshot: ...


@dataclass
class SyncReport:
    uploaded: int = 0  # entries the union acknowledged
    sent: int = 0  # entries sent (a batch the union held only in part counts whole)
    pending: int | None = None  # entries still waiting for upload at the end
    roster_version: int | None = None  # set when a new roster was installed
    policy_version: int | None = None
    root_version: int | None = None  # set when the root metadata moved forward
    problems: list[str] = field(default_factory=list)  # refused downloads (old copy kept)
    # the union's copy of the chain ended before entries it had acknowledged (its
    # database restored from an older backup): they were sent again from this seq
    resent_from: int | None = None
    resent: int = 0  # how many were sent again (each already marked uploaded)

    def describe(self) -> str:
        """One line for the command line and the demo: what was sent, acknowledged and
        is still pending, what was installed."""
        parts = [f"uploaded {self.uploaded} {'entry' if self.uploaded == 1 else 'entries'}"]
        if self.sent != self.uploaded:
            parts[0] += f" of {self.sent} sent"
        if self.pending is not None:
            parts[0] += f" ({self.pending} still pending)"
        if self.resent_from is not None:
            parts.append(
                f"the union's copy ended at entry {self.resent_from - 1}: sent "
                f"{self.resent} {'entry' if self.resent == 1 else 'entries'} again from "
                f"{self.resent_from}"
            )
        if self.root_version is not None:
            parts.append(f"trusted root now v{self.root_version}")
        if self.roster_version is not None:
            parts.append(f"installed roster v{self.roster_version}")
        if self.policy_version is not None:
            parts.append(f"installed policy v{self.policy_version}")
        return ", ".join(parts)

    def as_json(self) -> dict[str, object]:
        return {
            "uploaded": self.uploaded,
            "sent": self.sent,
            "pending": self.pending,
            "root_version": self.root_version,
            "roster_version": self.roster_version,
            "policy_version": self.policy_version,
            "problems": list(self.problems),
            "resent_from": self.resent_from,
            "resent": self.resent,
        }


def run_sync(
    terminal_id: str,
    state: Installer,
    journal: Outbox,
    client: CentralClient,
    clock: Clock,
    batch_size: int = 500,
    events: EventSink | None = None,
    progress: Progress | None = None,
    software: str = "",
) -> SyncReport:
    """Upload, then update. ``events`` (the terminal's: it journals an event entry,
    pact.event) hears of each update installed or refused; the events it journals are
    uploaded before the sync ends. ``progress`` hears of each batch acknowledged (the
    entries it acknowledged)."""
    report = SyncReport()
    try:
        _run(
            terminal_id, state, journal, client, clock, batch_size, events, progress, report,
            software,
        )  # fmt: skip
    finally:
        report.pending = journal.counts()[1]
    return report


def _run(
    terminal_id: str,
    state: Installer,
    journal: Outbox,
    client: CentralClient,
    clock: Clock,
    batch_size: int,
    events: EventSink | None,
    progress: Progress | None,
    report: SyncReport,
    software: str,
) -> None:
    # The union learns the device key once (and refuses another one later); every
    # upload is checked against it.
    client.register_device_key(encode_device_key(terminal_id, state.device_public_key()))
    if not _upload(terminal_id, journal, client, clock, batch_size, report, progress):
        return
    update(state, client, clock(), report)
    if state.current.policy is not None:
        share_usage(state, client, clock(), report)
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
            _upload(terminal_id, journal, client, clock, batch_size, report, progress)
    held = state.current  # what the terminal holds now, for the union's fleet view
    # an installed file the trusted root no longer vouches for, which this sync could not
    # replace: the terminal gives no discounts from it, a problem until a sync does
    report.problems.extend(held.dropped)
    client.report(
        {
            "format": "unioncard.terminal-report.v1",
            "root_version": held.root.version,
            "snapshot_version": held.snapshot.version if held.snapshot is not None else None,
            "roster_version": held.roster_version if held.roster is not None else None,
            "policy_version": held.policy_version if held.policy is not None else None,
            "pending": journal.counts()[1],
            "warnings": list(report.problems),
            "software": software,
        }
    )


@dataclass(frozen=True)
class _Batch:
    """Pending entries read from the journal (their count, first and last seq), and the
    request bodies that carry them."""

    count: int
    first: int
    last: int
    bodies: list[tuple[int | None, bytes]]


def _bodies(terminal_id: str, sales: Sequence[Sale]) -> list[tuple[int | None, bytes]]:
    """The request bodies that carry ``sales`` (gzip, capped in size)."""
    return list(upload_bodies(encode_sales(terminal_id, sales), *upload_limits()))


def _prepare(terminal_id: str, journal: Outbox, batch_size: int, after: int) -> _Batch:
    """The next batch after seq ``after``: the journal gives each entry's JSON as the
    wire carries it (no Sale made of it: the sync's own share of a backlog's time)."""
    entries = journal.pending_json(batch_size, after)
    if not entries:
        return _Batch(0, 0, 0, [])
    head = sales_head(terminal_id)
    bodies = list(entry_bodies(head, entries, *upload_limits()))
    return _Batch(len(entries), entries[0][0], entries[-1][0], bodies)


def _upload(
    terminal_id: str,
    journal: Outbox,
    client: CentralClient,
    clock: Clock,
    batch_size: int,
    report: SyncReport,
    progress: Progress | None = None,
) -> bool:
    """Upload every pending entry; False when the union held less than was sent.

    The batches go in seq order (the chain), and an entry is marked uploaded only once
    the union has acknowledged it. Two requests are on their way at a time (each but
    the first with ``Unioncard-Pipelined: 1``: the union waits for the entries before
    it), so that the union decodes and checks the
    next batch while it stores the one before (its two workers), and the answers are
    taken in order. The terminal's share of the work runs in a thread of its own, in
    order, beside them: the next batch is read from the journal as the wire's JSON
    (``pending_json``) and compressed, and the one before marked uploaded (a write to
    the journal, with its fsync), so that the shares overlap instead of adding up
    (docs/benchmarks.md, "The sync's throughput"). A batch the union answers with less
    than the entries before it (they had not arrived in time) is sent again, alone.
    When a batch fails, the sync stops once the requests on their way have their
    answers; a mark not yet written when the sync stops is written before it returns
    (and a mark never written, the power cut, only sends those entries again: the union
    holds them once).

    A union whose copy of the chain ends before the first entry sent (its database
    restored from an older backup) acknowledges where it ends: the entries after that,
    which it had acknowledged before, are sent again (once a sync; their marks stay, so
    the pending count and its cap do not move). With nothing pending, the newest entry
    is sent to ask the same (the union holds it once)."""
    marks: list[Future[int]] = []
    lanes = [client]  # a client for each request on its way: the second made when needed
    flying: deque[tuple[_Batch, Future[int], CentralClient, bool]] = deque()

    def count_marks(wait: bool) -> None:
        while marks and (wait or marks[0].done()):
            marked = marks.pop(0).result()  # a mark that failed (disk full) raises here
            report.uploaded += marked
            if progress is not None:
                progress(marked)

    def settle(batch: _Batch, acked: int, lane: CentralClient, pipelined: bool) -> bool:
        """Take a batch's answer: mark what the union acknowledged; False when it holds
        less than the batch."""
        before = batch.first - 1
        if acked < before and pipelined:  # the entries before it came too late: again
            acked = lane.post_sales(batch.bodies)
        if acked < before and report.resent_from is None:
            if _resend(terminal_id, journal, lane, batch_size, report, acked, before):
                acked = lane.post_sales(batch.bodies)  # now it follows
        marks.append(ahead.submit(_mark, journal, acked, clock))
        count_marks(wait=False)
        return acked >= batch.last

    def land() -> bool:
        batch, answer, lane, pipelined = flying.popleft()
        return settle(batch, answer.result(), lane, pipelined)

    with (
        ThreadPoolExecutor(1, thread_name_prefix="sync-ahead") as ahead,
        ThreadPoolExecutor(2, thread_name_prefix="sync-send") as senders,
    ):
        try:
            coming = ahead.submit(_prepare, terminal_id, journal, batch_size, 0)
            sent = 0
            while True:
                batch = coming.result()
                if not batch.count:
                    if not sent:
                        _ask_held(terminal_id, journal, client, batch_size, report)
                    while flying:
                        if not land():
                            return False
                    return True
                coming = ahead.submit(_prepare, terminal_id, journal, batch_size, batch.last)
                report.sent += batch.count
                sent += 1
                if sent == 2:
                    lanes.append(client.twin())
                lane = lanes[(sent - 1) % 2]  # free: its last request has its answer
                pipelined = bool(flying)  # the first batch goes as the only one
                flying.append(
                    (batch, senders.submit(lane.post_sales, batch.bodies, pipelined), lane,
                     pipelined)
                )  # fmt: skip
                if len(flying) == 2 and not land():
                    return False
        finally:
            for _, answer, _, _ in flying:  # the requests on their way end first
                wait_for(answer)
            count_marks(wait=True)
            for lane in lanes[1:]:
                lane.close()


def wait_for(answer: Future[int]) -> None:
    """Wait for a request's answer, whatever it is (the sync stops anyway)."""
    try:
        answer.result()
    except Exception:  # noqa: BLE001 - the batch before it failed or came short first
        pass


def _mark(journal: Outbox, acked: int, clock: Clock) -> int:
    return journal.mark_uploaded(acked, clock())


def _ask_held(
    terminal_id: str, journal: Outbox, client: CentralClient, batch_size: int, report: SyncReport
) -> None:
    """Nothing pending: send the newest entry, which the union holds once, to learn
    whether its copy ends before it (then send the rest again)."""
    newest = journal.entry(journal.counts()[0])
    if newest is None:
        return
    acked = client.post_sales(_bodies(terminal_id, [newest]))
    if acked < newest.seq:
        _resend(terminal_id, journal, client, batch_size, report, acked, newest.seq)


def _resend(
    terminal_id: str,
    journal: Outbox,
    client: CentralClient,
    batch_size: int,
    report: SyncReport,
    acked: int,
    through: int,
) -> bool:
    """Send the entries after ``acked`` through ``through`` again, which the union had
    acknowledged before its copy lost them; True when it holds them all now."""
    report.resent_from = acked + 1
    while acked < through:
        entries = journal.entries_after(acked, min(batch_size, through - acked))
        if not entries:
            return False
        held = client.post_sales(_bodies(terminal_id, entries))
        report.resent += len(entries)
        if held < entries[-1].seq:
            return False
        acked = held
    return True


def share_usage(state: Installer, client: CentralClient, now: datetime, report: SyncReport) -> None:
    """Keep the union's usage file: the merchant's other terminals' quota use (pact.usage)."""
    try:
        state.install_usage(client.fetch_usage(), now)
    except RefusedError as exc:
        report.problems.append(str(exc))


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


@dataclass
class SyncPreview:
    """What a sync would do (``unioncard sync --dry-run``): nothing sent, nothing
    installed; the union's snapshot is fetched and checked, not installed."""

    pending: int  # entries that would be uploaded
    batches: int  # upload requests they would take
    root_available: bool = False  # a newer root metadata version is published
    roster_version: int | None = None  # the roster the union's snapshot names, if newer
    policy_version: int | None = None
    problems: list[str] = field(default_factory=list)  # what the sync would refuse

    def describe(self) -> str:
        batches = f"{self.batches} request{'s' if self.batches != 1 else ''}"
        parts = [f"dry run: would upload {self.pending} entries ({batches})"]
        if self.root_available:
            parts.append("would walk the trusted root forward, then check the union's update")
        if self.roster_version is not None:
            parts.append(f"would install roster v{self.roster_version}")
        if self.policy_version is not None:
            parts.append(f"would install policy v{self.policy_version}")
        if not (self.root_available or self.roster_version or self.policy_version):
            parts.append("roster and policy are current")
        return ", ".join(parts)

    def as_json(self) -> dict[str, object]:
        return {
            "dry_run": True,
            "pending": self.pending,
            "batches": self.batches,
            "root_available": self.root_available,
            "roster_version": self.roster_version,
            "policy_version": self.policy_version,
            "problems": list(self.problems),
        }


def preview(
    state: Installer, journal: Outbox, client: CentralClient, now: datetime, batch_size: int
) -> SyncPreview:
    """What :func:`run_sync` would do now, asking the union only what it publishes
    (GET requests: nothing is sent, marked or installed)."""
    pending = journal.counts()[1]
    plan = SyncPreview(pending=pending, batches=-(-pending // batch_size))
    installed = state.current
    plan.root_available = client.fetch_root(installed.root.version + 1) is not None
    if plan.root_available:  # the union's update is checked under the new root only
        return plan
    have = installed.snapshot.version if installed.snapshot is not None else 0
    snapshot_data = client.fetch_snapshot(have)
    if snapshot_data is None:
        return plan
    try:
        wanted = state.check_snapshot(snapshot_data, now)
    except RefusedError as exc:
        plan.problems.append(str(exc))
        return plan
    if wanted.roster_version != installed.roster_version:
        plan.roster_version = wanted.roster_version
    if wanted.policy_version != installed.policy_version:
        plan.policy_version = wanted.policy_version
    return plan
