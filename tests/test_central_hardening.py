"""The union's commands and service under a cut, a race and bad input: a key rotation
cut short is finished by running it again; two roster publications at once never keep
a full roster and a delta of one version that disagree; a merchant that has left gets
no new terminal; what the wire takes fits the union's columns and calendars; the
command line checks ids, lengths, admins, lifetimes and files before writing anything,
on SQLite and on PostgreSQL, and says what is wrong in one line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
)

from central import create_app
from central import keys as keys_module
from central import service as service_module
from central.closing import FINAL_UPLOAD_DEADLINE, close_exits
from central.errors import CentralError, ConflictError
from central.keys import create_keys, load_keys, root_versions, rotate
from central.service import CentralPaths, MerchantLeftError, Union
from central.statement import period_bounds
from central.store import SALE_STRING_LENGTHS
from pact.chain import entry_hash
from pact.device import KeySigner, public_key_hex
from pact.enrolcode import code_digest, normal_code, sign_request
from pact.errors import WireFormatError
from pact.roster import apply_delta, verify_roster
from pact.sale import Sale
from pact.signing import key_id, public_bytes
from pact.timefmt import parse_iso
from pact.wire import ENTRY_YEARS, MAX_LENGTHS, decode_sales, encode_sales
from tests.conftest import Clock
from tests.helpers import enrol_signing_terminal, signed, with_luhn
from tests.test_central import make_sales
from tests.test_commands import one_line_error, run

PANS = [with_luhn(f"6214{n:011d}") for n in range(41)]


def central(capsys: pytest.CaptureFixture[str], data: Path, url: str | None, *argv: str) -> Any:
    """``unioncard central ARGV`` on the union in ``data`` (and the database at ``url``)."""
    where = ("--data", str(data)) + (("--database-url", url) if url else ())
    return run(capsys, "central", *argv, *where)


def _new_union(capsys: pytest.CaptureFixture[str], data: Path, url: str | None) -> None:
    code, _, err = central(capsys, data, url, "init")
    assert code == 0, err


# ------------------------------------------------------------------ 1. keys rotate, cut short
class Cut(BaseException):
    """The power cut: nothing after it runs (no handler catches it)."""


def _keys_with_the_root_key_offline(capsys, tmp_path: Path) -> tuple[Path, Path]:
    keys = tmp_path / "keys"
    assert run(capsys, "keys", "init", str(keys))[0] == 0
    stick = tmp_path / "stick" / "root.pem"
    stick.parent.mkdir()
    os.replace(keys / "root.pem", stick)
    return keys, stick


@pytest.mark.parametrize("role", ["snapshot", "root"])
def test_a_rotation_cut_short_after_its_root_is_finished_by_running_it_again(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock, role: str
) -> None:
    """A power cut between roots/2.json and the key's move left root v2 naming a key
    only in FILE.new: the service signed on with the old key (refused by every
    terminal that took v2), and a second `keys rotate root` was refused with no hint.
    Running the rotation again now finishes it (and makes no other key)."""
    keys, stick = _keys_with_the_root_key_offline(capsys, tmp_path)
    real = os.replace

    def cut(src: Any, dst: Any) -> None:
        if str(src).endswith(".pem"):  # the first move of a key: the power goes
            raise Cut
        real(src, dst)

    monkeypatch.setattr(keys_module.os, "replace", cut)
    with pytest.raises(Cut):
        rotate(keys, role, root_key=stick, now=clock())
    monkeypatch.undo()
    key_file = stick if role == "root" else keys / f"{role}.pem"
    waiting = key_file.with_name(key_file.name + ".new")
    assert (keys / "roots" / "2.json").exists() and waiting.exists()
    if role != "root":  # the service does not sign with a key root v2 no longer names
        with pytest.raises(CentralError, match=rf"`keys rotate {role}` was cut short") as refused:
            load_keys(keys)
        assert "again to finish it" in str(refused.value) and "\n" not in str(refused.value)
    code, out, err = run(
        capsys, "keys", "rotate", role, "--keys", str(keys), "--root-key", str(stick)
    )
    assert (code, err) == (0, ""), err
    assert out.startswith(
        f"finished the {role} key rotation that was cut short: root metadata v2 names the "
        f"key that waited in {waiting.name}, now in {key_file}"
    )
    assert len(out.splitlines()) == 1 and not waiting.exists()
    assert key_file.with_name(key_file.name + ".v1").exists()  # the old key, kept
    loaded = load_keys(keys)
    root = loaded.current_root
    assert root.version == 2  # finished, not rotated once more
    placed = keys_module._read_key(key_file)
    assert key_id(placed.public_key()) in root.trusted(role)
    if role == "root":
        assert (keys / "root.pub").read_text().strip() == public_bytes(placed.public_key()).hex()
    # and the next rotation goes on from there, with the key now in place
    code, out, err = run(
        capsys, "keys", "rotate", "roster", "--keys", str(keys), "--root-key", str(stick)
    )
    assert (code, err) == (0, "") and "root metadata v3" in out


def test_a_rotation_cut_short_before_its_root_leaves_nothing_to_finish(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    """Cut before roots/2.json: no root names the key in FILE.new; the service goes on
    with its keys, and running the rotation again rotates (writing over FILE.new)."""
    keys, stick = _keys_with_the_root_key_offline(capsys, tmp_path)
    real = keys_module.atomic_write

    def cut(path: Path, data: bytes, mode: int = 0o600) -> None:
        if path.parent.name == "roots":
            raise Cut
        real(path, data, mode)

    monkeypatch.setattr(keys_module, "atomic_write", cut)
    with pytest.raises(Cut):
        rotate(keys, "snapshot", root_key=stick, now=clock())
    monkeypatch.undo()
    assert (keys / "snapshot.pem.new").exists() and load_keys(keys).current_root.version == 1
    code, out, err = run(
        capsys, "keys", "rotate", "snapshot", "--keys", str(keys), "--root-key", str(stick)
    )
    assert (code, err) == (0, "") and out.startswith("new snapshot key; root metadata v2")
    loaded = load_keys(keys)
    assert key_id(loaded.snapshot.public_key()) in loaded.current_root.trusted("snapshot")
    assert not (keys / "snapshot.pem.new").exists()


# ------------------------------------------------------------- 2. publish-roster, twice at once
def test_two_publications_at_once_never_keep_a_full_and_a_delta_that_disagree(
    union: Union, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another publication (the timer, and one by hand) signs v2 of one more member
    between this one's building v2 and keeping it: this one is refused, whole, instead
    of reporting success with a delta v2 of other members than the full v2."""
    union.import_members("member_id,pan\n" + "".join(f"U{n},{PANS[n]}\n" for n in range(40)))
    assert union.publish_roster() == (1, 40)
    other = Union(union.store, union.keys, clock)
    real, calls = service_module.verify_roster, []

    def at_the_same_time(data: bytes, *args: Any, **kwargs: Any) -> Any:
        calls.append(data)
        if len(calls) == 2:  # this one has built v2 (and checks it): the other signs v2 now
            other.import_members(f"member_id,pan\nU40,{PANS[40]}\n")
            assert other.publish_roster() == (2, 41)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(service_module, "verify_roster", at_the_same_time)
    with pytest.raises(ConflictError) as refused:
        union.publish_roster()
    monkeypatch.undo()
    assert str(refused.value) == (
        "another publication signed roster v2 at the same time: run `unioncard central "
        "publish-roster` again"
    )
    keys = union.roster_keys()
    v1 = verify_roster(union.store.signed("roster", 1) or b"", keys, now=None)
    full = verify_roster(union.store.signed("roster", 2) or b"", keys, now=None)
    found = union.roster_file(1, 2)
    assert found is not None and found[0] == "delta"
    stepped = apply_delta(v1, found[1], keys, now=None)
    assert stepped.header.body_sha256 == full.header.body_sha256 and len(full) == 41
    assert union.publish_roster() == (3, 41)  # run again: it goes on


