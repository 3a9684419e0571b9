"""Formats on the wire between terminals and the central service (pure).

docs/protocol.md documents each message. Both sides import this module, and a
sale's fields, their order and their checks come from :class:`pact.sale.Sale`, so a
field can only be added in one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from pact.device import SIGNATURE_HEX
from pact.errors import WireFormatError
from pact.event import CODES, EVENT
from pact.money import MAX_SALE_FEN
from pact.policy import MAX_RULES  # a sale applies at most every rule of its policy
from pact.sale import DESCRIBE, MAX_NOTE, REVERSALS, Sale, field_types
from pact.timefmt import YEARS

SALES_FORMAT = "unioncard.sales.v1"
MAX_BATCH = 1000
# An upload sent while the terminal's request before it may still be on its way carries
# this header, "1": the union waits for the entries before it (central.service).
PIPELINED_HEADER = "Unioncard-Pipelined"


def sales_head(terminal_id: str) -> dict[str, Any]:
    """An upload but its ``sales``."""
    return {"format": SALES_FORMAT, "terminal_id": terminal_id}


def encode_sales(terminal_id: str, sales: Sequence[Sale]) -> dict[str, Any]:
    return {**sales_head(terminal_id), "sales": [s.as_json() for s in sales]}


def _whole(value: Any, lo: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo


LINE_KEYS = frozenset({"sku", "category", "qty", "unit_price", "discount"})
# by_rule: the line's discount per rule; of: a refund line's index among its sale's lines
LINE_OPTIONAL = frozenset({"by_rule", "of"})


def check_basket(basket: Any, sale: Mapping[str, Any], where: str) -> None:
    """A sale's ``basket``: lines (sku, category, qty, unit_price, discount[, by_rule, of]),
    tier, discounts.

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
        if not isinstance(line, dict) or not LINE_KEYS <= set(line) <= LINE_KEYS | LINE_OPTIONAL:
            raise WireFormatError(
                f"{at} must have sku, category, qty, unit_price, discount "
                "(and may have by_rule, of)"
            )
        if not isinstance(line["sku"], str) or not isinstance(line["category"], str):
            raise WireFormatError(f"{at}.sku and .category must be strings")
        if not _whole(line["qty"], 1) or not _whole(line["unit_price"]):
            raise WireFormatError(f"{at}: qty must be 1 or more and unit_price whole fen")
        line_gross = line["qty"] * line["unit_price"]
        if not _whole(line["discount"]) or line["discount"] > line_gross:
            raise WireFormatError(f"{at}.discount must be whole fen, at most the line's gross")
        if "by_rule" in line:
            split = line["by_rule"]
            if not isinstance(split, dict) or not all(_whole(v, 1) for v in split.values()):
                raise WireFormatError(f"{at}.by_rule must map rule ids to whole fen")
            if sum(split.values()) != line["discount"]:
                raise WireFormatError(f"{at}.by_rule does not add up to the line's discount")
        if "of" in line and not _whole(line["of"]):
            raise WireFormatError(f"{at}.of must be the index of a line of the sale refunded")
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


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


Test = Callable[[Any], bool]
ObjectCheck = Callable[[Any, Mapping[str, Any], str], None]  # (value, sale, "sales[i]")

