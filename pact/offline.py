"""The terminal's offline limits (pure): how long, and with how much not yet uploaded,
it may go on giving discounts without a successful sync.

Counted from the terminal's **last successful sync** (before its first, from the
issue time of the union's snapshot it installed), with the union's defaults unless
the merchant's signed policy sets others (terms ``offline_warn_hours``,
``offline_stop_hours``, ``pending_cap``; docs/protocol.md):

- ``warn``: after 24 hours the cashier page and the status warn;
- ``stop``: after 72 hours no member gets a discount (the sale goes on at full
  price, with the reason);
- ``cap``: with 5,000 entries or more waiting for upload, likewise, until a sync
  empties the queue.

Nothing already journaled is dropped: the limits only withhold discounts from new
sales. Each limit, when first reached after a successful sync, is journaled once as
an ``offline-limit`` event (:func:`limit_event`); the terminal remembers which
(:func:`noted_limits`). Nothing here reads a clock or a file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pact.policy import OFFLINE_STOP_HOURS, OFFLINE_WARN_HOURS, PENDING_CAP, Policy
from pact.text import N_, Msg
from pact.timefmt import iso

WARN = "warn"
STOP = "stop"
CAP = "cap"
LIMITS = (WARN, STOP, CAP)


@dataclass(frozen=True)
class Limits:
    """The offline limits in force (the union's defaults, or the policy's)."""

    warn_after: timedelta = timedelta(hours=OFFLINE_WARN_HOURS)
    stop_after: timedelta = timedelta(hours=OFFLINE_STOP_HOURS)
    pending_cap: int = PENDING_CAP


def limits_of(policy: Policy | None) -> Limits:
    """The limits the merchant's policy sets (the defaults without a policy)."""
    if policy is None:
        return Limits()
    return Limits(
        warn_after=timedelta(hours=policy.offline_warn_hours),
        stop_after=timedelta(hours=policy.offline_stop_hours),
        pending_cap=policy.pending_cap,
    )


@dataclass(frozen=True)
class Offline:
    """Where the terminal stands against its limits at one moment."""

    since: datetime | None  # the last successful sync (or the snapshot's issue time)
    pending: int  # entries waiting for upload
    reached: tuple[str, ...]  # of LIMITS, in that order
    warnings: tuple[Msg, ...]  # one for each limit reached, for the status and the page
    block: Msg | None  # why members get no discount now; None when they may


def assess(limits: Limits, since: datetime | None, pending: int, now: datetime) -> Offline:
    """The limits reached at ``now``, ``since`` the last successful sync (None: never
    synced and nothing installed: the roster's absence already stops discounts), with
    ``pending`` entries not yet uploaded."""
    reached: list[str] = []
    warnings: list[Msg] = []
    # a clock behind the last sync reads as no time offline: the clock check refuses it
    gone = now - since if since is not None else None
    hours = max(0, int(gone.total_seconds() // 3600)) if gone is not None else 0
    if since is not None and gone is not None and gone >= limits.stop_after:
        reached.append(STOP)
        warnings.append(
            Msg.of(
                N_(
                    "no successful sync for %(hours)s hours (since %(at)s): no discounts "
                    "until the terminal syncs"
                ),
                hours=hours,
                at=iso(since),
            )
        )
    elif since is not None and gone is not None and gone >= limits.warn_after:
        reached.append(WARN)
        warnings.append(
            Msg.of(
                N_(
                    "no successful sync for %(hours)s hours (since %(at)s): discounts stop "
                    "at %(stop)s unless the terminal syncs"
                ),
                hours=hours,
                at=iso(since),
                stop=iso(since + limits.stop_after),
            )
        )
    if pending >= limits.pending_cap:
        reached.append(CAP)
        warnings.append(
            Msg.of(
                N_(
                    "%(pending)s sales are waiting for upload (the limit is %(cap)s): no "
                    "discounts until the terminal syncs"
                ),
                pending=pending,
                cap=limits.pending_cap,
            )
        )
    blocking = [w for limit, w in zip(reached, warnings, strict=True) if limit != WARN]
    return Offline(since, pending, tuple(reached), tuple(warnings), next(iter(blocking), None))


def limit_key(limit: str, since: datetime | None) -> str:
    """What identifies one limit reached in one stretch offline (the event's first
    words): the same limit after a later sync is a new one."""
    return f"{limit} since {iso(since) if since is not None else 'never'}"


def limit_event(offline: Offline, limit: str) -> str:
    """The detail of the ``offline-limit`` event for ``limit`` (pact.event)."""
    reason = {
        WARN: "warning: the terminal has not synced",
        STOP: "no member discounts until the terminal syncs",
        CAP: f"{offline.pending} entries wait for upload: no member discounts until a sync",
    }[limit]
    return f"{limit_key(limit, offline.since)}: {reason}"


def to_note(offline: Offline, noted: Iterable[str]) -> list[str]:
    """The limits reached that have no event yet for this stretch offline (``noted``:
    the keys already journaled, :func:`noted_limits`)."""
    seen = set(noted)
    return [limit for limit in offline.reached if limit_key(limit, offline.since) not in seen]


def noted_limits(notes: Iterable[str]) -> set[str]:
    """The limit keys in the ``offline-limit`` events' notes (``"offline-limit: <key>:
    ..."``)."""
    keys = set()
    for note in notes:
        code, _, rest = note.partition(": ")
        if code == "offline-limit":
            key = rest.split(": ", 1)[0]
            if key.split(" ", 1)[0] in LIMITS:
                keys.add(key)
    return keys
