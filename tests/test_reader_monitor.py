"""reader.monitor.CardMonitor: card and reader events from pcscd, in a thread.

Through the real pcscd + vpcd where vpcd can show it (insert, remove, a card present
at start-up, a clean stop; pcscd stopping and restarting is in
test_reader_recovery.py). What vpcd cannot do (a USB reader unplugged or plugged in
while pcscd runs, a card swapped faster than two rounds of the loop) runs against
:class:`ScriptedPcsc`, which answers the same five ``smartcard.scard`` calls.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from smartcard import scard

from pact.cards import PanTokenizer
from reader.emulation.images import ATR_T0, ATR_T1
from reader.emulation.vpcd import CardEmulator
from reader.monitor import (
    LOST_PCSCD,
    PCSCD_STOPPED,
    PNP_NOTIFICATION,
    UNPLUGGED,
    CardEvent,
    CardInserted,
    CardMonitor,
    CardRemoved,
    ReaderAdded,
    ReaderGone,
)
from reader.pcsc import NOT_RUNNING, read_card
from tests.fixtures_pcsc import READER_0, READER_1, TEST_PAN, InsertCard, PcscdInfo
from tests.helpers import CARD_CLOCK, default_sigint

CARD_DAY = CARD_CLOCK().date()

ROOT = Path(__file__).resolve().parent.parent
UNIONCARD = str(Path(sys.executable).parent / "unioncard")


def next_event(monitor: CardMonitor, timeout: float = 5.0) -> CardEvent:
    try:
        return monitor.events.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no event within {timeout} s; state {monitor.snapshot()}")


def drain(monitor: CardMonitor, quiet: float = 0.0) -> list[CardEvent]:
    """Everything queued now, and whatever comes within ``quiet`` seconds."""
    events = []
    deadline = time.monotonic() + quiet
    while True:
        try:
            events.append(monitor.events.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            return events


def card_events(events: list[CardEvent]) -> list[CardEvent]:
    return [e for e in events if isinstance(e, CardInserted | CardRemoved)]


# ------------------------------------------------------------ real pcscd + vpcd


@pytest.fixture
def monitor0(pcscd: PcscdInfo) -> Iterator[CardMonitor]:
    monitor = CardMonitor(READER_0)
    yield monitor
    assert monitor.stop(), "the monitor thread did not stop"


@pytest.mark.pcsc
def test_insert_and_remove_with_reader_and_atr(monitor0: CardMonitor) -> None:
    monitor0.start()
    assert [(type(e), e.reader) for e in drain(monitor0)] == [(ReaderAdded, READER_0)]
    emulator = CardEmulator(TEST_PAN)
    emulator.insert()
    try:
        inserted = next_event(monitor0)
        assert isinstance(inserted, CardInserted)
        assert (inserted.reader, inserted.atr) == (READER_0, ATR_T0)
        assert inserted.insertion.seen_inserted and not inserted.insertion.mute
        state = monitor0.snapshot()
        assert state.reader(READER_0).card == inserted.insertion  # type: ignore[union-attr]
    finally:
        emulator.remove()
    removed = next_event(monitor0)
    assert isinstance(removed, CardRemoved)
    assert (removed.reader, removed.insertion) == (READER_0, inserted.insertion)
    assert monitor0.snapshot().reader(READER_0).card is None  # type: ignore[union-attr]


@pytest.mark.pcsc
def test_start_reports_the_readers_it_watches(pcscd: PcscdInfo) -> None:
    with CardMonitor("Virtual PCD") as monitor:
        added = drain(monitor)
        state = monitor.snapshot()
    assert {e.reader for e in added if isinstance(e, ReaderAdded)} >= {READER_0, READER_1}
    assert state.connected and state.error is None
    assert [r.name for r in state.readers if r.name in (READER_0, READER_1)] == [
        READER_0,
        READER_1,
    ]


@pytest.mark.pcsc
def test_a_card_present_at_start_is_not_an_insertion(emulated_card: InsertCard) -> None:
    emulated_card()
    with CardMonitor(READER_0) as monitor:
        card = monitor.snapshot().reader(READER_0).card  # type: ignore[union-attr]
        events = drain(monitor, quiet=0.6)
    assert card is not None and card.atr == ATR_T0 and not card.seen_inserted
    assert card_events(events) == []


@pytest.mark.pcsc
def test_a_card_present_at_start_is_reported_when_asked(emulated_card: InsertCard) -> None:
    emulated_card()
    with CardMonitor(READER_0, report_present=True) as monitor:
        events = card_events(drain(monitor, quiet=0.3))
    assert len(events) == 1 and isinstance(events[0], CardInserted)
    assert events[0].reader == READER_0 and events[0].insertion.seen_inserted


@pytest.mark.pcsc
def test_reading_the_card_is_not_an_event(monitor0: CardMonitor) -> None:
    """Connecting, transmitting and disconnecting change pcscd's INUSE bits, not the
    card's insertion: no event, and the same insertion afterwards."""
    monitor0.start()
    with CardEmulator(TEST_PAN) as emulator:
        inserted = next_event_of(monitor0, CardInserted)
        read_card(READER_0, timeout=5, tokenize=PanTokenizer(None), today=CARD_DAY)
        read_card(READER_0, timeout=5, tokenize=PanTokenizer(None), today=CARD_DAY)
        assert len(emulator.apdu_log) == 20  # two reads of 10 APDUs (the last: GET DATA)
        assert card_events(drain(monitor0, quiet=0.6)) == []
        assert monitor0.snapshot().reader(READER_0).card == inserted.insertion  # type: ignore[union-attr]
    assert isinstance(next_event_of(monitor0, CardRemoved), CardRemoved)


