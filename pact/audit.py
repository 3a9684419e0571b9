"""The audit engine (pure): findings over a merchant's journal entries, from what the
journal keeps and what the union signed, trusting neither the shop nor the union's
own figures.

It runs over the central store's entries (``unioncard central audit run``) and, being
pure, over any other copy of them. Each :class:`Finding` has a severity, the terminal,
the seq or seqs, a kind and a plain explanation (a message: English here, Chinese from
the catalogue). The checks:

- evidence, per terminal: a gap in the seqs, a broken chain (an entry whose hash is
  not its content's, or that does not follow the one before: edited, reordered,
  forked), a device signature that does not verify, time going backwards beyond
  :data:`CLOCK_TOLERANCE`; across the union's sales, a card's transaction counter
  (ATC) that repeats or goes backwards;
- compliance, per sale: the discount recomputed from the entry's basket with the
  signed policy version it names, the member's status and tier at that moment (the
  union's member history) and the card's earlier use at that merchant on all its
  terminals (quotas): over-discounts, under-discounts, discounts to a card that was
  not an active member, discounts after the merchant's suspension or exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pact.basket import Basket, Line, RuleUsage
from pact.chain import GENESIS, entry_hash
from pact.device import check_signature
from pact.discount import quote
from pact.errors import DeviceSignatureError, SignatureError
from pact.money import fen
from pact.policy import Policy, quota_periods
from pact.roster import Membership
from pact.sale import REVERSALS, Sale
from pact.text import N_, Msg
from pact.timefmt import parse_iso
from pact.usage import count_usage

CLOCK_TOLERANCE = timedelta(minutes=5)
HIGH, MEDIUM, LOW = "high", "medium", "low"


@dataclass(frozen=True)
class Finding:
    severity: str  # high, medium, low
    terminal_id: str
    seqs: tuple[int, ...]
    kind: str
    detail: Msg

    def line(self) -> str:
        """``terminal=<id> seq=<n> finding=<kind> detail=<text>`` (English)."""
        seq = ",".join(str(s) for s in self.seqs)
        return f"terminal={self.terminal_id} seq={seq} finding={self.kind} detail={self.detail}"

    def as_json(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "terminal_id": self.terminal_id,
            "seqs": list(self.seqs),
            "kind": self.kind,
            "detail": str(self.detail),
            "detail_id": self.detail.as_json(),
        }


@dataclass
class Facts:
    """What the audit trusts besides the entries: the union's signed policies, each
    terminal's device key, and each card's standing at a moment."""

    policy: Callable[[str, int], Policy | None]  # (merchant, version) -> the signed policy
    device_key: Callable[[str], Ed25519PublicKey | None]  # terminal -> its registered key
    membership: Callable[[str, datetime], Membership | None]  # (token, at) -> standing
    findings: list[Finding] = field(default_factory=list)


def audit(entries: Iterable[Sale], facts: Facts) -> list[Finding]:
    """Every finding over ``entries`` (one merchant's, of any of its terminals, each
    terminal's from its first entry in the period on), ordered by terminal and seq."""
    kept = list(entries)
    by_terminal: dict[str, list[Sale]] = {}
    for entry in kept:
        by_terminal.setdefault(entry.terminal_id, []).append(entry)
    findings: list[Finding] = []
    for terminal_id in sorted(by_terminal):
        findings += _evidence(sorted(by_terminal[terminal_id], key=lambda e: e.seq), facts)
    findings += _counters(kept)
    findings += _compliance(kept, facts)
    return sorted(findings, key=lambda f: (f.terminal_id, f.seqs, f.kind))


def _evidence(entries: Sequence[Sale], facts: Facts) -> list[Finding]:
    out: list[Finding] = []
    before: Sale | None = None
    for entry in entries:
        t = entry.terminal_id
        if entry_hash(entry.prev_hash, entry) != entry.hash:
            out.append(
                Finding(HIGH, t, (entry.seq,), "edited",
                        Msg.of(N_("the entry's content is not what its hash covers: it was "
                                  "changed after it was journaled")))
            )  # fmt: skip
        if before is not None:
            if entry.seq != before.seq + 1:
                out.append(
                    Finding(HIGH, t, (before.seq, entry.seq), "gap",
                            Msg.of(N_("entries %(first)s to %(last)s are missing"),
                                   first=before.seq + 1, last=entry.seq - 1))
                )  # fmt: skip
            elif entry.prev_hash != before.hash:
                out.append(
                    Finding(HIGH, t, (before.seq, entry.seq), "fork",
                            Msg.of(N_("the entry does not follow the one before it: the "
                                      "journal was forked or reordered")))
                )  # fmt: skip
            if parse_iso(entry.at) < parse_iso(before.at) - CLOCK_TOLERANCE:
                out.append(
                    Finding(MEDIUM, t, (before.seq, entry.seq), "time_backwards",
                            Msg.of(N_("the time goes back from %(before)s to %(at)s"),
                                   before=before.at, at=entry.at))
                )  # fmt: skip
        elif entry.seq == 1 and entry.prev_hash != GENESIS:
            out.append(
                Finding(HIGH, t, (1,), "fork",
                        Msg.of(N_("the first entry does not start the chain")))
            )  # fmt: skip
        key = facts.device_key(t)
        if entry.sig is not None and key is not None:
            try:
                check_signature(key, entry)
            except (DeviceSignatureError, SignatureError):
                out.append(
                    Finding(HIGH, t, (entry.seq,), "bad_signature",
                            Msg.of(N_("the device signature does not verify with the "
                                      "terminal's registered key")))
                )  # fmt: skip
        before = entry
    return out


def _counters(entries: Sequence[Sale]) -> list[Finding]:
    """A card's ATC must go up from one sale to the next, at any merchant."""
    out: list[Finding] = []
    by_card: dict[str, list[Sale]] = {}
    for e in entries:
        if e.kind is None and e.token is not None and e.atc is not None:
            by_card.setdefault(e.token, []).append(e)
    for sales in by_card.values():
        sales.sort(key=lambda e: (e.at, e.terminal_id, e.seq))
        for before, entry in zip(sales, sales[1:], strict=False):
            assert before.atc is not None and entry.atc is not None
            if entry.atc <= before.atc:
                kind = "atc_repeated" if entry.atc == before.atc else "atc_backwards"
                out.append(
                    Finding(HIGH, entry.terminal_id, (entry.seq,), kind,
                            Msg.of(N_("the card's transaction counter went from %(before)s "
                                      "(%(where)s) to %(atc)s: a copied or replayed card"),
                                   before=before.atc, atc=entry.atc,
                                   where=f"{before.terminal_id} #{before.seq}"))
                )  # fmt: skip
    return out


def _compliance(entries: Sequence[Sale], facts: Facts) -> list[Finding]:
    out: list[Finding] = []
    ordered = sorted(entries, key=lambda e: (e.at, e.terminal_id, e.seq))
    earlier: dict[str, list[Sale]] = {}  # token -> its entries so far
    for entry in ordered:
        if entry.token is not None:
            prior = earlier.setdefault(entry.token, [])
        else:
            prior = []
        if entry.kind is None and entry.basket is not None:
            finding = _check_sale(entry, prior, facts)
            if finding is not None:
                out.append(finding)
        if entry.token is not None and (entry.kind is None or entry.kind in REVERSALS):
            prior.append(entry)
    return out


def _check_sale(entry: Sale, prior: Sequence[Sale], facts: Facts) -> Finding | None:
    t, seq = entry.terminal_id, (entry.seq,)
    policy = facts.policy(entry.merchant_id, entry.policy_version)
    if policy is None:
        if entry.discount:
            return Finding(HIGH, t, seq, "unknown_policy",
                           Msg.of(N_("a discount under policy v%(version)s, which the union "
                                     "never signed for this merchant"),
                                  version=entry.policy_version))  # fmt: skip
        return None
    at = parse_iso(entry.at)
    member = facts.membership(entry.token, at) if entry.token is not None else None
    if entry.discount and (member is None or member.status != "active"):
        return Finding(HIGH, t, seq, "not_a_member",
                       Msg.of(N_("a discount of %(amount)s to a card that was not an active "
                                 "member then"), amount=fen(entry.discount)))  # fmt: skip
    status = policy.status_at(at)
    if entry.discount and status != "active":
        return Finding(HIGH, t, seq, "merchant_not_active",
                       Msg.of(N_("a discount of %(amount)s while the merchant was %(status)s"),
                              amount=fen(entry.discount), status=status))  # fmt: skip
    try:
        lines = tuple(
            Line(str(x["sku"]), str(x["category"]), int(x["qty"]), int(x["unit_price"]))
            for x in entry.basket["lines"]  # type: ignore[index]
        )
        basket = Basket(lines)
    except (KeyError, TypeError, ValueError):
        return Finding(HIGH, t, seq, "bad_basket",
                       Msg.of(N_("the entry's basket cannot be read back")))  # fmt: skip
    periods = dict(quota_periods(policy, at))
    used: Mapping[str, RuleUsage] = {
        rule_id: counts.get(entry.token, RuleUsage())
        for rule_id, counts in count_usage(prior, periods).items()
    } if entry.token is not None else {}  # fmt: skip
    owed = quote(basket, member, policy, at, used).discount
    if entry.discount > owed:
        return Finding(HIGH, t, seq, "over_discount",
                       Msg.of(N_("a discount of %(given)s where the policy gives %(owed)s"),
                              given=fen(entry.discount), owed=fen(owed)))  # fmt: skip
    if entry.discount < owed:
        return Finding(MEDIUM, t, seq, "under_discount",
                       Msg.of(N_("a discount of %(given)s where the member was owed %(owed)s"),
                              given=fen(entry.discount), owed=fen(owed)))  # fmt: skip
    return None
