"""The supervisor's authority (an adapter): what voids and refunds need.

On the cashier page, the supervisor's PIN: ``supervisor.pin`` in the data folder
holds a scrypt hash of the PIN and its salt (0600); ``unioncard terminal set-pin``
writes it. Five wrong tries lock the PIN for five minutes, each further lock twice as
long (counted on disk, ``supervisor.tries``).

On the till API, a supervisor token (``Authorization: Bearer ...``): a random secret
that grants voids and refunds only; ``supervisor.token`` keeps its SHA-256 (0600), and
``unioncard terminal supervisor-token`` makes a new one, which replaces the old.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from datetime import timedelta
from pathlib import Path

from pact.files import atomic_write
from pact.timefmt import Clock, iso, parse_iso
from terminal.errors import SupervisorError

PIN_FILE = "supervisor.pin"
TOKEN_FILE = "supervisor.token"
TRIES_FILE = "supervisor.tries"
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MAX_TRIES = 5
LOCKOUT = timedelta(minutes=5)  # the first lock; each next one lasts twice as long
MAX_LOCKOUT = timedelta(days=1)


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


def new_token(data_dir: Path) -> str:
    """Make a new supervisor token for the till (replacing the old); return it. Only its
    SHA-256 is kept."""
    token = "sup_" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    atomic_write(data_dir / TOKEN_FILE, json.dumps({"sha256": digest}).encode(), mode=0o600)
    return token


class Supervisor:
    """Checks the PIN. Wrong tries are counted in ``supervisor.tries`` (0600), so a
    restart of the daemon or another command does not reset them: five wrong tries
    lock the PIN for five minutes, and each further lock lasts twice as long (up to a
    day), until a right PIN resets the count."""

    def __init__(self, data_dir: Path, clock: Clock) -> None:
        self.path = data_dir / PIN_FILE
        self.tries_path = data_dir / TRIES_FILE
        self.clock = clock
        self._lock = threading.Lock()

    def _tries(self) -> dict[str, object]:
        try:
            tries = json.loads(self.tries_path.read_bytes())
        except (FileNotFoundError, ValueError):
            return {"failures": 0, "locks": 0, "locked_until": None}
        return tries if isinstance(tries, dict) else {"failures": 0, "locks": 0}

    def _keep(self, tries: dict[str, object]) -> None:
        atomic_write(self.tries_path, json.dumps(tries).encode(), mode=0o600)

    def check_token(self, token: str) -> None:
        """Return when ``token`` is the till's supervisor token; SupervisorError otherwise."""
        try:
            record = json.loads((self.path.parent / TOKEN_FILE).read_bytes())
        except FileNotFoundError:
            raise SupervisorError(
                "no supervisor token is set on this terminal: `unioncard terminal supervisor-token`"
            ) from None
        digest = hashlib.sha256(token.encode()).hexdigest()
        if not hmac.compare_digest(digest, str(record.get("sha256"))):
            raise SupervisorError("the supervisor token is not this terminal's")

    def check(self, pin: object) -> None:
        """Return when ``pin`` is the supervisor's; SupervisorError otherwise."""
        now = self.clock()
        with self._lock:
            tries = self._tries()
            until = tries.get("locked_until")
            if isinstance(until, str) and now < parse_iso(until):
                raise SupervisorError(
                    f"the supervisor PIN is locked after repeated wrong tries until {until}"
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
                if tries.get("failures") or tries.get("locks"):
                    self._keep({"failures": 0, "locks": 0, "locked_until": None})
                return
            failures = int(str(tries.get("failures") or 0)) + 1
            locks = int(str(tries.get("locks") or 0))
            if failures >= MAX_TRIES:
                lockout = min(LOCKOUT * 2**locks, MAX_LOCKOUT)
                self._keep({"failures": 0, "locks": locks + 1, "locked_until": iso(now + lockout)})
                raise SupervisorError(
                    f"wrong supervisor PIN, {MAX_TRIES} times: locked for "
                    f"{int(lockout.total_seconds()) // 60} minutes"
                )
            self._keep({"failures": failures, "locks": locks, "locked_until": None})
            raise SupervisorError(f"wrong supervisor PIN ({MAX_TRIES - failures} tries left)")
