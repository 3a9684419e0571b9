"""Checkout latency through the till API while the terminal syncs a large backlog in
the background, against the same checkouts with no sync (issue 13: p99 at most 1.2x).

The terminal. Enrolled to a real central service (gunicorn, 2 workers, SQLite, on
loopback: bench/central.py's, as `unioncard central serve` runs it) and synced once
(its roster and policy installed), then served as the daemon serves it (waitress with
the daemon's threads over ``terminal.web.create_app(service, sync)``, ``sync`` being
the daemon's own: ``terminal.syncing.sync_in_a_process``, ``unioncard sync`` of the
served folder in a process of its own at the lowest CPU priority, nice 19 under Linux's
SCHED_IDLE (``terminal.syncing.run_in_the_background``), run by the app's
``terminal.syncing.BackgroundSync``, the one the daemon's ``AutoSync`` starts when a
sync is due) in a process of its own (``python -m
bench.bgsync serve``). Its card reader answers the member card at once, as in
bench/tillapi.py.

The checkouts. As bench/tillapi.py's: ``POST /api/v1/checkout`` of 128.00 confirmed
(journaled with its fsync), one after the other from the till's keep-alive session.

The phases, alternating round by round (which goes first too):

- with a sync: the served process first journals sales until :data:`BACKLOG` wait for
  upload (untimed; they are the sales a shop makes while its link is down, signed and
  chained like any), a few unmeasured checkouts, then ``POST /api/v1/sync`` starts
  the background sync and the checkouts are measured while it runs (each answer says
  whether the sync still ran when the checkout ended); at most :data:`COUNT`;
- without: :data:`COUNT` checkouts, no sync.

Where things run (:func:`placements`): for the goal's figure the central service
stands in for the union's, which is on another machine: gunicorn on a CPU of its own
(taskset), its files (and the other terminal's, another shop's) in memory, so that what
is measured is what the terminal's own sync costs its checkouts; the served terminal
and its sync's process on the other CPU, its journal on disk. Then the same rounds
again with everything on every CPU and one disk (informative), as on one machine.

A round's ratio is the p99 of its checkouts with the sync over the p99 of those
without; the figure is the median of the rounds' ratios with their range and
inter-quartile range. The backlog stays under the default pending cap (5,000: past it a
terminal gives no member discount), so every checkout is the same discounted one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import Context, Figure, check, percentile, runs_spread

BACKLOG = 4_000  # sales waiting for upload when the sync starts (the pending cap is 5,000)
GOAL = "<= 1.2"  # issue 13: the background sync's effect on checkout p99
AMOUNT = "128.00"
SYNCING = "X-Bench-Syncing"  # the bench's answer header: did the sync run at the end?
MS = 1000.0
SYNC_THREAD = "sync"  # terminal.syncing.BackgroundSync's thread


# ------------------------------------------------------------------ the server


def serve(data_dir: Path, port_file: Path) -> None:
    """The terminal at ``data_dir`` served as the daemon serves it, with its sync; the
    port it got is written to ``port_file``. Runs until SIGTERM."""
    from waitress import create_server

    from bench.fixtures import MEMBER_PAN
    from pact.files import atomic_write
    from reader.identity import CardIdentity, Tokenize, identity_from_pan
    from terminal import daemon
    from terminal.service import TerminalService
    from terminal.settings import Settings
    from terminal.syncing import BackgroundSync, sync_in_a_process
    from terminal.web import create_app
    from unioncard.cli import system_clock

    def read_card(*, timeout: float, tokenize: Tokenize) -> CardIdentity:
        return identity_from_pan("unionpay", b"\xa0", MEMBER_PAN, "2030-12", tokenize)

    daemon.log_to_stdout()
    daemon.responsive_threads()  # as daemon.serve
    service = TerminalService(data_dir, read_card, system_clock, monotonic=time.monotonic)
    service.startup("bench")
    batch = Settings().sync_batch

    def sync() -> object:  # as terminal.daemon.serve's: `unioncard sync` in a process
        return sync_in_a_process(data_dir, batch)

    app = create_app(service, sync)
    syncer: BackgroundSync = app.extensions["unioncard_sync"]
    app.wsgi_app = bench_routes(app.wsgi_app, service, syncer)  # type: ignore[method-assign]
    server = create_server(app, host="127.0.0.1", port=0, threads=daemon.THREADS)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    atomic_write(port_file, str(server.effective_port).encode())
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        app.extensions["unioncard_changes"].close()
        server.close()
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=daemon.SHUTDOWN_WAIT)
        syncer.join(60)
        service.close()


class TimedLock:
    """The journal's lock (an RLock), noting how long the other threads waited for it
    and how long the sync's thread held it each time, in seconds."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.local = threading.local()
        self.waits: list[float] = []  # the checkouts' (every thread but the sync's)
        self.holds: list[float] = []  # the sync's
        self.held_by: dict[str, float] = {}  # the sync's longest hold, by journal method

    def __enter__(self) -> TimedLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        began = time.perf_counter()
        got = bool(self.inner.acquire(blocking, timeout))
        depth = getattr(self.local, "depth", 0)
        if got:
            if depth == 0:
                self.local.start = time.perf_counter()
                caller = sys._getframe(1)  # __enter__, or the caller of acquire
                while caller.f_back is not None and caller.f_code.co_name in (
                    "__enter__",
                    "acquire",
                ):
                    caller = caller.f_back
                method = caller.f_locals.get("method")  # terminal.journal._locked's wrapper
                self.local.name = getattr(method, "__name__", caller.f_code.co_name)
                if threading.current_thread().name != SYNC_THREAD:
                    self.waits.append(self.local.start - began)
            self.local.depth = depth + 1
        return got

    def release(self) -> None:
        self.local.depth -= 1
        if self.local.depth == 0 and threading.current_thread().name == SYNC_THREAD:
            held = time.perf_counter() - self.local.start
            self.holds.append(held)
            name = self.local.name
            self.held_by[name] = max(held, self.held_by.get(name, 0.0))
        self.inner.release()


