"""Terminal <-> central over real HTTP on loopback: sync, retries, exits, refusals."""

from __future__ import annotations

import sqlite3

import pytest

from central.keys import create_keys
from sync.client import CentralClient
from sync.errors import CentralUnreachableError
from sync.run import run_sync
from terminal.state import TerminalState
from tests.conftest import FAST, Site
from tests.helpers import MEMBER_PAN, OTHER_PAN, roster_bytes


def test_first_sync_installs_roster_and_policy_then_discounts(site: Site, clock) -> None:
    report = site.sync(clock)
    assert (report.uploaded, report.roster_version, report.policy_version) == (0, 1, 1)
    member = site.sell(MEMBER_PAN, 12800, clock)
    other = site.sell(OTHER_PAN, 4550, clock)
    assert (member["member"], member["discount_fen"], member["net_fen"]) == (True, 640, 12160)
    assert (other["member"], other["discount_fen"]) == (False, 0)
    assert "not a union member" in other["reasons"]
    report = site.sync(clock)
    assert report.uploaded == 2 and report.roster_version is None  # nothing new to pull
    (row,) = [r for r in site.union.settlement() if r.merchant_id == "M0001"]
    assert (row.sales, row.member_sales, row.gross, row.discount, row.net) == (
        2,
        1,
        17350,
        640,
        16710,
    )


def test_lost_ack_does_not_duplicate(site: Site, clock) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 1000, clock)
    site.sell(MEMBER_PAN, 2000, clock)
    # The upload reaches the central service but the ack never reaches the terminal:
    from pact.wire import encode_sales

    site.client.upload_sales(encode_sales("T1", site.journal.pending()))
    assert site.journal.counts() == (2, 2)
    report = site.sync(clock)  # resends both
    assert report.uploaded == 2 and site.journal.counts() == (2, 0)
    assert [s.seq for s in site.union.store.sales_for("T1")] == [1, 2]
    assert site.union.store.sales_for("T1") == site.journal.sales()  # stored as journaled


def test_unreachable_central_loses_nothing(site: Site, clock, tmp_path) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 1000, clock)
    dead = CentralClient("http://127.0.0.1:9", "T1", "x", FAST)
    with pytest.raises(CentralUnreachableError, match="cannot reach the central service"):
        run_sync("T1", site.state, site.journal, dead, clock)
    assert site.journal.counts() == (1, 1)
    assert site.sync(clock).uploaded == 1


def test_exited_merchant_stops_discounting_after_sync(site: Site, clock) -> None:
    site.sync(clock)
    assert site.sell(MEMBER_PAN, 10000, clock)["discount_fen"] == 500
    site.union.set_merchant_status("M0001", "exited")
    assert site.sync(clock).policy_version == 2
    sale = site.sell(MEMBER_PAN, 10000, clock)
    assert sale["discount_fen"] == 0 and sale["member"] is True
    assert any("merchant exited" in r for r in sale["reasons"])


def test_forged_roster_from_central_is_refused_old_one_serves(site: Site, clock, tmp_path) -> None:
    site.sync(clock)
    attacker = create_keys(tmp_path / "attacker", now=clock())
    forged = roster_bytes(attacker, [OTHER_PAN], clock(), version=9)
    site.union.store.put_signed("roster", 9, forged, "2026-11-28T00:00:00Z")
    report = site.sync(clock)
    assert report.roster_version is None
    assert any("not signed by any trusted key" in p for p in report.problems)
    assert site.state.current.roster is not None and site.state.current.roster.version == 1
    assert site.sell(MEMBER_PAN, 1000, clock)["member"] is True
    reloaded = TerminalState(site.state.dir)
    reloaded.load()
    assert reloaded.current.roster is not None and reloaded.current.roster.version == 1


def test_wrong_secret_is_refused(site: Site, clock) -> None:
    from sync.errors import CentralRefusedError

    bad = CentralClient(site.url, "T1", "not-the-secret", FAST)
    with pytest.raises(CentralRefusedError, match="re-enrol"):
        bad.fetch_snapshot(0)


