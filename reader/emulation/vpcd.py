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
