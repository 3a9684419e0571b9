"""What a terminal serves from, and the pure decisions that make a new one.

A :class:`Generation` is one trusted root and the snapshot, roster and policy
installed together. It never changes: an install, a root update or a reload
makes a new one, and the terminal swaps one reference. A checkout takes the
generation once, at its start, and prices, looks up and journals from that one
only, so one sale never mixes two installs.

The decisions here follow python-tuf's ``TrustedMetadataSet``: they take bytes
(or a buffer the caller mapped) and the current generation, check everything,
and return the next generation or raise; the files, the memory maps and the
atomic switch are the caller's (``terminal.state``). Nothing here reads a file
or the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from pact.cards import DEFAULT_SCHEME, TokenScheme
from pact.errors import ClockError, SignatureError, SnapshotError, TrustError
from pact.policy import Policy, verify_policy
from pact.roster import Buffer, Roster, apply_delta, is_delta, verify_roster
from pact.snapshot import Snapshot, verify_snapshot
from pact.text import N_, Msg
from pact.timefmt import iso
from pact.trust import Root, update_root

CLOCK_TOLERANCE = timedelta(minutes=5)  # a wall clock this far behind signed time is refused
# ... or this far behind the terminal's newest journal entry (NTP slews small
# corrections; it does not step back by minutes)
ENTRY_TOLERANCE = timedelta(minutes=2)


@dataclass(frozen=True)
class Generation:
    """The root, snapshot, roster and policy a terminal serves from (frozen).

    ``snapshot``, ``roster`` and ``policy`` are None before the first install, and
    when the installed one no longer verifies under the trusted root (its key was
    revoked): the terminal then fails closed, and ``dropped`` says why.
    """

    root: Root
    snapshot: Snapshot | None = None
    roster: Roster | None = None
    policy: Policy | None = None
    policy_data: bytes | None = None  # the policy file as signed (the snapshot pins it)
    dropped: tuple[str, ...] = ()  # why installed files were left out (not in service)

    @property
    def token_scheme(self) -> TokenScheme:
        """How a tap becomes a token: as the installed roster's were made."""
        return self.roster.header.token_scheme if self.roster is not None else DEFAULT_SCHEME

    @property
    def roster_version(self) -> int:
        return self.roster.version if self.roster is not None else 0

    @property
    def policy_version(self) -> int:
        return self.policy.version if self.policy is not None else 0

    def last_trusted_time(self) -> datetime | None:
        """The latest signed timestamp among everything in this generation."""
        times = [m.issued_at for m in (self.root, self.snapshot, self.policy) if m is not None]
        if self.roster is not None:
            times.append(self.roster.header.issued_at)
        return max(times) if times else None

    def clock_problem(self, now: datetime) -> Msg | None:
        """Why ``now`` cannot be trusted (it is behind signed time), or None."""
        last = self.last_trusted_time()
        if last is not None and now < last - CLOCK_TOLERANCE:
            return Msg.of(
                N_(
                    "the terminal's clock (%(now)s) is behind the last signed update "
                    "(%(last)s): set the date and time"
                ),
                now=iso(now),
                last=iso(last),
            )
        return None


@dataclass(frozen=True)
class Loaded:
    """A generation re-read from disk, and why any part of it was left out."""

    generation: Generation
    dropped: tuple[str, ...] = ()


