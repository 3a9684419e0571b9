"""Bad input at the command line: one clear line, a non-zero exit, nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from central.keys import create_keys
from central.service import CentralPaths, Union
from pact.cards import PanTokenizer
from reader.identity import identity_from_pan
from terminal.checkout import checkout
from terminal.journal import Journal
from terminal.state import TerminalState
from tests.conftest import Clock, wall_clock
from tests.helpers import MEMBER_PAN

UNIONCARD = str(Path(sys.executable).parent / "unioncard")
pytestmark = pytest.mark.slow  # the installed console script, in a subprocess


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [UNIONCARD, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and text in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture
def clock() -> Clock:
    # the commands run here read the wall clock: a union on the fixed test date would
    # have its snapshot expire as real days pass
    return wall_clock()


@pytest.fixture
def enrolled(tmp_path: Path, clock) -> tuple[Union, Path]:
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, None, clock)
    union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    union.add_merchant("M0001", "Shop", 500)
    union.publish_roster()
    terminal = tmp_path / "terminal"
    TerminalState(terminal).enrol(union.enrol_terminal("T1", "M0001", "http://127.0.0.1:9"))
    yield union, terminal
    union.close()


def _sell(terminal: Path, clock: Clock) -> TerminalState:
    """A member's sale of 10.00 journaled at the enrolled terminal (not uploaded)."""
    state = TerminalState(terminal)
    state.load()
    journal = Journal(state.journal_path, state.signer())
    identity = identity_from_pan(
        "unionpay", b"\xa0", MEMBER_PAN, "2030-12", PanTokenizer(state.enrolment.token_key)
    )
    checkout(state.current, state.enrolment, journal, identity, 1000, clock())
    journal.close()
    return state


def test_unreachable_central_keeps_the_sales(enrolled, clock) -> None:
    union, terminal = enrolled
    state = _sell(terminal, clock)
    result = run("sync", "--data", str(terminal))
    assert_one_line_error(result, 6, "cannot reach the central service at http://127.0.0.1:9")
    journal = Journal(state.journal_path, state.signer())
    assert journal.counts() == (1, 1)
    assert journal.verify() == 1


def test_roster_with_bad_signature_is_refused_and_old_kept(enrolled, tmp_path, clock) -> None:
    union, terminal = enrolled
    files = tmp_path / "usb"
    files.mkdir()
    (files / "snapshot.json").write_bytes(union.snapshot_for("M0001"))
    (files / "roster.ucr").write_bytes(union.store.latest_signed("roster")[1])
    (files / "policy.json").write_bytes(union.store.latest_signed("policy:M0001")[1])
    ok = run(
        "terminal",
        "install-update",
        "--snapshot",
        str(files / "snapshot.json"),
        "--roster",
        str(files / "roster.ucr"),
        "--policy",
        str(files / "policy.json"),
        "--data",
        str(terminal),
    )
    assert ok.returncode == 0 and "roster v1, policy v1" in ok.stdout, ok.stderr
    installed = (terminal / "current" / "roster.ucr").read_bytes()
    union.publish_roster()
    (files / "snapshot.json").write_bytes(union.snapshot_for("M0001"))
    bad = bytearray(union.store.latest_signed("roster")[1])
    bad[bad.index(b'"sig":"') + 8] ^= 0x01  # flip one bit of the signature
    (files / "roster.ucr").write_bytes(bytes(bad))
    result = run(
        "terminal",
        "install-update",
        "--snapshot",
        str(files / "snapshot.json"),
        "--roster",
        str(files / "roster.ucr"),
        "--data",
        str(terminal),
    )
    assert_one_line_error(result, 1, "roster refused")
    assert "bad signature" in result.stderr
    assert (terminal / "current" / "roster.ucr").read_bytes() == installed
    assert not [p for p in terminal.rglob("*") if p.name.endswith(".tmp")]


