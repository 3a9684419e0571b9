"""Receipts (pure): what a customer's slip shows, and its verification code.

The verification code is ten characters derived from the entry's device signature
(Crockford base32 of the first 50 bits of SHA-256 over the signature bytes, shown
as ``XXXXX-XXXXX``). Anyone holding the journal, or the union's copy of it, finds the
entry by its code and checks the signature: the slip then proves which signed entry
it belongs to. Only an entry that has a signature has a code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo

from pact.money import fen
from pact.sale import Sale
from pact.text import N_, Msg
from pact.timefmt import parse_iso

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
CODE_CHARS = 10


_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # 10 bits -> two characters


def verification_code(sale: Sale) -> str | None:
    """``XXXXX-XXXXX`` for a signed entry, else None: the first 50 bits of the SHA-256 of
    the signature, 5 bits a character, the most significant first."""
    if sale.sig is None:
        return None
    bits = int.from_bytes(hashlib.sha256(bytes.fromhex(sale.sig)).digest()[:8], "big") >> 14
    pairs = _PAIRS  # two characters at a time: the central ingest codes each entry
    middle = pairs[(bits >> 20) & 1023]
    return (
        f"{pairs[bits >> 40]}{pairs[(bits >> 30) & 1023]}{middle[0]}"
        f"-{middle[1]}{pairs[(bits >> 10) & 1023]}{pairs[bits & 1023]}"
    )


def normal_code(text: str) -> str:
    """A code as typed (lower case, no dash, O for 0, I or L for 1) in its shown form;
    ValueError when it cannot be one."""
    cleaned = text.strip().upper().replace("-", "").replace(" ", "")
    cleaned = cleaned.replace("O", "0").replace("I", "1").replace("L", "1")
    if len(cleaned) != CODE_CHARS or any(c not in ALPHABET for c in cleaned):
        raise ValueError(f"{text!r} is not a receipt code like 7K2QF-3XW9M")
    return f"{cleaned[:5]}-{cleaned[5:]}"


@dataclass(frozen=True)
class ReceiptLine:
    sku: str
    qty: int
    unit_price: str  # yuan
    gross: str
    discount: str


@dataclass(frozen=True)
class Receipt:
    """A slip, in yuan strings and local time, ready for a page or a printer."""

    title: str  # "Sale", "Void of sale 3" (English)
    merchant: str
    terminal_id: str
    seq: int
    local_time: str  # "2026-11-30 14:05" in the shop's zone
    card: str  # "•••• 3454"
    member: bool
    lines: tuple[ReceiptLine, ...]
    discounts: tuple[tuple[str, str], ...]  # (rule title, yuan)
    gross: str
    discount: str
    net: str
    code: str | None
    note: str | None
    # The slip's own words, Chinese and English as printed: "交易 3 退货 Refund of sale 3",
    # and what the net is: "实收 Net" taken for a sale, "退还 Paid back" for a void or
    # refund (its amounts are what goes back to the customer).
    heading: str = "销售 Sale"
    net_label: str = "实收 Net"


def receipt(
    sale: Sale, merchant: str, zone: tzinfo, titles: Mapping[str, str] | None = None
) -> Receipt:
    """The slip of a journaled entry; ``titles`` names the rules (else their ids)."""
    titles = titles or {}
    basket = sale.basket or {}
    lines = tuple(
        ReceiptLine(
            sku=str(line["sku"]),
            qty=int(line["qty"]),
            unit_price=fen(int(line["unit_price"])),
            gross=fen(int(line["qty"]) * int(line["unit_price"])),
            discount=fen(int(line["discount"])),
        )
        for line in basket.get("lines", ())
    )
    discounts = tuple(
        (titles.get(rule, rule), fen(int(amount)))
        for rule, amount in dict(basket.get("discounts", {})).items()
    )
    ref = sale.ref_seq or 0
    if sale.is_sale:
        title, heading = Msg.of(N_("Sale")), "销售 Sale"
    elif sale.kind == "void":
        title = Msg.of(N_("Void of sale %(seq)s"), seq=ref)
        heading = f"交易 {ref} 作废 {title}"
    elif sale.kind == "refund":
        title = Msg.of(N_("Refund of sale %(seq)s"), seq=ref)
        heading = f"交易 {ref} 退货 {title}"
    else:  # an event: it reverses no sale
        title, heading = Msg.of(N_("Event")), "事件 Event"
    return Receipt(
        title=str(title),
        heading=heading,
        net_label="实收 Net" if sale.is_sale else "退还 Paid back",
        merchant=merchant,
        terminal_id=sale.terminal_id,
        seq=sale.seq,
        local_time=parse_iso(sale.at).astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        card=f"•••• {sale.pan_last4}",
        member=sale.member,
        lines=lines,
        discounts=discounts,
        gross=fen(sale.gross),
        discount=fen(sale.discount),
        net=fen(sale.net),
        code=verification_code(sale),
        note=sale.note,
    )
