"""The discount engine: ``quote(basket, member, policy, now, usage) -> Quote`` (pure).

No I/O, no clock of its own, no float: every amount is integer fen and every
step is integer arithmetic, so an auditor who replays a sale from the journal
with the same policy gets the same fen. The result does not depend on the order
of the basket lines (ties are broken by the lines' content).

How a rule is priced (docs/protocol.md, "Merchant policy", says the same):

1. Gates: member tier, time window (policy's local time), quota not used up.
2. Eligible lines: the rule's ``eligible`` (default: all) minus its ``exclude``
   minus the policy's ``exclude``, with something left to pay. Their amount
   still to pay must reach ``min_spend``.
3. The offer: percent_off (rounded as the policy declares), amount_off (once, or
   per unit), member_price (pay ``qty * price``), free_item (whole units).
4. Limits: never more than a line still costs, then ``cap``, then what the amount
   quota leaves, then (``down-to-jiao``) down to a multiple of 10 fen.

``combine: best`` prices every rule on the full basket and applies the one that
gives most (the first in the policy on a tie); ``sequence`` applies the rules in
the policy's order, each on what the earlier ones left to pay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from terminal.basket import NO_USAGE, Basket, Line, RuleUsage, Usage
from terminal.money import fen
from terminal.policy import PERIOD_WORDS, Policy, Rule, Selection, shop_day, window_refusal
from terminal.roster import Membership
from terminal.timefmt import iso


@dataclass(frozen=True)
class LineQuote:
    line: Line
    discount: int
    rules: tuple[str, ...]  # the rules that discounted this line, in order

    @property
    def gross(self) -> int:
        return self.line.gross

    @property
    def net(self) -> int:
        return self.line.gross - self.discount


@dataclass(frozen=True)
class NotApplied:
    rule_id: str
    reason: str  # plain words: "minimum spend 50.00 not reached (eligible items 49.99)"


@dataclass(frozen=True)
class Quote:
    gross: int
    discount: int
    net: int
    applied: tuple[str, ...]  # rule ids that gave a discount, in the order applied
    reasons: tuple[str, ...]  # why a discount was not (fully) given, for people
    lines: tuple[LineQuote, ...] = ()  # in basket order
    by_rule: tuple[tuple[str, int], ...] = ()  # (rule id, fen) for each applied rule
    not_applied: tuple[NotApplied, ...] = ()  # every rule that gave nothing, and why


@dataclass(frozen=True)
class _Offer:
    rule: Rule
    total: int
    shares: dict[int, int]  # line index -> fen
    notes: tuple[str, ...]  # why it is less than it could be (cap, quota, rounding)


def _percent(amount: int, basis_points: int, rounding: str) -> int:
    """``amount * basis_points / 10000`` in fen, rounded as the policy declares."""
    numerator = amount * basis_points
    if rounding == "half-up":
        return (numerator + 5000) // 10000  # amounts are never negative
    return numerator // 10000  # "down", and "down-to-jiao" before its final step


LineKey = tuple[str, str, int, int]  # a line's content, for deterministic tie-breaks
NOTHING_USED = RuleUsage()


def _allocate(
    total: int, indices: Sequence[int], weights: Sequence[int], keys: Sequence[LineKey]
) -> dict[int, int]:
    """Split ``total`` fen over lines in proportion to ``weights`` (largest remainder).

    Each share is at most its weight when ``total <= sum(weights)``. Ties go to the
    line that sorts first by content, so the split does not depend on line order.
    """
    whole = sum(weights)
    if whole == 0 or total == 0:
        return {}
    shares = {}
    remainders = []
    given = 0
    for i, w in zip(indices, weights, strict=True):
        share, rem = divmod(total * w, whole)
        shares[i] = share
        given += share
        if rem:
            remainders.append((-rem, keys[i], i))
    left = total - given
    if left:
        remainders.sort()
        for k in range(left):
            shares[remainders[k][2]] += 1
    return shares


class _Index:
    """The basket's line indices by category and by SKU, to select lines without a
    per-line test for every rule (a rule names a few categories; a basket has many lines)."""

    def __init__(self, lines: Sequence[Line]) -> None:
        self.lines = lines
        self.keys: list[LineKey] = [(x.sku, x.category, x.qty, x.unit_price) for x in lines]
        self.all = frozenset(range(len(lines)))
        self.by_category: dict[str, set[int]] = {}
        self.by_sku: dict[str, set[int]] = {}
        for i, (sku, category, _, _) in enumerate(self.keys):
            found = self.by_category.get(category)
            if found is None:
                self.by_category[category] = {i}
            else:
                found.add(i)
            found = self.by_sku.get(sku)
            if found is None:
                self.by_sku[sku] = {i}
            else:
                found.add(i)

    def select(self, selection: Selection) -> set[int]:
        found: set[int] = set()
        for category in selection.categories:
            found |= self.by_category.get(category, set())
        for sku in selection.skus:
            found |= self.by_sku.get(sku, set())
        return found

    def covered(self, rule: Rule, open_lines: frozenset[int]) -> list[int]:
        """Lines the rule takes (as Rule.covers) among ``open_lines``, in basket order."""
        chosen = open_lines if rule.eligible is None else open_lines & self.select(rule.eligible)
        if rule.exclude:
            chosen = chosen - self.select(rule.exclude)
        return sorted(chosen)


def _refusal(
    rule: Rule, policy: Policy, member: Membership, local: datetime, usage: Usage
) -> str | None:
    if rule.tiers is not None and member.tier not in rule.tiers:
        tiers = ", ".join(str(t) for t in sorted(rule.tiers))
        return f"only for member tier {tiers} (this member is tier {member.tier})"
    if rule.when is not None:
        refusal = window_refusal(rule.when, local, policy.holidays)
        if refusal is not None:
            return refusal
    if rule.quota is not None:
        used = usage.get(rule.id, NOTHING_USED)
        words = PERIOD_WORDS[rule.quota.per]
        if rule.quota.uses is not None and used.uses >= rule.quota.uses:
            return f"quota used: {used.uses}/{rule.quota.uses} {words}"
        if rule.quota.amount is not None and used.amount >= rule.quota.amount:
            return f"quota used: {fen(used.amount)}/{fen(rule.quota.amount)} {words}"
    return None


def _price(
    rule: Rule,
    policy: Policy,
    index: _Index,
    covered: Sequence[int],
    remaining: Sequence[int],
    usage: Usage,
) -> _Offer | str:
    """What ``rule`` gives on the lines it covers, or why it gives nothing."""
    lines, keys = index.lines, index.keys
    if not covered:
        where = f" ({rule.eligible.describe()})" if rule.eligible else ""
        return f"no eligible items in the basket{where}"
    indices = [i for i in covered if remaining[i] > 0]
    if not indices:
        return "nothing left to pay on its items after the offers before it"
    weights = [remaining[i] for i in indices]
    eligible = sum(weights)
    if eligible < rule.min_spend:
        return f"minimum spend {fen(rule.min_spend)} not reached (eligible items {fen(eligible)})"

    raw: dict[int, int]
    if rule.kind == "percent_off":
        amount = _percent(eligible, rule.basis_points, policy.rounding)
        raw = _allocate(amount, indices, weights, keys)
    elif rule.kind == "amount_off" and rule.per == "transaction":
        raw = _allocate(min(rule.amount, eligible), indices, weights, keys)
    elif rule.kind == "amount_off":
        raw = {i: min(remaining[i], rule.amount * lines[i].qty) for i in indices}
    elif rule.kind == "member_price":
        raw = {i: max(0, remaining[i] - lines[i].qty * rule.price) for i in indices}
    else:  # free_item: whole units, cheapest (or dearest) first
        dearest = rule.pick == "dearest"
        order = sorted(
            indices,
            key=lambda i: (-lines[i].unit_price if dearest else lines[i].unit_price, keys[i]),
        )
        raw, left = {}, rule.items
        for i in order:
            if left == 0:
                break
            line = lines[i]
            units = min(left, line.qty)
            raw[i] = min(units * line.unit_price, remaining[i] * units // line.qty)
            left -= units
    raw = {i: v for i, v in raw.items() if v}
    total = sum(raw.values())
    if total == 0:
        return "gives nothing at these prices"

    limited, notes = total, []
    if rule.cap is not None and limited > rule.cap:
        limited = rule.cap
        notes.append(f"capped at {fen(rule.cap)} per transaction")
    if rule.quota is not None and rule.quota.amount is not None:
        left_amount = rule.quota.amount - usage.get(rule.id, NOTHING_USED).amount
        if limited > left_amount:
            limited = left_amount
            notes.append(
                f"quota: {fen(left_amount)} of {fen(rule.quota.amount)} was left "
                f"{PERIOD_WORDS[rule.quota.per]}"
            )
    if policy.rounding == "down-to-jiao" and limited % 10:
        limited -= limited % 10
    if limited == 0:
        return "less than 0.10, rounded down to nothing" if not notes else notes[-1]
    if limited < total:
        kept = sorted(i for i, v in raw.items() if v)
        raw = _allocate(limited, kept, [raw[i] for i in kept], keys)
    return _Offer(rule, limited, {i: v for i, v in raw.items() if v}, tuple(notes))


def _none(basket: Basket, reason: str) -> Quote:
    gross = basket.gross
    return Quote(
        gross, 0, gross, (), (reason,), tuple(LineQuote(line, 0, ()) for line in basket.lines)
    )


def quote(
    basket: Basket,
    member: Membership | None,
    policy: Policy | None,
    now: datetime,
    usage: Usage = NO_USAGE,
    not_member_reason: str = "not a member",
) -> Quote:
    """Price one sale. Pure and deterministic.

    ``usage`` is the member's use of each quota rule in the rule's current period
    (terminal.policy.quota_periods names the periods; the journal counts them).
    """
    if not isinstance(basket, Basket):
        raise ValueError("quote() takes a Basket (Basket.of_amount(fen) for a plain amount)")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if member is None:
        return _none(basket, not_member_reason)
    if not member.is_valid_on(shop_day(policy, now)):
        return _none(
            basket,
            f"membership {member.status}" if member.status != "active" else "membership has ended",
        )
    if policy is None:
        return _none(basket, "no discount policy installed")
    status = policy.status_at(now)
    if status != "active":
        return _none(basket, f"merchant {status}: no member discounts")
    if policy.is_expired(now):
        return _none(basket, f"discount policy expired at {iso(policy.expires_at)}")
    if not policy.rules:
        return _none(basket, "this shop's policy has no member offers")

    lines = basket.lines
    local = now.astimezone(policy.zone)
    index = _Index(lines)
    open_lines = index.all - index.select(policy.exclude) if policy.exclude else index.all
    remaining = [line.gross for line in lines]
    skipped: list[NotApplied] = []
    offers: list[_Offer] = []

    if policy.combine == "sequence":
        for rule in policy.rules:
            outcome = _refusal(rule, policy, member, local, usage) or _price(
                rule, policy, index, index.covered(rule, open_lines), remaining, usage
            )
            if isinstance(outcome, str):
                skipped.append(NotApplied(rule.id, outcome))
                continue
            offers.append(outcome)
            for i, share in outcome.shares.items():
                remaining[i] -= share
    else:
        priced: list[_Offer | str] = [
            _refusal(rule, policy, member, local, usage)
            or _price(rule, policy, index, index.covered(rule, open_lines), remaining, usage)
            for rule in policy.rules
        ]
        best: _Offer | None = None
        for outcome in priced:
            if isinstance(outcome, _Offer) and (best is None or outcome.total > best.total):
                best = outcome
        for rule, outcome in zip(policy.rules, priced, strict=True):
            if isinstance(outcome, str):
                skipped.append(NotApplied(rule.id, outcome))
            elif outcome is not best and best is not None:
                skipped.append(
                    NotApplied(
                        rule.id,
                        f"gives {fen(outcome.total)}; {best.rule.label} gives more "
                        f"({fen(best.total)}) and offers do not combine here",
                    )
                )
        if best is not None:
            offers.append(best)

    line_discount = [0] * len(lines)
    line_rules: list[list[str]] = [[] for _ in lines]
    for offer in offers:
        for i, share in offer.shares.items():
            line_discount[i] += share
            line_rules[i].append(offer.rule.id)
    discount = sum(offer.total for offer in offers)
    gross = basket.gross
    labels = {rule.id: rule.label for rule in policy.rules}
    reasons = [f"{labels[s.rule_id]}: {s.reason}" for s in skipped]
    reasons += [f"{o.rule.label}: {note}" for o in offers for note in o.notes]
    return Quote(
        gross=gross,
        discount=discount,
        net=gross - discount,
        applied=tuple(o.rule.id for o in offers),
        reasons=tuple(reasons),
        lines=tuple(
            LineQuote(line, line_discount[i], tuple(line_rules[i])) for i, line in enumerate(lines)
        ),
        by_rule=tuple((o.rule.id, o.total) for o in offers),
        not_applied=tuple(skipped),
    )


def quote_json(q: Quote) -> dict[str, Any]:
    """The quote for people and tills: yuan strings and ``*_fen`` integers."""
    return {
        "gross": fen(q.gross),
        "discount": fen(q.discount),
        "net": fen(q.net),
        "gross_fen": q.gross,
        "discount_fen": q.discount,
        "net_fen": q.net,
        "rules": list(q.applied),
        "reasons": list(q.reasons),
        "lines": [
            {
                "sku": lq.line.sku,
                "category": lq.line.category,
                "qty": lq.line.qty,
                "unit_price": fen(lq.line.unit_price),
                "gross": fen(lq.gross),
                "discount": fen(lq.discount),
                "net": fen(lq.net),
                "unit_price_fen": lq.line.unit_price,
                "gross_fen": lq.gross,
                "discount_fen": lq.discount,
                "net_fen": lq.net,
                "rules": list(lq.rules),
            }
            for lq in q.lines
        ],
        "by_rule": [{"rule": r, "discount": fen(d), "discount_fen": d} for r, d in q.by_rule],
        "not_applied": [{"rule": n.rule_id, "reason": n.reason} for n in q.not_applied],
    }


def journal_record(q: Quote, member: Membership | None) -> dict[str, Any]:
    """What the journal keeps of a quote (field ``basket``): enough to recompute it.

    Basket lines (no personal data) with each line's discount, the member's tier
    and each applied rule's discount (the journal counts quotas from these).
    """
    return {
        "lines": [dict(lq.line.as_json(), discount=lq.discount) for lq in q.lines],
        "tier": member.tier if member is not None else None,
        "discounts": dict(q.by_rule),
    }