def next_event_of(monitor: CardMonitor, kind: type, timeout: float = 5.0) -> CardEvent:
    deadline = time.monotonic() + timeout
    while True:
        event = next_event(monitor, max(0.01, deadline - time.monotonic()))
        if isinstance(event, kind):
            return event


@pytest.mark.pcsc
def test_stop_cancels_the_wait_and_joins(pcscd: PcscdInfo) -> None:
    """With a 60 s poll only SCardCancel can wake the loop: stop() must use it."""
    monitor = CardMonitor(READER_0, poll_interval=60).start()
    time.sleep(0.2)  # let the loop sit in SCardGetStatusChange
    thread = monitor._thread
    started = time.monotonic()
    assert monitor.stop(timeout=5)
    assert time.monotonic() - started < 1.0
    assert thread is not None and not thread.is_alive()
    assert not monitor.running and not monitor.snapshot().connected
    monitor.start()  # and it can run again
    assert monitor.snapshot().connected
    assert monitor.stop()


@pytest.mark.pcsc
def test_an_unknown_reader_is_an_error_not_a_spin(pcscd: PcscdInfo) -> None:
    with CardMonitor("Gemalto") as monitor:
        state = monitor.snapshot()
    assert state.connected and state.readers == ()
    assert state.error == "no card reader found matching 'Gemalto': plug it in"


def run_monitor_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [UNIONCARD, "card", "watch", "--json", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # the test stops it with Ctrl-C, however it was launched
    )


@pytest.mark.slow
def test_without_pcscd_the_monitor_waits_and_stops_cleanly() -> None:
    """libpcsclite finds pcscd through $PCSCLITE_CSOCK_NAME: point a child process at
    a socket that does not exist. No running pcscd is touched."""
    import json

    child = run_monitor_cli({"PCSCLITE_CSOCK_NAME": "/nonexistent/pcscd.comm"}, "--retry", "0.1")
    assert child.stdout is not None
    first = json.loads(child.stdout.readline())
    assert first == {
        "event": "watching",
        "connected": False,
        "readers": [],
        "error": "pcscd is not running: start it with `systemctl start pcscd`",
    }
    time.sleep(0.5)  # a few reconnect attempts
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=10)
    assert child.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [{"event": "stopped", "clean": True}]


# ------------------------------------------------------------ a scripted pcscd

EMPTY, PRESENT, MUTE = scard.SCARD_STATE_EMPTY, scard.SCARD_STATE_PRESENT, scard.SCARD_STATE_MUTE
CHANGED, UNKNOWN = scard.SCARD_STATE_CHANGED, scard.SCARD_STATE_UNKNOWN


