"""The terminal's files: enrolment bundle, installed roster and policy (an adapter).

Layout under the terminal's data folder::

    enrolment.json   terminal id, merchant id, central URL, API secret, token key,
                     trusted signing keys (mode 0600)
    roster.ucr       the installed roster (terminal.roster format)
    policy.json      the installed merchant policy (signed envelope)
    journal.db       the sales journal (terminal.journal)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from terminal.errors import (
    ConfigError,
    NotEnrolledError,
    PolicyError,
    RosterError,
    SignatureError,
)
from terminal.files import atomic_write
from terminal.policy import Policy, verify_policy
from terminal.roster import Roster, verify_roster
from terminal.signing import load_public_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Enrolment:
    terminal_id: str
    merchant_id: str
    central_url: str
    api_secret: str
    token_key: bytes
    trusted_keys: dict[str, Ed25519PublicKey]

    @classmethod
    def from_json(cls, raw: Any) -> Enrolment:
        try:
            return cls(
                terminal_id=str(raw["terminal_id"]),
                merchant_id=str(raw["merchant_id"]),
                central_url=str(raw["central_url"]).rstrip("/"),
                api_secret=str(raw["api_secret"]),
                token_key=bytes.fromhex(raw["token_key"]),
                trusted_keys={k: load_public_key(v) for k, v in raw["trusted_keys"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"the enrolment bundle is invalid ({exc}): ask the union for a new one"
            ) from None


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class TerminalState:
    """Loads and installs the terminal's signed files. The last good copy always stays."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.enrolment_path = data_dir / "enrolment.json"
        self.roster_path = data_dir / "roster.ucr"
        self.policy_path = data_dir / "policy.json"
        self.journal_path = data_dir / "journal.db"
        self.roster: Roster | None = None
        self.policy: Policy | None = None
        self._enrolment: Enrolment | None = None
        self._stamps: dict[Path, tuple[int, int, int]] = {}

    @property
    def enrolment(self) -> Enrolment:
        if self._enrolment is None:
            try:
                raw = json.loads(self.enrolment_path.read_bytes())
            except FileNotFoundError:
                raise NotEnrolledError(
                    f"this terminal is not enrolled (no {self.enrolment_path}): "
                    "run `unioncard terminal enrol BUNDLE`"
                ) from None
            except ValueError:
                raise ConfigError(f"{self.enrolment_path} is not valid JSON") from None
            self._enrolment = Enrolment.from_json(raw)
        return self._enrolment

    def enrol(self, bundle: bytes) -> Enrolment:
        try:
            raw = json.loads(bundle)
        except ValueError:
            raise ConfigError("the enrolment bundle is not valid JSON") from None
        enrolment = Enrolment.from_json(raw)  # validate before writing
        atomic_write(self.enrolment_path, bundle, mode=0o600)
        self._enrolment = enrolment
        return enrolment

    def load(self) -> None:
        """Load whatever is installed. Expiry is judged at checkout time, not here."""
        trusted = self.enrolment.trusted_keys
        if self.roster_path.exists():
            stamp = _stamp(self.roster_path)
            self.roster = verify_roster(self.roster_path.read_bytes(), trusted, now=None)
            self._stamps[self.roster_path] = stamp
        if self.policy_path.exists():
            stamp = _stamp(self.policy_path)
            self.policy = verify_policy(
                self.policy_path.read_bytes(), trusted, merchant_id=self.enrolment.merchant_id
            )
            self._stamps[self.policy_path] = stamp

    def refresh(self) -> None:
        """Re-load files another process (the nightly sync) has installed since."""
        for path in (self.roster_path, self.policy_path):
            if path.exists() and _stamp(path) != self._stamps.get(path):
                roster, policy = self.roster, self.policy
                try:
                    self.load()
                except SignatureError as exc:  # keep serving what we had
                    self.roster, self.policy = roster, policy
                    self._stamps[path] = _stamp(path)
                    log.warning("kept the loaded roster and policy: %s", exc)
                return

    def install_roster(self, data: bytes, now: datetime) -> Roster:
        """Verify, then atomically install. On any failure the old roster keeps serving."""
        installed = self.roster.version if self.roster is not None else 0
        roster = verify_roster(
            data, self.enrolment.trusted_keys, now=now, installed_version=installed
        )
        atomic_write(self.roster_path, data, mode=0o644)
        self.roster = roster
        self._stamps[self.roster_path] = _stamp(self.roster_path)
        return roster

    def install_policy(self, data: bytes) -> Policy:
        installed = self.policy.version if self.policy is not None else 0
        policy = verify_policy(
            data,
            self.enrolment.trusted_keys,
            merchant_id=self.enrolment.merchant_id,
            installed_version=installed,
        )
        atomic_write(self.policy_path, data, mode=0o644)
        self.policy = policy
        self._stamps[self.policy_path] = _stamp(self.policy_path)
        return policy


__all__ = ["Enrolment", "TerminalState", "RosterError", "PolicyError"]
