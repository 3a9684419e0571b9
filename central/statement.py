"""A merchant's settlement statement (pure): one period of its entries, in the union's
time zone, by day and by discount rule, with voids and refunds netted, and what the
union pays (rules whose signed policy says ``funded_by: union``).

Money is integer fen throughout; the CSV and the page show yuan with two decimals
(``pact.money.fen``). A day is the union's local calendar day (Asia/Shanghai unless
the union sets another): a sale at 07:00 in Shanghai on the 2nd (23:00 UTC on the 1st)
counts on the 2nd.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from html import escape
from zoneinfo import ZoneInfo

from central.errors import InputError
from pact.cells import safe_row
from pact.money import fen
from pact.policy import Policy
from pact.sale import REVERSALS, Sale
from pact.text import N_
from pact.timefmt import YEARS, parse_iso

UNION_TIMEZONE = "Asia/Shanghai"
UNATTRIBUTED = "(unattributed)"  # a discount journaled before baskets, over several rules


def period_bounds(first: date, last: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants from the start of ``first`` to the end of ``last`` (both local
    days, inclusive); InputError for a day outside the years the union keeps
    (pact.timefmt.YEARS: 9999-12-31 had no end, 0001-01-01 no start in UTC)."""
    for day in (first, last):
        if day.year not in YEARS:
            raise InputError(
                N_("%(day)s is not a day of the years %(first)s to %(last)s"),
                day=day.isoformat(),
                first=YEARS.start,
                last=YEARS.stop - 1,
            )
    start = datetime.combine(first, time(0), zone).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time(0), zone).astimezone(UTC)
    return start, end


@dataclass
class DayTotals:
    day: date
    sales: int = 0  # sales less those voided
    member_sales: int = 0
    gross: int = 0  # fen, voids and refunds netted
    discount: int = 0
    net: int = 0
    voids: int = 0
    refunds: int = 0
    union_pays: int = 0  # of ``discount``: the rules the union funds


@dataclass
class RuleTotals:
    rule_id: str
    title: str = ""
    funded_by: str = "merchant"
    uses: int = 0  # sales in which the rule gave a discount, less voided ones
    discount: int = 0  # fen, refunds and voids netted


@dataclass
class Statement:
    merchant_id: str
    merchant_name: str
    first: date
    last: date
    timezone: str
    days: list[DayTotals] = field(default_factory=list)
    rules: list[RuleTotals] = field(default_factory=list)
    # The merchant's terminals that have not synced everything since the period ended
    # (terminal, its last report or None): their sales of these days may still arrive
    # (a shop offline for days uploads later), so the statement is provisional.
    awaiting: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def total(self) -> DayTotals:
        out = DayTotals(self.last)
        for d in self.days:
            for name in (
                "sales", "member_sales", "gross", "discount", "net", "voids", "refunds",
                "union_pays",
            ):  # fmt: skip
                setattr(out, name, getattr(out, name) + getattr(d, name))
        return out


def build_statement(
    merchant_id: str,
    merchant_name: str,
    first: date,
    last: date,
    entries: Iterable[Sale],
    policy_of: Callable[[int], Policy | None],
    timezone: str = UNION_TIMEZONE,
) -> Statement:
    """The statement of ``entries`` (the merchant's, in the period; events are
    skipped). ``policy_of(version)`` gives the signed policy a sale names, for its
    rules' titles and who funds them: each entry's discount is funded as its own
    policy says, so a rule whose funder changed between two versions in the period has
    a line for each funder."""
    zone = ZoneInfo(timezone)
    days: dict[date, DayTotals] = {}
    rules: dict[tuple[str, str], RuleTotals] = {}  # (rule id, who funds it)
    terms: dict[tuple[int, str], tuple[str, str]] = {}  # (version, rule) -> title, funder

    def rule_terms(version: int, rule_id: str) -> tuple[str, str]:
        if (version, rule_id) not in terms:
            policy = policy_of(version)
            found = next((r for r in policy.rules if r.id == rule_id), None) if policy else None
            terms[(version, rule_id)] = (
                (found.title, found.funded_by) if found is not None else ("", "merchant")
            )
        return terms[(version, rule_id)]

    for entry in entries:
        if entry.kind is not None and entry.kind not in REVERSALS:
            continue  # an event moves no money
        day = parse_iso(entry.at).astimezone(zone).date()
        totals = days.setdefault(day, DayTotals(day))
        money = 1 if entry.kind is None else -1
        count = {None: 1, "void": -1}.get(entry.kind, 0)
        totals.sales += count
        totals.member_sales += count if entry.member else 0
        totals.gross += money * entry.gross
        totals.discount += money * entry.discount
        totals.net += money * entry.net
        totals.voids += entry.kind == "void"
        totals.refunds += entry.kind == "refund"
        for rule_id, amount in _by_rule(entry).items():
            title, funded_by = rule_terms(entry.policy_version, rule_id)
            row = rules.get((rule_id, funded_by))
            if row is None:
                row = rules[(rule_id, funded_by)] = RuleTotals(rule_id, title, funded_by)
            row.discount += money * amount
            row.uses += count if amount > 0 else 0
            if funded_by == "union":
                totals.union_pays += money * amount
    return Statement(
        merchant_id,
        merchant_name,
        first,
        last,
        timezone,
        [days[d] for d in sorted(days)],
        [rules[r] for r in sorted(rules)],
    )


