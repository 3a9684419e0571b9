"""A Pi-sized budget at a small scale (issue 16, item 7; the 8,000,000-member figures are
``bench.pibudget``'s, in `make bench`).

A terminal process installs a roster of 1,000,000 members (21 MB) the way the sync
does and serves lookups and checkouts through ``TerminalService``, its address space
limited (RLIMIT_AS, set by the child itself once it has served a few sales) to what it
held then plus the roster file and 8 MB. The install hashes and serves the file where
it lies, memory-mapped, so it fits. The control shows the limit is tight enough to
catch the unbounded way: the same child reading the file whole and installing the
bytes runs out of memory under the same limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.pibudget import (
    AMOUNT,
    GOAL,
    OUT_OF_MEMORY,
    Built,
    Limit,
    Run,
    _figures,
    built_roster,
    prose,
    run_child,
    terminal_folder,
)
from unioncard.cli import system_clock

pytestmark = pytest.mark.slow  # builds a roster of a million members, runs children

MEMBERS = 1_000_000
MEMBER_CARDS = 20
SLACK = 8 * 2**20  # bytes beyond the roster file: the install's and the checkouts' own
CHECKOUTS = 40


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    folder = tmp_path_factory.mktemp("pibudget") / "roster"
    yield built_roster(MEMBERS, system_clock(), folder=folder, member_cards=MEMBER_CARDS)
    _drop_rosters(folder)


def _drop_rosters(folder: Path) -> None:
    """Delete the random rosters (21 MB each): random bytes hold a card-like BCD run now
    and then, which the suite's privacy scan would report; the journals stay."""
    for name in ("*.ucr", ".roster-download.tmp"):
        for path in folder.rglob(name):
            path.unlink()


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    _drop_rosters(tmp_path)


def _run(built: Built, folder: Path, *, whole: bool = False) -> Run:
    budget = built.roster.stat().st_size + SLACK
    spec = {
        "lookups": 2000,
        "checkouts": CHECKOUTS,
        "budget": budget,
        "whole": whole,
        **terminal_folder(built, folder, system_clock()),
    }
    return run_child(spec, Limit("none", None))  # the child limits itself (budget)


def test_the_install_and_checkouts_fit_the_roster_file_and_a_little(
    built: Built, folder: Path
) -> None:
    run = _run(built, folder)
    assert run.status == 0, run.error
    answer = run.answer
    assert answer is not None
    size_mb = built.roster.stat().st_size / 2**20
    limit = answer["rlimit_as_mb"]
    assert limit is not None  # the child's address space was limited
    assert limit <= answer["before"]["VmSize"] + size_mb + SLACK / 2**20 + 1
    # (the peak before the limit was set counts in VmPeak too: a thread's first malloc
    # maps its arena's reserve twice over for a moment, in the first sales)
    assert answer["end"]["VmPeak"] <= max(limit, answer["before"]["VmPeak"])
    # every member tapped got the discount, and no one else
    assert answer["member_checkouts"] == CHECKOUTS // 2
    assert answer["discount_fen"] == CHECKOUTS // 2 * AMOUNT * 5 // 100
    # the roster is served from its file, not copied into the process's own memory
    grown = answer["after_install"]["RssAnon"] - answer["before"]["RssAnon"]
    assert grown < size_mb / 4


def test_an_install_that_reads_the_file_whole_breaks_that_limit(built: Built, folder: Path) -> None:
    run = _run(built, folder, whole=True)
    assert run.status == OUT_OF_MEMORY, run.error
    assert "out of memory" in run.error


def test_a_child_stopped_by_the_limit_makes_the_figure_not_met(built: Built) -> None:
    stopped = Run(None, 600.0, OUT_OF_MEMORY, "error: out of memory (MemoryError)")
    fine = Run({"end": {"VmHWM": 300.0}}, 700.0, 0, "")
    figures = _figures(built, [stopped], [fine], "RLIMIT_AS", "", 1.0)
    peak = figures[0]
    assert peak.goal == GOAL and peak.met is False and peak.value == 600.0
    assert "did not complete" in (peak.note or "")
    assert [f.value for f in figures[1:]] == [None, None]
    assert prose(figures) == []  # no table of figures that were not measured
