"""pcscd stops and restarts under a running monitor and a running terminal daemon.

Each test runs its own pcscd (``private_pcscd``: a private mount namespace and vpcd
ports of its own), so stopping it disturbs no other PC/SC client on the machine. The
clients are child processes pointed at it through $PCSCLITE_CSOCK_NAME: the card
monitor (``unioncard card watch``) and the daemon (``unioncard terminal serve``),
neither of which is restarted.

vpcd's card link ends when pcscd stops (the emulator is cut off), so a card that
stays in the reader across a restart cannot be shown here: see the scripted test in
test_reader_monitor.py.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from reader.emulation.images import ATR_T0
from reader.emulation.vpcd import CardEmulator
from reader.fresh import LAST_SALE
from terminal.access import new_api_token
from tests.conftest import Clock, Site, wall_clock
from tests.fixtures_pcsc import READER_0, READER_1, TEST_PAN
from tests.helpers import MEMBER_PAN, default_sigint
from tests.private_pcscd import PrivatePcscd

pytestmark = pytest.mark.pcsc


@pytest.fixture
def clock() -> Clock:
    """The daemon reads the wall clock: the union's must agree (tests.conftest)."""
    return wall_clock()


ROOT = Path(__file__).resolve().parent.parent
UNIONCARD = str(Path(sys.executable).parent / "unioncard")


class Lines:
    """A child process's stdout, line by line, with a timeout."""

    def __init__(self, child: subprocess.Popen[str]) -> None:
        self.child = child
        self.lines: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.child.stdout is not None
        for line in self.child.stdout:
            self.lines.put(line)

    def next(self, timeout: float = 5.0) -> dict[str, Any]:
        try:
            return json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            self.child.kill()
            _, err = self.child.communicate()
            pytest.fail(f"the child printed nothing within {timeout} s; stderr: {err}")

    def expect(self, *events: tuple[str, str], timeout: float = 5.0) -> list[dict[str, Any]]:
        """The next lines, as (event, reader) pairs, in any order."""
        got = [self.next(timeout) for _ in events]
        assert sorted((g["event"], g["reader"]) for g in got) == sorted(events), got
        return got