def _by_rule(entry: Sale) -> dict[str, int]:
    """Each rule's share of the entry's discount (the basket's ``discounts``)."""
    if entry.basket is not None:
        return {str(k): int(v) for k, v in entry.basket.get("discounts", {}).items()}
    if not entry.discount:
        return {}
    return {entry.rules[0] if len(entry.rules) == 1 else UNATTRIBUTED: entry.discount}


# ------------------------------------------------------------------------ the words
LABELS = {
    "zh": {
        "title": "结算单",
        "merchant": "商户",
        "period": "期间",
        "timezone": "时区",
        "by_day": "按日",
        "by_rule": "按优惠规则",
        "day": "日期",
        "sales": "交易笔数",
        "member_sales": "会员交易",
        "gross": "原价",
        "discount": "优惠",
        "net": "实收",
        "voids": "撤销",
        "refunds": "退款",
        "union_pays": "工会补贴",
        "rule": "规则",
        "rule_title": "名称",
        "funded_by": "出资方",
        "uses": "使用次数",
        "total": "合计",
        "merchant_pays": "商户承担",
        "union": "工会",
        "merchant_funds": "商户",
        "note": "金额单位：元。撤销和退款已冲减。",
        "provisional": "暂定结算单：以下终端自本期结束后尚未同步完毕，其本期销售可能尚未上传，"
        "请在它们同步后重新生成：",
        "never": "从未同步",
    },
    "en": {
        "title": "Settlement statement",
        "merchant": "Merchant",
        "period": "Period",
        "timezone": "Time zone",
        "by_day": "By day",
        "by_rule": "By discount rule",
        "day": "Day",
        "sales": "Sales",
        "member_sales": "Member sales",
        "gross": "Gross",
        "discount": "Discount",
        "net": "Net",
        "voids": "Voids",
        "refunds": "Refunds",
        "union_pays": "Union pays",
        "rule": "Rule",
        "rule_title": "Title",
        "funded_by": "Funded by",
        "uses": "Uses",
        "total": "Total",
        "merchant_pays": "Merchant bears",
        "union": "union",
        "merchant_funds": "merchant",
        "note": "Amounts in yuan. Voids and refunds are netted.",
        "provisional": "Provisional: these terminals have not synced everything since the "
        "period ended, so sales of these days may still arrive; make the statement again "
        "once they have:",
        "never": "never synced",
    },
}
DAY_FIELDS = ("sales", "member_sales", "gross", "discount", "net", "voids", "refunds", "union_pays")
MONEY = {"gross", "discount", "net", "union_pays"}


def _cell(name: str, value: int) -> str:
    return fen(value) if name in MONEY else str(value)


def statement_csv(statement: Statement) -> str:
    """The statement as CSV: one row a day, a total row, then one row a rule (column
    ``section``: ``day``, ``total``, ``rule``), amounts in yuan; a text cell a
    spreadsheet would take for a formula starts with an apostrophe (pact.cells)."""
    out = io.StringIO()
    rows: list[list[str]] = []
    rows.append(
        ["section", "merchant_id", "day", *DAY_FIELDS, "rule", "title", "funded_by", "uses"]
    )
    m = statement.merchant_id
    for section, d in [*(("day", d) for d in statement.days), ("total", statement.total)]:
        day = d.day.isoformat() if section == "day" else ""
        rows.append(
            [section, m, day, *(_cell(n, getattr(d, n)) for n in DAY_FIELDS)] + ["", "", "", ""]
        )
    for r in statement.rules:
        blank = [""] * len(DAY_FIELDS)
        blank[DAY_FIELDS.index("discount")] = fen(r.discount)
        if r.funded_by == "union":
            blank[DAY_FIELDS.index("union_pays")] = fen(r.discount)
        rows.append(["rule", m, "", *blank, r.rule_id, r.title, r.funded_by, str(r.uses)])
    for terminal_id, reported in statement.awaiting:  # provisional: see Statement
        blank = [""] * len(DAY_FIELDS)
        rows.append(["awaiting", m, (reported or "")[:10], *blank, "", terminal_id, "", ""])
    csv.writer(out, lineterminator="\n").writerows(safe_row(row) for row in rows)
    return out.getvalue()


