"""Bad input everywhere, fuzzed (issue 16, item 3): the files a terminal, the union and an
auditor read, the sales batches terminals upload, the members CSV and the settings.

Each input goes through the real loading path: a terminal's install of a snapshot,
roster and policy (``TerminalState.install``, and ``unioncard terminal install-update``),
its usage file and enrolment bundle, the auditor's ``roster verify``, ``policy check``
and ``audit verify``, the central service's upload endpoint, its members import (in
process and ``unioncard central import-members``), its policy terms, and the terminal's
settings file and environment. Inputs are made two ways with hypothesis: (a) a real file
edited byte-wise (bits flipped, bytes set, inserted, deleted, the file cut short), and (b)
a real signed document whose signed part was given a well-formed but wrong value (a key
deleted or added, a value replaced by any JSON value, also ``Infinity``), then signed
again with the right key, so that the checks after the signature are what is tried.

Each must end in the project's error tree (or be accepted, when the edit changed nothing
that matters), never another exception; a command in one line starting ``error:`` and a
non-zero exit, no traceback; an endpoint in a 4xx; and on a refusal nothing on disk or in
the store changes (the files' bytes, the store's rows, before == after).

Seeded (``derandomize``) so that CI runs the same inputs; each ``@example`` is a crash
found here and fixed. The inputs a test writes to disk for a command go in folders named
``planted-*``, which the privacy scan (tests/privacyscan.py) leaves out: they are the
tests' own (a members file, random numbers), not what the product wrote.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sqlite3
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from central import create_app
from central.errors import CentralError
from central.errors import InputError as CentralInputError
from central.keys import UnionKeys, create_keys
from central.policies import parse_terms_file
from central.service import CentralPaths, Union
from pact.errors import (
    RefusedError,
    RosterError,
    TrustError,
    UnioncardError,
    UsageError,
)
from pact.roster import MAGIC, split_roster
from pact.signing import canonical_json, sign
from pact.snapshot import build_snapshot
from pact.trust import load_pinned_root
from pact.usage import build_usage
from pact.wire import encode_sales
from terminal import settings as settings_file
from terminal.errors import ConfigError
from terminal.state import TerminalState
from tests.conftest import Site
from tests.helpers import (
    MEMBER_PAN,
    OTHER_PAN,
    bundle,
    invoke,
    policy_bytes,
    roster_bytes,
    with_luhn,
)

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
ISSUED = NOW - timedelta(days=1)
LIFETIME = timedelta(days=400)

# Modest and repeatable: the same inputs every run, no example database.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one set-up per test, restored per example
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# Deeply nested JSON: the parser recurses and gives up with a RecursionError (not a
# ValueError); a crash everywhere until each loader caught it.
DEEP = b"[" * 100_000

# ------------------------------------------------------------------ the two kinds of input

KINDS = ("flip", "set", "insert", "delete", "truncate", "replace")
EDIT = st.tuples(st.sampled_from(KINDS), st.integers(0, 2**24), st.binary(min_size=1, max_size=12))
EDITS = st.lists(EDIT, min_size=1, max_size=3)


def edited(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    """``data`` with each edit applied; a position is taken modulo the length."""
    out = bytearray(data)
    for kind, pos, arg in edits:
        at = pos % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] ^= arg[0] or 1
        elif kind == "set" and at < len(out):
            out[at] = arg[0]
        elif kind == "insert":
            out[at:at] = arg
        elif kind == "delete":
            del out[at : at + len(arg)]
        elif kind == "truncate":
            del out[at:]
        elif kind == "replace":
            out[at : at + len(arg)] = arg
    return bytes(out)


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=24)
    | st.sampled_from(["", "2026-11-30T06:00:00Z", "2026-13-40T99:00:00Z", "0" * 64, "M0001"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
# a change to a document: which node (an index into its nodes), what to do, and with what
CHANGE = st.tuples(
    st.integers(0, 10_000),
    st.sampled_from(("replace", "delete", "add")),
    st.text(max_size=8),
    JSON_VALUES,
)


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nodes(item, (*path, i))


def changed(document: dict[str, Any], change: tuple[int, str, str, Any]) -> dict[str, Any]:
    """A copy of ``document`` with one node replaced, deleted, or given a new key."""
    index, action, key, value = change
    out = copy.deepcopy(document)
    paths = [p for p in _nodes(out) if p]  # not the document itself
    path = paths[index % len(paths)]
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    else:
        target = parent[last]
        if isinstance(target, dict):
            target[key] = value
        elif isinstance(target, list):
            target.append(value)
        else:
            parent[last] = [target, value]
    return out


def resigned(data: bytes, change: tuple[int, str, str, Any], key: Any) -> bytes:
    """A signed JSON file whose signed part was changed, signed again by ``key``."""
    signed = changed(json.loads(data)["signed"], change)
    return canonical_json(sign(signed, [key]))


def one_line(message: str) -> None:
    """An error's message: said, no traceback (a line break in it can only come from
    the input it quotes; the command line and the pages print it on one line)."""
    assert message.strip() and "Traceback" not in message, message


def refused_by_command(ran: Any, *codes: int) -> str:
    """A command that refused: non-zero (one of ``codes`` when given), one ``error:`` line."""
    assert ran.returncode != 0, ran
    if codes:
        assert ran.returncode in codes, ran
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), ran.stderr
    assert "Traceback" not in ran.stderr + ran.stdout
    return lines[0]


def files_of(folder: Path, skip: Callable[[str], bool] = lambda name: False) -> dict[str, Any]:
    """Every file and link under ``folder``: its bytes (a link: its target)."""
    out: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if skip(rel):
            continue
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = path.read_bytes()
        else:
            out[rel] = "folder"
    return out


def not_journal(name: str) -> bool:
    return name.startswith("journal.db")  # a refusal by hand is journaled, by design


# ------------------------------------------------------------------ a terminal and its files


@dataclass
class Shop:
    """An enrolled terminal with generation 1 installed, and version 2 of every file."""

    keys: UnionKeys
    dir: Path
    pristine: Path
    roster: bytes
    policy: bytes
    snapshot: bytes
    usage: bytes

    def restore(self) -> None:
        """Back to generation 1 (after an edit that was accepted)."""
        shutil.rmtree(self.dir)
        shutil.copytree(self.pristine, self.dir, symlinks=True)

    def snapshot_for(self, roster: bytes, policy: bytes, version: int = 2) -> bytes:
        """A snapshot (signed) naming ``roster``'s header digest (the good one's when it
        has none) and ``policy``'s bytes."""
        try:
            header = split_roster(roster)[0]["signed"]
            digest, roster_version = str(header["body_sha256"]), int(header["version"])
        except (RosterError, KeyError, TypeError, ValueError, OverflowError):
            header = split_roster(self.roster)[0]["signed"]
            digest, roster_version = header["body_sha256"], header["version"]
        return build_snapshot(
            merchant_id="M0001",
            version=version,
            issued_at=ISSUED,
            expires_at=ISSUED + LIFETIME,
            roster_version=roster_version,
            roster_body_sha256=digest,
            policy_file=policy,
            policy_version=version,
            keys=[self.keys.snapshot],
        )


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    keys = create_keys(tmp_path / "keys", now=ISSUED - timedelta(days=1))
    state = TerminalState(tmp_path / "terminal")
    state.enrol(bundle(keys))
    terms = json.loads((ROOT / "config" / "policies" / "pharmacy.json").read_text())
    r1 = roster_bytes(keys, [MEMBER_PAN], ISSUED, lifetime=LIFETIME)
    p1 = policy_bytes(keys, ISSUED, terms=terms, lifetime=LIFETIME)
    s = Shop(keys, state.dir, tmp_path / "pristine", r1, p1, b"", b"")
    state.install(s.snapshot_for(r1, p1, version=1), NOW, r1, p1)
    s.roster = roster_bytes(keys, [MEMBER_PAN, OTHER_PAN], ISSUED, version=2, lifetime=LIFETIME)
    s.policy = policy_bytes(keys, ISSUED, terms=terms, version=2, lifetime=LIFETIME)
    s.snapshot = s.snapshot_for(s.roster, s.policy)
    s.usage = build_usage(
        merchant_id="M0001",
        terminal_id="T1",
        issued_at=ISSUED,
        expires_at=ISSUED + LIFETIME,
        periods={"cold-quota": ISSUED},
        counts={"cold-quota": {}},
        keys=[keys.snapshot],
    )
    state.install_usage(s.usage, NOW)
    shutil.copytree(state.dir, s.pristine, symlinks=True)
    return s


