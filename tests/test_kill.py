"""SIGKILL at random moments: the daemon (``unioncard terminal serve``, a real process)
takes checkouts through its till API in confirm mode, with real cards through a
pcscd of the test's own, and is killed with SIGKILL at random moments and restarted.

Afterwards every sale the API confirmed is journaled exactly once, the sequence has
no gaps, the chain and every device signature verify, and nothing is in the journal
that no checkout asked for. Each checkout has its own amount, so the journal shows
what became of the ones a kill cut off (recorded, or not, before the kill).

The short form runs in `make test`; `make test-kill` runs 1,000 checkouts
(``UNIONCARD_KILL_CHECKOUTS``). ``UNIONCARD_KILL_SEED`` repeats a run.
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
from pathlib import Path

import pytest
import requests

from pact.event import STARTUP, event_code
from reader.emulation.vpcd import CardEmulator
from terminal.access import new_api_token
from terminal.devicekey import load_public_key
from terminal.journal import Journal
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
        with open(self.log, "a") as log:
            self.child = subprocess.Popen(
                [UNIONCARD, "terminal", "serve", "--data", str(self.data)]
                + ["--port", str(self.port), "--reader", "00 00"],
                env={**os.environ, **self.pcscd.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
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
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGKILL)

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
