"""Storage faults on the terminal: a full disk, a damaged journal, a WAL cut short.

The full disk is real: a small tmpfs mounted by the test (as root; in CI a missing
capability fails the test, tests.conftest.missing) holds a real terminal's data
folder, and a file fills it to ENOSPC. A sale, an update and a sync are refused
with one line that names the folder; what was journaled before stays, verified;
once space is freed the sales go on with the next sequence number.

The damaged journal: a page of journal.db overwritten, and a WAL cut short after a
process died without checkpointing (its wal-index still says how much was
committed). The terminal records nothing and gives no discount, says why on its
status, API and command line, and never rewrites the damaged files.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pact.cards import PanTokenizer
from reader.identity import identity_from_pan
from terminal.devicekey import load_public_key
from terminal.disk import RESERVE, free_bytes
from terminal.errors import DiskFullError, JournalDamagedError
from terminal.journal import Journal, damage_marker
from terminal.service import TerminalService
from terminal.state import TerminalState
from terminal.syncing import sync_terminal
from terminal.walcheck import wal_loss
from terminal.web import create_app
from tests.conftest import Site, missing
from tests.helpers import MEMBER_PAN, OTHER_PAN, invoke, till_client

DISK = 24 * 1024 * 1024  # the tmpfs: room for the terminal, then filled


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs at tmp_path/terminal, where the ``site`` fixture enrols the
    terminal (request it before ``site``)."""
    mount = tmp_path / "terminal"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        missing("mounting a tmpfs (run the tests as root)", done.stderr.strip())
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Fill ``folder``'s file system to the last byte (ENOSPC); the file that did."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    assert free_bytes(folder) < 4096
    return filler


def reader_of(state: TerminalState, pans: list[str]):
    """A card reader that presents ``pans`` in turn (the sale's card is not the test)."""
    cards = iter(pans)

    def read(*, timeout: float, tokenize: PanTokenizer):
        return identity_from_pan("unionpay", b"\xa0", next(cards), "2030-12", tokenize)

    return read


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob("journal.db*"))
        if not p.name.endswith(".damaged")
    }


@pytest.fixture
def full_site(small_disk: Path, site: Site, clock) -> Site:
    site.sync(clock)  # roster v1 and the policy installed
    site.journal.close()
    return site


def test_a_full_disk_refuses_the_sale_and_loses_nothing(full_site: Site, clock) -> None:
    data = full_site.state.dir
    service = TerminalService(data, reader_of(full_site.state, [MEMBER_PAN] * 9), clock)
    try:
        before = [service.checkout(gross, confirm=True).sale for gross in (12800, 4550, 999)]
        app = create_app(service)  # the daemon's page and till tokens, made before
        till, till_zh = till_client(app), till_client(app, "zh")
        filler = fill(data)

        with pytest.raises(DiskFullError) as refused:
            service.checkout(2000, confirm=True)
        line = one_line(str(refused.value))
        assert line.startswith("the sale was NOT recorded: the disk of the terminal's data folder")
        assert str(data) in line and "free space there" in line
        # the journal itself refuses too (a sale priced before the disk filled up)
        with pytest.raises(DiskFullError):
            service.record_event("startup", "on a full disk")

        answer = till.post("/api/v1/checkout", json={"amount": "20.00", "confirm": True})
        body = answer.get_json()
        assert (answer.status_code, body["kind"]) == (503, "disk_full")
        assert body["error"] == line
        zh = till_zh.post("/api/v1/checkout", json={"amount": "20.00"}).get_json()
        assert zh["kind"] == "disk_full" and "磁盘" in zh["error"] and str(data) in zh["error"]
        status = till.get("/api/v1/status").get_json()
        warnings = status["warnings"]
        assert any(w.startswith("the disk of the terminal's data folder") for w in warnings)

        cli = invoke("terminal", "checkout", "20.00", "--data", str(data))
        assert cli.returncode != 0 and one_line(cli.stderr).startswith("error: the sale was NOT")

        journal = Journal(data / "journal.db")  # what was journaled is all there, verified
        assert journal.verify(load_public_key(data)) == 3
        assert [s.hash for s in journal.sales()] == [s.hash for s in before]
        journal.close()

        filler.unlink()  # space freed: the sales go on, gapless
        assert free_bytes(data) > RESERVE
        after = service.checkout(3000, confirm=True).sale
        assert after.seq == 4 and after.prev_hash == before[-1].hash
        assert service.journal.verify(load_public_key(data)) == 4
        assert not till.get("/api/v1/status").get_json()["warnings"]
    finally:
        service.close()


def test_an_update_and_a_sync_on_a_full_disk_are_refused(full_site: Site, clock, tmp_path) -> None:
    site = full_site
    data = site.state.dir
    site.union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\nU2,{OTHER_PAN}\n")
    site.union.publish_roster()  # roster v2 waits at the union
    snapshot = site.client.fetch_snapshot(1)
    assert snapshot is not None
    files = {"snapshot": tmp_path / "snapshot.json", "roster": tmp_path / "roster.ucr"}
    files["snapshot"].write_bytes(snapshot)
    site.client.fetch_roster(1, 2, files["roster"])
    state = TerminalState(data)
    journal = Journal(data / "journal.db", state.signer())  # open, as the daemon holds it
    filler = fill(data)

    by_hand = invoke(
        "terminal", "install-update", "--data", str(data),
        "--snapshot", str(files["snapshot"]), "--roster", str(files["roster"]),
    )  # fmt: skip
    assert by_hand.returncode != 0
    # (the journal is opened first: with no daemon holding it, that needs room already)
    line = one_line(by_hand.stderr)
    assert "the disk of the terminal's data folder" in line and "is full" in line
    try:
        with pytest.raises(DiskFullError, match="sync stopped: the disk of the terminal's"):
            sync_terminal(state, journal, clock)
    finally:
        journal.close()
    synced = invoke("sync", "--data", str(data))
    assert synced.returncode != 0 and "is full" in one_line(synced.stderr)
    state.load()
    assert state.current.roster_version == 1  # the old generation stays in service
    assert [p.name for p in (data / "gens").iterdir()] == [os.readlink(data / "current")[5:]]

    filler.unlink()
    journal = Journal(data / "journal.db", state.signer())
    try:
        sync_terminal(state, journal, clock)
        assert state.current.roster_version == 2 and len(state.current.roster or ()) == 2
        assert journal.verify(load_public_key(data)) == len(journal.sales())
    finally:
        journal.close()