def install_or_refuse(
    shop: Shop, snapshot: bytes, roster: bytes | None, policy: bytes | None
) -> None:
    """Install through the terminal's own path: refused with a RefusedError and nothing
    on disk changed, or installed (then put back)."""
    before = files_of(shop.dir)
    state = TerminalState(shop.dir)
    try:
        state.install(snapshot, NOW, roster, policy)
    except RefusedError as exc:
        event(f"refused: {str(exc)[:40]}")
        one_line(str(exc))
        assert files_of(shop.dir) == before, "a refused install changed the terminal's files"
        assert state.current.snapshot is not None and state.current.snapshot.version == 1
        assert TerminalState(shop.dir).current.roster_version == 1  # as reloaded
        return
    shop.restore()


# the delta header's length field claims a deep-nested JSON header
DEEP_ROSTER = MAGIC + struct.pack(">I", len(DEEP)) + DEEP


@FUZZ
@given(part=st.sampled_from(("snapshot", "roster", "policy")), edits=EDITS)
@example(part="snapshot", edits=[("insert", 0, DEEP)])
@example(part="policy", edits=[("insert", 0, DEEP)])
@example(part="roster", edits=[("replace", 0, DEEP_ROSTER)])
def test_an_edited_update_file_is_refused_and_changes_nothing(
    shop: Shop, part: str, edits: list[tuple[str, int, bytes]]
) -> None:
    files = {"snapshot": shop.snapshot, "roster": shop.roster, "policy": shop.policy}
    files[part] = edited(files[part], edits)
    if part == "policy":  # a snapshot that names the edited policy, so it is read
        files["snapshot"] = shop.snapshot_for(shop.roster, files["policy"])
    install_or_refuse(shop, files["snapshot"], files["roster"], files["policy"])


