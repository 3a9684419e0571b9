"""Checkout latency through the till API under waitress, with 8 clients polling the
status, against the same checkouts without them (issue 12).

The server. A terminal enrolled and synced as in bench/fixtures.py, served the way
the daemon serves it (terminal/daemon.py: ``waitress.create_server(app, host, port,
threads=daemon.THREADS)`` over ``terminal.web.create_app(service)``, its log one
line per event on stdout, its start-up events journaled), on 127.0.0.1 at a free
port, in a process of its own (``python -m bench.tillapi serve``). Its card reader
is a function in that process that answers the member card at once (the keyed
token is still computed), so the figures are the HTTP and service path, not the
card's air time (that is bench/card.py's tap to quote).

The checkout. One ``POST /api/v1/checkout`` of ``{"amount": "128.00", "confirm":
true}`` with the till's ``Authorization: Bearer`` token
(``terminal.access.new_api_token``): token, roster lookup, quote, the journal
append with its fsync (WAL, synchronous=FULL), the JSON answer. Timed in this
process by the till's client, one ``requests.Session`` (keep-alive), one checkout
after the other.

The pollers. 8 clients, each its own ``requests.Session`` looping ``GET
/api/v1/status`` with the same token, as threads of one more process
(``python -m bench.tillapi poll``): not threads of the server's process, whose GIL
they would take from the checkout, and not of the till's process, whose clock they
would delay. Each polls every 100 ms, the fastest of what a till does (every 100 to
500 ms; the cashier page asks for its reader every 2 s and for the status every
15 s), on its own schedule from a random start, a late answer skipping the ticks it
missed rather than piling up. The goal is for that rate; every 500 ms (the slowest
till) and as fast as they can (each asks again as soon as it has its answer) are
informative.

The journal. The status counts the journal's entries, so the journal's size is part
of the scenario (a count that read every row once made the goal 58x here): the
terminal's journal is never pruned, and a year of a shop at the scale model's 200
sales a day is 73,000 entries (QUICK=1 fills 10,000). The goal is measured on that
journal; the same checkouts on a second served terminal whose journal holds only the
bench's own sales (a few thousand by the end) are informative.

The uploads. Before each phase the bench marks the journal's entries uploaded but
the newest 200, as the nightly sync does (from its own process, while the server
waits for the next phase): the terminal gives no member discount with 5,000 entries
or more waiting for upload (pact.offline), and the bench's own checkouts would pass
that. So both journals keep a day's entries pending, phase after phase.

Rounds. Each round runs the phases (on the year's journal: no pollers, pollers
every 100 ms, no pollers again, pollers asking ``/api/v1/health`` every 100 ms,
pollers every 500 ms; on the young one: no pollers, every 100 ms, as fast as they
can) in an order that rotates round by round. A phase starts its pollers, makes a
few unmeasured checkouts, then measures 300 (100 for QUICK=1) or as many as fit in
5 s (2 s), whichever comes first, so a server the pollers swamp does not hold the
run for minutes. A round's ratio is the p99 of its checkouts with pollers over the
p99 of its checkouts without, on the same journal; the figure is the median of the
11 rounds' ratios (3 for QUICK=1) with their range and inter-quartile range.

The controls. "No pollers again" against "no pollers" (an A/A test) shows how far
a round's p99 ratio strays with nothing changed; the health poll (no token, no
files, the journal's counts only) what any request at that rate costs, so that the
status's own share and the journal's (year against young) can be told apart.
"""

from __future__ import annotations

import gc
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.core import Context, Figure, check, percentile, runs_spread

ROOT = Path(__file__).resolve().parents[1]
POLLERS = 8
PERIOD_S = 0.1  # each poller's period in the goal's scenario: the fastest till
SLOW_PERIOD_S = 0.5  # the slowest till (informative)
YEAR_ENTRIES = 73_000  # a year of sales at the scale model's 200 a day
TODAY = 200  # of them, not uploaded yet
AMOUNT = "128.00"
GOAL = "<= 1.2"
TOKEN_ENV = "UNIONCARD_BENCH_TILL_TOKEN"
QUEUE_WARNING = "Task queue depth is"  # waitress: a request waited for a free thread
MS = 1000.0


