"""The emulated card's APDU responder: a :class:`CardImage` answering commands.

:class:`EmulatedCard` answers command APDUs from a
:class:`reader.emulation.images.CardImage` (ISO/IEC 7816-4; EMV Book 3, 6), including
the T=0 ``61xx``/``6Cxx`` answers and a card pulled out mid-read. It is pure: no
sockets, threads or clock. Its :meth:`EmulatedCard.transmit` is the
``reader.apdu.Transmit`` interface, so tests can read a card without pcscd;
:class:`reader.emulation.vpcd.CardEmulator` connects one to vpcd.
"""

from __future__ import annotations

from reader import tlv
from reader.emulation.images import (
    SW_BLOCKED,
    SW_CLA,
    SW_CONDITIONS,
    SW_INS,
    SW_NO_RECORD,
    SW_NOT_FOUND,
    SW_OK,
    SW_REF_NOT_FOUND,
    SW_WRONG_LENGTH,
    Application,
    CardImage,
)
from reader.tlv import encode


class EmulatedCard:
    """Answers command APDUs from a :class:`CardImage` (ISO/IEC 7816-4; EMV Book 3, 6).

    ``respond`` returns the response APDU, or ``None`` when the card has been
    pulled out. ``log`` keeps every ``(command, response)`` pair, and
    ``pdol_data`` the data field of the last GET PROCESSING OPTIONS.
    """

    def __init__(self, image: CardImage) -> None:
        self.image = image
        self.log: list[tuple[bytes, bytes]] = []
        self.pdol_data: bytes | None = None
        self._current: Application | None = None
        self._pending = b""

    def reset(self) -> None:
        """Power on or warm reset: nothing selected, nothing pending."""
        self._current = None
        self._pending = b""

    def transmit(self, capdu: bytes) -> tuple[bytes, int]:
        """The ``reader.apdu.Transmit`` interface, for tests without pcscd."""
        rapdu = self.respond(capdu)
        if rapdu is None:
            raise ConnectionResetError("the emulated card was pulled out")
        return rapdu[:-2], int.from_bytes(rapdu[-2:], "big")

    def respond(self, capdu: bytes) -> bytes | None:
        if self.image.vanish_after is not None and len(self.log) >= self.image.vanish_after:
            return None
        data, sw = self._dispatch(bytes(capdu))
        rapdu = data + sw.to_bytes(2, "big")
        self.log.append((bytes(capdu), rapdu))
        return rapdu

    def _dispatch(self, capdu: bytes) -> tuple[bytes, int]:
        if len(capdu) < 4:
            return b"", SW_WRONG_LENGTH
        cla, ins, p1, p2 = capdu[:4]
        body = capdu[4:]
        if len(body) <= 1:
            data, le = b"", (body[0] if body else None)
        else:
            lc = body[0]
            data = body[1 : 1 + lc]
            if len(body) not in (1 + lc, 2 + lc):
                return b"", SW_WRONG_LENGTH
            le = body[1 + lc] if len(body) == 2 + lc else None
        if ins == 0xC0 and cla == 0x00:
            return self._get_response(le)
        self._pending = b""
        if ins == 0xA4 and cla == 0x00 and p1 == 0x04:
            return self._case4(*self._select(data, p2))
        if ins == 0xB2 and cla == 0x00:
            return self._case2(*self._read_record(p1, p2), le)
        if ins == 0xA8 and cla == 0x80:
            return self._case4(*self._gpo(data))
        if ins == 0xCA and cla == 0x80:
            return self._case2(*self._get_data((p1 << 8) | p2), le)
        if cla not in (0x00, 0x80):
            return b"", SW_CLA
        return b"", SW_INS

    def _select(self, name: bytes, p2: int) -> tuple[bytes, int]:
        """SELECT by name, exact or partial (EMV 4.3 Book 1, 12.3.3)."""
        matches = [a for a in self.image.applications if a.name.startswith(name) and name]
        if p2 == 0x02 and self._current in matches:
            matches = matches[matches.index(self._current) + 1 :]
        if not matches:
            return b"", SW_NOT_FOUND
        self._current = app = matches[0]
        if app.select_sw == SW_BLOCKED:
            return app.fci, SW_BLOCKED
        return (app.fci, SW_OK) if app.select_sw == SW_OK else (b"", app.select_sw)

    def _read_record(self, record: int, p2: int) -> tuple[bytes, int]:
        if p2 & 0x07 != 0x04 or self._current is None:
            return b"", SW_NO_RECORD if self._current else SW_CONDITIONS
        found = self._current.records.get((p2 >> 3, record))
        return (found, SW_OK) if found is not None else (b"", SW_NO_RECORD)

    def _gpo(self, data: bytes) -> tuple[bytes, int]:
        app = self._current
        if app is None or app.gpo is None:
            return b"", SW_CONDITIONS
        if len(data) < 2 or data[0] != 0x83 or data[1] != len(data) - 2:
            return b"", SW_WRONG_LENGTH
        if data[1] != app.pdol_length:
            return b"", SW_WRONG_LENGTH
        self.pdol_data = data[2:]
        self.image.atc = min(self.image.atc + 1, 0xFFFF)  # counts every transaction started
        if app.gpo_atc:
            inner = tlv.parse(app.gpo)[0].value
            return encode(0x77, inner + encode(0x9F36, self.image.atc.to_bytes(2, "big"))), SW_OK
        return app.gpo, SW_OK

    def _get_data(self, tag: int) -> tuple[bytes, int]:
        """GET DATA (EMV 4.3 Book 3, 6.5.7): the transaction counter, when the card gives it."""
        if tag != 0x9F36 or not self.image.get_data or self._current is None:
            return b"", SW_REF_NOT_FOUND
        return encode(0x9F36, self.image.atc.to_bytes(2, "big")), SW_OK

    # T=0 behaviour (ISO/IEC 7816-3, 10.3.3; EMV 4.3 Book 1, 9.3.1.3)

    def _case4(self, data: bytes, sw: int) -> tuple[bytes, int]:
        if not self.image.t0 or not data or sw != SW_OK:
            return data, sw
        self._pending = data
        return b"", 0x6100 | min(len(data), self.image.t0_chunk)

    def _case2(self, data: bytes, sw: int, le: int | None) -> tuple[bytes, int]:
        if not self.image.t0 or not data or sw != SW_OK:
            return data, sw
        if (256 if le == 0 else le) != len(data):  # P3 wrong (00 is 256): say the right Le
            return b"", 0x6C00 | (len(data) & 0xFF)
        return data, sw

    def _get_response(self, le: int | None) -> tuple[bytes, int]:
        if not self._pending:
            return b"", SW_CONDITIONS
        available = min(len(self._pending), self.image.t0_chunk)
        want = 256 if not le else le
        if want != available:
            return b"", 0x6C00 | available
        chunk, self._pending = self._pending[:available], self._pending[available:]
        if self._pending:
            return chunk, 0x6100 | min(len(self._pending), self.image.t0_chunk)
        return chunk, SW_OK
