"""The fleet view and revocation (issue 14, item 4): each terminal's merchant, last
contact and last report (versions installed, pending, warnings), the last seq the union
holds; a revoked terminal's calls are refused and its last seq recorded."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest

from central.errors import InputError
from pact.timefmt import iso
from sync.errors import CentralRefusedError
from tests.conftest import Site
from tests.helpers import MEMBER_PAN
from tests.test_commands import run


def _row(site: Site) -> dict:
    [row] = [r for r in site.union.fleet() if r.terminal_id == "T1"]
    return row.as_json()


def test_each_sync_reports_what_the_terminal_holds(site: Site, clock) -> None:
    [before] = [r.as_json() for r in site.union.fleet()]
    assert before["last_contact_at"] is None and before["warnings"] == [
        "has never called the union"
    ]
    site.sync(clock)
    row = _row(site)
    assert row["last_contact_at"] == row["reported_at"] == iso(clock())
    assert (row["root_version"], row["roster_version"], row["policy_version"]) == (1, 1, 1)
    assert row["snapshot_version"] == 1 and row["pending"] == 0
    assert row["acked_seq"] == 0  # nothing journaled yet
    assert row["warnings"] == []
    site.sell(MEMBER_PAN, 1000, clock)
    site.sell(MEMBER_PAN, 2000, clock)
    clock.advance(timedelta(hours=1))
    site.sync(clock)
    row = _row(site)
    assert row["acked_seq"] == 2 and row["reported_at"] == iso(clock())
    # a terminal silent past the offline limit is flagged
    clock.advance(timedelta(hours=72))
    assert _row(site)["warnings"] == ["silent for 72 hours: past the offline limit"]


def test_a_call_is_recorded_once_a_minute_at_most(site: Site, clock) -> None:
    site.sync(clock)
    first = _row(site)["last_contact_at"]
    clock.advance(timedelta(seconds=30))
    site.client.fetch_snapshot(99)  # an authenticated call
    assert _row(site)["last_contact_at"] == first
    clock.advance(timedelta(seconds=31))
    site.client.fetch_snapshot(99)
    assert _row(site)["last_contact_at"] == iso(clock())


def test_calls_within_the_minute_do_not_wait_for_the_write_lock(site: Site, clock) -> None:
    """A sync makes a call a batch; within the minute kept, authenticating one writes
    nothing, so it neither takes SQLite's write lock nor waits behind a writer (an
    ingest of another terminal holding it). It waited up to the busy timeout before."""
    site.sync(clock)
    clock.advance(timedelta(seconds=30))
    url = site.union.store.engine.url.database
    writer = sqlite3.connect(url, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        began = time.monotonic()
        header = f"Bearer T1.{site.state.enrolment.api_secret}"
        assert site.union.authenticate(header)["terminal_id"] == "T1"
        assert time.monotonic() - began < 1  # the busy timeout is 10 s
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    clock.advance(timedelta(seconds=31))  # past the minute: the call is recorded
    site.union.authenticate(header)
    assert _row(site)["last_contact_at"] == iso(clock())


def test_a_bad_report_is_refused_naming_the_field(site: Site) -> None:
    terminal = {"terminal_id": "T1"}
    for body, field in (
        ([], "JSON object"),
        ({"pending": -1}, "pending"),
        ({"pending": 0, "roster_version": "2"}, "roster_version"),
        ({"pending": 0, "warnings": "bad"}, "warnings"),
    ):
        with pytest.raises(InputError, match=field):
            site.union.record_report(terminal, body)


def test_a_revoked_terminal_is_refused_and_its_last_seq_kept(
    site: Site, clock, tmp_path: Path, capsys
) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 1000, clock)
    site.sync(clock)
    data = ["--data", str(tmp_path / "central")]
    code, out, err = run(capsys, "central", "revoke-terminal", "T1", "--reason", "stolen", *data)
    assert (code, err) == (0, "")
    assert out.strip() == "terminal T1 revoked; the union holds its entries up to #1"
    site.sell(MEMBER_PAN, 3000, clock)  # sold on the stolen box
    with pytest.raises(CentralRefusedError, match="revoked .*stolen.*refuses its calls"):
        site.sync(clock)
    assert [s.seq for s in site.union.store.sales_for("T1")] == [1]
    row = _row(site)
    assert row["revoked_last_seq"] == 1 and row["revoked_reason"] == "stolen"
    assert row["warnings"][0].startswith("revoked at ")
    assert site.union.revoke_terminal("T1", "again") == 1  # once
    code, out, _ = run(capsys, "central", "terminals", *data)
    assert code == 0
    header, line = out.splitlines()
    assert header.split()[:3] == ["terminal", "merchant", "last"]
    assert line.split()[:2] == ["T1", "M0001"] and "revoked at" in line
    code, out, _ = run(capsys, "central", "terminals", "--json", *data)
    assert code == 0 and json.loads(out)[0]["revoked_reason"] == "stolen"
    code, _, err = run(capsys, "central", "revoke-terminal", "T404", "--reason", "x", *data)
    assert code != 0 and "no terminal T404" in err
