"""The terminal's files: enrolment, trusted root, and the installed generation (an adapter).

Layout under the terminal's data folder::

    enrolment.json    terminal id, merchant id, central URL, API secret, token key (0600)
    ca.pem            the union's CA certificate from the bundle, if any (0644): the only
                      one the sync trusts for the central service's TLS certificate
    root.json         the trusted root metadata (pact.trust), walked forward by sync
    current -> gens/N the installed generation: a snapshot and the roster and policy
                      it names, switched as one by renaming a symbolic link
    gens/N/snapshot.json, policy.json,
           roster.ucr             the full roster (all its layers)
           roster-delta-V.ucr     each delta applied since, one layer each (V: 10 digits)
    journal.db        the sales journal (terminal.journal)
    .update.lock      held (flock) by whoever changes the files above: a sync, an install

What is served is one frozen ``pact.generation.Generation``: the pure decisions
there verify everything before it is used; this module does the file work
(write, fsync, rename, fsync the folder; memory maps) and then swaps one
reference, so a reader never sees a half-loaded state. The last good
generation stays in service after any refusal. The roster is memory-mapped, not
read into the heap. A generation hard-links the roster files it shares with the
one before, so applying a delta writes only the delta.

One process at a time changes the installed files (:meth:`TerminalState.updating`):
the nightly sync, a sync by hand and the daemon's own sync may overlap, and each
decides from what it loaded; the second waits, then decides again from what the
first installed (or says a sync is already running).
"""

from __future__ import annotations

import fcntl
import json
import logging
import mmap
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pact.device import KeySigner, public_key_hex
from pact.errors import RefusedError, RosterError, SnapshotError, TrustError, UsageError
from pact.files import atomic_write, fsync_dir
from pact.generation import (
    Generation,
    Loaded,
    check_snapshot,
    decide_install,
    load_generation,
    with_root,
)
from pact.snapshot import Snapshot
from pact.text import N_
from pact.trust import Root, load_pinned_root, pin_again
from pact.usage import SharedUsage, verify_usage
from sync.client import central_url_problem
from terminal.devicekey import create_device_key, load_signer, readable_by_others
from terminal.disk import UPDATE_REFUSED, check_space, fail_full, is_disk_full
from terminal.errors import ConfigError, NotEnrolledError, TerminalError
from terminal.journal import Journal

log = logging.getLogger(__name__)

UPDATE_LOCK = ".update.lock"  # TerminalState.updating
UPDATE_WAIT = 60.0  # seconds a sync or an install waits for another one to end
LOCK_POLL = 0.1  # seconds between tries (flock cannot wait with a timeout)


class SyncRunningError(TerminalError):
    """Another process syncs or installs an update in this data folder, and did not end
    in :data:`UPDATE_WAIT` seconds. Nothing was done and nothing is lost: as a sync that
    could not reach the union (exit 6), it is tried again later (the timer hourly)."""

    exit_code = 6


# the data folder's files that hold a secret (0600), and what each holds
SECRET_FILES = (
    ("enrolment.json", "the enrolment file (API secret, token key)"),
    ("device.pem", "the device key"),
    ("api.token", "the till token's digest"),
    ("supervisor.token", "the supervisor token's digest"),
    ("supervisor.pin", "the supervisor PIN's hash"),
    ("web.secret", "the cashier page's cookie key"),
)


@dataclass(frozen=True)
class Enrolment:
    terminal_id: str
    merchant_id: str
    central_url: str
    api_secret: str
    token_key: bytes
    ca_cert: Path | None = None  # the union's CA certificate (ca.pem), when the bundle had one

    @classmethod
    def from_json(cls, raw: Any) -> Enrolment:
        if not isinstance(raw, dict):
            raise ConfigError(
                N_("the enrolment bundle is not a JSON object: ask the union for a new one")
            )
        missing = [name for name in BUNDLE_FIELDS if name not in raw]
        if missing:
            raise ConfigError(
                N_("the enrolment bundle has no %(field)s: ask the union for a new one"),
                field=missing[0],
            )
        try:
            return cls(
                terminal_id=str(raw["terminal_id"]),
                merchant_id=str(raw["merchant_id"]),
                central_url=str(raw["central_url"]).rstrip("/"),
                api_secret=str(raw["api_secret"]),
                token_key=bytes.fromhex(raw["token_key"]),
            )
        except (TypeError, ValueError, AttributeError):  # token_key: not hex
            raise ConfigError(
                N_(
                    "the enrolment bundle's token_key is not hex digits: ask the union for a "
                    "new one"
                )
            ) from None