def test_daemon_sees_what_a_separate_sync_installed(site: Site, clock) -> None:
    """The nightly sync runs as its own process; the daemon's state picks up its files."""
    daemon_view = TerminalState(site.state.dir)
    daemon_view.load()
    assert daemon_view.current.roster is None
    site.sync(clock)  # "another process" installs roster v1 and policy v1
    daemon_view.refresh()
    assert daemon_view.current.roster is not None and daemon_view.current.roster.version == 1
    assert daemon_view.current.policy is not None and daemon_view.current.policy.version == 1


def test_key_rotation_reaches_the_terminal_through_sync(tmp_path, clock) -> None:
    """The union rotates its root and roster keys; the terminal walks root v1 -> v3
    during its next sync and installs the roster signed by the new roster key."""
    from central import create_app
    from central.keys import rotate
    from central.serve import ThreadedServer
    from central.service import CentralPaths, Union
    from sync.client import CentralClient
    from terminal.journal import Journal
    from tests.conftest import FAST

    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, None, clock)
    union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    union.add_merchant("M0001", "Shop", 500)
    union.publish_roster()
    state = TerminalState(tmp_path / "terminal")
    state.enrol(union.enrol_terminal("T1", "M0001", "http://127.0.0.1:9"))
    secret = state.enrolment.api_secret
    union.close()
    journal = Journal(state.journal_path, state.signer())

    def sync_once() -> object:
        with ThreadedServer(create_app({"DATA_DIR": str(paths.data_dir), "CLOCK": clock})) as s:
            client = CentralClient(s.url, "T1", secret, FAST)
            try:
                return run_sync("T1", state, journal, client, clock)
            finally:
                client.close()

    assert sync_once().roster_version == 1
    rotate(paths.keys, "root", root_key=paths.keys / "root.pem", now=clock())
    rotate(paths.keys, "roster", root_key=paths.keys / "root.pem", now=clock())
    union = Union.open(paths, None, clock)  # the restarted service, with the new keys
    union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\nU2,{OTHER_PAN}\n")
    union.publish_roster()
    union.close()
    report = sync_once()
    assert report.problems == [] and report.root_version == 3 and report.roster_version == 2
    assert state.current.root.version == 3 and len(state.current.roster) == 2
    journal.close()


def test_a_small_change_arrives_as_a_delta_layer(site: Site, clock) -> None:
    """The union adds one member to forty: the terminal fetches only the new layer,
    keeps its roster file (a hard link), and serves the new member at once."""
    from pact.roster import RECORD_SIZE, split_roster
    from tests.helpers import with_luhn

    rows = "".join(f"U{i},{with_luhn(f'6214{i:011d}')}\n" for i in range(2, 41))
    site.union.import_members(f"member_id,pan\n{rows}")
    site.union.publish_roster()
    assert site.sync(clock).roster_version == 2
    base = site.state.current_path.resolve() / "roster.ucr"
    inode, size = base.stat().st_ino, base.stat().st_size
    assert site.sell(OTHER_PAN, 1000, clock)["member"] is False

    site.union.import_members(f"member_id,pan\nU99,{OTHER_PAN}\n")
    site.union.publish_roster()
    kind, delta = site.union.roster_file(2, 3)
    assert kind == "delta" and len(split_roster(delta)[1]) == RECORD_SIZE  # one record
    assert len(delta) < size
    assert site.sync(clock).roster_version == 3
    gen = site.state.current_path.resolve()
    assert (gen / "roster.ucr").stat().st_ino == inode
    assert (gen / "roster-delta-0000000003.ucr").read_bytes() == delta
    assert len(site.state.current.roster.layers) == 2 and len(site.state.current.roster) == 41
    assert site.sell(OTHER_PAN, 1000, clock)["member"] is True
    assert site.sell(MEMBER_PAN, 1000, clock)["member"] is True
    # a terminal enrolled now fetches version 3 in full: the same roster
    kind, full = site.union.roster_file(0, 3)
    assert kind == "full"
    reloaded = TerminalState(site.state.dir)
    reloaded.load()
    assert (
        reloaded.current.roster.header.body_sha256 == site.state.current.roster.header.body_sha256
    )


