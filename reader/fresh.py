"""The daemon's card reader: each card insertion is read for at most one sale.

A cashier's checkout must not quietly read the card the last customer left in the
reader. :class:`FreshCardReader` keeps a :class:`reader.monitor.CardMonitor`
running and reads only an insertion it saw happen and has not read before:

- A card inserted after the last sale, even before the cashier pressed the button
  (customers insert early in a busy shop), is read at once.
- The card of the last sale, still in a reader, is refused with
  :class:`reader.errors.StaleCardError` ("take it out and insert again") when no new
  card turns up within ``stale_grace`` seconds (pcscd may not have seen a quick swap
  yet). A forgotten card is the cashier's to hand back, so this holds even when
  another reader (a contactless pad) is free.
- A card already in the reader when the monitor started is refused the same way
  unless ``accept_present`` is set: nobody saw it go in, so it may be the last
  customer's from before a restart.
- An insertion is used up when its read succeeds. A failed read (a blocked card, a
  bad contact) leaves it unused, so the cashier can try again with the same card.
- Before reading, the connection's pcscd event counter is compared with the one the
  monitor saw for the insertion: a card swapped in between is never read under the
  old insertion's name.

The object has the ``terminal.service.CardReaderFn`` shape:
``reader(timeout=..., tokenize=...) -> CardIdentity``; :meth:`status` is what the
cashier page shows. It raises only :class:`reader.errors.CardError` subclasses.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from reader.emv import read_identity
from reader.errors import CardError, NoCardError, NoReaderError, StaleCardError
from reader.identity import CardIdentity, Tokenize
from reader.monitor import CardMonitor, MonitorState, ReaderState
from reader.pcsc import NOT_RUNNING, connect_reader

LAST_SALE = "the card from the last sale is still in the reader: take it out and insert again"
EARLY = (
    "the card in the reader was put in before the terminal was ready "
    "(it may be the last customer's): take it out and insert again"
)


class FreshCardReader:
    """Read only cards inserted since they were last read (see the module docstring).

    ``reader_substring`` picks the readers (all when None). ``clock`` is the
    terminal's clock (its local date is the Transaction Date the card is given).
    The monitor starts on
    :meth:`start` (the daemon calls it at start-up) or else on the first read.
    """

    def __init__(
        self,
        reader_substring: str | None = None,
        *,
        clock: Callable[[], datetime.datetime],
        accept_present: bool = False,
        accepted_aids: Sequence[bytes] | None = None,
        stale_grace: float = 1.0,
        monitor: CardMonitor | None = None,
    ) -> None:
        self.reader_substring = reader_substring
        self.clock = clock
        self.accepted_aids = accepted_aids
        self.stale_grace = stale_grace
        self.monitor = monitor or CardMonitor(reader_substring, report_present=accept_present)
        self._lock = threading.Lock()  # guards the fields below
        self._busy = threading.Lock()  # one read at a time
        self._used: dict[str, int] = {}  # reader -> the insertion id its last sale read
        self._last_error: str | None = None
        self._waiting = False

    def __repr__(self) -> str:
        return f"FreshCardReader(reader_substring={self.reader_substring!r})"

    def start(self) -> FreshCardReader:
        self.monitor.start()
        return self

    def close(self) -> None:
        self.monitor.stop()

    def __enter__(self) -> FreshCardReader:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- reading

    def __call__(self, *, timeout: float, tokenize: Tokenize) -> CardIdentity:
        """Wait up to ``timeout`` s for a card not read before; read and use it up.

        Raises :class:`NoReaderError` at once when pcscd or the reader is missing,
        :class:`StaleCardError` when only already-read (or early) cards are in the
        readers, :class:`NoCardError` when no card comes in time, and the card's own
        errors from :func:`reader.emv.read_identity`.
        """
        if timeout < 0:
            raise ValueError("the timeout must not be negative")
        with self._busy:
            if not self.monitor.running:
                self.monitor.start()
            self._set(waiting=True)
            error: str | None = "the read did not finish"
            try:
                identity = self._wait_and_read(timeout, tokenize)
                error = None
                return identity
            except CardError as exc:
                error = str(exc)
                raise
            finally:
                self._set(waiting=False, error=error)

    def _wait_and_read(self, timeout: float, tokenize: Tokenize) -> CardIdentity:
        deadline = time.monotonic() + timeout
        stale_since: float | None = None
        state = self.monitor.snapshot()
        while True:
            _check_usable(state)
            fresh = self._fresh(state)
            if fresh is not None:
                identity = self._read(fresh, tokenize)
                if identity is not None:
                    return identity
                # another card than the one announced: let the monitor catch up
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise NoCardError(f"no card presented within {timeout:g} s")
                state = self.monitor.wait_changed(state.version, min(0.5, remaining))
                continue
            now = time.monotonic()
            stale = self._stale_message(state)
            if stale is None:
                stale_since, until = None, deadline
            else:  # give pcscd a moment to report a quick swap, then say so
                stale_since = now if stale_since is None else stale_since
                until = min(deadline, stale_since + self.stale_grace)
            if now >= until:
                if stale is not None:
                    raise StaleCardError(stale)
                raise NoCardError(f"no card presented within {timeout:g} s")
            state = self.monitor.wait_changed(state.version, until - now)

    def _fresh(self, state: MonitorState) -> ReaderState | None:
        """The reader holding the earliest insertion that may be read, if any."""
        with self._lock:
            candidates = [
                r
                for r in state.readers
                if r.card is not None
                and r.card.seen_inserted
                and self._used.get(r.name) != r.card.id
            ]
        return min(candidates, key=lambda r: r.card.at if r.card else 0.0, default=None)

    def _stale_message(self, state: MonitorState) -> str | None:
        with self._lock:
            cards = [r for r in state.readers if r.card is not None]
            if any(self._used.get(r.name) == r.card.id for r in cards if r.card):
                return LAST_SALE
        return EARLY if cards else None

    def _read(self, reader: ReaderState, tokenize: Tokenize) -> CardIdentity | None:
        """Read the card of ``reader`` if it is still the insertion the monitor saw."""
        card = reader.card
        if card is None:  # pragma: no cover - _fresh only returns readers with a card
            return None
        with connect_reader(reader.name) as connection:
            if connection.event_counter != reader.event_counter:
                return None
            connection.begin_transaction()
            identity = read_identity(
                connection.transmit,
                tokenize=tokenize,
                accepted_aids=self.accepted_aids,
                now=self.clock().astimezone().date(),
            )
        with self._lock:
            self._used[reader.name] = card.id
        return identity

    # ---------------------------------------------------------------- status

    def _set(self, *, waiting: bool, error: str | None = None) -> None:
        with self._lock:
            self._waiting = waiting
            if not waiting:
                self._last_error = error

    def status(self) -> dict[str, Any]:
        """The reader as the cashier page shows it (JSON-ready).

        ``ready_for_new_card`` is true when a checkout would read a card inserted
        now (or one already waiting); ``message`` says what to do otherwise, and
        ``state`` is its stable code: ``ready``, ``new_card``, ``stale_card`` (a card
        already read, or there before the watch began: take it out), ``no_reader``,
        ``no_pcscd``, ``monitor_stopped``.
        """
        state = self.monitor.snapshot()
        fresh = self._fresh(state)
        stale = self._stale_message(state)
        with self._lock:
            waiting, last_error = self._waiting, self._last_error
            used = dict(self._used)
        usable = state.running and state.connected and bool(state.readers)
        ready = usable and (fresh is not None or stale is None)
        if not state.running:
            code, message = "monitor_stopped", "the card monitor is not running"
        elif not usable:
            code = "no_reader" if state.connected else "no_pcscd"
            message = state.error or NOT_RUNNING
        elif fresh is not None:
            code, message = "new_card", "a new card is in the reader"
        elif stale is not None:
            code, message = "stale_card", stale
        else:
            code, message = "ready", "ready: insert or tap the card"
        return {
            "state": code,
            "reader": state.readers[0].name if state.readers else None,
            "readers": [
                {
                    "name": r.name,
                    "card_present": r.card is not None,
                    "card": _card_kind(r, used),
                }
                for r in state.readers
            ],
            "pcscd_connected": state.connected,
            "card_present": any(r.card is not None for r in state.readers),
            "ready_for_new_card": ready,
            "waiting_for_card": waiting,
            "message": message,
            "last_error": state.error if not usable else last_error,
        }


def _check_usable(state: MonitorState) -> None:
    if not state.connected:
        raise NoReaderError(state.error or NOT_RUNNING)
    if not state.readers:
        raise NoReaderError(state.error or "no card reader found: plug one in")


def _card_kind(reader: ReaderState, used: dict[str, int]) -> str | None:
    if reader.card is None:
        return None
    if used.get(reader.name) == reader.card.id:
        return "read for the last sale"
    if not reader.card.seen_inserted:
        return "already in the reader at start-up"
    return "new"
