"""`unioncard demo` end to end through real pcscd + vpcd, and the privacy promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from terminal.democards import DEMO_CARDS

UNIONCARD = str(Path(sys.executable).parent / "unioncard")


def pan_encodings(pan: str) -> list[bytes]:
    """The ways a PAN could land in a file: ASCII, grouped, BCD as on the chip."""
    padded = pan + ("F" if len(pan) % 2 else "")
    grouped = " ".join(pan[i : i + 4] for i in range(0, len(pan), 4))
    return [pan.encode(), grouped.encode(), bytes.fromhex(padded), pan.encode("utf-16-le")]


@pytest.mark.pcsc
def test_demo_runs_end_to_end_and_writes_no_pan(pcscd, tmp_path: Path) -> None:
    data = tmp_path / "demo"
    result = subprocess.run(
        [UNIONCARD, "demo", "--data", str(data)], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    member = DEMO_CARDS["member"].pan[-4:]
    assert f"card •••• {member}: member; gross 128.00, discount 6.40, net 121.60" in out
    assert "not a member; gross 45.50, discount 0.00, net 45.50" in out
    assert "membership suspended" in out
    # the first sync journals and uploads the update it installed, as an event entry
    assert (
        "first sync: uploaded 1 entry (0 still pending), installed roster v1, installed policy v1"
    ) in out
    assert "nightly sync: uploaded 3 entries (0 still pending)" in out
    assert "M0001      Demo Supermarket       active         3        1       193.50" in out
    assert "hash chain intact (4 entries)" in out

    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name == "journal.db" for p in files) and any(p.name == "central.db" for p in files)
    for card in DEMO_CARDS.values():
        for needle in pan_encodings(card.pan):
            for path in files:
                assert needle not in path.read_bytes(), f"{card.label} PAN found in {path}"
            assert needle.decode("latin-1") not in out + result.stderr

    # Runs again into the same folder (recreated), as `make demo` twice in a row does.
    again = subprocess.run(
        [UNIONCARD, "demo", "--data", str(data)], capture_output=True, text=True, timeout=180
    )
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = subprocess.run(
        [UNIONCARD, "demo", "--data", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "not a demo folder" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
