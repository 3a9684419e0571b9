"""A merchant's signed discount policy: parse, verify, build, describe (pure).

The policy is a signed envelope (pact.signing) whose ``signed`` part is a
header (who, which version, until when, the merchant's status) plus the *terms*
(the offers and how they combine)::

    {"type": "policy", "merchant_id": "M0001", "merchant_name": "...",
     "status": "active", "status_since": "...Z", "status_changes": [],
     "version": 3, "issued_at": "...Z", "expires_at": "...Z",
     "timezone": "Asia/Shanghai", "rounding": "half-up", "combine": "best",
     "holidays": ["2026-10-01"], "exclude": {"categories": ["tobacco"]},
     "rules": [{"id": "member-5", "kind": "percent_off", "basis_points": 500}]}

docs/protocol.md describes every field; config/policy.schema.json is its JSON
Schema. Money is integer fen throughout and percentages are basis points (500 =
5 %), so no fractional number ever appears. Unknown fields are refused: a
terminal must never ignore a condition it does not understand and give more than
the union signed. The discount engine is pact.discount; nothing here reads
a clock or a file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pact.basket import CATEGORY_RE, MAX_SKU, Line
from pact.errors import PolicyError, SignatureError
from pact.money import MAX_SALE_FEN, fen
from pact.signing import canonical_json, sign, verify
from pact.text import N_, Msg, Param
from pact.timefmt import iso, parse_iso

MERCHANT_STATUSES = ("active", "suspended", "exited")
ROUNDING_MODES = ("half-up", "down", "down-to-jiao")
COMBINE_MODES = ("best", "sequence")
RULE_KINDS = ("percent_off", "amount_off", "member_price", "free_item")
QUOTA_PERIODS = ("day", "week", "month")
HOLIDAY_MODES = ("any", "exclude", "only")
FUNDERS = ("merchant", "union")  # who pays a rule's discount (the union: a subsidy)
DEFAULT_TIMEZONE = "Asia/Shanghai"
MAX_RULES = 100
RULE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
HOUR_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
WEEKDAY_NAMES = (N_("Mon"), N_("Tue"), N_("Wed"), N_("Thu"), N_("Fri"), N_("Sat"), N_("Sun"))
NO_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)  # an unsigned offer file

HEADER_FIELDS = (
    "type",
    "merchant_id",
    "merchant_name",
    "status",
    "status_since",
    "status_changes",
    "version",
    "issued_at",
    "expires_at",
)
TERMS_FIELDS = (
    "timezone",
    "rounding",
    "combine",
    "holidays",
    "exclude",
    "refund_days",
    "offline_warn_hours",
    "offline_stop_hours",
    "pending_cap",
    "rules",
)
REFUND_DAYS = 30  # a sale may be refunded this many days after its business day (default)
MAX_REFUND_DAYS = 366
# The offline limits (pact.offline): warn, then stop discounts, this many hours after the
# terminal's last successful sync; stop them too with this many entries not uploaded.
OFFLINE_WARN_HOURS = 24
OFFLINE_STOP_HOURS = 72
PENDING_CAP = 5000
MAX_OFFLINE_HOURS = 24 * 30
MAX_PENDING_CAP = 1_000_000
RULE_FIELDS = {
    "common": (
        "id",
        "title",
        "kind",
        "eligible",
        "exclude",
        "min_spend",
        "cap",
        "when",
        "tiers",
        "quota",
        "funded_by",
    ),
    "percent_off": ("basis_points",),
    "amount_off": ("amount", "per"),
    "member_price": ("price",),
    "free_item": ("items", "pick"),
}


# ---------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Selection:
    """Lines named by category or by SKU (a line matches if either matches)."""

    categories: frozenset[str] = frozenset()
    skus: frozenset[str] = frozenset()

    def matches(self, line: Line) -> bool:
        return line.category in self.categories or line.sku in self.skus

    def __bool__(self) -> bool:
        return bool(self.categories or self.skus)

    def describe(self) -> str:
        parts = sorted(self.categories) + [f"SKU {s}" for s in sorted(self.skus)]
        return ", ".join(parts)


@dataclass(frozen=True)
class HourRange:
    """Local time of day ``[start, end)`` in minutes; ``end <= start`` runs past midnight."""

    start: int
    end: int

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date  # inclusive

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day <= self.end

    def __str__(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()}"


@dataclass(frozen=True)
class Window:
    """When a rule applies, in the policy's local time. Empty parts do not restrict."""

    weekdays: frozenset[int] = frozenset()  # ISO: 1 Monday .. 7 Sunday
    hours: tuple[HourRange, ...] = ()
    dates: tuple[DateRange, ...] = ()
    holidays: str = "any"  # any | exclude (not on listed holidays) | only


