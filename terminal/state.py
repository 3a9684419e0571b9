"""The terminal's files: enrolment, trusted root, and the installed generation (an adapter).

Layout under the terminal's data folder::

    enrolment.json    terminal id, merchant id, central URL, API secret, token key (0600)
    root.json         the trusted root metadata (pact.trust), walked forward by sync
    current -> gens/N the installed generation: a snapshot and the roster and policy
                      it names, switched as one by renaming a symbolic link
    gens/N/snapshot.json, policy.json,
           roster.ucr             the full roster (all its layers)
           roster-delta-V.ucr     each delta applied since, one layer each (V: 10 digits)
    journal.db        the sales journal (terminal.journal)

Everything is verified before it is used, installed atomically (write, fsync,
rename, fsync the folder), and the last good generation stays in service after
any refusal. The roster is memory-mapped, not read into the heap. A generation
hard-links the roster files it shares with the one before, so applying a delta
writes only the delta.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pact.errors import ClockError, RefusedError, SignatureError, SnapshotError, TrustError
from pact.files import atomic_write, fsync_dir
from pact.policy import Policy, verify_policy
from pact.roster import Roster, apply_delta, is_delta, verify_roster
from pact.snapshot import Snapshot, verify_snapshot
from pact.timefmt import iso
from pact.trust import Root, load_pinned_root, update_root
from terminal.errors import ConfigError, NotEnrolledError

log = logging.getLogger(__name__)

CLOCK_TOLERANCE = timedelta(minutes=5)  # a wall clock this far behind signed time is refused


@dataclass(frozen=True)
class Enrolment:
    terminal_id: str
    merchant_id: str
    central_url: str
    api_secret: str
    token_key: bytes

    @classmethod
    def from_json(cls, raw: Any) -> Enrolment:
        try:
            return cls(
                terminal_id=str(raw["terminal_id"]),
                merchant_id=str(raw["merchant_id"]),
                central_url=str(raw["central_url"]).rstrip("/"),
                api_secret=str(raw["api_secret"]),
                token_key=bytes.fromhex(raw["token_key"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"the enrolment bundle is invalid ({exc}): ask the union for a new one"
            ) from None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


ROSTER_FILE = "roster.ucr"


def _delta_name(version: int) -> str:
    return f"roster-delta-{version:010d}.ucr"


def _delta_files(gen: Path) -> list[Path]:
    """The deltas applied to a generation's full roster, oldest first."""
    return sorted(gen.glob("roster-delta-*.ucr"))


def _map(path: Path) -> mmap.mmap:
    with open(path, "rb") as fh:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


