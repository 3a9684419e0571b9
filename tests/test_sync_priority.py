"""The daemon's sync runs in the background of the machine: its process at nice 19 and
under SCHED_IDLE (terminal.syncing.run_in_the_background), so that the checkouts served
meanwhile keep the cores (issue 13, bench/bgsync.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from terminal.syncing import BACKGROUND_NICE, run_in_the_background, sync_in_a_process

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux scheduling")


def scheduling(pid: int) -> tuple[int, int]:
    """(nice, policy) of process ``pid`` as Linux shows them in /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16]), int(fields[38])  # stat's 19th and 41st fields


def test_a_process_is_put_in_the_background() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert scheduling(child.pid) == (os.getpriority(os.PRIO_PROCESS, 0), os.SCHED_OTHER)
        assert run_in_the_background(child.pid) == []
        assert scheduling(child.pid) == (BACKGROUND_NICE, os.SCHED_IDLE)
    finally:
        child.kill()
        child.wait()


def test_what_is_refused_is_said_not_raised() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    time.sleep(0.1)
    refused = run_in_the_background(gone.pid)  # reaped: no such process
    assert refused == ["nice 19 (No such process)", "SCHED_IDLE (No such process)"]


def test_the_daemons_sync_runs_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sync_in_a_process's child, a stand-in for `unioncard sync` that notes how it was
    scheduled once running (after the moment the daemon takes to lower it)."""
    noted = tmp_path / "noted.json"
    stand_in = tmp_path / "python"
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        "time.sleep(0.5)\n"
        "noted = {'nice': os.getpriority(os.PRIO_PROCESS, 0),\n"
        "         'policy': os.sched_getscheduler(0), 'argv': sys.argv[1:]}\n"
        f"open({str(noted)!r}, 'w').write(json.dumps(noted))\n"
        "print(json.dumps({'uploaded': 3, 'sent': 3, 'pending': 0}))\n"
    )
    stand_in.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(stand_in))
    report = sync_in_a_process(tmp_path / "terminal", 200, timeout=60)
    assert (report.uploaded, report.sent, report.pending) == (3, 3, 0)
    assert json.loads(noted.read_text()) == {
        "nice": BACKGROUND_NICE,
        "policy": os.SCHED_IDLE,
        "argv": ["-m", "unioncard", "sync", "--data", str(tmp_path / "terminal"), "--json"],
    }


def test_a_sync_past_its_time_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = tmp_path / "python"
    stand_in.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    stand_in.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(stand_in))
    began = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        sync_in_a_process(tmp_path, 500, timeout=0.5)
    assert time.monotonic() - began < 10
