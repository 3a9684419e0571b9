"""The privacy scan (issue 16 item 6): no card number, in ASCII or packed BCD, in any
file the product writes. The scanner (tests.privacy) is shown to find what it looks
for; then a shop's whole life (sales, voids, a refund, receipts, syncs, the union's
statement and audit bundle, a decommissioning with its journal export) is scanned.
After the whole suite the plugin tests.privacyscan scans every test's files, and
`make demo` scans the demo's folder."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from pact.cards import luhn_complete
from tests.conftest import Site
from tests.helpers import MEMBER_PAN, OTHER_PAN
from tests.privacy import luhn_ok, scan_bytes, scan_tree

ROOT = Path(__file__).resolve().parents[1]


def test_the_scanner_finds_card_numbers_in_ascii_and_bcd(tmp_path: Path) -> None:
    pan = luhn_complete("621700" + "123456789")  # 16 digits
    assert luhn_ok(pan) and not luhn_ok(pan[:-1] + str((int(pan[-1]) + 1) % 10))
    assert [f for _, f, _ in scan_bytes(f'{{"pan": "{pan}"}}'.encode())] == ["ascii"]
    assert scan_bytes(f"x{pan[:-1]}{(int(pan[-1]) + 1) % 10}y".encode()) == []  # not Luhn
    assert scan_bytes(f"{pan}0".encode()) == [] or not luhn_ok(pan + "0")  # a longer run
    # a hash or a key id that happens to hold a run of digits is not a card number
    digest = hashlib.sha256(b"x").hexdigest()[:40] + pan + "ab"
    assert scan_bytes(digest.encode()) == []
    fifteen = luhn_complete("62170012345678")
    assert scan_bytes(f'"token_key_id":"{fifteen}a"'.encode()) == []
    assert scan_bytes(f'"pan":"{fifteen}"'.encode()) != []  # all digits: not a hex string
    # a key id's hex that came out all decimal (and Luhn-valid): a key id, not a card
    assert luhn_ok("9110545412890016")
    assert scan_bytes(b'"token_key_id":"9110545412890016","x"') == []
    assert scan_bytes(b'"pan":"9110545412890016"') != []
    # a text field glued to a time stamp in a database row: the year is not the number's
    assert scan_bytes(b"...-3aa0394697842026-11-28T15:20:00Z") == []
    assert scan_bytes(b"id 0394697842026 ") != []  # the same digits alone: Luhn-valid
    # a sale id (a UUID) whose last group is all decimal, glued to the next byte: an
    # index entry of the journal (its row number 54 is the byte "6")
    assert scan_bytes(b"\x03\x01be5c67fb-1977-4a91-92c6-3170490940986(\x03") == []
    assert scan_bytes(b"id 3170490940986 ") != []  # the same digits alone: Luhn-valid
    # packed BCD as the card's own records hold it: tag 5A, and Track 2 (tag 57)
    tlv = b"\x70\x20\x5a\x08" + bytes.fromhex(pan) + b"\x5f\x24\x03\x30\x12\x31"
    assert [f for _, f, _ in scan_bytes(b"\x00" * 9 + tlv)] == ["bcd-tlv"]
    equivalent = bytes.fromhex(pan + "d3012201" + "0000000f")
    track2 = b"\x57" + bytes([len(equivalent)]) + equivalent
    assert "bcd-tlv" in [f for _, f, _ in scan_bytes(track2)]
    # a known card packed anywhere, at either nibble alignment
    for shifted in (bytes.fromhex(pan), bytes.fromhex("3" + pan + "f")):
        assert [f for _, f, _ in scan_bytes(b"\xff" + shifted, [pan])] == ["bcd"]
    # files: a members file is the union's input, not the product's output (under
    # planted/: the bait the suite's own scan leaves out)
    bait = tmp_path / "planted"
    bait.mkdir()
    (bait / "members.csv").write_text(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    (bait / "log.txt").write_text(f"sale for {OTHER_PAN}\n")
    [finding] = scan_tree([bait])
    assert finding.path.name == "log.txt" and OTHER_PAN not in finding.line()


def test_a_shops_whole_life_leaves_no_card_number(site: Site, clock, capsys, tmp_path) -> None:
    from tests.test_commands import run

    site.sync(clock)
    sold = [site.sell(pan, gross, clock) for pan, gross in ((MEMBER_PAN, 12800), (OTHER_PAN, 990))]
    assert sold[0]["member"] and not sold[1]["member"]
    site.sync(clock)
    day = clock().date().isoformat()
    central = ("--data", str(tmp_path / "central"))
    statement = ("--from", day, "--to", day, "--csv", str(tmp_path / "s.csv"))
    assert run(capsys, "central", "statement", "--merchant", "M0001", *statement, *central)[0] == 0
    bundle = ("--from", day, "--to", day, "--out", str(tmp_path / "bundle.json"))
    code, _, err = run(
        capsys, "central", "audit", "export", "--merchant", "M0001", *bundle, *central
    )
    assert code == 0, err
    site.journal.close()
    folder = site.state.dir
    export = ("--data", str(folder), "--out", str(tmp_path / "export.json"))
    code, _, err = run(capsys, "terminal", "decommission", *export)
    assert code == 0, err
    assert json.loads((tmp_path / "export.json").read_text())["last_seq"] == 2
    known = [MEMBER_PAN, OTHER_PAN]
    assert scan_tree([tmp_path], known) == []
    for path in tmp_path.rglob("*"):  # and the plain test: neither number, in any form
        if path.is_file():
            data = path.read_bytes()
            assert MEMBER_PAN.encode() not in data and OTHER_PAN.encode() not in data, path


PLANTED = """
def test_{n}(tmp_path):
    (tmp_path / "journal.txt").write_text({text!r})
"""


def test_the_suites_scan_fails_a_run_that_writes_a_card_number(tmp_path: Path) -> None:
    bait = tmp_path / "planted"
    bait.mkdir()
    for text, fails in ((f"card {OTHER_PAN}", True), (f"card •••• {OTHER_PAN[-4:]}", False)):
        test = bait / f"test_planted_{int(fails)}.py"
        test.write_text(PLANTED.format(n=int(fails), text=text))
        ran = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "tests.privacyscan", "-p", "no:randomly"]
            + ["-p", "no:cacheprovider", "--rootdir", str(bait), str(test)]
            + ["--basetemp", str(bait / f"base{int(fails)}")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "UNIONCARD_PRIVACY_SCAN": "always"},
        )
        assert "1 passed" in ran.stdout, ran.stdout + ran.stderr
        if fails:
            assert ran.returncode == 1, ran.stdout
            assert "a 16-digit card number (ascii)" in ran.stdout and "journal.txt" in ran.stdout
            assert OTHER_PAN not in ran.stdout
        else:
            assert ran.returncode == 0 and "privacy scan: no card number" in ran.stdout