@FUZZ
@given(part=st.sampled_from(("snapshot", "roster", "policy")), change=CHANGE)
@example(part="snapshot", change=(10, "replace", "", float("inf")))  # its version
@example(part="policy", change=(24, "replace", "", float("inf")))  # its version
@example(part="roster", change=(13, "replace", "", float("inf")))  # its version
def test_a_wrong_update_signed_by_the_right_key_is_refused_and_changes_nothing(
    shop: Shop, part: str, change: tuple[int, str, str, Any]
) -> None:
    keys = shop.keys
    roster, policy, snapshot = shop.roster, shop.policy, shop.snapshot
    if part == "snapshot":
        snapshot = resigned(snapshot, change, keys.snapshot)
    elif part == "policy":
        policy = resigned(policy, change, keys.policy)
        snapshot = shop.snapshot_for(roster, policy)
    else:
        envelope, body = split_roster(roster)
        header = canonical_json(sign(changed(envelope["signed"], change), [keys.roster]))
        roster = MAGIC + struct.pack(">I", len(header)) + header + bytes(body)
        snapshot = shop.snapshot_for(roster, policy)
    install_or_refuse(shop, snapshot, roster, policy)


@settings(FUZZ, max_examples=20)
@given(part=st.sampled_from(("snapshot", "roster", "policy")), edits=EDITS)
@example(part="snapshot", edits=[("insert", 0, DEEP)])
def test_install_update_by_hand_refuses_an_edited_file_in_one_line(
    shop: Shop, tmp_path_factory: pytest.TempPathFactory, part: str, edits: Any
) -> None:
    """``unioncard terminal install-update`` (in this process, through ``main``)."""
    folder = tmp_path_factory.mktemp("planted-usb")
    files = {"snapshot": shop.snapshot, "roster": shop.roster, "policy": shop.policy}
    files[part] = edited(files[part], edits)
    if part == "policy":
        files["snapshot"] = shop.snapshot_for(shop.roster, files["policy"])
    for name, data in files.items():
        (folder / name).write_bytes(data)
    before = files_of(shop.dir, skip=not_journal)
    ran = invoke(
        "terminal", "install-update", "--data", str(shop.dir),
        *(f"--{name}={folder / name}" for name in files),
    )  # fmt: skip
    if ran.returncode == 0:
        shop.restore()
        return
    refused_by_command(ran, 1)
    assert files_of(shop.dir, skip=not_journal) == before