BUNDLE_FIELDS = ("terminal_id", "merchant_id", "central_url", "api_secret", "token_key")


def _ca_certificate(value: Any) -> bytes | None:
    """The bundle's ``ca_cert``: PEM certificates (None when the bundle has none)."""
    if value is None:
        return None
    try:
        certs = x509.load_pem_x509_certificates(str(value).encode())
    except ValueError as exc:
        raise ConfigError(
            N_(
                "the enrolment bundle's CA certificate is not valid (%(problem)s): "
                "ask the union for a new bundle"
            ),
            problem=str(exc),
        ) from None
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


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


def _take_lock(path: Path, wait: float) -> int | None:
    """An open descriptor of ``path`` holding its exclusive flock, taken within ``wait``
    seconds, or None when another process held it all that time. The lock goes with the
    descriptor: a process that dies, however, releases it."""
    # read-only: whoever made it; not through a symbolic link planted in its place
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(LOCK_POLL)
    except BaseException:
        os.close(fd)
        raise


def _map(path: Path) -> mmap.mmap:
    """A roster file, memory-mapped. An empty one (a download that brought nothing) is
    refused here: mmap cannot map nothing, and no roster is empty."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise RosterError(N_("roster refused: the file %(file)s is empty"), file=str(path))
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


class TerminalState:
    """The terminal's files, and the generation it serves from (:attr:`current`)."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.enrolment_path = data_dir / "enrolment.json"
        self.ca_path = data_dir / "ca.pem"
        self.root_path = data_dir / "root.json"
        self.current_path = data_dir / "current"
        self.gens_path = data_dir / "gens"
        self.journal_path = data_dir / "journal.db"
        self.roster_download = data_dir / ".roster-download.tmp"
        self.usage_path = data_dir / "usage.json"  # pact.usage: the other tills' quota use
        self._usage: tuple[object, SharedUsage | None] | None = None
        self._current: Generation | None = None
        self._enrolment: Enrolment | None = None
        self._stamps: tuple[object, ...] = ()
        self._lock = threading.RLock()  # one load, refresh or install at a time
        self._updating = threading.RLock()  # this process's hold of the update lock
        self._update_fd: int | None = None  # the update lock's descriptor, while held

    @classmethod
    def open(cls, data_dir: Path) -> TerminalState:
        """The state in an existing data folder (nothing is created when it is missing)."""
        if not data_dir.is_dir():
            raise NotEnrolledError(
                N_(
                    "not enrolled: the terminal's data folder %(folder)s does not exist (give the "
                    "right --data or data_dir, or enrol there with "
                    "`unioncard terminal enrol BUNDLE`)"
                ),
                folder=str(data_dir),
            )
        return cls(data_dir)

    # -- one update at a time ---------------------------------------------------------
    @contextmanager
    def updating(self, wait: float | None = None) -> Iterator[None]:
        """Hold the data folder's update lock (:data:`UPDATE_LOCK`, a flock) for a whole
        sync or install: what it changes (the root, the generations, the usage file, the
        roster's download file, the sync record) one process at a time. Waits up to
        ``wait`` seconds (default :data:`UPDATE_WAIT`) for another holder, then raises
        :class:`SyncRunningError`. Re-entrant within a thread.

        Once taken, what another process installed since this one loaded is loaded: a
        decision from a stale view would install a generation again, or a delta on a
        roster no longer in service.
        """
        wait = UPDATE_WAIT if wait is None else wait
        if not self._updating.acquire(timeout=wait):  # another thread of this process
            raise SyncRunningError(N_("a sync is already running"))
        try:
            if self._update_fd is not None:  # held by this thread already
                yield
                return
            fd = _take_lock(self.dir / UPDATE_LOCK, wait)
            if fd is None:
                raise SyncRunningError(N_("a sync is already running"))
            self._update_fd = fd
            try:
                with self._lock:
                    if self._current is not None and self._read_stamps() != self._stamps:
                        self.load()
                yield
            finally:
                self._update_fd = None
                os.close(fd)
        finally:
            self._updating.release()

    # -- enrolment and root -----------------------------------------------------------
    @property
    def enrolment(self) -> Enrolment:
        if self._enrolment is None:
            try:
                raw = json.loads(self.enrolment_path.read_bytes())
            except FileNotFoundError:
                raise NotEnrolledError(
                    N_(
                        "this terminal is not enrolled (no %(file)s): "
                        "run `unioncard terminal enrol BUNDLE`"
                    ),
                    file=str(self.enrolment_path),
                ) from None
            except ValueError:
                raise ConfigError(
                    N_("%(file)s is not valid JSON"), file=str(self.enrolment_path)
                ) from None
            enrolment = Enrolment.from_json(raw)
            if self.ca_path.is_file():
                enrolment = replace(enrolment, ca_cert=self.ca_path)
            self._enrolment = enrolment
        return self._enrolment

    def _refuse_another_identity(self, terminal_id: str) -> None:
        """A terminal enrolled as another id, with entries in its journal, is not
        enrolled again as ``terminal_id``: its journal's entries name the old id and
        chain on from them, so the union would refuse every upload ("belongs to another
        terminal") and the sales not yet uploaded would be stranded. (The same id again,
        e.g. a new bundle for it, is fine.)"""
        if not self.enrolment_path.is_file() or not self.journal_path.is_file():
            return
        try:
            held = self.enrolment.terminal_id
        except ConfigError:
            return  # an enrolment that cannot be read is replaced
        if held == terminal_id:
            return
        journal = Journal.existing(self.journal_path)
        try:
            entries, pending = journal.counts()
        finally:
            journal.close()
        if entries:
            raise ConfigError(
                N_(
                    "this terminal is enrolled as %(held)s and its journal holds %(entries)s "
                    "entries (%(pending)s not yet uploaded): enrolling it as %(new)s would "
                    "strand them; sync, then `unioncard terminal decommission`, then enrol"
                ),
                held=held,
                entries=entries,
                pending=pending,
                new=terminal_id,
            )

    def enrol(self, bundle: bytes) -> Enrolment:
        """Install the union's bundle: pins its root metadata, keeps the secrets (0600)
        and the union's CA certificate (refused: a central URL the sync may not use,
        sync.client.central_url_problem; a root older than the one pinned,
        pact.trust.pin_again)."""
        try:
            raw = json.loads(bundle)
        except (ValueError, RecursionError):  # (not UTF-8 is a ValueError too)
            raise ConfigError(
                N_("the enrolment bundle is not JSON: ask the union for a new one")
            ) from None
        try:
            root_data = str(raw["root"]).encode()
        except (KeyError, TypeError):
            raise ConfigError(
                N_(
                    "the enrolment bundle is not valid (no root metadata): "
                    "ask the union for a new one"
                )
            ) from None
        enrolment = Enrolment.from_json(raw)  # validate before writing anything
        ca_pem = _ca_certificate(raw.get("ca_cert"))
        problem = central_url_problem(enrolment.central_url, ca_pem is not None)
        if problem is not None:
            raise ConfigError(N_("the enrolment bundle is refused: %(problem)s"), problem=problem)
        root = load_pinned_root(root_data)
        self._refuse_another_identity(enrolment.terminal_id)
        self.dir.mkdir(parents=True, exist_ok=True)  # (the update lock's file is there)
        with self.updating(), self._lock:
            held = self._held_root()
            if held is not None:  # enrolled again: never back to keys a newer root revoked
                root = pin_again(held, root_data)
            atomic_write(self.root_path, root_data, mode=0o644)
            if ca_pem is not None:
                atomic_write(self.ca_path, ca_pem, mode=0o644)  # public: a certificate
                enrolment = replace(enrolment, ca_cert=self.ca_path)
            else:
                self.ca_path.unlink(missing_ok=True)  # none of an earlier enrolment's
            secrets = {k: v for k, v in raw.items() if k not in ("root", "ca_cert")}
            atomic_write(self.enrolment_path, json.dumps(secrets, indent=2).encode(), mode=0o600)
            create_device_key(self.dir)  # the journal's signing key, 0600; kept on re-enrol
            Journal(self.journal_path).close()  # the sales journal starts here, empty
            self._enrolment, self._current = enrolment, Generation(root)
        return enrolment

    def check_secrets(self) -> None:
        """Refuse (ConfigError, one line naming the file and the ``chmod 600`` to run)
        when a file holding a secret is readable by anyone but its owner: the
        enrolment (API secret, token key), the device key, the till's and the
        supervisor's token digests, the supervisor's PIN hash, the page's cookie key."""
        for name, _ in SECRET_FILES:
            path = self.dir / name
            mode = readable_by_others(path)
            if mode is not None:
                raise ConfigError(
                    N_(
                        "the secret file %(file)s is readable by others (mode %(mode)s): run "
                        "`chmod 600 %(file)s`, and ask the union whether its secrets must be "
                        "replaced"
                    ),
                    file=str(path),
                    mode=mode,
                )

    def signer(self) -> KeySigner:
        """The device key the journal signs with (refused when readable by others)."""
        return load_signer(self.dir)

    def device_public_key(self) -> str:
        """The public half of the key the journal signs with, hex (registered with the
        union at each sync)."""
        return public_key_hex(self.signer().public_key())

    def _held_root(self) -> Root | None:
        """The root pinned now, None when there is none (or it is damaged: replaced)."""
        try:
            return load_pinned_root(self.root_path.read_bytes())
        except (FileNotFoundError, TrustError):
            return None

    def _read_root(self) -> Root:
        try:
            return load_pinned_root(self.root_path.read_bytes())
        except FileNotFoundError:
            self.enrolment  # noqa: B018 - says "not enrolled" when that is the cause
            raise ConfigError(
                N_("%(file)s is missing: re-enrol the terminal"), file=str(self.root_path)
            ) from None
        except TrustError as exc:  # damaged: its text, not its source, says where
            raise ConfigError(
                N_(
                    "%(file)s, the union's root the terminal pins, is refused (%(problem)s): "
                    "restore it from the backup or re-enrol the terminal"
                ),
                file=str(self.root_path),
                problem=str(exc),
            ) from None

    @property
    def current(self) -> Generation:
        """The generation in service (loaded on first use). Take it once per task."""
        current = self._current
        if current is None:
            with self._lock:
                if self._current is None:
                    self.load()
                current = self._current
        assert current is not None  # load() always sets it
        return current

    def update_root(self, data: bytes) -> Root:
        """Accept the next root version (one at a time) and install it atomically.

        The installed files are then checked again under the new root: a snapshot,
        roster or policy signed by a key it revoked leaves service at once (fail closed
        until the re-signed one arrives), here and in every process that reloads.
        """
        with self.updating(), self._lock:
            with_root(self.current, data)  # TrustError unless it is the next version
            atomic_write(self.root_path, data, mode=0o644)
            # a file the new root no longer trusts is what the sync replaces next: said at
            # info here (a warning on stderr during a sync that then installs the
            # re-signed one read as a refusal); the sync reports one it cannot replace
            self.load(dropped_at=logging.INFO)
            return self.current.root

    # -- the installed generation --------------------------------------------------------
    def _read_stamps(self) -> tuple[object, ...]:
        return (_stamp(self.root_path), _stamp(self.current_path))

    def load(self, dropped_at: int = logging.WARNING) -> None:
        """Load the trusted root and the installed generation, and put them in service.

        A snapshot, roster or policy that no longer verifies under the trusted root
        (its key was revoked by a root rotation) is left out (pact.generation.
        load_generation), and so is a generation whose files cannot be read: the
        terminal fails closed, with the reason in ``current.dropped``, while the sync
        still runs and installs the union's update (it must not fail on what it
        replaces).
        """
        with self._lock:
            stamps = self._read_stamps()
            root = self._read_root()
            if not self.current_path.exists():
                self._current, self._stamps = Generation(root), stamps
                return
            merchant_id = self.enrolment.merchant_id
            gen = self.current_path.resolve()
            try:
                loaded = load_generation(
                    root,
                    merchant_id,
                    (gen / "snapshot.json").read_bytes(),
                    [_map(gen / ROSTER_FILE), *(_map(delta) for delta in _delta_files(gen))],
                    (gen / "policy.json").read_bytes(),
                )
            except (OSError, RosterError) as exc:  # a file missing or empty; a disk error
                reason = f"installed files in {gen} cannot be read: {exc}"
                loaded = Loaded(Generation(root, dropped=(reason,)), (reason,))
            for reason in loaded.dropped:
                log.log(dropped_at, "%s", reason)
            self._current, self._stamps = loaded.generation, stamps

    def refresh(self) -> None:
        """Put in service what another process (the nightly sync) has installed since.

        The generation in service is replaced in one step, never emptied first: a
        reader in another thread sees the old generation or the new one.
        """
        with self._lock:
            if self._current is not None and self._read_stamps() == self._stamps:
                return
            try:
                self.load()
            except RefusedError as exc:  # keep serving what we had
                self._stamps = self._read_stamps()
                log.warning("kept the loaded roster and policy: %s", exc)

    def _verify_usage(
        self, data: bytes, now: datetime | None, kept: SharedUsage | None = None
    ) -> SharedUsage:
        root = self.current.root
        enrolment = self.enrolment
        return verify_usage(
            data,
            root.trusted("snapshot"),
            root.threshold("snapshot"),
            merchant_id=enrolment.merchant_id,
            terminal_id=enrolment.terminal_id,
            now=now,
            kept=kept,
        )

    def install_usage(self, data: bytes, now: datetime) -> SharedUsage:
        """Check the union's usage file (signed by the snapshot role, for this terminal,
        not expired, not issued before the one kept) and keep it (written atomically,
        0600). UsageError if refused: the one kept stays."""
        with self.updating(), self._lock:
            # the kept one is the floor; one the trusted root no longer vouches for is none
            # (and is what this replaces: said at info, as a file dropped during a sync)
            usage = self._verify_usage(data, now, kept=self._kept_usage(logging.INFO))
            atomic_write(self.usage_path, data, mode=0o600)
            self._usage = ((_stamp(self.usage_path), self.current.root.version), usage)
            return usage

    def shared_usage(self) -> SharedUsage | None:
        """The usage file kept (re-read when another process replaced it), None if there
        is none or it no longer verifies (its key was revoked). Its expiry is judged
        per sale (SharedUsage.lookup)."""
        return self._kept_usage(logging.WARNING)

    def _kept_usage(self, refused_at: int) -> SharedUsage | None:
        if _stamp(self.usage_path) is None:
            return None
        with self._lock:
            # checked again under a new root too: one whose key it revoked leaves at once
            stamp = (_stamp(self.usage_path), self.current.root.version)
            cached = self._usage
            if cached is not None and cached[0] == stamp:
                return cached[1]
            try:
                usage: SharedUsage | None = self._verify_usage(self.usage_path.read_bytes(), None)
            except (UsageError, OSError) as exc:
                log.log(refused_at, "the usage file is not used: %s", exc)
                usage = None
            self._usage = (stamp, usage)
            return usage

    def check_snapshot(self, snapshot_data: bytes, now: datetime) -> Snapshot:
        """Verify a snapshot against what is installed, without installing it."""
        return check_snapshot(self.current, self.enrolment.merchant_id, snapshot_data, now)

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
        snapshot names. On any refusal nothing changes in the installed generation; a
        full disk is refused (DiskFullError) before the sales' reserve is touched.
        """
        check_space(self.dir, UPDATE_REFUSED)
        with self.updating(), self._lock:
            source = _map(roster_data) if isinstance(roster_data, Path) else roster_data
            decision = decide_install(
                self.current, self.enrolment.merchant_id, snapshot_data, now, source, policy_data
            )
            new = decision.generation
            snapshot = new.snapshot
            if snapshot is None or new.roster is None or new.policy_data is None:
                raise SnapshotError(N_("update refused: the new generation is incomplete"))
            installed = self.current.snapshot
            if installed is not None and snapshot.version == installed.version:
                # the very snapshot in service (verify_snapshot refuses another of its
                # version): nothing to write; its folder is the one being served
                return snapshot
            kind = decision.roster_file
            name = _delta_name(new.roster.version) if kind == "delta" else ROSTER_FILE
            roster_file = roster_data if kind is not None else None
            gen = self._new_folder(snapshot.version)
            try:
                self._write_generation(gen, snapshot, roster_file, name, new.policy_data)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                shutil.rmtree(gen, ignore_errors=True)
                fail_full(self.dir, UPDATE_REFUSED)
            if isinstance(roster_file, bytes):  # serve from the page cache, not the heap
                new = replace(new, roster=new.roster.remap(_map(gen / name)))
            self._switch(gen)
            self._current, self._stamps = new, self._read_stamps()
            return snapshot

    def _new_folder(self, version: int) -> Path:
        """Where generation ``version`` is written: ``gens/N``, or ``gens/N.K`` when
        ``gens/N`` is the folder ``current`` points to. That one is never emptied: it
        is not in service then (its snapshot, which the trusted root no longer vouches
        for, is replaced by the union's new one of the same version), but it is what
        every process loads until the switch."""
        live = self.current_path.resolve() if self.current_path.is_symlink() else None
        gen, again = self.gens_path / f"{version}", 0
        while gen == live:
            again += 1
            gen = self.gens_path / f"{version}.{again}"
        return gen

    def _write_generation(
        self,
        gen: Path,
        snap: Snapshot,
        roster_file: bytes | Path | None,
        name: str,
        policy_bytes: bytes,
    ) -> None:
        """Write generation ``snap.version`` in ``gen`` (:meth:`_new_folder`): the roster
        files it keeps from the installed one (hard links), ``roster_file`` (if any) as
        ``name``, the policy and the snapshot; everything fsynced before the caller
        switches to it."""
        if gen.exists():  # left over from an install that crashed before the switch
            shutil.rmtree(gen)
        gen.mkdir(parents=True)
        old = self.current_path.resolve() if self.current_path.exists() else None
        if roster_file is None or name != ROSTER_FILE:  # keep the installed roster files
            if old is None:
                raise SnapshotError(N_("update refused: no installed roster to keep"))
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
