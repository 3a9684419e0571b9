"""The shop's end-of-day report (pure): what one business day's journal entries add
up to, in the shop's local time.

- A day is the shop's calendar day in its time zone (the policy's), midnight to
  midnight; an entry belongs to the day of its own time (a void or refund made today
  of yesterday's sale counts today, as the till's cash does).
- ``sales`` counts the day's sales not voided (a sale voided counts in ``voids``);
  ``refunds`` counts refund entries. Money is integer fen:
  ``gross``/``discount``/``net`` = the day's sales − the day's voids − the day's refunds.
- ``by_rule``: for each discount rule, the sales that used it (net of voids) and its
  discount (net of voids and refunds, from the amounts each entry keeps per rule).
- Event entries move no money and are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pact.event import EVENT
from pact.money import fen
from pact.reversal import REFUND, VOID
from pact.sale import Sale
from pact.timefmt import iso, parse_iso


@dataclass
class RuleTotal:
    rule_id: str
    label: str
    sales: int = 0
    discount: int = 0


@dataclass
class DayReport:
    day: date
    timezone: str
    starts_at: datetime  # the day's first moment (UTC, aware)
    ends_at: datetime  # the next day's first moment
    sales: int = 0
    voids: int = 0
    refunds: int = 0
    gross: int = 0
    discount: int = 0
    net: int = 0
    members: int = 0  # sales to members (net of voids)
    first_seq: int | None = None
    last_seq: int | None = None
    by_rule: dict[str, RuleTotal] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        money = {"gross": self.gross, "discount": self.discount, "net": self.net}
        return {
            "date": self.day.isoformat(),
            "timezone": self.timezone,
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "sales": self.sales,
            "member_sales": self.members,
            "voids": self.voids,
            "refunds": self.refunds,
            **{k: fen(v) for k, v in money.items()},
            **{f"{k}_fen": v for k, v in money.items()},
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "by_rule": [
                {
                    "rule": r.rule_id,
                    "label": r.label,
                    "sales": r.sales,
                    "discount": fen(r.discount),
                    "discount_fen": r.discount,
                }
                for r in sorted(self.by_rule.values(), key=lambda r: r.rule_id)
            ],
        }


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The first moment of ``day`` in ``zone`` and of the next day (DST-safe)."""
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start, end


def _rule_amounts(entry: Sale) -> dict[str, int]:
    """The entry's discount per rule (the journal keeps it with the basket)."""
    if entry.basket is not None and isinstance(entry.basket.get("discounts"), Mapping):
        return {str(k): int(v) for k, v in entry.basket["discounts"].items()}
    if len(entry.rules) == 1:  # a sale from before the journal kept the split
        return {entry.rules[0]: entry.discount}
    return {}


def day_report(
    entries: Iterable[Sale], day: date, timezone: str, labels: Mapping[str, str]
) -> DayReport:
    """The report of ``day`` from the journal's ``entries`` (any order; the others are
    skipped). ``labels``: the rules' labels (the policy's), by rule id."""
    zone = ZoneInfo(timezone)
    start, end = day_bounds(day, zone)
    report = DayReport(day, timezone, start, end)
    todays = [e for e in entries if e.kind != EVENT and start <= parse_iso(e.at) < end]
    todays.sort(key=lambda e: e.seq)

    def rule(rule_id: str) -> RuleTotal:
        if rule_id not in report.by_rule:
            report.by_rule[rule_id] = RuleTotal(rule_id, labels.get(rule_id, rule_id))
        return report.by_rule[rule_id]

    for entry in todays:
        sign = 1 if entry.kind is None else -1
        if entry.kind is None:
            report.sales += 1
            report.members += entry.member
        elif entry.kind == VOID:
            report.voids += 1
            report.sales -= 1  # the voided sale no longer counts
            report.members -= entry.member
        elif entry.kind == REFUND:
            report.refunds += 1
        else:
            continue
        report.gross += sign * entry.gross
        report.discount += sign * entry.discount
        report.net += sign * entry.net
        for rule_id, amount in _rule_amounts(entry).items():
            total = rule(rule_id)
            total.discount += sign * amount
            if entry.kind != REFUND:
                total.sales += sign
        report.first_seq = entry.seq if report.first_seq is None else report.first_seq
        report.last_seq = entry.seq
    return report