# -- a damaged journal ----------------------------------------------------------------


def corrupt_a_page(db: Path) -> None:
    """Overwrite the journal's last page (its newest sales) with noise, as a worn SD
    card might."""
    size = db.stat().st_size
    page = 4096
    assert size >= 3 * page
    with open(db, "r+b") as fh:
        fh.seek(size - page)
        fh.write(os.urandom(page))


def test_a_damaged_journal_gives_no_discount_and_keeps_the_evidence(site: Site, clock) -> None:
    site.sync(clock)
    for gross in range(40):
        site.sell(MEMBER_PAN, 1000 + gross, clock)  # a few pages of sales
    site.journal.close()  # checkpointed into journal.db
    data = site.state.dir
    db = data / "journal.db"
    corrupt_a_page(db)
    evidence = digests(data)

    service = TerminalService(data, reader_of(site.state, [MEMBER_PAN]), clock, check_journal=True)
    try:
        assert service.damage is not None
        with pytest.raises(JournalDamagedError) as refused:
            service.checkout(2000, confirm=True)
        line = one_line(str(refused.value))
        assert line.startswith("the journal is damaged: ") and str(db) in line
        assert service.startup("test") == []  # nothing journaled
        app = create_app(service)
        answer = till_client(app).post("/api/v1/checkout", json={"amount": "20.00"})
        assert (answer.status_code, answer.get_json()["kind"]) == (503, "journal_damaged")
        status = till_client(app).get("/api/v1/status").get_json()
        assert status["journal_damaged"] == line and status["warnings"][0] == line
        assert status["sales"] is None and status["offline"]["discounts"] is False
        zh = till_client(app, "zh").get("/api/v1/status").get_json()
        assert "日志" in zh["warnings"][0] and str(db) in zh["warnings"][0]
    finally:
        service.close()

    # every later process refuses it, in one line, without opening it
    for args in (("terminal", "checkout", "20.00"), ("terminal", "journal", "--verify"), ("sync",)):
        ran = invoke(*args, "--data", str(data))
        assert ran.returncode != 0, args
        assert one_line(ran.stderr).startswith("error: the journal is damaged: ")
    assert digests(data) == evidence  # the damaged files are untouched
    assert damage_marker(db).exists()


SELL_AND_DIE = """
import os, sys
from pathlib import Path
from datetime import UTC, datetime
from terminal.journal import Journal
from terminal.service import journal_event
from terminal.state import TerminalState
state = TerminalState(Path(sys.argv[1]))
journal = Journal(state.journal_path, state.signer())
for n in range(int(sys.argv[2])):
    journal_event(journal, state, "startup", f"entry {n}", datetime.now(UTC))
os._exit(0)  # as a power cut: no checkpoint, the WAL and its index stay
"""


def die_after(data: Path, entries: int) -> None:
    subprocess.run([sys.executable, "-c", SELL_AND_DIE, str(data), str(entries)], check=True)


def test_a_wal_cut_short_is_refused_and_kept(site: Site, clock) -> None:
    site.journal.close()
    data = site.state.dir
    db = data / "journal.db"
    die_after(data, 12)
    wal = db.with_name("journal.db-wal")
    frame = 24 + 4096
    assert (wal.stat().st_size - 32) % frame == 0 and wal_loss(db) is None
    with open(wal, "r+b") as fh:  # the last commits cut off, mid-frame
        fh.truncate(wal.stat().st_size - 3 * frame - 1000)
    evidence = digests(data)
    lost = wal_loss(db)
    assert lost is not None and "frames of sales lost" in lost

    service = TerminalService(data, reader_of(site.state, [MEMBER_PAN]), clock)
    try:
        assert service.damage is not None and "WAL journal.db-wal" in str(service.damage)
        with pytest.raises(JournalDamagedError):
            service.checkout(2000, confirm=True)
    finally:
        service.close()
    ran = invoke("terminal", "journal", "--verify", "--data", str(data))
    assert ran.returncode != 0 and "cut short" in one_line(ran.stderr)
    assert digests(data) == evidence  # SQLite never opened it: nothing replayed or reset


def test_a_wal_torn_after_its_last_commit_loses_nothing(site: Site, clock) -> None:
    """A kill between SQLite's two writes of a frame, or a power cut during one, tears
    the WAL after its last commit: normal recovery, no damage reported."""
    site.journal.close()
    data = site.state.dir
    db = data / "journal.db"
    die_after(data, 5)
    with open(db.with_name("journal.db-wal"), "ab") as fh:
        fh.write(os.urandom(1500))  # half a frame of a transaction never committed
    assert wal_loss(db) is None
    journal = Journal(db, site.state.signer())
    try:
        assert journal.verify(load_public_key(data)) == 5
        assert [e.seq for e in journal.sales()] == [1, 2, 3, 4, 5]
    finally:
        journal.close()