class TerminalState:
    """Loads and installs the terminal's signed files."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.enrolment_path = data_dir / "enrolment.json"
        self.root_path = data_dir / "root.json"
        self.current_path = data_dir / "current"
        self.gens_path = data_dir / "gens"
        self.journal_path = data_dir / "journal.db"
        self.root: Root | None = None
        self.snapshot: Snapshot | None = None
        self.roster: Roster | None = None
        self.policy: Policy | None = None
        self.policy_data: bytes | None = None
        self._enrolment: Enrolment | None = None
        self._stamps: tuple[object, ...] = ()

    # -- enrolment and root -----------------------------------------------------------
    @property
    def enrolment(self) -> Enrolment:
        if self._enrolment is None:
            try:
                raw = json.loads(self.enrolment_path.read_bytes())
            except FileNotFoundError:
                raise NotEnrolledError(
                    f"this terminal is not enrolled (no {self.enrolment_path}): "
                    "run `unioncard terminal enrol BUNDLE`"
                ) from None
            except ValueError:
                raise ConfigError(f"{self.enrolment_path} is not valid JSON") from None
            self._enrolment = Enrolment.from_json(raw)
        return self._enrolment

    def enrol(self, bundle: bytes) -> Enrolment:
        """Install the union's bundle: pins its root metadata, keeps the secrets (0600)."""
        try:
            raw = json.loads(bundle)
            root_data = str(raw["root"]).encode()
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                "the enrolment bundle is not valid (no root metadata): ask the union for a new one"
            ) from None
        enrolment = Enrolment.from_json(raw)  # validate before writing anything
        root = load_pinned_root(root_data)
        atomic_write(self.root_path, root_data, mode=0o644)
        secrets = {k: v for k, v in raw.items() if k != "root"}
        atomic_write(self.enrolment_path, json.dumps(secrets, indent=2).encode(), mode=0o600)
        self._enrolment, self.root = enrolment, root
        return enrolment

    def trusted_root(self) -> Root:
        if self.root is None:
            try:
                self.root = load_pinned_root(self.root_path.read_bytes())
            except FileNotFoundError:
                self.enrolment  # noqa: B018 - says "not enrolled" when that is the cause
                raise ConfigError(f"{self.root_path} is missing: re-enrol the terminal") from None
        return self.root

    def update_root(self, data: bytes) -> Root:
        """Accept the next root version (one at a time) and install it atomically."""
        root = update_root(self.trusted_root(), data)
        atomic_write(self.root_path, data, mode=0o644)
        self.root = root
        return root

    # -- the installed generation --------------------------------------------------------
    def last_trusted_time(self) -> datetime | None:
        """The latest signed timestamp among everything installed."""
        times = [m.issued_at for m in (self.root, self.snapshot, self.policy) if m is not None]
        if self.roster is not None:
            times.append(self.roster.header.issued_at)
        return max(times) if times else None

    def clock_problem(self, now: datetime) -> str | None:
        """Why ``now`` cannot be trusted, or None."""
        last = self.last_trusted_time()
        if last is not None and now < last - CLOCK_TOLERANCE:
            return (
                f"the terminal's clock ({iso(now)}) is behind the last signed update "
                f"({iso(last)}): set the date and time"
            )
        return None

    def load(self) -> None:
        """Load the trusted root and the installed generation (expiry is judged later).

        A file that no longer verifies under the trusted root (its key was revoked
        by a root rotation) is left out, so the terminal fails closed until the
        next sync brings a re-signed one.
        """
        root = self.trusted_root()
        self._stamps = (_stamp(self.root_path), _stamp(self.current_path))
        self.snapshot = self.roster = self.policy = self.policy_data = None
        if not self.current_path.exists():
            return
        gen = self.current_path.resolve()
        merchant = self.enrolment.merchant_id
        snapshot = verify_snapshot(
            (gen / "snapshot.json").read_bytes(),
            root.trusted("snapshot"),
            root.threshold("snapshot"),
            merchant_id=merchant,
            installed=None,
            now=None,
        )
        self.snapshot = snapshot
        try:
            roster = verify_roster(
                _map(gen / ROSTER_FILE),
                root.trusted("roster"),
                now=None,
                threshold=root.threshold("roster"),
            )
            for delta in _delta_files(gen):
                roster = apply_delta(
                    roster,
                    _map(delta),
                    root.trusted("roster"),
                    now=None,
                    threshold=root.threshold("roster"),
                )
            snapshot.check_roster(roster.version, roster.header.body_sha256)
            self.roster = roster
        except SignatureError as exc:
            log.warning("installed roster no longer trusted: %s", exc)
        try:
            policy_data = (gen / "policy.json").read_bytes()
            policy = verify_policy(policy_data, root.trusted("policy"), merchant_id=merchant)
            snapshot.check_policy(policy_data, policy.version)
            self.policy, self.policy_data = policy, policy_data
        except SignatureError as exc:
            log.warning("installed policy no longer trusted: %s", exc)

    def refresh(self) -> None:
        """Re-load what another process (the nightly sync) has installed since."""
        if (_stamp(self.root_path), _stamp(self.current_path)) == self._stamps:
            return
        saved = (self.root, self.snapshot, self.roster, self.policy, self.policy_data)
        try:
            self.root = None
            self.load()
        except RefusedError as exc:  # keep serving what we had
            self.root, self.snapshot, self.roster, self.policy, self.policy_data = saved
            self._stamps = (_stamp(self.root_path), _stamp(self.current_path))
            log.warning("kept the loaded roster and policy: %s", exc)

    def check_snapshot(self, snapshot_data: bytes, now: datetime) -> Snapshot:
        """Verify a snapshot against what is installed, without installing it."""
        root = self.trusted_root()
        return verify_snapshot(
            snapshot_data,
            root.trusted("snapshot"),
            root.threshold("snapshot"),
            merchant_id=self.enrolment.merchant_id,
            installed=self.snapshot,
            now=now,
        )

    def install(
        self,
        snapshot_data: bytes,
        now: datetime,
        roster_data: bytes | Path | None = None,
        policy_data: bytes | None = None,
    ) -> Snapshot:
        """Verify a snapshot and the roster and policy it names; switch to them as one.

        ``roster_data`` may be a full roster or a delta from the installed one, as
        bytes or as a file in the data folder (the sync downloads large rosters to
        disk, so they never sit in the heap; a verified file is renamed into place).
        It (and ``policy_data``) may be None when the installed one is what the
        snapshot names. On any refusal nothing changes in the installed generation.
        """
        problem = self.clock_problem(now)
        if problem:
            raise ClockError(f"update refused: {problem}")
        root = self.trusted_root()
        if root.is_expired(now):
            raise TrustError(
                f"update refused: the union's root metadata expired at {iso(root.expires_at)}"
            )
        merchant = self.enrolment.merchant_id
        snap = verify_snapshot(
            snapshot_data,
            root.trusted("snapshot"),
            root.threshold("snapshot"),
            merchant_id=merchant,
            installed=self.snapshot,
            now=now,
        )
        installed_version = self.roster.version if self.roster is not None else 0
        roster_file: bytes | Path | None = None
        roster: Roster
        source = _map(roster_data) if isinstance(roster_data, Path) else roster_data
        delta = False
        if self.roster is not None and snap.roster_version == installed_version:
            roster = self.roster
        elif source is None:
            raise SnapshotError(
                f"update refused: snapshot v{snap.version} needs roster "
                f"v{snap.roster_version}, which was not supplied"
            )
        elif is_delta(source):
            if self.roster is None:
                raise SnapshotError("update refused: a delta needs an installed roster")
            roster = apply_delta(
                self.roster,
                source,
                root.trusted("roster"),
                now=now,
                threshold=root.threshold("roster"),
            )
            roster_file, delta = roster_data, True
        else:
            roster = verify_roster(
                source,
                root.trusted("roster"),
                now=now,
                installed_version=installed_version,
                threshold=root.threshold("roster"),
            )
            roster_file = roster_data
        snap.check_roster(roster.version, roster.header.body_sha256)
        installed_policy = self.policy.version if self.policy is not None else 0
        if self.policy is not None and snap.policy_version == installed_policy:
            policy, policy_bytes = self.policy, self.policy_data
        elif policy_data is None:
            raise SnapshotError(
                f"update refused: snapshot v{snap.version} needs policy "
                f"v{snap.policy_version}, which was not supplied"
            )
        else:
            policy = verify_policy(
                policy_data,
                root.trusted("policy"),
                merchant_id=merchant,
                installed_version=installed_policy,
            )
            policy_bytes = policy_data
        if policy_bytes is None:
            raise SnapshotError("update refused: the installed policy file is missing")
        snap.check_policy(policy_bytes, policy.version)
        name = _delta_name(roster.version) if delta else ROSTER_FILE
        gen = self._write_generation(snap, roster_file, name, policy_bytes)
        if isinstance(roster_file, bytes):  # serve from the page cache, not the heap
            roster = roster.remap(_map(gen / name))
        self._switch(gen)
        self.snapshot, self.policy, self.policy_data = snap, policy, policy_bytes
        self.roster = roster
        self._stamps = (_stamp(self.root_path), _stamp(self.current_path))
        return snap

    def _write_generation(
        self, snap: Snapshot, roster_file: bytes | Path | None, name: str, policy_bytes: bytes
    ) -> Path:
        """Write generation ``snap.version``: the roster files it keeps from the
        installed one (hard links), ``roster_file`` (if any) as ``name``, the policy and
        the snapshot; everything fsynced before the caller switches to it."""
        gen = self.gens_path / f"{snap.version}"
        if gen.exists():  # left over from an install that crashed before the switch
            shutil.rmtree(gen)
        gen.mkdir(parents=True)
        old = self.current_path.resolve() if self.current_path.exists() else None
        if roster_file is None or name != ROSTER_FILE:  # keep the installed roster files
            if old is None:
                raise SnapshotError("update refused: no installed roster to keep")
            for kept in [old / ROSTER_FILE, *_delta_files(old)]:
                os.link(kept, gen / kept.name)
        if isinstance(roster_file, Path):  # verified in place: make it durable, move it
            with open(roster_file, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(roster_file, 0o644)
            os.replace(roster_file, gen / name)
        elif roster_file is not None:
            atomic_write(gen / name, roster_file, mode=0o644)
        atomic_write(gen / "policy.json", policy_bytes, mode=0o644)
        atomic_write(gen / "snapshot.json", snap.data, mode=0o644)
        fsync_dir(gen)
        fsync_dir(self.gens_path)
        return gen

    def _switch(self, gen: Path) -> None:
        """Point ``current`` at ``gen`` atomically, then drop older generations."""
        previous = self.current_path.resolve() if self.current_path.exists() else None
        link = self.dir / ".current.tmp"
        link.unlink(missing_ok=True)
        os.symlink(gen.relative_to(self.dir), link)
        os.replace(link, self.current_path)
        fsync_dir(self.dir)
        for old in self.gens_path.iterdir():
            if old != gen and old != previous:
                shutil.rmtree(old, ignore_errors=True)
