"""The daemon syncs by itself (issue 13, item 6): every N minutes or after N new entries,
in the background, only while no checkout is under way; the nightly timer stays as the
backstop."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from central import create_app as central_app
from central.keys import create_keys
from central.serve import ThreadedServer
from central.service import CentralPaths, Union
from pact.basket import Basket
from pact.event import EVENT, OFFLINE_LIMIT, event_code
from terminal.access import new_api_token
from terminal.journal import Journal
from terminal.service import TerminalService
from terminal.state import TerminalState
from terminal.syncing import AutoSync, BackgroundSync, sync_terminal
from terminal.syncrecord import last_sync
from tests.helpers import MEMBER_PAN
from tests.test_policy_checkout import MONDAY, POPCORN, card, make_shop, terms
from tests.test_reader_recovery import UNIONCARD, free_port


class Ticks:
    """A monotonic clock the test moves (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Syncs:
    """A sync that only counts its runs (the real one: the daemon test below)."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = threading.Event()

    def __call__(self) -> None:
        self.runs += 1
        self.release.wait(10)


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[TerminalService, list]]:
    state = make_shop(tmp_path, terms("cinema"))
    member = card(state)
    now = [MONDAY + timedelta(minutes=5)]
    service = TerminalService(
        state.dir, lambda *, timeout, tokenize: member, lambda: now[0], card_timeout=1
    )
    yield service, now
    service.close()


def test_a_sync_is_due_by_time_and_by_sales_and_waits_for_an_idle_till(shop) -> None:
    service, now = shop
    ticks, syncs = Ticks(), Syncs()
    syncer = BackgroundSync(syncs, lambda: None)
    auto = AutoSync(service, syncer, every=900, after_sales=3, monotonic=ticks)
    assert auto.tick() is None and auto.due() is None  # just started
    ticks.now += 899
    assert auto.tick() is None
    ticks.now += 1
    assert auto.tick() == "time"
    assert auto.tick() is None  # one at a time: the first still runs
    syncs.release.set()
    syncer.join(5)
    assert syncs.runs == 1
    # three new entries make one due before the time
    for _ in range(2):
        service.checkout(Basket((POPCORN,)), confirm=True)
    assert auto.tick() is None
    # a priced sale waiting for the cashier's confirmation: not idle, no sync
    waiting = service.checkout(Basket((POPCORN,)))
    assert service.busy()
    assert auto.due() is None  # two journaled so far
    service.confirm(waiting.id)
    service.checkout(Basket((POPCORN,)))
    assert auto.due() == "sales" and auto.tick() is None  # due, but the till is busy
    service.cancel(service.pending().id)  # type: ignore[union-attr]
    assert not service.busy()
    assert auto.tick() == "sales"
    syncer.join(5)
    assert syncs.runs == 2
    # 0 turns either off
    off = AutoSync(service, syncer, every=0, after_sales=0, monotonic=ticks)
    ticks.now += 10**6
    service.checkout(Basket((POPCORN,)), confirm=True)
    assert off.due() is None


def test_a_tick_journals_an_offline_limit_while_the_shop_is_quiet(shop) -> None:
    service, now = shop
    auto = AutoSync(service, BackgroundSync(Syncs(), lambda: None), 0, 0, Ticks())
    now[0] = MONDAY + timedelta(hours=25)
    auto.tick()
    auto.tick()
    notes = [e.note for e in service.journal.sales() if e.kind == EVENT]
    assert [n.split(":")[0] for n in notes if n] == [OFFLINE_LIMIT]  # once
    assert event_code(service.journal.sales()[-1]) == OFFLINE_LIMIT


@pytest.fixture
def union(tmp_path: Path) -> Iterator[tuple[Union, str]]:
    """A central service on the wall clock (the daemon reads the wall clock)."""
    clock = lambda: datetime.now(UTC)  # noqa: E731
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    central = Union.open(paths, None, clock)
    central.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    central.add_merchant("M0001", "Shop", 500)
    central.publish_roster()
    with ThreadedServer(central_app({"DATA_DIR": str(paths.data_dir), "CLOCK": clock})) as server:
        yield central, server.url
    central.close()


def test_the_daemon_syncs_by_itself(tmp_path: Path, union) -> None:
    central, url = union
    state = TerminalState(tmp_path / "terminal")
    state.enrol(central.enrol_terminal("T1", "M0001", url))
    journal = Journal(state.journal_path, state.signer())
    first = sync_terminal(state, journal, lambda: datetime.now(UTC))
    journal.close()
    assert not first.problems
    synced = last_sync(state.dir)["last_success_at"]
    port = free_port()
    env = {**os.environ, "UNIONCARD_SYNC_EVERY_MINUTES": "0.05"}  # every 3 s
    child = subprocess.Popen(
        [UNIONCARD, "terminal", "serve", "--data", str(state.dir), "--port", str(port)]
        + ["--reader", "no such reader"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        token = new_api_token(state.dir)
        status: dict = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status = requests.get(
                    f"http://127.0.0.1:{port}/api/v1/status",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5,
                ).json()
            except requests.ConnectionError:
                status = {}
            if status.get("sync", {}).get("last_success_at") not in (None, synced):
                break
            time.sleep(0.5)
        # the daemon's start-up event went up with no one asking
        assert status["sync"]["last_success_at"] not in (None, synced), status
        assert status["pending_upload"] == 0 and status["sync"]["last_error"] is None
        held = central.store.sales_for("T1")
        assert "startup" in [event_code(e) for e in held]  # the union holds it
    finally:
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "sync started by the daemon (time)" in out
    assert "Traceback" not in out + err


def test_the_daemons_sync_runs_in_a_process_of_its_own(tmp_path: Path) -> None:
    """`unioncard sync` as a child: its failure comes back as its own error line."""
    from terminal.syncing import SyncProcessError, sync_in_a_process

    with pytest.raises(SyncProcessError, match=r"^error: not enrolled: .*nothing does not exist"):
        sync_in_a_process(tmp_path / "nothing", 500, timeout=60)
