"""The partners list (issue 15 item 4): where the card gives discounts today, each
offer in plain words. A public page (``/partners``, Chinese unless ``?lang=en``) and
JSON (``/api/v1/partners``, both languages). A merchant is listed while its status in
force is active and its newest signed policy is in force; a suspended or exited one
disappears from it at the moment its change takes effect.

The offers are described from the policy the union signed (:func:`offer_parts`,
pure), not from text a merchant typed, with every condition they hold (days, hours,
dates, holidays). An offer that can never apply again (its dates all past, or for
holidays only and no holiday of the policy ahead) is left out, and a merchant with
none left; one that applies on a later day is listed with its dates, as one for
weekends is on a Monday: the list is what the union signed for the shop today.

The same words say a policy's whole terms, and what a draft changes against the terms
in force, to the admin who approves it (:func:`terms_lines`, :func:`terms_changes`:
the console's policy drafts and ``unioncard central drafts``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from flask import Blueprint, current_app, render_template, request
from flask_babel import force_locale, gettext

from central.service import Union
from pact.errors import PolicyError
from pact.money import fen
from pact.policy import DateRange, Policy, Rule, Selection, parse_terms, percent_text, shop_day
from pact.text import N_, Msg, Param
from pact.timefmt import iso

bp = Blueprint("partners", __name__)
LANGUAGES = ("zh", "en")


DAYS = (N_("Mon"), N_("Tue"), N_("Wed"), N_("Thu"), N_("Fri"), N_("Sat"), N_("Sun"))


def _days(days: frozenset[int]) -> Msg:
    """ISO weekdays (1 Monday) as a list of day names: "Sat, Sun"."""
    names = [Msg.of(DAYS[d - 1]) for d in sorted(days)]
    listed = names[-1]
    for name in reversed(names[:-1]):
        listed = Msg.of(N_("%(first)s, %(rest)s"), first=name, rest=listed)
    return listed


def _listed(items: Sequence[Param]) -> Param:
    """Items as one list: "a, b, c" in English ("a、b、c" in Chinese)."""
    joined = items[-1]
    for item in reversed(items[:-1]):
        joined = Msg.of(N_("%(first)s, %(rest)s"), first=item, rest=joined)
    return joined


def _parts(parts: Sequence[Msg]) -> Param:
    """The parts of an offer as one message, "8% off, on otc, at most 20.00 off a
    purchase" (the console's and the command line's; the public list joins its own)."""
    if not parts:
        return ""
    joined: Param = parts[-1]
    for part in reversed(parts[:-1]):
        joined = Msg.of(N_("%(part)s, %(more)s"), part=part, more=joined)
    return joined


def _range(dates: DateRange) -> Param:
    if dates.start == dates.end:
        return dates.start.isoformat()
    return Msg.of(
        N_("%(start)s to %(end)s"), start=dates.start.isoformat(), end=dates.end.isoformat()
    )


def _offer(rule: Rule, full: bool = False) -> list[Msg]:
    """What the rule gives; ``full``: which units a free-item rule gives too."""
    if rule.kind == "percent_off":
        offer = Msg.of(N_("%(percent)s off"), percent=percent_text(rule.basis_points))
    elif rule.kind == "amount_off" and rule.per == "item":
        offer = Msg.of(N_("%(amount)s off each item"), amount=fen(rule.amount))
    elif rule.kind == "amount_off":
        offer = Msg.of(N_("%(amount)s off"), amount=fen(rule.amount))
    elif rule.kind == "member_price":
        offer = Msg.of(N_("member price %(price)s each"), price=fen(rule.price))
    else:
        offer = Msg.of(N_("%(items)s item(s) free"), items=rule.items)
    if full and rule.kind == "free_item":
        pick = {"cheapest": N_("the cheapest free first"), "dearest": N_("the dearest free first")}
        return [offer, Msg.of(pick.get(rule.pick, rule.pick))]
    return [offer]


def _items(rule: Rule, never: Selection | None = None, full: bool = False) -> list[Msg]:
    """Which items: the rule's own, its exclusions (and the policy's, ``never``), the
    spend it needs. ``full``: "on every item" said too."""
    parts = []
    if rule.eligible:
        parts.append(Msg.of(N_("on %(what)s"), what=rule.eligible.describe()))
    elif full:
        parts.append(Msg.of(N_("on every item")))
    excluded = Selection(
        rule.exclude.categories | (never.categories if never else frozenset()),
        rule.exclude.skus | (never.skus if never else frozenset()),
    )
    if excluded:
        parts.append(Msg.of(N_("except %(what)s"), what=excluded.describe()))
    if rule.min_spend:
        parts.append(Msg.of(N_("when you spend at least %(amount)s"), amount=fen(rule.min_spend)))
    return parts


