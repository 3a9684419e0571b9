"""Random faults and kills between a terminal and the real central service (issue 13):
the sync must never lose or duplicate an entry, whatever the network or a crash does.

The pieces are the real ones: the central service is ``unioncard central serve``
(gunicorn, 2 workers) in a process group of its own, on SQLite or PostgreSQL; the
terminal's folder is enrolled to the fault proxy (tests/faultproxy.py) in front of it;
``unioncard sync`` runs as a process. Each trial journals 1 to 8 new sales (through
the terminal's checkout, with the card identity built in-process), then syncs through
one of:

- ``faults``: 1 to 3 random proxy faults (drop mid-request, reset after the request
  went through, delay, 500/503, an answer cut short, an answer trickled);
- ``kill-sync``: the sync is SIGKILLed at a random moment: on a timer, or when the
  proxy sees a chosen request arrive, go upstream, come back answered (the union
  committed, the terminal never heard) or get relayed (the terminal is marking it
  uploaded), plus 0 to 15 ms;
- ``kill-central``: the whole central service (gunicorn and its workers) is
  SIGKILLed 0 to 6 ms after an upload went upstream, mid-ingest, and restarted on
  the same port and data while the sync retries;

sometimes with the shop selling during the sync, the union publishing a new roster
(the sync installs it and journals an event, uploaded too) and a small batch size
(``UNIONCARD_SYNC_BATCH``: several upload requests). Then a clean sync, and the checks:
the central store holds every journal entry exactly once, identical to the terminal's
(seq, hash, signature, every field), its chain and every device signature verify, no
upload was refused, the terminal's journal verifies and has nothing pending (and, after
the last trial, ``unioncard terminal status --json`` says so too). No process prints a
traceback; a sync that ends without being killed ends in one line; a sync through proxy
faults alone (fewer than its tries) succeeds. The product bugs the trials found are
each pinned by a test at the end of this file.

The sync's client has no setting for its retries (sync.client.RetryPolicy's defaults:
5 tries, waits of 0, 2, 4, 8 s plus up to 1 s of jitter, read timeout 60 s), so the
faults are at most 3 a trial and each wait of the proxy stays well under the timeout.

Short form in `make test`: ``UNIONCARD_FAULT_TRIALS`` (10) trials per store; `make
test-faults` runs 200. A failing trial names its seed and scenario:
``UNIONCARD_FAULT_SEED=S`` replays the run, ``UNIONCARD_FAULT_ONLY=N`` with it only
trial N (on a fresh terminal).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from central.keys import create_keys
from central.service import CentralPaths, Union
from central.store import Store, make_engine
from central.store import sales as sales_table
from pact.cards import PanTokenizer
from pact.chain import GENESIS, check_chain
from pact.device import check_signatures, device_key
from reader.identity import identity_from_pan
from terminal.checkout import checkout
from terminal.devicekey import load_public_key
from terminal.journal import Journal
from terminal.state import TerminalState
from tests import faultproxy as fp
from tests.conftest import PG_URL, missing
from tests.helpers import MEMBER_PAN, OTHER_PAN, with_luhn
from tests.test_reader_recovery import UNIONCARD, free_port

TRIALS = int(os.environ.get("UNIONCARD_FAULT_TRIALS", "10"))
SEED = int(os.environ.get("UNIONCARD_FAULT_SEED", str(random.SystemRandom().randrange(10**6))))
ONLY = os.environ.get("UNIONCARD_FAULT_ONLY")
SCENARIOS = {"faults": 45, "kill-sync": 30, "kill-central": 25}
MAX_SALES = 8  # new sales per trial
SYNC_TIMEOUT = 120  # s: five tries with their waits take under 20
TERMINAL = "T1"
SALES_PATH = "/api/v1/sales"
KILL_MOMENTS = {  # the proxy's events, as moments of the sync
    "request": "as a request arrived",
    "sent": "once a request went upstream",
    "answered": "once the union answered, before the terminal heard",
    "relayed": "once the terminal got the answer",
}


def now() -> datetime:
    return datetime.now(UTC)


class Central:
    """``unioncard central serve`` in a process group of its own: SIGKILLed whole
    (gunicorn and its workers) and started again on the same port, data and database."""

    def __init__(self, folder: Path, database_url: str | None, log: Path) -> None:
        self.folder, self.database_url, self.log = folder, database_url, log
        self.port = free_port()
        self.child: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        command = [UNIONCARD, "central", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--data", str(self.folder)]
        if self.database_url:
            command += ["--database-url", self.database_url]
        with open(self.log, "ab") as log:
            self.child = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1
        deadline = time.monotonic() + 30
        while True:
            try:
                url = f"http://127.0.0.1:{self.port}/api/v1/health"
                if requests.get(url, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.child.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the central service did not start: {self.tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL gunicorn and every worker at once, as a power cut would."""
        if self.child is not None and self.child.poll() is None:
            os.killpg(self.child.pid, signal.SIGKILL)
            self.child.wait(10)

    def stop(self) -> None:
        if self.child is not None and self.child.poll() is None:
            os.killpg(self.child.pid, signal.SIGTERM)
            try:
                self.child.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.child.pid, signal.SIGKILL)
                self.child.wait(10)

    def up(self) -> bool:
        return self.child is not None and self.child.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@dataclass
