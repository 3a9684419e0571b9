"""The plumbing of the sync figures (bench/bgsync.py, bench/central.py): no timing here,
the figures live in `make bench`."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench import bgsync
from bench.central import BATCH, Uploaders
from bench.central import prose as central_prose


def test_the_figure_is_the_median_of_the_rounds_p99_ratios() -> None:
    product = [[0.002] * 9 + [0.004], [0.002] * 9 + [0.030], [0.002] * 9 + [0.006]]
    baseline = [[0.002] * 10] * 3
    figure = bgsync._ratio("f", product, baseline, "<= 1.2", "n", 10, {})
    assert figure.runs == [1.91, 13.74, 2.82]  # p99 of 10: 91 % of the way to the max
    assert figure.value == 2.82 and figure.met is False
    assert figure.detail["checkouts_during_sync_fewest"] == 10
    assert "3 rounds of up to 10 checkouts a side" in (figure.spread or "")


def test_the_timed_lock_notes_the_checkouts_waits_and_the_syncs_holds() -> None:
    lock = bgsync.TimedLock(threading.RLock())

    def hold() -> None:
        with lock, lock:  # re-entered: one hold
            time.sleep(0.05)

    sync = threading.Thread(target=hold, name=bgsync.SYNC_THREAD)
    sync.start()
    time.sleep(0.01)
    with lock:  # waits for the sync's hold
        pass
    sync.join()
    assert len(lock.waits) == 1 and lock.waits[0] > 0.02
    assert len(lock.holds) == 1 and lock.holds[0] >= 0.05
    assert list(lock.held_by) == ["hold"]


class Session:
    """Answers checkouts; the sync runs for the first ``running`` of them."""

    def __init__(self, running: int) -> None:
        self.running = running
        self.made = 0

    def post(self, url: str, json: Any) -> Any:
        self.made += 1
        syncing = "1" if self.made <= self.running else "0"
        return SimpleNamespace(
            status_code=200,
            json=lambda: {"state": "confirmed", "member": True},
            headers={bgsync.SYNCING: syncing},
            text="",
        )


def test_checkouts_during_a_sync_stop_with_it() -> None:
    session = Session(running=7)
    during = bgsync.checkouts(
        session, "http://t", 100, time.monotonic() + 60, lambda a: a.headers[bgsync.SYNCING] == "1"
    )
    assert len(during) == 7 and session.made == 8  # the one after the sync is not kept
    assert len(bgsync.checkouts(Session(0), "http://t", 5, time.monotonic() + 60)) == 5


def test_each_round_uploads_the_next_sales_of_each_terminal() -> None:
    sales: Any = {"T000": list(range(3 * 2 * BATCH))}
    up = Uploaders(rounds=2, per=2, signers={}, sales=sales)
    assert [up.slice("T000", r)[0] for r in range(3)] == [0, 2 * BATCH, 4 * BATCH]
    assert all(len(up.slice("T000", r)) == 2 * BATCH for r in range(3))


def test_the_prose_says_where_the_syncs_time_goes() -> None:
    figure = SimpleNamespace(
        name="sync throughput vs ingest alone, a backlog of 10,000 sales, SQLite",
        value=0.5,
        met=False,
        goal=">= 0.7",
        detail={
            "sync_ms": 1000.0,
            "ingest_ms": 500.0,
            "sync_sales_per_second": 10000,
            "ingest_sales_per_second": 20000,
            "client_cpu_ms": 300.0,
            "server_cpu_ms": 600.0,
            "journal_json_ms": 50.0,
            "gzip_ms": 40.0,
            "server_decode_ms": 200.0,
        },
        runs=[0.5],
    )
    text = "\n".join(central_prose([figure]))  # type: ignore[list-item]
    assert "0.5x (**not met**, goal >= 0.7)" in text
    assert "0.90 of this machine's 2 cores on average over the sync's 1000 ms" in text
    assert "as JSON 50 ms and the request bodies' gzip 40 ms" in text
    assert "At >= 0.7 the sync may take 714 ms" in text
    assert "Round by round" not in text  # too few rounds to tell a trend
    figure.runs = [0.34, 0.45, 0.5, 0.48, 0.62, 0.57, 0.68]
    figure.detail = {**figure.detail, "ingest_ms_rounds": [170, 400], "sync_ms_rounds": [500, 590]}
    text = "\n".join(central_prose([figure]))  # type: ignore[list-item]
    assert "the first three's median 0.45, the last three's 0.62" in text
    assert "took 170 ms in the first round and 400 ms in the last" in text


def _measured(placement: bgsync.Placement, slow: float) -> bgsync.Measured:
    times = [[0.010] * 9 + [slow]] * 3
    inside = {"cpu": [0.01], "wall": [0.012], "waits": [0.0], "commits": [0.002]}
    phase = {**inside, "holds": [0.001], "held_by": {"mark": 0.001}}
    return bgsync.Measured(
        placement,
        {"with": times, "without": [[0.010] * 10] * 3, "elsewhere": [[0.010] * 10] * 3},
        [1.5, 1.6, 1.7],
        {p: [phase] * 3 for p in ("with", "without", "elsewhere")},
    )


def test_the_goal_is_the_remote_placements_and_the_prose_gives_both(tmp_path: Any) -> None:
    remote = bgsync.Placement("remote", frozenset({1}), frozenset({0}), tmp_path / "r")
    shared = bgsync.Placement("shared", None, None, tmp_path / "s")
    figures = [
        bgsync._figure(_measured(remote, 0.011), bgsync.GOAL, 4000, 10),
        bgsync._control(_measured(remote, 0.011), 4000, 10),
        bgsync._figure(_measured(shared, 0.020), None, 4000, 10),
        bgsync._control(_measured(shared, 0.020), 4000, 10),
    ]
    goal, _, informative, _ = figures
    assert goal.goal == bgsync.GOAL and goal.met is True and "elsewhere" in goal.name
    assert informative.goal is None and "same machine" in informative.name
    assert "on CPU 1 only" in (goal.note or "") and "CPU 0" in (goal.note or "")
    text = "\n".join(bgsync.prose(figures))
    assert f"{goal.value:g}x (met" in text
    assert f"{informative.value:g}x (runs" in text  # the shared placement's, beside it


def test_the_placements_split_the_cpus_when_there_are_two() -> None:
    ctx = SimpleNamespace(workdir=Path("/tmp"))
    places = bgsync.placements(ctx)  # type: ignore[arg-type]
    try:
        if len(os.sched_getaffinity(0)) < 2:
            assert [p.name for p in places] == ["shared"]
            return
        remote, shared = places
        assert remote.central and remote.terminal and not remote.central & remote.terminal
        assert remote.central | remote.terminal == set(os.sched_getaffinity(0))
        assert shared.central is None and shared.terminal is None
    finally:
        for p in places:
            if p.central is not None:
                shutil.rmtree(p.elsewhere.parent, ignore_errors=True)
