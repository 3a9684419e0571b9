"""Card and reader events from pcscd: our own status-change loop in a thread.

:class:`CardMonitor` runs ``SCardGetStatusChange`` (PC/SC Part 5, 3.1.8) in one
thread of the adapter and turns what it sees into items on a :class:`queue.Queue`
(:class:`CardInserted`, :class:`CardRemoved`, :class:`ReaderAdded`,
:class:`ReaderGone`), and into a :class:`MonitorState` that callers can read or
wait on. pyscard's ``CardMonitor`` is not used: its thread dies for good when pcscd
goes away. This loop survives that:

- pcscd stops or restarts: the call in progress fails (pcsc-lite 1.9 answers
  ``SCARD_F_COMM_ERROR``; ``SCARD_E_NO_SERVICE``, ``SCARD_E_SERVICE_STOPPED`` and
  ``SCARD_E_INVALID_HANDLE`` are treated alike), every reader is reported gone, the
  context is released and a new one is established every ``retry_interval``
  seconds until pcscd answers again; its readers are then reported added.
- A reader is unplugged or plugged in: the special reader ``\\\\?PnP?\\Notification``
  wakes the loop when pcscd's reader list changes; a reader reported
  ``SCARD_STATE_UNKNOWN`` (or ``SCARD_E_UNKNOWN_READER``) is gone.
- A card taken out and put back between two rounds: pcscd counts insertions and
  removals per reader in the upper 16 bits of ``dwEventState``; a count that moved
  while a card is still present is a removal and a new insertion.

A card that was already in a reader when the monitor started is not reported as an
insertion unless ``report_present`` is set (pyscard's monitor does report it, which
would make a daemon re-read the last customer's card at start-up). After pcscd or a
reader comes back, a card present where the monitor last saw none, or a card with
another ATR, is reported as inserted; one with the same ATR as before is presumed to
be the same card (PC/SC cannot tell two cards of one product apart by their ATR).

Only the adapter's thread talks to its PC/SC context; :meth:`CardMonitor.stop` wakes
it with ``SCardCancel`` (the one call PC/SC allows from another thread), joins it,
and the thread releases the context.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Protocol

from smartcard import scard

from reader.errors import CardError
from reader.pcsc import translate

log = logging.getLogger(__name__)

PNP_NOTIFICATION = "\\\\?PnP?\\Notification"  # PC/SC Part 5, 3.1.8: the reader list changed
PCSCD_STOPPED = "pcscd stopped"
LOST_PCSCD = "lost contact with pcscd (it stopped or restarted): try again in a moment"
UNPLUGGED = "the card reader was unplugged"

# Return codes after which the context is dead and a new one is needed (pcsclite.h).
_LOST = {
    scard.SCARD_E_NO_SERVICE,
    scard.SCARD_E_SERVICE_STOPPED,
    scard.SCARD_F_COMM_ERROR,
    scard.SCARD_E_INVALID_HANDLE,
}
# Return codes after which the reader list is re-read with the same context.
_RELIST = {
    scard.SCARD_E_UNKNOWN_READER,
    scard.SCARD_E_READER_UNAVAILABLE,
    scard.SCARD_E_NO_READERS_AVAILABLE,
}


class ScardApi(Protocol):
    """The five calls of pyscard's ``smartcard.scard`` the monitor makes.

    The real one is the ``smartcard.scard`` module itself; tests may pass an object
    with the same methods that scripts pcscd's answers.
    """

    def SCardEstablishContext(self, scope: int) -> tuple[int, int]: ...

    def SCardReleaseContext(self, hcontext: int) -> int: ...

    def SCardListReaders(self, hcontext: int, groups: list[str]) -> tuple[int, list[str]]: ...

    def SCardGetStatusChange(
        self, hcontext: int, timeout_ms: int, states: list[tuple[str, int]]
    ) -> tuple[int, list[tuple[str, int, list[int]]]]: ...

    def SCardCancel(self, hcontext: int) -> int: ...


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Insertion:
    """One card insertion as the monitor saw it.

    ``id`` is unique within the monitor and stays the same while the card stays in
    (also across a pcscd restart when its ATR is unchanged). ``seen_inserted`` is
    False for a card that was already there when the monitor started (and
    ``report_present`` was off): nobody saw it go in.
    """

    id: int
    reader: str
    atr: bytes
    seen_inserted: bool
    mute: bool  # present but no ATR: the card does not answer
    at: float  # time.monotonic() when the monitor saw it


@dataclass(frozen=True)
class CardInserted:
    reader: str
    atr: bytes
    insertion: Insertion
    at: float


@dataclass(frozen=True)
class CardRemoved:
    reader: str
    insertion: Insertion
    at: float


@dataclass(frozen=True)
class ReaderAdded:
    reader: str
    at: float


@dataclass(frozen=True)
class ReaderGone:
    reader: str
    reason: str  # PCSCD_STOPPED or UNPLUGGED
    at: float


CardEvent = CardInserted | CardRemoved | ReaderAdded | ReaderGone


@dataclass(frozen=True)
class ReaderState:
    name: str
    card: Insertion | None
    event_counter: int  # pcscd's insertion/removal count for this reader


@dataclass(frozen=True)
class MonitorState:
    """What the monitor knows now. ``version`` grows with every change."""

    running: bool
    connected: bool  # the monitor holds a working context with pcscd
    readers: tuple[ReaderState, ...]
    error: str | None  # why there is no reader to use, if so
    version: int

    def reader(self, name: str) -> ReaderState | None:
        return next((r for r in self.readers if r.name == name), None)


# --------------------------------------------------------------------------- the loop


class _ContextLost(Exception):
    """The PC/SC context is dead (pcscd stopped or restarted)."""


@dataclass
class _Watched:
    state: int = scard.SCARD_STATE_UNAWARE  # last dwEventState, fed back (without CHANGED)
    card: Insertion | None = None
    seen: bool = False  # its state is known since it was (re)listed


@dataclass
class _Shared:
    connected: bool = False
    readers: dict[str, _Watched] = field(default_factory=dict)
    error: str | None = None
    version: int = 0


class CardMonitor:
    """Watch the readers whose name contains ``reader_substring`` (all when None).

    ``start()`` returns once the first round is known (or pcscd was found missing),
    so "already present at start-up" means present when ``start()`` returns.
    ``events`` keeps at most ``max_events`` items: a consumer that does not read
    loses the oldest, and the monitor never blocks on it.
    """

    def __init__(
        self,
        reader_substring: str | None = None,
        *,
        report_present: bool = False,
        retry_interval: float = 0.5,
        poll_interval: float = 2.0,
        max_events: int = 1000,
        api: ScardApi | None = None,
    ) -> None:
        if retry_interval <= 0 or poll_interval <= 0:
            raise ValueError("the intervals must be positive")
        self.reader_substring = reader_substring
        self.report_present = report_present
        self.retry_interval = retry_interval
        self.poll_ms = max(1, int(poll_interval * 1000))
        self.events: queue.Queue[CardEvent] = queue.Queue(maxsize=max_events)
        self._api: ScardApi = api if api is not None else scard
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._shared = _Shared()
        self._hcontext: int | None = None
        self._stopping = threading.Event()
        self._first_round = threading.Event()
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        # The card last seen in each reader, kept while the reader or pcscd is away.
        self._remembered: dict[str, Insertion | None] = {}

    def __repr__(self) -> str:
        return f"CardMonitor(reader_substring={self.reader_substring!r})"

    # ---------------------------------------------------------------- public

    def start(self, wait: float = 5.0) -> CardMonitor:
        """Start the thread; return after its first round (at most ``wait`` s)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stopping.clear()
        self._first_round.clear()
        self._thread = threading.Thread(target=self._run, name="card-monitor", daemon=True)
        self._thread.start()
        self._first_round.wait(wait)
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread: cancel its wait, join it; it releases its context.

        Returns whether the thread ended within ``timeout`` seconds.
        """
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return True
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            with self._lock:
                if self._hcontext is not None:
                    # A cancel that arrives between two calls is lost: repeat it.
                    self._api.SCardCancel(self._hcontext)
            thread.join(0.05)
        if thread.is_alive():
            log.warning("the card monitor did not stop within %.1f s", timeout)
            return False
        self._thread = None
        with self._changed:
            self._shared.connected = False
            self._shared.readers.clear()
            self._bump()
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> MonitorState:
        with self._lock:
            return self._state_locked()

    def wait_changed(self, version: int, timeout: float) -> MonitorState:
        """Wait up to ``timeout`` s for a state newer than ``version``; return the state."""
        with self._changed:
            self._changed.wait_for(lambda: self._shared.version != version, max(0.0, timeout))
            return self._state_locked()

    def __enter__(self) -> CardMonitor:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- state

    def _state_locked(self) -> MonitorState:
        s = self._shared
        readers = tuple(
            ReaderState(name, w.card, (w.state >> 16) & 0xFFFF)
            for name, w in sorted(s.readers.items())
        )
        error = s.error
        if error is None and s.connected and not readers:
            error = self._no_reader_message()
        return MonitorState(self.running, s.connected, readers, error, s.version)

    def _bump(self) -> None:
        self._shared.version += 1
        self._changed.notify_all()

    def _emit(self, event: CardEvent) -> None:
        log.info("%s", event)
        while True:
            try:
                self.events.put_nowait(event)
                return
            except queue.Full:
                try:
                    self.events.get_nowait()  # drop the oldest
                except queue.Empty:
                    pass

    def _no_reader_message(self) -> str:
        if self.reader_substring is None:
            return "no card reader found: plug one in"
        return f"no card reader found matching {self.reader_substring!r}: plug it in"

    # ---------------------------------------------------------------- thread

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._session()
            except Exception as exc:  # noqa: BLE001 - the thread must not die for good
                log.exception("the card monitor failed; starting over")
                self._set_error(f"the card monitor failed ({exc}): try again in a moment")
            finally:
                self._first_round.set()
            self._stopping.wait(self.retry_interval)

    def _set_error(self, message: str | None) -> None:
        with self._changed:
            if self._shared.error != message:
                self._shared.error = message
                self._bump()

    def _session(self) -> None:
        """One PC/SC context: establish, watch until stopped or lost, release."""
        hresult, hcontext = self._api.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            self._set_error(str(translate(hresult, "connecting to pcscd")))
            return
        with self._lock:
            self._hcontext = int(hcontext)
        try:
            with self._changed:
                self._shared.connected = True
                self._shared.error = None
                self._bump()
            self._watch(int(hcontext))
        except _ContextLost as lost:
            log.warning("lost contact with pcscd (%s): reconnecting", lost)
            self._lose_readers(PCSCD_STOPPED)
            self._set_error(LOST_PCSCD)
        finally:
            with self._changed:
                self._hcontext = None
                self._shared.connected = False
                self._bump()
            self._api.SCardReleaseContext(int(hcontext))

    def _list(self, hcontext: int) -> list[str]:
        hresult, names = self._api.SCardListReaders(hcontext, [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        if hresult in _LOST:
            raise _ContextLost(scard.SCardGetErrorMessage(hresult))
        if hresult != scard.SCARD_S_SUCCESS:
            raise translate(hresult, "listing the card readers")
        return [
            str(n)
            for n in names
            if n != PNP_NOTIFICATION
            and (self.reader_substring is None or self.reader_substring in str(n))
        ]

    def _watch(self, hcontext: int) -> None:
        pnp_state = scard.SCARD_STATE_UNAWARE
        relist = True
        while not self._stopping.is_set():
            if relist:
                try:
                    self._sync_readers(self._list(hcontext))
                except _ContextLost:
                    raise
                except CardError as exc:
                    self._set_error(str(exc))
                relist = False
            with self._lock:
                states = [(name, w.state) for name, w in sorted(self._shared.readers.items())]
            watching = bool(states)
            if not watching:
                self._first_round.set()  # nothing to look at: the state is known
            states.append((PNP_NOTIFICATION, pnp_state))
            hresult, events = self._api.SCardGetStatusChange(hcontext, self.poll_ms, states)
            if hresult in (scard.SCARD_E_TIMEOUT, scard.SCARD_E_CANCELLED):
                self._first_round.set()
                continue
            if hresult in _LOST:
                raise _ContextLost(scard.SCardGetErrorMessage(hresult))
            if hresult != scard.SCARD_S_SUCCESS:
                if hresult not in _RELIST:
                    self._set_error(str(translate(hresult, "watching the card readers")))
                relist = True
                if hresult not in _RELIST or not watching:
                    self._stopping.wait(self.retry_interval)  # no busy loop
                continue
            for name, state, atr in events:
                if name == PNP_NOTIFICATION:
                    relist = relist or bool(state & scard.SCARD_STATE_CHANGED)
                    pnp_state = state & ~scard.SCARD_STATE_CHANGED
                elif state & scard.SCARD_STATE_UNKNOWN:
                    relist = True  # the reader is gone: the new list says so
                else:
                    self._update(name, int(state), bytes(atr))
            self._first_round.set()
            if not watching and not relist:
                self._stopping.wait(self.retry_interval)  # a pcscd without PnP support

    # ---------------------------------------------------------------- diffs

    def _sync_readers(self, names: Iterable[str]) -> None:
        """Report readers that appeared or went since the last list."""
        now = time.monotonic()
        wanted = list(names)
        with self._changed:
            current = self._shared.readers
            gone = [n for n in current if n not in wanted]
            added = [n for n in wanted if n not in current]
            for name in gone:
                self._remembered[name] = current.pop(name).card
                self._emit(ReaderGone(name, UNPLUGGED, now))
            for name in added:
                current[name] = _Watched()
                self._emit(ReaderAdded(name, now))
            if gone or added or self._shared.error is not None:
                self._shared.error = None
                self._bump()

    def _lose_readers(self, reason: str) -> None:
        now = time.monotonic()
        with self._changed:
            for name, watched in sorted(self._shared.readers.items()):
                self._remembered[name] = watched.card
                self._emit(ReaderGone(name, reason, now))
            self._shared.readers.clear()
            self._bump()

    def _update(self, name: str, state: int, atr: bytes) -> None:
        """Fold one reader's new ``dwEventState`` into what we know; emit the changes."""
        now = time.monotonic()
        with self._changed:
            watched = self._shared.readers.get(name)
            if watched is None:
                return
            before, old_state = watched.card, watched.state
            watched.state = state & ~scard.SCARD_STATE_CHANGED
            present = bool(state & scard.SCARD_STATE_PRESENT)
            mute = bool(state & scard.SCARD_STATE_MUTE)
            if state & scard.SCARD_STATE_UNAVAILABLE and not present:
                return  # pcscd cannot tell right now; keep what we know
            events: list[CardEvent] = []
            if not watched.seen:
                watched.seen = True
                watched.card = self._first_sight(name, present, mute, atr, now, events)
            elif not present:
                watched.card = None
                if before is not None:
                    events.append(CardRemoved(name, before, now))
            elif before is None or (old_state ^ state) >> 16 & 0xFFFF:
                if before is not None:  # out and in again between two rounds
                    events.append(CardRemoved(name, before, now))
                watched.card = self._new(name, atr, True, mute, now)
                events.append(CardInserted(name, atr, watched.card, now))
            elif before.mute != mute or before.atr != atr:
                watched.card = replace(before, atr=atr, mute=mute)  # same insertion, powered
            for event in events:
                self._emit(event)
            self._remembered[name] = watched.card
            if watched.card is not before or (old_state ^ state) >> 16 & 0xFFFF:
                self._bump()

    def _first_sight(
        self,
        name: str,
        present: bool,
        mute: bool,
        atr: bytes,
        now: float,
        events: list[CardEvent],
    ) -> Insertion | None:
        """A reader's first round in this context: start-up, or back after a gap."""
        known = name in self._remembered
        remembered = self._remembered.get(name)
        if not present:
            if remembered is not None:
                events.append(CardRemoved(name, remembered, now))  # left during the gap
            return None
        if remembered is not None and remembered.atr == atr and not remembered.mute:
            return remembered  # presumed the same card: nobody saw it leave
        if known:  # the reader was empty, or held another card, before the gap
            card = self._new(name, atr, True, mute, now)
            if remembered is not None:
                events.append(CardRemoved(name, remembered, now))
            events.append(CardInserted(name, atr, card, now))
            return card
        card = self._new(name, atr, self.report_present, mute, now)
        if self.report_present:
            events.append(CardInserted(name, atr, card, now))
        return card

    def _new(self, name: str, atr: bytes, seen: bool, mute: bool, now: float) -> Insertion:
        return Insertion(next(self._ids), name, atr, seen, mute, now)