class Run:
    """One sync process and what it did."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Stats:
    scenarios: Counter[str] = field(default_factory=Counter)
    sync_exits: Counter[int] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    central_kills: Counter[str] = field(default_factory=Counter)
    extras: Counter[str] = field(default_factory=Counter)
    faults: fp.Tally = field(default_factory=fp.Tally)
    entries: int = 0

    def report(self) -> dict[str, Any]:
        return {
            "scenarios": dict(self.scenarios),
            "faulty sync exits": {str(k): v for k, v in sorted(self.sync_exits.items())},
            "sync kills": dict(self.kills),
            "central kills": dict(self.central_kills),
            "extras": dict(self.extras),
            "faults": self.faults.kinds,
            "fault outcomes": self.faults.outcomes,
            "journal entries": self.entries,
        }


class Rig:
    """A central service behind the fault proxy, and a terminal enrolled to the proxy."""

    def __init__(self, tmp: Path, database_url: str | None) -> None:
        self.tmp = tmp
        self.paths = CentralPaths(tmp / "central")
        create_keys(self.paths.keys, now=now())
        self.database_url = database_url
        union = self.union()
        union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
        union.add_merchant("M0001", "Shop", 500)
        union.publish_roster()
        self.central = Central(self.paths.data_dir, database_url, tmp / "central.log")
        self.proxy = fp.FaultProxy(self.central.port)
        bundle = union.enrol_terminal(TERMINAL, "M0001", self.proxy.url)
        union.close()
        self.state = TerminalState(tmp / "terminal")
        self.state.enrol(bundle)
        self.journal = Journal(self.state.journal_path, self.state.signer())
        self.tokenizer = PanTokenizer(self.state.enrolment.token_key)
        self.config = tmp / "terminal.toml"  # no settings file of the machine's
        self.config.write_text("")
        self.store = Store.open(database_url or self.paths.database_url)
        self.members = 1
        self.sync_seconds = 1.0  # the last clean sync's duration

    def union(self) -> Union:
        return Union.open(self.paths, self.database_url, now)

    def __enter__(self) -> Rig:
        self.proxy.start()
        self.central.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proxy.stop()
        self.central.stop()
        self.journal.close()
        self.store.close()

    def sell(self, rng: random.Random) -> None:
        self.state.refresh()
        pan = MEMBER_PAN if rng.random() < 0.7 else OTHER_PAN
        identity = identity_from_pan("unionpay", b"\xa0", pan, "2030-12", self.tokenizer)
        gross = rng.randint(100, 100_000)
        checkout(self.state.current, self.state.enrolment, self.journal, identity, gross, now())

    def publish_roster(self) -> None:
        self.members += 1
        union = self.union()
        pan = with_luhn(f"6214{self.members:011d}")
        union.import_members(f"member_id,pan\nU{self.members},{pan}\n")
        union.publish_roster()
        union.close()

    def start_sync(self, batch: int | None = None) -> tuple[subprocess.Popen[str], float]:
        env = {k: v for k, v in os.environ.items() if k not in ("UNIONCARD_CONFIG",)}
        if batch is not None:
            env["UNIONCARD_SYNC_BATCH"] = str(batch)
        command = [UNIONCARD, "sync", "--config", str(self.config), "--data", str(self.state.dir)]
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        return child, time.monotonic()

    @staticmethod
    def finish(child: subprocess.Popen[str], started: float) -> Run:
        try:
            out, err = child.communicate(timeout=SYNC_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            raise AssertionError(f"the sync hung for {SYNC_TIMEOUT} s: {err[-2000:]}") from None
        return Run(child.returncode, out, err, time.monotonic() - started)

    def clean_sync(self) -> Run:
        self.proxy.plan, self.proxy.observer = fp.no_faults, None
        run = self.finish(*self.start_sync())
        assert run.returncode == 0, f"the clean sync failed ({run.returncode}): {run.stderr}"
        assert "Traceback" not in run.stderr, run.stderr
        self.sync_seconds = run.seconds
        return run

    def status(self) -> dict[str, Any]:
        done = subprocess.run(
            [UNIONCARD, "terminal", "status", "--json", "--config", str(self.config)]
            + ["--data", str(self.state.dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def check(self, with_status: bool = True) -> int:
        """Everything journaled is held once, as journaled, and verifies; nothing pends.
        ``with_status``: ``unioncard terminal status`` says so too (a process: 0.6 s)."""
        entries = self.journal.sales()
        held = self.store.sales_for(TERMINAL)
        keys = [(s.terminal_id, s.seq) for s in held]
        assert len(keys) == len(set(keys)), "an entry is held twice"
        assert keys == [(s.terminal_id, s.seq) for s in entries], (
            f"the union holds seqs {[k[1] for k in keys][-10:]}..., "
            f"the terminal journaled {[s.seq for s in entries][-10:]}..."
        )
        assert held == entries, "an entry held differs from the one journaled"
        with self.store.engine.connect() as conn:
            count, distinct_seq, distinct_id = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.count(sa.distinct(sales_table.c.seq)),
                    sa.func.count(sa.distinct(sales_table.c.sale_id)),
                ).where(sales_table.c.terminal_id == TERMINAL)
            ).one()
        assert count == distinct_seq == distinct_id == len(entries)
        assert check_chain(held, GENESIS, 0) == entries[-1].hash
        registered = self.store.terminal(TERMINAL)
        assert registered is not None and registered["device_key"] is not None
        assert registered["device_key"] == (self.state.dir / "device.pub").read_text().strip()
        assert check_signatures(device_key(registered["device_key"]), held) == len(held)
        assert self.journal.verify(load_public_key(self.state.dir)) == len(entries)
        assert self.store.refusals(TERMINAL) == [], "the union refused an upload"
        assert self.journal.counts() == (len(entries), 0)
        if with_status:
            status = self.status()
            assert (status["pending_upload"], status["sales"]) == (0, len(entries)), status
        return len(entries)


@dataclass
class Trial:
    """One trial's scenario, drawn from its own seed, and what happened in it."""

    number: int
    rng: random.Random
    scenario: str = ""
    plan: list[str] = field(default_factory=list)  # the scenario in words
    happened: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, line: str) -> None:
        with self.lock:
            self.happened.append(line)

    def describe(self) -> str:
        return f"{self.scenario}: {'; '.join(self.plan)}; happened: {'; '.join(self.happened)}"