class TimedCommits:
    """The journal's database (a sqlite_utils.Database), noting how long each COMMIT of
    a checkout took (its fsync: synchronous=FULL), in seconds; not while ``filling``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.commits: list[float] = []
        self.filling = False

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql != "COMMIT" or self.filling:
            return self.inner.execute(sql, *args, **kwargs)
        began = time.perf_counter()
        try:
            return self.inner.execute(sql, *args, **kwargs)
        finally:
            self.commits.append(time.perf_counter() - began)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def bench_routes(wsgi_app: Any, service: Any, syncer: Any) -> Any:
    """``wsgi_app`` with the bench's own calls: ``POST /bench/backlog?pending=N``
    journals sales (as the till makes them, without fsync) until N wait for upload;
    ``GET /bench/syncing``; ``GET /bench/stats`` answers and clears what the server
    noted since the last one (each checkout's wall and thread CPU time inside the
    server, its COMMIT's time, the journal lock's waits and the sync's holds of it).
    Each checkout's answer gets :data:`SYNCING` (1 when the background sync still ran
    as it ended)."""
    from urllib.parse import parse_qs

    from bench.fixtures import MEMBER_PAN
    from pact.basket import Basket
    from pact.cards import PanTokenizer
    from reader.identity import identity_from_pan
    from terminal.checkout import checkout

    def fill(pending: int) -> int:
        state, journal = service.state, service.journal
        tokenize = PanTokenizer(state.enrolment.token_key)
        identity = identity_from_pan("unionpay", b"\xa0", MEMBER_PAN, "2030-12", tokenize)
        basket = Basket.of_amount(12800)
        with journal.lock:
            journal.db.execute("PRAGMA synchronous=OFF")
            db.filling = True
            try:
                for _ in range(pending - journal.counts()[1]):
                    checkout(
                        state.current, state.enrolment, journal, identity, basket, service.clock()
                    )
            finally:
                db.filling = False
                journal.db.execute("PRAGMA synchronous=FULL")
        return int(journal.counts()[1])

    lock = TimedLock(service.journal.lock)
    service.journal.lock = lock
    db = TimedCommits(service.journal.db)
    service.journal.db = db
    walls: list[float] = []
    cpus: list[float] = []

    def routed(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO")
        if path == "/bench/stats":
            stats = {"wall": walls, "cpu": cpus, "waits": lock.waits, "holds": lock.holds}
            body = json.dumps({**stats, "commits": db.commits, "held_by": lock.held_by}).encode()
            walls[:], cpus[:], lock.waits[:], lock.holds[:] = [], [], [], []
            db.commits[:] = []
            lock.held_by.clear()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if path == "/bench/backlog":
            wanted = int(parse_qs(environ.get("QUERY_STRING", ""))["pending"][0])
            body = json.dumps({"pending": fill(wanted)}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if path == "/bench/syncing":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"running": syncer.running}).encode()]
        if path != "/api/v1/checkout":
            return wsgi_app(environ, start_response)
        answered: list[Any] = []
        wall, cpu = time.perf_counter(), time.thread_time()

        def keep(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            answered[:] = [status, headers, exc_info]
            return None

        body = b"".join(wsgi_app(environ, keep))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.thread_time() - cpu)
        status, headers, exc_info = answered
        start_response(status, [*headers, (SYNCING, "1" if syncer.running else "0")], exc_info)
        return [body]

    return routed


# ------------------------------------------------------------------ the bench


def checkouts(
    session: Any, url: str, count: int, deadline: float, running: Any = None
) -> list[float]:
    """Up to ``count`` checkouts one after the other, timed from the till's side,
    until ``deadline`` (time.monotonic); with ``running`` (a function of the answer),
    until it says the sync no longer ran, that checkout not kept."""
    out: list[float] = []
    while len(out) < count and time.monotonic() < deadline:
        began = time.perf_counter()
        answer = session.post(f"{url}/api/v1/checkout", json={"amount": AMOUNT, "confirm": True})
        took = time.perf_counter() - began
        body = answer.json() if answer.status_code == 200 else {}
        if body.get("state") != "confirmed" or not body.get("member"):
            raise RuntimeError(f"checkout failed: {answer.status_code} {answer.text[:300]}")
        if running is not None and not running(answer):
            break
        out.append(took)
    return out


def other(data_dir: Path) -> None:
    """Another terminal's sync, in a process of its own (``python -m bench.bgsync
    other DATA_DIR``), to the same central service: ``fill N`` journals sales until N
    wait for upload, ``sync`` syncs them; each answers one line."""
    from bench.central import _journal
    from terminal.journal import Journal
    from terminal.state import TerminalState
    from terminal.syncing import sync_terminal
    from unioncard.cli import system_clock as clock

    state = TerminalState.open(data_dir)
    state.load()
    journal = Journal(state.journal_path, state.signer())
    terminal_id = state.enrolment.terminal_id
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["fill"]:
            more = int(words[1]) - journal.counts()[1]
            _journal(journal, terminal_id, more, clock(), state.signer())
            print(f"filled {journal.counts()[1]}", flush=True)
        elif words[:1] == ["sync"]:
            report = sync_terminal(state, journal, clock)
            print(f"synced {report.uploaded} {journal.counts()[1]}", flush=True)
    journal.close()


class Other:
    """The other terminal's process, driven from here."""

    def __init__(self, data_dir: Path, prefix: list[str]) -> None:
        import subprocess

        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "bench.bgsync", "other", str(data_dir)],
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.done = threading.Event()
        self.answer = ""

    def ask(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        if not answer:
            raise RuntimeError(f"the other terminal's process ended: {line}")
        return answer

    def sync_in_background(self) -> None:
        self.done.clear()

        def wait() -> None:
            self.answer = self.ask("sync")
            self.done.set()

        threading.Thread(target=wait, daemon=True).start()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(60)


@dataclass(frozen=True)
class Placement:
    """Where the central service and the served terminal run: on the CPUs given (all
    when None) and the central service's files (and the other terminal's) in
    ``elsewhere``."""

    name: str
    central: frozenset[int] | None
    terminal: frozenset[int] | None
    elsewhere: Path


def placements(ctx: Context) -> list[Placement]:
    """Remote: the central service (and the other terminal, another shop's) stands in
    for one on another machine: a CPU of its own, its files in memory (tmpfs), so it
    takes neither the terminal's core nor its disk; the served terminal (and its
    sync's process) on the other CPUs. Shared: everything on every CPU and on the
    same disk, as on one machine. Remote needs two CPUs at least; with one there is
    only shared."""
    cpus = sorted(os.sched_getaffinity(0))
    shared = Placement("shared", None, None, ctx.workdir / "bgsync-shared")
    if len(cpus) < 2:
        return [shared]
    memory = Path("/dev/shm")
    elsewhere = Path(
        tempfile.mkdtemp(prefix="unioncard-bench-", dir=memory if memory.is_dir() else None)
    )
    remote = Placement(
        "remote", frozenset(cpus[-1:]), frozenset(cpus[:-1]), elsewhere / "bgsync-remote"
    )
    return [remote, shared]


@dataclass
class Measured:
    """One placement's rounds: the checkouts' times by phase, the syncs' durations and
    what the served terminal noted by phase."""

    placement: Placement
    times: dict[str, list[list[float]]]
    sync_seconds: list[float]
    inside: dict[str, list[dict[str, Any]]]


def figures(ctx: Context) -> list[Figure]:
    rounds = ctx.scale(11, 3)
    count = ctx.scale(300, 100)
    backlog = ctx.scale(BACKLOG, 2_000)
    out: list[Figure] = []
    for placement in placements(ctx):
        try:
            m = _rounds(ctx, placement, rounds, count, backlog)
        finally:
            if placement.central is not None:
                shutil.rmtree(placement.elsewhere.parent, ignore_errors=True)
        goal = GOAL if not out else None  # the first placement's: remote when there are 2 CPUs
        out += [
            _figure(m, goal, backlog, count),
            _control(m, backlog, count),
        ]
    return out


def _rounds(ctx: Context, placement: Placement, rounds: int, count: int, backlog: int) -> Measured:
    import requests

    from bench.central import _gunicorn, pinned
    from bench.tillapi import served
    from terminal.access import new_api_token
    from terminal.journal import Journal
    from terminal.state import TerminalState
    from terminal.syncing import sync_terminal

    warmup = 5
    cap = 20.0  # seconds a phase may take at the most
    folder = ctx.workdir / f"bgsync-{placement.name}"
    phases = ("with", "without", "elsewhere")
    measured: dict[str, list[list[float]]] = {p: [] for p in phases}
    sync_seconds: list[float] = []
    inside: dict[str, list[dict[str, Any]]] = {p: [] for p in phases}
    with _gunicorn(
        placement.elsewhere / "central", None, ["T-BG", "T-OTHER"], ctx.clock, placement.central
    ) as central:
        states = {}
        for terminal_id, where in (("T-BG", folder), ("T-OTHER", placement.elsewhere)):
            state = TerminalState(where / terminal_id)
            state.enrol(json.dumps(central.bundles[terminal_id]).encode())
            journal = Journal(state.journal_path, state.signer())
            first = sync_terminal(state, journal, ctx.clock)  # the roster and the policy
            journal.close()
            if first.problems or state.current.policy is None:
                raise RuntimeError(f"the first sync: {first.describe()} {first.problems}")
            states[terminal_id] = state
        token = new_api_token(states["T-BG"].dir)
        elsewhere = Other(states["T-OTHER"].dir, pinned(placement.central))
        with served(
            f"bgsync-{placement.name}", states["T-BG"].dir, "bench.bgsync", placement.terminal
        ) as server:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"
            url = server.url

            def stats() -> dict[str, Any]:
                return dict(session.get(f"{url}/bench/stats").json())

            try:
                checkouts(session, url, warmup, time.monotonic() + cap)
                for n in range(rounds + 1):  # round 0: a warm-up
                    for phase in phases[n % 3 :] + phases[: n % 3]:
                        if phase == "with":
                            filled = session.post(
                                f"{url}/bench/backlog", params={"pending": backlog}
                            ).json()
                            if filled["pending"] != backlog:
                                raise RuntimeError(f"the backlog: {filled}")
                        elif phase == "elsewhere":
                            elsewhere.ask(f"fill {backlog}")
                        checkouts(session, url, warmup, time.monotonic() + cap)
                        stats()
                        started = time.perf_counter()
                        running = None
                        if phase == "with":
                            if session.post(f"{url}/api/v1/sync").status_code != 202:
                                raise RuntimeError("the sync did not start")

                            def running(answer: Any) -> bool:
                                return bool(answer.headers.get(SYNCING) == "1")
                        elif phase == "elsewhere":
                            elsewhere.sync_in_background()

                            def running(answer: Any) -> bool:
                                return not elsewhere.done.is_set()

                        times = checkouts(session, url, count, time.monotonic() + cap, running)
                        during = stats()
                        if phase == "with":
                            while session.get(f"{url}/bench/syncing").json()["running"]:
                                time.sleep(0.01)
                            took = time.perf_counter() - started
                            status = session.get(f"{url}/api/v1/status").json()
                            if status["sync"]["last_error"] or status["pending_upload"] > count:
                                raise RuntimeError(f"the sync: {status['sync']}")
                        elif phase == "elsewhere":
                            elsewhere.done.wait(120)
                            if not elsewhere.answer.endswith(" 0"):
                                raise RuntimeError(f"the other sync: {elsewhere.answer}")
                        if not times:
                            raise RuntimeError(f"no checkout during the phase {phase}")
                        if n:
                            measured[phase].append(times)
                            inside[phase].append(during)
                            if phase == "with":
                                sync_seconds.append(took)
            finally:
                session.close()
                elsewhere.close()
    return Measured(placement, measured, sync_seconds, inside)


def _noted(inside: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What the served terminal noted, by phase: its own time for the checkouts (wall,
    thread CPU), their waits for the journal's lock, their commits (the fsync), and the
    sync's holds of it."""
    noted: dict[str, Any] = {}
    for side in ("with", "elsewhere", "without"):
        for key, label in (
            ("wall", "inside_wall"),
            ("cpu", "inside_cpu"),
            ("waits", "lock_wait"),
            ("commits", "commit"),
        ):
            values = [v for phase in inside[side] for v in phase[key]] or [0.0]
            noted[f"{label}_p99_ms_{side}"] = round(percentile(values, 99) * MS, 2)
            noted[f"{label}_max_ms_{side}"] = round(max(values) * MS, 2)
    holds = [v for phase in inside["with"] for v in phase["holds"]] or [0.0]
    noted["sync_lock_hold_p50_ms"] = round(percentile(holds, 50) * MS, 2)
    noted["sync_lock_hold_max_ms"] = round(max(holds) * MS, 2)
    noted["sync_lock_holds_per_sync"] = round(len(holds) / max(1, len(inside["with"])), 1)
    by: dict[str, float] = {}
    for phase in inside["with"]:
        for name, held in phase["held_by"].items():
            by[name] = max(held, by.get(name, 0.0))
    for name, held in sorted(by.items(), key=lambda kv: -kv[1]):
        noted[f"sync_lock_hold_max_ms_{name}"] = round(held * MS, 2)
    return noted


def _ratio(
    name: str,
    product: list[list[float]],
    baseline: list[list[float]],
    goal: str | None,
    note: str,
    count: int,
    detail: dict[str, Any],
) -> Figure:
    """The median of the rounds' p99 ratios of ``product`` to ``baseline``."""
    per_round = [
        percentile(a, 99) / percentile(b, 99) for a, b in zip(product, baseline, strict=True)
    ]
    value = statistics.median(per_round)
    pooled = [t for r in product for t in r]
    pooled_without = [t for r in baseline for t in r]
    return Figure(
        name=name,
        value=round(value, 3),
        unit="x",
        goal=goal,
        met=check(value, goal) if goal else None,
        baseline="the same checkouts with no sync running, alternating round by round",
        spread=runs_spread(
            per_round, f"{len(per_round)} rounds of up to {count} checkouts a side (p99 ratio)"
        ),
        note=note,
        detail={
            "with_p50_ms": round(percentile(pooled, 50) * MS, 2),
            "with_p99_ms": round(percentile(pooled, 99) * MS, 2),
            "with_max_ms": round(max(pooled) * MS, 2),
            "without_p50_ms": round(percentile(pooled_without, 50) * MS, 2),
            "without_p99_ms": round(percentile(pooled_without, 99) * MS, 2),
            "without_max_ms": round(max(pooled_without) * MS, 2),
            "pooled_p99_ratio": round(percentile(pooled, 99) / percentile(pooled_without, 99), 3),
            "checkouts_during_sync_fewest": min(len(r) for r in product),
            "checkouts_during_sync_median": statistics.median(len(r) for r in product),
            **detail,
        },
        runs=[round(r, 4) for r in per_round],
    )


WHERE = {
    "remote": "the central service elsewhere",
    "shared": "the central service on the same machine",
}


def _figure(m: Measured, goal: str | None, backlog: int, count: int) -> Figure:
    from bench.central import cpu_list

    p = m.placement
    if p.central is None:
        where = (
            "against the central service under gunicorn (2 workers, SQLite, normal "
            "priority) on the same machine, every process on every CPU and on one disk"
        )
    else:
        where = (
            f"against the central service under gunicorn (2 workers, SQLite, normal "
            f"priority) standing in for one on another machine: on CPU "
            f"{cpu_list(p.central)} only, its files in memory (tmpfs); the served terminal "
            f"and its sync's process on CPU {cpu_list(p.terminal)}, its journal on disk"
        )
    return _ratio(
        f"till API checkout while a background sync uploads a backlog of {backlog:,} "
        f"sales vs no sync, {WHERE[p.name]} (p99)",
        m.times["with"],
        m.times["without"],
        goal,
        "POST /api/v1/checkout (confirmed, journaled with fsync) through waitress with "
        "the daemon's threads, one after the other, while terminal.syncing.BackgroundSync "
        "runs the daemon's sync (`unioncard sync` in a process of its own at nice 19 under "
        f"SCHED_IDLE: terminal.syncing.sync_in_a_process) {where}; only the "
        "checkouts that ended while the sync ran are counted. In the detail, what the "
        "served terminal noted: its own time for the checkouts (inside_wall, inside_cpu: "
        "thread CPU), their waits for the journal's lock, their commits (commit: the "
        "fsync), the sync's holds of it",
        count,
        {
            "placement": p.name,
            "sync_seconds_median": round(statistics.median(m.sync_seconds), 2),
            "backlog": backlog,
            **_noted(m.inside),
        },
    )


def _control(m: Measured, backlog: int, count: int) -> Figure:
    return _ratio(
        f"till API checkout while another terminal's process syncs a backlog of {backlog:,} "
        f"sales to the same central service vs no sync, {WHERE[m.placement.name]} (p99)",
        m.times["elsewhere"],
        m.times["without"],
        None,
        "the same checkouts while a second terminal (another shop's: placed with the "
        "central service), in a process of its own, syncs the same backlog to the same "
        "central service: what the central service and a sync cost the served terminal, "
        "with nothing in its own process (informative; the phases interleaved with the "
        "figure above's)",
        count,
        {"placement": m.placement.name, "backlog": backlog},
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"] and len(argv) == 3:
        serve(Path(argv[1]), Path(argv[2]))
        return 0
    if argv[:1] == ["other"] and len(argv) == 2:
        other(Path(argv[1]))
        return 0
    print(
        "usage: python -m bench.bgsync serve DATA_DIR PORT_FILE | other DATA_DIR", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def prose(figures: list[Figure]) -> list[str]:
    """How to read the background sync figures, for docs/benchmarks.md."""

    def find(prefix: str, placement: str) -> Figure | None:
        return next(
            (
                f
                for f in figures
                if f.name.startswith(prefix) and f.detail.get("placement") == placement
            ),
            None,
        )

    remote = find("till API checkout while a back", "remote")
    shared = find("till API checkout while a back", "shared")
    goal = next((f for f in (remote, shared) if f is not None and f.goal), None)
    if goal is None or goal.value is None:
        return []
    control = find("till API checkout while another", goal.detail["placement"])
    d = goal.detail
    verdict = "met" if goal.met else "**not met**"
    out = [
        "### Checkouts during a background sync",
        "",
        f"**The figure.** {goal.value:g}x ({verdict}, goal {goal.goal}): checkout p99 "
        f"{d['with_p99_ms']:g} ms while the daemon's background sync uploads a backlog "
        f"of {d['backlog']:,} sales (median sync {d['sync_seconds_median']:g} s, "
        f"median {d['checkouts_during_sync_median']:g} checkouts during it) against "
        f"{d['without_p99_ms']:g} ms with no sync (pooled over the rounds), "
        f"{WHERE[d['placement']]}.",
        "",
    ]
    if remote is not None and shared is not None and shared.value is not None:
        out += [
            "**Where the central service runs.** A shop's terminal syncs with the union's "
            "service over the Internet: what the goal is about is what the terminal's own "
            "sync costs its checkouts. On this 2-core machine the central service would "
            "otherwise take the cores and the disk the terminal checks out on, so for the "
            "goal's figure it stands in for a remote one: gunicorn on a CPU of its own, its "
            "files in memory; the served terminal and its sync's process on the other CPU "
            "and its journal on disk, as in a shop. With everything on both CPUs and one "
            f"disk (the same rounds' design, run after it): {shared.value:g}x (runs "
            f"{min(shared.runs):.2f}-{max(shared.runs):.2f}; median sync "
            f"{shared.detail['sync_seconds_median']:g} s against {d['sync_seconds_median']:g} "
            "s on the terminal's one CPU, where it gets only what the checkouts leave).",
            "",
        ]
    s = d
    out.append(
        f"**Inside the terminal.** A checkout's own CPU time, p99 "
        f"{s['inside_cpu_p99_ms_with']:g} ms with the sync, {s['inside_cpu_p99_ms_without']:g} "
        f"without; its wall time there, p99 {s['inside_wall_p99_ms_with']:g} ms against "
        f"{s['inside_wall_p99_ms_without']:g}. The journal's lock waited for, p99 "
        f"{s['lock_wait_p99_ms_with']:g} ms (max {s['lock_wait_max_ms_with']:g}): the sync "
        "runs as `unioncard sync` in a process of its own, at nice 19 under SCHED_IDLE, "
        "marking uploaded sales through its own connection (SQLite's write lock, not the "
        "daemon's), so a checkout's thread takes the CPU from it at once; what it shares "
        "is the disk (a checkout's commit, with its fsync, p99 "
        f"{s['commit_p99_ms_with']:g} ms with the sync, {s['commit_p99_ms_without']:g} "
        "without)."
        + (
            f" The control, another shop's terminal syncing the same backlog to the same "
            f"central service: {control.value:g}x (runs {min(control.runs):.2f}-"
            f"{max(control.runs):.2f}), what the central service's work costs the checkouts "
            "with nothing of the sync in the terminal."
            if control is not None and control.value is not None
            else ""
        )
    )
    return out