@pytest.mark.parametrize("pair", [[], [1], [1, 2, 3], [1.5, 200], ["1", 200], [True, 0], {}])
def test_a_usage_file_with_a_malformed_members_use_is_refused(shop: Shop, pair: Any) -> None:
    """Found by the fuzz test below: a member's use of a list shorter than two was an
    IndexError's traceback (and a float was cut to a whole number)."""
    signed = json.loads(shop.usage)["signed"]
    [rule] = signed["rules"].values()
    rule["members"] = {"ab" * 16: pair}
    data = canonical_json(sign(signed, [shop.keys.snapshot]))
    with pytest.raises(UsageError, match="malformed"):
        TerminalState(shop.dir).install_usage(data, NOW)


@FUZZ
@given(edits=EDITS, change=CHANGE, how=st.sampled_from(("bytes", "signed")))
@example(edits=[("insert", 0, DEEP)], change=(0, "add", "", 0), how="bytes")
@example(edits=[("flip", 0, b"\x00")], change=(5, "add", "t", [float("inf"), 1]), how="signed")
def test_an_edited_or_wrong_usage_file_is_refused_and_the_kept_one_stays(
    shop: Shop, edits: Any, change: Any, how: str
) -> None:
    if how == "bytes":
        data = edited(shop.usage, edits)
    else:
        data = resigned(shop.usage, change, shop.keys.snapshot)
    before = files_of(shop.dir)
    state = TerminalState(shop.dir)
    try:
        state.install_usage(data, NOW)
    except UsageError as exc:
        event(f"refused: {str(exc)[:40]}")
        one_line(str(exc))
        assert files_of(shop.dir) == before
        assert state.shared_usage() is not None  # the kept one is still used
        return
    shop.restore()


@FUZZ
@given(edits=EDITS)
@example(edits=[("insert", 0, DEEP)])
def test_an_edited_root_is_refused(shop: Shop, edits: Any) -> None:
    """The root metadata a terminal pins (its enrolment) and an auditor trusts."""
    data = edited((shop.dir / "root.json").read_bytes(), edits)
    try:
        load_pinned_root(data)
    except TrustError as exc:
        one_line(str(exc))


@FUZZ
@given(edits=EDITS, change=CHANGE, how=st.sampled_from(("bytes", "json")))
@example(edits=[("insert", 0, DEEP)], change=(0, "add", "", 0), how="bytes")
def test_an_edited_enrolment_bundle_is_refused_and_writes_nothing(
    shop: Shop, tmp_path_factory: pytest.TempPathFactory, edits: Any, change: Any, how: str
) -> None:
    """``TerminalState.enrol`` on a new folder: ConfigError (or TrustError for its root)
    and nothing written, or enrolled."""
    good = bundle(shop.keys)
    if how == "bytes":
        data = edited(good, edits)
    else:
        data = json.dumps(changed(json.loads(good), change)).encode()
    folder = tmp_path_factory.mktemp("new") / "terminal"
    folder.mkdir()
    try:
        TerminalState(folder).enrol(data)
    except UnioncardError as exc:
        assert isinstance(exc, ConfigError | TrustError), repr(exc)
        one_line(str(exc))
        assert list(folder.iterdir()) == [], "a refused enrolment wrote files"


# ------------------------------------------------------------------ the auditor's commands


@pytest.fixture
def trust(shop: Shop, tmp_path: Path) -> Path:
    path = tmp_path / "root.json"
    path.write_bytes((shop.dir / "root.json").read_bytes())
    return path


