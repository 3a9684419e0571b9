"""The union's operations: members, merchants, terminals, signed files, ingest, settlement.

Wires the store (SQLAlchemy) and the keys (disk) to the pure core. The clock is
a parameter so tests and replays are exact.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from central.errors import AuthError, InputError
from central.keys import UnionKeys, load_keys
from central.store import IngestResult, Settlement, Store
from reader.identity import luhn_ok, token_for_pan
from terminal.policy import Rule, build_policy
from terminal.roster import MemberRecord, build_roster
from terminal.timefmt import iso

ROSTER_LIFETIME = timedelta(hours=72)
POLICY_LIFETIME = timedelta(days=30)
MEMBER_COLUMNS = ("member_id", "pan", "status", "tier", "valid_until", "district", "workplace")


@dataclass(frozen=True)
class CentralPaths:
    data_dir: Path

    @property
    def keys(self) -> Path:
        return self.data_dir / "keys"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'central.db'}"


def parse_members_csv(text: str, token_key: bytes) -> list[dict[str, Any]]:
    """Parse MEMBERS.csv; the ``pan`` column is turned into a token and dropped here."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    for required in ("member_id", "pan"):
        if required not in header:
            raise InputError(
                f"members file has no {required!r} column (header: {','.join(header)})"
            )
    unknown = set(header) - set(MEMBER_COLUMNS)
    if unknown:
        raise InputError(f"members file has unknown columns: {', '.join(sorted(unknown))}")
    rows = []
    seen: set[str] = set()
    for line, raw in enumerate(reader, start=2):
        member_id = (raw.get("member_id") or "").strip()
        pan = (raw.get("pan") or "").replace(" ", "").strip()
        if not member_id:
            raise InputError(f"members file line {line}: member_id is empty")
        if member_id in seen:
            raise InputError(f"members file line {line}: member {member_id} is listed twice")
        seen.add(member_id)
        if not pan.isdigit() or not 12 <= len(pan) <= 19 or not luhn_ok(pan):
            raise InputError(
                f"members file line {line}: the card number of member {member_id} is not valid"
            )
        status = (raw.get("status") or "active").strip()
        if status not in ("active", "suspended"):
            raise InputError(f"members file line {line}: status must be active or suspended")
        try:
            tier = int((raw.get("tier") or "0").strip())
            until_text = (raw.get("valid_until") or "").strip()
            valid_until = date.fromisoformat(until_text) if until_text else None
        except ValueError:
            raise InputError(
                f"members file line {line}: tier must be a number and valid_until YYYY-MM-DD"
            ) from None
        if not 0 <= tier <= 255:
            raise InputError(f"members file line {line}: tier must be 0..255")
        rows.append(
            {
                "member_id": member_id,
                "token": token_for_pan(pan, token_key).hex(),
                "pan_last4": pan[-4:],
                "status": status,
                "tier": tier,
                "valid_until": valid_until,
                "district": (raw.get("district") or None),
                "workplace": (raw.get("workplace") or None),
            }
        )
    return rows


class Union:
    def __init__(self, store: Store, keys: UnionKeys, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.keys = keys
        self.clock = clock

    @classmethod
    def open(
        cls, paths: CentralPaths, database_url: str | None, clock: Callable[[], datetime]
    ) -> Union:
        return cls(Store.open(database_url or paths.database_url), load_keys(paths.keys), clock)

    def close(self) -> None:
        self.store.close()

    def import_members(self, csv_text: str) -> int:
        return self.store.upsert_members(parse_members_csv(csv_text, self.keys.token_key))

    def add_merchant(self, merchant_id: str, name: str, basis_points: int) -> int:
        if not 0 <= basis_points <= 10000:
            raise InputError("the discount must be between 0 and 100 percent")
        self.store.add_merchant(merchant_id, name, basis_points, iso(self.clock()))
        return self.publish_policy(merchant_id)

    def set_merchant_status(self, merchant_id: str, status: str) -> int:
        """Suspend, exit or re-activate a merchant; publishes a new signed policy."""
        if status not in ("active", "suspended", "exited"):
            raise InputError("status must be active, suspended or exited")
        self.store.set_merchant_status(merchant_id, status, iso(self.clock()))
        return self.publish_policy(merchant_id)

    def publish_policy(self, merchant_id: str) -> int:
        merchant = self.store.merchant(merchant_id)
        kind = f"policy:{merchant_id}"
        latest = self.store.latest_signed(kind)
        version = (latest[0] if latest else 0) + 1
        now = self.clock()
        data = build_policy(
            merchant_id=merchant_id,
            merchant_name=merchant["name"],
            status=merchant["status"],
            version=version,
            issued_at=now,
            expires_at=now + POLICY_LIFETIME,
            rules=[Rule("member-discount", "percent_off", merchant["basis_points"])],
            keys=[self.keys.signing],
        )
        self.store.put_signed(kind, version, data, iso(now))
        return version

    def publish_roster(self, lifetime: timedelta = ROSTER_LIFETIME) -> tuple[int, int]:
        """Sign a new full roster of every member; return (version, member count)."""
        latest = self.store.latest_signed("roster")
        version = (latest[0] if latest else 0) + 1
        now = self.clock()
        records = [
            MemberRecord(bytes.fromhex(r["token"]), r["status"], r["tier"], r["valid_until"])
            for r in self.store.roster_records()
        ]
        data = build_roster(
            records,
            version=version,
            issued_at=now,
            expires_at=now + lifetime,
            token_key_id=self.keys.token_key_id,
            keys=[self.keys.signing],
        )
        self.store.put_signed("roster", version, data, iso(now))
        return version, len(records)

    def enrol_terminal(self, terminal_id: str, merchant_id: str, central_url: str) -> bytes:
        """Register a terminal; return its enrolment bundle (secret: for that shop only)."""
        secret = secrets.token_hex(24)
        self.store.add_terminal(
            terminal_id, merchant_id, hashlib.sha256(secret.encode()).hexdigest(), iso(self.clock())
        )
        bundle = {
            "format": "unioncard.enrolment.v1",
            "terminal_id": terminal_id,
            "merchant_id": merchant_id,
            "central_url": central_url,
            "api_secret": secret,
            "token_key": self.keys.token_key.hex(),
            "trusted_keys": self.keys.trusted_keys_json(),
        }
        return json.dumps(bundle, indent=2).encode() + b"\n"

    def authenticate(self, authorization: str | None) -> dict[str, Any]:
        """The terminal named by an ``Authorization: Bearer <terminal_id>.<secret>`` header."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("missing terminal credentials")
        terminal_id, _, secret = authorization.removeprefix("Bearer ").partition(".")
        row = self.store.terminal(terminal_id)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if row is None or not hmac.compare_digest(digest, row["secret_sha256"]):
            raise AuthError("unknown terminal or wrong secret")
        return dict(row)

    def ingest(self, terminal: dict[str, Any], batch: list[dict[str, Any]]) -> IngestResult:
        return self.store.ingest(
            terminal["terminal_id"], terminal["merchant_id"], batch, iso(self.clock())
        )

    def settlement(self, start: date | None = None, end: date | None = None) -> list[Settlement]:
        return self.store.settlement(start, end)