# ------------------------------------------------------------------ 3. the command line's bad input
def _encrypted(path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"a passphrase")
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def test_a_password_protected_key_is_one_line(capsys, tmp_path: Path) -> None:
    """It was a TypeError's traceback (`_read_key` caught only ValueError)."""
    data = tmp_path / "central"
    _new_union(capsys, data, None)
    locked = tmp_path / "locked.pem"
    _encrypted(locked)
    code, _, err = run(
        capsys, "keys", "rotate", "roster", "--keys", str(data / "keys"), "--root-key", str(locked)
    )
    assert code == 1
    one_line_error(err, str(locked), "is protected by a password", "openssl pkey")
    _encrypted(data / "keys" / "policy.pem")  # one of the online keys
    code, _, err = central(capsys, data, None, "publish-roster")
    assert code == 1
    one_line_error(err, str(data / "keys" / "policy.pem"), "is protected by a password")


def test_roster_build_never_writes_over_its_base(capsys, tmp_path: Path) -> None:
    """`--base r1.ucr --out r1.ucr` replaced the full roster v1 with the delta to v2."""
    keys = tmp_path / "keys"
    assert run(capsys, "keys", "init", str(keys))[0] == 0
    members = tmp_path / "members.csv"
    members.write_text(f"member_id,pan\nU1,{PANS[0]}\n")
    build = ("roster", "build", "--members", str(members), "--keys", str(keys))
    base = tmp_path / "r1.ucr"
    assert run(capsys, *build, "--version", "1", "--out", str(base))[0] == 0
    held = base.read_bytes()
    link = tmp_path / "link.ucr"
    link.symlink_to(base)
    for option, target in (("--out", base), ("--out", link), ("--full-out", base)):
        outs = {"--out": tmp_path / "d2.ucr", option: target}
        argv = [a for o, path in outs.items() for a in (o, str(path))]
        code, out, err = run(capsys, *build, "--version", "2", "--base", str(base), *argv)
        assert (code, out) == (2, ""), err
        one_line_error(err, option, "is the --base file")
        assert base.read_bytes() == held
    assert not (tmp_path / "d2.ucr").exists()