class ScriptedPcsc:
    """pcsc-lite as the monitor sees it, driven by the test: readers come and go,
    cards go in and out (each counted in the upper 16 bits of dwEventState, as
    pcscd does), pcscd stops and starts. Implements the five ``smartcard.scard``
    calls the monitor makes, with their blocking and cancelling behaviour, and
    records them."""

    def __init__(self, readers: dict[str, bytes | None]) -> None:
        self.cond = threading.Condition()
        self.cards = dict(readers)  # reader -> ATR of the card in it, or None
        self.counters = dict.fromkeys(readers, 0)
        self.up = True
        self.contexts: dict[int, int] = {}  # live context -> reader count its PnP saw
        self.cancelled: set[int] = set()
        self.released: list[int] = []
        self.handles = iter(range(100, 10_000))
        self.lose_cancels = 0  # cancels that arrive between two waits and are lost

    # the world

    def insert(self, reader: str, atr: bytes) -> None:
        with self.cond:
            self.cards[reader] = atr
            self.counters[reader] += 1
            self.cond.notify_all()

    def remove(self, reader: str) -> None:
        with self.cond:
            self.cards[reader] = None
            self.counters[reader] += 1
            self.cond.notify_all()

    def swap(self, reader: str, atr: bytes) -> None:
        """Out and in again between two looks: only the counter tells."""
        with self.cond:
            self.cards[reader] = atr
            self.counters[reader] += 2
            self.cond.notify_all()

    def unplug(self, reader: str) -> None:
        with self.cond:
            del self.cards[reader], self.counters[reader]
            self.cond.notify_all()

    def plug(self, reader: str, atr: bytes | None = None) -> None:
        with self.cond:
            self.cards[reader] = atr
            self.counters[reader] = 0
            self.cond.notify_all()

    def stop_pcscd(self) -> None:
        with self.cond:
            self.up = False
            self.contexts.clear()  # every client's connection breaks
            self.cond.notify_all()

    def start_pcscd(self) -> None:
        with self.cond:
            self.up = True
            self.counters = dict.fromkeys(self.cards, 0)  # a new pcscd counts afresh
            self.cond.notify_all()

    # the scard calls

    def SCardEstablishContext(self, scope: int) -> tuple[int, int]:  # noqa: N802
        with self.cond:
            if not self.up:
                return scard.SCARD_E_NO_SERVICE, 0
            handle = next(self.handles)
            self.contexts[handle] = -1
            return scard.SCARD_S_SUCCESS, handle

    def SCardReleaseContext(self, hcontext: int) -> int:  # noqa: N802
        with self.cond:
            self.released.append(hcontext)
            self.contexts.pop(hcontext, None)
            return scard.SCARD_S_SUCCESS

    def SCardListReaders(self, hcontext: int, groups: list[str]) -> tuple[int, list[str]]:  # noqa: N802
        with self.cond:
            if hcontext not in self.contexts:
                return scard.SCARD_E_NO_SERVICE, []
            if not self.cards:
                return scard.SCARD_E_NO_READERS_AVAILABLE, []
            return scard.SCARD_S_SUCCESS, sorted(self.cards)

    def SCardCancel(self, hcontext: int) -> int:  # noqa: N802
        with self.cond:
            if self.lose_cancels:
                self.lose_cancels -= 1
                return scard.SCARD_S_SUCCESS
            self.cancelled.add(hcontext)
            self.cond.notify_all()
            return scard.SCARD_S_SUCCESS

    def _state(self, reader: str) -> tuple[int, list[int]]:
        if reader not in self.cards:
            return UNKNOWN, []
        atr = self.cards[reader]
        bits = EMPTY if atr is None else (PRESENT | MUTE if atr == b"" else PRESENT)
        return (self.counters[reader] << 16) | bits, list(atr or b"")

    def SCardGetStatusChange(  # noqa: N802
        self, hcontext: int, timeout_ms: int, states: list[tuple[str, int]]
    ) -> tuple[int, list[tuple[str, int, list[int]]]]:
        deadline = time.monotonic() + timeout_ms / 1000
        with self.cond:
            while True:
                if hcontext in self.cancelled:
                    self.cancelled.discard(hcontext)
                    return scard.SCARD_E_CANCELLED, []
                if hcontext not in self.contexts:
                    return scard.SCARD_F_COMM_ERROR, []  # what pcsc-lite 1.9 answers
                events, changed = [], False
                for name, current in states:
                    if name == PNP_NOTIFICATION:
                        seen = self.contexts[hcontext]
                        moved = seen not in (-1, len(self.cards))
                        self.contexts[hcontext] = len(self.cards)
                        events.append((name, CHANGED if moved else 0, []))
                        changed |= moved
                        continue
                    state, atr = self._state(name)
                    if state & UNKNOWN and current & UNKNOWN:
                        events.append((name, UNKNOWN, []))
                    elif state != current & ~CHANGED:
                        events.append((name, state | CHANGED, atr))
                        changed = True
                    else:
                        events.append((name, state, atr))
                if changed:
                    return scard.SCARD_S_SUCCESS, events
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return scard.SCARD_E_TIMEOUT, []
                self.cond.wait(remaining)


