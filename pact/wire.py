"""Formats on the wire between terminals and the central service (pure).

docs/protocol.md documents each message. Both sides import this module, so a
field can only be added in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pact.chain import OPTIONAL_SALE_FIELDS, SALE_FIELDS
from pact.errors import WireFormatError

SALES_FORMAT = "unioncard.sales.v1"
MAX_BATCH = 1000

_INT_FIELDS = ("seq", "gross", "discount", "net", "roster_version", "policy_version")
_STR_FIELDS = ("sale_id", "at", "terminal_id", "merchant_id", "pan_last4", "prev_hash", "hash")


def encode_sales(terminal_id: str, sales: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "format": SALES_FORMAT,
        "terminal_id": terminal_id,
        "sales": [
            {
                k: s[k]
                for k in (*SALE_FIELDS, "prev_hash", "hash")
                if k not in OPTIONAL_SALE_FIELDS or s.get(k) is not None
            }
            for s in sales
        ],
    }


def _whole(value: Any, lo: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo


def check_basket(basket: Any, sale: Mapping[str, Any], where: str) -> None:
    """A sale's ``basket``: lines (sku, category, qty, unit_price, discount), tier, discounts.

    The lines must add up to the sale's gross and discount, and the rules' discounts
    to the sale's discount, so the record an auditor recomputes is the one settled.
    """
    if not isinstance(basket, dict) or set(basket) != {"lines", "tier", "discounts"}:
        raise WireFormatError(f"{where}.basket must have exactly lines, tier and discounts")
    lines = basket["lines"]
    if not isinstance(lines, list) or not lines:
        raise WireFormatError(f"{where}.basket.lines must be a non-empty list")
    gross = discount = 0
    for j, line in enumerate(lines):
        at = f"{where}.basket.lines[{j}]"
        if not isinstance(line, dict) or set(line) != {
            "sku",
            "category",
            "qty",
            "unit_price",
            "discount",
        }:
            raise WireFormatError(f"{at} must have sku, category, qty, unit_price, discount")
        if not isinstance(line["sku"], str) or not isinstance(line["category"], str):
            raise WireFormatError(f"{at}.sku and .category must be strings")
        if not _whole(line["qty"], 1) or not _whole(line["unit_price"]):
            raise WireFormatError(f"{at}: qty must be 1 or more and unit_price whole fen")
        line_gross = line["qty"] * line["unit_price"]
        if not _whole(line["discount"]) or line["discount"] > line_gross:
            raise WireFormatError(f"{at}.discount must be whole fen, at most the line's gross")
        gross += line_gross
        discount += line["discount"]
    if gross != sale["gross"] or discount != sale["discount"]:
        raise WireFormatError(f"{where}.basket lines do not add up to the sale's gross/discount")
    tier = basket["tier"]
    if tier is not None and not _whole(tier):
        raise WireFormatError(f"{where}.basket.tier must be a whole number or null")
    discounts = basket["discounts"]
    if not isinstance(discounts, dict) or not all(_whole(v, 1) for v in discounts.values()):
        raise WireFormatError(f"{where}.basket.discounts must map rule ids to whole fen")
    if sum(discounts.values()) != sale["discount"] or set(discounts) != set(sale["rules"]):
        raise WireFormatError(f"{where}.basket.discounts do not match the sale's rules/discount")


def decode_sales(body: Any) -> tuple[str, list[dict[str, Any]]]:
    """Validate an upload; return (terminal_id, sales). Raises WireFormatError."""
    if not isinstance(body, dict) or body.get("format") != SALES_FORMAT:
        raise WireFormatError(f"upload is not in the {SALES_FORMAT} format")
    terminal_id = body.get("terminal_id")
    sales = body.get("sales")
    if not isinstance(terminal_id, str) or not isinstance(sales, list):
        raise WireFormatError("upload needs terminal_id (string) and sales (list)")
    if len(sales) > MAX_BATCH:
        raise WireFormatError(f"upload has {len(sales)} sales; at most {MAX_BATCH} per batch")
    out = []
    for i, sale in enumerate(sales):
        if not isinstance(sale, dict):
            raise WireFormatError(f"sales[{i}] is not an object")
        for name in _INT_FIELDS:
            value = sale.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise WireFormatError(f"sales[{i}].{name} must be a non-negative integer")
        for name in _STR_FIELDS:
            if not isinstance(sale.get(name), str):
                raise WireFormatError(f"sales[{i}].{name} must be a string")
        if sale.get("token") is not None and not isinstance(sale["token"], str):
            raise WireFormatError(f"sales[{i}].token must be a hex string or null")
        if not isinstance(sale.get("member"), bool):
            raise WireFormatError(f"sales[{i}].member must be true or false")
        rules = sale.get("rules")
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise WireFormatError(f"sales[{i}].rules must be a list of rule ids")
        if sale["gross"] - sale["discount"] != sale["net"]:
            raise WireFormatError(f"sales[{i}]: gross - discount != net")
        if sale["terminal_id"] != terminal_id:
            raise WireFormatError(f"sales[{i}] belongs to another terminal")
        if sale.get("basket") is not None:
            check_basket(sale["basket"], sale, f"sales[{i}]")
        out.append({k: sale.get(k) for k in (*SALE_FIELDS, "prev_hash", "hash")})
    return terminal_id, out


def ack(acked_through: int, accepted: int, duplicates: int) -> dict[str, int]:
    return {"acked_through": acked_through, "accepted": accepted, "duplicates": duplicates}


def decode_ack(body: Any) -> int:
    """The highest sequence number the central service holds for this terminal."""
    if not isinstance(body, dict) or not isinstance(body.get("acked_through"), int):
        raise WireFormatError("the central service's answer has no acked_through")
    value: int = body["acked_through"]
    return value