def _cap(rule: Rule) -> list[Msg]:
    if rule.cap is None:
        return []
    return [Msg.of(N_("at most %(amount)s off a purchase"), amount=fen(rule.cap))]


def _when(rule: Rule, holidays: frozenset[date], today: date | None = None) -> list[Msg]:
    """When the rule applies: days of the week, hours, dates, holidays (the policy's).
    With ``today``, the dates and holidays from today on only (the public list)."""
    window = rule.when
    if window is None:
        return []
    parts = []
    if window.weekdays:
        parts.append(Msg.of(N_("on %(days)s"), days=_days(window.weekdays)))
    if window.hours:
        parts.append(Msg.of(N_("at %(hours)s"), hours=", ".join(str(h) for h in window.hours)))
    ranges = [r for r in window.dates if today is None or r.end >= today]
    if ranges:
        parts.append(Msg.of(N_("only %(dates)s"), dates=_listed([_range(r) for r in ranges])))
    days = [d.isoformat() for d in sorted(holidays) if today is None or d >= today]
    if window.holidays == "only":
        if days:
            parts.append(Msg.of(N_("only on the holidays %(days)s"), days=_listed(days)))
        else:
            parts.append(Msg.of(N_("only on holidays, and the policy lists none")))
    elif window.holidays == "exclude" and days:
        parts.append(Msg.of(N_("not on the holidays %(days)s"), days=_listed(days)))
    return parts


def _tiers(rule: Rule) -> list[Msg]:
    if rule.tiers is None:
        return []
    tiers = ", ".join(str(t) for t in sorted(rule.tiers))
    return [Msg.of(N_("member tiers %(tiers)s only"), tiers=tiers)]


def _quota(rule: Rule) -> list[Msg]:
    if rule.quota is None:
        return []
    parts = []
    per = {"day": N_("a day"), "week": N_("a week"), "month": N_("a month")}
    period = Msg.of(per.get(rule.quota.per, rule.quota.per))
    if rule.quota.uses is not None:
        parts.append(Msg.of(N_("%(uses)s time(s) %(period)s"), uses=rule.quota.uses, period=period))
    if rule.quota.amount is not None:
        parts.append(
            Msg.of(
                N_("up to %(amount)s off %(period)s"), amount=fen(rule.quota.amount), period=period
            )
        )
    return parts


def _funded(rule: Rule) -> list[Msg]:
    if rule.funded_by == "union":
        return [Msg.of(N_("paid by the union"))]
    return [Msg.of(N_("paid by the merchant"))]


def offer_parts(
    rule: Rule,
    never: Selection | None = None,
    *,
    holidays: frozenset[date] = frozenset(),
    today: date | None = None,
    full: bool = False,
) -> list[Msg]:
    """One rule of a signed policy in plain words, a part each (pure); ``never``, the
    policy's own exclusions, which no rule discounts; ``holidays``, the policy's.
    ``today``: the dates and holidays from that day on only (the public list);
    ``full``: everything an approver needs too (every item, which units are free, who
    pays the discount)."""
    parts = [*_offer(rule, full), *_items(rule, never, full), *_cap(rule)]
    parts += [*_when(rule, holidays, today), *_tiers(rule), *_quota(rule)]
    return parts + (_funded(rule) if full else [])


def applies_ahead(rule: Rule, policy: Policy, today: date) -> bool:
    """Whether the rule can still apply on ``today`` or a later day: not when its dates
    have all passed, nor when it is for holidays only and the policy lists none ahead
    (within its dates, if it has any)."""
    window = rule.when
    if window is None:
        return True
    if window.dates and all(r.end < today for r in window.dates):
        return False
    if window.holidays == "only":
        ahead = [
            d
            for d in policy.holidays
            if d >= today and (not window.dates or any(d in r for r in window.dates))
        ]
        return bool(ahead)
    return True