def tracebacks(log: str) -> list[str]:
    """Each traceback in a log (with the ones chained to it), up to its next log line."""
    blocks, at = [], 0
    next_line = re.compile(r"^(127\.0\.0\.1 - |\[\d{4}-|error:|warning:|WARNING:)", re.MULTILINE)
    while (start := log.find("Traceback (most recent call last):", at)) >= 0:
        end = next_line.search(log, start)
        at = end.start() if end else len(log)
        blocks.append(log[start:at])
    return blocks


def no_tracebacks(text: str, where: str) -> None:
    assert tracebacks(text) == [], f"{where} printed a traceback:\n{text[-4000:]}"


def trial_rng(number: int) -> random.Random:
    return random.Random(f"{SEED}:{number}")


def is_upload(request: fp.Request) -> bool:
    return request.method == "POST" and request.path == SALES_PATH


def upload_seqs(request: fp.Request) -> list[int]:
    """The seqs an upload carries (its body may be gzip-compressed)."""
    body = request.body
    if (request.header("Content-Encoding") or "").lower() == "gzip":
        body = gzip.decompress(body)
    return [int(sale["seq"]) for sale in json.loads(body)["sales"]] or [0]


def run_trial(rig: Rig, trial: Trial, stats: Stats) -> None:
    rng = trial.rng
    new_sales = rng.randint(1, MAX_SALES)
    for _ in range(new_sales):
        rig.sell(rng)
    pending = rig.journal.counts()[1]
    batch = rng.choice([None, None, 1, 2, 3, 5])
    trial.plan.append(f"{new_sales} new sales, {pending} pending, batch {batch or 'default'}")
    if rng.random() < 0.12:
        rig.publish_roster()
        trial.plan.append("a new roster published")
        stats.extras["new roster"] += 1
    uploads = math.ceil(pending / (batch or 500))
    requests_expected = 3 + uploads  # device key, uploads, root, snapshot (and more)
    scenario = rng.choices(list(SCENARIOS), weights=list(SCENARIOS.values()))[0]
    trial.scenario = scenario
    stats.scenarios[scenario] += 1

    restarts: list[threading.Thread] = []
    sync_box: list[subprocess.Popen[str]] = []
    fired = threading.Event()

    def light_faults() -> fp.Plan:
        if rng.random() < 0.3:
            trial.plan.append("and maybe one light fault")
            return fp.RandomFaults(random.Random(rng.random()), rate=0.15, limit=1)
        return fp.no_faults

    plan: fp.Plan = fp.no_faults
    observer: fp.Observer | None = None
    timer: threading.Timer | None = None
    if scenario == "faults":
        limit = rng.randint(1, 3)
        plan = fp.RandomFaults(
            random.Random(rng.random()),
            rate=lambda r: 0.45 if is_upload(r) else 0.2,
            limit=limit,
        )
        trial.plan.append(f"up to {limit} random faults")
    elif scenario == "kill-sync":
        plan = light_faults()
        if rng.random() < 0.25:
            at = rng.uniform(0.2, max(0.4, rig.sync_seconds * 1.1))
            trial.plan.append(f"SIGKILL the sync {at:.3f} s after it starts")

            def kill_on_timer() -> None:
                if sync_box and sync_box[0].poll() is None:
                    sync_box[0].kill()
                    fired.set()
                    trial.note(f"sync killed on the timer at {at:.3f} s")
                    stats.kills["on a timer"] += 1

            timer = threading.Timer(at, kill_on_timer)
        else:
            target = rng.randint(1, requests_expected)
            event = rng.choice(["request", "sent", "answered", "relayed"])
            wait = rng.uniform(0, 0.015)
            trial.plan.append(
                f"SIGKILL the sync {wait * 1000:.1f} ms after request {target} {event}"
            )
            seen = Counter[str]()

            def kill_on_event(name: str, request: fp.Request) -> None:
                seen[name] += 1
                if name != event or seen[name] != target or fired.is_set():
                    return
                fired.set()
                time.sleep(wait)
                sync_box[0].kill()
                sync_box[0].wait(10)
                trial.note(f"sync killed {wait * 1000:.1f} ms after {request} was {event}")
                stats.kills[KILL_MOMENTS[event]] += 1

            observer = kill_on_event
    else:
        plan = light_faults()
        target = rng.randint(1, uploads)
        wait = rng.uniform(0, 0.006)  # an ingest takes a few ms: often inside it
        trial.plan.append(f"SIGKILL the central service {wait * 1000:.1f} ms after upload {target}")
        uploads_seen = [0]

        def kill_central(name: str, request: fp.Request) -> None:
            if name != "sent" or not is_upload(request) or fired.is_set():
                return
            uploads_seen[0] += 1
            if uploads_seen[0] != target:
                return
            fired.set()
            time.sleep(wait)
            rig.central.kill()
            held = rig.store.sales_for(TERMINAL)
            last = held[-1].seq if held else 0
            sent = upload_seqs(request)
            trial.note(
                f"central killed {wait * 1000:.1f} ms after {request} (seqs {sent[0]}..{sent[-1]})"
                f" went up; it held up to {last}"
            )
            committed = last >= sent[-1]
            stats.central_kills["after the commit" if committed else "before the commit"] += 1
            thread = threading.Thread(target=rig.central.start, daemon=True)
            thread.start()
            restarts.append(thread)

        observer = kill_central

    concurrent: threading.Thread | None = None
    if rng.random() < 0.2:
        extra = rng.randint(1, 2)
        pause = rng.uniform(0, max(0.2, rig.sync_seconds))
        trial.plan.append(f"{extra} sales during the sync, after {pause:.2f} s")
        sell_rng = random.Random(rng.random())
        stats.extras["sales during the sync"] += 1

        def sell_meanwhile() -> None:
            time.sleep(pause)
            for _ in range(extra):
                rig.sell(sell_rng)

        concurrent = threading.Thread(target=sell_meanwhile, daemon=True)

    rig.proxy.clear()
    rig.proxy.plan, rig.proxy.observer = plan, observer
    child, started = rig.start_sync(batch)
    sync_box.append(child)
    if timer is not None:
        timer.start()
    if concurrent is not None:
        concurrent.start()
    run = rig.finish(child, started)
    if timer is not None:
        timer.cancel()
        timer.join()
    if concurrent is not None:
        concurrent.join(30)
    for thread in restarts:
        thread.join(60)
    rig.proxy.plan, rig.proxy.observer = fp.no_faults, None
    records = list(rig.proxy.log)
    stats.faults.add(records)
    trial.happened += [str(r) for r in records if r.fault.kind != "pass"]
    stats.sync_exits[run.returncode] += 1
    trial.note(f"the sync exited {run.returncode}")
    assert rig.proxy.errors == [], rig.proxy.errors
    no_tracebacks(run.stderr, "the sync")
    if scenario == "faults":  # at most 3 faults: fewer than the sync's tries of a request
        assert run.returncode == 0, f"the sync failed ({run.returncode}): {run.stderr}"
    if run.returncode not in (0, -signal.SIGKILL):
        lines = run.stderr.splitlines()
        assert lines and lines[-1].startswith(("error:", "warning:")), run.stderr
        assert run.returncode in (1, 6), (run.returncode, run.stderr)
    if scenario == "kill-central" and fired.is_set():
        assert rig.central.up(), f"the central service did not come back: {rig.central.tail()}"
    if not rig.central.up():
        rig.central.start()

    rig.clean_sync()
    stats.entries = rig.check(with_status=False)


