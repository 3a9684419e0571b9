"""SIGKILL at random moments: the daemon (``unioncard terminal serve``, a real process)
takes checkouts through its till API in confirm mode, with real cards through a
pcscd of the test's own, and is killed with SIGKILL at random moments and restarted.

Afterwards every sale the API confirmed is journaled exactly once, the sequence has
no gaps, the chain and every device signature verify, and nothing is in the journal
that no checkout asked for. Each checkout has its own amount, so the journal shows
what became of the ones a kill cut off (recorded, or not, before the kill).

The second test does the same to the other entry kinds (issue 16, item 1): the daemon
is killed while it voids and refunds sales through the till API and while it starts
(journaling its ``startup`` event), and `unioncard terminal install-update` while it
journals an ``update-refused`` event. Half of those kills are timed at random, half the
moment the entry reaches the journal's WAL (before its fsync and the answer).

The short form runs in `make test` (about 40 s, and 35 to 50 s for the second);
`make test-kill` runs 1,000 checkouts (``UNIONCARD_KILL_CHECKOUTS``).
``UNIONCARD_KILL_SEED`` repeats a run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from pact.event import STARTUP, UPDATE_REFUSED, event_code
from reader.emulation.vpcd import CardEmulator
from terminal.access import new_api_token
from terminal.devicekey import load_public_key
from terminal.journal import Journal
from terminal.supervisor import set_pin
from tests.conftest import Clock, Site, wall_clock
from tests.helpers import MEMBER_PAN
from tests.private_pcscd import PrivatePcscd
from tests.test_reader_recovery import UNIONCARD, free_port, until


@pytest.fixture
def clock() -> Clock:
    """The daemon reads the wall clock: the union's must agree (tests.conftest)."""
    return wall_clock()


CHECKOUTS = int(os.environ.get("UNIONCARD_KILL_CHECKOUTS", "40"))
SEED = int(os.environ.get("UNIONCARD_KILL_SEED", str(random.SystemRandom().randrange(10**6))))
KILL_SHARE = 0.35  # of the checkouts, one has a kill timed somewhere inside it
KILL_WINDOW = 0.012  # s after the request is sent: card read, pricing, journaling, answer


