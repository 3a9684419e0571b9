"""The typed sale record: hashes and wire bytes as before it, field lists derived from
it, the same refusals on upload, and a round trip through the wire."""

from __future__ import annotations

import json
import re
from dataclasses import field, fields, make_dataclass, replace
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pact.chain import GENESIS, check_chain, entry_hash, seal
from pact.errors import ChainError, WireFormatError
from pact.money import MAX_SALE_FEN
from pact.sale import (
    CHAIN_FIELDS,
    DRAFT_FIELDS,
    FIELDS,
    HASHED_FIELDS,
    JOURNAL_FIELDS,
    OPTIONAL_FIELDS,
    Sale,
    SaleDraft,
    field_types,
)
from pact.wire import SALES_FORMAT, decode_sales, encode_sales, sale_checks

# Three sales and their hashes as the release before the typed Sale computed them
# (pact.chain over dicts): the chain format is on disk in shops.
OLD = Sale(
    seq=1,
    sale_id="6f1c2a9e-3b7d-4c1e-9a52-0d8e4f3b2a71",
    at="2026-11-01T10:00:00Z",
    terminal_id="T0001",
    merchant_id="M0001",
    token="ab" * 16,
    pan_last4="3454",
    member=True,
    gross=12800,
    discount=640,
    net=12160,
    rules=("member-discount",),
    roster_version=1,
    policy_version=1,
    basket=None,  # journaled before baskets: not hashed
    atc=None,  # nor counters
    kind=None,  # a sale
    ref_seq=None,
    note=None,
    prev_hash=GENESIS,
    hash="ea1e7e34d0c2a68aa0c785ed15c01bafc636dbf18b685a9f5ec2a8583581eeff",
)
STRANGER = replace(
    OLD,
    seq=2,
    sale_id="0b1e5c4d-8f2a-4e7b-b3c6-1d9a7e5f4c20",
    at="2026-11-28T09:30:00Z",
    token=None,
    member=False,
    pan_last4="0019",
    gross=4550,
    discount=0,
    net=4550,
    rules=(),
    basket={
        "lines": [
            {"sku": "茶叶", "category": "grocery", "qty": 1, "unit_price": 4550, "discount": 0}
        ],
        "tier": None,
        "discounts": {},
    },
    prev_hash=OLD.hash,
    hash="2c2e2f8c78d64753168156630a27b4fe1061dd5e0892252573bb28b65f95a2b1",
)
PHARMACY = replace(
    STRANGER,
    seq=3,
    sale_id="s3",
    token="cd" * 16,
    member=True,
    gross=38800,
    discount=2000,
    net=36800,
    rules=("otc-8", "member-5"),
    basket={
        "lines": [
            {"sku": "COLD", "category": "otc", "qty": 2, "unit_price": 15000, "discount": 1500},
            {
                "sku": "RX1",
                "category": "prescription",
                "qty": 1,
                "unit_price": 8800,
                "discount": 500,
            },
        ],
        "tier": 1,
        "discounts": {"otc-8": 1500, "member-5": 500},
    },
    prev_hash=STRANGER.hash,
    hash="e69ce01649847fcdf062a6c407b355dd5c254096d4ece2cfce2352f7bbf43cba",
)
PINNED = [OLD, STRANGER, PHARMACY]


def test_hashes_are_those_of_the_release_before() -> None:
    for sale in PINNED:
        assert entry_hash(sale.prev_hash, sale) == sale.hash, sale.seq
    assert check_chain(PINNED, GENESIS, 0) == PHARMACY.hash
    assert "basket" not in OLD.hashed() and "basket" in STRANGER.hashed()
    unset = ("basket", "atc", "kind", "ref_seq", "note")  # None: not hashed, old hashes kept
    assert list(OLD.hashed()) == [name for name in HASHED_FIELDS if name not in unset]
    counted = replace(PHARMACY, atc=513)  # a sale with the card's counter hashes it
    assert (
        counted.hashed()["atc"] == 513 and entry_hash(counted.prev_hash, counted) != PHARMACY.hash
    )
    with pytest.raises(ChainError, match="sale 2 has been altered"):
        check_chain([OLD, replace(STRANGER, discount=1, net=4549)], GENESIS, 0)


def test_the_journal_seals_a_draft_with_the_same_hash() -> None:
    draft = SaleDraft(**{name: getattr(PHARMACY, name) for name in DRAFT_FIELDS})
    sale = seal(draft, seq=3, sale_id="s3", at=PHARMACY.at, prev_hash=STRANGER.hash)
    assert sale == PHARMACY
    old = SaleDraft(**{name: getattr(OLD, name) for name in DRAFT_FIELDS if name != "basket"})
    assert seal(old, seq=1, sale_id=OLD.sale_id, at=OLD.at, prev_hash=GENESIS) == OLD