# What a sale's field must be on the wire, by the field's type (pact.sale.Sale). The
# fields are checked type by type in this order, each type in field order, so a sale
# wrong in two ways is refused for the same one as before the order was derived.
_TYPE_CHECKS: dict[Any, tuple[Test, str]] = {
    int: (_whole, "a non-negative integer"),
    str: (lambda v: isinstance(v, str), "a string"),
    str | None: (lambda v: v is None or isinstance(v, str), "a string or null"),
    int | None: (lambda v: v is None or _whole(v), "a non-negative integer or null"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    tuple[str, ...]: (_strings, "a list of strings"),
}
# Fields of type ``Mapping[str, Any] | None`` (JSON objects) are checked after the sale's
# sums, when present, by their own check; one without must at least be an object.
_OBJECT_TYPE = Mapping[str, Any] | None
_OBJECT_CHECKS: dict[str, ObjectCheck] = {"basket": check_basket}


def _any_object(name: str) -> ObjectCheck:
    def check(value: Any, sale: Mapping[str, Any], where: str) -> None:
        if not isinstance(value, dict):
            raise WireFormatError(f"{where}.{name} must be an object or null")

    return check


@dataclass(frozen=True)
class SaleChecks:
    typed: tuple[tuple[str, Test, str], ...]  # (field, test, what it must be), in order
    objects: tuple[tuple[str, ObjectCheck], ...]  # (field, check)


def sale_checks(cls: type[Sale] = Sale) -> SaleChecks:
    """The checks of an uploaded sale's fields, derived from the types of ``cls``'s fields
    (a field's ``describe`` metadata words its refusal)."""
    describe = {f.name: f.metadata.get(DESCRIBE) for f in fields(cls)}
    rank = {kind: n for n, kind in enumerate(_TYPE_CHECKS)}
    typed: list[tuple[int, str, Test, str]] = []
    objects: list[tuple[str, ObjectCheck]] = []
    for name, kind in field_types(cls).items():
        if kind in _TYPE_CHECKS:
            test, what = _TYPE_CHECKS[kind]
            typed.append((rank[kind], name, test, describe[name] or what))
        elif kind == _OBJECT_TYPE:
            objects.append((name, _OBJECT_CHECKS.get(name) or _any_object(name)))
        else:
            raise TypeError(f"pact.wire has no check for Sale.{name} of type {kind}")
    typed.sort(key=lambda entry: entry[0])  # stable: field order within a type
    return SaleChecks(tuple((name, test, what) for _, name, test, what in typed), tuple(objects))


_SALE_CHECKS = sale_checks()


def decode_sales(body: Any) -> tuple[str, list[Sale]]:
    """Validate an upload; return (terminal_id, sales). Raises WireFormatError."""
    if not isinstance(body, dict) or body.get("format") != SALES_FORMAT:
        raise WireFormatError(f"upload is not in the {SALES_FORMAT} format")
    terminal_id = body.get("terminal_id")
    sales = body.get("sales")
    if not isinstance(terminal_id, str) or not isinstance(sales, list):
        raise WireFormatError("upload needs terminal_id (string) and sales (list)")
    if len(sales) > MAX_BATCH:
        raise WireFormatError(f"upload has {len(sales)} sales; at most {MAX_BATCH} per batch")
    checks = _SALE_CHECKS
    out = []
    for i, sale in enumerate(sales):
        if not isinstance(sale, dict):
            raise WireFormatError(f"sales[{i}] is not an object")
        for name, test, what in checks.typed:
            if not test(sale.get(name)):
                raise WireFormatError(f"sales[{i}].{name} must be {what}")
        if sale["gross"] - sale["discount"] != sale["net"]:
            raise WireFormatError(f"sales[{i}]: gross - discount != net")
        if sale["terminal_id"] != terminal_id:
            raise WireFormatError(f"sales[{i}] belongs to another terminal")
        if not is_entry_time(sale["at"]):
            raise WireFormatError(
                f"sales[{i}].at must be a UTC time like 2026-11-28T09:30:00Z "
                f"(years {ENTRY_YEARS.start} to {ENTRY_YEARS.stop - 1})"
            )
        if sale.get("sig") is not None and not _is_hex(sale["sig"], SIGNATURE_HEX):
            raise WireFormatError(f"sales[{i}].sig must be {SIGNATURE_HEX} hex digits")
        for name in ("prev_hash", "hash"):  # what the chain is hashed from and checked with
            if not _is_hex(sale[name], HASH_HEX):
                raise WireFormatError(
                    f"sales[{i}].{name} must be {HASH_HEX} lower-case hex digits (a SHA-256)"
                )
        _check_kind(sale, f"sales[{i}]")
        if sale.get("atc") is not None and sale["atc"] > 0xFFFF:
            raise WireFormatError(f"sales[{i}].atc must be the card's counter, 0 to 65535")
        check_bounds(sale, f"sales[{i}]")
        if i and sale["seq"] != sales[i - 1]["seq"] + 1:
            raise WireFormatError(
                f"sales[{i}].seq does not follow sales[{i - 1}]: send them in order"
            )
        for name, check in checks.objects:
            if sale.get(name) is not None:
                check(sale[name], sale, f"sales[{i}]")
        out.append(Sale.from_json(sale))
    return terminal_id, out


UTC_SECOND = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
# A year inside pact.timefmt.YEARS at either end: an entry's local day, in any time zone
# (UTC-12 to UTC+14), is then a day of YEARS, which every statement may cover. An entry
# of 9999-12-31T20:00Z failed the union's daily totals (a 500); one of 9998-12-31T16:00Z
# is 9999-01-01 in Shanghai, and its merchant's final statement could never be made.
ENTRY_YEARS = range(YEARS.start + 1, YEARS.stop - 1)


def is_entry_time(text: str) -> bool:
    """``at`` as the terminal journals it (pact.timefmt.iso): UTC to the second, with
    ``Z``, in :data:`ENTRY_YEARS`. One form only, so that the union's days and totals
    can read it as text."""
    if not UTC_SECOND.fullmatch(text):
        return False
    try:
        moment = datetime.fromisoformat(text[:-1])
    except ValueError:  # 2026-02-30T..., 25:00:00
        return False
    return moment.year in ENTRY_YEARS


MAX_SEQ = 2**63 - 1  # the union's seq columns are 64-bit
MAX_VERSION = 2**31 - 1
AMOUNTS = ("gross", "discount", "net")
PAN_LAST4 = re.compile(r"(?:[0-9]{4})?")  # an event has none
TOKEN_HEX = re.compile(r"[0-9a-f]{32}")  # pact.cards.TOKEN_BYTES: 128 bits, every scheme's
MAX_ID = 64  # characters of a rule id (a policy's are at most 40)
# The most characters of a text field the union keeps in a column of its own (no more
# than central.store.SALE_STRING_LENGTHS: a longer one was a 500 on PostgreSQL)
MAX_LENGTHS = {
    "sale_id": 36,  # a UUID, as terminals make them
    "terminal_id": 32,
    "merchant_id": 32,
}


def check_bounds(sale: Mapping[str, Any], where: str) -> None:
    """What a terminal journals stays within what the union stores and sums: a seq of
    2**63 or an amount of 2**63 - 1 fen was a 500 in the ingest (or, on SQLite, broke
    the union's settlement), a pan_last4 of 9 characters had room for a card number, a
    sale_id or token longer than its column was a 500 on PostgreSQL (stored on SQLite)."""
    for name in AMOUNTS:
        if sale[name] > MAX_SALE_FEN:
            raise WireFormatError(
                f"{where}.{name} is above {MAX_SALE_FEN} fen (1,000,000.00 yuan), a sale's limit"
            )
    if sale["seq"] > MAX_SEQ or (sale.get("ref_seq") or 0) > MAX_SEQ:
        raise WireFormatError(f"{where}: a seq must be at most {MAX_SEQ}")
    if sale["roster_version"] > MAX_VERSION or sale["policy_version"] > MAX_VERSION:
        raise WireFormatError(f"{where}: a roster or policy version must be at most {MAX_VERSION}")
    if not PAN_LAST4.fullmatch(sale["pan_last4"]):
        raise WireFormatError(f"{where}.pan_last4 must be the card's last four digits (or empty)")
    token = sale.get("token")
    if token is not None and not TOKEN_HEX.fullmatch(token):
        raise WireFormatError(
            f"{where}.token must be 32 lower-case hex digits (a member's token) or null"
        )
    if not 1 <= len(sale["sale_id"]) <= MAX_LENGTHS["sale_id"]:
        raise WireFormatError(
            f"{where}.sale_id must be 1 to {MAX_LENGTHS['sale_id']} characters (a UUID)"
        )
    for name in ("terminal_id", "merchant_id"):
        if len(sale[name]) > MAX_LENGTHS[name]:
            raise WireFormatError(f"{where}.{name} must be at most {MAX_LENGTHS[name]} characters")
    for name in ("sale_id", "note"):  # kept as they are: PostgreSQL refuses a NUL in text
        if "\x00" in (sale.get(name) or ""):
            raise WireFormatError(f"{where}.{name} must not hold a NUL character")
    rules = sale["rules"]
    if len(rules) > MAX_RULES or not all(1 <= len(rule) <= MAX_ID for rule in rules):
        raise WireFormatError(
            f"{where}.rules must be at most {MAX_RULES} rule ids of 1 to {MAX_ID} characters"
        )


def _check_kind(sale: Mapping[str, Any], where: str) -> None:
    """A sale has no ``ref_seq``; a void or refund names an earlier sale it reverses; an
    event (pact.event) moves no money and says what happened in ``note``."""
    kind, ref = sale.get("kind"), sale.get("ref_seq")
    if kind is None:
        if ref is not None:
            raise WireFormatError(f"{where}.ref_seq belongs to a void or refund, not to a sale")
    elif kind == EVENT:
        _check_event(sale, where)
    elif kind not in REVERSALS:
        kinds = ", ".join(sorted([*REVERSALS, EVENT]))
        raise WireFormatError(f"{where}.kind must be one of {kinds} or null")
    elif ref is None or not 1 <= ref < sale["seq"]:
        raise WireFormatError(f"{where}.ref_seq must name an earlier entry")
    note = sale.get("note")
    if note is not None and len(note) > MAX_NOTE:
        raise WireFormatError(f"{where}.note is longer than {MAX_NOTE} characters")


def _check_event(sale: Mapping[str, Any], where: str) -> None:
    if sale.get("ref_seq") is not None:
        raise WireFormatError(f"{where}: an event names no entry (ref_seq)")
    if any(sale.get(name) for name in ("gross", "discount", "net", "rules", "member")):
        raise WireFormatError(f"{where}: an event moves no money (amounts 0, no rules)")
    if any(sale.get(name) is not None for name in ("token", "basket", "atc")):
        raise WireFormatError(f"{where}: an event has no card and no basket")
    code = (sale.get("note") or "").partition(":")[0]
    if code not in CODES:
        raise WireFormatError(f"{where}.note must say what happened, as '<event code>: ...'")


_LOWER_HEX = re.compile("[0-9a-f]*")
HASH_HEX = 64  # an entry's hash and the one before it: SHA-256


def _is_hex(text: str, length: int) -> bool:
    """``length`` lower-case hex digits (one regex match: a character-by-character
    check took a third of the central service's decoding of an upload)."""
    return len(text) == length and _LOWER_HEX.fullmatch(text) is not None


DEVICE_KEY_FORMAT = "unioncard.device-key.v1"


def encode_device_key(terminal_id: str, public_key_hex: str) -> dict[str, str]:
    """The terminal registers its device's public key (``POST /api/v1/device-key``)."""
    return {"format": DEVICE_KEY_FORMAT, "terminal_id": terminal_id, "public_key": public_key_hex}


def decode_device_key(body: Any) -> tuple[str, str]:
    """(terminal_id, public key hex) of a registration. Raises WireFormatError."""
    if not isinstance(body, dict) or body.get("format") != DEVICE_KEY_FORMAT:
        raise WireFormatError(f"the registration is not in the {DEVICE_KEY_FORMAT} format")
    terminal_id, key = body.get("terminal_id"), body.get("public_key")
    if not isinstance(terminal_id, str) or not isinstance(key, str) or not _is_hex(key, 64):
        raise WireFormatError("a registration needs terminal_id and public_key (64 hex digits)")
    return terminal_id, key


def ack(acked_through: int, accepted: int, duplicates: int) -> dict[str, int]:
    return {"acked_through": acked_through, "accepted": accepted, "duplicates": duplicates}


def decode_ack(body: Any) -> int:
    """The highest sequence number the central service holds for this terminal."""
    held = body.get("acked_through") if isinstance(body, dict) else None
    if not isinstance(held, int) or isinstance(held, bool) or not 0 <= held <= MAX_SEQ:
        raise WireFormatError("the central service's answer has no acked_through")
    return held
