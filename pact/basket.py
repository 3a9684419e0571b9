"""What a customer buys, and what a member has already used: values for the discount engine.

Pure: no I/O, no clock. Money is integer fen. A basket line carries no personal
data (SKU, category, quantity, unit price), so it may be journaled and uploaded
for the auditors.

The JSON forms (till API, ``unioncard quote --basket/--usage``, docs/protocol.md)
give prices in yuan as strings ("12.50"); :func:`parse_basket` and
:func:`parse_usage` turn them into fen and name the field that is wrong
(:class:`pact.errors.BasketError`, a ValueError, with a message id and parameters).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pact.errors import BasketError
from pact.money import MAX_SALE_FEN, fen, parse_yuan
from pact.text import N_

MAX_LINES = 500
MAX_QTY = 9999
PLAIN_CATEGORY = "general"  # the one line of a sale rung up as a plain amount
PLAIN_SKU = "amount"
CATEGORY_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
MAX_SKU = 64


@dataclass(frozen=True, order=True)
class Line:
    """One basket line. Ordered by its content, so sorting lines is deterministic."""

    sku: str
    category: str
    qty: int
    unit_price: int  # fen

    @property
    def gross(self) -> int:
        return self.qty * self.unit_price

    def as_json(self) -> dict[str, Any]:
        """The journaled form (fen integers)."""
        return {
            "sku": self.sku,
            "category": self.category,
            "qty": self.qty,
            "unit_price": self.unit_price,
        }


@dataclass(frozen=True)
class Basket:
    lines: tuple[Line, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.lines) <= MAX_LINES:
            raise BasketError(N_("a basket has 1 to %(max)s lines"), max=MAX_LINES)
        for i, line in enumerate(self.lines):
            _check_line(line, f"basket[{i}]")
        if self.gross > MAX_SALE_FEN:
            raise BasketError(
                N_("the basket total is above the limit of %(limit)s"), limit=fen(MAX_SALE_FEN)
            )

    @property
    def gross(self) -> int:
        return sum(line.gross for line in self.lines)

    @classmethod
    def of_amount(cls, gross: int) -> Basket:
        """A sale rung up as a plain amount: one line of category ``general``."""
        return cls((Line(PLAIN_SKU, PLAIN_CATEGORY, 1, gross),))


@dataclass(frozen=True)
class RuleUsage:
    """What one member used of one rule in the rule's current quota period."""

    uses: int = 0  # sales in which the rule gave a discount
    amount: int = 0  # fen of discount the rule gave

    def __post_init__(self) -> None:
        for name in ("uses", "amount"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise BasketError(
                    N_("usage %(field)s must be a whole number, 0 or more"), field=name
                )


Usage = Mapping[str, RuleUsage]  # rule id -> usage in that rule's current period
NO_USAGE: Usage = {}


def _check_line(line: Line, where: str) -> None:
    if not isinstance(line.sku, str) or not 1 <= len(line.sku) <= MAX_SKU or not _text(line.sku):
        raise BasketError(
            N_("%(where)s.sku must be text of 1 to %(max)s characters"), where=where, max=MAX_SKU
        )
    if not isinstance(line.category, str) or not CATEGORY_RE.match(line.category):
        raise BasketError(
            N_(
                "%(where)s.category must be lower-case letters, digits, '_', '.' or '-' "
                "(at most 40), like grocery or gift_card"
            ),
            where=where,
        )
    if not _whole(line.qty) or not 1 <= line.qty <= MAX_QTY:
        raise BasketError(
            N_("%(where)s.qty must be a whole number 1..%(max)s"), where=where, max=MAX_QTY
        )
    if not _whole(line.unit_price) or not 0 <= line.unit_price <= MAX_SALE_FEN:
        raise BasketError(N_("%(where)s.unit_price must be whole fen, 0 or more"), where=where)


def _text(value: str) -> bool:
    """Printable Unicode that UTF-8 can carry (a lone surrogate from JSON cannot be hashed
    into the journal)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return value.isprintable()


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def normal_category(text: str) -> str:
    """Categories compare in lower case: "Tobacco" from a till must not escape an exclusion."""
    return text.strip().lower()


def parse_basket(raw: Any) -> Basket:
    """A basket from JSON: a list of lines, or ``{"lines": [...]}``.

    Each line is ``{"sku": "...", "category": "...", "qty": 1, "unit_price": "12.50"}``
    (``qty`` defaults to 1). Raises BasketError naming the field that is wrong.
    """
    if isinstance(raw, dict) and set(raw) == {"lines"}:
        raw = raw["lines"]
    if not isinstance(raw, list):
        raise BasketError(
            N_(
                'basket must be a list of lines like {"sku": "A1", "category": '
                '"grocery", "qty": 1, "unit_price": "12.50"}'
            )
        )
    if not 1 <= len(raw) <= MAX_LINES:
        raise BasketError(
            N_("basket must have 1 to %(max)s lines (it has %(count)s)"),
            max=MAX_LINES,
            count=len(raw),
        )
    lines = []
    for i, item in enumerate(raw):
        where = f"basket[{i}]"
        if not isinstance(item, dict):
            raise BasketError(
                N_("%(where)s must be an object with sku, category, qty, unit_price"), where=where
            )
        unknown = set(item) - {"sku", "category", "qty", "unit_price"}
        if unknown:
            raise BasketError(
                N_("%(where)s has unknown fields: %(fields)s"),
                where=where,
                fields=", ".join(sorted(unknown)),
            )
        for name in ("sku", "category", "unit_price"):
            if name not in item:
                raise BasketError(N_("%(where)s.%(field)s is missing"), where=where, field=name)
        sku, category = item["sku"], item["category"]
        if not isinstance(sku, str) or not 1 <= len(sku.strip()) <= MAX_SKU:
            raise BasketError(
                N_("%(where)s.sku must be text of 1 to %(max)s characters"),
                where=where,
                max=MAX_SKU,
            )
        if not isinstance(category, str):
            raise BasketError(N_("%(where)s.category must be text, like grocery"), where=where)
        qty = item.get("qty", 1)
        if not _whole(qty) or not 1 <= qty <= MAX_QTY:
            raise BasketError(
                N_("%(where)s.qty must be a whole number 1..%(max)s"), where=where, max=MAX_QTY
            )
        price = item["unit_price"]
        if not isinstance(price, str):
            raise BasketError(
                N_('%(where)s.unit_price must be yuan as a string, like "12.50"'), where=where
            )
        try:
            unit_price = parse_yuan(price)
        except BasketError as exc:
            raise BasketError(
                N_("%(where)s.unit_price: %(problem)s"), where=where, problem=exc.msg
            ) from None
        line = Line(sku.strip(), normal_category(category), qty, unit_price)
        _check_line(line, where)
        lines.append(line)
    return Basket(tuple(lines))


def parse_usage(raw: Any) -> dict[str, RuleUsage]:
    """Usage from JSON: ``{"rule-id": {"uses": 1, "amount": "15.00"}}`` (both optional).

    Raises BasketError naming the field that is wrong.
    """
    if not isinstance(raw, dict):
        raise BasketError(N_('usage must be an object like {"free-film": {"uses": 1}}'))
    out = {}
    for rule_id, entry in raw.items():
        where = f"usage[{rule_id!r}]"
        if not isinstance(entry, dict):
            raise BasketError(
                N_('%(where)s must be an object like {"uses": 1, "amount": "15.00"}'),
                where=where,
            )
        unknown = set(entry) - {"uses", "amount"}
        if unknown:
            raise BasketError(
                N_("%(where)s has unknown fields: %(fields)s"),
                where=where,
                fields=", ".join(sorted(unknown)),
            )
        uses = entry.get("uses", 0)
        if not _whole(uses) or uses < 0:
            raise BasketError(N_("%(where)s.uses must be a whole number, 0 or more"), where=where)
        amount_text = entry.get("amount", "0")
        if not isinstance(amount_text, str):
            raise BasketError(
                N_('%(where)s.amount must be yuan as a string, like "15.00"'), where=where
            )
        try:
            amount = 0 if amount_text.strip() in ("0", "0.00", "") else parse_yuan(amount_text)
        except BasketError as exc:
            raise BasketError(
                N_("%(where)s.amount: %(problem)s"), where=where, problem=exc.msg
            ) from None
        out[str(rule_id)] = RuleUsage(uses, amount)
    return out
