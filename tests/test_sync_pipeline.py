"""The sync keeps two uploads on their way (issue 13, the sync's throughput): each
request but the first is sent while the one before it may still be on its way, with
``Unioncard-Pipelined: 1``, and the union waits for the entries before it. Against
the real central service over loopback HTTP, on SQLite and on PostgreSQL: every entry
held once, in order, whatever arrives first, and nothing noted against the terminal
for a batch that came ahead of its turn."""

from __future__ import annotations

import gzip
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import central.service
from central import create_app
from central.keys import create_keys
from central.serve import ThreadedServer
from central.service import CentralPaths, Union
from pact.sale import SaleDraft
from pact.wire import PIPELINED_HEADER
from sync.client import CentralClient
from sync.errors import CentralUnreachableError
from sync.run import _bodies, run_sync
from terminal.journal import Journal
from terminal.state import TerminalState
from tests.conftest import FAST
from tests.helpers import MEMBER_PAN

UPLOAD = "/api/v1/sales"


class Watch:
    """WSGI middleware around the central service: each upload's first seq, whether it
    came pipelined, and how many uploads were inside the service at once; it holds each
    upload ``hold`` seconds before the service sees it, and answers 503 to the uploads
    whose first seq is in ``failing``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.hold = 0.0
        self.failing: set[int] = set()
        self.seen: list[tuple[int, bool]] = []
        self.inside = self.most_inside = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        if environ["PATH_INFO"] != UPLOAD:
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        first = json.loads(gzip.decompress(body))["sales"][0]["seq"]
        pipelined = environ.get("HTTP_" + PIPELINED_HEADER.upper().replace("-", "_")) == "1"
        with self.lock:
            self.seen.append((first, pipelined))
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            time.sleep(self.hold)
            if first in self.failing:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"busy"]
            environ["wsgi.input"] = io.BytesIO(body)
            return list(self.app(environ, start_response))
        finally:
            with self.lock:
                self.inside -= 1


class Shop:
    def __init__(self, union: Union, url: str, state: TerminalState, watch: Watch) -> None:
        self.union, self.url, self.state, self.watch = union, url, state, watch
        self.journal = Journal(state.journal_path, state.signer())
        self.client = CentralClient(url, "T1", state.enrolment.api_secret, FAST)

    def sell(self, n: int, now: Any) -> None:
        for i in range(n):
            self.journal.append(
                SaleDraft(
                    terminal_id="T1",
                    merchant_id="M0001",
                    token=os.urandom(16).hex(),
                    pan_last4="0004",
                    member=True,
                    gross=1000 + i,
                    discount=0,
                    net=1000 + i,
                    rules=(),
                    roster_version=1,
                    policy_version=1,
                    basket=None,
                ),
                now,
            )

    def sync(self, clock, batch: int = 10):
        return run_sync("T1", self.state, self.journal, self.client, clock, batch_size=batch)

    def held_once(self) -> bool:
        """The union holds every journal entry once, as journaled."""
        return self.union.store.sales_for("T1") == self.journal.sales()

    def notes(self) -> list[str]:
        return [r["reason"] for r in self.union.store.refusals("T1")]


@pytest.fixture
def shop(tmp_path: Path, clock, database_url: str | None) -> Iterator[Shop]:
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, database_url, clock)
    union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    union.add_merchant("M0001", "Shop", 500)
    union.publish_roster()
    config = {"DATA_DIR": str(paths.data_dir), "DATABASE_URL": database_url, "CLOCK": clock}
    app = create_app(config)
    watch = Watch(app.wsgi_app)
    app.wsgi_app = watch  # type: ignore[method-assign]
    with ThreadedServer(app) as server:
        state = TerminalState(tmp_path / "terminal")
        state.enrol(union.enrol_terminal("T1", "M0001", server.url))
        s = Shop(union, server.url, state, watch)
        s.sync(clock)  # device key, roster, policy
        watch.seen.clear()
        yield s
        s.client.close()
        s.journal.close()
    union.close()
    app.extensions["unioncard"].close()


def test_two_uploads_are_on_their_way(shop: Shop, clock) -> None:
    """Each upload held 50 ms by the service: the sync sends the next meanwhile. The
    first batch goes when nothing else is on its way, every later one pipelined; the
    union holds every entry once and notes nothing."""
    shop.sell(60, clock())
    shop.watch.hold = 0.05
    report = shop.sync(clock)
    assert (report.uploaded, report.sent, report.pending) == (60, 60, 0), report
    assert shop.watch.most_inside == 2
    firsts = sorted(shop.watch.seen)
    assert [first for first, _ in firsts] == list(range(1, 61, 10))
    assert [pipelined for _, pipelined in firsts] == [False, True, True, True, True, True]
    assert shop.held_once() and shop.notes() == []
    assert shop.journal.counts() == (60, 0)


def test_a_batch_that_arrives_first_waits_for_the_one_before(shop: Shop, clock) -> None:
    """The second batch's request overtakes the first's: the union waits for the first
    batch's entries, then stores the second after them, and both are acknowledged."""
    shop.sell(20, clock())
    sales = shop.journal.pending(20)
    ahead = shop.client.twin()
    answers: dict[str, int] = {}
    second = threading.Thread(
        target=lambda: answers.update(second=ahead.post_sales(_bodies("T1", sales[10:]), True))
    )
    second.start()
    time.sleep(0.3)
    assert second.is_alive()  # waiting for entries 1 to 10
    answers["first"] = shop.client.post_sales(_bodies("T1", sales[:10]))
    second.join(10)
    ahead.close()
    assert answers == {"first": 10, "second": 20}
    assert [s.seq for s in shop.union.store.sales_for("T1")] == list(range(1, 21))
    assert shop.notes() == []


