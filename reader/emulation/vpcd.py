"""The vpcd link: an emulated card in vsmartcard's virtual reader (an adapter).

vsmartcard's ``vpcd`` is a pcscd reader driver that listens on TCP (35963 for
"Virtual PCD 00 00", 35964 for "Virtual PCD 00 01"). A virtual card connects to it
and counts as inserted while it is connected. Every message either way is a 2-byte
big-endian length and a payload: a 1-byte payload from vpcd is a control code
(``00`` power off, ``01`` power on, ``02`` reset, ``04`` "send your ATR"), anything
longer is a command APDU, answered by a response APDU.

:class:`CardEmulator` builds a :class:`reader.emulation.responder.EmulatedCard` from
a profile of :mod:`reader.emulation.images`, connects it to vpcd and answers vpcd
from a background thread (or from the caller's, :meth:`CardEmulator.run_forever`).

By default it answers as fast as it can (a fraction of a millisecond per APDU, far
faster than any chip). With ``pace_bps`` it answers at a contactless card's pace:
each response APDU is sent no sooner than the air time of the command and of the
response (:func:`air_seconds`) after the command arrived. Benchmarks use
:data:`ISO14443A_106K`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

from reader.emulation.images import build_image
from reader.emulation.responder import EmulatedCard

log = logging.getLogger(__name__)

VPCD_HOST = "127.0.0.1"
VPCD_PORT = 35963  # "Virtual PCD 00 00"; the next slot listens on 35964

CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0x00, 0x01, 0x02, 0x04

# ISO/IEC 14443-2: the lowest contactless bit rate, fc / 128 with fc = 13.56 MHz.
ISO14443A_106K = 13_560_000 / 128  # 105,937.5 bit/s, 9.44 µs a bit
# ISO/IEC 14443-4 I-block around an APDU: PCB (1 byte) + APDU + CRC_A (2 bytes); no CID, NAD.
BLOCK_OVERHEAD_BYTES = 3
BITS_PER_BYTE = 9  # ISO/IEC 14443-3 Type A standard frame: 8 data bits + odd parity
FRAME_EDGE_BITS = 2  # start of communication + end of communication, one bit time each


def air_seconds(apdu_bytes: int, bps: float) -> float:
    """The air time of one APDU over ISO/IEC 14443 Type A at ``bps`` bit/s.

    The APDU travels in one I-block (PCB + APDU + CRC_A) in one standard frame:
    9 bit times a byte and 2 for the frame's start and end. At 106 kbit/s that is
    85 µs a byte. Not counted (so a real card is slower still): the frame delay
    times between frames, the card's own processing, waiting-time extensions and
    chaining of blocks longer than the reader's frame size.
    """
    bits = (apdu_bytes + BLOCK_OVERHEAD_BYTES) * BITS_PER_BYTE + FRAME_EDGE_BITS
    return bits / bps


class CardEmulator:
    """An emulated card in a vpcd virtual reader: ``insert()`` ... ``remove()``.

    ``insert()`` connects to vpcd and answers it from a background thread until
    ``remove()`` (or a profile that pulls the card) closes the connection. The
    ``apdu_log`` lists every ``(command, response)`` exchanged. ``inserted_at`` and
    ``noticed_at`` (``time.monotonic()``) tell when the card connected and when vpcd
    first spoke to it, i.e. when pcscd's presence poll found it; ``noticed`` is set
    then.

    ``pace_bps`` (None: as fast as possible) paces the answers to command APDUs:
    each is sent once ``air_seconds(command) + air_seconds(response)`` have passed
    since the command arrived (control messages, such as the ATR, are not paced).
    ``pace_late`` lists by how much each paced answer missed that moment (the
    sleep's overshoot, seconds).
    """

    def __init__(
        self,
        pan: str,
        expiry: str = "2030-12",
        profile: str = "unionpay",
        host: str = VPCD_HOST,
        port: int = VPCD_PORT,
        *,
        pace_bps: float | None = None,
    ) -> None:
        if pace_bps is not None and not pace_bps > 0:
            raise ValueError("pace_bps must be a positive bit rate")
        self.card = EmulatedCard(build_image(profile, pan, expiry))
        self.pace_bps = pace_bps
        self.pace_late: list[float] = []
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
        paced = f", pace_bps={self.pace_bps:g}" if self.pace_bps is not None else ""
        return f"CardEmulator(profile={self.profile!r}, port={self.port}{paced})"

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
                arrived = time.monotonic()
                if self.noticed_at is None:
                    self.noticed_at = arrived
                    self.noticed.set()
                if len(payload) == 1:
                    reply = self._control(payload[0])
                elif payload:
                    reply = self.card.respond(payload)
                    if reply is None:  # the profile pulls the card out here
                        return
                    if self.pace_bps is not None:
                        due = arrived + air_seconds(len(payload), self.pace_bps)
                        due += air_seconds(len(reply), self.pace_bps)
                        self.pace_late.append(_sleep_until(due))
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


def _sleep_until(due: float) -> float:
    """Sleep until ``time.monotonic()`` reaches ``due``; return how late it woke (s)."""
    while True:
        left = due - time.monotonic()
        if left <= 0:
            return -left
        time.sleep(left)


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
