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
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pact.device import public_key_hex
from pact.enrolcode import normal_code, sign_request
from pact.errors import UnioncardError
from pact.text import N_
from pact.timefmt import Clock, iso
from sync.client import CentralClient, RetryPolicy, central_url_problem
from sync.run import Progress, SyncPreview, SyncReport, preview, run_sync
from terminal.devicekey import create_device_key
from terminal.disk import SYNC_REFUSED, check_space, fail_full, is_disk_full
from terminal.errors import ConfigError, InputError
from terminal.journal import Journal
from terminal.service import TerminalService, journal_event
from terminal.state import Enrolment, TerminalState
from terminal.syncrecord import keep_sync

log = logging.getLogger(__name__)


def _software() -> str:
    try:
        return version("unioncard")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "(not installed)"


SOFTWARE = _software()  # reported to the union at each sync, journaled at start-up


def central_client(enrolment: Enrolment) -> CentralClient:
    """The client of the union's service this terminal is enrolled with: the union's CA
    the only one trusted; plain http to another machine, or https without the CA,
    refused (sync.client.central_url_problem)."""
    return CentralClient(
        enrolment.central_url,
        enrolment.terminal_id,
        enrolment.api_secret,
        ca_cert=enrolment.ca_cert,
    )


def sync_terminal(
    state: TerminalState,
    journal: Journal,
    clock: Clock,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> SyncReport:
    """Upload the journal, pull the union's updates (sync.run), and record the outcome.
    A failure is recorded and raised again.

    The whole sync holds the data folder's update lock (TerminalState.updating): the
    nightly sync, one run by hand and the daemon's own may overlap, and the second
    waits for the first, then goes on from what it installed, or raises
    SyncRunningError (not recorded: the sync running records its own outcome)."""
    enrolment = state.enrolment
    with state.updating():
        return _sync_held(state, journal, clock, enrolment, batch_size, progress)


def _sync_held(
    state: TerminalState,
    journal: Journal,
    clock: Clock,
    enrolment: Enrolment,
    batch_size: int,
    progress: Progress | None,
) -> SyncReport:
    started = clock()

    def event(code: str, detail: str) -> None:
        journal_event(journal, state, code, detail, clock())

    try:
        check_space(state.dir, SYNC_REFUSED)  # nothing sent: the acknowledgements need room
        client = central_client(enrolment)  # refuses plain http elsewhere: recorded too
        try:
            report = run_sync(
                enrolment.terminal_id,
                state,
                journal,
                client,
                clock,
                batch_size=batch_size,
                events=event,
                progress=progress,
                software=f"unioncard {SOFTWARE}",
            )
        finally:
            client.close()
    except Exception as exc:
        try:
            said = exc.msg.as_json() if isinstance(exc, UnioncardError) else None
            keep_sync(
                state.dir, last_attempt_at=iso(started), last_error=str(exc), last_error_id=said
            )
        except OSError as kept:  # a full disk refuses the record too: the error says why
            log.error("the sync's outcome was not recorded: %s", kept)
        if is_disk_full(exc):  # e.g. the roster's download filled the disk
            fail_full(state.dir, SYNC_REFUSED)
        raise
    if report.problems:
        keep_sync(
            state.dir,
            last_attempt_at=iso(started),
            last_error="; ".join(report.problems),
            last_error_id=None,
        )
    else:
        keep_sync(
            state.dir,
            last_attempt_at=iso(started),
            last_success_at=iso(clock()),
            last_summary=report.describe(),
            last_error=None,
            last_error_id=None,
        )
    return report


def enrol_by_code(
    data_dir: Path, central_url: str, code: str, ca_cert: Path | None, clock: Clock
) -> tuple[Enrolment, SyncReport]:
    """Enrol this terminal with a one-time code from the union (pact.enrolcode): make
    the device key, send the code signed with it, install the bundle the union answers
    (its root, the token key, the secret, the merchant) and run the first sync (the
    roster and the policy). ``ca_cert``: the union's CA certificate, for https."""
    normal = normal_code(code)
    if normal is None:
        raise InputError(
            N_(
                "%(code)s is not an enrolment code: it is 20 letters and digits in groups "
                "of four, like K7QM-3XRT-6PLA-WEN2-H4ZC"
            ),
            code=code[:40],
        )
    problem = central_url_problem(central_url, ca_cert is not None)
    if problem is not None:
        raise ConfigError(N_("cannot enrol: %(problem)s"), problem=problem)
    ca_pem = None
    if ca_cert is not None:
        try:
            ca_pem = ca_cert.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                N_("cannot read the CA certificate %(file)s: %(problem)s"),
                file=str(ca_cert),
                problem=str(exc),
            ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    signer = create_device_key(data_dir)  # the union registers this key with the code
    client = CentralClient(
        central_url, "", "", retry=RetryPolicy(attempts=3, backoff=0.5), ca_cert=ca_cert
    )
    try:
        answer = client.enrol_by_code(
            normal,
            public_key_hex(signer.public_key()),
            sign_request(signer, normal, central_url),
            central_url,
            ca_cert is not None,
        )
    finally:
        client.close()
    try:
        bundle = json.loads(answer)
        if not isinstance(bundle, dict):
            raise ValueError("not an object")
    except (ValueError, RecursionError):
        raise ConfigError(
            N_("the central service's answer to the enrolment is not a bundle: try again")
        ) from None
    if ca_pem is not None:
        bundle["ca_cert"] = ca_pem
    state = TerminalState(data_dir)
    enrolment = state.enrol(json.dumps(bundle).encode())
    state.load()
    journal = Journal.existing(state.journal_path, state.signer())
    try:
        report = sync_terminal(state, journal, clock)
    finally:
        journal.close()
    return enrolment, report


def preview_sync(
    state: TerminalState, journal: Journal, clock: Clock, batch_size: int = 500
) -> SyncPreview:
    """What a sync would do now (sync.run.preview): nothing sent, installed or
    recorded."""
    enrolment = state.enrolment
    client = CentralClient(
        enrolment.central_url,
        enrolment.terminal_id,
        enrolment.api_secret,
        ca_cert=enrolment.ca_cert,
    )
    try:
        return preview(state, journal, client, clock(), batch_size)
    finally:
        client.close()


class SyncProcessError(UnioncardError):
    """The daemon's sync, run as a process of its own, ended with an error (its line)."""


BACKGROUND_NICE = 19  # the daemon's sync: the lowest CPU priority there is


def run_in_the_background(pid: int) -> list[str]:
    """Give process ``pid`` (a sync the daemon just started) only the CPU its checkouts
    leave over: nice 19 and Linux's ``SCHED_IDLE`` policy, under which a checkout's
    thread that wakes takes a core from it at once (bench/bgsync.py: its CPU, mostly
    the imports of ``unioncard sync``, slowed the checkouts served meanwhile on a
    2-core machine). Only lowers, so it needs no privilege; a seccomp filter that
    refuses the calls (systemd's ``~@resources``) leaves the sync at the daemon's
    priority. Its I/O class is left alone: the sync holds SQLite's write lock while it
    marks a batch uploaded, and an idle I/O class could keep it there, the checkouts
    waiting behind it. Returns what was refused, each as a phrase (empty: all set).

    The child's other threads, if any, start later and inherit both."""
    refused = []
    try:
        os.setpriority(os.PRIO_PROCESS, pid, BACKGROUND_NICE)
    except OSError as exc:
        refused.append(f"nice {BACKGROUND_NICE} ({exc.strerror})")
    idle = getattr(os, "SCHED_IDLE", None)  # Linux only
    if idle is not None:
        try:
            os.sched_setscheduler(pid, idle, os.sched_param(0))
        except OSError as exc:
            refused.append(f"SCHED_IDLE ({exc.strerror})")
    return refused


def sync_in_a_process(data_dir: Path, batch_size: int, timeout: float = 3600.0) -> SyncReport:
    """Run ``unioncard sync`` for ``data_dir`` in a process of its own, as the nightly
    timer does, in the background of the machine (:func:`run_in_the_background`): the
    daemon's syncs ("sync now", :class:`AutoSync`) so never hold Python's interpreter
    lock, or the journal's, in the process that serves the checkouts (a sync in a thread
    of it made checkouts wait: docs/benchmarks.md), nor take a core from a checkout. It
    records its outcome in ``sync.json`` as any sync does; a failure is raised with the
    sync's own error line; past ``timeout`` seconds it is killed
    (subprocess.TimeoutExpired)."""
    env = {**os.environ, "UNIONCARD_SYNC_BATCH": str(batch_size)}
    command = [sys.executable, "-m", "unioncard", "sync", "--data", str(data_dir), "--json"]
    # Lowered once started (no preexec_fn: unsafe in the daemon, which has threads); it
    # runs at the daemon's priority only for the moment it takes.
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        refused = run_in_the_background(process.pid)
        if refused:
            log.info("the sync runs at the daemon's priority: refused %s", ", ".join(refused))
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    lines = stderr.strip().splitlines()
    if process.returncode != 0:
        raise SyncProcessError(lines[-1] if lines else f"the sync exited {process.returncode}")
    try:
        outcome = json.loads(stdout)
    except ValueError:
        raise SyncProcessError("the sync's answer is not JSON") from None
    report = SyncReport(
        uploaded=int(outcome.get("uploaded", 0)),
        sent=int(outcome.get("sent", 0)),
        pending=outcome.get("pending"),
        roster_version=outcome.get("roster_version"),
        policy_version=outcome.get("policy_version"),
        root_version=outcome.get("root_version"),
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


class AutoSync:
    """The daemon's own syncs (the nightly timer stays as the backstop): one is due
    ``every`` seconds after the last one started, or once ``after_sales`` entries were
    journaled since (0: never, for either). It starts in the background only while
    the terminal is idle (no checkout waiting for a card or for its confirmation), so
    it never holds up a cashier. Each :meth:`tick` also journals an offline limit
    reached while the shop is quiet (pact.offline)."""

    def __init__(
        self,
        service: TerminalService,
        syncer: BackgroundSync,
        every: float,
        after_sales: int,
        monotonic: Callable[[], float],
    ) -> None:
        self.service = service
        self.syncer = syncer
        self.every = every
        self.after_sales = after_sales
        self.monotonic = monotonic
        self._started_at = monotonic()  # the daemon's start counts as the last one
        self._entries_at = service.journal.counts()[0]

    def due(self) -> str | None:
        """Why a sync is due now ("time", "sales"), or None."""
        if self.every > 0 and self.monotonic() - self._started_at >= self.every:
            return "time"
        if self.after_sales > 0:
            total, pending = self.service.journal.counts()
            if pending > 0 and total - self._entries_at >= self.after_sales:
                return "sales"
        return None

    def tick(self) -> str | None:
        """Start a sync if one is due and the terminal is idle; return why it started."""
        service = self.service
        service.check_offline(service.state.current, service.clock())
        if self.syncer.running or service.busy():
            return None
        why = self.due()
        if why is None or not self.syncer.start():
            return None
        self._started_at = self.monotonic()
        self._entries_at = service.journal.counts()[0]
        log.info("sync started by the daemon (%s)", why)
        return why
