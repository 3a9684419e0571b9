"""A merchant's signed discount policy and the pure discount engine.

The policy is a signed envelope (terminal.signing) whose ``signed`` part is::

    {"type": "policy", "merchant_id": "M0001", "merchant_name": "...",
     "status": "active" | "suspended" | "exited", "version": 3,
     "issued_at": "...Z", "expires_at": "...Z", "rounding": "half-up",
     "rules": [{"id": "member-5", "kind": "percent_off", "basis_points": 500}]}

Money is integer fen throughout. ``basis_points`` is hundredths of a percent
(500 = 5 %), so no fractional number ever appears. The engine does no I/O and
reads no clock: ``now`` is a parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from terminal.errors import PolicyError, SignatureError
from terminal.roster import Membership
from terminal.signing import canonical_json, sign, verify
from terminal.timefmt import iso, parse_iso

MERCHANT_STATUSES = ("active", "suspended", "exited")
ROUNDING_MODES = ("half-up", "down")


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    basis_points: int


@dataclass(frozen=True)
class Policy:
    merchant_id: str
    merchant_name: str
    status: str
    version: int
    issued_at: datetime
    expires_at: datetime
    rounding: str
    rules: tuple[Rule, ...]

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class Quote:
    gross: int
    discount: int
    net: int
    applied: tuple[str, ...]
    reasons: tuple[str, ...]  # why a discount was not (fully) given


def _percent_of(amount: int, basis_points: int, rounding: str) -> int:
    """``amount * basis_points / 10000`` in fen, rounded as the policy declares."""
    numerator = amount * basis_points
    if rounding == "down":
        return numerator // 10000
    return (numerator + 5000) // 10000  # half-up (amounts are never negative)


def quote(
    gross: int,
    member: Membership | None,
    policy: Policy | None,
    now: datetime,
    not_member_reason: str = "not a member",
) -> Quote:
    """Price one sale. Pure and deterministic."""
    if not isinstance(gross, int) or isinstance(gross, bool) or gross < 0:
        raise ValueError("gross must be a non-negative whole number of fen")

    def none(reason: str) -> Quote:
        return Quote(gross, 0, gross, (), (reason,))

    if member is None:
        return none(not_member_reason)
    if not member.is_valid_on(now.date()):
        return none(
            f"membership {member.status}" if member.status != "active" else "membership has ended"
        )
    if policy is None:
        return none("no discount policy installed")
    if policy.status != "active":
        return none(f"merchant {policy.status}: no member discounts")
    if policy.is_expired(now):
        return none(f"discount policy expired at {iso(policy.expires_at)}")
    best: tuple[int, str] = (0, "")
    for rule in policy.rules:
        if rule.kind == "percent_off":
            amount = min(gross, _percent_of(gross, rule.basis_points, policy.rounding))
            if amount > best[0]:
                best = (amount, rule.id)
    if best[0] == 0:
        return none("no rule gives a discount on this amount")
    return Quote(gross, best[0], gross - best[0], (best[1],), ())


def build_policy(
    *,
    merchant_id: str,
    merchant_name: str,
    status: str,
    version: int,
    issued_at: datetime,
    expires_at: datetime,
    rules: list[Rule],
    keys: list[Ed25519PrivateKey],
    rounding: str = "half-up",
) -> bytes:
    signed = {
        "type": "policy",
        "merchant_id": merchant_id,
        "merchant_name": merchant_name,
        "status": status,
        "version": version,
        "issued_at": iso(issued_at),
        "expires_at": iso(expires_at),
        "rounding": rounding,
        "rules": [{"id": r.id, "kind": r.kind, "basis_points": r.basis_points} for r in rules],
    }
    _parse_signed(signed)  # refuse to sign what a terminal would refuse
    return canonical_json(sign(signed, keys))


def _parse_signed(signed: Mapping[str, Any]) -> Policy:
    try:
        if signed["type"] != "policy":
            raise PolicyError("policy refused: not a policy document")
        rules = []
        for raw in signed["rules"]:
            if raw["kind"] != "percent_off":
                raise PolicyError(f"policy refused: rule kind {raw['kind']!r} is not supported")
            bp = raw["basis_points"]
            if not isinstance(bp, int) or isinstance(bp, bool) or not 0 <= bp <= 10000:
                raise PolicyError("policy refused: basis_points must be a whole number 0..10000")
            rules.append(Rule(str(raw["id"]), "percent_off", bp))
        policy = Policy(
            merchant_id=str(signed["merchant_id"]),
            merchant_name=str(signed["merchant_name"]),
            status=str(signed["status"]),
            version=int(signed["version"]),
            issued_at=parse_iso(signed["issued_at"]),
            expires_at=parse_iso(signed["expires_at"]),
            rounding=str(signed.get("rounding", "half-up")),
            rules=tuple(rules),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PolicyError(f"policy refused: malformed ({exc})") from None
    if policy.status not in MERCHANT_STATUSES:
        raise PolicyError(f"policy refused: unknown merchant status {policy.status!r}")
    if policy.rounding not in ROUNDING_MODES:
        raise PolicyError(f"policy refused: unknown rounding {policy.rounding!r}")
    return policy


def verify_policy(
    data: bytes,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    merchant_id: str,
    installed_version: int = 0,
) -> Policy:
    """Verify a signed policy for this terminal's merchant; refuse rollbacks."""
    try:
        envelope = json.loads(data)
    except ValueError:
        raise PolicyError("policy refused: malformed (not JSON)") from None
    try:
        signed = verify(envelope, trusted, what="policy")
    except SignatureError as exc:
        raise PolicyError(f"policy refused: {exc}") from None
    policy = _parse_signed(signed)
    if policy.merchant_id != merchant_id:
        raise PolicyError(
            f"policy refused: it is for merchant {policy.merchant_id}, not {merchant_id}"
        )
    if policy.version <= installed_version:
        raise PolicyError(
            f"policy refused: rollback (version {policy.version} is not newer than "
            f"installed version {installed_version})"
        )
    return policy