def test_set_status_needs_a_console_admin_and_a_merchant(
    capsys, tmp_path: Path, database_url: str | None
) -> None:
    """Without --by, or --by of someone who is no admin (70 characters: a traceback on
    PostgreSQL), it was accepted; an unknown merchant 'has no status history'."""
    data = tmp_path / "central"
    _new_union(capsys, data, database_url)
    add = ("add-merchant", "M0001", "--name", "Shop", "--discount", "5")
    assert central(capsys, data, database_url, *add)[0] == 0
    assert central(capsys, data, database_url, "add-user", "ada", "--role", "admin")[0] == 0
    suspend = ("set-status", "M0001", "suspended", "--reason", "inspection failed")
    code, _, err = central(capsys, data, database_url, *suspend)
    assert code == 2
    one_line_error(err, "--by")
    for name in ("nobody", "b" * 70):
        code, out, err = central(capsys, data, database_url, *suspend, "--by", name)
        assert (code, out) == (1, "")
        one_line_error(err, f"{name!r} is not a union admin of the console")
    code, _, err = central(
        capsys, data, database_url, "set-status", "M0009", "suspended", "--reason", "x",
        "--by", "ada",
    )  # fmt: skip
    assert code == 1
    line = one_line_error(err, "no merchant M0009")
    assert "status history" not in line
    code, out, err = central(capsys, data, database_url, *suspend, "--by", "ada")
    assert (code, err) == (0, "") and out.startswith("merchant M0001 is suspended now")
    union = Union.open(CentralPaths(data), database_url, lambda: parse_iso("2026-11-28T09:30:00Z"))
    try:
        history = union.store.status_history("M0001")
    finally:
        union.close()
    assert [(h["status"], h["decided_by"]) for h in history] == [
        ("active", None),
        ("suspended", "ada"),
    ]


def test_a_roster_lifetime_outlasts_the_day_to_the_next_publication(capsys, tmp_path) -> None:
    """`publish-roster --expires-in 1s` was accepted: the roster expired on every
    terminal before the next night's publication reached it."""
    data = tmp_path / "central"
    _new_union(capsys, data, None)
    for short in ("1s", "1h", "29h"):
        code, out, err = central(capsys, data, None, "publish-roster", "--expires-in", short)
        assert (code, out) == (2, "")
        one_line_error(err, "at least 30h", "published once a day", "expires on them")
    code, out, err = central(capsys, data, None, "publish-roster", "--expires-in", "30h")
    assert (code, err) == (0, "") and out.startswith("signed roster v1 with 0 members")
    code, out, _ = run(capsys, "central", "publish-roster", "--help")
    assert "at least 30h" in " ".join(out.split())


# ------------------------------------------------------------------ 4. a merchant that has left
@pytest.fixture
def app_union(tmp_path: Path, clock: Clock, database_url: str | None) -> Iterator[Any]:
    """The central app (API and console) on SQLite or PostgreSQL, its roots published."""
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    app = create_app(
        {"DATA_DIR": str(paths.data_dir), "CLOCK": clock, "DATABASE_URL": database_url}
    )
    union: Union = app.extensions["unioncard"]
    union.publish_roots(root_versions(paths.keys))
    yield app, union
    union.close()


def _enrol_request(code: str) -> dict[str, Any]:
    signer = KeySigner(Ed25519PrivateKey.generate())
    url = "http://127.0.0.1:9"
    normal = normal_code(code)
    assert normal is not None
    return {
        "code": code,
        "device_key": public_key_hex(signer.public_key()),
        "signature": sign_request(signer, normal, url),
        "central_url": url,
        "has_ca": False,
    }


