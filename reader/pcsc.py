"""The PC/SC adapter: pcscd through pyscard's low-level ``smartcard.scard`` API.

This is the only module of the reader that imports pyscard. Every failure of
pcscd, the reader or the card becomes a :mod:`reader.errors` class here, so
callers see nothing but :class:`reader.errors.CardError`. The EMV logic itself is
the pure :func:`reader.emv.read_identity`, given :meth:`PcscConnection.transmit`.

Waiting for a card uses ``SCardGetStatusChange`` with a deadline (PC/SC Part 5,
3.1.8); pyscard's ``CardRequest`` (it spins forever on an unknown reader in 2.3.1)
and ``CardMonitor`` (its thread dies for good when pcscd goes away) are deliberately
not used: the daemon's long-lived watch is :class:`reader.monitor.CardMonitor`.
Contexts and card handles are always released.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator, Sequence
from types import TracebackType

from smartcard import scard

from reader.emv import read_identity
from reader.errors import (
    CardError,
    CardRemovedError,
    MalformedResponseError,
    NoCardError,
    NoReaderError,
    UnsupportedCardError,
)
from reader.identity import CardIdentity, Tokenize

NOT_RUNNING = "pcscd is not running: start it with `systemctl start pcscd`"

# Which pcsc-lite return codes mean what, for a cashier (pcsclite.h).
_NO_SERVICE = {scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED}
# pcsc-lite 1.9 answers a call in progress with F_COMM_ERROR when pcscd stops under it,
# and a context of a pcscd that has since restarted with INVALID_HANDLE.
_LOST_SERVICE = {scard.SCARD_F_COMM_ERROR, scard.SCARD_E_INVALID_HANDLE}
_NO_READER = {
    scard.SCARD_E_NO_READERS_AVAILABLE,
    scard.SCARD_E_UNKNOWN_READER,
    scard.SCARD_E_READER_UNAVAILABLE,
}
_REMOVED = {
    scard.SCARD_W_REMOVED_CARD,
    scard.SCARD_E_NO_SMARTCARD,
    scard.SCARD_W_RESET_CARD,
    scard.SCARD_E_NOT_TRANSACTED,
    scard.SCARD_W_UNPOWERED_CARD,
}
_MUTE = {scard.SCARD_W_UNRESPONSIVE_CARD, scard.SCARD_E_PROTO_MISMATCH}


def translate(hresult: int, doing: str) -> CardError:
    """Translate a pcsc-lite return code into the matching :class:`CardError`."""
    reason = scard.SCardGetErrorMessage(hresult)
    if hresult in _NO_SERVICE:
        return NoReaderError(NOT_RUNNING)
    if hresult in _LOST_SERVICE:
        return NoReaderError(
            f"lost contact with pcscd while {doing}: check it runs (`systemctl status pcscd`)"
        )
    if hresult in _NO_READER:
        return NoReaderError(f"the card reader went away while {doing}: plug it in again")
    if hresult in _REMOVED:
        return CardRemovedError(
            f"the card was taken away while {doing}: present it again and leave it in place"
        )
    if hresult in _MUTE:
        return UnsupportedCardError(
            f"the card does not answer ({reason}): insert it chip first, or try another card"
        )
    if hresult == scard.SCARD_E_SHARING_VIOLATION:
        return NoReaderError(f"another program holds the card reader ({reason}): close it")
    return CardError(f"the card reader failed while {doing}: {reason} ({hresult & 0xFFFFFFFF:08X})")


def establish_context() -> int:
    try:
        hresult, hcontext = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    except scard.error as exc:  # pragma: no cover - pyscard's SWIG layer
        raise NoReaderError(NOT_RUNNING) from exc
    if hresult != scard.SCARD_S_SUCCESS:
        raise translate(hresult, "connecting to pcscd")
    return int(hcontext)


def release_context(hcontext: int) -> None:
    try:
        scard.SCardReleaseContext(hcontext)
    except scard.error:  # pragma: no cover
        pass


def _readers(hcontext: int) -> list[str]:
    hresult, readers = scard.SCardListReaders(hcontext, [])
    if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
        return []
    if hresult != scard.SCARD_S_SUCCESS:
        raise translate(hresult, "listing the card readers")
    return [str(r) for r in readers]


def _matching(hcontext: int, reader_substring: str | None) -> list[str]:
    readers = _readers(hcontext)
    if not readers:
        raise NoReaderError("no card reader found: plug one in")
    if reader_substring is None:
        return readers
    chosen = [r for r in readers if reader_substring in r]
    if not chosen:
        raise NoReaderError(
            f"no card reader found matching {reader_substring!r}; readers: {', '.join(readers)}"
        )
    return chosen


def list_readers() -> list[str]:
    """The names of the readers pcscd knows (PC/SC Part 5, ``SCardListReaders``).

    Raises :class:`NoReaderError` when pcscd is not running.
    """
    hcontext = establish_context()
    try:
        return _readers(hcontext)
    finally:
        release_context(hcontext)


ReaderEvent = tuple[str, int, list[int]]  # reader name, event state, ATR


def _watch(
    hcontext: int, readers: list[str], deadline: float, doing: str
) -> Iterator[list[ReaderEvent]]:
    """Yield the readers' states now and after every change until ``deadline``.

    ``SCardGetStatusChange`` (PC/SC Part 5, 3.1.8) blocks until a state differs
    from the one passed in, or the timeout; the event state of one round becomes
    the current state of the next (without ``SCARD_STATE_CHANGED``).
    """
    states = [(r, scard.SCARD_STATE_UNAWARE) for r in readers]
    wait_ms = 0
    while True:
        hresult, events = scard.SCardGetStatusChange(hcontext, wait_ms, states)
        if hresult == scard.SCARD_E_TIMEOUT:
            return
        if hresult != scard.SCARD_S_SUCCESS:
            raise translate(hresult, doing)
        yield events
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        states = [(r, s & ~scard.SCARD_STATE_CHANGED) for r, s, _ in events]
        wait_ms = max(1, int(remaining * 1000))


class PcscConnection:
    """An open card: a PC/SC context, a card handle and its protocol.

    Use as a context manager, or call :meth:`close`. :meth:`transmit` has the
    ``reader.apdu.Transmit`` shape.
    """

    def __init__(
        self,
        hcontext: int,
        hcard: int,
        protocol: int,
        reader: str,
        atr: bytes,
        event_counter: int | None = None,
    ):
        self._hcontext: int | None = hcontext
        self._hcard: int | None = hcard
        self.protocol = protocol
        self.reader = reader
        self.atr = atr
        # pcscd's count of card insertions and removals in this reader when we
        # connected (the upper 16 bits of dwEventState): names this insertion.
        self.event_counter = event_counter

    def __repr__(self) -> str:
        return f"PcscConnection(reader={self.reader!r}, atr={self.atr.hex().upper()})"

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one command APDU (``SCardTransmit``); return ``(data, sw)``."""
        if self._hcard is None:
            raise CardRemovedError("the card connection is closed")
        hresult, response = scard.SCardTransmit(self._hcard, self.protocol, list(apdu))
        if hresult != scard.SCARD_S_SUCCESS:
            raise translate(hresult, "reading it")
        if len(response) < 2:
            # vpcd (and some readers) report success with no bytes when the card
            # went away mid-command; tell that apart from a card answering nonsense.
            if self._card_left(within=1.0):
                raise CardRemovedError("the card was taken away during the read: present it again")
            raise MalformedResponseError("the card answered without a status word")
        return bytes(response[:-2]), (response[-2] << 8) | response[-1]

    def _card_left(self, within: float) -> bool:
        """Whether the reader reports no card (or another one) within ``within`` s."""
        if self._hcontext is None:
            return True
        deadline = time.monotonic() + within
        try:
            for events in _watch(self._hcontext, [self.reader], deadline, "checking the card"):
                _reader, state, atr = events[0]
                if not state & scard.SCARD_STATE_PRESENT or bytes(atr) != self.atr:
                    return True
        except CardError:
            return True
        return False

    def begin_transaction(self) -> None:
        """``SCardBeginTransaction``: keep other PC/SC clients out until :meth:`close`."""
        if self._hcard is None:
            raise CardRemovedError("the card connection is closed")
        hresult = scard.SCardBeginTransaction(self._hcard)
        if hresult != scard.SCARD_S_SUCCESS:
            raise translate(hresult, "starting to read it")

    def close(self) -> None:
        """End any transaction, disconnect (leaving the card as it is), release."""
        if self._hcard is not None:
            try:
                scard.SCardEndTransaction(self._hcard, scard.SCARD_LEAVE_CARD)
                scard.SCardDisconnect(self._hcard, scard.SCARD_LEAVE_CARD)
            except scard.error:  # pragma: no cover
                pass
            self._hcard = None
        if self._hcontext is not None:
            release_context(self._hcontext)
            self._hcontext = None

    def __enter__(self) -> PcscConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _connect(hcontext: int, reader: str) -> tuple[int, int] | None:
    """``SCardConnect`` (shared, T=0 or T=1); ``None`` if the card left meanwhile."""
    hresult, hcard, protocol = scard.SCardConnect(
        hcontext,
        reader,
        scard.SCARD_SHARE_SHARED,
        scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
    )
    if hresult in (scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_REMOVED_CARD):
        return None
    if hresult != scard.SCARD_S_SUCCESS:
        raise translate(hresult, "connecting to it")
    return int(hcard), int(protocol)


