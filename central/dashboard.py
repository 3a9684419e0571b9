"""The console's statistics dashboard (``/console/dashboard``, an adapter).

What it shows, each as a chart drawn here as SVG on the server, a table beside it, and
the same table as CSV (``?table=KEY&format=csv``):

- the cards' use by merchant and by category, each merchant's share of the use, and
  the use by month (the months chosen, in the union's time zone);
- active members by district over the months (and by workplace of one district);
- members joining and leaving each month;
- terminals silent past their offline limit (the merchant's signed policy's
  ``offline_warn_hours`` / ``offline_stop_hours``, pact.offline), from their last
  contact with the union.

Every figure comes from the running totals ingest and the members' import keep
(pact.tally; ``central.store``'s ``sales_monthly``, ``sales_daily``,
``member_monthly``) and the terminals' table: a page never reads the sales.

Union admins and auditors see the union; a merchant's user sees its own merchant's
figures only: its use, by month and by day, and its silent terminals (no shares,
categories or members, which are the union's).

The charts are a few lines of SVG written here, not pygal: pygal's charts load their
tooltips' script from a CDN unless configured otherwise, would be a new dependency to
install on the union's servers, and each chart would carry some 20 KB of styles; a
bar and a line chart need neither.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from html import escape
from typing import Any

from flask import Response, abort, current_app, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from central.errors import NotFoundError
from central.service import Union
from pact.cells import safe_row
from pact.money import fen
from pact.offline import Limits, limits_of
from pact.tally import month_of
from pact.timefmt import iso, parse_iso

MAX_MONTHS = 60  # the longest period a page shows
TOP = 12  # bars in a chart; the rest are summed as "others"
LINES = 6  # series in a chart of districts
DAYS = 31  # a merchant's days shown
PALETTE = ("#b71c1c", "#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#5d4037")


# ---------------------------------------------------------------------------- SVG
def _num(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def bar_svg(label: str, bars: Sequence[tuple[str, int]], shown: Callable[[int], str]) -> str:
    """A horizontal bar for each (name, value); ``shown`` writes a value."""
    width, row, left, right = 640, 24, 170, 90
    height = 16 + row * max(1, len(bars))
    top = max((abs(v) for _, v in bars), default=0) or 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'aria-label="{escape(label)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-size="12">',
        f"<title>{escape(label)}</title>",
    ]
    if not bars:
        out.append(f'<text x="{left}" y="26">{escape(_("No figures."))}</text>')
    for i, (name, value) in enumerate(bars):
        y = 8 + i * row
        length = max(0, value) * (width - left - right) / top
        text = escape(shown(value))
        out += [
            f'<text x="{left - 6}" y="{y + 16}" text-anchor="end">{escape(name[:26])}</text>',
            f'<rect class="bar" x="{left}" y="{y + 4}" width="{_num(length)}" '
            f'height="{row - 8}" fill="{PALETTE[i % len(PALETTE)]}">'
            f"<title>{escape(name)}: {text}</title></rect>",
            f'<text x="{_num(left + length + 4)}" y="{y + 16}">{text}</text>',
        ]
    out.append("</svg>")
    return "".join(out)


def line_svg(label: str, xs: Sequence[str], series: Sequence[tuple[str, Sequence[int]]]) -> str:
    """A line for each (name, values), one value for each of ``xs``."""
    width, height, left, right, top, bottom = 640, 260, 60, 150, 12, 36
    values = [v for _, vs in series for v in vs]
    low, high = min([0, *values]), max([0, *values])
    span = (high - low) or 1
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + (plot_w / 2 if len(xs) == 1 else i * plot_w / (len(xs) - 1))

    def y(v: int) -> float:
        return top + (high - v) * plot_h / span

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'aria-label="{escape(label)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-size="11">',
        f"<title>{escape(label)}</title>",
        f'<line x1="{left}" y1="{_num(y(0))}" x2="{left + plot_w}" y2="{_num(y(0))}" '
        'stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>',
    ]
    for v in sorted({low, high, 0}):
        out.append(f'<text x="{left - 4}" y="{_num(y(v) + 4)}" text-anchor="end">{v}</text>')
    step = max(1, (len(xs) + 7) // 8)
    for i, name in enumerate(xs):
        if (len(xs) - 1 - i) % step == 0:  # the last always, and every step before it
            out.append(
                f'<text x="{_num(x(i))}" y="{height - 14}" text-anchor="middle">'
                f"{escape(name)}</text>"
            )
    for n, (name, vs) in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        points = " ".join(f"{_num(x(i))},{_num(y(v))}" for i, v in enumerate(vs))
        out.append(
            f'<polyline class="line" fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{points}"/>'
        )
        for i, v in enumerate(vs):
            out.append(
                f'<circle cx="{_num(x(i))}" cy="{_num(y(v))}" r="3" fill="{colour}">'
                f"<title>{escape(name)} {escape(xs[i])}: {v}</title></circle>"
            )
        ly = top + 14 + n * 16
        out += [
            f'<rect x="{left + plot_w + 12}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>',
            f'<text x="{left + plot_w + 26}" y="{ly}">{escape(name[:18])}</text>',
        ]
    if not xs:
        out.append(f'<text x="{left + 10}" y="{top + 20}">{escape(_("No figures."))}</text>')
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------------ tables
@dataclass
class Section:
    """One chart and its table (and CSV, named by ``key``)."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    chart: str = ""
    note: str = ""
    links: dict[str, str] = field(default_factory=dict)  # a row's first cell to a page

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.headers)  # a text cell never read as a formula (pact.cells)
        writer.writerows(safe_row(row) for row in self.rows)
        return out.getvalue()


