"""Voids and refunds (pure): when a sale may be reversed, and the journal entry that does it.

A void reverses one sale of the current business day whole: the entry names the
sale (``ref_seq``), carries the same amounts, rules and basket (so the settlement
subtracts them and the member's quota use is given back), and the supervisor's
reason (``note``). A sale is voided at most once, and not after a refund; a void
is not voided.

A refund reverses some units of some lines of a sale, within the policy's refund
window. Each line's discount is given back by a cumulative floor: after refunding
``u`` of a line's ``q`` units, its ``D`` fen of discount have been given back
``floor(D * u / q)`` in all. A refund's part of that is split over the rules that
gave the line its discount (``by_rule`` of the journaled line) in proportion to what
each has still to give back, by largest remainder (ties: the rules' order on the
line). So refunding every unit, in one refund or several, gives back exactly each
rule's discount, and no refund gives back more than the units it takes back cost
(its net is never below 0). docs/protocol.md ("Refund") states the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pact.errors import ReversalError
from pact.policy import REFUND_DAYS, Policy, shop_day
from pact.sale import DRAFT_FIELDS, MAX_NOTE, Sale, SaleDraft
from pact.text import N_, Msg
from pact.timefmt import parse_iso

VOID = "void"
REFUND = "refund"


def void_draft(
    sale: Sale, later: Iterable[Sale], reason: str, policy: Policy | None, now: datetime
) -> SaleDraft:
    """The entry that voids ``sale``; ``later`` are the entries journaled after it.

    Raises :class:`ReversalError` (one line, naming the sale) when it may not be.
    """
    reason = _reason(reason, sale, VOID)
    for entry in later:
        if entry.ref_seq == sale.seq and entry.kind == VOID:
            raise ReversalError(
                N_("sale %(seq)s was already voided (entry %(entry)s)"),
                seq=sale.seq,
                entry=entry.seq,
            )
        if entry.ref_seq == sale.seq and entry.kind == REFUND:
            raise ReversalError(
                N_(
                    "sale %(seq)s was partly refunded (entry %(entry)s): "
                    "refund the rest instead of voiding it"
                ),
                seq=sale.seq,
                entry=entry.seq,
            )
    if shop_day(policy, parse_iso(sale.at)) != shop_day(policy, now):
        raise ReversalError(
            N_("sale %(seq)s is not of today's business day: only today's sales can be voided"),
            seq=sale.seq,
        )
    return _reversing(sale, VOID, reason)


def _reason(reason: str, sale: Sale, kind: str) -> str:
    """The reason in one line; ReversalError when there is none, it is too long, or
    ``sale`` is not a sale (``kind``: VOID or REFUND, what is to be done)."""
    reason = " ".join(reason.split())
    if not reason.encode("utf-8", "replace").decode("utf-8") == reason:
        raise ReversalError(N_("the reason holds characters that are not text"))
    if not reason:
        if kind == VOID:
            raise ReversalError(
                N_("say why sale %(seq)s is voided (a reason is required)"), seq=sale.seq
            )
        raise ReversalError(
            N_("say why sale %(seq)s is refunded (a reason is required)"), seq=sale.seq
        )
    if len(reason) > MAX_NOTE:
        raise ReversalError(N_("the reason is longer than %(max)s characters"), max=MAX_NOTE)
    if not sale.is_sale:
        if kind == VOID:
            raise ReversalError(
                N_("entry %(seq)s is %(kind)s, not a sale: it cannot be voided"),
                seq=sale.seq,
                kind=_kind_word(sale.kind),
            )
        raise ReversalError(
            N_("entry %(seq)s is %(kind)s, not a sale: it cannot be refunded"),
            seq=sale.seq,
            kind=_kind_word(sale.kind),
        )
    return reason


def _kind_word(kind: str | None) -> Msg:
    """The kind of a journal entry in words (a message to translate)."""
    words = {VOID: N_("a void"), REFUND: N_("a refund"), "event": N_("an event")}
    return Msg(words[kind]) if kind in words else Msg.of("%(kind)s", kind=str(kind))


def refunded_units(sale: Sale, later: Iterable[Sale]) -> list[int]:
    """How many units of each of ``sale``'s lines the refunds in ``later`` took back."""
    lines = (sale.basket or {}).get("lines") or []
    done = [0] * len(lines)
    for entry in later:
        if entry.kind == REFUND and entry.ref_seq == sale.seq and entry.basket is not None:
            for line in entry.basket["lines"]:
                if 0 <= line.get("of", -1) < len(done):
                    done[line["of"]] += line["qty"]
    return done


def _split(line: Mapping[str, Any], sale: Sale, index: int) -> dict[str, int]:
    """How ``line``'s discount split over the rules: as journaled, or (a sale journaled
    before lines kept ``by_rule``) the sale's one rule."""
    if "by_rule" in line:
        return dict(line["by_rule"])
    if not line["discount"]:
        return {}
    discounts = sale.basket["discounts"] if sale.basket is not None else {}
    if len(discounts) != 1:
        raise ReversalError(
            N_(
                "line %(line)s of sale %(seq)s does not record how its discount splits over "
                "the sale's rules (journaled by an older version): void the sale instead"
            ),
            line=index,
            seq=sale.seq,
        )
    return {next(iter(discounts)): line["discount"]}


