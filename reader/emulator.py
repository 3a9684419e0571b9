"""A payment-card emulator for the demo and the tests, speaking vpcd's protocol.

vsmartcard's ``vpcd`` is a pcscd reader driver that listens on TCP (35963 for
"Virtual PCD 00 00", 35964 for "Virtual PCD 00 01"). A virtual card connects to it
and counts as inserted while it is connected. Every message either way is a 2-byte
big-endian length and a payload: a 1-byte payload from vpcd is a control code
(``00`` power off, ``01`` power on, ``02`` reset, ``04`` "send your ATR"), anything
longer is a command APDU, answered by a response APDU.

The card itself is data: a :class:`CardImage` lists its applications (DF name, FCI,
records by SFI, GPO response) and a few behaviours (T=0 ``61xx``/``6Cxx`` answers,
being pulled out mid-read). :data:`PROFILES` maps a profile name to a function that
builds the image for a PAN and an expiry date; :class:`EmulatedCard` answers APDUs
from an image (pure, and usable as a ``transmit`` in tests); :class:`CardEmulator`
connects one to vpcd.

From a shell: ``python -m reader.emulator --pan 6212345678901232 --profile unionpay``.
"""

from __future__ import annotations

import argparse
import calendar
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from reader.tlv import encode

log = logging.getLogger(__name__)

VPCD_HOST = "127.0.0.1"
VPCD_PORT = 35963  # "Virtual PCD 00 00"; the next slot listens on 35964

CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0x00, 0x01, 0x02, 0x04

SW_OK = 0x9000
SW_BLOCKED = 0x6283
SW_WRONG_LENGTH = 0x6700
SW_CONDITIONS = 0x6985
SW_NOT_FOUND = 0x6A82
SW_NO_RECORD = 0x6A83
SW_INS = 0x6D00
SW_CLA = 0x6E00


def _with_tck(atr: bytes) -> bytes:
    """Append TCK, the XOR of T0 .. the last historical byte (ISO/IEC 7816-3, 8.2.5)."""
    tck = 0
    for byte in atr[1:]:
        tck ^= byte
    return atr + bytes([tck])


# ISO/IEC 7816-3, 8.2. T=0 only: TS 3B, T0 68 (TB1 TC1 present, 8 historical bytes).
ATR_T0 = bytes.fromhex("3B680000") + b"UNIONCRD"
# T=1: TS 3B, T0 88 (TD1, 8 historical bytes), TD1 80 (TD2, T=0), TD2 01 (T=1), TCK.
ATR_T1 = _with_tck(bytes.fromhex("3B888001") + b"UNIONCRD")

PPSE = b"2PAY.SYS.DDF01"
PSE = b"1PAY.SYS.DDF01"
AID_UNIONPAY_DEBIT = bytes.fromhex("A000000333010101")
AID_UNIONPAY_CREDIT = bytes.fromhex("A000000333010102")
AID_VISA = bytes.fromhex("A0000000031010")
AID_TUNION = bytes.fromhex("A000000632010105")  # China T-Union transport (not payment)


@dataclass
class Application:
    """One selectable DF: a payment application, or a PSE/PPSE directory."""

    name: bytes
    fci: bytes
    records: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (sfi, rec)
    gpo: bytes | None = None  # GPO response data; None: GPO is refused (6985)
    pdol_length: int = 0  # the length of PDOL data GPO must carry
    select_sw: int = SW_OK  # e.g. 6283 for a blocked application


@dataclass
class CardImage:
    """Everything a profile says about a card."""

    atr: bytes
    applications: list[Application]
    t0: bool = False  # answer like a T=0 card: 61xx for case 4, 6Cxx for a wrong Le
    t0_chunk: int = 32  # bytes per GET RESPONSE when t0
    vanish_after: int | None = None  # answer this many APDUs, then leave (card pulled)


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
        return app.gpo, SW_OK

    # T=0 behaviour (ISO/IEC 7816-3, 10.3.3; EMV 4.3 Book 1, 9.3.1.3)

    def _case4(self, data: bytes, sw: int) -> tuple[bytes, int]:
        if not self.image.t0 or not data or sw != SW_OK:
            return data, sw
        self._pending = data
        return b"", 0x6100 | min(len(data), self.image.t0_chunk)

    def _case2(self, data: bytes, sw: int, le: int | None) -> tuple[bytes, int]:
        if not self.image.t0 or not data or sw != SW_OK:
            return data, sw
        if le != len(data):  # P3 = 00 or wrong: tell the terminal the right Le
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