def describe(event: CardEvent) -> str:
    """One line for a person (``unioncard card watch``)."""
    if isinstance(event, CardInserted):
        atr = event.atr.hex().upper() or "none (the card does not answer)"
        return f"card inserted in {event.reader} (ATR {atr})"
    if isinstance(event, CardRemoved):
        return f"card removed from {event.reader}"
    if isinstance(event, ReaderAdded):
        return f"reader {event.reader} is ready"
    return f"reader {event.reader} is gone: {event.reason}"


def as_json(event: CardEvent) -> dict[str, Any]:
    """The event as a JSON object (``unioncard card watch --json``)."""
    kind = {
        CardInserted: "card_inserted",
        CardRemoved: "card_removed",
        ReaderAdded: "reader_added",
        ReaderGone: "reader_gone",
    }[type(event)]
    body: dict[str, Any] = {"event": kind, "reader": event.reader}
    if isinstance(event, CardInserted):
        body["atr"] = event.atr.hex().upper()
        body["insertion"] = event.insertion.id
    if isinstance(event, CardRemoved):
        body["insertion"] = event.insertion.id
    if isinstance(event, ReaderGone):
        body["reason"] = event.reason
    return body


def state_as_json(state: MonitorState) -> dict[str, Any]:
    return {
        "connected": state.connected,
        "readers": [{"name": r.name, "card_present": r.card is not None} for r in state.readers],
        "error": state.error,
    }
