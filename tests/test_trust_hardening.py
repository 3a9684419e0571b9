"""The terminal's signed files under overlap, key rotation and replay: two syncs at once
never empty the installed generation (one holds the update lock, the other waits, then
goes on from what the first installed); an installed file the trusted root no longer
vouches for is out of service at once but never stops the sync that replaces it; an
older root, usage file or under-signed policy is refused."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.keys import UnionKeys, create_keys, load_keys, rotate
from pact.basket import RuleUsage
from pact.cards import token_for_pan
from pact.errors import PolicyError, TrustError, UsageError
from pact.generation import load_generation
from pact.policy import build_policy
from pact.trust import build_root
from pact.usage import build_usage, verify_usage
from sync.run import run_sync
from terminal import state as state_module
from terminal.journal import Journal
from terminal.service import TerminalService
from terminal.state import UPDATE_LOCK, SyncRunningError, TerminalState
from terminal.syncing import sync_terminal
from terminal.syncrecord import last_sync
from tests.helpers import (
    MEMBER_PAN,
    bundle,
    invoke,
    policy_bytes,
    roster_bytes,
    snapshot_bytes,
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


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> float:
    """A sync waits this long for another (not the minute it waits in service)."""
    monkeypatch.setattr(state_module, "UPDATE_WAIT", 0.3)
    return 0.3


def fresh(state: TerminalState) -> TerminalState:
    """The same data folder as another process (a restart, the daemon) loads it."""
    other = TerminalState(state.dir)
    other.load()
    return other


def is_member(state: TerminalState) -> bool:
    current = state.current
    if current.roster is None:
        return False
    token = token_for_pan(MEMBER_PAN, state.enrolment.token_key, current.token_scheme)
    return current.roster.lookup(token) is not None


def rotated(keys_dir: Path, clock, *roles: str) -> UnionKeys:
    for role in roles:
        rotate(keys_dir, role, root_key=keys_dir / "root.pem", now=clock())
    return load_keys(keys_dir)


# -- two syncs at once ---------------------------------------------------------------------
def test_two_syncs_that_loaded_the_same_generation_leave_it_in_service(
    terminal, keys, clock
) -> None:
    """Each sync loaded v1; the first installs snapshot v2, the second then installs v2
    too from its stale view: it re-reads what is installed and does nothing (it
    removed gens/2, the folder in service, as a crash's leftover, and every later
    load failed)."""
    first, second = fresh(terminal), fresh(terminal)
    roster = bytes(terminal.current.roster.data)
    p2 = policy_bytes(keys, clock(), version=2, basis_points=900)
    s2 = snapshot_bytes(keys, clock(), roster, p2, version=2)
    first.install(s2, clock(), None, p2)
    assert second.install(s2, clock(), None, p2).version == 2
    live = terminal.current_path.resolve()
    assert sorted(p.name for p in live.iterdir()) == ["policy.json", "roster.ucr", "snapshot.json"]
    for state in (second, fresh(terminal)):
        assert state.current.snapshot.version == 2 and state.current.policy_version == 2
        assert is_member(state)


def test_a_second_process_waits_for_the_first_then_installs_nothing_again(
    terminal, keys, clock
) -> None:
    """Two processes: the first holds the update lock while it installs v2 (and a while
    after); the second, which loaded v1, waits for it, then finds v2 installed."""
    roster = bytes(terminal.current.roster.data)
    p2 = policy_bytes(keys, clock(), version=2)
    s2 = snapshot_bytes(keys, clock(), roster, p2, version=2)
    stale = fresh(terminal)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other sync
        try:
            other = fresh(terminal)
            with other.updating():
                os.write(ready_w, b"x")
                time.sleep(0.5)
                other.install(s2, clock(), None, p2)
        finally:
            os._exit(0)
    os.read(ready_r, 1)  # the child holds the lock now
    started = time.monotonic()
    assert stale.install(s2, clock(), None, p2).version == 2  # waited, then nothing to do
    assert time.monotonic() - started >= 0.2
    os.waitpid(pid, 0)
    assert fresh(terminal).current.snapshot.version == 2 and is_member(fresh(terminal))


def test_an_update_lock_held_elsewhere_is_waited_for_then_refused(terminal, short_wait) -> None:
    holder = TerminalState(terminal.dir)  # another process's open file: flock tells apart
    with holder.updating():
        started = time.monotonic()
        with pytest.raises(SyncRunningError, match="^a sync is already running$") as refused:
            with terminal.updating():
                pass
        assert time.monotonic() - started >= short_wait
        assert refused.value.exit_code == 6  # nothing lost: tried again later, as exit 6
        with holder.updating():  # re-entrant for its holder
            pass
    with terminal.updating():  # released
        pass
    assert (terminal.dir / UPDATE_LOCK).is_file()


def test_the_whole_sync_holds_the_lock_and_a_refused_one_records_nothing(
    terminal, clock, monkeypatch, short_wait
) -> None:
    """The sync holds the update lock from its start to its record (the roster's
    download file included); a sync refused because another runs records no outcome
    (the one running records its own)."""
    seen = []

    def fake_run_sync(terminal_id, state, *args, **kwargs):
        with pytest.raises(SyncRunningError):
            with TerminalState(state.dir).updating(wait=0):
                pass
        seen.append(terminal_id)
        from sync.run import SyncReport

        return SyncReport()

    monkeypatch.setattr("terminal.syncing.run_sync", fake_run_sync)
    journal = Journal(terminal.journal_path, terminal.signer())
    try:
        sync_terminal(terminal, journal, clock)
        assert seen == ["T1"]
        before = last_sync(terminal.dir)
        with TerminalState(terminal.dir).updating():
            with pytest.raises(SyncRunningError):
                sync_terminal(terminal, journal, clock)
        assert last_sync(terminal.dir) == before and seen == ["T1"]
    finally:
        journal.close()


def test_unioncard_sync_says_in_one_line_that_another_sync_is_running(terminal, short_wait) -> None:
    with TerminalState(terminal.dir).updating():
        ran = invoke("sync", "--data", str(terminal.dir))
    assert ran.returncode == 6, ran
    assert ran.stderr.strip() == "error: a sync is already running"


def test_installing_never_empties_the_folder_current_points_to(
    tmp_path, terminal, clock, monkeypatch
) -> None:
    """After a snapshot key rotation the installed snapshot v1 is out of service; the
    union's new snapshot may be v1 again, signed with the new key. It is written
    beside gens/1, never over it: an install cut short leaves gens/1 whole."""
    new = rotated(tmp_path / "keys", clock, "snapshot")
    terminal.update_root(new.root_data)
    live = terminal.current_path.resolve()
    files = {p.name: p.read_bytes() for p in live.iterdir()}
    roster, policy = files["roster.ucr"], files["policy.json"]
    again = snapshot_bytes(new, clock(), roster, policy, version=1)

    def cut(path: Path, data: bytes, mode: int = 0o600) -> None:
        raise OSError(5, "Input/output error")  # the power went while it was written

    with monkeypatch.context() as patch:
        patch.setattr(state_module, "atomic_write", cut)
        with pytest.raises(OSError):
            terminal.install(again, clock(), roster, policy)
    assert {p.name: p.read_bytes() for p in live.iterdir()} == files
    assert terminal.install(again, clock(), roster, policy).version == 1
    assert terminal.current_path.resolve() == live.with_name("1.1")  # gens/1 kept, as before
    assert is_member(terminal) and is_member(fresh(terminal))


# -- key rotation: out of service at once, the sync still runs ---------------------------
def test_a_snapshot_the_trusted_root_no_longer_vouches_for_counts_as_not_installed(
    tmp_path, terminal, clock
) -> None:
    """The snapshot key is rotated; the terminal walked the root, then restarted before
    a new snapshot arrived: it loads (no discount from the old files) and installs the
    union's new snapshot, fetching the roster and policy again."""
    old = terminal.current
    new = rotated(tmp_path / "keys", clock, "snapshot")
    terminal.update_root(new.root_data)
    restarted = fresh(terminal)  # raised "snapshot refused", and so did every sync
    for state in (terminal, restarted):
        current = state.current
        assert current.root.version == 2
        assert (current.snapshot, current.roster, current.policy) == (None, None, None)
        assert len(current.dropped) == 1
        assert current.dropped[0].startswith("installed snapshot no longer trusted: ")
    roster, policy = bytes(old.roster.data), old.policy_data
    snap = snapshot_bytes(new, clock(), roster, policy, version=2)
    assert restarted.check_snapshot(snap, clock()).version == 2
    restarted.install(snap, clock(), roster, policy)
    assert restarted.current.dropped == () and is_member(restarted) and is_member(fresh(terminal))


