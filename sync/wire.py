"""Formats on the wire between terminals and the central service (pure).

docs/protocol.md documents each message. Both sides import this module, so a
field can only be added in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sync.errors import WireFormatError
from terminal.chain import SALE_FIELDS

SALES_FORMAT = "unioncard.sales.v1"
MAX_BATCH = 1000

_INT_FIELDS = ("seq", "gross", "discount", "net", "roster_version", "policy_version")
_STR_FIELDS = ("sale_id", "at", "terminal_id", "merchant_id", "pan_last4", "prev_hash", "hash")


def encode_sales(terminal_id: str, sales: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "format": SALES_FORMAT,
        "terminal_id": terminal_id,
        "sales": [{k: s[k] for k in (*SALE_FIELDS, "prev_hash", "hash")} for s in sales],
    }


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
        out.append({k: sale[k] for k in (*SALE_FIELDS, "prev_hash", "hash")})
    return terminal_id, out


def ack(acked_through: int, accepted: int, duplicates: int) -> dict[str, int]:
    return {"acked_through": acked_through, "accepted": accepted, "duplicates": duplicates}


def decode_ack(body: Any) -> int:
    """The highest sequence number the central service holds for this terminal."""
    if not isinstance(body, dict) or not isinstance(body.get("acked_through"), int):
        raise WireFormatError("the central service's answer has no acked_through")
    value: int = body["acked_through"]
    return value