def store_url(kind: str) -> Iterator[str | None]:
    if kind == "sqlite":
        yield None
        return
    schema = f"faults_{uuid.uuid4().hex[:10]}"
    try:
        admin = make_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        missing("PostgreSQL", f"{PG_URL}: {str(exc).splitlines()[0]}")
    try:
        yield f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if not Path(UNIONCARD).is_file():
        missing("the unioncard command", f"{UNIONCARD}: install the package (make venv)")
    yield from store_url(request.param)


def trial_numbers() -> list[int]:
    return [int(ONLY)] if ONLY else list(range(1, TRIALS + 1))


def replay_line(number: int, database_url: str | None) -> str:
    where = "sqlite" if database_url is None else "postgres"
    return (
        f"UNIONCARD_FAULT_SEED={SEED} UNIONCARD_FAULT_TRIALS={number} "
        f".venv/bin/python -m pytest -s tests/test_sync_faults.py -k 'random and {where}'   "
        f"(or UNIONCARD_FAULT_ONLY={number} for this trial alone)"
    )


@pytest.mark.slow
def test_random_faults_and_kills_lose_and_duplicate_nothing(
    tmp_path: Path, database_url: str | None
) -> None:
    started = time.monotonic()
    stats = Stats()
    central_log_seen = 0
    with Rig(tmp_path, database_url) as rig:
        rig.clean_sync()  # enrolled: the device key, roster and policy v1
        rig.check(with_status=False)
        for number in trial_numbers():
            trial = Trial(number, trial_rng(number))
            try:
                run_trial(rig, trial, stats)
                log = rig.central.log.read_text(errors="replace")
                fresh, central_log_seen = log[central_log_seen:], len(log)
                no_tracebacks(fresh, "the central service")
            except AssertionError as exc:
                raise AssertionError(
                    f"trial {number} failed (seed {SEED}): {exc}\n"
                    f"  scenario: {trial.describe()}\n  replay: {replay_line(number, database_url)}"
                ) from None
        rig.check()  # and the terminal's own command says nothing is pending
    report = {
        "store": "sqlite" if database_url is None else "postgres",
        "seed": SEED,
        "trials": len(trial_numbers()),
        "seconds": round(time.monotonic() - started, 1),
        **stats.report(),
    }
    print("fault trials:", json.dumps(report, indent=1))


