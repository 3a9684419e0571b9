"""The ingest's insert (central.store.sale_rows, insert_sales): the rows it stores are
the very rows the insert of Sale.as_row dicts stored before issue 14 (insert_rows), a
re-sent batch is still deduplicated, and a batch refused in its middle stores nothing;
on SQLite and on a real PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from central.errors import ConflictError, EvidenceError
from central.service import Union
from central.store import INGEST_COLUMNS, insert_rows, sales
from pact.chain import GENESIS, entry_hash
from pact.receipt import verification_code
from pact.sale import Sale
from pact.timefmt import iso
from tests.helpers import enrol_signing_terminal, signed

LINE = {"sku": "豆浆, 1:2", "category": "food", "qty": 2, "unit_price": 350, "discount": 35}


def _fields(seq: int) -> dict[str, Any]:
    """Entries of every kind and shape: a member's sale with a basket and two rules, a
    non-member's without a token, a void with a non-ASCII reason, a refund, an event."""
    sale = {"kind": None, "ref_seq": None, "note": None, "atc": seq % 65536}
    basket = {"lines": [dict(LINE, by_rule={"member": 35})], "tier": 1, "discounts": {"member": 35}}
    shapes: list[dict[str, Any]] = [
        dict(sale, token="ab" * 16, member=True, rules=("member", "周三"), basket=basket),
        dict(sale, token=None, member=False, rules=(), basket=None, atc=None),
        dict(sale, kind="void", ref_seq=seq - 2, note='顾客 "changed" her mind\n', basket=basket),
        dict(
            sale, kind="refund", ref_seq=seq - 3, note="one unit", basket={**basket, "tier": None}
        ),
        dict(sale, kind="event", note="clock: stepped back 3 s", gross=0, discount=0, net=0),
    ]
    money = {"gross": 700, "discount": 35, "net": 665}
    base = {"token": None, "member": False, "rules": (), "basket": None, **money}
    return {**base, **shapes[seq % len(shapes)]}


def entries(n: int, start: int = 1, prev: str = GENESIS, terminal_id: str = "T1") -> list[Sale]:
    out = []
    for seq in range(start, start + n):
        sale = Sale(
            seq=seq,
            sale_id=f"{terminal_id}-{seq}",
            at=f"2026-11-28T{seq // 60 % 24:02d}:{seq % 60:02d}:00Z",
            terminal_id=terminal_id,
            merchant_id="M0001",
            pan_last4="0000",
            roster_version=1,
            policy_version=2,
            prev_hash=prev,
            hash="",
            **_fields(seq),
        )
        sale = signed(replace(sale, hash=entry_hash(prev, sale)))
        prev = sale.hash
        out.append(sale)
    return out


def stored(conn: sa.Connection, terminal_id: str) -> list[tuple[Any, ...]]:
    """The terminal's rows as the database holds them: each value as SQL text (SQLite's
    quote() keeps its storage class: 1 and '1' differ)."""
    shown = "quote({})" if conn.dialect.name == "sqlite" else "{}::text"
    columns = ", ".join(shown.format(c) for c in INGEST_COLUMNS)
    query = f"SELECT {columns} FROM sales WHERE sales.terminal_id = :t ORDER BY sales.seq"
    return [tuple(row) for row in conn.execute(sa.text(query), {"t": terminal_id})]


@pytest.fixture
def terminal(union: Union) -> dict[str, Any]:
    union.add_merchant("M0001", "Shop", 500)
    return enrol_signing_terminal(union)


def test_rows_stored_are_those_of_the_dict_insert(union: Union, terminal: dict) -> None:
    batch = entries(60)
    received_at = iso(union.clock())  # what the ingest stamps (the test's clock stands still)
    with union.store.engine.connect() as conn:  # the insert before issue 14, rolled back
        with conn.begin() as transaction:
            rows = [
                dict(s.as_row(), received_at=received_at, receipt_code=verification_code(s))
                for s in batch
            ]
            insert_rows(conn, sales, rows)
            expected = stored(conn, "T1")
            transaction.rollback()
    assert len(expected) == 60
    result = union.ingest(terminal, batch)
    assert (result.acked_through, result.accepted, result.duplicates) == (60, 60, 0)
    with union.store.engine.connect() as conn:
        assert stored(conn, "T1") == expected
    assert union.store.sales_for("T1") == batch  # and read back as uploaded


def test_a_resent_batch_is_deduplicated(union: Union, terminal: dict) -> None:
    batch = entries(40)
    union.ingest(terminal, batch[:25])
    with union.store.engine.connect() as conn:
        before = stored(conn, "T1")
    again = union.ingest(terminal, batch[:25])
    assert (again.acked_through, again.accepted, again.duplicates) == (25, 0, 25)
    more = union.ingest(terminal, batch)  # the ack was lost: all of it again, and more
    assert (more.acked_through, more.accepted, more.duplicates) == (40, 15, 25)
    with union.store.engine.connect() as conn:
        assert stored(conn, "T1")[:25] == before
    assert union.store.sales_for("T1") == batch
    assert sum(r.sales for r in union.settlement()) == sum(
        1 if s.kind is None else -1 if s.kind == "void" else 0 for s in batch
    )


def test_a_batch_refused_in_its_middle_stores_nothing(union: Union, terminal: dict) -> None:
    union.ingest(terminal, entries(10))
    batch = entries(300, start=11, prev=union.store.sales_for("T1")[-1].hash)
    # an entry whose id is already held (the database's unique key breaks mid-insert)
    reused = replace(batch[150], sale_id="T1-3")
    reused = signed(replace(reused, hash=entry_hash(reused.prev_hash, reused)))
    rechained = entries(149, start=162, prev=reused.hash)
    with pytest.raises(ConflictError, match="already held under another number"):
        union.ingest(terminal, [*batch[:150], reused, *rechained])
    # a link broken in the middle
    broken = [*batch[:150], replace(batch[150], prev_hash="ab" * 32), *batch[151:]]
    with pytest.raises(ConflictError, match="link"):
        union.ingest(terminal, broken)
    # the newest entry signed by another key
    forged = [*batch[:-1], replace(batch[-1], sig="00" * 64)]
    with pytest.raises(EvidenceError, match="does not verify"):
        union.ingest(terminal, forged)
    assert [s.seq for s in union.store.sales_for("T1")] == list(range(1, 11))
    assert sum(r.sales for r in union.settlement()) == sum(
        1 if s.kind is None else -1 if s.kind == "void" else 0 for s in entries(10)
    )
    assert union.ingest(terminal, batch).accepted == 300  # then the real one goes in whole
