"""Time on the wire and on disk: ISO 8601, UTC, second precision, ``Z`` suffix.

The core never reads the clock. A :data:`Clock` is made once at the edge (the
command line's ``main()``, the central service's ``create_app()``) and passed
down; a checkout reads it once and hands ``now`` to everything it calls.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware."""


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """Parse an ISO 8601 timestamp that names its offset; raise ValueError otherwise
    (also for a value that is not text, or a moment outside the years 1 to 9999 in UTC)."""
    if not isinstance(text, str):
        raise ValueError(f"timestamp {text!r} is not text")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"timestamp {text!r} is out of range") from None


# The years a time may be of: a day must exist on both sides of UTC in every zone
# (9999-12-31T20:00Z is the year 10000 in Shanghai; 0001-01-01 there is before year 1)
YEARS = range(2000, 9999)


def parse_moment(text: str, local: tzinfo | None = None) -> datetime:
    """A time a person typed (``--at``): ISO 8601 with a zone, or, when ``local`` is
    given, without one in that zone. Returns UTC; ValueError otherwise."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time like 2026-11-30T06:00:00Z") from None
    if moment.tzinfo is None:
        if local is None:
            raise ValueError(f"{text!r} has no time zone: add one, e.g. 2026-11-28T09:30:00Z")
        moment = moment.replace(tzinfo=local)
    if moment.year not in YEARS:
        raise ValueError(f"{text!r} is not a time of the years {YEARS.start} to {YEARS.stop - 1}")
    return moment.astimezone(UTC)
