"""Small builders shared by the tests (no fixtures here)."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from central.keys import UnionKeys
from reader.identity import token_for_pan
from terminal.policy import Rule, build_policy
from terminal.roster import MemberRecord, build_roster
from terminal.signing import load_public_key


def with_luhn(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


MEMBER_PAN = with_luhn("621483000055501")
OTHER_PAN = with_luhn("622588000077702")


def trusted(keys: UnionKeys) -> dict[str, Ed25519PublicKey]:
    return {kid: load_public_key(raw) for kid, raw in keys.trusted_keys_json().items()}


def roster_bytes(
    keys: UnionKeys,
    pans: list[str],
    now: datetime,
    version: int = 1,
    lifetime: timedelta = timedelta(hours=72),
    status: str = "active",
) -> bytes:
    records = [MemberRecord(token_for_pan(p, keys.token_key), status, 1) for p in pans]
    return build_roster(
        records,
        version=version,
        issued_at=now,
        expires_at=now + lifetime,
        token_key_id=keys.token_key_id,
        keys=[keys.signing],
    )


def policy_bytes(
    keys: UnionKeys,
    now: datetime,
    *,
    merchant_id: str = "M0001",
    version: int = 1,
    status: str = "active",
    basis_points: int = 500,
    rounding: str = "half-up",
    lifetime: timedelta = timedelta(days=30),
) -> bytes:
    return build_policy(
        merchant_id=merchant_id,
        merchant_name="Test Shop",
        status=status,
        version=version,
        issued_at=now,
        expires_at=now + lifetime,
        rules=[Rule("member", "percent_off", basis_points)],
        keys=[keys.signing],
        rounding=rounding,
    )