@dataclass(frozen=True)
class Quota:
    """Per member, counted on the terminal over the current day, week or month."""

    per: str
    uses: int | None = None  # sales in which the rule gave a discount
    amount: int | None = None  # fen of discount the rule gave


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    basis_points: int = 0  # percent_off: 500 = 5 %
    amount: int = 0  # amount_off: fen off
    price: int = 0  # member_price: fen per unit
    items: int = 1  # free_item: units given free
    per: str = "transaction"  # amount_off: once per transaction, or per eligible "item"
    pick: str = "cheapest"  # free_item: which units are free (cheapest or dearest)
    eligible: Selection | None = None  # None: every line
    exclude: Selection = field(default_factory=Selection)
    min_spend: int = 0  # fen of eligible items still to pay
    cap: int | None = None  # at most this much discount per transaction (fen)
    when: Window | None = None
    tiers: frozenset[int] | None = None  # None: every member tier
    quota: Quota | None = None
    title: str = ""
    funded_by: str = "merchant"  # who pays the discount: the "merchant" or the "union"

    @property
    def label(self) -> str:
        return self.title or self.id

    def covers(self, line: Line) -> bool:
        """Whether the rule's own eligibility takes this line (policy exclusions aside)."""
        if self.eligible is not None and not self.eligible.matches(line):
            return False
        return not self.exclude.matches(line)


@dataclass(frozen=True)
class StatusChange:
    status: str
    at: datetime


@dataclass(frozen=True)
class Policy:
    merchant_id: str
    merchant_name: str
    status: str  # as signed: in force since ``status_since``
    version: int
    issued_at: datetime
    expires_at: datetime
    rounding: str
    rules: tuple[Rule, ...]
    combine: str = "best"
    timezone: str = DEFAULT_TIMEZONE
    holidays: frozenset[date] = frozenset()
    exclude: Selection = field(default_factory=Selection)
    status_since: datetime | None = None
    status_changes: tuple[StatusChange, ...] = ()  # ascending; scheduled ahead of time
    refund_days: int = REFUND_DAYS  # business days after a sale's in which it may be refunded
    offline_warn_hours: int = OFFLINE_WARN_HOURS  # pact.offline
    offline_stop_hours: int = OFFLINE_STOP_HOURS
    pending_cap: int = PENDING_CAP

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def status_at(self, now: datetime) -> str:
        """The merchant's status at ``now``: the last change in force, else ``status``."""
        status = self.status
        for change in self.status_changes:
            if status == "exited":
                break  # an exit is final, whatever a policy lists after it
            if change.at <= now:
                status = change.status
        return status

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# ---------------------------------------------------------------------------- time
def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def weekdays_text(days: frozenset[int]) -> str:
    """{1,2,3,4,5} -> "Mon-Fri"; {6,7} -> "Sat, Sun"; {1,3} -> "Mon, Wed"."""
    return str(weekdays_msg(days))


def weekdays_msg(days: frozenset[int]) -> Msg:
    """The days as a message: runs of three or more as "Mon-Fri", the rest listed."""
    ordered = sorted(days)
    runs: list[list[int]] = []
    for d in ordered:
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    parts: list[Param] = []
    for run in runs:
        first, last = Msg(WEEKDAY_NAMES[run[0] - 1]), Msg(WEEKDAY_NAMES[run[-1] - 1])
        if len(run) > 2:
            parts.append(Msg.of(N_("%(first)s-%(last)s"), first=first, last=last))
        else:
            parts += [first] if len(run) == 1 else [first, last]
    return listed(parts)


