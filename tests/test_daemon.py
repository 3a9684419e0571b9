"""The terminal daemon under systemd's eyes: READY, STATUS and a WATCHDOG fed only while
healthy (sd_notify over a real datagram socket), one log line per event on stdout with
no card number, and a clean stop on SIGTERM that keeps every confirmed sale."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import terminal.daemon
from terminal.access import new_api_token
from terminal.daemon import SWITCH_INTERVAL, problem, responsive_threads
from terminal.devicekey import load_public_key
from terminal.errors import ConfigError
from terminal.journal import Journal
from terminal.notify import Notifier
from terminal.service import TerminalService
from tests.conftest import Clock, Site, wall_clock
from tests.helpers import MEMBER_PAN
from tests.test_reader_recovery import UNIONCARD, free_port


@pytest.fixture
def clock() -> Clock:
    """The daemon reads the wall clock: the union's must agree (tests.conftest)."""
    return wall_clock()


class Listener:
    """A datagram socket where a daemon's notifications arrive, as systemd's does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.seen: list[dict[str, str]] = []

    def wait_for(self, key: str, timeout: float = 20) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            message = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.seen.append(message)
            if key in message:
                return message
        pytest.fail(f"no {key} from the daemon; heard {self.seen}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    heard = Listener(tmp_path / "notify.sock")
    yield heard
    heard.close()


def test_the_notifier_speaks_sd_notify(listener: Listener) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "30000000"})
    assert notifier.watchdog_interval == 15.0  # half the period
    assert notifier.ready("serving")
    assert listener.wait_for("READY") == {"READY": "1", "STATUS": "serving"}
    assert notifier.watchdog("ok")
    assert listener.wait_for("WATCHDOG") == {"WATCHDOG": "1", "STATUS": "ok"}
    assert notifier.stopping()
    assert listener.wait_for("STOPPING")["STOPPING"] == "1"
    silent = Notifier({})
    assert not silent.ready("x") and silent.watchdog_interval is None
    gone = Notifier({"NOTIFY_SOCKET": str(listener.path) + ".missing"})
    assert not gone.ready("x")  # a failure is logged, not raised


def test_the_watchdog_asks_for_a_running_monitor_and_a_journal_that_answers(site: Site) -> None:
    site.journal.close()
    service = TerminalService(site.state.dir, lambda **_: None, lambda: None)  # type: ignore[arg-type,return-value]
    assert problem(service, lambda: True) is None
    assert problem(service, lambda: False) == "the card monitor has stopped"
    service.close()
    trouble = problem(service, lambda: True)
    assert trouble is not None and trouble.startswith("the journal does not answer")


def test_the_daemon_lets_a_waiting_thread_take_the_interpreter_soon(
    site: Site, monkeypatch
) -> None:
    """A till's checkout back from its fsync waits for the interpreter's lock behind the
    pollers' requests: the daemon switches threads after 1 ms, not Python's 5 ms."""
    before = sys.getswitchinterval()
    try:
        responsive_threads()
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
        assert SWITCH_INTERVAL < before  # Python's 5 ms
    finally:
        sys.setswitchinterval(before)
    called: list[bool] = []
    monkeypatch.setattr(terminal.daemon, "responsive_threads", lambda: called.append(True))
    site.journal.close()
    service = TerminalService(site.state.dir, lambda **_: None, lambda: None)  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(ConfigError):  # as far as the address it cannot serve on
            terminal.daemon.serve(service, lambda: True, "no such host", 0, Notifier({}), print)
    finally:
        service.close()
    assert called == [True]


@pytest.mark.pcsc
def test_the_daemon_notifies_logs_and_stops_cleanly(
    site: Site, clock, listener: Listener, emulated_card
) -> None:
    site.sync(clock)
    site.journal.close()
    port = free_port()
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(listener.path),
        "WATCHDOG_USEC": "1000000",  # a ping every half second
    }
    child = subprocess.Popen(
        [UNIONCARD, "terminal", "serve", "--data", str(site.state.dir), "--port", str(port)]
        + ["--reader", "00 00"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = listener.wait_for("READY")
        assert ready["STATUS"] == f"serving on 127.0.0.1:{port}"
        listener.wait_for("WATCHDOG", timeout=5)  # the monitor runs, the journal answers
        url = f"http://127.0.0.1:{port}"
        emulated_card(pan=MEMBER_PAN)  # inserted after the monitor started: a new card
        sale = requests.post(
            url + "/api/v1/checkout",
            json={"amount": "128.00", "confirm": True},
            headers={"Authorization": f"Bearer {new_api_token(site.state.dir)}"},
            timeout=30,
        )
        assert sale.status_code == 200, sale.text
        seq = sale.json()["seq"]
    finally:
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    listener.wait_for("STOPPING", timeout=2)
    assert "Traceback" not in out + err
    assert MEMBER_PAN not in out + err  # the card number is never logged
    lines = out.splitlines()
    assert any(
        line.startswith("INFO terminal.service: event #") and "startup" in line for line in lines
    )
    assert f"INFO terminal.service: sale #{seq} journaled: card •••• {MEMBER_PAN[-4:]}" in out
    journal = Journal(site.state.journal_path)
    try:  # the confirmed sale is there, signed, after the stop
        assert journal.verify(load_public_key(site.state.dir)) >= seq
        assert journal.entry(seq) is not None
    finally:
        journal.close()
