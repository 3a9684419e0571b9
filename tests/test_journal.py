"""The journal: durable settings, the hash chain, and tamper evidence."""

from __future__ import annotations

from datetime import timedelta

import pytest

from terminal.errors import JournalError
from terminal.journal import Journal


def sale(gross: int = 1000, discount: int = 50) -> dict:
    return {
        "terminal_id": "T1",
        "merchant_id": "M1",
        "token": "ab" * 16,
        "pan_last4": "1234",
        "member": True,
        "gross": gross,
        "discount": discount,
        "net": gross - discount,
        "rules": ["member"],
        "roster_version": 1,
        "policy_version": 1,
    }


def test_durability_settings(tmp_path) -> None:
    journal = Journal(tmp_path / "j.db")
    assert journal.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_chain_and_pending(tmp_path, clock) -> None:
    journal = Journal(tmp_path / "j.db")
    first = journal.append(sale(), clock())
    second = journal.append(sale(2000, 100), clock())
    assert (first["seq"], second["seq"]) == (1, 2)
    assert second["prev_hash"] == first["hash"]
    assert journal.verify() == 2
    assert [s["seq"] for s in journal.pending()] == [1, 2]
    assert journal.mark_uploaded(1, clock()) == 1
    assert [s["seq"] for s in journal.pending()] == [2]
    assert journal.counts() == (2, 1)
    journal.close()
    reopened = Journal(tmp_path / "j.db")  # migrations run once; data survives
    assert reopened.counts() == (2, 1)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE sales SET discount = 500, net = 500 WHERE seq = 1",
        "DELETE FROM sales WHERE seq = 2",
        "UPDATE sales SET pan_last4 = '9999' WHERE seq = 3",
    ],
)
def test_tampering_is_detected(tmp_path, clock, sql: str) -> None:
    journal = Journal(tmp_path / "j.db")
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

    journal = Journal(tmp_path / "j.db")
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
    assert [s["seq"] for s in journal.sales()] == list(range(1, 101))