def load_generation(
    root: Root,
    merchant_id: str,
    snapshot_data: bytes,
    roster_files: Sequence[Buffer],
    policy_data: bytes,
) -> Loaded:
    """Re-verify an installed generation (expiry is judged later, per sale).

    ``roster_files`` is the full roster then each delta applied since, oldest
    first. A snapshot, roster or policy that no longer verifies under ``root`` (its
    key was revoked by a root rotation) is left out, with the reason in
    ``dropped``, so the terminal fails closed until the next sync brings a
    re-signed one. Without its snapshot nothing is installed: the roster and the
    policy are served only as the pair a trusted snapshot names, and the sync,
    which must still run to bring the new one, fetches them again.
    """
    try:
        snapshot = verify_snapshot(
            snapshot_data,
            root.trusted("snapshot"),
            root.threshold("snapshot"),
            merchant_id=merchant_id,
            installed=None,
            now=None,
        )
    except SignatureError as exc:
        reason = f"installed snapshot no longer trusted: {exc}"
        return Loaded(Generation(root, dropped=(reason,)), (reason,))
    dropped: list[str] = []
    roster: Roster | None = None
    policy: Policy | None = None
    kept_policy: bytes | None = None
    keys, threshold = root.trusted("roster"), root.threshold("roster")
    try:
        if not roster_files:
            raise SnapshotError("the installed generation has no roster file")
        loaded = verify_roster(roster_files[0], keys, now=None, threshold=threshold)
        for delta in roster_files[1:]:
            loaded = apply_delta(loaded, delta, keys, now=None, threshold=threshold)
        snapshot.check_roster(loaded.version, loaded.header.body_sha256)
        roster = loaded
    except SignatureError as exc:
        dropped.append(f"installed roster no longer trusted: {exc}")
    try:
        found = policy_under(root, policy_data, merchant_id)
        snapshot.check_policy(policy_data, found.version)
        policy, kept_policy = found, policy_data
    except SignatureError as exc:
        dropped.append(f"installed policy no longer trusted: {exc}")
    generation = Generation(root, snapshot, roster, policy, kept_policy, tuple(dropped))
    return Loaded(generation, tuple(dropped))


def policy_under(root: Root, data: bytes, merchant_id: str, installed_version: int = 0) -> Policy:
    """A policy verified under ``root``: signed by the policy role's threshold of its
    keys (as a roster is by the roster role's), for this merchant, newer than
    ``installed_version``. PolicyError if not."""
    return verify_policy(
        data,
        root.trusted("policy"),
        merchant_id=merchant_id,
        installed_version=installed_version,
        threshold=root.threshold("policy"),
    )


def with_root(current: Generation, data: bytes) -> Generation:
    """Accept the next root version (one at a time, TUF 5.3.4-5.3.6) into ``current``."""
    return replace(current, root=update_root(current.root, data))


def check_snapshot(
    current: Generation, merchant_id: str, snapshot_data: bytes, now: datetime
) -> Snapshot:
    """Verify a snapshot against ``current`` (newer, not expired, this merchant's)."""
    root = current.root
    return verify_snapshot(
        snapshot_data,
        root.trusted("snapshot"),
        root.threshold("snapshot"),
        merchant_id=merchant_id,
        installed=current.snapshot,
        now=now,
    )


@dataclass(frozen=True)
class Install:
    """The decision: the next generation, and which roster file it adds.

    ``roster_file`` is ``"full"`` (a new one-layer-stack file), ``"delta"`` (one
    more layer on the installed files) or None (the installed roster is kept).
    """

    generation: Generation
    roster_file: str | None


def decide_install(
    current: Generation,
    merchant_id: str,
    snapshot_data: bytes,
    now: datetime,
    roster_data: Buffer | None = None,
    policy_data: bytes | None = None,
) -> Install:
    """Verify a snapshot and the roster and policy it names against ``current``.

    Checks, in order: the clock is not behind signed time; the root has not
    expired; the snapshot (signatures, merchant, newer, not expired); the roster
    (a delta from the installed one, or a full one: signatures, newer, not
    expired, layer digests) and the policy (signatures, merchant, newer); that the
    snapshot names exactly those two. ``roster_data`` and ``policy_data`` may be
    None when the installed one is what the snapshot names. Raises a
    :class:`pact.errors.RefusedError`; ``current`` is never changed.
    """
    problem = current.clock_problem(now)
    if problem:
        raise ClockError(N_("update refused: %(problem)s"), problem=problem)
    root = current.root
    if root.is_expired(now):
        raise TrustError(
            f"update refused: the union's root metadata expired at {iso(root.expires_at)}"
        )
    snap = check_snapshot(current, merchant_id, snapshot_data, now)
    roster: Roster
    roster_file: str | None = None
    keys, threshold = root.trusted("roster"), root.threshold("roster")
    if current.roster is not None and snap.roster_version == current.roster_version:
        roster = current.roster
    elif roster_data is None:
        raise SnapshotError(
            f"update refused: snapshot v{snap.version} needs roster "
            f"v{snap.roster_version}, which was not supplied"
        )
    elif is_delta(roster_data):
        if current.roster is None:
            raise SnapshotError("update refused: a delta needs an installed roster")
        roster = apply_delta(current.roster, roster_data, keys, now=now, threshold=threshold)
        roster_file = "delta"
    else:
        roster = verify_roster(
            roster_data,
            keys,
            now=now,
            installed_version=current.roster_version,
            threshold=threshold,
        )
        roster_file = "full"
    snap.check_roster(roster.version, roster.header.body_sha256)
    if current.policy is not None and snap.policy_version == current.policy_version:
        policy, policy_bytes = current.policy, current.policy_data
    elif policy_data is None:
        raise SnapshotError(
            f"update refused: snapshot v{snap.version} needs policy "
            f"v{snap.policy_version}, which was not supplied"
        )
    else:
        policy = policy_under(root, policy_data, merchant_id, current.policy_version)
        policy_bytes = policy_data
    if policy_bytes is None:
        raise SnapshotError("update refused: the installed policy file is missing")
    snap.check_policy(policy_bytes, policy.version)
    return Install(Generation(root, snap, roster, policy, policy_bytes), roster_file)


