"""Quota use shared by a merchant's terminals (pure): count it, sign it, check it.

A quota rule ("one free film a month") counts a member's use at every till of the
shop, not only at the one in front of them. At each sync the central service gives the
terminal a *usage file* for its merchant, signed with the snapshot role's key(s)::

    {"signed": {"type": "usage", "merchant_id": "M0001", "terminal_id": "T2",
                "issued_at": "...Z", "expires_at": "...Z",
                "rules": {"free-film": {"since": "2026-11-30T16:00:00Z",
                                        "members": {"<token>": [1, 4500]}}}},
     "signatures": [{"keyid": "...", "sig": "..."}]}

For each quota rule of the merchant's policy, from the start of its current period
(``since``): each member token's uses and amount of discount at the merchant's
**other** terminals (what this terminal's own journal counts is left out, so nothing
is counted twice), as the union held them when it signed. The terminal adds them to
its own journal's count while the file has not expired and only for the period it
names: once a new period starts, the file's figures no longer count. Sales at another
till after its last upload are not in the file: that is the exposure within the sync
gap (docs/protocol.md, "Usage file"). Nothing here reads a clock or a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pact.basket import RuleUsage
from pact.errors import SignatureError, UsageError
from pact.sale import Sale
from pact.signing import canonical_json, sign, verify
from pact.timefmt import iso, parse_iso

MAX_USAGE_BYTES = 16 * 1024 * 1024  # 180,000 members each using every rule: well under
NO_USE = RuleUsage()

Counts = dict[str, dict[str, RuleUsage]]  # rule id -> member token -> use


def count_usage(entries: Iterable[Sale], periods: Mapping[str, datetime]) -> Counts:
    """Each member's use of each quota rule in ``periods`` (rule id -> start of its
    current period), from ``entries`` (sales, voids, refunds; of any terminals): a
    sale's discount for the rule less what its void or refunds gave back, as the
    terminal's journal counts it (a use counts while something of it remains)."""
    kept = list(entries)
    back: dict[tuple[str, int, str], int] = {}
    for entry in kept:
        if entry.kind in ("void", "refund") and entry.ref_seq is not None and entry.basket:
            for rule_id, amount in entry.basket.get("discounts", {}).items():
                key = (entry.terminal_id, entry.ref_seq, rule_id)
                back[key] = back.get(key, 0) + int(amount)
    counts: Counts = {rule_id: {} for rule_id in periods}
    for entry in kept:
        if entry.kind is not None or entry.token is None or not entry.basket:
            continue
        at = parse_iso(entry.at)
        for rule_id, amount in entry.basket.get("discounts", {}).items():
            since = periods.get(rule_id)
            if since is None or at < since:
                continue
            remaining = max(0, int(amount) - back.get((entry.terminal_id, entry.seq, rule_id), 0))
            if remaining <= 0:
                continue
            members = counts[rule_id]
            was = members.get(entry.token, NO_USE)
            members[entry.token] = RuleUsage(was.uses + 1, was.amount + remaining)
    return counts


def build_usage(
    *,
    merchant_id: str,
    terminal_id: str,
    issued_at: datetime,
    expires_at: datetime,
    periods: Mapping[str, datetime],
    counts: Counts,
    keys: list[Ed25519PrivateKey],
) -> bytes:
    """The signed usage file for ``terminal_id`` (``counts`` leaves its own entries out)."""
    signed = {
        "type": "usage",
        "merchant_id": merchant_id,
        "terminal_id": terminal_id,
        "issued_at": iso(issued_at),
        "expires_at": iso(expires_at),
        "rules": {
            rule_id: {
                "since": iso(since),
                "members": {
                    token: [use.uses, use.amount]
                    for token, use in sorted(counts.get(rule_id, {}).items())
                },
            }
            for rule_id, since in sorted(periods.items())
        },
    }
    return canonical_json(sign(signed, keys))


@dataclass(frozen=True)
class SharedUsage:
    """A verified usage file: the other terminals' use of each quota rule."""

    merchant_id: str
    terminal_id: str
    issued_at: datetime
    expires_at: datetime
    rules: Mapping[str, tuple[datetime, Mapping[str, RuleUsage]]] = field(default_factory=dict)

    def lookup(self, token: str, rule_id: str, since: datetime, now: datetime) -> RuleUsage:
        """The others' use of ``rule_id`` by ``token`` in the period starting ``since``:
        nothing once the file has expired or names another period."""
        if now >= self.expires_at:
            return NO_USE
        found = self.rules.get(rule_id)
        if found is None or found[0] != since:
            return NO_USE
        return found[1].get(token, NO_USE)


def verify_usage(
    data: bytes,
    trusted: Mapping[str, Ed25519PublicKey],
    threshold: int,
    *,
    merchant_id: str,
    terminal_id: str,
    now: datetime | None,
    kept: SharedUsage | None = None,
) -> SharedUsage:
    """Check a usage file: signed by the snapshot role, for this terminal of this
    merchant, not expired at ``now`` (None: not judged), and not issued before the
    one ``kept`` (a rollback: an older file, replayed while it has not expired, would
    take back the uses the newer one counts). UsageError says why not."""
    if len(data) > MAX_USAGE_BYTES:
        raise UsageError("usage file refused: oversized")
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UsageError("usage file refused: malformed (not JSON)") from None
    try:
        signed = verify(envelope, trusted, threshold, what="usage file")
    except SignatureError as exc:
        raise UsageError(f"usage file refused: {exc}") from None
    try:
        usage = _parse(signed)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise UsageError(f"usage file refused: malformed ({exc})") from None
    if usage.merchant_id != merchant_id or usage.terminal_id != terminal_id:
        raise UsageError(
            f"usage file refused: it is for terminal {usage.terminal_id} of merchant "
            f"{usage.merchant_id}, not this one"
        )
    if now is not None and now >= usage.expires_at:
        raise UsageError(f"usage file refused: expired at {iso(usage.expires_at)}")
    if kept is not None and usage.issued_at < kept.issued_at:
        raise UsageError(
            f"usage file refused: rollback (issued at {iso(usage.issued_at)}, before the "
            f"kept one of {iso(kept.issued_at)})"
        )
    return usage


def _pair(pair: Any) -> RuleUsage:
    """A member's ``[uses, amount]``: two whole numbers (a shorter list was an
    IndexError's traceback, a float was cut to an int)."""
    if not isinstance(pair, list) or len(pair) != 2 or not all(type(n) is int for n in pair):
        raise ValueError("a member's use must be [uses, amount], two whole numbers")
    return RuleUsage(pair[0], pair[1])


def _parse(signed: Any) -> SharedUsage:
    if signed.get("type") != "usage":
        raise ValueError('type is not "usage"')
    rules: dict[str, tuple[datetime, Mapping[str, RuleUsage]]] = {}
    for rule_id, entry in signed["rules"].items():
        members = {str(token): _pair(pair) for token, pair in entry["members"].items()}
        rules[str(rule_id)] = (parse_iso(entry["since"]), members)
    return SharedUsage(
        merchant_id=str(signed["merchant_id"]),
        terminal_id=str(signed["terminal_id"]),
        issued_at=parse_iso(signed["issued_at"]),
        expires_at=parse_iso(signed["expires_at"]),
        rules=rules,
    )
