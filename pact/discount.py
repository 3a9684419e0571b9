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

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from pact.basket import NO_USAGE, Basket, Line, RuleUsage, Usage
from pact.money import fen
from pact.policy import PERIOD_WORDS, Policy, Rule, Window, shop_day, window_refusal
from pact.roster import Membership
from pact.text import N_, Msg
from pact.timefmt import iso


@dataclass(frozen=True)
class LineQuote:
    line: Line
    discount: int
    rules: tuple[str, ...]  # the rules that discounted this line, in order
    # (rule id, fen) for each of ``rules``: how the line's discount splits over them. A
    # refund of some of the line's units gives back each rule's part in proportion.
    by_rule: tuple[tuple[str, int], ...] = ()

    @property
    def gross(self) -> int:
        return self.line.gross

    @property
    def net(self) -> int:
        return self.line.gross - self.discount


@dataclass(frozen=True)
class NotApplied:
    rule_id: str
    # a message id and its parameters (pact.text); in English, plain words:
    # "minimum spend 50.00 not reached (eligible items 49.99)"
    reason: Msg


@dataclass(frozen=True)
class Quote:
    gross: int
    discount: int
    net: int
    applied: tuple[str, ...]  # rule ids that gave a discount, in the order applied
    # why a discount was not (fully) given, for people, as messages (pact.text): one per
    # rule, "label: reason"; or, when no rule could apply (not a member, the merchant
    # suspended, the policy expired, ...), that one reason
    reasons: tuple[Msg, ...]
    lines: tuple[LineQuote, ...] = ()  # in basket order
    by_rule: tuple[tuple[str, int], ...] = ()  # (rule id, fen) for each applied rule
    not_applied: tuple[NotApplied, ...] = ()  # every rule that gave nothing, and why


def _percent(amount: int, basis_points: int, rounding: str) -> int:
    """``amount * basis_points / 10000`` in fen, rounded as the policy declares."""
    numerator = amount * basis_points
    if rounding == "half-up":
        return (numerator + 5000) // 10000  # amounts are never negative
    return numerator // 10000  # "down", and "down-to-jiao" before its final step


NOTHING_USED = RuleUsage()


# ---------------------------------------------------------------------------- per policy
# A terminal quotes every sale with the one policy it has installed, so what can be
# worked out from the policy alone is worked out once per Policy object: each rule's
# line selection as set differences, its fixed wording, the distinct time windows.
# Nothing kept here depends on a basket, a member, a moment or usage: those are
# priced afresh on every call. Reasons are messages (pact.text): a message id with
# parameters, which the page and the till translate; the rules' labels (the merchant's
# own words, signed) are parameters and stay as the merchant wrote them.

_PERCENT, _AMOUNT, _AMOUNT_EACH, _MEMBER_PRICE, _FREE = range(5)  # how a rule prices


@dataclass(frozen=True, slots=True)
class _RuleSpec:
    """One rule, with what the engine needs of it in the form it needs it."""

    rule: Rule
    label: str  # the rule's label (its notes)
    reason_label: str  # the label of its reasons: that of the policy's rule with this id
    how: int  # _PERCENT .. _FREE
    every_line: bool  # no ``eligible``: every line the policy does not exclude
    categories: tuple[str, ...]  # eligible categories the rule does not exclude
    skus: tuple[str, ...]  # eligible SKUs the rule does not exclude
    eligible_categories: frozenset[str]
    exclude_categories: frozenset[str]
    exclude_skus: tuple[str, ...]
    no_items: Msg  # the reason when no line is eligible
    tiers_text: str
    window: int  # index in _Prepared.windows; -1: no window
    cap_note: Msg | None


@dataclass(frozen=True, slots=True)
class _Prepared:
    policy: weakref.ref[Policy]
    zone: ZoneInfo
    rules: tuple[_RuleSpec, ...]
    windows: tuple[Window, ...]  # distinct; rules with equal windows share one
    exclude_categories: frozenset[str]  # the policy's exclusions
    exclude_skus: frozenset[str]
    named_skus: frozenset[str]  # every SKU a rule names (lines are indexed by these SKUs)


_PREPARED: dict[int, _Prepared] = {}  # id(policy) -> its preparation, while it lives


def _prepared(policy: Policy) -> _Prepared:
    """The policy's preparation, made on its first quote and kept while the object lives."""
    key = id(policy)
    found = _PREPARED.get(key)
    if found is not None and found.policy() is policy:
        return found
    found = _prepare(policy, weakref.ref(policy, lambda _: _PREPARED.pop(key, None)))
    _PREPARED[key] = found
    return found