def test_a_merchant_that_has_left_gets_no_new_terminal(
    app_union: Any, clock: Clock, tmp_path: Path
) -> None:
    """A code made before the exit enrolled a terminal after it, even after the merchant
    was closed (its uploads landing after the final statement); staff could enrol one,
    or make a code, for an exited or closed merchant."""
    app, union = app_union
    union.add_merchant("M0001", "Shop", 500)
    early, _ = union.create_enrol_code("T9", "M0001")
    union.set_merchant_status("M0001", "exited", "contract ends", clock() + timedelta(hours=1))
    union.create_enrol_code("T8", "M0001")  # decided ahead, not yet in force: it may
    clock.advance(timedelta(hours=2))
    left = r"merchant M0001 left the programme at 2026-11-28T10:30:00Z: it gets no new terminals"
    with pytest.raises(MerchantLeftError, match=left):
        union.create_enrol_code("T7", "M0001")
    with pytest.raises(MerchantLeftError, match=left):
        union.enrol_terminal("T7", "M0001", "http://127.0.0.1:9")
    answer = app.test_client().post("/api/v1/enrol", json=_enrol_request(early))
    assert answer.status_code == 409
    assert answer.get_json() == {"error": left.replace("\\", "")}
    assert union.store.terminal("T9") is None
    held = union.store.enrol_code(code_digest(normal_code(early) or ""))
    assert held is not None and held["used_at"] is None  # the code is not spent
    clock.advance(FINAL_UPLOAD_DEADLINE)
    [closed] = close_exits(union, tmp_path / "final").closed
    assert closed.merchant_id == "M0001"
    answer = app.test_client().post("/api/v1/enrol", json=_enrol_request(early))
    assert answer.status_code == 409
    assert "left the programme and was closed at" in answer.get_json()["error"]
    assert union.store.terminal("T9") is None and union.store.terminal("T7") is None


# ------------------------------------------------------------------ 5. the wire and the columns
def test_the_wire_takes_no_text_longer_than_its_column() -> None:
    for name, most in MAX_LENGTHS.items():
        assert most <= SALE_STRING_LENGTHS[name], name
    assert SALE_STRING_LENGTHS["token"] >= 32  # pact.cards: 16 bytes, 32 hex digits


def _entry(terminal_id: str = "T1", merchant_id: str = "M0001", **change: Any) -> Sale:
    [sale] = make_sales(terminal_id, 1, merchant_id=merchant_id)
    sale = replace(sale, **change)
    return signed(replace(sale, hash=entry_hash(sale.prev_hash, sale)))


def test_the_longest_texts_the_wire_takes_are_kept(union: Union) -> None:
    """Kept whole on both databases (a sale_id of 64 characters or a token of 64 hex
    digits passed the wire and was then a 500 on PostgreSQL)."""
    merchant_id, terminal_id = "M" * 32, "T" * 32
    union.add_merchant(merchant_id, "Shop", 500)
    terminal = enrol_signing_terminal(union, terminal_id, merchant_id)
    sale = _entry(
        terminal_id, merchant_id, sale_id="é" * 36, token="ab" * 16, member=True,
        kind=None, note="😀" * 200,
    )  # fmt: skip
    _, batch = decode_sales(encode_sales(terminal_id, [sale]))
    assert union.ingest(terminal, batch).accepted == 1
    assert union.store.sales_for(terminal_id) == [sale]


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"sale_id": "x" * 37}, r"sales\[0\]\.sale_id must be 1 to 36 characters \(a UUID\)"),
        ({"sale_id": ""}, r"sales\[0\]\.sale_id must be 1 to 36"),
        ({"token": "a" * 33}, r"sales\[0\]\.token must be 32 lower-case hex digits"),
        ({"token": "ab" * 32}, r"sales\[0\]\.token must be 32 lower-case hex digits"),
        ({"token": "ab" * 8}, r"sales\[0\]\.token must be 32 lower-case hex digits"),
        ({"merchant_id": "M" * 33}, r"sales\[0\]\.merchant_id must be at most 32 characters"),
    ],
)
def test_an_uploaded_text_longer_than_its_column_is_refused(change, refusal) -> None:
    body = encode_sales("T1", [_entry(**change)])
    with pytest.raises(WireFormatError, match=refusal):
        decode_sales(body)


def test_an_upload_of_a_terminal_id_longer_than_its_column_is_refused() -> None:
    long = "T" * 33
    with pytest.raises(WireFormatError, match=r"sales\[0\]\.terminal_id must be at most 32"):
        decode_sales(encode_sales(long, [_entry(long)]))