@settings(FUZZ, max_examples=40)
@given(what=st.sampled_from(("roster", "policy")), edits=EDITS)
@example(what="roster", edits=[("replace", 0, DEEP_ROSTER)])
@example(what="policy", edits=[("insert", 0, DEEP)])
def test_the_auditors_commands_refuse_an_edited_file_in_one_line(
    shop: Shop, trust: Path, tmp_path_factory: pytest.TempPathFactory, what: str, edits: Any
) -> None:
    path = tmp_path_factory.mktemp("planted-audit") / what
    if what == "roster":
        path.write_bytes(edited(shop.roster, edits))
        ran = invoke(
            "roster", "verify", str(path), "--trust", str(trust), "--at", "2026-11-30T06:00:00Z"
        )
    else:
        path.write_bytes(edited(shop.policy, edits))
        ran = invoke("policy", "check", str(path))
    if ran.returncode != 0:
        refused_by_command(ran, 1)


@settings(FUZZ, max_examples=40)
@given(edits=EDITS, change=CHANGE, how=st.sampled_from(("bytes", "terms")))
@example(edits=[("insert", 0, DEEP)], change=(0, "add", "", 0), how="bytes")
def test_policy_terms_files_are_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, edits: Any, change: Any, how: str
) -> None:
    """The terms union staff write (config/policies/), as ``policy check`` and ``central
    set-policy`` read them."""
    good = (ROOT / "config" / "policies" / "pharmacy.json").read_bytes()
    if how == "bytes":
        data = edited(good, edits)
    else:
        data = json.dumps(changed(json.loads(good), change)).encode()
    try:
        parse_terms_file(data, "terms.json")
    except CentralInputError as exc:
        one_line(str(exc))
    path = tmp_path_factory.mktemp("planted-terms") / "terms.json"
    path.write_bytes(data)
    ran = invoke("policy", "check", str(path))
    if ran.returncode != 0:
        refused_by_command(ran, 1)


@pytest.mark.parametrize("name", ["a\nb", "a\x1cb", "a\u2028b", "a\rb"])
def test_an_error_quoting_a_line_break_is_still_one_line(tmp_path: Path, name: str) -> None:
    """Found by the test above: a field name with a line break (any that splitlines
    knows) made the error two lines; the command line writes it as an escape."""
    terms = json.loads((ROOT / "config" / "policies" / "pharmacy.json").read_text())
    terms["rules"][0]["eligible"][name] = 1
    path = tmp_path / "terms.json"
    path.write_text(json.dumps(terms))
    line = refused_by_command(invoke("policy", "check", str(path)), 1)
    assert repr(name)[1:-1] in line, line


# ------------------------------------------------------------------ the audit bundle


@pytest.fixture
def audit_bundle_file(site: Site, clock: Any, tmp_path: Path) -> tuple[bytes, Path]:
    """A real audit bundle (two sales, synced, exported) and the root key to check it."""
    site.sync(clock)
    site.sell(MEMBER_PAN, 12800, clock)
    site.sell(OTHER_PAN, 4550, clock)
    site.sync(clock)
    day = clock().date().isoformat()
    out = tmp_path / "bundle.json"
    ran = invoke(
        "central", "audit", "export", "--merchant", "M0001", "--from", day, "--to", day,
        "--out", str(out), "--data", str(tmp_path / "central"),
    )  # fmt: skip
    assert ran.returncode == 0, ran
    return out.read_bytes(), tmp_path / "central" / "keys" / "root.pub"


@settings(FUZZ, max_examples=40)
@given(edits=EDITS)
@example(edits=[("insert", 0, DEEP)])
def test_an_edited_audit_bundle_exits_2_in_one_line(
    audit_bundle_file: tuple[bytes, Path], tmp_path_factory: pytest.TempPathFactory, edits: Any
) -> None:
    """``unioncard audit verify``: a bundle edited by insertions, deletions and cuts (every
    single-byte change is tried in tests/test_audit_bundle.py) is refused with exit 2
    naming where, or its audit finds what changed (exit 1)."""
    data, root_pub = audit_bundle_file
    path = tmp_path_factory.mktemp("planted-bundle") / "bundle.json"
    path.write_bytes(edited(data, edits))
    ran = invoke("audit", "verify", str(path), "--trust", str(root_pub))
    if data == path.read_bytes():
        assert ran.returncode == 0, ran
    elif ran.returncode == 2:
        refused_by_command(ran, 2)
    else:
        assert ran.returncode in (0, 1) and "Traceback" not in ran.stderr, ran