def wait_for_card(reader_substring: str | None, timeout: float) -> PcscConnection:
    """Wait up to ``timeout`` seconds for a card in a matching reader; connect to it.

    A card already in the reader counts. Raises :class:`NoReaderError` at once
    when pcscd is down or no reader name contains ``reader_substring``, and
    :class:`NoCardError` when the time runs out.
    """
    if timeout < 0:
        raise ValueError("the timeout must not be negative")
    deadline = time.monotonic() + timeout
    hcontext = establish_context()
    handed_over = False
    mute = False
    try:
        readers = _matching(hcontext, reader_substring)
        for events in _watch(hcontext, readers, deadline, "waiting for a card"):
            for reader, state, atr in events:
                if state & scard.SCARD_STATE_MUTE:
                    mute = True  # present but no ATR: maybe still sliding in
                elif state & scard.SCARD_STATE_PRESENT:
                    connected = _connect(hcontext, reader)
                    if connected is not None:
                        hcard, protocol = connected
                        connection = PcscConnection(hcontext, hcard, protocol, reader, bytes(atr))
                        handed_over = True  # the connection owns the context now
                        return connection
        if mute:
            raise UnsupportedCardError(
                "the card does not answer: insert it chip first, or try another card"
            )
        raise NoCardError(f"no card presented within {timeout:g} s")
    finally:
        if not handed_over:
            release_context(hcontext)


