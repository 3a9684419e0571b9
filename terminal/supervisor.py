"""The supervisor's authority (an adapter): what voids and refunds need.

On the cashier page, the supervisor's PIN: ``supervisor.pin`` in the data folder
holds a scrypt hash of the PIN and its salt (0600); ``unioncard terminal set-pin``
writes it. Five wrong tries lock the PIN for five minutes, each further lock twice as
long (counted on disk, ``supervisor.tries``).

On the till API, a supervisor token (``Authorization: Bearer ...``): a random secret
that grants voids and refunds only; ``supervisor.token`` keeps its SHA-256 (0600, see
``terminal.access``), and ``unioncard terminal supervisor-token`` makes a new one,
which replaces the old.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import unicodedata
from collections.abc import Callable
from datetime import timedelta, tzinfo
from pathlib import Path

from pact.files import atomic_write
from pact.text import N_
from pact.timefmt import Clock, iso, parse_iso
from terminal.access import SUPERVISOR_TOKEN_FILE, token_digest, token_matches
from terminal.errors import SupervisorError

PIN_FILE = "supervisor.pin"
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
        raise SupervisorError(N_("a supervisor PIN is 4 to 8 digits"))
    salt = os.urandom(16)
    record = {**SCRYPT, "salt": salt.hex(), "hash": _hash(pin, salt, **SCRYPT).hex()}
    atomic_write(data_dir / PIN_FILE, json.dumps(record).encode(), mode=0o600)


class Supervisor:
    """Checks the PIN. Wrong tries are counted in ``supervisor.tries`` (0600), so a
    restart of the daemon or another command does not reset them: five wrong tries
    lock the PIN for five minutes, and each further lock lasts twice as long (up to a
    day), until a right PIN resets the count."""

    def __init__(
        self, data_dir: Path, clock: Clock, zone: Callable[[], tzinfo] | None = None
    ) -> None:
        self.path = data_dir / PIN_FILE
        self.tries_path = data_dir / TRIES_FILE
        self.clock = clock
        self.zone = zone  # the shop's, for the time a lock ends (UTC without)
        self._lock = threading.Lock()

    def _local(self, at: str) -> str:
        if self.zone is None:
            return at
        return parse_iso(at).astimezone(self.zone()).strftime("%Y-%m-%d %H:%M:%S")

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
        path = self.path.parent / SUPERVISOR_TOKEN_FILE
        if token_digest(path) is None:
            raise SupervisorError(
                N_(
                    "no supervisor token is set on this terminal: "
                    "`unioncard terminal supervisor-token`"
                )
            )
        if not token_matches(path, token):
            raise SupervisorError(N_("the supervisor token is not this terminal's"))

    def check(self, pin: object) -> None:
        """Return when ``pin`` is the supervisor's; SupervisorError otherwise. No PIN, or
        what cannot be one (not 4 to 8 digits; full-width digits are read as digits),
        is said so and not counted as a wrong try: it guesses nothing."""
        now = self.clock()
        if isinstance(pin, str):
            pin = unicodedata.normalize("NFKC", pin).strip()
        if pin is None or pin == "":
            raise SupervisorError(N_("enter the supervisor PIN"))
        if not isinstance(pin, str) or not valid_pin(pin):
            raise SupervisorError(N_("the supervisor PIN is 4 to 8 digits"))
        with self._lock:
            tries = self._tries()
            until = tries.get("locked_until")
            if isinstance(until, str) and now < parse_iso(until):
                raise SupervisorError(
                    N_("the supervisor PIN is locked after repeated wrong tries until %(until)s"),
                    until=self._local(until),
                )
            try:
                record = json.loads(self.path.read_bytes())
            except FileNotFoundError:
                raise SupervisorError(
                    N_("no supervisor PIN is set on this terminal: `unioncard terminal set-pin`")
                ) from None
            expected = bytes.fromhex(record["hash"])
            salt = bytes.fromhex(record["salt"])
            got = _hash(pin, salt, record["n"], record["r"], record["p"])
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
                    N_("wrong supervisor PIN, %(tries)s times: locked for %(minutes)s minutes"),
                    tries=MAX_TRIES,
                    minutes=int(lockout.total_seconds()) // 60,
                )
            self._keep({"failures": failures, "locks": locks, "locked_until": None})
            raise SupervisorError(
                N_("wrong supervisor PIN (%(left)s tries left)"), left=MAX_TRIES - failures
            )