def listed(items: Sequence[Param], pair: str = N_("%(list)s, %(item)s")) -> Msg:
    """Items in one message, "a, b, c" in English: ``pair`` (a message id with
    ``%(list)s`` and ``%(item)s``) adds each item to the list before it."""
    if not items:
        raise ValueError("listed() takes one item or more")
    joined = items[0] if isinstance(items[0], Msg) else Msg.of("%(item)s", item=items[0])
    for item in items[1:]:
        joined = Msg.of(pair, list=joined, item=item)
    return joined


def window_refusal(window: Window, local: datetime, holidays: frozenset[date]) -> Msg | None:
    """Why ``local`` (the policy's local time) is outside ``window``; None when inside.

    An hour range that runs past midnight belongs to the day it starts on: with
    Mon-Fri 22:00-02:00, Saturday 01:00 is still Friday night.
    """
    today = local.date()
    minute = local.hour * 60 + local.minute

    def day_refusal(day: date) -> Msg | None:
        if window.weekdays and day.isoweekday() not in window.weekdays:
            return Msg.of(
                N_("only on %(days)s, not %(day)s"),
                days=weekdays_msg(window.weekdays),
                day=Msg(WEEKDAY_NAMES[day.isoweekday() - 1]),
            )
        if window.dates and not any(day in r for r in window.dates):
            ranges: list[Param] = [
                Msg.of(N_("%(start)s to %(end)s"), start=r.start.isoformat(), end=r.end.isoformat())
                for r in window.dates
            ]
            return Msg.of(N_("only %(dates)s"), dates=listed(ranges, N_("%(list)s; %(item)s")))
        if window.holidays == "exclude" and day in holidays:
            return Msg.of(N_("not on holidays (%(day)s is one)"), day=day.isoformat())
        if window.holidays == "only" and day not in holidays:
            return Msg.of(N_("only on the holidays the policy lists"))
        return None

    if not window.hours:
        return day_refusal(today)
    first: Msg | None = None
    in_hours = False
    for hours in window.hours:
        if not hours.crosses_midnight:
            day = today if hours.start <= minute < hours.end else None
        elif minute >= hours.start:
            day = today
        elif minute < hours.end:
            day = today - timedelta(days=1)
        else:
            day = None
        if day is None:
            continue
        in_hours = True
        refusal = day_refusal(day)
        if refusal is None:
            return None
        first = first or refusal
    if not in_hours:
        return Msg.of(N_("outside hours %(hours)s"), hours=", ".join(str(h) for h in window.hours))
    return first


def shop_day(policy: Policy | None, now: datetime) -> date:
    """The calendar day at the shop (the policy's time zone, else Asia/Shanghai)."""
    zone = policy.zone if policy is not None else ZoneInfo(DEFAULT_TIMEZONE)
    return now.astimezone(zone).date()


def period_start(per: str, now: datetime, zone: ZoneInfo) -> datetime:
    """Start (UTC) of the local day, ISO week (Monday) or calendar month holding ``now``."""
    today = now.astimezone(zone).date()
    if per == "week":
        start = today - timedelta(days=today.weekday())
    elif per == "month":
        start = today.replace(day=1)
    else:
        start = today
    return datetime.combine(start, time(0), tzinfo=zone).astimezone(UTC)


PERIOD_WORDS = {"day": N_("today"), "week": N_("this week"), "month": N_("this month")}


def quota_periods(policy: Policy, now: datetime) -> list[tuple[str, datetime]]:
    """(rule id, start of its current quota period) for every rule with a quota.

    The checkout asks the journal for each member's usage since that moment.
    """
    return [
        (r.id, period_start(r.quota.per, now, policy.zone))
        for r in policy.rules
        if r.quota is not None
    ]


# ---------------------------------------------------------------------------- parsing
T = TypeVar("T")


