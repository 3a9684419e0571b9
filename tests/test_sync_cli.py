"""`unioncard sync [--dry-run] [--json]` (issue 13, item 4): a summary line, a progress
bar on a terminal, a JSON outcome for machines, and exit codes that tell systemd and a
technician what happened. Against a real central service on the wall clock."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.service import Union
from sync.run import SyncReport
from terminal.journal import Journal
from terminal.state import TerminalState
from terminal.syncrecord import last_sync
from tests.conftest import Clock, Site, wall_clock
from tests.helpers import MEMBER_PAN, OTHER_PAN
from tests.test_commands import one_line_error, run
from tests.test_reader_recovery import UNIONCARD


@pytest.fixture
def clock() -> Clock:
    """`unioncard sync` reads the wall clock: the union's must agree (tests.conftest)."""
    return wall_clock()


@pytest.fixture
def shop(site: Site, clock) -> Iterator[tuple[Site, Path]]:
    """An enrolled terminal that synced once, then sold three times (three pending)."""
    site.sync(clock)
    for gross in (1000, 2000, 3000):
        site.sell(MEMBER_PAN if gross != 2000 else OTHER_PAN, gross, clock)
    assert site.journal.counts()[1] == 3
    yield site, site.state.dir


def _pending(folder: Path) -> int:
    journal = Journal(folder / "journal.db")
    try:
        return journal.counts()[1]
    finally:
        journal.close()


def test_a_dry_run_shows_what_a_sync_would_do_and_does_nothing(shop, capsys) -> None:
    site, folder = shop
    union: Union = site.union
    union.import_members(f"member_id,pan\nU2,{OTHER_PAN}\n")
    version, _ = union.publish_roster()
    before = (folder / "journal.db").stat().st_size, last_sync(folder)
    code, out, err = run(capsys, "sync", "--dry-run", "--data", str(folder))
    assert (code, err) == (0, "")
    assert out.strip() == (
        f"dry run: would upload 3 entries (1 request), would install roster v{version}"
    )
    # nothing sent, marked, installed or recorded
    assert union.store.sales_for("T1") == []
    assert _pending(folder) == 3 and last_sync(folder) == before[1]
    assert TerminalState.open(folder).current.roster_version == version - 1
    code, out, _ = run(capsys, "sync", "--dry-run", "--json", "--data", str(folder))
    assert code == 0 and json.loads(out) == {
        "ok": True,
        "dry_run": True,
        "pending": 3,
        "batches": 1,
        "root_available": False,
        "roster_version": version,
        "policy_version": None,
        "problems": [],
        "exit_code": 0,
    }


def test_the_sync_ends_with_one_summary_line_and_a_json_outcome(shop, capsys) -> None:
    site, folder = shop
    site.journal.close()
    code, out, err = run(capsys, "sync", "--data", str(folder))
    assert (code, err) == (0, "")
    [line] = out.splitlines()
    assert line == "sync: uploaded 3 entries (0 still pending); roster v1, policy v1 in service"
    assert len(site.union.store.sales_for("T1")) == 3
    code, out, _ = run(capsys, "sync", "--json", "--data", str(folder))
    assert code == 0
    outcome = json.loads(out)
    assert outcome == {
        "ok": True,
        **SyncReport(pending=0).as_json(),
        "roster_in_service": 1,
        "policy_in_service": 1,
        "exit_code": 0,
    }


def test_a_backlog_shows_a_progress_bar_on_a_terminal(shop) -> None:
    site, folder = shop
    site.journal.close()
    env = {**os.environ, "UNIONCARD_SYNC_BATCH": "1"}  # three requests: a bar to fill
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [UNIONCARD, "sync", "--data", str(folder)],
            env=env,
            stdin=follower,
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    text = shown.decode()
    assert done.returncode == 0, done.stderr
    assert "uploading" in text and "100%" in text, text
    assert text.rstrip().splitlines()[-1].startswith("sync: uploaded 3 entries")
    assert _pending(folder) == 0


def test_the_exit_codes_say_what_happened(shop, capsys) -> None:
    site, folder = shop
    site.journal.close()
    enrolment_path = folder / "enrolment.json"
    kept = json.loads(enrolment_path.read_text())

    def enrolled_with(**changes: str) -> None:
        enrolment_path.write_text(json.dumps({**kept, **changes}))

    # 6: the central service cannot be reached (nothing listens there): try again later
    enrolled_with(central_url="http://127.0.0.1:9")
    code, out, err = run(capsys, "sync", "--json", "--data", str(folder))
    assert code == 6
    failed = json.loads(out)
    assert (failed["ok"], failed["exit_code"], failed["pending"]) == (False, 6, 3)
    assert failed["error"].startswith("cannot reach the central service")
    one_line_error(err, "cannot reach the central service")
    # 7: it refuses (it does not know this terminal's secret): a person must look
    enrolled_with(api_secret="00" * 32)
    code, _, err = run(capsys, "sync", "--data", str(folder))
    assert code == 7
    one_line_error(err, "does not know this terminal", "re-enrol")
    # 8: plain http to another machine: the enrolment must change
    enrolled_with(central_url="http://union.example.org")
    code, _, err = run(capsys, "sync", "--data", str(folder))
    assert code == 8
    one_line_error(err, "plain http")
    assert _pending(folder) == 3  # nothing lost
    enrolled_with()
    code, _, _ = run(capsys, "sync", "--data", str(folder))
    assert code == 0 and _pending(folder) == 0
    # 2: a bad option
    code, _, _ = run(capsys, "sync", "--data", str(folder), "--no-such-option")
    assert code == 2
