"""Voids and refunds (pure): when a sale may be reversed, and the journal entry that does it.

A void reverses one sale of the current business day whole: the entry names the
sale (``ref_seq``), carries the same amounts, rules and basket (so the settlement
subtracts them and the member's quota use is given back), and the supervisor's
reason (``note``). A sale is voided at most once, and not after a refund; a void
is not voided.

A refund reverses some units of some lines of a sale, within the policy's refund
window. Each line's discount is given back per rule, as the sale split it
(``by_rule`` of each journaled line), by a cumulative floor: after refunding ``u``
of a line's ``q`` units, the rule's ``d`` fen on that line have been given back
``floor(d * u / q)`` in all. So refunding every unit, in one refund or several,
gives back exactly the sale's discount, and no refund gives back more than the
units it takes back received. docs/protocol.md ("Refund") states the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pact.errors import ReversalError
from pact.policy import REFUND_DAYS, Policy, shop_day
from pact.sale import DRAFT_FIELDS, MAX_NOTE, Sale, SaleDraft
from pact.timefmt import parse_iso

VOID = "void"
REFUND = "refund"


def void_draft(
    sale: Sale, later: Iterable[Sale], reason: str, policy: Policy | None, now: datetime
) -> SaleDraft:
    """The entry that voids ``sale``; ``later`` are the entries journaled after it.

    Raises :class:`ReversalError` (one line, naming the sale) when it may not be.
    """
    reason = _reason(reason, sale, "voided")
    for entry in later:
        if entry.ref_seq == sale.seq and entry.kind == VOID:
            raise ReversalError(f"sale {sale.seq} was already voided (entry {entry.seq})")
        if entry.ref_seq == sale.seq and entry.kind == REFUND:
            raise ReversalError(
                f"sale {sale.seq} was partly refunded (entry {entry.seq}): "
                "refund the rest instead of voiding it"
            )
    if shop_day(policy, parse_iso(sale.at)) != shop_day(policy, now):
        raise ReversalError(
            f"sale {sale.seq} is not of today's business day: only today's sales can be voided"
        )
    return _reversing(sale, VOID, reason)


def _reason(reason: str, sale: Sale, done: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise ReversalError(f"say why sale {sale.seq} is {done} (a reason is required)")
    if len(reason) > MAX_NOTE:
        raise ReversalError(f"the reason is longer than {MAX_NOTE} characters")
    if not sale.is_sale:
        raise ReversalError(f"entry {sale.seq} is a {sale.kind}, not a sale: it cannot be {done}")
    return reason


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
            f"line {index} of sale {sale.seq} does not record how its discount splits over "
            "the sale's rules (journaled by an older version): void the sale instead"
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
    reason = _reason(reason, sale, "refunded")
    for entry in later:
        if entry.ref_seq == sale.seq and entry.kind == VOID:
            raise ReversalError(
                f"sale {sale.seq} was voided (entry {entry.seq}): nothing is left to refund"
            )
    window = policy.refund_days if policy is not None else REFUND_DAYS
    age = (shop_day(policy, now) - shop_day(policy, parse_iso(sale.at))).days
    if age > window:
        raise ReversalError(
            f"sale {sale.seq} is {age} days old: refunds are taken within {window} days"
        )
    if sale.basket is None:
        raise ReversalError(
            f"sale {sale.seq} does not record its lines (an older version): void it instead"
        )
    lines = sale.basket["lines"]
    if not items:
        raise ReversalError(f"name the lines of sale {sale.seq} to refund and how many units")
    done = refunded_units(sale, later)
    seen: set[int] = set()
    out_lines: list[dict[str, Any]] = []
    by_rule: dict[str, int] = {}
    for index, qty in items:
        if not 0 <= index < len(lines):
            raise ReversalError(
                f"sale {sale.seq} has lines 0 to {len(lines) - 1}: there is no line {index}"
            )
        if index in seen:
            raise ReversalError(f"line {index} of sale {sale.seq} is named twice")
        seen.add(index)
        line = lines[index]
        left = line["qty"] - done[index]
        if not 1 <= qty <= left:
            raise ReversalError(
                f"line {index} of sale {sale.seq} ({line['sku']}): {left} of its "
                f"{line['qty']} units are left to refund, not {qty}"
            )
        split: dict[str, int] = {}
        for rule, amount in _split(line, sale, index).items():
            back = _given_back(amount, done[index] + qty, line["qty"]) - _given_back(
                amount, done[index], line["qty"]
            )
            if back:
                split[rule] = back
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