# ------------------------------------------------------------------ 6. entries past any calendar
@pytest.mark.parametrize(
    "at",
    [
        "9998-12-31T16:00:00Z",  # 9999-01-01 in Shanghai: the merchant could never close
        "9998-06-01T00:00:00Z",
        "2000-01-01T05:00:00Z",  # 1999-12-31 west of UTC
    ],
)
def test_an_entry_whose_local_day_a_zone_has_not_is_refused(at: str) -> None:
    with pytest.raises(WireFormatError, match=r"sales\[0\]\.at .*\(years 2001 to 9997\)"):
        decode_sales(encode_sales("T1", [_entry(at=at)]))


@pytest.mark.parametrize("at", ["2001-01-01T00:00:00Z", "9997-12-31T23:59:59Z"])
def test_every_accepted_entrys_local_day_is_one_a_statement_covers(at: str) -> None:
    assert decode_sales(encode_sales("T1", [_entry(at=at)]))[1][0].at == at
    assert ENTRY_YEARS == range(2001, 9998)
    for name in ("Etc/GMT+12", "America/New_York", "Asia/Shanghai", "Pacific/Kiritimati"):
        zone = ZoneInfo(name)
        day = parse_iso(at).astimezone(zone).date()
        period_bounds(day, day, zone)  # no InputError: a day of the years the union keeps


# ------------------------------------------------------- 7. ids and lengths on the command line
@pytest.mark.parametrize("terminal_id", ["T.1", "", "X" * 33, "T 1"])
def test_enrol_and_enrol_code_check_the_terminal_id(
    capsys, tmp_path: Path, database_url: str | None, terminal_id: str
) -> None:
    """`T.1` was enrolled and then refused on every call for ever (its credentials split
    at the '.'), an empty id kept, a 33-character one a traceback on PostgreSQL."""
    data = tmp_path / "central"
    _new_union(capsys, data, database_url)
    add = ("add-merchant", "M0001", "--name", "Shop", "--discount", "5")
    assert central(capsys, data, database_url, *add)[0] == 0
    bundle = tmp_path / "bundle.json"
    for argv in (
        ("enrol", terminal_id, "--merchant", "M0001", "--url", "http://127.0.0.1:9")
        + ("--out", str(bundle)),
        ("enrol-code", terminal_id, "--merchant", "M0001"),
    ):
        code, out, err = central(capsys, data, database_url, *argv)
        assert (code, out) == (1, ""), err
        one_line_error(err, f"{terminal_id!r} is not a terminal id: 1 to 32 letters")
    assert not bundle.exists()
    code, out, _ = central(capsys, data, database_url, "terminals", "--json")
    assert (code, out.strip()) == (0, "[]")


def test_add_merchant_checks_its_registry_before_writing_anything(
    capsys, tmp_path: Path, database_url: str | None
) -> None:
    """A 40-character --category was a traceback on PostgreSQL after the merchant and
    its signed policy were kept (its registry not); each field is held to its column."""
    data = tmp_path / "central"
    _new_union(capsys, data, database_url)
    add = ("add-merchant", "M0009", "--name", "Shop", "--discount", "5")
    limits = {"category": 32, "district": 64, "address": 200, "contact": 100}
    for name, most in limits.items():
        code, out, err = central(capsys, data, database_url, *add, f"--{name}", "c" * (most + 1))
        assert (code, out) == (1, ""), err
        one_line_error(err, f"the merchant's {name} is {most + 1} characters long; at most {most}")
        code, out, _ = central(capsys, data, database_url, "merchants")
        assert (code, out) == (0, "")  # nothing kept: no merchant, no policy
    whole = [a for name, most in limits.items() for a in (f"--{name}", "c" * most)]
    code, _, err = central(capsys, data, database_url, *add, *whole)
    assert (code, err) == (0, "")
    union = Union.open(CentralPaths(data), database_url, lambda: parse_iso("2026-11-28T09:30:00Z"))
    try:
        merchant = union.store.merchant("M0009")
        policy = union.store.latest_version("policy:M0009")
    finally:
        union.close()
    assert {name: merchant[name] for name in limits} == {n: "c" * m for n, m in limits.items()}
    assert policy is not None and policy[0] == 1


@pytest.mark.parametrize(
    "argv",
    [("--from", "0001-01-01"), ("--to", "9999-12-31"), ("--from", "1999-12-31")],
)
def test_settlement_refuses_a_day_outside_the_years_as_statement_does(
    capsys, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    """`--from 0001-01-01` was an OverflowError's traceback."""
    data = tmp_path / "central"
    _new_union(capsys, data, None)
    code, out, err = central(capsys, data, None, "settlement", *argv)
    assert (code, out) == (1, "")
    one_line_error(err, f"{argv[1]} is not a day of the years 2000 to 9998")