# -- a policy's whole terms, and what a draft changes (the admins who approve it) ------
def _rule_line(rule: Rule, policy: Policy) -> Msg:
    offer = _parts(offer_parts(rule, holidays=policy.holidays, full=True))
    if rule.title:
        return Msg.of(N_("rule %(id)s (%(title)s): %(offer)s"), id=rule.id, title=rule.title,
                      offer=offer)  # fmt: skip
    return Msg.of(N_("rule %(id)s: %(offer)s"), id=rule.id, offer=offer)


def _or(parts: Sequence[Msg], none: str) -> Param:
    return _parts(parts) if parts else Msg.of(none)


ROUNDING = {
    "half-up": N_("percentages to the nearest fen (halves up)"),
    "down": N_("percentages down to the fen"),
    "down-to-jiao": N_("each rule's discount down to the jiao (0.10)"),
}
COMBINE = {"best": N_("the best single rule"), "sequence": N_("every rule, in order")}


def _rule_aspects(rule: Rule, policy: Policy) -> list[tuple[str, Param]]:
    """A rule's aspects, as an approver is told what changed: (name, words)."""
    return [
        (N_("offer"), _parts(_offer(rule, full=True))),
        (N_("items"), _parts(_items(rule, full=True))),
        (N_("cap"), _or(_cap(rule), N_("no cap"))),
        (N_("who pays"), _parts(_funded(rule))),
        (N_("quota"), _or(_quota(rule), N_("no quota"))),
        (N_("when"), _or(_when(rule, policy.holidays), N_("any time"))),
        (N_("member tiers"), _or(_tiers(rule), N_("every tier"))),
        (N_("title"), rule.title or "-"),
    ]


def _policy_aspects(policy: Policy) -> list[tuple[str, Param]]:
    """The policy's own terms, beside its rules: (name, words)."""
    p = policy
    holidays = [d.isoformat() for d in sorted(p.holidays)]
    offline = Msg.of(
        N_("a warning %(warn)s h after the last sync; no discounts after %(stop)s h, or "
           "with %(pending)s entries not uploaded"),
        warn=p.offline_warn_hours, stop=p.offline_stop_hours, pending=p.pending_cap,
    )  # fmt: skip
    return [
        (N_("never discounted"), p.exclude.describe() if p.exclude else Msg.of(N_("nothing"))),
        (N_("how rules combine"), Msg.of(COMBINE.get(p.combine, p.combine))),
        (N_("rounding"), Msg.of(ROUNDING.get(p.rounding, p.rounding))),
        (N_("holidays"), _listed(holidays) if holidays else Msg.of(N_("none"))),
        (N_("refunds"), Msg.of(N_("within %(days)s days of the sale"), days=p.refund_days)),
        (N_("offline limits"), offline),
        (N_("time zone"), p.timezone),
    ]


def terms_lines(policy: Policy) -> list[Msg]:
    """A policy's whole terms in plain words, a line each (pure): each rule with every
    condition and who pays it, then the policy's own terms."""
    lines = [_rule_line(rule, policy) for rule in policy.rules]
    if not policy.rules:
        lines.append(Msg.of(N_("no member offers")))
    for name, words in _policy_aspects(policy):
        lines.append(Msg.of(N_("%(what)s: %(value)s"), what=Msg.of(name), value=words))
    return lines


def terms_changes(before: Policy | None, after: Policy) -> list[Msg]:
    """What ``after`` (a draft's terms) changes against ``before`` (the policy in force;
    None: none signed yet), a line each (pure): rules added, removed and changed (each
    aspect that changed, before and after), and the policy's own terms that changed."""
    if before is None:
        return [Msg.of(N_("no policy of this merchant is signed yet: every term is new"))]
    lines = []
    old = {r.id: r for r in before.rules}
    new = {r.id: r for r in after.rules}
    for rule in before.rules:
        if rule.id not in new:
            offer = _parts(offer_parts(rule, holidays=before.holidays, full=True))
            lines.append(
                Msg.of(N_("rule %(id)s removed: it gave %(offer)s"), id=rule.id, offer=offer)
            )
    for rule in after.rules:
        was = old.get(rule.id)
        if was is None:
            offer = _parts(offer_parts(rule, holidays=after.holidays, full=True))
            lines.append(Msg.of(N_("rule %(id)s added: %(offer)s"), id=rule.id, offer=offer))
            continue
        for (name, then), (_, now) in zip(
            _rule_aspects(was, before), _rule_aspects(rule, after), strict=True
        ):
            if then != now:
                lines.append(
                    Msg.of(N_("rule %(id)s, %(what)s: %(before)s → %(after)s"), id=rule.id,
                           what=Msg.of(name), before=then, after=now)
                )  # fmt: skip
    kept = [r.id for r in before.rules if r.id in new]
    still = [r.id for r in after.rules if r.id in old]
    if kept != still:
        lines.append(
            Msg.of(N_("the rules' order: %(before)s → %(after)s"), before=", ".join(kept),
                   after=", ".join(still))
        )  # fmt: skip
    for (name, then), (_, now) in zip(_policy_aspects(before), _policy_aspects(after), strict=True):
        if then != now:
            lines.append(
                Msg.of(N_("%(what)s: %(before)s → %(after)s"), what=Msg.of(name), before=then,
                       after=now)
            )  # fmt: skip
    return lines or [Msg.of(N_("no change: these are the terms in force"))]


