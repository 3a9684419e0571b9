"""`unioncard keys` and `unioncard roster`: build, verify, refuse; no PAN written anywhere."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from tests.helpers import MEMBER_PAN, OTHER_PAN, invoke, with_luhn

UNIONCARD = str(Path(sys.executable).parent / "unioncard")
PANS = [MEMBER_PAN, OTHER_PAN, *[with_luhn(f"6217{i:011d}") for i in range(50)]]


run = invoke  # in this process: the subprocess is not the point here


@pytest.fixture
def made(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    assert run("keys", "init", str(keys)).returncode == 0
    lines = ["member_id,pan,status,tier"] + [f"U{i},{p},active,1" for i, p in enumerate(PANS)]
    (tmp_path / "members.csv").write_text("\n".join(lines) + "\n")
    result = run(
        "roster",
        "build",
        "--members",
        str(tmp_path / "members.csv"),
        "--keys",
        str(keys),
        "--version",
        "1",
        "--out",
        str(tmp_path / "r1.ucr"),
    )
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_keys_are_private_and_verify_prints_the_roster(made: Path) -> None:
    keys = made / "keys"
    for role in ("root", "roster", "policy", "snapshot"):
        assert (keys / f"{role}.pem").stat().st_mode & 0o077 == 0
    assert (keys / "token.key").stat().st_mode & 0o077 == 0
    result = run("roster", "verify", str(made / "r1.ucr"), "--trust", str(keys / "root.pub"))
    assert result.returncode == 0, result.stderr
    assert f"roster v1: {len(PANS)} members; expires" in result.stdout


def test_delta_build_and_verify(made: Path) -> None:
    keys = made / "keys"
    csv = (made / "members.csv").read_text().splitlines()
    (made / "members2.csv").write_text("\n".join(csv[:-2]) + "\n")  # two members gone
    result = run(
        "roster",
        "build",
        "--members",
        str(made / "members2.csv"),
        "--keys",
        str(keys),
        "--version",
        "2",
        "--base",
        str(made / "r1.ucr"),
        "--out",
        str(made / "d2.ucr"),
        "--full-out",
        str(made / "f2.ucr"),
    )
    assert result.returncode == 0, result.stderr
    assert "wrote full roster v2 (2 layers)" in result.stdout
    result = run("roster", "verify", str(made / "d2.ucr"), "--trust", str(keys / "root.pub"))
    assert result.returncode == 0, result.stderr
    assert "delta roster v1 -> v2: 0 added or changed, 2 removed" in result.stdout
    result = run("roster", "verify", str(made / "f2.ucr"), "--trust", str(keys / "root.pub"))
    assert result.returncode == 0, result.stderr
    assert f"roster v2: {len(csv) - 1 - 2} members" in result.stdout


def test_delta_refused_when_the_change_is_too_big(made: Path) -> None:
    keys = made / "keys"
    csv = (made / "members.csv").read_text().splitlines()
    (made / "half.csv").write_text("\n".join(csv[: len(csv) // 2]) + "\n")
    result = run(
        "roster",
        "build",
        "--members",
        str(made / "half.csv"),
        "--keys",
        str(keys),
        "--version",
        "2",
        "--base",
        str(made / "r1.ucr"),
        "--out",
        str(made / "d2.ucr"),
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "sign a full roster instead (leave out --base)" in result.stderr
    assert not (made / "d2.ucr").exists()


def _refused(made: Path, data: bytes, *extra: str) -> str:
    (made / "x.ucr").write_bytes(data)
    result = run(
        "roster", "verify", str(made / "x.ucr"), "--trust", str(made / "keys" / "root.pub"), *extra
    )
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    return lines[0]


def _reheader(data: bytes, change) -> bytes:
    (hlen,) = struct.unpack_from(">I", data, 4)
    envelope = json.loads(data[8 : 8 + hlen])
    change(envelope)
    header = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
    return data[:4] + struct.pack(">I", len(header)) + header + data[8 + hlen :]


def test_verify_names_each_failure(made: Path, tmp_path: Path) -> None:
    good = (made / "r1.ucr").read_bytes()

    def flip_sig(env):
        sig = env["signatures"][0]["sig"]
        env["signatures"][0]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]

    assert "bad signature" in _refused(made, _reheader(good, flip_sig))
    body_flip = bytearray(good)
    body_flip[-1] ^= 1
    assert "digest mismatch" in _refused(made, bytes(body_flip))
    assert "rollback" in _refused(made, good, "--installed-version", "1")
    assert "expired" in _refused(made, good, "--at", "2099-01-01T00:00:00Z")
    assert "malformed" in _refused(made, b"UCR1\x00\x00\x00\x05hello")
    other = tmp_path / "other"
    run("keys", "init", str(other))
    csv = made / "members.csv"
    run(
        "roster",
        "build",
        "--members",
        str(csv),
        "--keys",
        str(other),
        "--version",
        "1",
        "--out",
        str(made / "o.ucr"),
    )
    assert "not signed by any trusted key" in _refused(made, (made / "o.ucr").read_bytes())

    def unknown_only(env):
        env["signatures"] = [{"keyid": "ab" * 32, "sig": "00" * 64}]

    assert "not signed by any trusted key" in _refused(made, _reheader(good, unknown_only))


def test_below_threshold_and_repeated_key(made: Path) -> None:
    """A root whose roster role needs two signatures: one key listed twice is still one."""
    from central.keys import load_keys
    from pact.trust import build_root

    keys = load_keys(made / "keys")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    second = Ed25519PrivateKey.generate()
    root = keys.current_root
    data = build_root(
        version=1,
        issued_at=root.issued_at,
        expires_at=root.expires_at,
        role_keys={
            "root": [keys.root.public_key()],
            "roster": [keys.roster.public_key(), second.public_key()],
            "policy": [keys.policy.public_key()],
            "snapshot": [keys.snapshot.public_key()],
        },
        thresholds={"roster": 2},
        signers=[keys.root],
    )
    (made / "root2of2.json").write_bytes(data)
    good = (made / "r1.ucr").read_bytes()
    doubled = _reheader(good, lambda env: env["signatures"].append(env["signatures"][0]))
    (made / "x.ucr").write_bytes(doubled)
    result = run("roster", "verify", str(made / "x.ucr"), "--trust", str(made / "root2of2.json"))
    assert result.returncode == 1 and "1 of 2 required signatures" in result.stderr


def test_no_pan_in_any_file_or_output(made: Path) -> None:
    outputs = [
        run("roster", "verify", str(made / "r1.ucr"), "--trust", str(made / "keys" / "root.pub"))
    ]
    files = [p for p in made.rglob("*") if p.is_file() and p.name != "members.csv"]
    assert len(files) >= 8  # roster, four role keys, token key, root.pub, roots/1.json
    for pan in PANS:
        bcd = bytes.fromhex(pan + ("F" if len(pan) % 2 else ""))
        for path in files:
            data = path.read_bytes()
            assert pan.encode() not in data and bcd not in data, path
        for out in outputs:
            assert pan not in out.stdout + out.stderr