def _prepare(policy: Policy, ref: weakref.ref[Policy]) -> _Prepared:
    labels = {rule.id: rule.label for rule in policy.rules}
    windows: dict[Window, int] = {}
    named: set[str] = set()
    specs = []
    for rule in policy.rules:
        eligible, exclude = rule.eligible, rule.exclude
        no_items = Msg.of(N_("no eligible items in the basket"))
        if eligible is None:
            categories: frozenset[str] = frozenset()
            skus: frozenset[str] = frozenset()
        else:
            if eligible:
                no_items = Msg.of(
                    N_("no eligible items in the basket (%(items)s)"), items=eligible.describe()
                )
            categories, skus = eligible.categories, eligible.skus
        named |= skus | exclude.skus
        if rule.kind == "percent_off":
            how = _PERCENT
        elif rule.kind == "amount_off" and rule.per == "transaction":
            how = _AMOUNT
        elif rule.kind == "amount_off":
            how = _AMOUNT_EACH
        elif rule.kind == "member_price":
            how = _MEMBER_PRICE
        else:
            how = _FREE
        specs.append(
            _RuleSpec(
                rule=rule,
                label=rule.label,
                reason_label=labels[rule.id],
                how=how,
                every_line=eligible is None,
                categories=tuple(sorted(categories - exclude.categories)),
                skus=tuple(sorted(skus - exclude.skus)),
                eligible_categories=categories,
                exclude_categories=exclude.categories,
                exclude_skus=tuple(sorted(exclude.skus)),
                no_items=no_items,
                tiers_text=", ".join(str(t) for t in sorted(rule.tiers or ())),
                window=-1 if rule.when is None else windows.setdefault(rule.when, len(windows)),
                cap_note=None
                if rule.cap is None
                else Msg.of(N_("capped at %(cap)s per transaction"), cap=fen(rule.cap)),
            )
        )
    return _Prepared(
        policy=ref,
        zone=policy.zone,
        rules=tuple(specs),
        windows=tuple(windows),
        exclude_categories=policy.exclude.categories,
        exclude_skus=policy.exclude.skus,
        named_skus=frozenset(named),
    )


# ---------------------------------------------------------------------------- per sale
class _Index:
    """The basket's lines the policy does not exclude, by category and by the SKUs rules
    name, so a rule's lines are found from the few categories it names."""

    __slots__ = ("lines", "qty", "price", "gross", "by_category", "by_sku")

    def __init__(self, lines: Sequence[Line], prepared: _Prepared) -> None:
        self.lines = lines  # Line sorts by content (sku, category, qty, unit_price)
        self.qty = [x.qty for x in lines]
        self.price = [x.unit_price for x in lines]
        self.gross = [q * p for q, p in zip(self.qty, self.price, strict=True)]
        self.by_category: dict[str, list[int]] = {}
        self.by_sku: dict[str, list[int]] = {}
        no_categories, no_skus = prepared.exclude_categories, prepared.exclude_skus
        named = prepared.named_skus
        for i, line in enumerate(lines):
            sku, category = line.sku, line.category
            if category in no_categories or sku in no_skus:
                continue
            found = self.by_category.get(category)
            if found is None:
                self.by_category[category] = [i]
            else:
                found.append(i)
            if sku in named:
                found = self.by_sku.get(sku)
                if found is None:
                    self.by_sku[sku] = [i]
                else:
                    found.append(i)

    def covered(self, spec: _RuleSpec) -> list[int]:
        """The open lines the rule takes (as Rule.covers), in no particular order."""
        by_category, by_sku = self.by_category, self.by_sku
        chosen: list[int]
        if spec.every_line:
            chosen = [
                i
                for category, found in by_category.items()
                if category not in spec.exclude_categories
                for i in found
            ]
        else:
            chosen = []
            for category in spec.categories:
                found = by_category.get(category)
                if found is not None:
                    chosen += found
            if spec.skus:
                lines, eligible, excluded = (
                    self.lines,
                    spec.eligible_categories,
                    spec.exclude_categories,
                )
                for sku in spec.skus:
                    chosen += [
                        i
                        for i in by_sku.get(sku, ())
                        if lines[i].category not in eligible and lines[i].category not in excluded
                    ]  # the lines of an eligible category are in already
        for sku in spec.exclude_skus:
            for i in by_sku.get(sku, ()):
                if i in chosen:
                    chosen.remove(i)
        return chosen