def test_a_running_daemons_refresh_stops_trusting_files_of_revoked_keys(
    tmp_path, terminal, clock
) -> None:
    """The union rotates the snapshot key, then the roster key; the sync process walks
    both roots; the daemon's next refresh serves nothing signed by a revoked key (it
    kept the old roster, under the old root, while the snapshot did not verify)."""
    daemon = fresh(terminal)
    assert is_member(daemon)
    rotated(tmp_path / "keys", clock, "snapshot", "roster")
    for version in (2, 3):
        terminal.update_root((tmp_path / "keys" / "roots" / f"{version}.json").read_bytes())
    assert terminal.current.roster is None  # the sync process, at once
    daemon.refresh()
    assert daemon.current.root.version == 3 and not is_member(daemon)
    assert daemon.current.snapshot is None and daemon.current.policy is None


class Union:
    """The union's service as the sync sees it, in memory: the roots in its keys folder,
    and one update (snapshot, roster, policy) or none."""

    def __init__(
        self, keys_dir: Path, clock, files: tuple[bytes, bytes, bytes] | None = None
    ) -> None:
        self.keys_dir, self.clock, self.files = keys_dir, clock, files
        self.keys = load_keys(keys_dir)  # the newest: its snapshot key signs the usage
        self.reports: list[dict] = []

    def register_device_key(self, registration) -> None:
        pass

    def post_sales(self, bodies) -> int:
        return 0

    def fetch_root(self, version: int) -> bytes | None:
        path = self.keys_dir / "roots" / f"{version}.json"
        return path.read_bytes() if path.is_file() else None

    def fetch_snapshot(self, have: int) -> bytes | None:
        return self.files[0] if self.files is not None else None

    def fetch_roster(self, have: int, want: int, into: Path) -> Path:
        assert self.files is not None
        into.write_bytes(self.files[1])
        return into

    def fetch_policy(self, version: int) -> bytes:
        assert self.files is not None
        return self.files[2]

    def fetch_usage(self) -> bytes:
        now = self.clock()
        return build_usage(
            merchant_id="M0001",
            terminal_id="T1",
            issued_at=now,
            expires_at=now + timedelta(hours=72),
            periods={},
            counts={},
            keys=[self.keys.snapshot],
        )

    def report(self, body: dict) -> None:
        self.reports.append(body)