class _Fields:
    """A JSON object being parsed: every access names its path; unknown keys refused."""

    def __init__(self, raw: Any, where: str, allowed: Sequence[str]) -> None:
        if not isinstance(raw, dict):
            raise PolicyError(
                N_("%(where)s must be a JSON object"), where=str(where or "the policy")
            )
        self.raw = raw
        self.where = where
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise PolicyError(
                N_("%(field)s is not a known field (known: %(known)s)"),
                field=str(self.path(unknown[0])),
                known=str(", ".join(allowed)),
            )

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key in self.raw

    def text(self, key: str, default: str | None = None, *, max_len: int = 128) -> str:
        if key not in self.raw:
            if default is None:
                raise PolicyError(N_("%(field)s is missing"), field=str(self.path(key)))
            return default
        value = self.raw[key]
        if not isinstance(value, str) or not 1 <= len(value) <= max_len:
            raise PolicyError(
                N_("%(field)s must be text of 1 to %(max_len)s characters"),
                field=str(self.path(key)),
                max_len=max_len,
            )
        return value

    def choice(self, key: str, choices: Sequence[str], default: str | None = None) -> str:
        value = self.text(key, default)
        if value not in choices:
            raise PolicyError(
                N_("%(field)s is %(value)s; it must be one of %(choices)s"),
                field=str(self.path(key)),
                value=repr(value),
                choices=str(", ".join(choices)),
            )
        return value

    def whole(self, key: str, lo: int, hi: int, default: int | None = None, unit: str = "") -> int:
        if key not in self.raw:
            if default is None:
                raise PolicyError(N_("%(field)s is missing"), field=str(self.path(key)))
            return default
        value = self.raw[key]
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise PolicyError(
                N_("%(field)s must be a whole number %(lo)s..%(hi)s%(unit)s"),
                field=str(self.path(key)),
                lo=lo,
                hi=hi,
                unit=unit,
            )
        return value

    def fen(self, key: str, lo: int = 0, default: int | None = None) -> int:
        return self.whole(key, lo, MAX_SALE_FEN, default, " (fen: 100 = 1 yuan)")

    def moment(self, key: str) -> datetime:
        value = self.text(key, max_len=40)
        try:
            return parse_iso(value)
        except ValueError:
            raise PolicyError(
                N_("%(field)s must be a UTC time like 2026-11-28T09:30:00Z"),
                field=str(self.path(key)),
            ) from None

    def items(self, key: str, parse: Callable[[Any, str], T], max_items: int = 1000) -> list[T]:
        value = self.raw.get(key, [])
        if not isinstance(value, list) or len(value) > max_items:
            raise PolicyError(
                N_("%(field)s must be a list of at most %(max_items)s entries"),
                field=str(self.path(key)),
                max_items=max_items,
            )
        return [parse(v, f"{self.path(key)}[{i}]") for i, v in enumerate(value)]


def _day(value: Any, where: str) -> date:
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise PolicyError(N_("%(where)s must be a date like 2026-10-01"), where=where) from None


def _category(value: Any, where: str) -> str:
    if not isinstance(value, str) or not CATEGORY_RE.match(value):
        raise PolicyError(
            N_(
                "%(where)s must be a lower-case category like grocery or gift_card (letters, "
                "digits, '_', '.', '-')"
            ),
            where=where,
        )
    return value