R0, R1 = "Reader A 00 00", "Reader B 00 00"


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedPcsc, CardMonitor]]:
    pcsc = ScriptedPcsc({R0: None})
    monitor = CardMonitor(retry_interval=0.02, api=pcsc)
    yield pcsc, monitor
    assert monitor.stop(), "the monitor thread did not stop"


def wait_for(monitor: CardMonitor, kinds: list[type], timeout: float = 3.0) -> list[CardEvent]:
    """The next ``len(kinds)`` events, checked against ``kinds``."""
    events = [next_event(monitor, timeout) for _ in kinds]
    assert [type(e) for e in events] == kinds, events
    return events


def test_scripted_insert_and_remove(scripted: tuple[ScriptedPcsc, CardMonitor]) -> None:
    pcsc, monitor = scripted
    monitor.start()
    wait_for(monitor, [ReaderAdded])
    pcsc.insert(R0, ATR_T1)
    (inserted,) = wait_for(monitor, [CardInserted])
    assert isinstance(inserted, CardInserted) and inserted.atr == ATR_T1
    assert monitor.snapshot().reader(R0).event_counter == 1  # type: ignore[union-attr]
    pcsc.remove(R0)
    (removed,) = wait_for(monitor, [CardRemoved])
    assert isinstance(removed, CardRemoved) and removed.insertion == inserted.insertion


def test_a_card_swapped_between_two_rounds_is_a_new_insertion(
    scripted: tuple[ScriptedPcsc, CardMonitor],
) -> None:
    """pcscd saw it go out and in (counter +2) but the loop only sees "present" twice."""
    pcsc, monitor = scripted
    monitor.start()
    pcsc.insert(R0, ATR_T1)
    _, first = wait_for(monitor, [ReaderAdded, CardInserted])
    pcsc.swap(R0, ATR_T1)  # the same ATR: only pcscd's counter shows the swap
    removed, second = wait_for(monitor, [CardRemoved, CardInserted])
    assert isinstance(first, CardInserted) and isinstance(second, CardInserted)
    assert isinstance(removed, CardRemoved) and removed.insertion == first.insertion
    assert second.insertion.id != first.insertion.id


def test_a_reader_unplugged_and_plugged_in_again(
    scripted: tuple[ScriptedPcsc, CardMonitor],
) -> None:
    pcsc, monitor = scripted
    monitor.start()
    wait_for(monitor, [ReaderAdded])
    pcsc.plug(R1)  # the PnP notification wakes the loop
    (added,) = wait_for(monitor, [ReaderAdded])
    assert added.reader == R1
    pcsc.insert(R1, ATR_T0)
    wait_for(monitor, [CardInserted])
    pcsc.unplug(R1)  # pcsc-lite reports SCARD_STATE_UNKNOWN for it
    (gone,) = wait_for(monitor, [ReaderGone])
    assert isinstance(gone, ReaderGone) and (gone.reader, gone.reason) == (R1, UNPLUGGED)
    assert [r.name for r in monitor.snapshot().readers] == [R0]
    pcsc.plug(R1, ATR_T0)  # back with the same card in it: presumed the same card
    (back,) = wait_for(monitor, [ReaderAdded])
    assert back.reader == R1
    assert card_events(drain(monitor, quiet=0.2)) == []
    card = monitor.snapshot().reader(R1).card  # type: ignore[union-attr]
    assert card is not None and card.seen_inserted


def test_a_card_already_in_a_reader_plugged_in_later_is_not_an_insertion(
    scripted: tuple[ScriptedPcsc, CardMonitor],
) -> None:
    pcsc, monitor = scripted
    monitor.start()
    wait_for(monitor, [ReaderAdded])
    pcsc.plug(R1, ATR_T0)
    wait_for(monitor, [ReaderAdded])
    assert card_events(drain(monitor, quiet=0.2)) == []
    card = monitor.snapshot().reader(R1).card  # type: ignore[union-attr]
    assert card is not None and not card.seen_inserted


def test_the_last_reader_unplugged_leaves_an_error_not_a_busy_loop(
    scripted: tuple[ScriptedPcsc, CardMonitor],
) -> None:
    pcsc, monitor = scripted
    monitor.start()
    wait_for(monitor, [ReaderAdded])
    pcsc.unplug(R0)
    wait_for(monitor, [ReaderGone])
    state = monitor.snapshot()
    assert state.connected and state.readers == ()
    assert state.error == "no card reader found: plug one in"
    pcsc.plug(R0)
    wait_for(monitor, [ReaderAdded])
    assert monitor.snapshot().error is None