def test_the_wire_carries_the_same_json() -> None:
    body = encode_sales("T0001", PINNED)
    assert list(body) == ["format", "terminal_id", "sales"] and body["format"] == SALES_FORMAT
    first, second, _ = body["sales"]
    assert list(first.items()) == [
        ("seq", 1),
        ("sale_id", "6f1c2a9e-3b7d-4c1e-9a52-0d8e4f3b2a71"),
        ("at", "2026-11-01T10:00:00Z"),
        ("terminal_id", "T0001"),
        ("merchant_id", "M0001"),
        ("token", "ab" * 16),
        ("pan_last4", "3454"),
        ("member", True),
        ("gross", 12800),
        ("discount", 640),
        ("net", 12160),
        ("rules", ["member-discount"]),
        ("roster_version", 1),
        ("policy_version", 1),
        ("prev_hash", GENESIS),  # no basket: left out, as before it existed
        ("hash", OLD.hash),
    ]
    unset = ("atc", "kind", "ref_seq", "note", "sig")  # None: left out on the wire
    assert list(second) == [n for n in FIELDS if n not in unset]
    assert second["token"] is None and second["rules"] == [] and second["basket"] == STRANGER.basket
    assert json.dumps(body, ensure_ascii=False).count('"basket"') == 2
    terminal_id, decoded = decode_sales(json.loads(json.dumps(body)))
    assert (terminal_id, decoded) == ("T0001", PINNED)


def test_the_field_lists_derive_from_the_sale() -> None:
    assert FIELDS == tuple(f.name for f in fields(Sale)) == tuple(field_types())
    assert FIELDS[-3:] == (*CHAIN_FIELDS, "sig") and HASHED_FIELDS == FIELDS[:-3]
    assert OPTIONAL_FIELDS - {"sig"} <= set(HASHED_FIELDS)  # the signature signs the hash
    assert all(field_types()[name] == (field_types()[name] | None) for name in OPTIONAL_FIELDS)
    # a draft is the sale without what the journal fills in, field for field, type for type
    draft_types = {f.name: f.type for f in fields(SaleDraft)}
    assert tuple(draft_types) == DRAFT_FIELDS == tuple(n for n in FIELDS if n not in JOURNAL_FIELDS)
    assert draft_types == {n: f.type for n in DRAFT_FIELDS for f in fields(Sale) if f.name == n}
    checked = {name for name, _, _ in sale_checks().typed} | {n for n, _ in sale_checks().objects}
    assert checked == set(FIELDS)


def test_a_new_field_reaches_the_hash_the_wire_and_the_row() -> None:
    extra = make_dataclass(
        "Extra", [("points", int, field(default=0))], bases=(Sale,), frozen=True, slots=True
    )
    sale = extra(**{f.name: getattr(OLD, f.name) for f in fields(Sale)}, points=7)
    assert sale.hashed()["points"] == 7 and sale.as_json()["points"] == 7
    assert entry_hash(GENESIS, sale) != OLD.hash
    assert encode_sales("T0001", [sale])["sales"][0]["points"] == 7
    assert sale.as_row()["points"] == 7 and extra.from_row(sale.as_row()) == sale
    assert extra.from_json(sale.as_json()) == sale
    [(name, test, what)] = [c for c in sale_checks(extra).typed if c[0] == "points"]
    assert (test(7), test(-1), test(True), what) == (True, False, False, "a non-negative integer")
    odd = make_dataclass("Odd", [("ratio", float, field(default=0))], bases=(Sale,), frozen=True)
    with pytest.raises(TypeError, match="Sale.ratio"):
        odd(**{f.name: getattr(OLD, f.name) for f in fields(Sale)}).as_json()