def test_a_sync_after_a_snapshot_key_rotation_reports_then_replaces_what_is_out(
    tmp_path, terminal, clock
) -> None:
    """The sync walks the root and uploads; while the union has no snapshot under the
    new key it says the installed one is out of service (exit 1: a problem); once it
    has one, it installs it and the problem is gone."""
    roster, policy = bytes(terminal.current.roster.data), terminal.current.policy_data
    new = rotated(tmp_path / "keys", clock, "snapshot")
    journal = Journal(terminal.journal_path, terminal.signer())
    try:
        report = run_sync("T1", terminal, journal, Union(tmp_path / "keys", clock), clock)
        assert report.root_version == 2
        assert [p.split(":")[0] for p in report.problems] == [
            "installed snapshot no longer trusted"
        ]
        restarted = fresh(terminal)
        snap = snapshot_bytes(new, clock(), roster, policy, version=2)
        union = Union(tmp_path / "keys", clock, (snap, roster, policy))
        report = run_sync("T1", restarted, journal, union, clock)
        assert report.problems == [] and report.roster_version == report.policy_version == 1
        assert union.reports[-1]["snapshot_version"] == 2
    finally:
        journal.close()
    assert is_member(fresh(terminal))


def test_the_status_says_why_nothing_is_in_service(tmp_path, terminal, clock) -> None:
    rotated(tmp_path / "keys", clock, "snapshot")
    terminal.update_root((tmp_path / "keys" / "roots" / "2.json").read_bytes())
    service = TerminalService(terminal.dir, lambda **_: None, clock)  # type: ignore[arg-type,return-value]
    try:
        warnings = service.status()["warnings"]
    finally:
        service.close()
    assert warnings[0].startswith(
        "out of service until the next sync replaces it: installed snapshot no longer "
        "trusted: snapshot refused: "
    )
    assert "no member roster installed: run `unioncard sync`" in warnings