@pytest.fixture
def watch(private_pcscd: PrivatePcscd) -> Iterator[Lines]:
    child = subprocess.Popen(
        [UNIONCARD, "card", "watch", "--json", "--retry", "1.5"],
        cwd=ROOT,
        env={**os.environ, **private_pcscd.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # the test stops it with Ctrl-C, however it was launched
    )
    lines = Lines(child)
    yield lines
    if child.poll() is None:
        child.kill()
    child.wait()
    lines.thread.join(5)
    for pipe in (child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()


def test_the_monitor_survives_pcscd_restarts(private_pcscd: PrivatePcscd, watch: Lines) -> None:
    first = watch.next()
    assert first["event"] == "watching" and first["connected"] is True
    assert [r["name"] for r in first["readers"]] == [READER_0, READER_1]
    watch.expect(("reader_added", READER_0), ("reader_added", READER_1))
    card = CardEmulator(TEST_PAN, port=private_pcscd.port).insert()
    (inserted,) = watch.expect(("card_inserted", READER_0))
    assert inserted["atr"] == ATR_T0.hex().upper()

    # pcscd stops (vpcd takes the card link with it), then comes back
    private_pcscd.stop()
    gone = watch.expect(("reader_gone", READER_0), ("reader_gone", READER_1))
    assert {g["reason"] for g in gone} == {"pcscd stopped"}
    private_pcscd.start()
    watch.expect(("reader_added", READER_0), ("reader_added", READER_1), timeout=10)
    (removed,) = watch.expect(("card_removed", READER_0))
    assert removed["insertion"] == inserted["insertion"]
    assert not card.inserted

    # a card put in while the monitor was still reconnecting counts as inserted
    private_pcscd.stop()
    watch.expect(("reader_gone", READER_0), ("reader_gone", READER_1))
    private_pcscd.start()
    card.insert()
    assert card.noticed.wait(5), "pcscd did not see the card"
    lines = [watch.next(timeout=10) for _ in range(3)]  # the monitor retries every 1.5 s
    assert sorted((x["event"], x["reader"]) for x in lines) == [
        ("card_inserted", READER_0),
        ("reader_added", READER_0),
        ("reader_added", READER_1),
    ]
    again = next(x for x in lines if x["event"] == "card_inserted")
    assert again["insertion"] != inserted["insertion"]
    card.remove()
    watch.expect(("card_removed", READER_0))

    assert watch.child.poll() is None  # the same process all along
    watch.child.send_signal(signal.SIGINT)
    assert watch.child.wait(timeout=10) == 0
    assert watch.next() == {"event": "stopped", "clean": True}
    assert watch.child.stderr is not None and "Traceback" not in watch.child.stderr.read()


HTTP = requests.Session()  # the till's: its token and language, set by the daemon fixture


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def daemon(site: Site, clock, private_pcscd: PrivatePcscd) -> Iterator[str]:
    """``unioncard terminal serve`` on a synced terminal, talking to the private pcscd."""
    site.sync(clock)
    port = free_port()
    child = subprocess.Popen(
        [UNIONCARD, "terminal", "serve", "--data", str(site.state.dir), "--port", str(port)]
        + ["--reader", "00 00"],
        env={**os.environ, **private_pcscd.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    HTTP.headers["Authorization"] = f"Bearer {new_api_token(site.state.dir)}"
    HTTP.headers["Accept-Language"] = "en"  # the messages checked below are English
    deadline = time.monotonic() + 20
    while True:
        try:
            HTTP.get(url + "/api/v1/status", timeout=1).raise_for_status()
            break
        except requests.RequestException:
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                pytest.fail(f"terminal serve did not come up: {child.communicate()[1]}")
            time.sleep(0.1)
    yield url
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=15)
    assert child.returncode == 0, err
    assert "Traceback" not in out + err


def reader_state(url: str) -> dict[str, Any]:
    return HTTP.get(url + "/api/v1/reader", timeout=5).json()


def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the condition")
        time.sleep(0.05)


def test_the_daemon_sells_again_after_pcscd_restarts(
    daemon: str, private_pcscd: PrivatePcscd
) -> None:
    state = reader_state(daemon)
    assert (state["reader"], state["ready_for_new_card"]) == (READER_0, True)
    card = CardEmulator(MEMBER_PAN, port=private_pcscd.port).insert()
    until(lambda: reader_state(daemon)["card_present"])
    sale = HTTP.post(
        daemon + "/api/v1/checkout", json={"amount": "128.00", "confirm": True}, timeout=10
    )
    assert sale.status_code == 200, sale.text
    # entry 1 is the daemon's start-up event
    assert (sale.json()["seq"], sale.json()["pan_last4"]) == (2, MEMBER_PAN[-4:])
    again = HTTP.post(
        daemon + "/api/v1/checkout", json={"amount": "10.00", "confirm": True}, timeout=10
    )
    assert (again.status_code, again.json()["error"]) == (408, LAST_SALE)

    private_pcscd.stop()
    until(lambda: not reader_state(daemon)["pcscd_connected"])
    down = reader_state(daemon)
    assert down["ready_for_new_card"] is False and "pcscd" in down["message"]
    refused = HTTP.post(
        daemon + "/api/v1/checkout", json={"amount": "10.00", "confirm": True}, timeout=10
    )
    assert refused.status_code == 503 and "pcscd" in refused.json()["error"]

    private_pcscd.start()
    until(lambda: reader_state(daemon)["ready_for_new_card"])
    assert not card.inserted  # vpcd dropped the card with pcscd
    card.insert()
    until(lambda: reader_state(daemon)["card_present"])
    sale = HTTP.post(
        daemon + "/api/v1/checkout", json={"amount": "45.50", "confirm": True}, timeout=10
    )
    assert sale.status_code == 200, sale.text
    assert sale.json()["seq"] == 3
    card.remove()