# ---------------------------------------------------------------------------
# Profiles: functions (pan, expiry "YYYY-MM") -> CardImage.


def _check_pan(pan: str) -> None:
    if not pan.isdigit():
        raise ValueError(f"the PAN must be decimal digits, got {pan!r}")
    if not 12 <= len(pan) <= 19:
        raise ValueError(f"the PAN must be 12 to 19 digits, got {len(pan)}")


def _yymm(expiry: str) -> tuple[int, int]:
    year, sep, month = expiry.partition("-")
    if not sep or len(year) != 4 or not year.isdigit() or not month.isdigit():
        raise ValueError(f"the expiry must be YYYY-MM, got {expiry!r}")
    if not 1 <= int(month) <= 12 or not 1950 <= int(year) <= 2049:
        raise ValueError(f"the expiry {expiry!r} is not a valid month in 1950..2049")
    return int(year), int(month)


def _cn(digits: str) -> bytes:
    """Compressed numeric: BCD, padded on the right with F (EMV 4.3 Book 3, Annex B)."""
    return bytes.fromhex(digits + "F" * (len(digits) % 2))


def _track2(pan: str, year: int, month: int, service_code: str = "220") -> bytes:
    """Track 2 Equivalent Data (tag 57): PAN, D, YYMM, service code, discretionary."""
    return _cn(f"{pan}D{year % 100:02d}{month:02d}{service_code}0000000000")


def _expiry_date(year: int, month: int) -> bytes:
    """Application Expiration Date (5F24), YYMMDD: the last day of the month."""
    day = calendar.monthrange(year, month)[1]
    return bytes.fromhex(f"{year % 100:02d}{month:02d}{day:02d}")


def _directory_fci(name: bytes, sfi: int | None, entries: Sequence[bytes] = ()) -> bytes:
    """FCI of a PSE (A5 holds 88 SFI) or PPSE (A5 holds BF0C with 61 entries)."""
    if sfi is not None:
        prop = encode(0x88, bytes([sfi])) + encode(0x5F2D, b"zhen")
    else:
        prop = encode(0xBF0C, b"".join(entries))
    return encode(0x6F, encode(0x84, name) + encode(0xA5, prop))


def _entry(aid: bytes, label: bytes, priority: int | None) -> bytes:
    """A directory entry, template 61 (EMV 4.3 Book 1, 12.2.3, table 47)."""
    body = encode(0x4F, aid) + encode(0x50, label)
    if priority is not None:
        body += encode(0x87, bytes([priority]))
    return encode(0x61, body)


def _adf_fci(aid: bytes, label: bytes, priority: int, pdol: bytes = b"") -> bytes:
    """FCI of an ADF (EMV 4.3 Book 1, 11.3.4, table 45)."""
    prop = encode(0x50, label) + encode(0x87, bytes([priority]))
    if pdol:
        prop += encode(0x9F38, pdol)
    prop += encode(0x5F2D, b"zhen") + encode(0x9F11, b"\x01")
    prop += encode(0xBF0C, encode(0x9F4D, b"\x0b\x0a"))
    return encode(0x6F, encode(0x84, aid) + encode(0xA5, prop))