def test_an_installed_generation_that_cannot_be_read_counts_as_not_installed(
    terminal, keys, clock
) -> None:
    """``current`` points to an emptied folder (what two overlapping syncs of an
    earlier release left): the terminal loads, fails closed, and the sync installs."""
    live = terminal.current_path.resolve()
    roster = bytes(terminal.current.roster.data)
    for path in live.iterdir():
        path.unlink()
    state = fresh(terminal)
    assert state.current.roster is None and "cannot be read" in state.current.dropped[0]
    policy = policy_bytes(keys, clock(), version=2)
    state.install(snapshot_bytes(keys, clock(), roster, policy, version=2), clock(), roster, policy)
    assert is_member(fresh(terminal))


# -- enrolled again: never an older root -------------------------------------------------------
def test_enrolling_again_with_an_older_root_is_refused(tmp_path, terminal, keys, clock) -> None:
    """An old bundle (root v1) enrolled again over root v2, which revoked a stolen
    roster key, would trust that key again."""
    old_bundle = bundle(keys)
    new = rotated(tmp_path / "keys", clock, "roster")
    terminal.update_root(new.root_data)
    pinned = terminal.root_path.read_bytes()
    with pytest.raises(TrustError) as refused:
        TerminalState(terminal.dir).enrol(old_bundle)
    assert "version 1, older than version 2" in str(refused.value)
    assert terminal.root_path.read_bytes() == pinned and fresh(terminal).current.root.version == 2
    TerminalState(terminal.dir).enrol(bundle(new))  # the union's current bundle: fine
    assert fresh(terminal).current.root.version == 2


def test_terminal_enrol_with_an_old_bundle_is_one_line_naming_both_versions(
    tmp_path, terminal, keys, clock
) -> None:
    old = tmp_path / "old-bundle.json"
    old.write_bytes(bundle(keys))
    terminal.update_root(rotated(tmp_path / "keys", clock, "roster").root_data)
    ran = invoke("terminal", "enrol", str(old), "--data", str(terminal.dir))
    assert ran.returncode == 1 and ran.stdout == ""
    (line,) = ran.stderr.strip().splitlines()
    assert line.startswith("error: root metadata refused: the enrolment's root is version 1")
    assert "older than version 2" in line


# -- usage file: no rollback --------------------------------------------------------------------
def _usage(keys: UnionKeys, at, uses: int) -> bytes:
    since = at.replace(hour=0, minute=0)
    counts = {"free-film": {"ab" * 16: RuleUsage(uses, 4500)}} if uses else {"free-film": {}}
    return build_usage(
        merchant_id="M0001",
        terminal_id="T1",
        issued_at=at,
        expires_at=at + timedelta(hours=72),
        periods={"free-film": since},
        counts=counts,
        keys=[keys.snapshot],
    )