def test_a_batch_whose_turn_never_comes_is_answered_without_a_note(
    shop: Shop, clock, monkeypatch
) -> None:
    """A pipelined batch whose entries before it never arrive is answered with what the
    union holds once the wait is over, and nothing is kept against the terminal: its
    batch before it failed, it was not the union's copy that ended early. The same batch
    sent alone is noted (the union restored from an older backup?)."""
    monkeypatch.setattr(central.service, "PIPELINE_WAIT", 0.3)
    shop.sell(20, clock())
    later = _bodies("T1", shop.journal.pending(20)[10:])
    started = time.monotonic()
    assert shop.client.post_sales(later, pipelined=True) == 0
    assert time.monotonic() - started >= 0.3  # it waited for entries 1 to 10
    assert shop.notes() == [] and shop.union.store.sales_for("T1") == []
    assert shop.client.post_sales(later) == 0  # alone: the union's copy ends at 0
    (note,) = shop.notes()
    assert "holds this terminal's entries through 0 only" in note


def test_a_failing_batch_stops_the_sync_and_the_next_sync_sends_the_rest_once(
    shop: Shop, clock, monkeypatch
) -> None:
    """The third batch's requests are answered 503 while the fourth is on its way behind
    it: the sync stops (try again later), only what the union acknowledged is marked
    uploaded, and the next sync sends the rest: each entry held once, nothing noted."""
    monkeypatch.setattr(central.service, "PIPELINE_WAIT", 0.2)
    shop.sell(60, clock())
    shop.watch.failing = {21}
    with pytest.raises(CentralUnreachableError):
        shop.sync(clock)
    assert shop.journal.counts() == (60, 40)  # entries 1 to 20 acknowledged and marked
    assert [s.seq for s in shop.union.store.sales_for("T1")] == list(range(1, 21))
    shop.watch.failing = set()
    report = shop.sync(clock)
    assert (report.uploaded, report.pending) == (40, 0), report
    assert shop.held_once() and shop.notes() == []