def _pboc_records(pan: str, year: int, month: int) -> dict[tuple[int, int], bytes]:
    """SFI 1 records 1-2 of a PBOC debit application, with personal data in record 1."""
    record1 = encode(
        0x70,
        encode(0x57, _track2(pan, year, month))
        + encode(0x5F20, b"ZHANG/SAN")  # cardholder name: the reader must not keep it
        + encode(0x9F61, b"110101199003077777")  # PBOC cardholder ID number: ditto
        + encode(0x9F62, b"\x00"),  # ID type: national ID card
    )
    record2 = encode(
        0x70,
        encode(0x5A, _cn(pan))
        + encode(0x5F24, _expiry_date(year, month))
        + encode(0x5F25, bytes.fromhex("200101"))
        + encode(0x5F28, bytes.fromhex("0156"))
        + encode(0x5F34, b"\x01")
        + encode(0x9F07, bytes.fromhex("FF00"))
        + encode(0x8E, bytes(8) + bytes.fromhex("42031E031F00"))
        + encode(0x8C, bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704")),
    )
    return {(1, 1): record1, (1, 2): record2}


def _pse(entries_by_record: Sequence[bytes]) -> Application:
    records = {(1, i + 1): encode(0x70, rec) for i, rec in enumerate(entries_by_record)}
    return Application(PSE, _directory_fci(PSE, 1), records)


def _unionpay_app(aid: bytes, label: bytes, priority: int, pan: str, y: int, m: int) -> Application:
    # Format 1: 80 [AIP 7C00][AFL 08 01 02 00 = SFI 1, records 1..2, none for ODA]
    gpo = encode(0x80, bytes.fromhex("7C00") + bytes.fromhex("08010200"))
    return Application(aid, _adf_fci(aid, label, priority), _pboc_records(pan, y, m), gpo)


def unionpay(pan: str, expiry: str) -> CardImage:
    """A contact-only UnionPay (PBOC 3.0) card with a debit and a credit application.

    PPSE: 6A82. PSE: SFI 1, record 1 lists credit (priority 2), record 2 debit
    (priority 1). No PDOL; GPO answers format 1 naming SFI 1 records 1-2.
    """
    _check_pan(pan)
    y, m = _yymm(expiry)
    return CardImage(
        atr=ATR_T0,
        applications=[
            _pse(
                [
                    _entry(AID_UNIONPAY_CREDIT, b"UnionPay Credit", 2),
                    _entry(AID_UNIONPAY_DEBIT, b"UnionPay Debit", 1),
                ]
            ),
            _unionpay_app(AID_UNIONPAY_DEBIT, b"UnionPay Debit", 1, pan, y, m),
            _unionpay_app(AID_UNIONPAY_CREDIT, b"UnionPay Credit", 2, pan, y, m),
        ],
    )


def unionpay_t0(pan: str, expiry: str) -> CardImage:
    """The ``unionpay`` card behind a T=0 link: ``61xx`` chains and ``6Cxx`` retries."""
    image = unionpay(pan, expiry)
    image.t0 = True
    return image


def pulled(pan: str, expiry: str) -> CardImage:
    """The ``unionpay`` card, taken out after GPO, at the first READ RECORD."""
    image = unionpay(pan, expiry)
    image.vanish_after = 7  # PPSE, PSE, 3 directory reads, SELECT, GPO
    return image


def blocked(pan: str, expiry: str) -> CardImage:
    """A UnionPay card whose only application answers SELECT with ``6283``."""
    image = unionpay(pan, expiry)
    image.applications = [
        _pse([_entry(AID_UNIONPAY_DEBIT, b"UnionPay Debit", 1)]),
        _unionpay_app(AID_UNIONPAY_DEBIT, b"UnionPay Debit", 1, pan, *_yymm(expiry)),
    ]
    image.applications[1].select_sw = SW_BLOCKED
    return image


# PDOL of a UnionPay qUICS / Visa qVSDC contactless application: TTQ, amounts,
# country, TVR, currency, date, type, unpredictable number = 4+6+6+2+5+2+3+1+4 = 33.
CONTACTLESS_PDOL = bytes.fromhex("9F66049F02069F03069F1A0295055F2A029A039C019F3704")


def contactless(pan: str, expiry: str) -> CardImage:
    """A UnionPay qUICS card (tap): PPSE, a PDOL, GPO format 2 with track 2 only.

    No ``5A`` and no ``5F24`` anywhere: PAN and expiry come from tag ``57`` in the
    GPO response (format 2, tag 77), and there is no AFL to read.
    """
    _check_pan(pan)
    y, m = _yymm(expiry)
    aid = AID_UNIONPAY_DEBIT
    gpo = encode(
        0x77,
        encode(0x82, bytes.fromhex("0000"))
        + encode(0x57, _track2(pan, y, m))
        + encode(0x5F34, b"\x01")
        + encode(0x9F10, bytes.fromhex("07010103A00000010A0100000000000000000000"))
        + encode(0x9F26, bytes(8))
        + encode(0x9F36, b"\x00\x01"),
    )
    ppse_entries = [_entry(aid, b"UnionPay", 1)]
    return CardImage(
        atr=ATR_T1,
        applications=[
            Application(PPSE, _directory_fci(PPSE, None, ppse_entries)),
            Application(
                aid,
                _adf_fci(aid, b"UnionPay", 1, CONTACTLESS_PDOL),
                gpo=gpo,
                pdol_length=33,
            ),
        ],
    )


def visa(pan: str, expiry: str) -> CardImage:
    """A Visa card found through the PPSE, GPO format 2 with an AFL (SFI 2 record 1)."""
    _check_pan(pan)
    y, m = _yymm(expiry)
    pdol = bytes.fromhex("9F66049F02069F37045F2A02")  # 4+6+4+2 = 16
    gpo = encode(
        0x77, encode(0x82, bytes.fromhex("2000")) + encode(0x94, bytes.fromhex("10010100"))
    )
    record = encode(
        0x70,
        encode(0x57, _track2(pan, y, m, "201"))
        + encode(0x5F20, b"CARDHOLDER/VISA")
        + encode(0x5A, _cn(pan))
        + encode(0x5F24, _expiry_date(y, m)),
    )
    return CardImage(
        atr=ATR_T1,
        applications=[
            Application(PPSE, _directory_fci(PPSE, None, [_entry(AID_VISA, b"VISA DEBIT", 1)])),
            Application(
                AID_VISA,
                _adf_fci(AID_VISA, b"VISA DEBIT", 1, pdol),
                {(2, 1): record},
                gpo,
                pdol_length=16,
            ),
        ],
    )


def transit(pan: str, expiry: str) -> CardImage:
    """A China T-Union transport card: its PPSE lists only a non-payment application.

    The PAN is not used; the card answers ``6A82`` to every payment AID.
    """
    _check_pan(pan)
    _yymm(expiry)
    fci = encode(0x6F, encode(0x84, AID_TUNION) + encode(0xA5, encode(0x50, b"T-Union")))
    return CardImage(
        atr=ATR_T1,
        applications=[
            Application(PPSE, _directory_fci(PPSE, None, [_entry(AID_TUNION, b"T-Union", 1)])),
            Application(AID_TUNION, fci),
        ],
    )


PROFILES: dict[str, Callable[[str, str], CardImage]] = {
    "unionpay": unionpay,
    "unionpay-t0": unionpay_t0,
    "contactless": contactless,
    "visa": visa,
    "blocked": blocked,
    "transit": transit,
    "pulled": pulled,
}


def build_image(profile: str, pan: str, expiry: str) -> CardImage:
    """The :class:`CardImage` of ``profile``; ``ValueError`` for a bad name, PAN or date."""
    if profile not in PROFILES:
        raise ValueError(f"unknown card profile {profile!r}; known: {', '.join(PROFILES)}")
    return PROFILES[profile](pan, expiry)


# ---------------------------------------------------------------------------
# The vpcd link.


class CardEmulator:
    """An emulated card in a vpcd virtual reader: ``insert()`` ... ``remove()``.

    ``insert()`` connects to vpcd and answers it from a background thread until
    ``remove()`` (or a profile that pulls the card) closes the connection. The
    ``apdu_log`` lists every ``(command, response)`` exchanged. ``inserted_at`` and
    ``noticed_at`` (``time.monotonic()``) tell when the card connected and when vpcd
    first spoke to it, i.e. when pcscd's presence poll found it; ``noticed`` is set
    then.
    """

    def __init__(
        self,
        pan: str,
        expiry: str = "2030-12",
        profile: str = "unionpay",
        host: str = VPCD_HOST,
        port: int = VPCD_PORT,
    ) -> None:
        self.card = EmulatedCard(build_image(profile, pan, expiry))
        self.profile = profile
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.inserted_at: float | None = None
        self.noticed_at: float | None = None
        self.noticed = threading.Event()

    def __repr__(self) -> str:
        return f"CardEmulator(profile={self.profile!r}, port={self.port})"

    @property
    def apdu_log(self) -> list[tuple[bytes, bytes]]:
        return self.card.log

    @property
    def inserted(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _connect(self) -> socket.socket:
        with self._lock:
            if self._sock is not None:
                raise RuntimeError("the card is already inserted")
            try:
                sock = socket.create_connection((self.host, self.port), timeout=5.0)
            except OSError as exc:
                raise ConnectionError(
                    f"cannot reach vpcd at {self.host}:{self.port} ({exc}): "
                    "is pcscd running with vsmartcard-vpcd installed?"
                ) from exc
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self.card.reset()
            self.inserted_at = time.monotonic()
            self.noticed_at = None
            self.noticed.clear()
            return sock

    def insert(self) -> CardEmulator:
        """Put the card in the reader (connect to vpcd) and answer in a thread."""
        sock = self._connect()
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name=f"card-emulator-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def run_forever(self) -> None:
        """Insert the card and answer in this thread until vpcd or ``remove()`` hangs up."""
        self._serve(self._connect())

    def remove(self, timeout: float = 2.0) -> None:
        """Take the card out, and return once vpcd has noticed (or after ``timeout``).

        The emulator half-closes the connection; vpcd sees the end of the stream at
        its next presence poll (pcscd polls every 0.4 s) and hangs up, which ends the
        serving thread. So when this returns, the next read cannot meet this card
        still "present" in pcscd's eyes. A vpcd that never polls is cut off after
        ``timeout`` seconds.
        """
        self._shutdown(socket.SHUT_WR)
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout)
        if thread.is_alive():
            self._shutdown(socket.SHUT_RDWR)
            thread.join(5.0)
        self._thread = None

    def _shutdown(self, how: int) -> None:
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(how)
            except OSError:
                pass  # already closed by the card itself (pulled) or by vpcd

    def __enter__(self) -> CardEmulator:
        return self.insert()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                header = _recv_exact(sock, 2)
                if header is None:
                    return
                payload = _recv_exact(sock, int.from_bytes(header, "big"))
                if payload is None:
                    return
                if self.noticed_at is None:
                    self.noticed_at = time.monotonic()
                    self.noticed.set()
                if len(payload) == 1:
                    reply = self._control(payload[0])
                elif payload:
                    reply = self.card.respond(payload)
                    if reply is None:  # the profile pulls the card out here
                        return
                else:
                    continue
                if reply is not None:
                    sock.sendall(len(reply).to_bytes(2, "big") + reply)
        except OSError as exc:
            log.debug("vpcd connection ended: %s", exc)
        finally:
            with self._lock:
                self._sock = None
            sock.close()

    def _control(self, code: int) -> bytes | None:
        if code == CTRL_ATR:
            return self.card.image.atr
        if code in (CTRL_ON, CTRL_RESET):
            self.card.reset()
        return None


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes from ``sock``, or ``None`` at end of stream.

    vpcd writes a length and its payload separately; re-arming ``TCP_QUICKACK``
    before each read keeps delayed ACKs (~40 ms each) out of every APDU.
    """
    buf = bytearray()
    while len(buf) < size:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reader.emulator``: insert one emulated card until interrupted."""
    parser = argparse.ArgumentParser(description="Emulate a payment card in vpcd's reader.")
    parser.add_argument("--pan", required=True, help="card number (digits, Luhn-valid)")
    parser.add_argument("--expiry", default="2030-12", help="YYYY-MM (default 2030-12)")
    parser.add_argument("--profile", default="unionpay", choices=sorted(PROFILES))
    parser.add_argument("--host", default=VPCD_HOST)
    parser.add_argument("--port", type=int, default=VPCD_PORT, help="35963 = reader 00 00")
    args = parser.parse_args(argv)
    try:
        emulator = CardEmulator(args.pan, args.expiry, args.profile, args.host, args.port)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        emulator.run_forever()
    except ConnectionError as exc:
        parser.exit(2, f"error: {exc}\n")
    except KeyboardInterrupt:
        emulator.remove()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
