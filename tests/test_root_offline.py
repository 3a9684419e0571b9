"""The root key offline (issue 14, item 10): daily work and the service need only the
online role keys; rotation asks for the root key file explicitly."""

from __future__ import annotations

import shutil
from pathlib import Path

from central.keys import load_keys
from central.service import CentralPaths, Union
from pact.signing import key_id
from tests.helpers import MEMBER_PAN
from tests.test_commands import one_line_error, run


def _init_then_take_the_root_key_away(capsys, tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "central"
    code, out, _ = run(capsys, "central", "init", "--data", str(data))
    assert code == 0 and "move " in out and "root.pem offline now" in out
    offline = tmp_path / "usb" / "root.pem"
    offline.parent.mkdir()
    shutil.move(data / "keys" / "root.pem", offline)
    return data, offline


def test_daily_work_needs_no_root_key(capsys, tmp_path: Path) -> None:
    data, _ = _init_then_take_the_root_key_away(capsys, tmp_path)
    members = tmp_path / "members.csv"
    members.write_text(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    for argv in (
        ("central", "import-members", str(members)),
        ("central", "add-merchant", "M0001", "--name", "Shop", "--discount", "5"),
        ("central", "publish-roster"),
        ("central", "enrol", "T1", "--merchant", "M0001", "--url", "http://127.0.0.1:8000")
        + ("--out", str(tmp_path / "t1.json")),
        ("central", "settlement"),
    ):
        code, _, err = run(capsys, *argv, "--data", str(data))
        assert (code, err) == (0, ""), (argv, err)
    assert not (data / "keys" / "root.pem").exists()
    assert load_keys(data / "keys").root is None


def test_rotation_asks_for_the_root_key_file(capsys, tmp_path: Path) -> None:
    data, offline = _init_then_take_the_root_key_away(capsys, tmp_path)
    keys = data / "keys"
    code, _, err = run(capsys, "keys", "rotate", "roster", "--keys", str(keys))
    assert code == 2 and "--root-key" in err
    code, _, err = run(
        capsys, "keys", "rotate", "roster", "--keys", str(keys), "--root-key", str(tmp_path / "no")
    )
    assert code == 1
    one_line_error(err, "no root key file", "--root-key")
    wrong = keys / "snapshot.pem"
    code, _, err = run(
        capsys, "keys", "rotate", "roster", "--keys", str(keys), "--root-key", str(wrong)
    )
    assert code == 1
    one_line_error(err, "is not the union's current root key")
    old_roster = key_id(load_keys(keys).roster.public_key())
    code, out, err = run(
        capsys, "keys", "rotate", "roster", "--keys", str(keys), "--root-key", str(offline)
    )
    assert (code, err) == (0, "") and "root metadata v2" in out
    loaded = load_keys(keys)
    assert key_id(loaded.roster.public_key()) != old_roster
    assert loaded.current_root.version == 2 and loaded.root is None
    # a new root key goes where the old one came from, offline; the old one beside it
    old_root = offline.read_bytes()
    code, out, err = run(
        capsys, "keys", "rotate", "root", "--keys", str(keys), "--root-key", str(offline)
    )
    assert (code, err) == (0, "") and "root metadata v3" in out
    assert offline.read_bytes() != old_root
    assert (offline.parent / "root.pem.v2").read_bytes() == old_root
    assert not (keys / "root.pem").exists()
    assert (offline.stat().st_mode & 0o077) == 0
    # and the service opens and serves the new versions without it
    union = Union.open(CentralPaths(data), None, lambda: load_keys(keys).current_root.issued_at)
    try:
        held = union.store.latest_version("root")
        assert held is not None and held[0] == 3  # published for the terminals to walk
    finally:
        union.close()