def share(part: int, whole: int) -> str:
    """``part`` of ``whole`` in percent with one decimal, rounded half up, in integers."""
    if whole <= 0:
        return "-"
    tenths = (2000 * part + whole) // (2 * whole)
    sign = "-" if tenths < 0 else ""
    return f"{sign}{abs(tenths) // 10}.{abs(tenths) % 10}%"


def top(rows: Iterable[tuple[str, int]], others: str) -> list[tuple[str, int]]:
    """The ``TOP`` largest, the rest summed as ``others``."""
    ordered = sorted(rows, key=lambda r: (-r[1], r[0]))
    if len(ordered) <= TOP:
        return ordered
    rest = sum(v for _, v in ordered[TOP - 1 :])
    return [*ordered[: TOP - 1], (others, rest)]


def months_between(first: str, last: str) -> list[str]:
    y, m = int(first[:4]), int(first[5:7])
    out: list[str] = []
    while f"{y:04d}-{m:02d}" <= last and len(out) < MAX_MONTHS:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _month_arg(name: str, default: str) -> str:
    text = request.args.get(name, "").strip() or default
    try:
        return month_of(date.fromisoformat(text + "-01"))
    except ValueError:
        abort(400, _("Give the months as YYYY-MM."))


# ------------------------------------------------------------------------ figures
def use_sections(union: Union, months: list[str], merchant_id: str | None) -> list[Section]:
    store = union.store
    first, last = months[0], months[-1]
    by_merchant = store.use_by_merchant(first, last, merchant_id)
    total = sum(r["member_sales"] for r in by_merchant)
    union_view = merchant_id is None
    headers = [
        _("Merchant"),
        _("Name"),
        _("Category"),
        _("Sales"),
        _("Member sales"),
        _("Discounted sales"),
        _("Gross"),
        _("Discount"),
        _("Net"),
        _("Voids"),
        _("Refunds"),
    ]
    if union_view:
        headers.append(_("Share of use"))
    rows = []
    for r in by_merchant:
        row = [
            r["merchant_id"],
            r["name"],
            r["category"] or "-",
            str(r["sales"]),
            str(r["member_sales"]),
            str(r["discounted"]),
            fen(r["gross"]),
            fen(r["discount"]),
            fen(r["net"]),
            str(r["voids"]),
            str(r["refunds"]),
        ]
        if union_view:
            row.append(share(r["member_sales"], total))
        rows.append(row)
    title = _("Use by merchant")
    chart = bar_svg(
        _("Member sales by merchant"),
        top(((r["name"], r["member_sales"]) for r in by_merchant), _("others")),
        str,
    )
    sections = [Section("merchants", title, headers, rows, chart, _("Amounts in yuan."))]
    if union_view:
        categories: dict[str, dict[str, int]] = {}
        for r in by_merchant:
            c = categories.setdefault(
                r["category"] or "-", {"merchants": 0, "member_sales": 0, "discount": 0}
            )
            c["merchants"] += 1
            c["member_sales"] += r["member_sales"]
            c["discount"] += r["discount"]
        sections.append(
            Section(
                "categories",
                _("Use by category"),
                [
                    _("Category"),
                    _("Merchants"),
                    _("Member sales"),
                    _("Discount"),
                    _("Share of use"),
                ],
                [
                    [
                        name,
                        str(c["merchants"]),
                        str(c["member_sales"]),
                        fen(c["discount"]),
                        share(c["member_sales"], total),
                    ]
                    for name, c in sorted(categories.items())
                ],
                bar_svg(
                    _("Share of use by category"),
                    top(((n, c["member_sales"]) for n, c in categories.items()), _("others")),
                    lambda v: share(v, total),
                ),
                _("Amounts in yuan."),
            )
        )
    found = {r["month"]: r for r in store.use_by_month(first, last, merchant_id)}
    empty = dict.fromkeys(("sales", "member_sales", "discount", "net"), 0)
    by_month = [(m, found.get(m, empty)) for m in months]
    sections.append(
        Section(
            "months",
            _("Use by month"),
            [_("Month"), _("Sales"), _("Member sales"), _("Discount"), _("Net")],
            [
                [m, str(r["sales"]), str(r["member_sales"]), fen(r["discount"]), fen(r["net"])]
                for m, r in by_month
            ],
            line_svg(
                _("Member sales by month"),
                months,
                [(_("Member sales"), [r["member_sales"] for _m, r in by_month])],
            ),
            _("Amounts in yuan."),
        )
    )
    return sections