class _Offer(NamedTuple):
    spec: _RuleSpec
    total: int
    lines: list[int]  # line indices ...
    shares: list[int]  # ... and the fen each gets (never 0)
    notes: tuple[Msg, ...]  # why it is less than it could be (cap, quota, rounding)


def _allocate(
    total: int, whole: int, indices: list[int], weights: list[int], lines: Sequence[Line]
) -> list[int]:
    """Split ``total`` fen over lines in proportion to ``weights`` (largest remainder).

    ``whole`` is ``sum(weights)``; the shares are in the order of ``indices``. Each
    share is at most its weight when ``total <= whole``. Ties go to the line that
    sorts first by content, so the split does not depend on line order.
    """
    if whole <= 0 or total == 0:  # (weights are what lines still cost: never negative)
        return [0] * len(weights)
    shares = [total * w // whole for w in weights]
    left = total - sum(shares)  # fen still to give: one each to the largest remainders
    if not left:
        return shares
    remainders = [total * w % whole for w in weights]
    ranked = sorted(remainders, reverse=True)  # more than ``left`` of them are not 0
    least = ranked[left - 1]  # the smallest remainder that gets a fen
    if ranked[left] != least:  # no tie at the cut: the content of the lines does not matter
        for k, rem in enumerate(remainders):
            if rem >= least:
                shares[k] += 1
        return shares
    # Some of the remainders equal to ``least`` get a fen: the lines that sort first.
    tied = []
    for k, rem in enumerate(remainders):
        if rem > least:
            shares[k] += 1
        elif rem == least:
            tied.append(k)
    tied.sort(key=lambda k: (lines[indices[k]], indices[k]))
    for k in tied[: left - ranked.index(least)]:
        shares[k] += 1
    return shares


def _refusal(spec: _RuleSpec, tier: int, outside: Sequence[Msg | None], usage: Usage) -> Msg | None:
    rule = spec.rule
    if rule.tiers is not None and tier not in rule.tiers:
        return Msg.of(
            N_("only for member tier %(tiers)s (this member is tier %(tier)s)"),
            tiers=spec.tiers_text,
            tier=tier,
        )
    if spec.window >= 0:
        refusal = outside[spec.window]
        if refusal is not None:
            return refusal
    if rule.quota is not None:
        quota = rule.quota
        used = usage.get(rule.id, NOTHING_USED)
        period = Msg(PERIOD_WORDS[quota.per])
        if quota.uses is not None and used.uses >= quota.uses:
            return Msg.of(
                N_("quota used: %(used)s/%(quota)s %(period)s"),
                used=used.uses,
                quota=quota.uses,
                period=period,
            )
        if quota.amount is not None and used.amount >= quota.amount:
            return Msg.of(
                N_("quota used: %(used)s/%(quota)s %(period)s"),
                used=fen(used.amount),
                quota=fen(quota.amount),
                period=period,
            )
    return None


def _price(
    spec: _RuleSpec, index: _Index, remaining: list[int], usage: Usage, rounding: str
) -> _Offer | Msg:
    """What the rule gives on the lines it covers, or why it gives nothing."""
    rule, lines = spec.rule, index.lines
    chosen = index.covered(spec)
    if not chosen:
        return spec.no_items
    weights = [remaining[i] for i in chosen]
    if min(weights) <= 0:
        chosen = [i for i in chosen if remaining[i] > 0]
        if not chosen:
            return Msg.of(N_("nothing left to pay on its items after the offers before it"))
        weights = [remaining[i] for i in chosen]
    eligible = sum(weights)
    if eligible < rule.min_spend:
        return Msg.of(
            N_("minimum spend %(min)s not reached (eligible items %(eligible)s)"),
            min=fen(rule.min_spend),
            eligible=fen(eligible),
        )

    shares: list[int]
    how = spec.how
    if how == _PERCENT:
        amount = _percent(eligible, rule.basis_points, rounding)
        shares = _allocate(amount, eligible, chosen, weights, lines)
    elif how == _AMOUNT:
        shares = _allocate(min(rule.amount, eligible), eligible, chosen, weights, lines)
    elif how == _AMOUNT_EACH:  # min(still to pay, amount * qty), without a call per line
        amount, qty = rule.amount, index.qty
        shares = [
            w if w < (off := amount * qty[i]) else off for i, w in zip(chosen, weights, strict=True)
        ]
    elif how == _MEMBER_PRICE:  # max(0, still to pay - qty * price), likewise
        price, qty = rule.price, index.qty
        shares = [
            off if (off := w - qty[i] * price) > 0 else 0
            for i, w in zip(chosen, weights, strict=True)
        ]
    else:  # free_item: whole units, cheapest (or dearest) first
        unit_price, qty = index.price, index.qty
        dearest = rule.pick == "dearest"
        order = sorted(chosen, key=unit_price.__getitem__, reverse=dearest)
        if len({unit_price[i] for i in chosen}) < len(chosen):  # equal prices: by content
            sign = -1 if dearest else 1  # (Line sorts by it), then by position
            order = sorted(chosen, key=lambda i: (sign * unit_price[i], lines[i], i))
        chosen, shares, left = [], [], rule.items
        for i in order:
            units = min(left, qty[i])
            chosen.append(i)
            shares.append(min(units * unit_price[i], remaining[i] * units // qty[i]))
            left -= units
            if left == 0:
                break
    total = sum(shares)
    if total == 0:
        return Msg.of(N_("gives nothing at these prices"))

    limited = total
    notes: tuple[Msg, ...] = ()
    if rule.cap is not None and limited > rule.cap and spec.cap_note is not None:
        limited = rule.cap
        notes = (spec.cap_note,)
    quota = rule.quota
    if quota is not None and quota.amount is not None:
        left_amount = quota.amount - usage.get(rule.id, NOTHING_USED).amount
        if limited > left_amount:
            limited = left_amount
            notes += (
                Msg.of(
                    N_("quota: %(left)s of %(quota)s was left %(period)s"),
                    left=fen(left_amount),
                    quota=fen(quota.amount),
                    period=Msg(PERIOD_WORDS[quota.per]),
                ),
            )
    if rounding == "down-to-jiao" and limited % 10:
        limited -= limited % 10
    if limited == 0:
        if notes:
            return notes[-1]
        return Msg.of(N_("less than 0.10, rounded down to nothing"))
    if limited < total:  # (a line that got 0 gets 0 again: no need to drop it first)
        shares = _allocate(limited, total, chosen, shares, lines)
    if 0 in shares:
        chosen, shares = _nonzero(chosen, shares)
    return _Offer(spec, limited, chosen, shares, notes)


def _nonzero(indices: list[int], shares: list[int]) -> tuple[list[int], list[int]]:
    kept = [k for k, share in enumerate(shares) if share]
    return [indices[k] for k in kept], [shares[k] for k in kept]


def _apply(
    offer: _Offer,
    remaining: list[int],
    line_rules: list[tuple[str, ...]] | None,
    line_split: list[tuple[tuple[str, int], ...]] | None,
) -> None:
    """Take the offer's shares off what its lines still cost, and name it on them
    (unless ``line_rules`` and ``line_split`` are None: only the total is asked)."""
    if line_rules is None or line_split is None:
        for i, share in zip(offer.lines, offer.shares, strict=True):
            remaining[i] -= share
        return
    rule_id = offer.spec.rule.id
    named = (rule_id,)
    for i, share in zip(offer.lines, offer.shares, strict=True):
        remaining[i] -= share
        line_rules[i] += named
        line_split[i] += ((rule_id, share),)


def _none(basket: Basket, reason: Msg) -> Quote:
    gross = basket.gross
    return Quote(
        gross, 0, gross, (), (reason,), tuple(LineQuote(line, 0, ()) for line in basket.lines)
    )


def _gate(
    basket: Basket,
    member: Membership | None,
    policy: Policy | None,
    now: datetime,
    not_member_reason: Msg | None,
) -> Msg | None:
    """Why no rule can apply to this sale at all; None when the rules are to be priced."""
    if not isinstance(basket, Basket):
        raise ValueError("quote() takes a Basket (Basket.of_amount(fen) for a plain amount)")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if member is None:
        return not_member_reason or Msg.of(N_("not a member"))
    if not member.is_valid_on(shop_day(policy, now)):
        if member.status == "active":
            return Msg.of(N_("membership has ended"))
        if member.status == "suspended":
            return Msg.of(N_("membership suspended"))
        return Msg.of(N_("membership %(status)s"), status=member.status)
    if policy is None:
        return Msg.of(N_("no discount policy installed"))
    status = policy.status_at(now)
    if status == "suspended":
        return Msg.of(N_("merchant suspended: no member discounts"))
    if status == "exited":
        return Msg.of(N_("merchant exited: no member discounts"))
    if status != "active":
        return Msg.of(N_("merchant %(status)s: no member discounts"), status=status)
    if policy.is_expired(now):
        return Msg.of(N_("discount policy expired at %(at)s"), at=iso(policy.expires_at))
    if not policy.rules:
        return Msg.of(N_("this shop's policy has no member offers"))
    return None


class _Priced(NamedTuple):
    by_line: _Index  # the basket's lines the rules priced
    remaining: list[int]  # what each line still costs after the offers
    offers: list[_Offer]  # in the order applied
    skipped: list[tuple[_RuleSpec, Msg]]  # with why; [] when only the total is asked


def _price_rules(
    lines: Sequence[Line],
    tier: int,
    policy: Policy,
    now: datetime,
    usage: Usage,
    line_rules: list[tuple[str, ...]] | None = None,
    line_split: list[tuple[tuple[str, int], ...]] | None = None,
) -> _Priced:
    """Every rule priced over the lines (past the gates of :func:`_gate`). The rules
    applied to each line, and each one's fen on it, are added to ``line_rules`` and
    ``line_split`` when given; without them only the offers are worked out, and the
    rules that give nothing are not listed."""
    detail = line_rules is not None
    prepared = _prepared(policy)
    index = _Index(lines, prepared)
    remaining = index.gross.copy()
    local = now.astimezone(prepared.zone)
    outside = [window_refusal(w, local, policy.holidays) for w in prepared.windows]
    rounding = policy.rounding
    skipped: list[tuple[_RuleSpec, Msg]] = []
    offers: list[_Offer] = []

    if policy.combine == "sequence":
        for spec in prepared.rules:
            outcome = _refusal(spec, tier, outside, usage) or _price(
                spec, index, remaining, usage, rounding
            )
            if isinstance(outcome, Msg):
                if detail:
                    skipped.append((spec, outcome))
                continue
            offers.append(outcome)
            _apply(outcome, remaining, line_rules, line_split)
        return _Priced(index, remaining, offers, skipped)
    priced: list[_Offer | Msg] = [
        _refusal(spec, tier, outside, usage) or _price(spec, index, remaining, usage, rounding)
        for spec in prepared.rules
    ]
    best: _Offer | None = None
    for outcome in priced:
        if isinstance(outcome, _Offer) and (best is None or outcome.total > best.total):
            best = outcome
    if detail:
        for spec, outcome in zip(prepared.rules, priced, strict=True):
            if isinstance(outcome, Msg):
                skipped.append((spec, outcome))
            elif outcome is not best and best is not None:
                skipped.append(
                    (
                        spec,
                        Msg.of(
                            N_(
                                "gives %(amount)s; %(best)s gives more (%(best_amount)s) "
                                "and offers do not combine here"
                            ),
                            amount=fen(outcome.total),
                            best=best.spec.label,
                            best_amount=fen(best.total),
                        ),
                    )
                )
    if best is not None:
        offers.append(best)
        _apply(best, remaining, line_rules, line_split)
    return _Priced(index, remaining, offers, skipped)


def quote(
    basket: Basket,
    member: Membership | None,
    policy: Policy | None,
    now: datetime,
    usage: Usage = NO_USAGE,
    not_member_reason: Msg | None = None,
) -> Quote:
    """Price one sale. Pure and deterministic.

    ``usage`` is the member's use of each quota rule in the rule's current period
    (pact.policy.quota_periods names the periods; the journal counts them).
    ``not_member_reason`` is the reason given when ``member`` is None (by default,
    "not a member").
    """
    refused = _gate(basket, member, policy, now, not_member_reason)
    if refused is not None:
        return _none(basket, refused)
    assert member is not None and policy is not None  # (the gate says why not otherwise)
    lines = basket.lines
    line_rules: list[tuple[str, ...]] = [()] * len(lines)  # the rules applied to each line
    # ... and each one's fen on it, in the order the rules were applied
    line_split: list[tuple[tuple[str, int], ...]] = [()] * len(lines)
    index, remaining, offers, skipped = _price_rules(
        lines, member.tier, policy, now, usage, line_rules, line_split
    )
    line_discount = [g - r for g, r in zip(index.gross, remaining, strict=True)]
    discount = sum([offer.total for offer in offers])
    gross = sum(index.gross)
    reasons = [_of_rule(spec.reason_label, reason) for spec, reason in skipped]
    reasons += [_of_rule(o.spec.label, note) for o in offers for note in o.notes]
    return Quote(
        gross=gross,
        discount=discount,
        net=gross - discount,
        applied=tuple([o.spec.rule.id for o in offers]),
        reasons=tuple(reasons),
        lines=tuple(map(LineQuote, lines, line_discount, line_rules, line_split)),
        by_rule=tuple([(o.spec.rule.id, o.total) for o in offers]),
        not_applied=tuple([NotApplied(spec.rule.id, reason) for spec, reason in skipped]),
    )


def discount_owed(
    basket: Basket,
    member: Membership | None,
    policy: Policy | None,
    now: datetime,
    usage: Usage = NO_USAGE,
) -> int:
    """``quote(basket, member, policy, now, usage).discount``, without the rest of the
    quote (the lines' split, the reasons): what an audit recomputing every sale asks."""
    if _gate(basket, member, policy, now, None) is not None:
        return 0
    assert member is not None and policy is not None
    priced = _price_rules(basket.lines, member.tier, policy, now, usage)
    return sum([offer.total for offer in priced.offers])


def _of_rule(label: str, reason: Msg) -> Msg:
    """The reason of a rule, "label: reason" in English; the label is the merchant's
    own text, a parameter not translated."""
    return Msg.of(N_("%(rule)s: %(reason)s"), rule=label, reason=reason)


def quote_json(q: Quote) -> dict[str, Any]:
    """The quote for people and tills: yuan strings and ``*_fen`` integers.

    ``reasons`` are in English; ``reason_ids`` are the same reasons, in the same order,
    as messages to translate (``{"id": msgid, "params": {...}}``, pact.text), and so are
    each ``not_applied`` item's ``reason`` and ``reason_id``.
    """
    return {
        "gross": fen(q.gross),
        "discount": fen(q.discount),
        "net": fen(q.net),
        "gross_fen": q.gross,
        "discount_fen": q.discount,
        "net_fen": q.net,
        "rules": list(q.applied),
        "reasons": [str(r) for r in q.reasons],
        "reason_ids": [r.as_json() for r in q.reasons],
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
        "not_applied": [
            {"rule": n.rule_id, "reason": str(n.reason), "reason_id": n.reason.as_json()}
            for n in q.not_applied
        ],
    }


def journal_record(q: Quote, member: Membership | None) -> dict[str, Any]:
    """What the journal keeps of a quote (field ``basket``): enough to recompute it.

    Basket lines (no personal data) with each line's discount and how it splits over
    the rules (``by_rule``, which refunds give back in proportion), the member's tier
    and each applied rule's discount (the journal counts quotas from these).
    """
    return {
        "lines": [
            dict(lq.line.as_json(), discount=lq.discount, by_rule=dict(lq.by_rule))
            for lq in q.lines
        ],
        "tier": member.tier if member is not None else None,
        "discounts": dict(q.by_rule),
    }


def describe_quote(q: Quote, policy: Policy, form: str, now: datetime, tier: int) -> list[str]:
    """The quote as a table in plain words, one line each (for `unioncard quote`)."""
    local = now.astimezone(policy.zone)
    head = (
        "unsigned terms" if form == "offer" else f"policy v{policy.version} of {policy.merchant_id}"
    )
    out = [
        f"{head}; {local:%Y-%m-%d %a %H:%M} {policy.timezone} ({iso(now)}); member tier {tier}",
        f"{'sku':<16} {'category':<14} {'qty':>4} {'unit':>10} {'gross':>11} "
        f"{'discount':>10} {'net':>11}  rules",
    ]
    for lq in q.lines:
        out.append(
            f"{lq.line.sku[:16]:<16} {lq.line.category[:14]:<14} {lq.line.qty:>4} "
            f"{fen(lq.line.unit_price):>10} {fen(lq.gross):>11} {fen(lq.discount):>10} "
            f"{fen(lq.net):>11}  {', '.join(lq.rules)}"
        )
    out.append(f"gross {fen(q.gross)}, discount {fen(q.discount)}, net {fen(q.net)}")
    for rule_id, amount in q.by_rule:
        out.append(f"applied: {rule_id} {fen(amount)}")
    for reason in q.reasons:
        out.append(f"note: {reason}")
    return out