def next_tick(previous: float, period: float, now: float) -> float:
    """A poller's next poll: ``period`` after the ``previous`` one, skipping the ticks
    already past at ``now`` (a late answer does not make it catch up in a burst)."""
    tick = previous + period
    if tick > now:
        return tick
    return previous + period * (math.floor((now - previous) / period) + 1)


# ------------------------------------------------------------------ the server


def serve(data_dir: Path, port_file: Path) -> None:
    """The terminal at ``data_dir`` served as the daemon serves it; the port it got is
    written to ``port_file``. Runs until SIGTERM."""
    from waitress import create_server

    from bench.fixtures import MEMBER_PAN
    from pact.files import atomic_write
    from reader.identity import CardIdentity, Tokenize, identity_from_pan
    from terminal import daemon
    from terminal.service import TerminalService
    from terminal.web import create_app
    from unioncard.cli import system_clock

    def read_card(*, timeout: float, tokenize: Tokenize) -> CardIdentity:
        return identity_from_pan("unionpay", b"\xa0", MEMBER_PAN, "2030-12", tokenize)

    daemon.log_to_stdout()
    daemon.responsive_threads()  # as daemon.serve
    service = TerminalService(data_dir, read_card, system_clock, monotonic=time.monotonic)
    service.startup("bench")
    # as terminal.daemon.serve builds it; "sync now" is never asked for here
    app = create_app(service, lambda: None)
    inside: list[tuple[float, float, float]] = []
    app.wsgi_app = timing_checkouts(app.wsgi_app, inside)  # type: ignore[method-assign]
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
        service.close()
        atomic_write(inside_file(port_file), json.dumps(inside).encode())


def inside_file(port_file: Path) -> Path:
    """Where the served terminal leaves its checkouts' timings when it stops."""
    return port_file.with_name(port_file.stem + ".inside.json")