def day_section(union: Union, merchant_id: str, today: date) -> Section:
    first = today - timedelta(days=DAYS - 1)
    found = {r["day"]: r for r in union.store.use_by_day(first, today, merchant_id)}
    days = [first + timedelta(days=i) for i in range(DAYS)]
    values = [found[d]["member_sales"] if d in found else 0 for d in days]
    return Section(
        "days",
        _("Use in the last %(days)s days", days=DAYS),
        [_("Day"), _("Sales"), _("Member sales"), _("Discount"), _("Net")],
        [
            [
                d.isoformat(),
                str(r["sales"]),
                str(r["member_sales"]),
                fen(r["discount"]),
                fen(r["net"]),
            ]
            for d in days
            if (r := found.get(d)) is not None
        ],
        line_svg(
            _("Member sales by day"),
            [d.strftime("%m-%d") for d in days],
            [(_("Member sales"), values)],
        ),
        _("Amounts in yuan."),
    )


def member_sections(union: Union, months: list[str], district: str | None) -> list[Section]:
    store = union.store
    rows = store.members_by_month()
    # active at the end of each month: the changes up to it, from the first import on
    active: dict[str, dict[str, int]] = {}
    running: dict[str, int] = {}
    joins = {m: [0, 0] for m in months}
    index = 0
    for month in months:
        while index < len(rows) and rows[index]["month"] <= month:
            r = rows[index]
            running[r["place"]] = running.get(r["place"], 0) + r["active"]
            if r["month"] in joins:
                joins[r["month"]][0] += r["joined"]
                joins[r["month"]][1] += r["left"]
            index += 1
        active[month] = dict(running)
    places = sorted(running, key=lambda p: (-running[p], p))
    unnamed = _("(none given)")
    sections = [
        Section(
            "districts",
            _("Active members by district"),
            [_("District"), *months],
            [[p or unnamed, *(str(active[m].get(p, 0)) for m in months)] for p in sorted(places)],
            line_svg(
                _("Active members by district"),
                months,
                [(p or unnamed, [active[m].get(p, 0) for m in months]) for p in places[:LINES]],
            ),
            _("At the end of each month. A district's row links to its workplaces."),
            links={p or unnamed: p for p in places},
        )
    ]
    if district is not None:
        found = store.members_by_month(district)
        running = {}
        by_month: dict[str, dict[str, int]] = {}
        index = 0
        for month in months:
            while index < len(found) and found[index]["month"] <= month:
                r = found[index]
                running[r["place"]] = running.get(r["place"], 0) + r["active"]
                index += 1
            by_month[month] = dict(running)
        workplaces = sorted(running, key=lambda p: (-running[p], p))
        sections.append(
            Section(
                "workplaces",
                _("Active members by workplace in %(district)s", district=district or unnamed),
                [_("Workplace"), *months],
                [
                    [p or unnamed, *(str(by_month[m].get(p, 0)) for m in months)]
                    for p in sorted(workplaces)
                ],
                line_svg(
                    _("Active members by workplace"),
                    months,
                    [
                        (p or unnamed, [by_month[m].get(p, 0) for m in months])
                        for p in workplaces[:LINES]
                    ],
                ),
                _("At the end of each month."),
            )
        )
    sections.append(
        Section(
            "joins",
            _("Members joining and leaving"),
            [_("Month"), _("Joined"), _("Left"), _("Active at the end")],
            [[m, str(joins[m][0]), str(joins[m][1]), str(sum(active[m].values()))] for m in months],
            line_svg(
                _("Members joining and leaving"),
                months,
                [
                    (_("Joined"), [joins[m][0] for m in months]),
                    (_("Left"), [joins[m][1] for m in months]),
                ],
            ),
        )
    )
    return sections