def _sku(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_SKU or value != value.strip():
        raise PolicyError(
            N_("%(where)s must be a SKU of 1 to %(most)s characters"), where=where, most=MAX_SKU
        )
    return value


def _selection(raw: Any, where: str) -> Selection:
    f = _Fields(raw, where, ("categories", "skus"))
    selection = Selection(
        frozenset(f.items("categories", _category)), frozenset(f.items("skus", _sku))
    )
    if not selection:
        raise PolicyError(N_("%(where)s must name at least one category or SKU"), where=where)
    return selection


def _hours(raw: Any, where: str) -> HourRange:
    f = _Fields(raw, where, ("from", "to"))
    bounds = []
    for key in ("from", "to"):
        m = HOUR_RE.match(f.text(key, max_len=5))
        if m is None:
            raise PolicyError(
                N_("%(field)s must be a time of day like 14:00 (00:00..23:59)"),
                field=str(f.path(key)),
            )
        bounds.append(int(m.group(1)) * 60 + int(m.group(2)))
    if bounds[0] == bounds[1]:
        raise PolicyError(
            N_("%(where)s: from and to are equal; leave hours out for the whole day"), where=where
        )
    return HourRange(bounds[0], bounds[1])


def _dates(raw: Any, where: str) -> DateRange:
    f = _Fields(raw, where, ("from", "to"))
    r = DateRange(_day(f.raw.get("from"), f.path("from")), _day(f.raw.get("to"), f.path("to")))
    if r.end < r.start:
        raise PolicyError(
            N_("%(where)s: to (%(end)s) is before from (%(start)s)"),
            where=where,
            end=str(r.end),
            start=str(r.start),
        )
    return r


def _weekday(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 7:
        raise PolicyError(
            N_("%(where)s must be a weekday number 1 (Monday) .. 7 (Sunday)"), where=where
        )
    return value


def _tier(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise PolicyError(N_("%(where)s must be a member tier 0..255"), where=where)
    return value


def _window(raw: Any, where: str) -> Window:
    f = _Fields(raw, where, ("weekdays", "hours", "dates", "holidays"))
    window = Window(
        weekdays=frozenset(f.items("weekdays", _weekday, 7)),
        hours=tuple(f.items("hours", _hours, 24)),
        dates=tuple(f.items("dates", _dates, 100)),
        holidays=f.choice("holidays", HOLIDAY_MODES, "any"),
    )
    for key in ("weekdays", "hours", "dates"):
        if f.has(key) and not f.raw[key]:
            raise PolicyError(
                N_("%(field)s is empty: leave it out to allow any"), field=str(f.path(key))
            )
    return window


def _quota(raw: Any, where: str) -> Quota:
    f = _Fields(raw, where, ("per", "uses", "amount"))
    quota = Quota(
        per=f.choice("per", QUOTA_PERIODS),
        uses=f.whole("uses", 1, 10000) if f.has("uses") else None,
        amount=f.fen("amount", 1) if f.has("amount") else None,
    )
    if quota.uses is None and quota.amount is None:
        raise PolicyError(N_("%(where)s must limit uses, amount or both"), where=where)
    return quota


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyError(N_("%(where)s must be a JSON object"), where=where)
    kind_value = raw.get("kind")
    if kind_value not in RULE_KINDS:
        raise PolicyError(
            N_("%(where)s.kind is %(kind)s; it must be one of %(kinds)s"),
            where=where,
            kind=repr(kind_value),
            kinds=str(", ".join(RULE_KINDS)),
        )
    kind = str(kind_value)
    others = [k for k in RULE_KINDS if k != kind]
    for other in others:
        for key in RULE_FIELDS[other]:
            if key in raw and key not in RULE_FIELDS[kind]:
                raise PolicyError(
                    N_("%(where)s.%(key)s does not apply to a %(kind)s rule"),
                    where=where,
                    key=key,
                    kind=kind,
                )
    f = _Fields(raw, where, RULE_FIELDS["common"] + RULE_FIELDS[kind])
    rule_id = f.text("id", max_len=40)
    if not RULE_ID_RE.match(rule_id):
        raise PolicyError(
            N_("%(field)s must be letters, digits, '_', '.' or '-' (at most 40)"),
            field=str(f.path("id")),
        )
    tiers = frozenset(f.items("tiers", _tier, 256)) if f.has("tiers") else None
    if tiers is not None and not tiers:
        raise PolicyError(
            N_("%(field)s is empty: leave it out to allow every tier"), field=str(f.path("tiers"))
        )
    rule = Rule(
        id=rule_id,
        kind=kind,
        title=f.text("title", "", max_len=80) if f.has("title") else "",
        eligible=_selection(raw["eligible"], f.path("eligible")) if f.has("eligible") else None,
        exclude=_selection(raw["exclude"], f.path("exclude")) if f.has("exclude") else Selection(),
        min_spend=f.fen("min_spend", 0, 0),
        cap=f.fen("cap", 1) if f.has("cap") else None,
        when=_window(raw["when"], f.path("when")) if f.has("when") else None,
        tiers=tiers,
        quota=_quota(raw["quota"], f.path("quota")) if f.has("quota") else None,
        basis_points=f.whole("basis_points", 0, 10000) if kind == "percent_off" else 0,
        amount=f.fen("amount", 1) if kind == "amount_off" else 0,
        per=f.choice("per", ("transaction", "item"), "transaction"),
        price=f.fen("price", 0) if kind == "member_price" else 0,
        items=f.whole("items", 1, 100, 1),
        pick=f.choice("pick", ("cheapest", "dearest"), "cheapest"),
        funded_by=f.choice("funded_by", FUNDERS, "merchant"),
    )
    return rule


def _terms(f: _Fields) -> dict[str, Any]:
    """The terms of a policy (what the union authors), as Policy keyword arguments."""
    timezone = f.text("timezone", DEFAULT_TIMEZONE, max_len=64)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyError(
            N_(
                "%(field)s %(timezone)s is not a known time zone (like Asia/Shanghai; install "
                "the Debian package tzdata)"
            ),
            field=str(f.path("timezone")),
            timezone=repr(timezone),
        ) from None
    if "rules" not in f.raw:
        raise PolicyError(N_("%(field)s is missing"), field=str(f.path("rules")))
    rules = f.items("rules", _rule, MAX_RULES)
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.id in seen:
            raise PolicyError(
                N_("%(field)s[%(i)s].id %(rule)s is used twice"),
                field=str(f.path("rules")),
                i=i,
                rule=repr(rule.id),
            )
        seen.add(rule.id)
    return {
        "timezone": timezone,
        "rounding": f.choice("rounding", ROUNDING_MODES, "half-up"),
        "combine": f.choice("combine", COMBINE_MODES, "best"),
        "holidays": frozenset(f.items("holidays", _day, 400)),
        "exclude": _selection(f.raw["exclude"], f.path("exclude"))
        if f.has("exclude")
        else Selection(),
        "refund_days": f.whole("refund_days", 0, MAX_REFUND_DAYS, REFUND_DAYS, " (days)"),
        **_offline_terms(f),
        "rules": tuple(rules),
    }


def _offline_terms(f: _Fields) -> dict[str, int]:
    hours = " (hours after the last successful sync)"
    warn = f.whole("offline_warn_hours", 1, MAX_OFFLINE_HOURS, OFFLINE_WARN_HOURS, hours)
    stop = f.whole("offline_stop_hours", 1, MAX_OFFLINE_HOURS, OFFLINE_STOP_HOURS, hours)
    if warn >= stop:
        raise PolicyError(
            N_(
                "%(warn_field)s (%(warn)s) must be less than %(stop_field)s (%(stop)s): the "
                "warning comes before the stop"
            ),
            warn_field=str(f.path("offline_warn_hours")),
            warn=warn,
            stop_field=str(f.path("offline_stop_hours")),
            stop=stop,
        )
    return {
        "offline_warn_hours": warn,
        "offline_stop_hours": stop,
        "pending_cap": f.whole("pending_cap", 1, MAX_PENDING_CAP, PENDING_CAP, " (entries)"),
    }


def _status_change(raw: Any, where: str) -> StatusChange:
    f = _Fields(raw, where, ("status", "at"))
    return StatusChange(f.choice("status", MERCHANT_STATUSES), f.moment("at"))


def parse_policy_document(signed: Any) -> Policy:
    """A policy from its ``signed`` part (header + terms). Raises PolicyError naming the field."""
    f = _Fields(signed, "", HEADER_FIELDS + TERMS_FIELDS)
    if f.raw.get("type") != "policy":
        raise PolicyError(N_('type must be "policy": this is not a policy document'))
    changes = tuple(f.items("status_changes", _status_change, 100))
    for i in range(1, len(changes)):
        if changes[i].at <= changes[i - 1].at:
            raise PolicyError(
                N_("status_changes[%(i)s].at must be later than the change before it"), i=i
            )
    policy = Policy(
        merchant_id=f.text("merchant_id", max_len=32),
        merchant_name=f.text("merchant_name"),
        status=f.choice("status", MERCHANT_STATUSES),
        status_since=f.moment("status_since") if f.has("status_since") else None,
        status_changes=changes,
        version=f.whole("version", 1, 2**53),
        issued_at=f.moment("issued_at"),
        expires_at=f.moment("expires_at"),
        **_terms(f),
    )
    if policy.expires_at <= policy.issued_at:
        raise PolicyError(N_("expires_at must be later than issued_at"))
    return policy


def parse_terms(raw: Any) -> Policy:
    """An unsigned *offer* (terms only, what union staff author for `central set-policy`).

    The header is filled in as for a merchant that is active and never expires,
    so the engine can quote it; only the central service's signature makes it a
    policy a terminal accepts.
    """
    f = _Fields(raw, "", TERMS_FIELDS)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return Policy(
        merchant_id="-",
        merchant_name="(unsigned offer)",
        status="active",
        version=0,
        issued_at=epoch,
        expires_at=NO_EXPIRY,
        **_terms(f),
    )


def load_policy_file(data: bytes) -> tuple[Policy, str]:
    """Read any form of policy file WITHOUT checking signatures (for `policy check`, `quote`).

    Returns the policy and its form: ``"signed"`` (an envelope), ``"document"``
    (a signed part on its own) or ``"offer"`` (terms only).
    """
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PolicyError(N_("not valid JSON (%(exc)s)"), exc=str(exc)) from None
    if isinstance(raw, dict) and "signed" in raw:
        if set(raw) != {"signed", "signatures"} or not isinstance(raw["signatures"], list):
            raise PolicyError(N_("a signed policy has exactly: signed, signatures (a list)"))
        return parse_policy_document(raw["signed"]), "signed"
    if isinstance(raw, dict) and "type" in raw:
        return parse_policy_document(raw), "document"
    return parse_terms(raw), "offer"


def build_policy(
    *,
    merchant_id: str,
    merchant_name: str,
    status: str,
    version: int,
    issued_at: datetime,
    expires_at: datetime,
    terms: Mapping[str, Any],
    keys: list[Ed25519PrivateKey],
    status_since: datetime | None = None,
    status_changes: Sequence[tuple[str, datetime]] = (),
) -> bytes:
    """Sign a policy: the header given here plus ``terms`` (an offer, see parse_terms)."""
    unknown = sorted(set(terms) - set(TERMS_FIELDS))
    if unknown:
        raise PolicyError(
            N_("%(field)s is not a known field of a policy's terms"), field=str(unknown[0])
        )
    signed: dict[str, Any] = {
        "type": "policy",
        "merchant_id": merchant_id,
        "merchant_name": merchant_name,
        "status": status,
        "version": version,
        "issued_at": iso(issued_at),
        "expires_at": iso(expires_at),
        **terms,
    }
    if status_since is not None:
        signed["status_since"] = iso(status_since)
    if status_changes:
        signed["status_changes"] = [{"status": s, "at": iso(at)} for s, at in status_changes]
    parse_policy_document(signed)  # refuse to sign what a terminal would refuse
    return canonical_json(sign(signed, keys))


def verify_policy(
    data: bytes,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    merchant_id: str,
    installed_version: int = 0,
    threshold: int = 1,
) -> Policy:
    """Verify a signed policy for this terminal's merchant, signed by ``threshold`` of
    the ``trusted`` keys (the root's policy role); refuse rollbacks."""
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PolicyError(N_("policy refused: malformed (not JSON)")) from None
    try:
        signed = verify(envelope, trusted, threshold, what="policy")
    except SignatureError as exc:
        raise PolicyError(N_("policy refused: %(exc)s"), exc=str(exc)) from None
    try:
        policy = parse_policy_document(signed)
    except PolicyError as exc:
        raise PolicyError(N_("policy refused: %(exc)s"), exc=str(exc)) from None
    if policy.merchant_id != merchant_id:
        raise PolicyError(
            N_("policy refused: it is for merchant %(merchant)s, not %(merchant_id)s"),
            merchant=str(policy.merchant_id),
            merchant_id=merchant_id,
        )
    if policy.version <= installed_version:
        raise PolicyError(
            N_(
                "policy refused: rollback (version %(version)s is not newer than installed "
                "version %(installed_version)s)"
            ),
            version=str(policy.version),
            installed_version=installed_version,
        )
    return policy


# ---------------------------------------------------------------------------- plain words
def percent_text(basis_points: int) -> str:
    """500 -> "5%", 750 -> "7.5%", 825 -> "8.25%"."""
    whole, part = divmod(basis_points, 100)
    if part == 0:
        return f"{whole}%"
    if part % 10 == 0:
        return f"{whole}.{part // 10}%"
    return f"{whole}.{part:02d}%"


def _offer_text(rule: Rule) -> str:
    if rule.kind == "percent_off":
        return f"{percent_text(rule.basis_points)} off"
    if rule.kind == "amount_off":
        return f"{fen(rule.amount)} off" + (" each item" if rule.per == "item" else "")
    if rule.kind == "member_price":
        return f"member price {fen(rule.price)} each"
    units = "1 item" if rule.items == 1 else f"{rule.items} items"
    return f"{units} free ({rule.pick} first)"


def describe_rule(rule: Rule) -> str:
    """One rule in plain words, e.g. "8% off otc, at most 20.00 per transaction"."""
    parts = [_offer_text(rule)]
    parts.append(f"on {rule.eligible.describe()}" if rule.eligible else "on every item")
    if rule.exclude:
        parts.append(f"except {rule.exclude.describe()}")
    if rule.min_spend:
        parts.append(f"when eligible items come to at least {fen(rule.min_spend)}")
    if rule.cap is not None:
        parts.append(f"at most {fen(rule.cap)} per transaction")
    if rule.when is not None:
        w = rule.when
        if w.weekdays:
            parts.append(weekdays_text(w.weekdays))
        if w.hours:
            parts.append(", ".join(str(h) for h in w.hours))
        if w.dates:
            parts.append("from " + "; ".join(str(d) for d in w.dates))
        if w.holidays == "exclude":
            parts.append("not on listed holidays")
        elif w.holidays == "only":
            parts.append("only on listed holidays")
    if rule.tiers is not None:
        tiers = ", ".join(str(t) for t in sorted(rule.tiers))
        parts.append(f"only member tier{'s' if len(rule.tiers) > 1 else ''} {tiers}")
    if rule.quota is not None:
        q = rule.quota
        limits = []
        if q.uses is not None:
            limits.append("1 use" if q.uses == 1 else f"{q.uses} uses")
        if q.amount is not None:
            limits.append(f"{fen(q.amount)} of discount")
        parts.append(f"at most {' and '.join(limits)} per member per {q.per}")
    if rule.funded_by == "union":
        parts.append("paid by the union")
    return ", ".join(parts)


def describe_policy(policy: Policy, form: str) -> list[str]:
    """The policy in plain words, one line each (for `unioncard policy check`)."""
    lines = []
    if form == "offer":
        lines.append("offer (unsigned terms; `unioncard central set-policy` signs them)")
    else:
        since = f" since {iso(policy.status_since)}" if policy.status_since else ""
        lines.append(
            f"policy v{policy.version} for merchant {policy.merchant_id} "
            f"({policy.merchant_name}), {policy.status}{since}; "
            f"issued {iso(policy.issued_at)}, expires {iso(policy.expires_at)}"
        )
        for change in policy.status_changes:
            lines.append(f"merchant becomes {change.status} at {iso(change.at)}")
        if form == "signed":
            lines.append("signatures are checked by the terminal when it installs the policy")
    how = "the best single rule" if policy.combine == "best" else "every rule, in order"
    rounding = {
        "half-up": "percentages rounded to the nearest fen (halves up)",
        "down": "percentages rounded down to the fen",
        "down-to-jiao": "each rule's discount rounded down to the jiao (0.10)",
    }[policy.rounding]
    lines.append(f"time zone {policy.timezone}; applies {how}; {rounding}")
    lines.append(f"refunds within {policy.refund_days} days of the sale")
    lines.append(
        f"offline: a warning {policy.offline_warn_hours} h after the last sync, no discounts "
        f"after {policy.offline_stop_hours} h or with {policy.pending_cap} entries not uploaded"
    )
    if policy.exclude:
        lines.append(f"never discounted: {policy.exclude.describe()}")
    if policy.holidays:
        lines.append("holidays: " + ", ".join(d.isoformat() for d in sorted(policy.holidays)))
    if not policy.rules:
        lines.append("no member offers")
    for n, rule in enumerate(policy.rules, start=1):
        title = f" ({rule.title})" if rule.title else ""
        lines.append(f"{n}. {rule.id}{title}: {describe_rule(rule)}")
    return lines