def timing_checkouts(wsgi_app: Any, into: list[tuple[float, float, float]]) -> Any:
    """``wsgi_app`` noting, for each ``POST /api/v1/checkout``, (time.monotonic() at
    its end, its wall time, its thread's CPU time) in seconds: from Flask's start to
    its answer's last byte built, inside the server, without the HTTP around it."""

    def timed(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != "/api/v1/checkout":
            return wsgi_app(environ, start_response)
        wall, cpu = time.perf_counter(), time.thread_time()
        body = b"".join(wsgi_app(environ, start_response))
        into.append((time.monotonic(), time.perf_counter() - wall, time.thread_time() - cpu))
        return [body]

    return timed


@dataclass
class Server:
    """A served terminal (its own process) and what it did during a phase."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    journal: Path
    inside: Path  # its checkouts' timings, once it stopped (:func:`timing_checkouts`)
    _log_at: int = 0
    _cpu_at: float = 0.0
    _wall_at: float = 0.0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def mark(self) -> None:
        self._log_at = self.log.stat().st_size
        self._cpu_at = self.cpu_seconds()
        self._wall_at = time.monotonic()

    def since_mark(self) -> tuple[int, float]:
        """(requests that waited for a free waitress thread, the server's CPU share)
        since :meth:`mark`."""
        with self.log.open("rb") as fh:
            fh.seek(self._log_at)
            queued = fh.read().decode(errors="replace").count(QUEUE_WARNING)
        wall = time.monotonic() - self._wall_at
        return queued, (self.cpu_seconds() - self._cpu_at) / wall if wall > 0 else 0.0


@contextmanager
def served(
    name: str, data_dir: Path, module: str = "bench.tillapi", cpus: frozenset[int] | None = None
) -> Iterator[Server]:
    """The terminal at ``data_dir`` served by ``python -m <module> serve`` (this one's
    :func:`serve`, or another bench's built the same way), on ``cpus`` only if given."""
    from bench.central import pinned
    from terminal.state import TerminalState

    port_file = data_dir.parent / f"{name}.port"
    log = data_dir.parent / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*pinned(cpus), sys.executable, "-m", module, "serve", str(data_dir), str(port_file)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the served terminal did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        journal = TerminalState(data_dir).journal_path
        yield Server(name, url, process, log, journal, inside_file(port_file))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ----------------------------------------------------------------- the pollers


def poll(token: str) -> None:
    """The pollers' process: commands on stdin, one answer a line on stdout.

    ``start URL PERIOD`` starts the 8 pollers on URL (the status, or the health
    call; PERIOD 0: as fast as they can) and answers ``started`` once each has its
    first answer; ``stop`` stops them and answers their figures as one JSON line;
    end of input ends the process."""
    import requests

    stop = threading.Event()
    threads: list[threading.Thread] = []
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    first = threading.Barrier(POLLERS + 1)
    started_at = 0.0

    def poller(url: str, period: float) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        mine: list[float] = []
        tick = time.monotonic() + random.uniform(0, period)
        try:
            while True:
                if period:
                    wait = tick - time.monotonic()
                    if wait > 0 and stop.wait(wait):
                        break
                elif stop.is_set():
                    break
                began = time.perf_counter()
                answer = session.get(url, timeout=30)
                mine.append(time.perf_counter() - began)
                expected = "sales" if url.endswith("/status") else "ok"
                if answer.status_code != 200 or expected not in answer.json():
                    with lock:
                        errors.append(f"{answer.status_code} {answer.text[:200]}")
                if len(mine) == 1:
                    first.wait()
                if period:
                    tick = next_tick(tick, period, time.monotonic())
        except Exception as exc:  # noqa: BLE001 - reported to the bench, which fails
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
            first.abort()
        finally:
            session.close()
            with lock:
                latencies.extend(mine)

    for line in sys.stdin:
        words = line.split()
        if words and words[0] == "start":
            url, period = words[1], float(words[2])
            started_at = time.monotonic()
            stop.clear()
            latencies.clear()
            errors.clear()
            first.reset()
            threads = [
                threading.Thread(target=poller, args=(url, period), daemon=True)
                for _ in range(POLLERS)
            ]
            for t in threads:
                t.start()
            try:
                first.wait(timeout=30)
            except threading.BrokenBarrierError:
                errors.append("a poller got no first answer")
            print("started", flush=True)
        elif words and words[0] == "stop":
            seconds = time.monotonic() - started_at
            stop.set()
            for t in threads:
                t.join(60)
            answer = {
                "polls": len(latencies),
                "seconds": seconds,
                "errors": len(errors),
                "first_error": errors[0] if errors else None,
                "p50_ms": percentile(latencies, 50) * MS if latencies else None,
                "p99_ms": percentile(latencies, 99) * MS if latencies else None,
            }
            print(json.dumps(answer), flush=True)


class Pollers:
    """The pollers' process, driven from here."""

    def __init__(self, token: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.tillapi", "poll"],
            cwd=ROOT,
            env={**os.environ, TOKEN_ENV: token},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _say(self, line: str) -> str:
        stdin, stdout = self._pipes()
        stdin.write(line + "\n")
        stdin.flush()
        answer = stdout.readline()
        if not answer:
            raise RuntimeError("the pollers' process ended")
        return answer

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout

    def start(self, url: str, period: float, path: str = "status") -> None:
        if self._say(f"start {url}/api/v1/{path} {period}").strip() != "started":
            raise RuntimeError("the pollers did not start")

    def stop(self) -> dict[str, Any]:
        figures: dict[str, Any] = json.loads(self._say("stop"))
        if figures["errors"]:
            raise RuntimeError(f"a status poll failed: {figures['first_error']}")
        return figures

    def close(self) -> None:
        stdin, _ = self._pipes()
        stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ------------------------------------------------------------------ the phases


@dataclass(frozen=True)
class Phase:
    server: str  # which served terminal
    period: float | None  # None: no pollers; 0: as fast as they can
    path: str = "status"  # what the pollers ask: the status, or health (the cheapest)
    again: bool = False  # a second phase without pollers: the baseline's noise (A/A)


@dataclass
class Measured:
    """A phase's checkouts (seconds), round by round, and what went on meanwhile."""

    rounds: list[list[float]] = field(default_factory=list)
    polls_per_second: list[float] = field(default_factory=list)
    status_p50_ms: list[float] = field(default_factory=list)
    status_p99_ms: list[float] = field(default_factory=list)
    queued: int = 0  # requests that waited for a free waitress thread
    server_cpu: list[float] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # each round's, monotonic
    inside_wall: list[list[float]] = field(default_factory=list)  # the server's own timings
    inside_cpu: list[list[float]] = field(default_factory=list)

    def pooled(self, p: float) -> float:
        return percentile([t for r in self.rounds for t in r], p) * MS

    def take_inside(self, timings: list[tuple[float, float, float]]) -> None:
        """Each round's checkouts as the server timed them (those that ended in its span)."""
        for start, end in self.spans:
            mine = [t for t in timings if start <= t[0] <= end]
            self.inside_wall.append([wall for _, wall, _ in mine])
            self.inside_cpu.append([cpu for _, _, cpu in mine])


def checkouts(session: Any, url: str, count: int, deadline: float | None = None) -> list[float]:
    """``count`` checkouts one after the other, each timed from the till's side; fewer
    when ``deadline`` (time.monotonic) passes first."""
    out: list[float] = []
    for _ in range(count):
        if deadline is not None and out and time.monotonic() > deadline:
            break
        began = time.perf_counter()
        answer = session.post(f"{url}/api/v1/checkout", json={"amount": AMOUNT, "confirm": True})
        out.append(time.perf_counter() - began)
        body = answer.json() if answer.status_code == 200 else {}
        # a confirmed member sale: the roster lookup and the discount are on the path
        if body.get("state") != "confirmed" or not body.get("member"):
            raise RuntimeError(f"checkout failed: {answer.status_code} {answer.text[:300]}")
    return out


@dataclass(frozen=True)
class Plan:
    rounds: int
    count: int  # measured checkouts a phase, at most
    cap: float  # seconds a phase may take, at most (its checkouts stop there)
    warmup: int  # unmeasured checkouts before each phase's measured ones


def run_phases(
    servers: dict[str, Server],
    pollers: Pollers,
    token: str,
    phases: list[Phase],
    plan: Plan,
    clock: Any,
) -> dict[Phase, Measured]:
    """Every phase once a round, in an order rotating round by round."""
    import requests

    measured = {phase: Measured() for phase in phases}
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    try:
        for server in servers.values():
            checkouts(session, server.url, plan.warmup)
        for i in range(plan.rounds):
            for phase in phases[i % len(phases) :] + phases[: i % len(phases)]:
                server, into = servers[phase.server], measured[phase]
                upload(server.journal, clock)
                if phase.period is not None:
                    pollers.start(server.url, phase.period, phase.path)
                checkouts(session, server.url, plan.warmup)
                server.mark()
                gc.disable()
                began = time.monotonic()
                try:
                    into.rounds.append(
                        checkouts(session, server.url, plan.count, time.monotonic() + plan.cap)
                    )
                finally:
                    gc.enable()
                into.spans.append((began, time.monotonic()))
                queued, cpu = server.since_mark()
                into.queued += queued
                into.server_cpu.append(cpu)
                if phase.period is not None:
                    polled = pollers.stop()
                    into.polls_per_second.append(polled["polls"] / polled["seconds"])
                    into.status_p50_ms.append(polled["p50_ms"])
                    into.status_p99_ms.append(polled["p99_ms"])
    finally:
        session.close()
    return measured


# ------------------------------------------------------------------ the terminals


def upload(journal_path: Path, clock: Any) -> None:
    """Mark the journal's entries uploaded but the newest :data:`TODAY`, as the nightly
    sync does after the union acknowledged them (its own connection, as its process)."""
    from terminal.journal import Journal

    journal = Journal.existing(journal_path)
    try:
        total, _ = journal.counts()
        journal.mark_uploaded(total - TODAY, clock())
    finally:
        journal.close()


def preload(data_dir: Path, entries: int, clock: Any) -> None:
    """Fill the journal at ``data_dir`` with ``entries`` sales as the till makes them
    (the member cards of bench/checkout.py taking turns), all uploaded but the last
    :data:`TODAY`. Written without fsync: only their number matters here."""
    import itertools

    from bench.checkout import CARDS
    from pact.basket import Basket
    from pact.cards import PanTokenizer
    from reader.identity import identity_from_pan
    from terminal.checkout import checkout
    from terminal.journal import Journal
    from terminal.state import TerminalState

    state = TerminalState.open(data_dir)
    state.load()
    journal = Journal(state.journal_path, state.signer())
    journal.db.execute("PRAGMA synchronous=OFF")
    tokenize = PanTokenizer(state.enrolment.token_key)
    basket = Basket.of_amount(12800)
    cards = itertools.cycle(CARDS)
    try:
        for _ in range(entries):
            identity = identity_from_pan("unionpay", b"\xa0", next(cards), "2030-12", tokenize)
            checkout(state.current, state.enrolment, journal, identity, basket, clock())
        journal.mark_uploaded(max(0, entries - TODAY), clock())
        journal.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        journal.close()


def counts_ms(data_dir: Path) -> float:
    """The median time of ``Journal.counts`` (what the status asks the journal) on the
    journal at ``data_dir``, in this process, nothing else running."""
    from terminal.journal import Journal
    from terminal.state import TerminalState

    journal = Journal.existing(TerminalState(data_dir).journal_path)
    try:
        journal.counts()
        return statistics.median(timed_ms(journal.counts) for _ in range(7))
    finally:
        journal.close()


def timed_ms(fn: Any) -> float:
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * MS


# ------------------------------------------------------------------ the figures


def every(period: float) -> str:
    return f"every {period * MS:.0f} ms" if period else "as fast as they can"


def middle(values: list[float], digits: int) -> float | None:
    """The median of ``values`` rounded, None for none (a phase without pollers)."""
    return round(statistics.median(values), digits) if values else None


def ratio_figure(
    name: str,
    product: Measured,
    baseline: Measured,
    p: float,
    goal: str | None,
    baseline_text: str,
    note: str,
    asked: float | None = None,
) -> Figure:
    """The median of the rounds' ratios of ``product`` to ``baseline`` at ``p``."""
    per_round = [
        percentile(a, p) / percentile(b, p)
        for a, b in zip(product.rounds, baseline.rounds, strict=True)
    ]
    value = statistics.median(per_round)
    most = max(len(r) for r in product.rounds + baseline.rounds)
    fewest = min(len(r) for r in product.rounds)
    detail: dict[str, Any] = {
        "with_p50_ms": round(product.pooled(50), 2),
        "with_p99_ms": round(product.pooled(99), 2),
        "with_max_ms": round(product.pooled(100), 2),
        "without_p50_ms": round(baseline.pooled(50), 2),
        "without_p99_ms": round(baseline.pooled(99), 2),
        "without_max_ms": round(baseline.pooled(100), 2),
        f"pooled_p{p:g}_ratio": round(product.pooled(p) / baseline.pooled(p), 3),
        "checkouts_with": sum(len(r) for r in product.rounds),
        "checkouts_without": sum(len(r) for r in baseline.rounds),
        "fewest_checkouts_with_in_a_round": fewest,
        "polls_per_second_asked": round(POLLERS / asked, 1) if asked else None,
        "polls_per_second": middle(product.polls_per_second, 1),
        "status_p50_ms": middle(product.status_p50_ms, 2),
        "status_p99_ms": middle(product.status_p99_ms, 2),
        "server_cpu_with_percent": round(100 * statistics.median(product.server_cpu), 1),
        "server_cpu_without_percent": round(100 * statistics.median(baseline.server_cpu), 1),
        "requests_waiting_for_a_thread_with": product.queued,
        "requests_waiting_for_a_thread_without": baseline.queued,
    }
    inside = product.inside_wall + baseline.inside_wall
    if inside and all(inside):  # the server's own timings, each round with some
        for side, m in (("with", product), ("without", baseline)):
            walls = [t for r in m.inside_wall for t in r]
            cpus = [t for r in m.inside_cpu for t in r]
            detail[f"inside_wall_p50_ms_{side}"] = round(percentile(walls, 50) * MS, 2)
            detail[f"inside_wall_p99_ms_{side}"] = round(percentile(walls, 99) * MS, 2)
            detail[f"inside_cpu_p50_ms_{side}"] = round(percentile(cpus, 50) * MS, 2)
            detail[f"inside_cpu_p99_ms_{side}"] = round(percentile(cpus, 99) * MS, 2)
        detail[f"inside_wall_p{p:g}_ratio"] = round(
            statistics.median(
                percentile(a, p) / percentile(b, p)
                for a, b in zip(product.inside_wall, baseline.inside_wall, strict=True)
            ),
            3,
        )
    return Figure(
        name=name,
        value=round(value, 3),
        unit="x",
        goal=goal,
        met=check(value, goal) if goal else None,
        baseline=baseline_text,
        spread=runs_spread(
            per_round, f"{len(per_round)} rounds of up to {most} checkouts a side (p{p:g} ratio)"
        ),
        note=note,
        detail=detail,
        runs=[round(r, 4) for r in per_round],
    )


def figures(ctx: Context) -> list[Figure]:
    from bench.checkout import CARDS
    from bench.fixtures import MEMBER_PAN, terminal_with_roster
    from terminal.access import API_TOKEN_FILE, new_api_token
    from terminal.daemon import THREADS

    members = ctx.scale(1_000_000, 50_000)
    entries = ctx.scale(YEAR_ENTRIES, 10_000)
    plan = Plan(
        rounds=ctx.scale(11, 3),
        count=ctx.scale(300, 100),
        cap=ctx.scale(5, 2),
        warmup=ctx.scale(5, 3),
    )
    folder = ctx.workdir / "tillapi"
    site = terminal_with_roster(folder / "year", members, ctx.clock, pans=(MEMBER_PAN, *CARDS))
    site.journal.close()
    year = site.state.dir
    young = folder / "young" / "terminal"
    shutil.copytree(year, young, symlinks=True)  # enrolled, synced, its journal empty for now
    preload(year, entries, ctx.clock)
    counts = counts_ms(year)
    token = new_api_token(year)
    shutil.copy2(year / API_TOKEN_FILE, young / API_TOKEN_FILE)  # its mode (0600) too

    without, goal = Phase("year", None), Phase("year", PERIOD_S)
    again = Phase("year", None, again=True)
    health, slow = Phase("year", PERIOD_S, "health"), Phase("year", SLOW_PERIOD_S)
    young_without, young_goal = Phase("young", None), Phase("young", PERIOD_S)
    young_flood = Phase("young", 0.0)
    phases = [without, goal, again, health, slow, young_without, young_goal, young_flood]
    pollers = Pollers(token)
    try:
        with served("year", year) as on_year, served("young", young) as on_young:
            measured = run_phases(
                {"year": on_year, "young": on_young}, pollers, token, phases, plan, ctx.clock
            )
    finally:
        pollers.close()
    timings = {s.name: json.loads(s.inside.read_text()) for s in (on_year, on_young)}
    for phase, into in measured.items():
        into.take_inside(timings[phase.server])

    journal = f"journal of {entries:,} entries"
    label = f"till API checkout with {POLLERS} clients polling status"
    base = f"the same checkouts without the pollers, {journal}"
    young_base = "the same checkouts without the pollers, young journal"
    young_note = (
        "a second served terminal whose journal holds only the bench's own checkouts (up "
        f"to {plan.rounds * 3 * (plan.count + plan.warmup) + plan.warmup:,}; a day's "
        "pending), its phases "
        "interleaved with the others (informative)"
    )
    out = [
        ratio_figure(
            f"{label} {every(PERIOD_S)} vs without, {journal} (p99)",
            measured[goal],
            measured[without],
            99,
            GOAL,
            base,
            f"POST /api/v1/checkout (amount {AMOUNT}, confirm: journaled with fsync) "
            f"through waitress with the daemon's {THREADS} threads, one after the other "
            "from the till's keep-alive session; the card answering at once in the "
            "server's process; the pollers each with a keep-alive session, in a process "
            f"of their own. Journal.counts, which the status calls, takes {counts:.3f} ms "
            "on this journal alone",
            asked=PERIOD_S,
        ),
        ratio_figure(
            f"{label} {every(PERIOD_S)} vs without, {journal} (p50)",
            measured[goal],
            measured[without],
            50,
            None,
            base,
            "the checkouts of the figure above, at p50 (informative)",
            asked=PERIOD_S,
        ),
        ratio_figure(
            f"till API checkout without pollers vs without pollers again, {journal} (p99)",
            measured[again],
            measured[without],
            99,
            None,
            base,
            "two phases alike in each round, the baseline against itself (an A/A test): "
            "how far the rounds' p99 ratios stray with nothing changed (informative)",
        ),
        ratio_figure(
            f"till API checkout with {POLLERS} clients polling health {every(PERIOD_S)} "
            f"vs without, {journal} (p99)",
            measured[health],
            measured[without],
            99,
            None,
            base,
            "the pollers ask GET /api/v1/health instead (no token, no files, the "
            "journal's counts only): what any request at that rate costs (informative)",
            asked=PERIOD_S,
        ),
        ratio_figure(
            f"{label} {every(SLOW_PERIOD_S)} vs without, {journal} (p99)",
            measured[slow],
            measured[without],
            99,
            None,
            base,
            "the slowest poll of a till (informative)",
            asked=SLOW_PERIOD_S,
        ),
        ratio_figure(
            f"{label} {every(PERIOD_S)} vs without, young journal (p99)",
            measured[young_goal],
            measured[young_without],
            99,
            None,
            young_base,
            young_note,
            asked=PERIOD_S,
        ),
        ratio_figure(
            f"{label} {every(0.0)} vs without, young journal (p99)",
            measured[young_flood],
            measured[young_without],
            99,
            None,
            young_base,
            "each poller asks again as soon as it has its answer; " + young_note,
        ),
    ]
    out[0].detail["journal_counts_ms"] = round(counts, 3)
    for figure in out:
        figure.detail["server_threads"] = THREADS
        figure.detail["count_per_phase"] = plan.count
        figure.detail["cap_seconds"] = plan.cap
        figure.detail["warmup_per_phase"] = plan.warmup
    return out


def prose(figures: list[Figure]) -> list[str]:
    """How to read the till API figures, for docs/benchmarks.md (from this run's)."""
    named = {f.name: f for f in figures}

    def find(start: str, end: str) -> Figure | None:
        return next((f for n, f in named.items() if n.startswith(start) and n.endswith(end)), None)

    label = f"till API checkout with {POLLERS} clients polling status"
    goal = find(f"{label} {every(PERIOD_S)} vs without, journal", "(p99)")
    slow = find(f"{label} {every(SLOW_PERIOD_S)} vs without, journal", "(p99)")
    young = find(f"{label} {every(PERIOD_S)} vs without, young", "(p99)")
    flood = find(f"{label} {every(0.0)} vs without, young", "(p99)")
    again = find("till API checkout without pollers vs without pollers again", "(p99)")
    health = find(f"till API checkout with {POLLERS} clients polling health", "(p99)")
    if not (goal and slow and young and flood and again and health) or goal.value is None:
        return []
    g, f, fl = goal.detail, young.detail, flood.detail
    verdict = "met" if goal.met else "**not met**"
    entries = goal.name.split("journal of ")[1].split(" entries")[0]

    def runs(figure: Figure) -> str:
        return f"{min(figure.runs):.2f}-{max(figure.runs):.2f}"

    lines = [
        "### The till API under polling",
        "",
        f"**The scenario.** A till checks out through the daemon's JSON API (`POST "
        f"/api/v1/checkout`, amount {AMOUNT}, confirmed in the same call, so journaled "
        f"with its fsync) while {POLLERS} other clients poll `GET /api/v1/status`; the "
        "baseline is the same checkouts with nobody polling, the phases alternating round "
        "by round. The terminal is served as the daemon serves it (waitress, "
        f"`create_server(..., threads=daemon.THREADS)`, {g['server_threads']} threads, "
        "switching threads after 1 ms: `daemon.responsive_threads`) in a process of its "
        "own; the till's client is the bench's process, one keep-alive "
        "`requests.Session`, one checkout after the other; the pollers are threads of a "
        "third process, each with its own keep-alive session, so neither client's CPU "
        "lands in the server's GIL (on this 2-core machine they still share the cores). "
        "Every request carries the till's bearer token. The card reader is a function "
        "in the server's process that answers a member card at once, so the figures "
        "are the HTTP and service path, not the card's air time (see tap to quote).",
        "",
        f"**The poll rate.** Each poller asks every {PERIOD_S * MS:.0f} ms (from a random "
        "start; a late answer skips the ticks it missed instead of catching up): the "
        "fastest a till polls (100 to 500 ms), so the goal holds for any till in that "
        f"range when it holds here. Asked {g['polls_per_second_asked']} polls/s, the "
        f"server answered {g['polls_per_second']}/s. At {SLOW_PERIOD_S * MS:.0f} ms, "
        f"the slowest till, the ratio is {slow.value:g}x (informative).",
        "",
        "**The journal.** The status counts the journal's entries and those waiting for "
        "upload (`Journal.counts`: the newest seq and a count of the partial index of "
        "pending entries, on a read connection of its own, not under the journal's "
        f"write lock; {g['journal_counts_ms']} ms on this journal alone), and the "
        f"journal is never pruned, so the goal is measured on a journal of {entries} "
        f"entries ("
        + (
            "a year of a shop at the scale model's 200 sales a day"
            if entries == f"{YEAR_ENTRIES:,}"
            else f"QUICK=1; a full run fills a year, {YEAR_ENTRIES:,}"
        )
        + f"), all uploaded but the newest {TODAY}: before each phase the bench marks "
        "the others uploaded, as the nightly sync does (with 5,000 waiting the terminal "
        "would stop giving member discounts). A second terminal whose journal holds only "
        "the bench's own checkouts runs interleaved with it.",
        "",
        f"**Result.** p99 with the pollers {g['with_p99_ms']} ms against "
        f"{g['without_p99_ms']} ms without (pooled over the rounds; p50 "
        f"{g['with_p50_ms']} against {g['without_p50_ms']} ms): the median of the rounds' "
        f"p99 ratios is {goal.value:g}x ({verdict}, goal {goal.goal}; rounds "
        f"{runs(goal)}). The status answers took p50 {g['status_p50_ms']} ms, p99 "
        f"{g['status_p99_ms']} ms. On the young journal the same pollers cost "
        f"{young.value:g}x at p99 (rounds {runs(young)}; status p50 "
        f"{f['status_p50_ms']} ms), and flooding it ({fl['polls_per_second']} polls/s) "
        f"{flood.value:g}x. "
        + (
            "No request waited for a free waitress thread (waitress logged no task queue)."
            if not any(x["requests_waiting_for_a_thread_with"] for x in (g, f, fl))
            else "Requests waited for a free waitress thread (waitress's task queue "
            f"warnings: {g['requests_waiting_for_a_thread_with']} with the goal's pollers, "
            f"{fl['requests_waiting_for_a_thread_with']} flooding the young journal)."
        ),
        "",
        "**What the rest is.** Two controls run in the same rounds. The baseline against "
        f"itself (A/A) gives {again.value:g}x, its rounds {runs(again)}: one round's p99 "
        "is decided by its few slowest checkouts, and this machine's fsyncs and "
        "neighbours move them that much with nothing changed, so a median of rounds near "
        "the goal's line can fall either side of it. Polling `/api/v1/health` at the same "
        f"rate gives {health.value:g}x (rounds {runs(health)}; answers p50 "
        f"{health.detail['status_p50_ms']} ms): what any request at that rate costs the "
        "checkout when the server, the till and the pollers share two cores. The "
        "status's own work beyond that is the difference to the goal's figure; the "
        "journal's share is the difference between the year's journal and the young one."
        + (
            " Inside the server (from Flask's start to the answer built, without HTTP), a "
            "checkout's own CPU time is p50 "
            f"{g['inside_cpu_p50_ms_with']} ms, p99 {g['inside_cpu_p99_ms_with']} ms with "
            f"the pollers against {g['inside_cpu_p50_ms_without']} and "
            f"{g['inside_cpu_p99_ms_without']} ms without, while its wall time there is p99 "
            f"{g['inside_wall_p99_ms_with']} against {g['inside_wall_p99_ms_without']} ms "
            f"(the rounds' median ratio {g['inside_wall_p99_ratio']}x). What the wall "
            "time adds to the CPU time is waiting: for the fsync, and, with the pollers, "
            "for a core or the interpreter's lock while their requests are served."
            if "inside_wall_p99_ratio" in g
            else ""
        ),
    ]
    if g["status_p50_ms"] > 1.5 * f["status_p50_ms"]:
        lines += [
            "",
            f"The status answers slower on the year's journal (p50 {g['status_p50_ms']} ms) "
            f"than on the young one ({f['status_p50_ms']} ms): something on its path grows "
            "with the journal.",
        ]
    if g["fewest_checkouts_with_in_a_round"] < g["count_per_phase"]:
        lines += [
            "",
            f"A phase measures {g['count_per_phase']} checkouts or stops after "
            f"{g['cap_seconds']:g} s, whichever comes first (so this module stays within "
            "a few minutes); with the pollers the time ran out first, as few as "
            f"{g['fewest_checkouts_with_in_a_round']} checkouts in a round, so their p99 "
            "is close to their maximum.",
        ]
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"] and len(argv) == 3:
        serve(Path(argv[1]), Path(argv[2]))
        return 0
    if argv[:1] == ["poll"]:
        poll(os.environ[TOKEN_ENV])
        return 0
    print("usage: python -m bench.tillapi serve DATA_DIR PORT_FILE | poll", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