@dataclass(frozen=True)
class DraftReview:
    """A policy draft as the admin who approves it reads it (:func:`draft_review`)."""

    against: int | None  # the version in force it is compared with (None: none signed)
    terms: list[Msg]  # its whole terms in plain words (:func:`terms_lines`)
    changes: list[Msg]  # what it changes against those in force (:func:`terms_changes`)


def draft_review(union: Union, draft: Mapping[str, Any]) -> DraftReview:
    """What a second admin reads before approving a draft: its terms in plain words
    and what they change against the merchant's newest signed policy."""
    before = union.latest_policy(draft["merchant_id"])
    against = None if before is None else before.version
    try:
        after = parse_terms(json.loads(draft["terms"]))
    except (PolicyError, ValueError) as exc:  # checked when drafted: an older release's
        unread = Msg.of(N_("the terms cannot be read: %(why)s"), why=str(exc))
        return DraftReview(against, [unread], [])
    return DraftReview(against, terms_lines(after), terms_changes(before, after))


def partners_today(union: Union, now: datetime) -> list[tuple[dict[str, Any], Policy, list[Rule]]]:
    """The merchants where the card gives discounts at ``now``, with their policies and
    the rules of them that can still apply (:func:`applies_ahead`)."""
    found = []
    for merchant in union.store.merchants():
        if merchant["closed_at"] is not None:
            continue
        policy = union.latest_policy(merchant["merchant_id"])
        if policy is None or policy.is_expired(now) or policy.status_at(now) != "active":
            continue
        today = shop_day(policy, now)
        rules = [r for r in policy.rules if applies_ahead(r, policy, today)]
        if not rules:
            continue
        found.append((merchant, policy, rules))
    return found


def _say(msg: Msg, lang: str) -> str:
    with force_locale(lang):
        return msg.render(gettext)


def _entry(merchant: dict[str, Any], policy: Policy, rules: list[Rule], now: datetime) -> Any:
    today = shop_day(policy, now)

    def say(rule: Rule, lang: str) -> str:
        sep = "，" if lang == "zh" else ", "
        parts = offer_parts(rule, policy.exclude, holidays=policy.holidays, today=today)
        return sep.join(_say(part, lang) for part in parts)

    return {
        "merchant_id": merchant["merchant_id"],
        "name": merchant["name"],
        "category": merchant["category"],
        "district": merchant["district"],
        "address": merchant["address"],
        "offers": [
            {"rule_id": r.id, "title": r.title, "zh": say(r, "zh"), "en": say(r, "en")}
            for r in rules
        ],
    }


def partners_json(union: Union) -> dict[str, Any]:
    """The list as ``/api/v1/partners`` answers it."""
    now = union.clock()
    listed = [_entry(m, p, rules, now) for m, p, rules in partners_today(union, now)]
    return {"format": "unioncard.partners.v1", "as_of": iso(now), "partners": listed}


@bp.get("/partners")
def page() -> Any:
    """The public page: where the card gives discounts today."""
    union: Union = current_app.extensions["unioncard"]
    lang = request.args.get("lang", "zh")
    lang = lang if lang in LANGUAGES else "zh"
    now = union.clock()
    listed = [_entry(m, p, rules, now) for m, p, rules in partners_today(union, now)]
    with force_locale(lang):
        return render_template(
            "partners.html", partners=listed, lang=lang, lang_tag="zh-CN" if lang == "zh" else "en"
        )
