"""systemd's notification protocol (an adapter): READY, STATUS, WATCHDOG, STOPPING.

systemd passes ``NOTIFY_SOCKET`` (a datagram socket path, or ``@name`` in the abstract
namespace) to a ``Type=notify`` service, and ``WATCHDOG_USEC`` when the unit sets
``WatchdogSec=``. Each message is ``KEY=value`` lines in one datagram (sd_notify(3)).
Without ``NOTIFY_SOCKET`` (run by hand, in the demo) every call does nothing.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str]) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        # ping at half the watchdog's period, as sd_watchdog_enabled(3) advises
        self.watchdog_interval: float | None = int(usec) / 2e6 if usec.isdigit() else None

    def send(self, **fields: str) -> bool:
        """One datagram of ``KEY=value`` lines; False when there is no socket or it fails
        (systemd then acts on what it did not hear: the watchdog, the start timeout)."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self, status: str) -> bool:
        return self.send(WATCHDOG="1", STATUS=status)

    def stopping(self) -> bool:
        return self.send(STOPPING="1", STATUS="stopping")
