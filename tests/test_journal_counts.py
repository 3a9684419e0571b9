"""The journal's counts (the status's "sales" and "pending upload") and the reads the
status and the cashier page make: exact on a journal of many entries of every kind,
after uploads, and after a writer killed half-way; and read from the last commit
without waiting for a writer. Not a timing test: `make bench` measures the till API.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from pact.event import event_draft
from pact.reversal import refund_draft, void_draft
from pact.sale import SaleDraft
from terminal.journal import Journal
from tests.helpers import TEST_SIGNER

ENTRIES = 10_000
BASKET = {
    "tier": 1,
    "lines": [{"sku": "A", "category": "g", "qty": 2, "unit_price": 500, "discount": 50}],
    "discounts": {"member": 50},
}


def sale(gross: int = 1000) -> SaleDraft:
    return SaleDraft(
        terminal_id="T1",
        merchant_id="M1",
        token="ab" * 16,
        pan_last4="1234",
        member=True,
        gross=gross,
        discount=50,
        net=gross - 50,
        rules=("member",),
        roster_version=1,
        policy_version=1,
        basket=BASKET,
    )


def event(n: int) -> SaleDraft:
    return event_draft(
        "startup",
        f"start {n}",
        terminal_id="T1",
        merchant_id="M1",
        roster_version=1,
        policy_version=1,
    )


def scanned(journal: Journal) -> tuple[int, int]:
    """The counts as a full scan of the table gives them (what counts() gave before)."""
    total, pending = journal.db.execute(
        "SELECT count(*), count(*) FILTER (WHERE uploaded_at IS NULL) FROM sales"
    ).fetchone()
    return int(total), int(pending)


def fill(journal: Journal, entries: int, now: datetime) -> dict[str, int]:
    """``entries`` entries: sales, with every 50th entry an event, every 97th a void of
    the sale before it and every 89th a refund of one unit of it."""
    kinds = {"sale": 0, "event": 0, "void": 0, "refund": 0}
    last_sale = 0
    for n in range(1, entries + 1):
        if n % 50 == 0:
            journal.append(event(n), now)
            kinds["event"] += 1
        elif n % 97 == 0 and last_sale:
            seq = last_sale
            journal.append_reversal(
                seq, lambda s, later: void_draft(s, later, "wrong amount", None, now), now
            )
            kinds["void"] += 1
            last_sale = 0
        elif n % 89 == 0 and last_sale:
            seq = last_sale
            journal.append_reversal(
                seq, lambda s, later: refund_draft(s, later, [(0, 1)], "returned", None, now), now
            )
            kinds["refund"] += 1
            last_sale = 0
        else:
            last_sale = journal.append(sale(), now).seq
            kinds["sale"] += 1
    return kinds


def test_the_counts_stay_exact_on_a_journal_of_many_entries_and_after_uploads(
    tmp_path: Path, clock
) -> None:
    journal = Journal(tmp_path / "j.db", TEST_SIGNER)
    journal.db.execute("PRAGMA synchronous=OFF")  # speed: durability is not tested here
    assert journal.counts() == (0, 0) == scanned(journal)
    kinds = fill(journal, ENTRIES, clock())
    assert all(kinds.values()) and sum(kinds.values()) == ENTRIES
    assert journal.counts() == (ENTRIES, ENTRIES) == scanned(journal)
    for through in (1, 2_500, 2_500, 7_777, ENTRIES - 200):
        journal.mark_uploaded(through, clock())
        assert journal.counts() == (ENTRIES, ENTRIES - through) == scanned(journal)
    clock.advance(timedelta(minutes=1))
    journal.append(sale(), clock())
    journal.append(event(0), clock())
    assert journal.counts() == (ENTRIES + 2, 202) == scanned(journal)
    journal.mark_uploaded(ENTRIES + 2, clock())
    assert journal.counts() == (ENTRIES + 2, 0) == scanned(journal)
    journal.close()
    reopened = Journal.existing(tmp_path / "j.db")  # read-only (no key), as `terminal status`
    assert reopened.counts() == (ENTRIES + 2, 0)
    assert len(reopened.sales()) == ENTRIES + 2 and reopened.verify() == ENTRIES + 2
    reopened.close()


def test_an_old_journal_gets_the_index_on_time_when_opened(tmp_path: Path, clock) -> None:
    journal = Journal(tmp_path / "j.db", TEST_SIGNER)
    journal.append(sale(), clock())
    journal.db.execute("DROP INDEX sales_at")  # as a journal made before migration 7
    journal.db.execute("DELETE FROM migrations WHERE id = 7")
    journal.close()
    reopened = Journal(tmp_path / "j.db", TEST_SIGNER)
    plan = reopened.db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM sales WHERE at >= ? AND at < ?", ["a", "b"]
    ).fetchall()
    assert any("sales_at" in str(row) for row in plan)
    assert reopened.counts() == (1, 1)
    reopened.close()


def test_a_day_s_entries_are_read_by_their_time(tmp_path: Path, clock) -> None:
    journal = Journal(tmp_path / "j.db", TEST_SIGNER)
    start = clock()
    days = []
    for day in range(3):
        days.append([journal.append(sale(100 * day + n), clock()) for n in range(1, 4)])
        clock.advance(timedelta(days=1))
    assert journal.between(start + timedelta(days=1), start + timedelta(days=2)) == days[1]
    assert journal.between(start, start + timedelta(days=3)) == [s for d in days for s in d]
    assert journal.between(start - timedelta(days=1), start) == []
    journal.close()


def test_the_reads_see_the_last_commit_and_do_not_wait_for_a_writer(tmp_path: Path, clock) -> None:
    """A checkout in this process is in the middle of its append (it holds the
    journal's lock) and another connection (the sync's process) holds SQLite's write
    lock with a change not yet committed: the counts, the newest entries and the
    newest time answer at once, from the last commit."""
    journal = Journal(tmp_path / "j.db", TEST_SIGNER)
    first = journal.append(sale(), clock())
    other = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE sales SET uploaded_at = 'x' WHERE seq = 1")
    answers: list[object] = []

    def read() -> None:
        answers.extend([journal.counts(), journal.newest_at(), len(journal.recent())])

    reader = threading.Thread(target=read)
    with journal.lock:  # as an append holds it through its commit and fsync
        reader.start()
        reader.join(timeout=10)
    try:
        assert not reader.is_alive(), "a read waited for the writer"
        assert answers == [(1, 1), first.at, 1]
    finally:
        other.execute("COMMIT")
        other.close()
    assert journal.counts() == (1, 0)  # committed now
    journal.close()


WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA synchronous=FULL")
conn.execute("BEGIN IMMEDIATE")
row = conn.execute("SELECT * FROM sales WHERE seq = 1").fetchone()
names = [d[0] for d in conn.execute("SELECT * FROM sales LIMIT 0").description]
for seq in range(2, 5):
    values = dict(zip(names, row), seq=seq, sale_id=f"half-{seq}", uploaded_at=None)
    conn.execute(
        f"INSERT INTO sales ({','.join(values)}) VALUES ({','.join('?' * len(values))})",
        list(values.values()),
    )
conn.execute("UPDATE sales SET uploaded_at = 'x' WHERE seq = 1")
print("written", flush=True)
time.sleep(60)
"""