@dataclass(frozen=True)
class EntryTime:
    """When the terminal journals an entry, from what its wall clock reads.

    The **last trusted time** is the later of the newest time the union signed in
    the generation in service (:meth:`Generation.last_trusted_time`: the root,
    snapshot, roster and policy issue times) and the time of the terminal's newest
    journal entry (a time it has already signed into its chain). Every entry is
    journaled at the clock's reading or, when the clock reads earlier, at the last
    trusted time (``at``): the times in the chain never go backwards and no entry
    is dated before what the union or the terminal already vouched for. A sale is
    also *priced* at ``at``, so an auditor who replays it at its journaled time gets
    the same discount, and a clock set back cannot bring back a roster or policy
    that had expired, an earlier offline stretch, an earlier quota period or an
    earlier time window.

    A clock more than :data:`CLOCK_TOLERANCE` behind signed time, or more than
    :data:`ENTRY_TOLERANCE` behind the newest entry, is known to be wrong, and then
    no one knows how much time has really passed (a Pi that lost its time over a
    power cut of a week comes back near the time it last saved): ``problem`` says
    why, and members get no discount until the time is set (fail closed). The
    terminal journals the jump as a ``clock-jump`` event (terminal.service).

    What this cannot see: a clock set back to a moment after the newest entry
    (nothing trusted is later), and a clock that runs ahead (nothing trusted bounds
    time from above; the monotonic clock catches a jump while the daemon runs, and
    an entry dated ahead raises the last trusted time until the clock passes it).
    """

    clock: datetime  # what the wall clock read
    at: datetime  # the entry's time: the clock, or the last trusted time if later
    last: datetime | None  # the last trusted time (None: nothing signed, no entry)
    newest_entry: datetime | None  # the newest journal entry's time
    problem: Msg | None  # why the clock is not trusted (no member discounts), or None

    @property
    def behind(self) -> timedelta:
        """How far the clock reads behind the last trusted time (zero when it does not)."""
        return self.at - self.clock


def entry_time(
    generation: Generation,
    now: datetime,
    newest_entry: datetime | None,
    tolerance: timedelta = ENTRY_TOLERANCE,
) -> EntryTime:
    """The time to journal an entry at, when the clock reads ``now`` and the newest
    entry is ``newest_entry`` (:class:`EntryTime`)."""
    signed = generation.last_trusted_time()
    last = max((t for t in (signed, newest_entry) if t is not None), default=None)
    at = now if last is None or now >= last else last
    problem = generation.clock_problem(now)
    if problem is None and newest_entry is not None and now < newest_entry - tolerance:
        problem = Msg.of(
            N_(
                "the terminal's clock (%(now)s) is behind its newest journal entry "
                "(%(last)s): set the date and time"
            ),
            now=iso(now),
            last=iso(newest_entry),
        )
    return EntryTime(now, at, last, newest_entry, problem)