def _restorable(site: Site, clock) -> tuple[str, sqlite3.Connection]:
    """A sale synced and backed up, two more synced, then the backup restored: the
    union's copy ends at the first sale, which the terminal's journal goes past."""
    site.sync(clock)
    site.sell(MEMBER_PAN, 1000, clock)
    site.sync(clock)
    database = str(site.union.store.engine.url.database)
    backup = sqlite3.connect(":memory:")
    with sqlite3.connect(database) as live:
        live.backup(backup)  # the night's backup, holding the first sale
    for amount in (2000, 3000):
        site.sell(MEMBER_PAN, amount, clock)
    assert site.sync(clock).uploaded == 2
    with sqlite3.connect(database) as live:
        backup.backup(live)  # restored: the union lost the two sales it acknowledged
    assert [s.gross for s in site.union.store.sales_for("T1") if s.is_sale] == [1000]
    return database, backup


def test_a_union_restored_from_an_older_backup_gets_back_what_it_lost(site: Site, clock) -> None:
    """The union's database restored from last night's backup lacks the entries it
    acknowledged since, which the terminal had marked uploaded: every later upload
    was refused (409, a gap) night after night, and those sales never reached the
    union's settlement. The union now answers where its copy ends, and the terminal
    sends again from there (its journal keeps every entry): each once."""
    database, backup = _restorable(site, clock)
    site.sell(MEMBER_PAN, 4000, clock)

    report = site.sync(clock)
    assert report.problems == [] and report.pending == 0, report
    restored = 2  # the union's copy ended at the first sale (seq 1)
    assert (report.resent_from, report.resent, report.uploaded) == (restored, 2, 1)
    assert "the union's copy ended at entry 1: sent 2 entries again from 2" in report.describe()
    held = site.union.store.sales_for("T1")
    assert [s.seq for s in held] == list(range(1, len(held) + 1))  # each once, no gap
    assert [s.gross for s in held if s.is_sale] == [1000, 2000, 3000, 4000]
    assert [s.hash for s in held] == [s.hash for s in site.journal.sales()]
    (row,) = [r for r in site.union.settlement() if r.merchant_id == "M0001"]
    assert (row.sales, row.gross) == (4, 10000)  # its totals as restored, then each sale once
    assert site.sync(clock).uploaded == 0  # and nothing is sent again after
    (asked,) = [r for r in site.union.store.refusals("T1") if "again from" in r["reason"]]
    assert "holds this terminal's entries through 1 only" in asked["reason"]


def test_an_idle_terminal_sends_back_what_a_restored_union_lost(site: Site, clock) -> None:
    """With nothing pending a sync sent nothing, so a terminal with no sale since the
    restore never heard that the union had lost its entries (and the union's
    decommission waited for them for ever): it sends its newest entry to ask."""
    _restorable(site, clock)
    pending_before = site.journal.counts()[1]
    report = site.sync(clock)
    assert (report.resent_from, report.resent, report.sent) == (2, 2, 0), report
    assert site.journal.counts()[1] == pending_before == 0  # the marks never moved
    held = site.union.store.sales_for("T1")
    assert [s.hash for s in held] == [s.hash for s in site.journal.sales()]
    again = site.sync(clock)  # held: the newest entry is a duplicate, nothing more
    assert (again.resent_from, again.sent) == (None, 0)
    assert len(site.union.store.sales_for("T1")) == len(held)


@pytest.mark.parametrize("answer", [{"acked_through": True}, {"acked_through": -1}, {}, []])
def test_an_acknowledgement_out_of_range_is_refused(answer: object) -> None:
    from pact.errors import WireFormatError
    from pact.wire import decode_ack

    with pytest.raises(WireFormatError, match="no acked_through"):
        decode_ack(answer)
