"""Snapshots: which roster and which merchant policy belong together (pure).

A snapshot is a signed envelope (snapshot role) whose ``signed`` part is::

    {"type": "snapshot", "merchant_id": "M0001", "version": 7,
     "issued_at": "...Z", "expires_at": "...Z",
     "roster": {"version": 12, "body_sha256": "<hex>"},
     "policy": {"version": 3, "sha256": "<hex of the policy file>"}}

The terminal installs a roster and a policy only as the pair a snapshot names
(TUF's defence against mix-and-match), never an older snapshot (rollback), and
gives no discounts once the snapshot has expired (indefinite freeze).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pact.errors import SignatureError, SnapshotError
from pact.signing import canonical_json, sign, verify
from pact.timefmt import iso, parse_iso

MAX_SNAPSHOT_BYTES = 16 * 1024


@dataclass(frozen=True)
class Snapshot:
    merchant_id: str
    version: int
    issued_at: datetime
    expires_at: datetime
    roster_version: int
    roster_body_sha256: str
    policy_version: int
    policy_sha256: str
    data: bytes

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def check_policy(self, policy_file: bytes, version: int) -> None:
        if version != self.policy_version or (
            hashlib.sha256(policy_file).hexdigest() != self.policy_sha256
        ):
            raise SnapshotError(
                f"policy v{version} refused: snapshot v{self.version} names policy "
                f"v{self.policy_version} (mix-and-match)"
            )

    def check_roster(self, version: int, body_sha256: str) -> None:
        if version != self.roster_version or body_sha256 != self.roster_body_sha256:
            raise SnapshotError(
                f"roster v{version} refused: snapshot v{self.version} names roster "
                f"v{self.roster_version} (mix-and-match)"
            )


def build_snapshot(
    *,
    merchant_id: str,
    version: int,
    issued_at: datetime,
    expires_at: datetime,
    roster_version: int,
    roster_body_sha256: str,
    policy_file: bytes,
    policy_version: int,
    keys: list[Ed25519PrivateKey],
) -> bytes:
    signed = {
        "type": "snapshot",
        "merchant_id": merchant_id,
        "version": version,
        "issued_at": iso(issued_at),
        "expires_at": iso(expires_at),
        "roster": {"version": roster_version, "body_sha256": roster_body_sha256},
        "policy": {"version": policy_version, "sha256": hashlib.sha256(policy_file).hexdigest()},
    }
    return canonical_json(sign(signed, keys))


def verify_snapshot(
    data: bytes,
    trusted: Mapping[str, Ed25519PublicKey],
    threshold: int,
    *,
    merchant_id: str,
    installed: Snapshot | None,
    now: datetime | None,
) -> Snapshot:
    """Verify a snapshot for this merchant, newer than ``installed`` and not expired."""
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError("snapshot refused: oversized")
    try:
        envelope = json.loads(data)
    except (ValueError, RecursionError):
        raise SnapshotError("snapshot refused: malformed (not JSON)") from None
    try:
        signed = verify(envelope, trusted, threshold, what="snapshot")
    except SignatureError as exc:
        raise SnapshotError(f"snapshot refused: {exc}") from None
    try:
        if signed["type"] != "snapshot":
            raise SnapshotError("snapshot refused: not a snapshot")
        snap = Snapshot(
            merchant_id=str(signed["merchant_id"]),
            version=int(signed["version"]),
            issued_at=parse_iso(signed["issued_at"]),
            expires_at=parse_iso(signed["expires_at"]),
            roster_version=int(signed["roster"]["version"]),
            roster_body_sha256=str(signed["roster"]["body_sha256"]),
            policy_version=int(signed["policy"]["version"]),
            policy_sha256=str(signed["policy"]["sha256"]),
            data=bytes(data),
        )
    except (KeyError, TypeError, ValueError, OverflowError):
        raise SnapshotError("snapshot refused: malformed") from None
    if snap.merchant_id != merchant_id:
        raise SnapshotError(f"snapshot refused: it is for merchant {snap.merchant_id}")
    if installed is not None:
        if snap.version < installed.version:
            raise SnapshotError(
                f"snapshot refused: rollback (v{snap.version} is older than "
                f"installed v{installed.version})"
            )
        if snap.version == installed.version and snap.data != installed.data:
            raise SnapshotError(
                f"snapshot refused: v{snap.version} differs from the installed copy "
                "of the same version"
            )
        if snap.roster_version < installed.roster_version:
            raise SnapshotError("snapshot refused: it names an older roster (rollback)")
        if snap.policy_version < installed.policy_version:
            raise SnapshotError("snapshot refused: it names an older policy (rollback)")
    if now is not None and snap.is_expired(now):
        raise SnapshotError(f"snapshot refused: expired at {iso(snap.expires_at)}")
    return snap