class Daemon:
    """``unioncard terminal serve`` as a shop runs it, which the test may SIGKILL."""

    def __init__(self, data: Path, pcscd: PrivatePcscd) -> None:
        self.data, self.pcscd = data, pcscd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.child: subprocess.Popen[str] | None = None
        self.log = data.parent / "daemon.log"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {new_api_token(data)}"

    def start(self) -> None:
        self.spawn()
        self.wait_up()

    def spawn(self) -> None:
        """Start the daemon, without waiting for it to serve."""
        with open(self.log, "a") as log:
            self.child = subprocess.Popen(
                [UNIONCARD, "terminal", "serve", "--data", str(self.data)]
                + ["--port", str(self.port), "--reader", "00 00"],
                env={**os.environ, **self.pcscd.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_up(self) -> None:
        """Wait until it serves (it journaled its start-up event before)."""
        assert self.child is not None
        deadline = time.monotonic() + 30
        while True:
            try:
                self.http.get(self.url + "/api/v1/status", timeout=1).raise_for_status()
                return
            except requests.RequestException:
                if self.child.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"terminal serve did not come up: {self.log.read_text()[-2000:]}")
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone (so :meth:`dead` says so at once)."""
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGKILL)
            self.child.wait(timeout=20)

    def dead(self) -> bool:
        return self.child is None or self.child.poll() is not None

    def stop(self) -> int:
        assert self.child is not None
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
        return self.child.wait(timeout=20)

    def card_present(self) -> bool:
        state = self.http.get(self.url + "/api/v1/reader", timeout=5).json()
        return bool(state["card_present"] and state["ready_for_new_card"])


@pytest.mark.pcsc
@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_no_confirmed_sale(
    site: Site, clock, private_pcscd: PrivatePcscd
) -> None:
    site.sync(clock)
    site.journal.close()
    rng = random.Random(SEED)
    daemon = Daemon(site.state.dir, private_pcscd)
    daemon.start()
    card = CardEmulator(MEMBER_PAN, port=private_pcscd.port)
    confirmed: dict[int, int] = {}  # gross (fen) -> the seq the API answered
    cut: list[int] = []  # gross of the checkouts a kill cut off (no answer)
    refused: list[tuple[int, int, str]] = []
    kills = 0
    i = 0
    while i < CHECKOUTS or (not cut and i < CHECKOUTS + 200):  # until a kill cut one off
        gross = 10_000 + i  # one amount per checkout: the journal tells them apart
        i += 1
        card.insert()
        until(daemon.card_present, timeout=15)
        timer = None
        if rng.random() < KILL_SHARE:
            timer = threading.Timer(rng.uniform(0, KILL_WINDOW), daemon.kill)
            timer.start()
        try:
            answer = daemon.http.post(
                daemon.url + "/api/v1/checkout",
                json={"amount": f"{gross // 100}.{gross % 100:02d}", "confirm": True},
                timeout=20,
            )
        except requests.RequestException:
            cut.append(gross)
        else:
            if answer.status_code == 200:
                confirmed[gross] = answer.json()["seq"]
            else:
                refused.append((gross, answer.status_code, answer.text))
        if timer is not None:
            timer.join()
            kills += 1
        card.remove()
        if daemon.dead():
            daemon.start()
    assert daemon.stop() == 0

    journal = Journal(site.state.journal_path)
    entries = journal.sales()
    count = journal.verify(load_public_key(site.state.dir))  # chain and every signature
    journal.close()
    sales = [e for e in entries if e.is_sale]
    starts = [e for e in entries if event_code(e) == STARTUP]
    by_gross = Counter(e.gross for e in sales)
    seq_of = {e.gross: e.seq for e in sales}
    recorded_cut = [g for g in cut if g in by_gross]
    report = {
        "seed": SEED,
        "checkouts": i,
        "kills": kills,
        "confirmed": len(confirmed),
        "cut_off_by_a_kill": len(cut),
        "of_those_journaled_before_the_kill": len(recorded_cut),
        "of_those_not_journaled": len(cut) - len(recorded_cut),
        "refused": len(refused),
        "journal_entries": count,
        "startup_events": len(starts),
    }
    print("kill test:", json.dumps(report))
    assert not refused, refused  # no checkout failed other than by a kill
    assert [e.seq for e in entries] == list(range(1, count + 1))  # no gap
    assert all(n == 1 for n in by_gross.values()), by_gross  # nothing twice
    for gross, seq in confirmed.items():  # every confirmed sale, once, where it was said
        assert seq_of.get(gross) == seq, (gross, seq, seq_of.get(gross))
    assert set(by_gross) <= set(confirmed) | set(cut)  # nothing nobody asked for
    assert cut, "no kill cut a checkout off: the test proved nothing"
    assert kills > 0 and len(confirmed) + len(cut) == i
    # each start of the daemon is journaled (a kill may cut the start-up short)
    assert 1 <= len(starts) <= kills + 1 and len(sales) + len(starts) == count


class KillOnWrite(threading.Thread):
    """Calls ``kill`` the moment the file at ``path`` (the journal's WAL) changes: a
    kill between the entry's write and its fsync, or its answer."""

    def __init__(self, path: Path, kill: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.path, self.kill = path, kill
        self.stopped = threading.Event()
        self.before = self._look()

    def _look(self) -> tuple[int, int]:
        try:
            found = self.path.stat()
        except FileNotFoundError:
            return (0, 0)
        return (found.st_size, found.st_mtime_ns)

    def run(self) -> None:
        while not self.stopped.is_set():
            if self._look() != self.before:
                self.kill()
                return
            time.sleep(0.0002)

    def stop(self) -> None:
        self.stopped.set()


REVERSED_SALES = 8  # sales made first, then voided or refunded (three units each)
STARTUP_KILLS = 3  # starts of the daemon killed somewhere in their start-up
EVENT_RUNS = 4  # `terminal install-update` processes, each journaling an event, killed or not
PIN = "2468"


@pytest.mark.pcsc
@pytest.mark.slow
def test_sigkill_during_voids_refunds_and_events_loses_and_duplicates_nothing(
    site: Site, clock, private_pcscd: PrivatePcscd, tmp_path: Path
) -> None:
    """The new entry kinds under the same power cuts: the daemon is killed while it
    voids and refunds sales (through the till API) and while it starts (journaling its
    ``startup`` event), and `unioncard terminal install-update` while it journals the
    ``update-refused`` event of a bad file. Afterwards the chain and every signature
    verify, the seqs have no gap, every entry is whole (a void's amounts are its
    sale's, each refund one unit), every operation that answered is there once, where
    it said, and one that a kill cut off is there once or not at all."""
    site.sync(clock)
    site.journal.close()
    set_pin(site.state.dir, PIN)
    rng = random.Random(SEED)
    daemon = Daemon(site.state.dir, private_pcscd)
    began = started = time.monotonic()
    daemon.start()
    startup_seconds = time.monotonic() - began
    ups = 1  # starts that came up (each journaled its start-up before serving)
    card = CardEmulator(MEMBER_PAN, port=private_pcscd.port)
    sales: dict[int, dict] = {}  # seq -> the sale as the API answered it
    for i in range(REVERSED_SALES):
        card.insert()
        until(daemon.card_present, timeout=15)
        line = {"sku": f"S{i}", "category": "general", "qty": 3, "unit_price": f"{20 + i}.00"}
        answer = daemon.http.post(
            daemon.url + "/api/v1/checkout", json={"basket": [line], "confirm": True}, timeout=20
        )
        assert answer.status_code == 200, answer.text
        sales[answer.json()["seq"]] = answer.json()
        card.remove()

    # each sale voided, or refunded one unit at a time (1 to 3 times), in a random order
    plan = []
    for seq in sales:
        if rng.random() < 0.4:
            plan.append(("void", seq))
        else:
            plan += [("refund", seq)] * rng.randint(1, 3)
    rng.shuffle(plan)
    answered: dict[tuple[str, int], list[int]] = {}  # (kind, sale) -> the seqs answered
    cut: Counter[tuple[str, int]] = Counter()
    refused: list[tuple[str, int, int, str]] = []
    kills = 0
    window = 0.0  # s a void or refund takes (the PIN's scrypt, journaling, answer)
    wal = site.state.journal_path.with_name(site.state.journal_path.name + "-wal")
    for kind, seq in plan:
        body: dict = {"reason": "power-cut test", "pin": PIN}
        if kind == "refund":
            body["lines"] = [{"index": 0, "qty": 1}]
        timer: threading.Timer | KillOnWrite | None = None
        if window and rng.random() < 0.6:  # the first runs whole: how long one takes
            if rng.random() < 0.5:  # somewhere in it (mostly the PIN's scrypt)
                timer = threading.Timer(rng.uniform(0.3, 1.0) * window, daemon.kill)
            else:  # the moment the entry reaches the WAL: before its fsync and answer
                timer = KillOnWrite(wal, daemon.kill)
            timer.start()
        began = time.monotonic()
        try:
            url = f"{daemon.url}/api/v1/sales/{seq}/{kind}"
            answer = daemon.http.post(url, json=body, timeout=20)
        except requests.RequestException:
            cut[(kind, seq)] += 1
        else:
            if answer.status_code == 200:
                answered.setdefault((kind, seq), []).append(answer.json()["seq"])
                took = time.monotonic() - began
                window = min(window, took) if window else took  # the quickest, uncut
            else:
                refused.append((kind, seq, answer.status_code, answer.text))
        if isinstance(timer, KillOnWrite):
            timer.stop()
        if timer is not None:
            timer.join()
            kills += 1
        if daemon.dead():
            daemon.start()
            ups += 1

    # starts killed somewhere in their start-up (perhaps while journaling the event)
    assert daemon.stop() == 0
    for n in range(STARTUP_KILLS):
        daemon.spawn()
        if n % 2:  # the moment its start-up event reaches the WAL
            timer = KillOnWrite(wal, daemon.kill)
            timer.start()
            timer.join(timeout=30)
            timer.stop()
            daemon.kill()
        else:
            timer = threading.Timer(rng.uniform(0, startup_seconds * 1.2), daemon.kill)
            timer.start()
        timer.join()
    daemon.start()
    ups += 1

    # events journaled by another process while the daemon serves, killed at random
    bad = tmp_path / "bad-snapshot.json"
    bad.write_text('{"signed": {}, "signatures": []}')
    command = [UNIONCARD, "terminal", "install-update", "--snapshot", str(bad)]
    command += ["--data", str(site.state.dir)]
    events_done = events_cut = 0
    run_seconds = 0.0
    for n in range(EVENT_RUNS):
        began = time.monotonic()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        timer: threading.Timer | KillOnWrite | None = None
        if n > 0 and n % 2:  # the moment its event reaches the WAL
            timer = KillOnWrite(wal, child.kill)
            timer.start()
        elif n > 0:  # the first one runs whole: how long a run takes
            timer = threading.Timer(rng.uniform(0.7, 1.05) * run_seconds, child.kill)
            timer.start()
        _, err = child.communicate(timeout=60)
        if isinstance(timer, KillOnWrite):
            timer.stop()
        if timer is not None:
            timer.join()
        if child.returncode == -signal.SIGKILL:
            events_cut += 1
        else:
            assert child.returncode > 0 and err.startswith("error: "), (child.returncode, err)
            events_done += 1
            run_seconds = run_seconds or time.monotonic() - began
    assert daemon.stop() == 0

    journal = Journal(site.state.journal_path)
    entries = journal.sales()
    count = journal.verify(load_public_key(site.state.dir))  # chain and every signature
    journal.close()
    by_seq = {e.seq: e for e in entries}
    reversals = [e for e in entries if e.kind in ("void", "refund")]
    codes = Counter(event_code(e) for e in entries if e.kind == "event")
    report = {
        "seed": SEED,
        "reversals": len(plan),
        "kills": kills,
        "answered": sum(len(v) for v in answered.values()),
        "cut_off_by_a_kill": sum(cut.values()),
        "reversals_cut_but_journaled": len(reversals) - sum(map(len, answered.values())),
        "refused": len(refused),
        "daemon_starts_up": ups,
        "startups_killed": STARTUP_KILLS,
        "events_by_hand": events_done,
        "event_runs_killed": events_cut,
        "event_runs_cut_but_journaled": codes[UPDATE_REFUSED] - events_done,
        "seconds": round(time.monotonic() - started, 1),
        "journal_entries": count,
    }
    print("kill test (reversals, events):", json.dumps(report))
    assert not refused, refused  # nothing failed other than by a kill
    assert [e.seq for e in entries] == list(range(1, count + 1))  # no gap
    assert sorted(e.seq for e in entries if e.is_sale) == sorted(sales)  # the sales, as made
    for seq, sale in sales.items():
        entry = by_seq[seq]
        assert (entry.sale_id, entry.gross, entry.discount) == (
            sale["sale_id"], sale["gross_fen"], sale["discount_fen"],
        )  # fmt: skip
    for (kind, seq), seqs in answered.items():  # each answered once, where it said
        for at in seqs:
            assert (by_seq[at].kind, by_seq[at].ref_seq) == (kind, seq)
    for kind, seq in set(plan):
        made = [e for e in entries if e.kind == kind and e.ref_seq == seq]
        done = len(answered.get((kind, seq), []))
        assert done <= len(made) <= done + cut[(kind, seq)], (kind, seq, made)
        sale = by_seq[seq]
        for entry in made:  # whole: the void takes the sale back, each refund one unit
            if kind == "void":
                assert (entry.gross, entry.discount, entry.net) == (
                    sale.gross, sale.discount, sale.net,
                )  # fmt: skip
            else:
                assert entry.basket is not None
                assert [(x["of"], x["qty"]) for x in entry.basket["lines"]] == [(0, 1)]
    assert {(e.kind, e.ref_seq) for e in reversals} <= set(plan)  # nothing nobody asked for
    # each start that came up journaled its start-up; a killed one perhaps
    assert ups <= codes[STARTUP] <= ups + STARTUP_KILLS
    assert events_done <= codes[UPDATE_REFUSED] <= events_done + events_cut
    assert set(codes) <= {STARTUP, UPDATE_REFUSED}
    assert len(sales) + len(reversals) + sum(codes.values()) == count
    assert kills > 0 and (sum(cut.values()) > 0 or events_cut > 0)