def test_installing_the_update_in_service_again_changes_nothing(enrolled, tmp_path) -> None:
    """The update already installed, installed again by hand (the same USB stick twice):
    its folder was the one written over, so the install wiped the generation in service
    and left the terminal with no roster, no policy and no way to sync."""
    union, terminal = enrolled
    files = tmp_path / "usb"
    files.mkdir()
    (files / "snapshot.json").write_bytes(union.snapshot_for("M0001"))
    (files / "roster.ucr").write_bytes(union.store.latest_signed("roster")[1])
    (files / "policy.json").write_bytes(union.store.latest_signed("policy:M0001")[1])
    update = [
        "terminal", "install-update", "--snapshot", str(files / "snapshot.json"),
        "--roster", str(files / "roster.ucr"), "--policy", str(files / "policy.json"),
        "--data", str(terminal),
    ]  # fmt: skip
    assert run(*update).returncode == 0
    served = {p.name: p.read_bytes() for p in (terminal / "current").iterdir()}
    again = run(*update)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "snapshot v1 is already installed: nothing changed\n"
    assert {p.name: p.read_bytes() for p in (terminal / "current").iterdir()} == served
    status = run("terminal", "status", "--data", str(terminal))
    assert status.returncode == 0 and "roster_version" in status.stdout, status.stderr


@pytest.mark.parametrize("host", ["999.1.1.1", "shop-till.invalid"])
def test_serving_on_an_address_that_is_not_one_is_one_line(enrolled, host) -> None:
    """A listen_host that is no address of this machine gave waitress's traceback."""
    _, terminal = enrolled
    result = run("terminal", "serve", "--host", host, "--port", "8099", "--data", str(terminal))
    assert_one_line_error(result, 1, f"cannot serve on {host}:8099")
    assert "set listen_host and listen_port" in result.stderr


def test_a_terminal_with_sales_is_not_enrolled_as_another(enrolled, tmp_path, clock) -> None:
    """Enrolled as T1 with a sale waiting, then given T2's bundle: refused, naming what
    would be stranded (it was enrolled, and every sync then failed: "sales[0] belongs to
    another terminal")."""
    union, terminal = enrolled
    state = _sell(terminal, clock)
    other = tmp_path / "T2.json"
    other.write_bytes(union.enrol_terminal("T2", "M0001", "http://127.0.0.1:9"))
    refused = run("terminal", "enrol", str(other), "--data", str(terminal))
    assert_one_line_error(refused, 1, "this terminal is enrolled as T1")
    assert "1 not yet uploaded" in refused.stderr and "enrolling it as T2" in refused.stderr
    assert json.loads((terminal / "enrolment.json").read_text())["terminal_id"] == "T1"
    state._refuse_another_identity("T1")  # its own id again (a new bundle for it) is fine


def test_a_damaged_pinned_root_names_its_file(enrolled) -> None:
    """A root.json that does not verify said only "root metadata refused: malformed"."""
    _, terminal = enrolled
    (terminal / "root.json").write_text("{not json")
    result = run("terminal", "status", "--data", str(terminal))
    assert_one_line_error(result, 1, f"{terminal / 'root.json'}, the union's root")
    assert "restore it from the backup or re-enrol" in result.stderr


def test_a_bad_enrolment_bundle_says_what_is_wrong_with_it(enrolled, tmp_path) -> None:
    """It said "(no root metadata)" of a file that is not JSON, "('api_secret')" of a
    missing field and "fromhex() arg ..." of a bad key."""
    union, _ = enrolled
    good = json.loads(union.enrol_terminal("T7", "M0001", "http://127.0.0.1:9"))
    no_secret = {k: v for k, v in good.items() if k != "api_secret"}
    cases = [
        (b"PK\x03\x04 a zip file", "the enrolment bundle is not JSON"),
        (json.dumps(no_secret).encode(), "has no api_secret"),
        (json.dumps({**good, "token_key": "zz"}).encode(), "token_key is not hex digits"),
    ]
    for n, (data, line) in enumerate(cases):
        bundle, folder = tmp_path / f"bundle{n}.json", tmp_path / f"terminal{n}"
        bundle.write_bytes(data)
        result = run("terminal", "enrol", str(bundle), "--data", str(folder))
        assert_one_line_error(result, 1, line)
        assert "ask the union for a new one" in result.stderr
        assert not (folder / "enrolment.json").exists()


