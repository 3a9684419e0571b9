"""Merchant policies at the union: keep each merchant's terms, sign new versions.

The union authors a merchant's *terms* (the offers and how they combine; see
pact.policy and config/policy.schema.json). Publishing wraps the terms in a
header (merchant, status and since when, version, issue and expiry times) and
signs it with the key(s) the caller passes in, so the key that signs policies is
chosen in one place (``central.service.Union.publish_policy``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.errors import ConflictError, InputError
from central.store import Store
from pact.errors import PolicyError
from pact.policy import TERMS_FIELDS, build_policy, parse_terms
from pact.signing import canonical_json
from pact.text import N_
from pact.timefmt import iso, parse_iso

POLICY_LIFETIME = timedelta(days=30)
# What a union policy never discounts, whatever the shop offers (add-merchant's default).
STANDARD_EXCLUSIONS = ("gift_card", "lottery", "prescription", "tobacco")


def percent_terms(basis_points: int) -> dict[str, Any]:
    """The terms `add-merchant --discount N` gives: N % off everything but the exclusions."""
    return {
        "exclude": {"categories": list(STANDARD_EXCLUSIONS)},
        "rules": [{"id": "member-discount", "kind": "percent_off", "basis_points": basis_points}],
    }


def parse_terms_file(data: bytes, name: str) -> dict[str, Any]:
    """Validate an offer file for `central set-policy`; one line naming the field on error."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(
            N_("%(name)s is not valid JSON (%(reason)s)"), name=name, reason=str(exc)
        ) from None
    if isinstance(raw, dict) and ("signed" in raw or "type" in raw):
        raise InputError(
            N_("%(name)s is a signed policy; give the terms only (rules, exclude, combine, ...)"),
            name=name,
        )
    try:
        parse_terms(raw)
    except PolicyError as exc:
        raise InputError(N_("%(name)s: %(reason)s"), name=name, reason=exc.msg) from None
    terms: dict[str, Any] = raw
    return terms


@dataclass(frozen=True)
class StatusTimeline:
    """A merchant's status as its history of changes gives it at one moment."""

    status: str  # in force
    since: datetime  # in force since
    ahead: tuple[tuple[str, datetime], ...]  # decided, in force later (ascending)
    exited_at: datetime | None  # when its exit takes (or took) effect, if one is decided


def status_timeline(history: Sequence[Mapping[str, Any]], now: datetime) -> StatusTimeline:
    """The status in force at ``now`` and the changes ahead, from the merchant's status
    history (rows with status and effective_at, in the order they take effect). Two
    changes taking effect at the same moment: the one decided later stands. Nothing
    after the first exit counts (a reinstatement scheduled before the exit was decided
    is cancelled by it)."""
    by_moment: dict[datetime, str] = {}
    for row in history:
        by_moment[parse_iso(row["effective_at"])] = row["status"]
    moments = sorted(by_moment)
    if not moments:
        raise InputError(N_("the merchant has no status history"))
    exits = [m for m in moments if by_moment[m] == "exited"]
    if exits:  # an exit is final: what was scheduled after it never takes effect
        moments = [m for m in moments if m <= exits[0]]
    status, since = by_moment[moments[0]], moments[0]
    ahead = []
    for moment in moments[1:]:
        if moment <= now:
            if by_moment[moment] != status:
                status, since = by_moment[moment], moment
        else:
            ahead.append((by_moment[moment], moment))
    return StatusTimeline(status, since, tuple(ahead), exits[0] if exits else None)


def checked_terms(terms: Mapping[str, Any]) -> dict[str, Any]:
    """``terms`` if a policy may carry them (InputError naming what is wrong)."""
    unknown = set(terms) - set(TERMS_FIELDS)
    if unknown:
        raise InputError(N_("unknown policy terms: %(terms)s"), terms=", ".join(sorted(unknown)))
    try:
        parse_terms(dict(terms))
    except PolicyError as exc:
        raise InputError(N_("policy terms refused: %(reason)s"), reason=exc.msg) from None
    return dict(terms)


def publish(
    store: Store,
    merchant_id: str,
    keys: Sequence[Ed25519PrivateKey],
    now: datetime,
    lifetime: timedelta = POLICY_LIFETIME,
    terms: Mapping[str, Any] | None = None,
) -> int:
    """Sign the merchant's next policy version with ``keys``; return the version.

    Its terms are ``terms`` (an approved draft's; checked, and kept), else those of
    the version before it (a status change signs the terms in force again), else, for
    the first version, the terms kept at admission. So each version's terms are the
    one before's or one approved draft's, whatever publishes at the same moment: two
    at once take the same version number, and the second is refused (``put_signed``)."""
    merchant = store.merchant(merchant_id)
    timeline = status_timeline(store.status_history(merchant_id), now)
    store.apply_status(merchant_id, timeline.status, iso(timeline.since))
    kind = f"policy:{merchant_id}"
    latest = store.latest_signed(kind)
    version = (latest[0] if latest else 0) + 1
    given = terms is not None
    if terms is not None:
        terms = checked_terms(terms)
    elif latest is not None:
        terms = signed_terms(latest[1])
    else:
        stored = store.terms(merchant_id)
        terms = (
            json.loads(stored) if stored is not None else percent_terms(merchant["basis_points"])
        )
    data = build_policy(
        merchant_id=merchant_id,
        merchant_name=merchant["name"],
        status=timeline.status,
        status_since=timeline.since,
        status_changes=timeline.ahead,
        version=version,
        issued_at=now,
        expires_at=now + lifetime,
        terms=terms,
        keys=list(keys),
    )
    if store.put_signed(kind, version, data, iso(now)) is False:
        raise ConflictError(
            N_("policy v%(version)s of %(merchant)s was just signed elsewhere: retry"),
            version=version,
            merchant=merchant_id,
        )
    if given:  # kept too (what the first version signs, were it ever signed again)
        store.set_terms(merchant_id, canonical_json(terms).decode(), iso(now))
    return version


def signed_terms(data: bytes) -> dict[str, Any]:
    """The terms a signed policy carries (its fields that are terms, as signed)."""
    signed = json.loads(data)["signed"]
    return {k: v for k, v in signed.items() if k in TERMS_FIELDS}