def test_pcscd_restart_with_the_same_card_in_the_reader(
    scripted: tuple[ScriptedPcsc, CardMonitor],
) -> None:
    """What vpcd cannot show: a physical card stays in while pcscd restarts. It is
    presumed the same card (same insertion), not a new one."""
    pcsc, monitor = scripted
    monitor.start()
    pcsc.insert(R0, ATR_T1)
    _, inserted = wait_for(monitor, [ReaderAdded, CardInserted])
    pcsc.stop_pcscd()
    (gone,) = wait_for(monitor, [ReaderGone])
    assert isinstance(gone, ReaderGone) and gone.reason == PCSCD_STOPPED
    state = monitor.snapshot()
    assert not state.connected and state.error is not None
    assert state.error in (LOST_PCSCD, NOT_RUNNING)
    assert pcsc.released  # the dead context was released
    pcsc.start_pcscd()
    wait_for(monitor, [ReaderAdded])
    assert card_events(drain(monitor, quiet=0.2)) == []
    assert isinstance(inserted, CardInserted)
    assert monitor.snapshot().reader(R0).card == inserted.insertion  # type: ignore[union-attr]
    assert monitor.snapshot().connected and monitor.snapshot().error is None


@pytest.mark.parametrize(
    ("during_outage", "expected"),
    [
        ("swap", [CardRemoved, CardInserted]),  # another card (another ATR) went in
        ("remove", [CardRemoved]),
        ("insert", [CardInserted]),  # the reader was empty before: it went in meanwhile
    ],
)
def test_pcscd_restart_with_the_card_changed_meanwhile(
    scripted: tuple[ScriptedPcsc, CardMonitor], during_outage: str, expected: list[type]
) -> None:
    pcsc, monitor = scripted
    monitor.start()
    wait_for(monitor, [ReaderAdded])
    if during_outage != "insert":
        pcsc.insert(R0, ATR_T1)
        wait_for(monitor, [CardInserted])
    pcsc.stop_pcscd()
    wait_for(monitor, [ReaderGone])
    {"swap": lambda: pcsc.insert(R0, ATR_T0), "remove": lambda: pcsc.remove(R0)}.get(
        during_outage, lambda: pcsc.insert(R0, ATR_T0)
    )()
    pcsc.start_pcscd()
    events = wait_for(monitor, [ReaderAdded, *expected])
    if expected[-1] is CardInserted:
        assert isinstance(events[-1], CardInserted) and events[-1].insertion.seen_inserted


def test_stop_releases_the_context_and_a_lost_cancel_is_repeated(
    scripted: tuple[ScriptedPcsc, CardMonitor],
) -> None:
    """With a 60 s poll only SCardCancel wakes the loop; the first two are lost."""
    pcsc, _ = scripted
    monitor = CardMonitor(api=pcsc, poll_interval=60)
    monitor.start()
    handle = next(iter(pcsc.contexts))
    pcsc.lose_cancels = 2
    started = time.monotonic()
    assert monitor.stop(timeout=2)
    assert time.monotonic() - started < 1.0
    assert handle in pcsc.released and handle not in pcsc.contexts


def test_a_full_queue_drops_the_oldest_event(scripted: tuple[ScriptedPcsc, CardMonitor]) -> None:
    pcsc, _ = scripted
    monitor = CardMonitor(api=pcsc, max_events=2)
    with monitor:
        for _ in range(3):
            pcsc.insert(R0, ATR_T0)
            monitor.wait_changed(monitor.snapshot().version, 1.0)
            pcsc.remove(R0)
            monitor.wait_changed(monitor.snapshot().version, 1.0)
        time.sleep(0.1)
        kept = drain(monitor)
    assert [type(e) for e in kept] == [CardInserted, CardRemoved]
    assert monitor.events.maxsize == 2


def test_the_loop_survives_a_bug(scripted: tuple[ScriptedPcsc, CardMonitor]) -> None:
    """An unexpected exception in the loop is logged and the loop starts over."""
    pcsc, _ = scripted
    real = pcsc.SCardListReaders
    calls = {"n": 0}

    def flaky(hcontext: int, groups: list[str]) -> tuple[int, list[str]]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(hcontext, groups)

    pcsc.SCardListReaders = flaky  # type: ignore[method-assign]
    with CardMonitor(api=pcsc, retry_interval=0.02) as monitor:
        wait_for(monitor, [ReaderAdded])
        pcsc.insert(R0, ATR_T0)
        wait_for(monitor, [CardInserted])
    assert calls["n"] >= 2