def _wire(**changes: Any) -> dict[str, Any]:
    sale = PHARMACY.as_json()
    for name, value in changes.items():
        if value is ...:
            del sale[name]
        else:
            sale[name] = value
    return {"format": SALES_FORMAT, "terminal_id": "T0001", "sales": [sale]}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"seq": -1}, "sales[0].seq must be a non-negative integer"),
        ({"gross": True}, "sales[0].gross must be a non-negative integer"),
        ({"policy_version": ...}, "sales[0].policy_version must be a non-negative integer"),
        ({"sale_id": 5}, "sales[0].sale_id must be a string"),
        ({"hash": None}, "sales[0].hash must be a string"),
        ({"token": 5}, "sales[0].token must be a hex string or null"),
        ({"member": 1}, "sales[0].member must be true or false"),
        ({"rules": "otc-8"}, "sales[0].rules must be a list of rule ids"),
        ({"rules": [1]}, "sales[0].rules must be a list of rule ids"),
        ({"net": 1}, "sales[0]: gross - discount != net"),
        ({"terminal_id": "T9"}, "sales[0] belongs to another terminal"),
        ({"basket": []}, "basket must have exactly lines, tier and discounts"),
        # wrong in several ways: refused for the same field as before (ints, strings, ...)
        ({"sale_id": 5, "net": "x", "member": None}, "sales[0].net must be a non-negative"),
        ({"member": None, "hash": 1, "rules": None}, "sales[0].hash must be a string"),
        ({"rules": None, "token": 1, "basket": 3}, "sales[0].token must be a hex string"),
        ({"basket": 3, "net": 1}, "gross - discount != net"),
    ],
)
def test_upload_refusals_are_unchanged(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(WireFormatError, match=re.escape(message)):
        decode_sales(_wire(**changes))


def test_absent_token_and_basket_are_null() -> None:
    _, [sale] = decode_sales(_wire(token=..., basket=...))
    assert sale == replace(PHARMACY, token=None, basket=None)


# ------------------------------------------------------------------------ round trip

TEXT = st.text(max_size=12)
NO_NUL = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
ID = st.text(NO_NUL, min_size=1, max_size=12)  # a sale id, a rule id (pact.wire: 1 to 64)
FEN = st.integers(min_value=0, max_value=MAX_SALE_FEN)  # a sale's amounts (pact.wire)


@st.composite
def sales(draw: st.DrawFn) -> Sale:
    """A sale the wire accepts: its sums agree; its basket, if any, with them."""
    rules: tuple[str, ...] = ()
    if draw(st.booleans()):
        gross = draw(FEN)
        discount = draw(st.integers(0, gross))
        rules = tuple(draw(st.lists(ID, max_size=3)))
        basket = None
    else:
        lines = []
        for _ in range(draw(st.integers(1, 4))):
            qty, price = draw(st.integers(1, 9999)), draw(st.integers(0, 2500))
            lines.append(
                {
                    "sku": draw(TEXT),
                    "category": draw(TEXT),
                    "qty": qty,
                    "unit_price": price,
                    "discount": draw(st.integers(0, qty * price)),
                }
            )
        gross = sum(x["qty"] * x["unit_price"] for x in lines)
        discount = sum(x["discount"] for x in lines)
        discounts: dict[str, int] = {}
        if discount:
            count = draw(st.integers(1, min(3, discount)))
            rules = tuple(draw(st.lists(ID, min_size=count, max_size=count, unique=True)))
            cuts: list[int] = []
            if count > 1:
                parts = st.sets(
                    st.integers(1, discount - 1), min_size=count - 1, max_size=count - 1
                )
                cuts = sorted(draw(parts))
            bounds = [0, *cuts, discount]
            discounts = {r: bounds[i + 1] - bounds[i] for i, r in enumerate(rules)}
        tier = draw(st.none() | st.integers(0, 255))
        basket = {"lines": lines, "tier": tier, "discounts": discounts}
    return Sale(
        seq=draw(st.integers(0, 2**63 - 1)),
        sale_id=draw(ID),
        at=draw(st.datetimes(datetime(2001, 1, 1), datetime(2099, 12, 31))).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        terminal_id="T0001",
        merchant_id=draw(TEXT),
        token=draw(st.none() | st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)),
        pan_last4=draw(st.sampled_from(["", "0000"]) | st.from_regex(r"[0-9]{4}", fullmatch=True)),
        member=draw(st.booleans()),
        gross=gross,
        discount=discount,
        net=gross - discount,
        rules=rules,
        roster_version=draw(st.integers(0, 2**31 - 1)),
        policy_version=draw(st.integers(0, 2**31 - 1)),
        basket=basket,
        atc=draw(st.none() | st.integers(0, 0xFFFF)),
        kind=None,
        ref_seq=None,
        note=draw(st.none() | st.text(NO_NUL, max_size=200)),
        prev_hash=draw(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
        hash=draw(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
        sig=draw(st.none() | st.text(alphabet="0123456789abcdef", min_size=128, max_size=128)),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(sales(), min_size=1, max_size=4))
def test_a_sale_survives_the_wire_and_a_row(batch: list[Sale]) -> None:
    batch = [replace(s, seq=i + 1) for i, s in enumerate(batch)]  # a batch is in order
    body = json.loads(json.dumps(encode_sales("T0001", batch)))
    terminal_id, decoded = decode_sales(body)
    assert (terminal_id, decoded) == ("T0001", batch)
    assert [entry_hash(s.prev_hash, s) for s in decoded] == [
        entry_hash(s.prev_hash, s) for s in batch
    ]
    assert [Sale.from_row(s.as_row()) for s in batch] == batch