def test_not_enrolled(tmp_path) -> None:
    result = run("terminal", "status", "--data", str(tmp_path / "nothing"))
    assert_one_line_error(result, 1, "not enrolled")


def test_bad_amount(enrolled) -> None:
    _, terminal = enrolled
    result = run("terminal", "checkout", "12.345", "--data", str(terminal))
    assert_one_line_error(result, 1, "more than two decimals")


def test_bad_members_file(tmp_path) -> None:
    data = tmp_path / "central"
    assert run("central", "init", "--data", str(data)).returncode == 0
    (tmp_path / "m.csv").write_text("member_id,pan\nU1,1234\n")
    result = run("central", "import-members", str(tmp_path / "m.csv"), "--data", str(data))
    assert_one_line_error(result, 1, "line 2: the card number of member U1 is not valid")
    again = run("central", "init", "--data", str(data))
    assert_one_line_error(again, 1, "keys already exist")


def test_lost_keys_are_restored_not_made_again(tmp_path) -> None:
    """A union whose keys folder is lost (or whose root key is offline, as it should be)
    is told to restore the keys from the backup; `central init` makes no new keys over
    it (it did, after the line told staff to run it: every member's token and every
    terminal's pinned root stopped matching)."""
    data = tmp_path / "central"
    assert run("central", "init", "--data", str(data)).returncode == 0
    (tmp_path / "m.csv").write_text(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    assert (
        run("central", "import-members", str(tmp_path / "m.csv"), "--data", str(data)).returncode
        == 0
    )
    keys = data / "keys"
    (keys / "root.pem").rename(tmp_path / "root.pem")  # kept offline
    token_key = (keys / "token.key").read_bytes()
    again = run("central", "init", "--data", str(data))
    assert_one_line_error(again, 1, "keys already exist")
    assert (keys / "token.key").read_bytes() == token_key
    shutil.move(keys, tmp_path / "lost-keys")
    lost = run("central", "merchants", "--data", str(data))
    assert_one_line_error(lost, 1, "restore the union's keys folder from its backup")
    again = run("central", "init", "--data", str(data))
    assert_one_line_error(again, 1, "the database already holds a union's members")
    assert not keys.exists()


def test_no_pcscd(tmp_path) -> None:
    """A client pointed at a socket where no pcscd listens: exit 2."""
    result = run(
        "card",
        "read",
        "--timeout",
        "1",
        env={"PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd.comm")},
    )
    assert_one_line_error(result, 2, "pcscd is not running")


@pytest.mark.pcsc
def test_no_matching_reader(pcscd) -> None:
    result = run("card", "read", "--reader", "No Such Reader", "--timeout", "2", timeout=20)
    assert_one_line_error(result, 2, "No Such Reader")


@pytest.mark.pcsc
def test_no_card_within_timeout(pcscd) -> None:
    result = run("card", "read", "--reader", "Virtual PCD 00 01", "--timeout", "1", timeout=20)
    assert_one_line_error(result, 3, "no card")


def test_central_serve_on_a_port_in_use_says_so_in_one_line(tmp_path) -> None:
    """gunicorn logged a dozen lines of retries over five seconds, then exited 1."""
    import socket

    data = tmp_path / "central"
    assert run("central", "init", "--data", str(data)).returncode == 0
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = str(held.getsockname()[1])
        result = run("central", "serve", "--port", port, "--data", str(data), timeout=30)
    assert_one_line_error(result, 1, f"cannot listen on 127.0.0.1:{port}")
