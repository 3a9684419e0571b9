"""Enrolment by one-time code (issue 14, item 3): an admin makes a code for a merchant's
terminal; it expires after 24 hours, works once, and guessing is limited. On the
terminal, `unioncard terminal enrol --central URL --code CODE` makes the device key,
registers it, installs the root, the token key, the secret and the merchant, and runs
the first sync. A bundle file works for one terminal only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from central import create_app
from central.keys import create_keys
from central.serve import ThreadedServer
from central.service import CentralPaths, Union
from pact.device import public_key_hex
from pact.enrolcode import normal_code
from terminal.devicekey import load_public_key
from terminal.state import TerminalState
from tests.conftest import Clock, wall_clock
from tests.helpers import MEMBER_PAN
from tests.test_commands import one_line_error, run


@pytest.fixture
def clock() -> Clock:
    """The terminal's commands read the wall clock: the union's must agree."""
    return wall_clock()


@pytest.fixture
def union(tmp_path: Path, clock: Clock) -> Iterator[tuple[Union, str]]:
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    central = Union.open(paths, None, clock)
    central.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    central.add_merchant("M0001", "Shop", 500)
    central.publish_roster()
    app = create_app({"DATA_DIR": str(paths.data_dir), "CLOCK": clock})
    with ThreadedServer(app) as server:
        yield central, server.url
    central.close()


def _code(capsys, union: Union, terminal_id: str = "T0007") -> str:
    code, _ = union.create_enrol_code(terminal_id, "M0001")
    return code


def test_a_code_enrols_registers_the_device_key_and_syncs(union, tmp_path, capsys) -> None:
    central, url = union
    code = _code(capsys, central)
    folder = tmp_path / "terminal"
    result = run(
        capsys, "terminal", "enrol", "--central", url, "--code", code.lower(), "--data", str(folder)
    )
    code_exit, out, err = result
    assert (code_exit, err) == (0, ""), err
    assert out.startswith("enrolled as terminal T0007 of merchant M0001; first sync: uploaded")
    assert "installed roster v1, installed policy v1" in out
    # the device key the terminal made is the one the union holds
    held = central.store.terminal("T0007")
    assert held is not None
    assert held["device_key"] == public_key_hex(load_public_key(folder))
    state = TerminalState.open(folder)
    state.load()
    assert state.current.roster_version == 1 and state.current.policy_version == 1
    assert state.enrolment.merchant_id == "M0001"
    assert (folder / "enrolment.json").stat().st_mode & 0o077 == 0
    # it syncs with the secret it got
    code_exit, out, _ = run(capsys, "sync", "--data", str(folder))
    assert code_exit == 0 and out.startswith("sync: uploaded")
    # the code is spent: another device gets nothing
    other = tmp_path / "other"
    code_exit, _, err = run(
        capsys, "terminal", "enrol", "--central", url, "--code", code, "--data", str(other)
    )
    assert code_exit == 7
    one_line_error(err, "enrolment was refused", "used already")
    assert not (other / "enrolment.json").exists()


def test_a_repeat_from_the_same_device_gets_a_new_secret(union, tmp_path, capsys) -> None:
    """An answer lost on the way: the terminal asks again with the same code and key."""
    central, url = union
    code = _code(capsys, central)
    folder = tmp_path / "terminal"
    assert (
        run(capsys, "terminal", "enrol", "--central", url, "--code", code, "--data", str(folder))[0]
        == 0
    )
    first = json.loads((folder / "enrolment.json").read_text())["api_secret"]
    assert (
        run(capsys, "terminal", "enrol", "--central", url, "--code", code, "--data", str(folder))[0]
        == 0
    )
    second = json.loads((folder / "enrolment.json").read_text())["api_secret"]
    assert second != first
    assert run(capsys, "sync", "--data", str(folder))[0] == 0  # the new one works
    held = central.store.terminal("T0007")
    assert held is not None and held["device_key"] == public_key_hex(load_public_key(folder))


def test_a_repeat_after_the_code_expired_or_the_terminal_was_revoked_is_refused(
    union, clock, tmp_path, capsys
) -> None:
    """A copy of the enrolment request, replayed after the code's day (or after the
    terminal was revoked), got a new secret: the real terminal was locked out, and the
    replayer could decommission it."""
    central, url = union
    code = _code(capsys, central)
    folder = tmp_path / "terminal"
    enrol = ("terminal", "enrol", "--central", url, "--code", code, "--data", str(folder))
    assert run(capsys, *enrol)[0] == 0
    kept = (folder / "enrolment.json").read_bytes()
    clock.advance(timedelta(hours=24))
    code_exit, _, err = run(capsys, *enrol)
    assert code_exit == 7, err
    one_line_error(err, "enrolment was refused", "used already")
    assert (folder / "enrolment.json").read_bytes() == kept
    assert run(capsys, "sync", "--data", str(folder))[0] == 0  # its secret still works
    other = central.store.terminal("T0007")
    assert other is not None and other["revoked_at"] is None
    # within the day, but revoked: no bundle either
    code = _code(capsys, central, "T0008")
    second = tmp_path / "second"
    enrol = ("terminal", "enrol", "--central", url, "--code", code, "--data", str(second))
    assert run(capsys, *enrol)[0] == 0
    central.revoke_terminal("T0008", "stolen")
    code_exit, _, err = run(capsys, *enrol)
    assert code_exit == 7, err


def test_a_code_expires_after_a_day(union, clock, tmp_path, capsys) -> None:
    central, url = union
    code = _code(capsys, central)
    clock.advance(timedelta(hours=24))
    code_exit, _, err = run(
        capsys, "terminal", "enrol", "--central", url, "--code", code, "--data", str(tmp_path / "t")
    )
    assert code_exit == 7
    one_line_error(err, "has expired")


def test_guessing_is_limited(union, tmp_path, capsys) -> None:
    central, url = union
    real = _code(capsys, central)
    for n in range(10):
        guess = f"AAAA-AAAA-AAAA-AAAA-AAA{'234567ABCD'[n]}"
        code_exit, _, err = run(
            capsys,
            "terminal",
            "enrol",
            "--central",
            url,
            "--code",
            guess,
            "--data",
            str(tmp_path / f"g{n}"),
        )
        assert code_exit == 7
        one_line_error(err, "not known")
    # now even the right code must wait
    code_exit, _, err = run(
        capsys, "terminal", "enrol", "--central", url, "--code", real, "--data", str(tmp_path / "t")
    )
    assert code_exit == 6  # 429 on every try: try again later
    one_line_error(err, "429", "too many wrong enrolment codes")
    assert central.store.terminal("T0007") is None


def test_bad_input_is_one_line(union, tmp_path, capsys) -> None:
    central, url = union
    folder = str(tmp_path / "t")
    code_exit, _, err = run(
        capsys, "terminal", "enrol", "--central", url, "--code", "hello", "--data", folder
    )
    assert code_exit == 1
    one_line_error(err, "hello is not an enrolment code")
    code_exit, _, err = run(
        capsys,
        "terminal",
        "enrol",
        "--central",
        "https://union.example.org",
        "--code",
        _code(capsys, central),
        "--data",
        folder,
    )
    assert code_exit != 0
    one_line_error(err, "cannot enrol")
    code_exit, _, err = run(capsys, "terminal", "enrol", "--data", folder)
    assert code_exit == 1
    one_line_error(err, "--central", "--code", "BUNDLE")
    code_exit, _, err = run(
        capsys,
        "central",
        "enrol-code",
        "T9",
        "--merchant",
        "M404",
        "--data",
        str(tmp_path / "central"),
    )
    assert code_exit != 0 and "M404" in err
    assert normal_code("k7qm 3xrt-6pla-wen2-h4zc") == "K7QM3XRT6PLAWEN2H4ZC"


def test_a_bundle_file_works_for_one_terminal_only(union, tmp_path, capsys) -> None:
    """Enrolled from one bundle, a second device cannot sync: the union holds the first
    device's key (409), and the second keeps nothing it could use."""
    central, url = union
    bundle = tmp_path / "t1.json"
    bundle.write_bytes(central.enrol_terminal("T1", "M0001", url))
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        assert run(capsys, "terminal", "enrol", str(bundle), "--data", str(folder))[0] == 0
    assert run(capsys, "sync", "--data", str(first))[0] == 0
    code_exit, _, err = run(capsys, "sync", "--data", str(second))
    assert code_exit == 7
    one_line_error(err, "409", "another device key")