def test_a_writer_killed_half_way_leaves_the_counts_as_they_were(tmp_path: Path, clock) -> None:
    """A process killed (SIGKILL) in the middle of its write transaction: its entries
    and its upload mark were never committed, so neither counts, and the next entry
    takes the next seq."""
    path = tmp_path / "j.db"
    journal = Journal(path, TEST_SIGNER)
    journal.append(sale(), clock())
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    ) as writer:
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "written\n"
            assert journal.counts() == (1, 1)  # not waiting for the writer, not seeing it
            writer.send_signal(signal.SIGKILL)
        finally:
            writer.kill()
            writer.wait()
    assert journal.counts() == (1, 1) == scanned(journal)
    second = journal.append(replace(sale(), gross=2000, net=1950), clock())
    assert second.seq == 2 and journal.counts() == (2, 2) == scanned(journal)
    assert journal.verify(TEST_SIGNER.public_key()) == 2
    journal.close()


def test_a_closed_journal_does_not_answer(tmp_path: Path, clock) -> None:
    journal = Journal(tmp_path / "j.db", TEST_SIGNER)
    journal.append(sale(), clock())
    journal.close()
    for read in (journal.counts, journal.newest_at, journal.recent, journal.sales):
        try:
            read()
        except sqlite3.Error:
            continue
        raise AssertionError(f"{read.__name__} answered after close")