def test_an_older_usage_file_does_not_replace_a_newer_one(terminal, keys, clock) -> None:
    """Yesterday's file, replayed while it has not expired, would take back the uses
    at the other tills since."""
    now = clock()
    older, newer = _usage(keys, now, 0), _usage(keys, now + timedelta(hours=2), 1)
    terminal.install_usage(newer, now + timedelta(hours=2))
    with pytest.raises(UsageError, match="rollback"):
        terminal.install_usage(older, now + timedelta(hours=3))
    assert (terminal.usage_path.read_bytes(), fresh(terminal).shared_usage()) == (
        newer,
        terminal.shared_usage(),
    )
    terminal.install_usage(newer, now + timedelta(hours=3))  # the same one again: fine
    kept = terminal.shared_usage()
    assert kept is not None
    trusted = terminal.current.root.trusted("snapshot")
    with pytest.raises(UsageError, match="issued at .* before the kept one of"):
        verify_usage(older, trusted, 1, merchant_id="M0001", terminal_id="T1", now=None, kept=kept)


def test_a_usage_file_of_a_revoked_snapshot_key_leaves_service_at_once(
    tmp_path, terminal, keys, clock
) -> None:
    terminal.install_usage(_usage(keys, clock(), 1), clock())
    assert terminal.shared_usage() is not None
    rotated(tmp_path / "keys", clock, "snapshot")
    TerminalState(terminal.dir).update_root((tmp_path / "keys" / "roots" / "2.json").read_bytes())
    terminal.refresh()
    assert terminal.shared_usage() is None  # the file did not change; its key is revoked


# -- the policy role's threshold ----------------------------------------------------------------
def test_a_policy_needs_the_policy_roles_threshold(tmp_path, keys, clock) -> None:
    """A root asking for two policy signatures: a policy with one is refused, as a
    roster with one of two is, at install and when the installed files are loaded."""
    second = Ed25519PrivateKey.generate()
    root = build_root(
        version=1,
        issued_at=clock(),
        expires_at=clock() + timedelta(days=365),
        role_keys={
            "root": [keys.root.public_key()],
            "roster": [keys.roster.public_key()],
            "policy": [keys.policy.public_key(), second.public_key()],
            "snapshot": [keys.snapshot.public_key()],
        },
        thresholds={"policy": 2},
        signers=[keys.root],
    )
    enrolment = json.loads(bundle(keys))
    enrolment["root"] = root.decode()
    state = TerminalState(tmp_path / "t")
    state.enrol(json.dumps(enrolment).encode())

    def policy(signers: list[Ed25519PrivateKey]) -> bytes:
        return build_policy(
            merchant_id="M0001",
            merchant_name="Test Shop",
            status="active",
            version=1,
            issued_at=clock(),
            expires_at=clock() + timedelta(days=30),
            terms={
                "rounding": "half-up",
                "rules": [{"id": "m", "kind": "percent_off", "basis_points": 500}],
            },  # fmt: skip
            keys=signers,
        )

    roster, one, both = roster_bytes(keys, [MEMBER_PAN], clock()), policy([keys.policy]), None
    with pytest.raises(PolicyError, match="policy has 1 of 2 required signatures"):
        state.install(snapshot_bytes(keys, clock(), roster, one), clock(), roster, one)
    assert state.current.policy is None
    both = policy([keys.policy, second])
    state.install(snapshot_bytes(keys, clock(), roster, both), clock(), roster, both)
    assert state.current.policy is not None
    loaded = load_generation(
        state.current.root,
        "M0001",
        snapshot_bytes(keys, clock(), roster, one),
        [roster],
        one,
    )
    assert loaded.generation.policy is None and loaded.generation.roster is not None
    assert loaded.dropped == (
        "installed policy no longer trusted: policy refused: policy has 1 of 2 required signatures",
    )
