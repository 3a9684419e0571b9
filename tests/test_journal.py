"""The journal: durable settings, the hash chain, and tamper evidence."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from pact.chain import GENESIS, entry_hash
from pact.sale import Sale, SaleDraft
from terminal.errors import JournalError
from terminal.journal import Journal
from tests.helpers import TEST_SIGNER


def sale(gross: int = 1000, discount: int = 50) -> SaleDraft:
    return SaleDraft(
        terminal_id="T1",
        merchant_id="M1",
        token="ab" * 16,
        pan_last4="1234",
        member=True,
        gross=gross,
        discount=discount,
        net=gross - discount,
        rules=("member",),
        roster_version=1,
        policy_version=1,
    )


def test_durability_settings(tmp_path) -> None:
    journal = Journal(tmp_path / "j.db", TEST_SIGNER)
    assert journal.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_only_the_syncs_marks_skip_the_fsync(tmp_path, clock) -> None:
    """Entries commit with synchronous=FULL; a mark of uploaded entries commits with
    NORMAL (its loss only sends them again), and FULL is back for the next entry."""
    journal = Journal(tmp_path / "j.db", TEST_SIGNER)
    seen: list[str] = []
    journal.db.conn.set_trace_callback(seen.append)
    journal.append(sale(), clock())
    journal.mark_uploaded(1, clock())
    journal.append(sale(), clock())
    journal.db.conn.set_trace_callback(None)
    modes = [s.split("=")[1] for s in seen if s.startswith("PRAGMA synchronous")]
    assert modes == ["NORMAL", "FULL"]
    order = [s.split()[0] for s in seen if s.split()[0] in ("PRAGMA", "BEGIN", "UPDATE", "INSERT")]
    assert order == ["BEGIN", "INSERT", "PRAGMA", "BEGIN", "UPDATE", "PRAGMA", "BEGIN", "INSERT"]
    assert journal.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_chain_and_pending(tmp_path, clock) -> None:
    journal = Journal(tmp_path / "j.db", TEST_SIGNER)
    first = journal.append(sale(), clock())
    second = journal.append(sale(2000, 100), clock())
    assert (first.seq, second.seq) == (1, 2)
    assert second.prev_hash == first.hash
    assert journal.verify() == 2
    assert journal.pending() == [first, second]  # as appended, read back
    assert journal.mark_uploaded(1, clock()) == 1
    assert [s.seq for s in journal.pending()] == [2]
    assert journal.counts() == (2, 1)
    journal.close()
    reopened = Journal(tmp_path / "j.db", TEST_SIGNER)  # migrations run once; data survives
    assert reopened.counts() == (2, 1)


def test_the_sync_reads_its_pending_sales_without_the_journals_lock(tmp_path, clock) -> None:
    """A batch is read on a read connection, so a checkout never waits behind it; it
    sees each mark of the sync at once."""
    import threading

    journal = Journal(tmp_path / "j.db", TEST_SIGNER)
    for _ in range(3):
        journal.append(sale(), clock())
    read: list[list[int]] = []
    with journal.lock:  # held, as by a checkout in another thread
        reader = threading.Thread(target=lambda: read.append([s.seq for s in journal.pending()]))
        reader.start()
        reader.join(5)
        assert read == [[1, 2, 3]]
    journal.mark_uploaded(2, clock())
    assert [s.seq for s in journal.pending()] == [3]
    journal.close()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE sales SET discount = 500, net = 500 WHERE seq = 1",
        "DELETE FROM sales WHERE seq = 2",
        "UPDATE sales SET pan_last4 = '9999' WHERE seq = 3",
    ],
)
def test_tampering_is_detected(tmp_path, clock, sql: str) -> None:
    journal = Journal(tmp_path / "j.db", TEST_SIGNER)
    for _ in range(3):
        journal.append(sale(), clock())
        clock.advance(timedelta(minutes=1))
    journal.db.execute(sql)
    journal.db.conn.commit()
    with pytest.raises(JournalError, match="chain broken"):
        journal.verify()


def test_unwritable_journal_is_one_clear_error(tmp_path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal(tmp_path / "dir.db")


def test_threads_share_one_journal_safely(tmp_path, clock) -> None:
    import threading

    journal = Journal(tmp_path / "j.db", TEST_SIGNER)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                journal.append(sale(), clock())
                journal.counts()
                journal.recent(5)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert journal.verify() == 100
    assert [s.seq for s in journal.sales()] == list(range(1, 101))


def test_a_sale_is_stored_as_before(tmp_path, clock) -> None:
    """The row keeps today's encodings (member 0/1, rules a JSON list, basket canonical
    JSON: sorted keys, no spaces) and reads back as the same Sale, whose hash the chain
    checks; a basket written as the releases before wrote it (spaces) reads the same."""
    journal = Journal(tmp_path / "j.db", TEST_SIGNER)
    basket = {
        "tier": 1,
        "lines": [{"sku": "A", "category": "g", "qty": 2, "unit_price": 500, "discount": 50}],
        "discounts": {"member": 50},
    }
    first = journal.append(replace(sale(), basket=basket), clock())
    assert isinstance(first, Sale) and first.at == "2026-11-28T09:30:00Z"
    assert first.hash == entry_hash(GENESIS, first) and first.prev_hash == GENESIS
    row = journal.db.execute(
        "SELECT member, rules, basket, token, uploaded_at FROM sales WHERE seq = 1"
    ).fetchone()
    assert row == (
        1,
        '["member"]',
        '{"discounts":{"member":50},"lines":[{"category":"g","discount":50,"qty":2,'
        '"sku":"A","unit_price":500}],"tier":1}',
        "ab" * 16,
        None,
    )
    assert journal.sales() == [first]
    journal.db.execute(
        "UPDATE sales SET basket = ? WHERE seq = 1", [json.dumps(basket, sort_keys=True)]
    )
    assert " " in journal.db.execute("SELECT basket FROM sales").fetchone()[0]
    assert journal.sales() == [first]
    [recent] = journal.recent()
    assert recent == dict(first.as_json(), uploaded=False)
    journal.mark_uploaded(1, clock())
    assert journal.recent()[0]["uploaded"] is True


def test_the_insert_names_every_field_of_the_sale() -> None:
    from dataclasses import field, fields, make_dataclass

    from pact.sale import FIELDS
    from terminal.journal import INSERT_SALE, insert_sql

    assert INSERT_SALE == insert_sql(Sale)
    columns = INSERT_SALE.split("(")[1].split(")")[0].split(", ")
    assert tuple(columns) == FIELDS == tuple(f.name for f in fields(Sale))
    extra = make_dataclass(
        "Extra", [("points", int, field(default=0))], bases=(Sale,), frozen=True, slots=True
    )
    assert "points" in insert_sql(extra) and ":points" in insert_sql(extra)