def refund_draft(
    sale: Sale,
    later: Iterable[Sale],
    items: Sequence[tuple[int, int]],
    reason: str,
    policy: Policy | None,
    now: datetime,
) -> SaleDraft:
    """The entry that refunds ``qty`` units of line ``index`` of ``sale`` for each
    ``(index, qty)`` of ``items``; ``later`` are the entries journaled after the sale.

    Raises :class:`ReversalError` (one line, naming the sale and line) when it may not be.
    """
    later = list(later)
    reason = _reason(reason, sale, REFUND)
    for entry in later:
        if entry.ref_seq == sale.seq and entry.kind == VOID:
            raise ReversalError(
                N_("sale %(seq)s was voided (entry %(entry)s): nothing is left to refund"),
                seq=sale.seq,
                entry=entry.seq,
            )
    window = policy.refund_days if policy is not None else REFUND_DAYS
    age = (shop_day(policy, now) - shop_day(policy, parse_iso(sale.at))).days
    if age > window:
        raise ReversalError(
            N_("sale %(seq)s is %(age)s days old: refunds are taken within %(days)s days"),
            seq=sale.seq,
            age=age,
            days=window,
        )
    if sale.basket is None:
        raise ReversalError(
            N_("sale %(seq)s does not record its lines (an older version): void it instead"),
            seq=sale.seq,
        )
    lines = sale.basket["lines"]
    if not items:
        raise ReversalError(
            N_("name the lines of sale %(seq)s to refund and how many units"), seq=sale.seq
        )
    done = refunded_units(sale, later)
    given = _given_by_rule(sale, later)
    seen: set[int] = set()
    out_lines: list[dict[str, Any]] = []
    by_rule: dict[str, int] = {}
    for index, qty in items:
        if not 0 <= index < len(lines):
            raise ReversalError(
                N_("sale %(seq)s has lines 0 to %(last)s: there is no line %(line)s"),
                seq=sale.seq,
                last=len(lines) - 1,
                line=index,
            )
        if index in seen:
            raise ReversalError(
                N_("line %(line)s of sale %(seq)s is named twice"), line=index, seq=sale.seq
            )
        seen.add(index)
        line = lines[index]
        left = line["qty"] - done[index]
        if not 1 <= qty <= left:
            raise ReversalError(
                N_(
                    "line %(line)s of sale %(seq)s (%(sku)s): %(left)s of its "
                    "%(units)s units are left to refund, not %(qty)s"
                ),
                line=index,
                seq=sale.seq,
                sku=str(line["sku"]),
                left=left,
                units=line["qty"],
                qty=qty,
            )
        split = _line_back(_split(line, sale, index), given[index], done[index], qty, line)
        for rule, back in split.items():
            by_rule[rule] = by_rule.get(rule, 0) + back
        out_lines.append(
            {
                "sku": line["sku"],
                "category": line["category"],
                "qty": qty,
                "unit_price": line["unit_price"],
                "discount": sum(split.values()),
                "by_rule": split,
                "of": index,
            }
        )
    gross = sum(line["qty"] * line["unit_price"] for line in out_lines)
    discount = sum(by_rule.values())
    rules = tuple(rule for rule in sale.rules if rule in by_rule)
    return _reversing(
        sale,
        REFUND,
        reason,
        gross=gross,
        discount=discount,
        net=gross - discount,
        rules=rules,
        basket={
            "lines": out_lines,
            "tier": sale.basket["tier"],
            "discounts": {rule: by_rule[rule] for rule in rules},
        },
    )


def _reversing(sale: Sale, kind: str, reason: str, **changes: Any) -> SaleDraft:
    """The entry of ``kind`` that reverses ``sale``: its fields (card, versions, and
    unless ``changes`` says otherwise its amounts, rules and basket), no card counter,
    naming the sale, with the reason."""
    drafted = {name: getattr(sale, name) for name in DRAFT_FIELDS}
    drafted.update(atc=None, kind=kind, ref_seq=sale.seq, note=reason, **changes)
    return SaleDraft(**drafted)


def _given_back(amount: int, units: int, of: int) -> int:
    """What ``units`` of ``of`` units give back of ``amount`` fen: rounded down, so the
    last unit gives back the rest."""
    return amount * units // of


def _given_by_rule(sale: Sale, later: Iterable[Sale]) -> list[dict[str, int]]:
    """What the refunds in ``later`` gave back of each rule's discount, line by line of
    ``sale``."""
    lines = (sale.basket or {}).get("lines") or []
    given: list[dict[str, int]] = [{} for _ in lines]
    for entry in later:
        if entry.kind == REFUND and entry.ref_seq == sale.seq and entry.basket is not None:
            for line in entry.basket["lines"]:
                if 0 <= line.get("of", -1) < len(given):
                    kept = given[line["of"]]
                    for rule, amount in (line.get("by_rule") or {}).items():
                        kept[rule] = kept.get(rule, 0) + amount
    return given


def _line_back(
    split: Mapping[str, int],
    given: Mapping[str, int],
    done: int,
    qty: int,
    line: Mapping[str, Any],
) -> dict[str, int]:
    """What refunding ``qty`` more units of ``line`` (``done`` refunded before, which
    gave back ``given``) gives back of each rule's discount on it (``split``): the
    line's cumulative floor less what was given back, never more than the units cost
    (a refund journaled before this rule gave each rule's floor apart), over the rules
    in proportion to what each has left to give back."""
    left = {rule: amount - given.get(rule, 0) for rule, amount in split.items()}
    left = {rule: amount for rule, amount in left.items() if amount > 0}
    due = _given_back(sum(split.values()), done + qty, line["qty"]) - sum(given.values())
    due = max(0, min(due, qty * line["unit_price"], sum(left.values())))
    if not due:
        return {}
    whole = sum(left.values())
    shares = {rule: due * amount // whole for rule, amount in left.items()}
    rest = due - sum(shares.values())  # fen still due: one each to the largest remainders
    ranked = sorted(left, key=lambda rule: -(due * left[rule] % whole))  # stable: line order
    for rule in ranked[:rest]:
        shares[rule] += 1
    return {rule: share for rule, share in shares.items() if share}