# ------------------------------------------------------------------ upload batches


def rows(database: Path, *tables: str) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(database) as db:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}


SALES_TABLES = ("sales", "sales_daily", "sales_monthly")


@pytest.fixture
def uploaded(site: Site, clock: Any, tmp_path: Path) -> Iterator[tuple[Any, dict[str, str], bytes]]:
    """The central app (a test client of the site's store) holding the terminal's whole
    journal, the auth header, and that journal as an upload batch."""
    site.sync(clock)
    site.sell(MEMBER_PAN, 12800, clock)
    site.sell(OTHER_PAN, 4550, clock)
    site.sync(clock)
    assert site.journal.pending() == []
    body = json.dumps(encode_sales("T1", site.journal.sales())).encode()
    app = create_app({"DATA_DIR": str(tmp_path / "central"), "CLOCK": clock})
    auth = {"Authorization": f"Bearer T1.{site.state.enrolment.api_secret}"}
    yield app, auth, body
    app.extensions["unioncard"].close()


def post_batch(uploaded: Any, tmp_path: Path, body: bytes) -> None:
    app, auth, _ = uploaded
    database = _database(CentralPaths(tmp_path / "central"))
    before = rows(database, *SALES_TABLES)
    answer = app.test_client().post(
        "/api/v1/sales", data=body, headers={**auth, "Content-Type": "application/json"}
    )
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, (
        answer.status_code,
        answer.get_data(as_text=True)[:300],
    )
    event(f"{answer.status_code}")
    one_line(answer.get_json()["error"] if answer.status_code != 200 else "ok")
    assert rows(database, *SALES_TABLES) == before, "an upload of what is held changed the store"


@settings(FUZZ, max_examples=80)
@given(edits=EDITS)
@example(edits=[("insert", 0, DEEP)])
def test_an_edited_upload_batch_is_refused_and_stores_nothing(
    uploaded: Any, tmp_path: Path, edits: Any
) -> None:
    post_batch(uploaded, tmp_path, edited(uploaded[2], edits))


@settings(FUZZ, max_examples=120)
@given(change=CHANGE)
@example(change=(5, "replace", "", 2**70))  # a number beyond the database's integers
@example(change=(5, "replace", "", float("inf")))
def test_a_wrong_upload_batch_is_refused_and_stores_nothing(
    uploaded: Any, tmp_path: Path, change: Any
) -> None:
    post_batch(uploaded, tmp_path, json.dumps(changed(json.loads(uploaded[2]), change)).encode())


# ------------------------------------------------------------------ the members CSV

MEMBERS = (
    "member_id,pan,status,tier,valid_until,district,workplace\n"
    f"U1,{MEMBER_PAN},active,0,,Huangpu,Dock 3\n"
    f"U2,{OTHER_PAN},suspended,2,2027-06-30,Xuhui,\n"
    f'U3,{with_luhn("622202000000003")},active,1,,"Jing\'an, north",Mill\n'
)
MEMBER_TABLES = ("members", "member_history", "member_monthly")


@pytest.fixture
def members_union(tmp_path: Path, clock: Any) -> Iterator[tuple[Union, CentralPaths]]:
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, None, clock)
    union.import_members(MEMBERS)
    yield union, paths
    union.close()


def _database(paths: CentralPaths) -> Path:
    return Path(paths.database_url.removeprefix("sqlite:///"))


