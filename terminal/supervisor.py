"""The supervisor's PIN (an adapter): what voids need on the cashier page.

``supervisor.pin`` in the data folder holds a scrypt hash of the PIN and its salt
(0600); ``unioncard terminal set-pin`` writes it. Five wrong tries lock the PIN for
five minutes (counted in the daemon's memory).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from datetime import datetime, timedelta
from pathlib import Path

from pact.files import atomic_write
from pact.timefmt import Clock, iso
from terminal.errors import SupervisorError

PIN_FILE = "supervisor.pin"
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MAX_TRIES = 5
LOCKOUT = timedelta(minutes=5)


def _hash(pin: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, dklen=32)


def valid_pin(pin: str) -> bool:
    return pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 8


def set_pin(data_dir: Path, pin: str) -> None:
    """Keep the scrypt hash of a new supervisor PIN (4 to 8 digits)."""
    if not valid_pin(pin):
        raise SupervisorError("a supervisor PIN is 4 to 8 digits")
    salt = os.urandom(16)
    record = {**SCRYPT, "salt": salt.hex(), "hash": _hash(pin, salt, **SCRYPT).hex()}
    atomic_write(data_dir / PIN_FILE, json.dumps(record).encode(), mode=0o600)


class Supervisor:
    """Checks the PIN, and locks it after repeated wrong tries."""

    def __init__(self, data_dir: Path, clock: Clock) -> None:
        self.path = data_dir / PIN_FILE
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._locked_until: datetime | None = None

    def check(self, pin: object) -> None:
        """Return when ``pin`` is the supervisor's; SupervisorError otherwise."""
        now = self.clock()
        with self._lock:
            if self._locked_until is not None and now < self._locked_until:
                raise SupervisorError(
                    f"the supervisor PIN is locked after {MAX_TRIES} wrong tries until "
                    f"{iso(self._locked_until)}"
                )
            try:
                record = json.loads(self.path.read_bytes())
            except FileNotFoundError:
                raise SupervisorError(
                    "no supervisor PIN is set on this terminal: `unioncard terminal set-pin`"
                ) from None
            ok = isinstance(pin, str) and valid_pin(pin)
            if ok:
                expected = bytes.fromhex(record["hash"])
                salt = bytes.fromhex(record["salt"])
                got = _hash(str(pin), salt, record["n"], record["r"], record["p"])
                ok = hmac.compare_digest(got, expected)
            if ok:
                self._failures, self._locked_until = 0, None
                return
            self._failures += 1
            if self._failures >= MAX_TRIES:
                self._failures, self._locked_until = 0, now + LOCKOUT
                raise SupervisorError(
                    f"wrong supervisor PIN, {MAX_TRIES} times: locked for "
                    f"{LOCKOUT.seconds // 60} minutes"
                )
            raise SupervisorError(f"wrong supervisor PIN ({MAX_TRIES - self._failures} tries left)")