def statement_html(statement: Statement, lang: str = "zh") -> str:
    """The statement as one printable HTML page (A4), in Chinese unless ``lang`` is en."""
    t = LABELS.get(lang, LABELS["zh"])
    total = statement.total

    def row(cells: Sequence[str], tag: str = "td") -> str:
        return "<tr>" + "".join(f"<{tag}>{escape(c)}</{tag}>" for c in cells) + "</tr>"

    day_head = row([t["day"], *(t[n] for n in DAY_FIELDS)], "th")
    day_rows = "".join(
        row([d.day.isoformat(), *(_cell(n, getattr(d, n)) for n in DAY_FIELDS)])
        for d in statement.days
    )
    total_row = row([t["total"], *(_cell(n, getattr(total, n)) for n in DAY_FIELDS)])
    rule_head = row([t["rule"], t["rule_title"], t["funded_by"], t["uses"], t["discount"]], "th")
    rule_rows = "".join(
        row(
            [
                r.rule_id,
                r.title,
                t["union"] if r.funded_by == "union" else t["merchant_funds"],
                str(r.uses),
                fen(r.discount),
            ]
        )
        for r in statement.rules
    )
    period = f"{statement.first.isoformat()} – {statement.last.isoformat()}"
    bears = fen(total.discount - total.union_pays)
    awaiting = ""
    if statement.awaiting:
        listed = "; ".join(
            f"{terminal_id} ({reported or t['never']})"
            for terminal_id, reported in statement.awaiting
        )
        awaiting = f'<p class="provisional"><b>{escape(t["provisional"])}</b> {escape(listed)}</p>'

    return f"""<!doctype html>
<html lang="{"zh-CN" if lang != "en" else "en"}"><head><meta charset="utf-8">
<title>{escape(t["title"])} {escape(statement.merchant_id)} {escape(period)}</title>
<style>
@page {{ size: A4; margin: 15mm; }}
body {{ font-family: "WenQuanYi Micro Hei", "Noto Sans CJK SC", sans-serif; font-size: 11pt; }}
table {{ border-collapse: collapse; width: 100%; margin: 8px 0 16px; }}
th, td {{ border: 1px solid #999; padding: 3px 6px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
tr:last-child td {{ font-weight: bold; }}
</style></head><body>
<h1>{escape(t["title"])}</h1>
{awaiting}
<p>{escape(t["merchant"])}: {escape(statement.merchant_id)} {escape(statement.merchant_name)}<br>
{escape(t["period"])}: {escape(period)} · {escape(t["timezone"])}: {escape(statement.timezone)}</p>
<h2>{escape(t["by_day"])}</h2>
<table>{day_head}{day_rows}{total_row}</table>
<h2>{escape(t["by_rule"])}</h2>
<table>{rule_head}{rule_rows}</table>
<p>{escape(t["union_pays"])}: {fen(total.union_pays)} · {escape(t["merchant_pays"])}: {bears}</p>
<p>{escape(t["note"])}</p>
</body></html>
"""


def statement_lines(statement: Statement) -> list[str]:
    """The statement in plain lines for the command line (English)."""
    total = statement.total
    lines = [
        f"statement of {statement.merchant_id} ({statement.merchant_name}), "
        f"{statement.first} to {statement.last} ({statement.timezone})",
        f"{'day':<10} {'sales':>6} {'members':>8} {'gross':>12} {'discount':>10} "
        f"{'net':>12} {'voids':>6} {'refunds':>7} {'union pays':>11}",
    ]
    for d in [*statement.days, total]:
        label = d.day.isoformat() if d is not total else "total"
        lines.append(
            f"{label:<10} {d.sales:>6} {d.member_sales:>8} {fen(d.gross):>12} "
            f"{fen(d.discount):>10} {fen(d.net):>12} {d.voids:>6} {d.refunds:>7} "
            f"{fen(d.union_pays):>11}"
        )
    for r in statement.rules:
        who = " (union pays)" if r.funded_by == "union" else ""
        lines.append(f"rule {r.rule_id}{who}: {r.uses} uses, {fen(r.discount)} discount")
    return lines


def provisional_line(statement: Statement) -> str | None:
    """One line saying the statement is provisional and why (None when it is not)."""
    if not statement.awaiting:
        return None
    listed = ", ".join(
        f"{terminal_id} (last synced {reported or 'never'})"
        for terminal_id, reported in statement.awaiting
    )
    return (
        f"provisional: {len(statement.awaiting)} terminal(s) have not synced everything "
        f"since {statement.last} ended, so its sales may still arrive: {listed}; make the "
        "statement again once they have"
    )