# -- the product bugs the trials found, each fixed and pinned here ---------------------


def test_a_repeated_upload_racing_its_original_is_acknowledged(
    store: Store, tmp_path: Path
) -> None:
    """Two ingests of one batch at once, both past reading the terminal's tail before
    either inserts (a retry that arrives while its original is being stored): one
    stores the batch, the other acknowledges it as repeats, as a retry after it would."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from pact.device import KeySigner
    from pact.sale import SaleDraft

    at = "2026-11-28T09:30:00Z"
    store.add_merchant("M0001", "Shop", 500, at)
    store.add_terminal(TERMINAL, "M0001", "0" * 64, at)
    journal = Journal(tmp_path / "journal.db", KeySigner(Ed25519PrivateKey.generate()))
    for gross in (1000, 2000, 3000):
        draft = SaleDraft(TERMINAL, "M0001", None, "", False, gross, 0, gross, (), 1, 1)
        journal.append(draft, now())
    batch = journal.sales()
    journal.close()
    both_read = threading.Barrier(2)

    def hold(new: object) -> None:  # inside the transaction, after the tail was read
        try:
            both_read.wait(timeout=2)  # a store that serialises the two does not wait here
        except threading.BrokenBarrierError:
            pass

    results, errors = [], []

    def upload() -> None:
        try:
            results.append(store.ingest(TERMINAL, "M0001", batch, at, check_new=hold))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert store.sales_for(TERMINAL) == batch  # stored once, whatever else happened
    assert errors == [], [f"{type(e).__name__}: {str(e).splitlines()[0]}" for e in errors]
    assert sorted((r.acked_through, r.accepted, r.duplicates) for r in results) == [
        (3, 0, 3),
        (3, 3, 0),
    ]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    if not Path(UNIONCARD).is_file():
        missing("the unioncard command", f"{UNIONCARD}: install the package (make venv)")
    with Rig(tmp_path, None) as rig:
        rig.clean_sync()
        yield rig


def first_answer(path: str, fault: fp.Fault) -> fp.Plan:
    """``fault`` for the first request to ``path``; every other request passes."""
    done: list[fp.Request] = []

    def plan(request: fp.Request) -> fp.Fault:
        if request.path == path and not done:
            done.append(request)
            return fault
        return fp.PASS

    return plan


@pytest.mark.slow
@pytest.mark.parametrize(
    "path, keep",
    [
        (SALES_PATH, len(b"HTTP/1.1 200 OK\r\nSe")),  # inside a header line
        ("/api/v1/roster", len(b"HTTP/1.1 200 OK\r\n")),  # right after the status line
    ],
)
def test_an_answer_cut_in_its_head_is_tried_again_without_a_traceback(
    rig: Rig, path: str, keep: int
) -> None:
    """urllib3 logs such a head at WARNING with its traceback, and requests takes what
    is left for a 200 with no body: the sync finds the answer has no length, says
    nothing of urllib3's, and tries again (an upload is idempotent)."""
    rig.sell(random.Random(1))
    rig.publish_roster()
    rig.proxy.clear()
    rig.proxy.plan = first_answer(path, fp.cut(keep=keep))
    run = rig.finish(*rig.start_sync())
    assert [str(r.fault) for r in rig.proxy.faults()] == [f"cut the answer after {keep} bytes"]
    at = next(i for i, r in enumerate(rig.proxy.log) if r.fault.kind == "cut")
    again = rig.proxy.log[at + 1]  # tried again at once (urllib3 waits 0 after a first failure)
    assert (again.request.path, again.outcome) == (path, "relayed 200")
    assert (run.returncode, run.stderr) == (0, ""), run.stderr
    assert run.stdout.startswith("sync: uploaded 2 entries"), run.stdout  # a sale, an event
    assert "installed roster v2" in run.stdout, run.stdout
    rig.state.refresh()
    assert rig.state.current.roster is not None and rig.state.current.roster.version == 2
    rig.check()


@pytest.mark.slow
def test_an_empty_roster_download_is_refused_in_one_line(rig: Rig) -> None:
    """A roster answered 200 with an empty body, well framed (nothing to try again
    for): refused in one line, the installed roster kept, and the next sync installs it."""
    rig.publish_roster()
    rig.proxy.plan = first_answer("/api/v1/roster", fp.answer(200, forward=True, body=b""))
    run = rig.finish(*rig.start_sync())
    assert [str(r.fault) for r in rig.proxy.faults()] == [
        "answer 200 with a body of 0 bytes, after the server acted"
    ]
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr == (
        f"warning: roster refused: the file {rig.state.roster_download} is empty\n"
    )
    rig.state.refresh()
    assert rig.state.current.roster is not None and rig.state.current.roster.version == 1
    rig.clean_sync()
    rig.state.refresh()
    assert rig.state.current.roster is not None and rig.state.current.roster.version == 2
    rig.check()
