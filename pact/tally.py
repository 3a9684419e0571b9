"""The dashboard's running totals (pure): what one entry, or one member's change, adds
to the union's daily and monthly figures.

The central store keeps these totals up to date as it takes in sales and imports
members (in the same transaction), so the statistics dashboard reads a few hundred
rows and never the sales themselves. Its migration fills them from the sales held
before, with these same functions.

Sales (per local day, or month, and merchant): a sale adds; a void takes its sale
back whole (count and money); a refund takes back the money it carries but leaves the
sale standing (as the settlement and the statement count them); an event counts for
nothing. Members (per local month, district and workplace): the change in members
whose status is ``active``, and those who joined (a new member, or one back from
``left``) and who left.

Days and months are the union's local ones: the caller gives the zone, and nothing
here reads a clock or a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, tzinfo
from typing import Any

from pact.timefmt import parse_iso

SALE_FIGURES = (
    "sales",  # sales less those voided
    "member_sales",  # of them, a member's card: the card's use
    "discounted",  # of them, with a discount
    "gross",  # fen, voids and refunds netted
    "discount",
    "net",
    "voids",  # void entries
    "refunds",  # refund entries
)
MEMBER_FIGURES = ("active", "joined", "left")  # active: the change in active members
NOWHERE = ""  # a member's district or workplace when the file gives none


def entry_figures(
    kind: str | None, member: bool, gross: int, discount: int, net: int
) -> dict[str, int] | None:
    """What one journal entry adds to its day's figures (None: an event, nothing)."""
    if kind is None:
        sign, count = 1, 1
    elif kind == "void":
        sign, count = -1, -1
    elif kind == "refund":
        sign, count = -1, 0
    else:
        return None
    return {
        "sales": count,
        "member_sales": count if member else 0,
        "discounted": count if discount > 0 else 0,
        "gross": sign * gross,
        "discount": sign * discount,
        "net": sign * net,
        "voids": int(kind == "void"),
        "refunds": int(kind == "refund"),
    }


def local_day(at: str, zone: tzinfo) -> date:
    """The union's calendar day of an ISO 8601 UTC instant."""
    return parse_iso(at).astimezone(zone).date()


def month_of(day: date) -> str:
    """``YYYY-MM``."""
    return f"{day.year:04d}-{day.month:02d}"


def add(into: dict[Any, dict[str, int]], key: Any, figures: Mapping[str, int]) -> None:
    held = into.get(key)
    if held is None:
        into[key] = dict(figures)
    else:
        for name, value in figures.items():
            held[name] += value


def fold_sales(
    entries: Iterable[tuple[str, str, str | None, bool, int, int, int]], zone: tzinfo
) -> dict[tuple[date, str], dict[str, int]]:
    """The figures of ``entries`` (``at, merchant_id, kind, member, gross, discount,
    net``) by (local day, merchant)."""
    out: dict[tuple[date, str], dict[str, int]] = {}
    days: dict[str, date] = {}  # by UTC minute: every zone's offset is whole minutes
    for at, merchant_id, kind, member, gross, discount, net in entries:
        figures = entry_figures(kind, bool(member), gross, discount, net)
        if figures is None:
            continue
        day = days.get(at[:16])
        if day is None:
            day = days[at[:16]] = local_day(at, zone)
        add(out, (day, merchant_id), figures)
    return out


def by_month(
    daily: Mapping[tuple[date, str], Mapping[str, int]],
) -> dict[tuple[str, str], dict[str, int]]:
    """Daily figures summed by (month, merchant)."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for (day, merchant_id), figures in daily.items():
        add(out, (month_of(day), merchant_id), figures)
    return out


def _place(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row.get("district") or NOWHERE, row.get("workplace") or NOWHERE)


def member_change(
    old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> list[tuple[tuple[str, str], dict[str, int]]]:
    """What a member's change from ``old`` (None: a new member) to ``new`` (each with
    ``status``, ``district``, ``workplace``) adds, by (district, workplace)."""
    out: list[tuple[tuple[str, str], dict[str, int]]] = []
    was_in = old is not None and old["status"] != "left"
    is_in = new["status"] != "left"
    if old is not None and old["status"] == "active":
        out.append((_place(old), {"active": -1, "joined": 0, "left": 0}))
    change = {
        "active": int(new["status"] == "active"),
        "joined": int(is_in and not was_in),
        "left": int(was_in and not is_in),
    }
    if any(change.values()):
        out.append((_place(new), change))
    return out


def fold_members(
    changes: Iterable[tuple[Mapping[str, Any] | None, Mapping[str, Any]]], month: str
) -> dict[tuple[str, str, str], dict[str, int]]:
    """The members' changes of one import (at ``month``) by (month, district,
    workplace); places whose figures cancel out are left out."""
    out: dict[tuple[str, str, str], dict[str, int]] = {}
    for old, new in changes:
        for place, figures in member_change(old, new):
            add(out, (month, *place), figures)
    return {k: v for k, v in out.items() if any(v.values())}
