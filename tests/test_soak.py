"""The two-minute form of the soak (tests/soak.py; `make soak` runs an hour): three
terminals' checkouts, voids, refunds, syncs through network faults, roster and policy
updates and SIGKILLs of daemons and syncs, against a real central service. Its counts
line must show every confirmed entry received once, no gap, no unexplained error, and
enough of each kind of load that the run proved something.

``UNIONCARD_SOAK_SEED`` repeats a run (the line names its seed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_pcsc import unavailable
from tests.private_pcscd import PrivatePcscd

MINUTES = float(os.environ.get("UNIONCARD_SOAK_MINUTES", "2"))


def parse(line: str) -> dict[str, str]:
    """``soak: key=value ...`` as a dict (values as text)."""
    if not line.startswith("soak: "):
        raise ValueError(f"not a counts line: {line!r}")
    return dict(item.split("=", 1) for item in line.removeprefix("soak: ").split())


def errors(value: str) -> dict[str, int]:
    """``kind:n,!kind:n`` (``!``: unexplained) as a dict; ``none`` is empty."""
    if value == "none":
        return {}
    return {kind: int(n) for kind, n in (item.rsplit(":", 1) for item in value.split(","))}


def test_the_counts_line_is_parsed() -> None:
    line = "soak: confirmed=3 received=2 errors=sync_killed:4,!till_500_internal:1"
    got = parse(line)
    assert (got["confirmed"], got["received"]) == ("3", "2")
    assert errors(got["errors"]) == {"sync_killed": 4, "!till_500_internal": 1}
    assert errors("none") == {}
    with pytest.raises(ValueError):
        parse("error: no pcscd")


@pytest.mark.pcsc
@pytest.mark.slow
def test_two_minutes_of_soak_lose_and_duplicate_nothing() -> None:
    reason = PrivatePcscd.unavailable_reason()
    if reason is not None:
        unavailable(reason)
    command = [sys.executable, "-m", "tests.soak", "--minutes", f"{MINUTES:g}", "--terminals", "3"]
    if os.environ.get("UNIONCARD_SOAK_SEED"):
        command += ["--seed", os.environ["UNIONCARD_SOAK_SEED"]]
    done = subprocess.run(
        command,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=MINUTES * 60 + 600,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"the soak printed no counts line (exit {done.returncode}): {done.stderr[-3000:]}"
    print(lines[-1])
    got = parse(lines[-1])
    n = {k: int(v) for k, v in got.items() if v.isdigit()}
    kinds = errors(got["errors"])
    unexplained = {k: v for k, v in kinds.items() if k.startswith("!")}
    why = f"{lines[-1]}\n{done.stderr[-3000:]}"
    assert n["confirmed"] == n["received"], why
    assert (n["duplicates"], n["gaps"], n["unexplained"]) == (0, 0, 0), why
    assert unexplained == {} and n["unexplained"] == sum(unexplained.values()), why
    assert done.returncode == 0, why
    # the run did something of each kind: a soak that sold nothing proves nothing
    per_minute = n["confirmed"] / MINUTES
    assert per_minute >= 20, f"only {n['confirmed']} entries confirmed: {why}"
    assert n["checkouts"] > 0 and n["voids"] + n["refunds"] > 0, why
    assert n["daemon_kills"] > 0 and n["sync_kills"] > 0 and n["faults"] > 0, why
    assert n["syncs"] >= 3 * n["terminals"], why
    assert n["rosters"] + n["policies"] > 0, why
    # every entry the union holds was asked for: confirmed, or cut off by a kill
    assert n["entries"] == n["confirmed"] + n["cut_journaled"], why