def connect_reader(reader: str) -> PcscConnection:
    """Connect now to the card in the reader named exactly ``reader``; do not wait.

    The connection's ``event_counter`` is read after connecting, so it names the
    insertion of the card this connection talks to (a card swapped afterwards makes
    the handle fail with ``SCARD_W_REMOVED_CARD``). Raises :class:`CardRemovedError`
    when the reader is empty, :class:`NoReaderError` when it is gone.
    """
    hcontext = establish_context()
    handed_over = False
    try:
        connected = _connect(hcontext, reader)
        if connected is None:
            raise CardRemovedError(
                "the card was taken away before it could be read: present it again"
            )
        hcard, protocol = connected
        connection = PcscConnection(hcontext, hcard, protocol, reader, b"")
        handed_over = True  # the connection owns the context now (and closes it on error)
        hresult, events = scard.SCardGetStatusChange(
            hcontext, 0, [(reader, scard.SCARD_STATE_UNAWARE)]
        )
        if hresult != scard.SCARD_S_SUCCESS:
            connection.close()
            raise translate(hresult, "looking at the card")
        _name, state, atr = events[0]
        connection.atr = bytes(atr)
        connection.event_counter = (state >> 16) & 0xFFFF
        return connection
    finally:
        if not handed_over:
            release_context(hcontext)


def wait_for_removal(reader_substring: str | None, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until no matching reader holds a card.

    Returns whether the readers are empty. Raises :class:`NoReaderError` like
    :func:`wait_for_card`.
    """
    deadline = time.monotonic() + timeout
    hcontext = establish_context()
    try:
        readers = _matching(hcontext, reader_substring)
        for events in _watch(hcontext, readers, deadline, "waiting for the card to go"):
            if not any(state & scard.SCARD_STATE_PRESENT for _, state, _ in events):
                return True
        return False
    finally:
        release_context(hcontext)


def read_card(
    reader_substring: str | None = None,
    timeout: float = 30.0,
    *,
    tokenize: Tokenize,
    today: datetime.date,
    accepted_aids: Sequence[bytes] | None = None,
) -> CardIdentity:
    """Wait for a card, read its identity (:func:`reader.emv.read_identity`), let go.

    ``today`` is the terminal's local date (the Transaction Date the card is given).
    Raises only :class:`reader.errors.CardError` subclasses for card and reader
    trouble.
    """
    with wait_for_card(reader_substring, timeout) as connection:
        connection.begin_transaction()
        return read_identity(
            connection.transmit,
            tokenize=tokenize,
            accepted_aids=accepted_aids,
            now=today,
        )
