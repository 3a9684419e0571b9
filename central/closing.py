"""Closing a merchant that has left the programme (issue 15 item 4), in the daily job.

Once a merchant's exit has taken effect, its terminals make their final uploads and are
decommissioned by the shop (``POST /api/v1/decommission`` revokes each). When none is
left, or :data:`FINAL_UPLOAD_DEADLINE` after the exit, the union revokes the rest
(recording the last seq it holds from each) and freezes the merchant's record in
``final/<merchant>/`` of its data folder: the final settlement statement (CSV and a
printable page) and the signed audit bundle of the same days, both covering every
entry it holds from the merchant, with a manifest of their digests (``final.json``,
docs/protocol.md). They are kept until ``retain_until``, :data:`RETENTION` on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from central import policies
from central.auditexport import export_bundle
from central.errors import CentralError
from central.service import Union
from central.statement import statement_csv, statement_html
from pact.files import atomic_write
from pact.timefmt import iso, parse_iso

# An exited merchant's terminals have this long after the exit to make their final
# uploads and be decommissioned; then the union revokes them and closes the merchant.
FINAL_UPLOAD_DEADLINE = timedelta(days=14)
# A closed merchant's final record is kept as long as accounting vouchers must be
# (30 years: 会计档案管理办法, 2015, art. 14 and its table).
RETENTION = timedelta(days=30 * 365 + 8)
FINAL_FORMAT = "unioncard.merchant-final.v1"


@dataclass(frozen=True)
class ClosedMerchant:
    merchant_id: str
    folder: Path  # its final statement, audit bundle and manifest (final.json)
    sales: int
    first: date
    last: date


@dataclass
class Closing:
    closed: list[ClosedMerchant] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line a merchant not closed


def close_exits(union: Union, folder: Path, deadline: timedelta = FINAL_UPLOAD_DEADLINE) -> Closing:
    """Close each merchant whose exit has taken effect, once every terminal of it is
    decommissioned, or ``deadline`` after the exit; keep every merchant's status in
    force current. A merchant that cannot be closed (say, no audit key yet) is named
    in ``problems``, and the others are closed all the same; the next day's job tries
    it again (its terminals stay revoked)."""
    now = union.clock()
    done = Closing()
    live: dict[str, list[str]] = {}  # merchant -> its terminals not revoked
    for terminal in union.store.fleet():
        if terminal["revoked_at"] is None:
            live.setdefault(terminal["merchant_id"], []).append(terminal["terminal_id"])
    for merchant in union.store.merchants():
        merchant_id = merchant["merchant_id"]
        timeline = policies.status_timeline(union.store.status_history(merchant_id), now)
        union.store.apply_status(merchant_id, timeline.status, iso(timeline.since))
        exited_at = timeline.exited_at
        if merchant["closed_at"] is not None or timeline.status != "exited" or not exited_at:
            continue
        left = live.get(merchant_id, [])
        if left and now < exited_at + deadline:
            continue  # waiting for their final uploads
        for terminal_id in left:
            union.store.revoke_terminal(
                terminal_id, iso(now), "merchant exited: final-upload deadline"
            )
        try:
            done.closed.append(_close(union, merchant_id, exited_at, folder / merchant_id, now))
        except (CentralError, OSError) as exc:
            done.problems.append(f"merchant {merchant_id} was not closed: {exc}")
    return done


def _close(
    union: Union, merchant_id: str, exited_at: datetime, folder: Path, now: datetime
) -> ClosedMerchant:
    zone = ZoneInfo(union.timezone)
    span = union.store.merchant_sales_span(merchant_id)
    first = last = exited_at.astimezone(zone).date()
    if span is not None:
        first = min(first, parse_iso(span[0]).astimezone(zone).date())
        last = max(last, parse_iso(span[1]).astimezone(zone).date())
    statement = union.statement(merchant_id, first, last)
    files = {
        "statement.csv": statement_csv(statement).encode("utf-8-sig"),
        "statement.html": statement_html(statement, "zh").encode(),
        "bundle.json": export_bundle(union, merchant_id, first, last),
    }
    manifest = {
        "format": FINAL_FORMAT,
        "merchant_id": merchant_id,
        "exited_at": iso(exited_at),
        "closed_at": iso(now),
        "retain_until": iso(now + RETENTION),
        "period": {"first": first.isoformat(), "last": last.isoformat()},
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    for name, data in files.items():
        atomic_write(folder / name, data, mode=0o644)
    atomic_write(folder / "final.json", json.dumps(manifest, indent=1).encode() + b"\n", 0o644)
    union.store.close_merchant(merchant_id, iso(now), iso(now + RETENTION), str(folder))
    return ClosedMerchant(merchant_id, folder, statement.total.sales, first, last)
