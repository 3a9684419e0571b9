"""The fleet view (pure): each terminal as the union sees it, and what needs a look.

Built from the store's row of a terminal (``central.store.Store.fleet``): its last
contact, what it reported at the end of its last sync (``POST /api/v1/report``), the
last seq the union holds from it, and whether it was revoked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from pact.text import N_, Msg
from pact.timefmt import parse_iso

SILENT_AFTER = timedelta(hours=72)  # the default offline stop (pact.offline)


@dataclass(frozen=True)
class FleetRow:
    terminal_id: str
    merchant_id: str
    enrolled_at: str
    last_contact_at: str | None
    reported_at: str | None  # its last report (the end of a sync)
    acked_seq: int  # the last entry the union holds from it
    root_version: int | None
    snapshot_version: int | None
    roster_version: int | None
    policy_version: int | None
    pending: int | None  # entries not yet uploaded at its last report
    software: str | None
    revoked_at: str | None
    revoked_reason: str | None
    revoked_last_seq: int | None
    # its own, as reported, and the union's about it: messages (pact.text), in English
    # with str() and in the reader's language on the console
    warnings: tuple[Msg, ...]

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["warnings"] = [str(w) for w in self.warnings]
        return out


def fleet_row(row: Mapping[str, Any], now: datetime) -> FleetRow:
    """The fleet view of one terminal at ``now``."""
    warnings: list[Msg] = []
    if row["revoked_at"] is not None:
        warnings.append(
            Msg.of(
                N_("revoked at %(at)s: %(reason)s"),
                at=row["revoked_at"],
                reason=row["revoked_reason"] or "",
            )
        )
    contact = row["last_contact_at"]
    if contact is None:
        warnings.append(Msg.of(N_("has never called the union")))
    elif row["revoked_at"] is None and now - parse_iso(contact) >= SILENT_AFTER:
        hours = int((now - parse_iso(contact)).total_seconds() // 3600)
        warnings.append(
            Msg.of(N_("silent for %(hours)s hours: past the offline limit"), hours=hours)
        )
    if row["pending"]:
        warnings.append(
            Msg.of(
                N_("%(count)s entries were not uploaded at its last report"), count=row["pending"]
            )
        )
    try:
        reported = json.loads(row["warnings"]) if row["warnings"] else []
    except ValueError:
        reported = []
    warnings.extend(
        Msg.of(N_("it reported: %(warning)s"), warning=w) for w in reported if isinstance(w, str)
    )
    return FleetRow(
        terminal_id=row["terminal_id"],
        merchant_id=row["merchant_id"],
        enrolled_at=row["enrolled_at"],
        last_contact_at=contact,
        reported_at=row["reported_at"],
        acked_seq=int(row["acked_seq"] or 0),
        root_version=row["root_version"],
        snapshot_version=row["snapshot_version"],
        roster_version=row["roster_version"],
        policy_version=row["policy_version"],
        pending=row["pending"],
        software=row["software"],
        revoked_at=row["revoked_at"],
        revoked_reason=row["revoked_reason"],
        revoked_last_seq=row["revoked_last_seq"],
        warnings=tuple(warnings),
    )


def fleet_table(rows: Sequence[FleetRow]) -> list[str]:
    """The fleet as a table of plain lines (`unioncard central terminals`)."""

    def v(value: int | None) -> str:
        return "-" if value is None else str(value)

    lines = [
        f"{'terminal':<10} {'merchant':<10} {'last contact':<20} {'acked':>7} "
        f"{'roster':>6} {'policy':>6} {'pending':>7}  warnings"
    ]
    for r in rows:
        lines.append(
            f"{r.terminal_id:<10} {r.merchant_id:<10} {r.last_contact_at or 'never':<20} "
            f"{r.acked_seq:>7} {v(r.roster_version):>6} {v(r.policy_version):>6} "
            f"{v(r.pending):>7}  {'; '.join(map(str, r.warnings)) or '-'}"
        )
    return lines
