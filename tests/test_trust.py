"""The trust chain against the attacks TUF names: every hostile file is refused and
the last good roster keeps serving (rollback, freeze, mix-and-match, endless data,
arbitrary metadata, key compromise, wrong or repeated keys, torn installs)."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

from central.keys import UnionKeys, create_keys, load_keys, rotate
from pact.cards import HMAC_SHA256, PanTokenizer, token_for_pan
from pact.errors import (
    ClockError,
    CompactionNeededError,
    RosterError,
    SignatureError,
    SnapshotError,
    TrustError,
)
from pact.policy import verify_policy
from pact.roster import MAX_LAYERS, build_delta, is_delta, verify_roster
from pact.trust import build_root, load_pinned_root, update_root
from terminal.state import TerminalState
from tests.helpers import (
    MEMBER_PAN,
    OTHER_PAN,
    bundle,
    policy_bytes,
    roster_bytes,
    snapshot_bytes,
    trusted,
    with_luhn,
)


@pytest.fixture
def keys(tmp_path: Path, clock) -> UnionKeys:
    return create_keys(tmp_path / "keys", now=clock())


@pytest.fixture
def terminal(tmp_path: Path, keys: UnionKeys, clock) -> TerminalState:
    """An enrolled terminal with roster v1 (MEMBER_PAN), policy v1 and snapshot v1."""
    state = TerminalState(tmp_path / "terminal")
    state.enrol(bundle(keys))
    roster, policy = roster_bytes(keys, [MEMBER_PAN], clock()), policy_bytes(keys, clock())
    state.install(snapshot_bytes(keys, clock(), roster, policy), clock(), roster, policy)
    return state


def serving(state: TerminalState, version: int) -> None:
    """The terminal (and a fresh load of its files) still serves roster ``version``."""
    for s in (state, TerminalState(state.dir)):
        if s is not state:
            s.load()
        assert s.current.roster is not None and s.current.roster.version == version
        scheme = s.current.token_scheme  # the installed roster's
        assert s.current.roster.lookup(token_for_pan(MEMBER_PAN, s.enrolment.token_key, scheme))


def test_install_and_reload(terminal: TerminalState) -> None:
    serving(terminal, 1)
    assert terminal.current.policy is not None and terminal.current.policy.version == 1
    assert os.readlink(terminal.current_path) == "gens/1"


def test_update_with_new_roster_and_same_policy(terminal, keys, clock) -> None:
    clock.advance(timedelta(hours=1))
    roster2 = roster_bytes(keys, [MEMBER_PAN, OTHER_PAN], clock(), version=2)
    snap = snapshot_bytes(keys, clock(), roster2, terminal.current.policy_data, version=2)
    terminal.install(snap, clock(), roster2, None)
    assert terminal.current.roster.version == 2 and len(terminal.current.roster) == 2
    assert sorted(p.name for p in terminal.gens_path.iterdir()) == ["1", "2"]


# -- mix-and-match, rollback, same version with other bytes ---------------------------
def test_roster_the_snapshot_does_not_name_is_refused(terminal, keys, clock) -> None:
    roster2 = roster_bytes(keys, [MEMBER_PAN], clock(), version=2)
    roster3 = roster_bytes(keys, [OTHER_PAN], clock(), version=3)
    snap = snapshot_bytes(keys, clock(), roster2, terminal.current.policy_data, version=2)
    with pytest.raises(SnapshotError, match="mix-and-match"):
        terminal.install(snap, clock(), roster3, None)
    serving(terminal, 1)


def test_policy_the_snapshot_does_not_name_is_refused(terminal, keys, clock) -> None:
    p2, p3 = policy_bytes(keys, clock(), version=2), policy_bytes(keys, clock(), version=3)
    roster = bytes(terminal.current.roster.data)
    snap = snapshot_bytes(keys, clock(), roster, p2, version=2)
    with pytest.raises(SnapshotError, match="mix-and-match"):
        terminal.install(snap, clock(), None, p3)
    assert terminal.current.policy.version == 1


def test_same_roster_version_with_other_bytes_is_refused(terminal, keys, clock) -> None:
    other_v1 = roster_bytes(keys, [OTHER_PAN], clock(), version=1)
    snap = snapshot_bytes(keys, clock(), other_v1, terminal.current.policy_data, version=2)
    with pytest.raises(SnapshotError, match="mix-and-match"):
        terminal.install(snap, clock(), other_v1, None)
    serving(terminal, 1)


@pytest.mark.parametrize("keep", [0, 1, 0.5, -1])
def test_a_roster_download_empty_or_cut_short_is_refused(terminal, keys, clock, keep) -> None:
    """What the sync downloaded to its file, empty (an answer with no body) or short of
    its end: a RosterError, nothing installed, the file left for the sync to remove."""
    roster2 = roster_bytes(keys, [MEMBER_PAN, OTHER_PAN], clock(), version=2)
    snap = snapshot_bytes(keys, clock(), roster2, terminal.current.policy_data, version=2)
    cut = int(len(roster2) * keep) if isinstance(keep, float) else keep % len(roster2)
    terminal.roster_download.write_bytes(roster2[:cut])
    with pytest.raises(RosterError, match="empty" if cut == 0 else "roster refused"):
        terminal.install(snap, clock(), terminal.roster_download, None)
    serving(terminal, 1)
    assert sorted(p.name for p in terminal.gens_path.iterdir()) == ["1"]


def test_snapshot_rollback_and_same_version_other_bytes(terminal, keys, clock) -> None:
    roster = bytes(terminal.current.roster.data)
    old = snapshot_bytes(keys, clock() - timedelta(minutes=1), roster, terminal.current.policy_data)
    with pytest.raises(SnapshotError, match="differs from the installed copy"):
        terminal.install(old, clock(), None, None)
    clock.advance(timedelta(hours=1))
    roster2 = roster_bytes(keys, [MEMBER_PAN], clock(), version=2)
    terminal.install(
        snapshot_bytes(keys, clock(), roster2, terminal.current.policy_data, version=3),
        clock(),
        roster2,
        None,
    )
    back = snapshot_bytes(keys, clock(), roster, terminal.current.policy_data, version=2)
    with pytest.raises(SnapshotError, match="rollback"):
        terminal.install(back, clock(), roster, None)
    back_roster = snapshot_bytes(keys, clock(), roster, terminal.current.policy_data, version=4)
    with pytest.raises(SnapshotError, match="older roster"):
        terminal.install(back_roster, clock(), roster, None)
    serving(terminal, 2)


# -- freeze and the clock -------------------------------------------------------------
def test_expired_snapshot_is_refused_and_stops_discounts(terminal, keys, clock) -> None:
    from reader.identity import identity_from_pan
    from terminal.checkout import membership_for

    identity = identity_from_pan(
        "unionpay", b"\xa0", MEMBER_PAN, "2030-12", PanTokenizer(keys.token_key)
    )
    assert membership_for(terminal.current, identity, clock())[0] is not None
    clock.advance(timedelta(hours=72))
    member, reason = membership_for(terminal.current, identity, clock())
    assert member is None and "expired" in str(reason) and "sync" in str(reason)
    stale = snapshot_bytes(
        keys,
        clock() - timedelta(hours=80),
        bytes(terminal.current.roster.data),
        terminal.current.policy_data,
        version=2,
    )
    with pytest.raises(SnapshotError, match="expired"):
        terminal.install(stale, clock(), None, None)


def test_clock_set_back_is_refused(terminal, keys, clock) -> None:
    from reader.identity import identity_from_pan
    from terminal.checkout import membership_for

    clock.advance(timedelta(days=-2))  # a Pi without a real-time clock, booted offline
    identity = identity_from_pan(
        "unionpay", b"\xa0", MEMBER_PAN, "2030-12", PanTokenizer(keys.token_key)
    )
    member, reason = membership_for(terminal.current, identity, clock())
    assert member is None and "clock" in str(reason) and "behind" in str(reason)
    snap = snapshot_bytes(
        keys, clock(), bytes(terminal.current.roster.data), terminal.current.policy_data, version=2
    )
    with pytest.raises(ClockError, match="behind the last signed update"):
        terminal.install(snap, clock(), None, None)
    serving(terminal, 1)


# -- wrong keys, repeated keys, arbitrary metadata -----------------------------------------
def test_roster_signed_by_the_policy_key_is_refused(terminal, keys, clock) -> None:
    from pact.roster import build_roster

    data = build_roster(
        [],
        version=2,
        issued_at=clock(),
        expires_at=clock() + timedelta(1),
        token_key_id="x",
        keys=[keys.policy],
    )
    snap = snapshot_bytes(keys, clock(), data, terminal.current.policy_data, version=2)
    with pytest.raises(SignatureError, match="not signed by any trusted key"):
        terminal.install(snap, clock(), data, None)
    serving(terminal, 1)


def test_snapshot_signed_by_the_roster_key_is_refused(terminal, keys, clock) -> None:
    snap = snapshot_bytes(
        keys,
        clock(),
        bytes(terminal.current.roster.data),
        terminal.current.policy_data,
        version=2,
        signer=keys.roster,
    )
    with pytest.raises(SnapshotError, match="not signed by any trusted key"):
        terminal.install(snap, clock(), None, None)


def test_tampered_snapshot_is_refused(terminal, keys, clock) -> None:
    snap = json.loads(
        snapshot_bytes(
            keys,
            clock(),
            bytes(terminal.current.roster.data),
            terminal.current.policy_data,
            version=2,
        )
    )
    snap["signed"]["expires_at"] = "2099-01-01T00:00:00Z"
    with pytest.raises(SnapshotError, match="bad signature"):
        terminal.install(json.dumps(snap).encode(), clock(), None, None)


def test_oversized_files_are_refused_before_parsing(terminal, keys, clock) -> None:
    with pytest.raises(SnapshotError, match="oversized"):
        terminal.install(b"{" + b" " * 20_000 + b"}", clock(), None, None)
    with pytest.raises(TrustError, match="oversized"):
        terminal.update_root(b"{" + b" " * 70_000 + b"}")


def test_role_listing_a_key_twice_is_refused(keys, clock) -> None:
    pub = keys.roster.public_key()
    with pytest.raises(TrustError, match="lists a key twice"):
        build_root(
            version=2,
            issued_at=clock(),
            expires_at=clock() + timedelta(days=1),
            role_keys={
                "root": [keys.root.public_key()],
                "roster": [pub, pub],
                "policy": [keys.policy.public_key()],
                "snapshot": [keys.snapshot.public_key()],
            },
            signers=[keys.root],
        )


# -- root rotation and key compromise -------------------------------------------------------
def _next_root(keys: UnionKeys, clock, version: int, signers, root_key=None, roster_key=None):
    return build_root(
        version=version,
        issued_at=clock(),
        expires_at=clock() + timedelta(days=365),
        role_keys={
            "root": [(root_key or keys.root).public_key()],
            "roster": [(roster_key or keys.roster).public_key()],
            "policy": [keys.policy.public_key()],
            "snapshot": [keys.snapshot.public_key()],
        },
        signers=signers,
    )


def test_root_rotation_needs_old_and_new_keys(keys, clock) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    v1 = load_pinned_root(keys.root_data)
    new = Ed25519PrivateKey.generate()
    both = _next_root(keys, clock, 2, [keys.root, new], root_key=new)
    assert update_root(v1, both).version == 2
    with pytest.raises(TrustError, match="by its own keys"):
        update_root(v1, _next_root(keys, clock, 2, [keys.root], root_key=new))
    with pytest.raises(TrustError, match="by the keys of v1"):
        update_root(v1, _next_root(keys, clock, 2, [new], root_key=new))
    with pytest.raises(TrustError, match="one at a time"):
        update_root(v1, _next_root(keys, clock, 3, [keys.root]))
    with pytest.raises(TrustError, match="one at a time"):
        update_root(v1, keys.root_data)  # the same version again


def test_revoked_roster_key_no_longer_signs(tmp_path, keys, terminal, clock) -> None:
    """Key compromise: the union rotates the roster key; rosters signed with the old
    (stolen) key are refused by terminals that walked to the new root."""
    directory = tmp_path / "keys"
    old_roster_key = keys.roster
    assert rotate(directory, "roster", root_key=directory / "root.pem", now=clock()) == 2
    rotated = load_keys(directory)
    terminal.update_root(rotated.root_data)
    stolen = roster_bytes(keys, [OTHER_PAN], clock(), version=2)  # signed by the old key
    assert keys.roster is old_roster_key
    snap = snapshot_bytes(rotated, clock(), stolen, terminal.current.policy_data, version=2)
    with pytest.raises(SignatureError, match="not signed by any trusted key"):
        terminal.install(snap, clock(), stolen, None)
    good = roster_bytes(rotated, [MEMBER_PAN], clock(), version=2)
    terminal.install(
        snapshot_bytes(rotated, clock(), good, terminal.current.policy_data, version=3),
        clock(),
        good,
        None,
    )
    serving(terminal, 2)


def test_rotated_root_key_chain(tmp_path, keys, terminal, clock) -> None:
    directory = tmp_path / "keys"
    rotate(directory, "root", root_key=directory / "root.pem", now=clock())
    rotate(directory, "policy", root_key=directory / "root.pem", now=clock())
    latest = load_keys(directory)
    roots = sorted((directory / "roots").glob("*.json"), key=lambda p: int(p.stem))
    with pytest.raises(TrustError, match="one at a time"):
        terminal.update_root(roots[2].read_bytes())  # v1 -> v3 jump
    for path in roots[1:]:
        terminal.update_root(path.read_bytes())
    assert terminal.current.root.version == 3
    # in this process too, at once: the policy signed by the revoked key leaves service
    assert terminal.current.roster is not None and terminal.current.policy is None
    p2 = policy_bytes(latest, clock(), version=2)
    verify_policy(p2, terminal.current.root.trusted("policy"), merchant_id="M0001")
    reloaded = TerminalState(terminal.dir)
    reloaded.load()
    assert reloaded.current.root.version == 3
    assert reloaded.current.roster is not None  # its key was not rotated
    assert reloaded.current.policy is None  # signed by the revoked policy key: fail closed
    roster = bytes(reloaded.current.roster.data)
    reloaded.install(snapshot_bytes(latest, clock(), roster, p2, version=2), clock(), None, p2)
    assert reloaded.current.policy is not None and reloaded.current.policy.version == 2


# -- deltas --------------------------------------------------------------------------------
def fast_roster(*args, **kwargs) -> bytes:
    """A roster of the fast (HMAC) token scheme: these tests make hundreds of thousands
    of tokens, and the scheme is not what they test (tests/test_token_scheme.py is)."""
    return roster_bytes(*args, scheme=HMAC_SHA256, **kwargs)


def _pans(n: int, start: int = 0) -> list[str]:
    return [with_luhn(f"6214{i:011d}") for i in range(start, start + n)]


def _packed(keys, pans: list[str], clock) -> list[bytes]:
    full = fast_roster(keys, pans, clock(), version=99)
    return list(verify_roster(full, trusted(keys, "roster"), now=None).records())


def test_delta_adds_a_layer_that_gives_the_next_version(terminal, keys, clock) -> None:
    base_pans = [MEMBER_PAN, *_pans(400)]
    r2 = fast_roster(keys, base_pans, clock(), version=2)
    terminal.install(
        snapshot_bytes(keys, clock(), r2, terminal.current.policy_data, version=2),
        clock(),
        r2,
        None,
    )
    new_pans = [MEMBER_PAN, *_pans(395, 5), *_pans(12, 1000)]  # 5 removed, 12 added
    new_packed = _packed(keys, new_pans, clock)
    base_inode = (terminal.current_path.resolve() / "roster.ucr").stat().st_ino
    delta, full3 = build_delta(
        terminal.current.roster,
        new_packed,
        issued_at=clock(),
        expires_at=clock() + timedelta(hours=72),
        keys=[keys.roster],
    )
    assert len(delta) < len(full3) / 2
    terminal.install(
        snapshot_bytes(keys, clock(), full3, terminal.current.policy_data, version=3),
        clock(),
        delta,
        None,
    )
    roster = terminal.current.roster
    assert roster.version == 3 and len(roster) == len(new_pans) and len(roster.layers) == 2
    assert list(roster.records()) == new_packed
    removed, added = (
        token_for_pan(p, keys.token_key, HMAC_SHA256) for p in (_pans(1)[0], _pans(1, 1000)[0])
    )
    assert roster.lookup(removed) is None and roster.lookup(added) is not None
    serving(terminal, 3)
    gen = terminal.current_path.resolve()
    assert sorted(p.name for p in gen.glob("roster*")) == [
        "roster-delta-0000000003.ucr",
        "roster.ucr",
    ]
    # the base file is shared with the previous generation (a hard link), not copied
    assert (gen / "roster.ucr").stat().st_ino == base_inode
    assert (gen / "roster-delta-0000000003.ucr").read_bytes() == delta
    # after a restart the same two files load as version 3 ...
    reloaded = TerminalState(terminal.dir)
    reloaded.load()
    assert reloaded.current.roster.header.body_sha256 == roster.header.body_sha256
    assert list(reloaded.current.roster.records()) == new_packed
    # ... and a terminal that fetches version 3 in full serves exactly the same roster
    fresh = verify_roster(full3, trusted(keys, "roster"), now=clock())
    assert fresh.header.body_sha256 == roster.header.body_sha256
    assert list(fresh.records()) == new_packed


def test_layers_are_capped_then_the_union_compacts(terminal, keys, clock) -> None:
    pans = [MEMBER_PAN, *_pans(400)]
    version = 2
    r2 = fast_roster(keys, pans, clock(), version=version)
    terminal.install(
        snapshot_bytes(keys, clock(), r2, terminal.current.policy_data, version=2),
        clock(),
        r2,
        None,
    )
    while True:  # one member more each version
        pans.append(_pans(1, 5000 + version)[0])
        try:
            delta, full = build_delta(
                terminal.current.roster,
                _packed(keys, pans, clock),
                issued_at=clock(),
                expires_at=clock() + timedelta(hours=72),
                keys=[keys.roster],
            )
        except CompactionNeededError as exc:
            assert "sign a full roster instead" in str(exc)
            break
        version += 1
        snap = snapshot_bytes(keys, clock(), full, terminal.current.policy_data, version=version)
        terminal.install(snap, clock(), delta, None)
    assert len(terminal.current.roster.layers) == MAX_LAYERS
    compacted = fast_roster(keys, pans, clock(), version=version + 1)
    snap = snapshot_bytes(
        keys, clock(), compacted, terminal.current.policy_data, version=version + 1
    )
    terminal.install(snap, clock(), compacted, None)
    assert len(terminal.current.roster.layers) == 1 and len(terminal.current.roster) == len(pans)
    assert [p.name for p in terminal.current_path.resolve().glob("roster*")] == ["roster.ucr"]
    # a big change is not layered either: more than MAX_OVERLAY percent of the members
    with pytest.raises(CompactionNeededError):
        build_delta(
            terminal.current.roster,
            _packed(keys, [*pans, *_pans(60, 9000)], clock),
            issued_at=clock(),
            expires_at=clock() + timedelta(hours=72),
            keys=[keys.roster],
        )


def test_delta_on_the_wrong_base_is_refused(terminal, keys, clock) -> None:
    r2 = fast_roster(keys, [MEMBER_PAN, OTHER_PAN], clock(), version=2)
    other_base = verify_roster(r2, trusted(keys, "roster"), now=None)  # never installed
    delta, full3 = build_delta(
        other_base,
        _packed(keys, [MEMBER_PAN], clock),
        issued_at=clock(),
        expires_at=clock() + timedelta(hours=1),
        keys=[keys.roster],
        max_overlay=None,  # two members: any change is half the roster
    )
    snap = snapshot_bytes(keys, clock(), full3, terminal.current.policy_data, version=2)
    with pytest.raises(SignatureError, match="wrong base|rollback|next version"):
        terminal.install(snap, clock(), delta, None)
    serving(terminal, 1)


def test_tampered_delta_is_refused(terminal, keys, clock) -> None:
    delta, full2 = build_delta(
        terminal.current.roster,
        _packed(keys, [MEMBER_PAN, OTHER_PAN], clock),
        issued_at=clock(),
        expires_at=clock() + timedelta(hours=1),
        keys=[keys.roster],
        max_overlay=None,  # a tiny roster: any change is a large share
    )
    delta = bytearray(delta)
    delta[-5] ^= 0x40
    snap = snapshot_bytes(keys, clock(), full2, terminal.current.policy_data, version=2)
    with pytest.raises(SignatureError, match="delta digest mismatch"):
        terminal.install(snap, clock(), bytes(delta), None)
    serving(terminal, 1)


# -- power cuts ------------------------------------------------------------------------------
@pytest.mark.slow
def test_power_cut_at_random_points_never_tears_the_roster(tmp_path, keys, clock) -> None:
    """Kill the installing process at random moments (SIGKILL, like a power cut for
    our process) over 200 trials of full and delta installs; every time the files load
    as the old generation or the new one, never a mix, and the next install succeeds."""
    state = TerminalState(tmp_path / "t")
    state.enrol(bundle(keys))
    pans = [MEMBER_PAN, *_pans(3000)]
    policy = policy_bytes(keys, clock())
    versions = {}
    rng = random.Random(20261128)
    installed = 0
    seen = set()
    span = None  # how long one install takes here; measured on the first trial
    base = full = None
    kinds = set()
    for trial in range(1, 201):
        version = installed + 1
        roster = fast_roster(keys, pans[: 1000 + trial], clock(), version=version)
        if base is not None and trial % 3:  # two installs in three are deltas
            try:
                roster, full = build_delta(
                    base,
                    _packed(keys, pans[: 1000 + trial], clock),
                    issued_at=clock(),
                    expires_at=clock() + timedelta(hours=72),
                    keys=[keys.roster],
                )
            except CompactionNeededError:
                pass
        snap = snapshot_bytes(
            keys, clock(), full if is_delta(roster) else roster, policy, version=version
        )
        versions[version] = 1000 + trial
        kinds.add("delta" if is_delta(roster) else "full")
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the installer
            try:
                child = TerminalState(state.dir)
                child.load()
                child.install(snap, clock(), roster, policy if version == 1 else None)
            finally:
                os._exit(0)
        if span is None:  # calibration: let the first install finish
            os.waitpid(pid, 0)
            span = time.monotonic() - started
        else:
            time.sleep(rng.uniform(0, 1.3 * span))  # before, during or just after
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        check = TerminalState(state.dir)
        check.load()
        got = check.current.roster.version if check.current.roster is not None else 0
        assert got in (installed, version), (trial, got)
        if got:
            assert len(check.current.roster) == versions[got]
            assert check.current.snapshot.roster_version == got
        if trial > 1:
            seen.add(got == version)
        installed, base = got, check.current.roster
    assert seen == {True, False}  # both outcomes happened: the kills landed mid-install
    assert kinds == {"delta", "full"}
