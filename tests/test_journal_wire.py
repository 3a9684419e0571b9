"""The journal gives the sync each pending entry as the wire carries it, made by
SQLite's JSON functions (terminal.journal.pending_json_sql): it must be the JSON of
Sale.as_json, field for field, for any entry a journal can hold (hypothesis), and the
request bodies made of it carry what those made of the Sales carry, split alike."""

from __future__ import annotations

import gzip
import json
import tempfile
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from pact.device import KeySigner
from pact.sale import Sale
from pact.wire import encode_sales, sales_head
from sync.client import entry_bodies, upload_bodies
from terminal.journal import INSERT_SALE, Journal

INT64 = st.integers(0, 2**63 - 1)
TEXT = st.text(max_size=12)  # any character SQLite keeps (no lone surrogates)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def sales(draw: st.DrawFn) -> list[Sale]:
    """Entries of any field values (the journal keeps what it is given; the union's
    checks come later), seq 1, 2, ..."""
    out = []
    for seq in range(1, draw(st.integers(1, 4)) + 1):
        out.append(
            Sale(
                seq=seq,
                sale_id=str(uuid.uuid4()),
                at=draw(TEXT),
                terminal_id=draw(TEXT),
                merchant_id=draw(TEXT),
                token=draw(st.none() | TEXT),
                pan_last4=draw(TEXT),
                member=draw(st.booleans()),
                gross=draw(INT64),
                discount=draw(INT64),
                net=draw(INT64),
                rules=tuple(draw(st.lists(TEXT, max_size=3))),
                roster_version=draw(INT64),
                policy_version=draw(INT64),
                basket=draw(st.none() | st.dictionaries(TEXT, JSON, max_size=4)),
                atc=draw(st.none() | INT64),
                kind=draw(st.none() | TEXT),
                ref_seq=draw(st.none() | st.just(seq)),  # one void per sale at most
                note=draw(st.none() | TEXT),
                prev_hash=draw(TEXT),
                hash=draw(TEXT),
                sig=draw(st.none() | TEXT),
            )
        )
    return out


def _journal(folder: Path, entries: list[Sale]) -> Journal:
    journal = Journal(folder / "journal.db", KeySigner(Ed25519PrivateKey.generate()))
    with journal.db.conn:
        for sale in entries:
            journal.db.execute(INSERT_SALE, sale.as_row())
    return journal


@settings(max_examples=150, deadline=None)
@given(sales())
def test_the_journals_json_of_an_entry_is_its_as_json(entries: list[Sale]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        journal = _journal(Path(folder), entries)
        try:
            rendered = journal.pending_json(10)
        finally:
            journal.close()
    assert [seq for seq, _ in rendered] == [s.seq for s in entries]
    for (_, text), sale in zip(rendered, entries, strict=True):
        assert json.loads(text) == sale.as_json()
        assert Sale.from_json(json.loads(text)) == sale


def test_bodies_of_the_journals_json_are_those_of_the_sales(tmp_path: Path) -> None:
    entries = [
        Sale(
            seq=seq,
            sale_id=str(uuid.uuid4()),
            at="2026-11-30T10:00:00Z",
            terminal_id="T1",
            merchant_id="M0001",
            token="ab" * 16,
            pan_last4="0004",
            member=seq % 2 == 0,
            gross=1000,
            discount=50,
            net=950,
            rules=("member",),
            roster_version=1,
            policy_version=1,
            basket=None,
            atc=seq if seq % 3 else None,
            kind=None,
            ref_seq=None,
            note=None,
            prev_hash="0" * 64,
            hash="1" * 64,
            sig="2" * 128,
        )  # fmt: skip
        for seq in range(1, 41)
    ]
    journal = _journal(tmp_path, entries)
    try:
        rendered = journal.pending_json(100)
    finally:
        journal.close()
    for limits in ((500, 1 << 20, 512 << 10), (7, 1 << 20, 512 << 10), (500, 3000, 512 << 10)):
        made = list(entry_bodies(sales_head("T1"), rendered, *limits))
        expected = list(upload_bodies(encode_sales("T1", entries), *limits))
        assert [(last, _body(data)) for last, data in made] == [
            (last, _body(data)) for last, data in expected
        ]
    assert len(list(entry_bodies(sales_head("T1"), rendered, 7))) == 6  # 40 entries by 7


def _body(data: bytes) -> object:
    return json.loads(gzip.decompress(data))