def silent_section(union: Union, now: datetime, merchant_id: str | None) -> Section:
    """The terminals not heard from for longer than their merchant's offline warning
    limit, from the terminals' last contact (or their enrolment, never heard from)."""
    store = union.store
    limits: dict[str, Limits] = {}
    for merchant, version in store.newest_versions("policy:").items():
        limits[merchant] = limits_of(union.signed_policy(merchant, version))
    default = Limits()
    earliest = min((lim.warn_after for lim in limits.values()), default=default.warn_after)
    rows: list[list[str]] = []
    counts: dict[str, int] = {}
    for t in store.quiet_terminals(iso(now - min(earliest, default.warn_after))):
        if merchant_id is not None and t["merchant_id"] != merchant_id:
            continue
        limit = limits.get(t["merchant_id"], default)
        silent = now - parse_iso(t["since"])
        if silent < limit.warn_after:
            continue
        past = silent >= limit.stop_after
        rows.append(
            [
                t["terminal_id"],
                t["merchant_id"],
                t["last_contact_at"] or _("never"),
                str(int(silent.total_seconds() // 3600)),
                f"{int(limit.warn_after.total_seconds() // 3600)} / "
                f"{int(limit.stop_after.total_seconds() // 3600)}",
                _("past the stop: no discounts") if past else _("past the warning"),
            ]
        )
        counts[t["merchant_id"]] = counts.get(t["merchant_id"], 0) + 1
    return Section(
        "silent",
        _("Terminals silent past the offline limit"),
        [
            _("Terminal"),
            _("Merchant"),
            _("Last contact (UTC)"),
            _("Hours silent"),
            _("Limit: warn / stop (hours)"),
            _("State"),
        ],
        rows,
        bar_svg(_("Silent terminals by merchant"), top(counts.items(), _("others")), str),
        _("The limits are those of the merchant's newest signed policy."),
    )


# -------------------------------------------------------------------------- page
def page() -> Any:
    """``GET /console/dashboard``: ``from``, ``to`` (YYYY-MM), ``district`` (its
    workplaces), ``merchant`` (union staff: one merchant's view); ``format=csv`` with
    ``table`` gives that table as CSV."""
    union: Union = current_app.extensions["unioncard"]
    now = union.clock()
    today = now.astimezone(union.store.zone).date()
    back = today.year * 12 + today.month - 1 - 11  # eleven months before this one
    first = _month_arg("from", f"{back // 12:04d}-{back % 12 + 1:02d}")
    last = _month_arg("to", month_of(today))
    if last < first:
        abort(400, _("The last month is before the first."))
    months = months_between(first, last)
    if months[-1] != last:  # cut at MAX_MONTHS: the figures after it were left out unsaid
        abort(
            400,
            _(
                "Choose at most %(months)s months (%(first)s to %(last)s is longer).",
                months=MAX_MONTHS,
                first=first,
                last=last,
            ),
        )
    merchant_id: str | None = current_user.merchant_id if current_user.role == "merchant" else None
    asked = request.args.get("merchant", "").strip()
    if asked:
        if not current_user.may_see(asked):
            abort(403)
        try:
            union.store.merchant(asked)
        except NotFoundError:
            abort(404)
        merchant_id = asked
    if current_user.role == "merchant" and merchant_id is None:
        abort(403)  # a merchant's user bound to none sees nothing
    district = request.args.get("district")
    table = request.args.get("table", "")
    sections = use_sections(union, months, merchant_id)
    if merchant_id is not None:
        sections.append(day_section(union, merchant_id, today))
    else:
        sections += member_sections(union, months, district)
    sections.append(silent_section(union, now, merchant_id))
    if request.args.get("format") == "csv":
        chosen = next((s for s in sections if s.key == table), None)
        if chosen is None:
            abort(404)
        name = f"dashboard-{table}-{first}-{last}.csv"
        return Response(
            chosen.csv().encode("utf-8-sig"),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    args = {"from": first, "to": last}
    if asked:
        args["merchant"] = asked
    if district is not None:
        args["district"] = district

    def link(**extra: str) -> str:
        values: dict[str, Any] = {**args, **extra}
        return url_for("console.dashboard", **values)

    return render_template(
        "console/dashboard.html",
        link=link,
        sections=sections,
        first=first,
        last=last,
        merchant_id=merchant_id,
        district=district,
        timezone=str(union.store.zone),
    )