@settings(FUZZ, max_examples=80)
@given(edits=EDITS)
@example(edits=[("insert", 60, b"\xff\xfe")])  # not UTF-8
@example(edits=[("insert", 60, b"1" * 140_000)])  # a field beyond the CSV reader's limit
@example(edits=[("insert", 60, b"\x00")])
def test_an_edited_members_file_is_refused_with_its_line_and_imports_nothing(
    members_union: tuple[Union, CentralPaths], edits: Any
) -> None:
    union, paths = members_union
    data = edited(MEMBERS.encode(), edits)
    before = rows(_database(paths), *MEMBER_TABLES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return  # the command's own reading: the next test
    try:
        union.import_members(text)
    except CentralInputError as exc:
        event(f"refused: {str(exc)[:40]}")
        one_line(str(exc))
        assert "line " in str(exc) or "column" in str(exc), str(exc)
        assert rows(_database(paths), *MEMBER_TABLES) == before
        return
    except CentralError as exc:  # pragma: no cover - the test names it
        pytest.fail(f"{type(exc).__name__}: {exc}")
    # accepted: what was read changed only what the edit changed (put back for the next)
    union.import_members(MEMBERS)


@settings(FUZZ, max_examples=30)
@given(edits=EDITS)
@example(edits=[("insert", 60, b"\xff\xfe")])
@example(edits=[("insert", 60, b"1" * 140_000)])
def test_import_members_refuses_an_edited_file_in_one_line(
    members_union: tuple[Union, CentralPaths],
    tmp_path_factory: pytest.TempPathFactory,
    edits: Any,
) -> None:
    """``unioncard central import-members FILE``: also a file that is not UTF-8."""
    union, paths = members_union
    path = tmp_path_factory.mktemp("planted-csv") / "members.csv"
    path.write_bytes(edited(MEMBERS.encode(), edits))
    before = rows(_database(paths), *MEMBER_TABLES)
    ran = invoke("central", "import-members", str(path), "--data", str(paths.data_dir))
    if ran.returncode == 0:
        union.import_members(MEMBERS)
        return
    line = refused_by_command(ran, 1)
    assert "line " in line or "column" in line, line
    assert rows(_database(paths), *MEMBER_TABLES) == before


# ------------------------------------------------------------------ the terminal's settings

SETTING_VALUES = JSON_VALUES.filter(lambda v: v is not None) | st.sampled_from(
    ["/var/lib/unioncard", "8080", "²", "٣", " 12 ", "1e400", "nan", "inf", "-1", "0x10"]
)


def _toml(value: Any) -> str:
    """``value`` as TOML (JSON's strings, numbers and arrays are TOML too; an object
    becomes an inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "nan"
        return repr(value) if abs(value) != float("inf") else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


@FUZZ
@given(
    entries=st.dictionaries(
        st.sampled_from(settings_file.KEYS) | st.text(min_size=1, max_size=8),
        SETTING_VALUES,
        max_size=4,
    ),
    edits=st.none() | EDITS,
)
@example(entries={"listen_port": "²"}, edits=None)
def test_a_bad_settings_file_stops_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, entries: dict[str, Any], edits: Any
) -> None:
    text = "\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in entries.items()).encode()
    if edits is not None:
        text = edited((ROOT / "config" / "terminal.example.toml").read_bytes(), edits)
    path = tmp_path_factory.mktemp("planted-etc") / "terminal.toml"
    path.write_bytes(text)
    try:
        loaded = settings_file.load(path, {})
    except ConfigError as exc:
        one_line(str(exc))
        return
    assert 1 <= loaded.listen_port <= 65535 and 0.1 <= loaded.card_timeout <= 600


@FUZZ
@given(
    environ=st.dictionaries(
        st.sampled_from([settings_file.ENV_PREFIX + k.upper() for k in settings_file.KEYS]),
        st.text(max_size=12) | st.sampled_from(["²", "1e999", "nan", "-0", "65536", " 9 "]),
        max_size=3,
    )
)
@example(environ={"UNIONCARD_SYNC_BATCH": "²"})
def test_bad_settings_in_the_environment_stop_in_one_line(environ: dict[str, str]) -> None:
    try:
        loaded = settings_file.load(None, environ)
    except ConfigError as exc:
        one_line(str(exc))
        assert "UNIONCARD_" in str(exc) and "is not valid: use " in str(exc), str(exc)
        return
    assert 1 <= loaded.sync_batch <= 1000


@settings(FUZZ, max_examples=15)
@given(edits=EDITS)
def test_a_bad_settings_file_stops_a_command_in_one_line(
    shop: Shop, tmp_path_factory: pytest.TempPathFactory, edits: Any
) -> None:
    path = tmp_path_factory.mktemp("planted-etc") / "terminal.toml"
    path.write_bytes(edited((ROOT / "config" / "terminal.example.toml").read_bytes(), edits))
    ran = invoke("terminal", "status", "--config", str(path), "--data", str(shop.dir))
    if ran.returncode != 0:
        refused_by_command(ran)
