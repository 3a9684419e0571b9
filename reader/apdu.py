"""Command APDUs, status words and the T=0 transport rules.

Builders follow ISO/IEC 7816-4 and EMV 4.3 Book 3, section 6 (short APDUs only).
The status-word table is data: :data:`STATUS_WORDS` maps a status word to the
:mod:`reader.errors` class it means and a message a cashier can act on.
:func:`exchange` is the transport layer of EMV 4.3 Book 1, 9.3.1 (T=0 case 2 and 4
commands: ``61xx`` -> GET RESPONSE, ``6Cxx`` -> resend with ``Le = xx``); it works
over any ``transmit(apdu) -> (data, sw)`` callable and does no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable

from reader.errors import (
    CardBlockedError,
    CardError,
    MalformedResponseError,
    UnsupportedCardError,
)

Transmit = Callable[[bytes], tuple[bytes, int]]
"""Send one command APDU; return the response data and the status word as an int."""

SW_OK = 0x9000

# EMV 4.3 Book 3, 6.5 (commands) and Annex (status words); ISO/IEC 7816-4, 5.1.3.
STATUS_WORDS: dict[int, tuple[type[CardError], str]] = {
    0x6283: (CardBlockedError, "the card's application is blocked"),
    0x6581: (MalformedResponseError, "the card reports a memory failure"),
    0x6700: (MalformedResponseError, "the card rejected the command length"),
    0x6983: (CardBlockedError, "the card is blocked"),
    0x6984: (CardBlockedError, "the card's data is invalidated"),
    0x6985: (UnsupportedCardError, "the card refused the transaction (conditions of use)"),
    0x6A81: (CardBlockedError, "the card is blocked or does not support selection"),
    0x6A82: (UnsupportedCardError, "application not found"),
    0x6A83: (MalformedResponseError, "the card is missing a record it announced"),
    0x6A86: (MalformedResponseError, "the card rejected the command parameters"),
    0x6A88: (MalformedResponseError, "the card is missing data it announced"),
    0x6D00: (UnsupportedCardError, "the card does not know the command"),
    0x6E00: (UnsupportedCardError, "the card does not know the command class"),
    0x6F00: (MalformedResponseError, "the card reported an internal error"),
}

# Fallbacks by SW1 when the exact status word is not in the table.
STATUS_CLASSES: dict[int, tuple[type[CardError], str]] = {
    0x62: (MalformedResponseError, "the card answered with a warning"),
    0x63: (MalformedResponseError, "the card answered with a warning"),
    0x64: (MalformedResponseError, "the card reported an execution error"),
    0x65: (MalformedResponseError, "the card reported a memory error"),
    0x67: (MalformedResponseError, "the card rejected the command length"),
    0x68: (UnsupportedCardError, "the card does not support the command"),
    0x69: (UnsupportedCardError, "the card refused the command"),
    0x6A: (MalformedResponseError, "the card rejected the command parameters"),
    0x6B: (MalformedResponseError, "the card rejected the command parameters"),
    0x6D: (UnsupportedCardError, "the card does not know the command"),
    0x6E: (UnsupportedCardError, "the card does not know the command class"),
    0x6F: (MalformedResponseError, "the card reported an internal error"),
}

MAX_GET_RESPONSE = 32  # GET RESPONSE rounds for one command (32 x 256 bytes is plenty)
MAX_RESPONSE_BYTES = 8192


def error_for(sw: int, doing: str = "") -> CardError:
    """The :class:`CardError` a non-9000 status word means; ``doing`` names the step."""
    cls, message = STATUS_WORDS.get(sw) or STATUS_CLASSES.get(
        sw >> 8, (MalformedResponseError, "the card answered with an unknown status")
    )
    where = f" ({doing})" if doing else ""
    return cls(f"{message}{where}: status {sw:04X}")


def check(sw: int, doing: str = "") -> None:
    """Raise :func:`error_for` unless ``sw`` is ``9000``."""
    if sw != SW_OK:
        raise error_for(sw, doing)


def _short(name: str, value: int, limit: int = 0xFF) -> None:
    if not 0 <= value <= limit:
        raise ValueError(f"{name} must be 0..{limit}, got {value}")


def select_by_name(name: bytes, *, next_occurrence: bool = False) -> bytes:
    """SELECT by DF name (EMV 4.3 Book 1, 11.3; ISO/IEC 7816-4, 7.1.1).

    ``00 A4 04 00|02 Lc name 00``: P1 ``04`` selects by name, P2 ``00`` the first
    or only occurrence, ``02`` the next one (partial name selection, Book 1 12.3.3).
    """
    if not 1 <= len(name) <= 16:
        raise ValueError("a DF name is 1 to 16 bytes")
    p2 = 0x02 if next_occurrence else 0x00
    return bytes([0x00, 0xA4, 0x04, p2, len(name)]) + bytes(name) + b"\x00"


def read_record(record: int, sfi: int) -> bytes:
    """READ RECORD (EMV 4.3 Book 3, 6.5.11): ``00 B2 record (SFI<<3)|4 00``."""
    _short("record", record)
    if not 1 <= sfi <= 30:
        raise ValueError(f"an SFI is 1..30, got {sfi}")
    if record == 0:
        raise ValueError("record numbers start at 1")
    return bytes([0x00, 0xB2, record, (sfi << 3) | 0x04, 0x00])


def get_processing_options(pdol_data: bytes) -> bytes:
    """GET PROCESSING OPTIONS (EMV 4.3 Book 3, 6.5.8).

    ``80 A8 00 00 Lc 83 L pdol-data 00``: the data field is the Command Template
    ``83`` holding the values the card's PDOL asked for (empty when it has none).
    """
    if len(pdol_data) > 0xFF - 2:
        raise ValueError("PDOL data is at most 253 bytes")
    body = b"\x83" + bytes([len(pdol_data)]) + bytes(pdol_data)
    return bytes([0x80, 0xA8, 0x00, 0x00, len(body)]) + body + b"\x00"


def get_data(tag: int) -> bytes:
    """GET DATA (EMV 4.3 Book 3, 6.5.7): ``80 CA P1 P2 00``, P1 P2 the two-byte tag
    (``9F36`` the Application Transaction Counter, ``9F13`` the last online ATC)."""
    if not 0x9F00 <= tag <= 0x9FFF:
        raise ValueError(f"GET DATA reads a 9Fxx tag, got {tag:X}")
    return bytes([0x80, 0xCA, tag >> 8, tag & 0xFF, 0x00])


def get_response(le: int) -> bytes:
    """GET RESPONSE (EMV 4.3 Book 1, 9.3.1.3): ``00 C0 00 00 Le`` (``00`` = 256)."""
    _short("Le", le)
    return bytes([0x00, 0xC0, 0x00, 0x00, le])


def with_le(apdu: bytes, le: int) -> bytes:
    """``apdu`` with its Le byte set to ``le`` (added for a case 1 or 3 command).

    ISO/IEC 7816-3, 12.1.3 (short APDU cases): 4 bytes = case 1; 5 = case 2;
    ``5 + Lc`` = case 3; ``6 + Lc`` = case 4.
    """
    _short("Le", le)
    if len(apdu) < 4:
        raise ValueError("an APDU has at least four header bytes")
    if len(apdu) == 4:
        return bytes(apdu) + bytes([le])
    if len(apdu) == 5:
        return bytes(apdu[:4]) + bytes([le])
    lc = apdu[4]
    if len(apdu) == 5 + lc:
        return bytes(apdu) + bytes([le])
    if len(apdu) == 6 + lc:
        return bytes(apdu[:-1]) + bytes([le])
    raise ValueError("the APDU's length does not match its Lc")


def exchange(transmit: Transmit, apdu: bytes) -> tuple[bytes, int]:
    """Send ``apdu`` and apply the T=0 response rules; return ``(data, sw)``.

    EMV 4.3 Book 1, 9.3.1.3: on ``61xx`` the terminal sends GET RESPONSE with
    ``Le = xx`` and concatenates the data, repeating while the card answers ``61xx``;
    on ``6Cxx`` it resends the same command with ``Le = xx`` (once). Readers that
    already do this (T=1, most CCID readers) simply never show these status words.
    """
    data, sw = transmit(apdu)
    if sw >> 8 not in (0x61, 0x6C):  # the usual case: the answer is complete
        return data, sw
    if sw >> 8 == 0x6C:
        data, sw = transmit(with_le(apdu, sw & 0xFF))
    collected = bytearray(data)
    rounds = 0
    while sw >> 8 == 0x61:
        rounds += 1
        if rounds > MAX_GET_RESPONSE or len(collected) > MAX_RESPONSE_BYTES:
            raise MalformedResponseError("the card keeps announcing more response data")
        data, sw = transmit(get_response(sw & 0xFF))
        if sw >> 8 == 0x6C:
            data, sw = transmit(get_response(sw & 0xFF))
        collected += data
    return bytes(collected), sw
