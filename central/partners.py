"""The partners list (issue 15 item 4): where the card gives discounts today, each
offer in plain words. A public page (``/partners``, Chinese unless ``?lang=en``) and
JSON (``/api/v1/partners``, both languages). A merchant is listed while its status in
force is active and its newest signed policy is in force; a suspended or exited one
disappears from it at the moment its change takes effect.

The offers are described from the policy the union signed (:func:`offer_parts`,
pure), not from text a merchant typed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, current_app, render_template, request
from flask_babel import force_locale, gettext

from central.service import Union
from pact.money import fen
from pact.policy import Policy, Rule, Selection, percent_text
from pact.text import N_, Msg
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


def offer_parts(rule: Rule, never: Selection | None = None) -> list[Msg]:
    """One rule of a signed policy in plain words, a part each (pure); ``never``, the
    policy's own exclusions, which no rule discounts."""
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
    parts = [offer]
    if rule.eligible:
        parts.append(Msg.of(N_("on %(what)s"), what=rule.eligible.describe()))
    excluded = Selection(
        rule.exclude.categories | (never.categories if never else frozenset()),
        rule.exclude.skus | (never.skus if never else frozenset()),
    )
    if excluded:
        parts.append(Msg.of(N_("except %(what)s"), what=excluded.describe()))
    if rule.min_spend:
        parts.append(Msg.of(N_("when you spend at least %(amount)s"), amount=fen(rule.min_spend)))
    if rule.cap is not None:
        parts.append(Msg.of(N_("at most %(amount)s off a purchase"), amount=fen(rule.cap)))
    window = rule.when
    if window is not None and window.weekdays:
        parts.append(Msg.of(N_("on %(days)s"), days=_days(window.weekdays)))
    if window is not None and window.hours:
        parts.append(Msg.of(N_("at %(hours)s"), hours=", ".join(str(h) for h in window.hours)))
    if rule.tiers is not None:
        tiers = ", ".join(str(t) for t in sorted(rule.tiers))
        parts.append(Msg.of(N_("member tiers %(tiers)s only"), tiers=tiers))
    if rule.quota is not None:
        per = {"day": N_("a day"), "week": N_("a week"), "month": N_("a month")}
        period = Msg.of(per.get(rule.quota.per, rule.quota.per))
        if rule.quota.uses is not None:
            parts.append(
                Msg.of(N_("%(uses)s time(s) %(period)s"), uses=rule.quota.uses, period=period)
            )
        if rule.quota.amount is not None:
            parts.append(
                Msg.of(
                    N_("up to %(amount)s off %(period)s"),
                    amount=fen(rule.quota.amount),
                    period=period,
                )
            )
    return parts


def partners_today(union: Union, now: datetime) -> list[tuple[dict[str, Any], Policy]]:
    """The merchants where the card gives discounts at ``now``, with their policies."""
    found = []
    for merchant in union.store.merchants():
        if merchant["closed_at"] is not None:
            continue
        policy = union.latest_policy(merchant["merchant_id"])
        if policy is None or policy.is_expired(now) or policy.status_at(now) != "active":
            continue
        if not policy.rules:
            continue
        found.append((merchant, policy))
    return found


def _say(msg: Msg, lang: str) -> str:
    with force_locale(lang):
        return msg.render(gettext)


def _entry(merchant: dict[str, Any], policy: Policy) -> Any:
    def say(rule: Rule, lang: str) -> str:
        sep = "，" if lang == "zh" else ", "
        return sep.join(_say(part, lang) for part in offer_parts(rule, policy.exclude))

    return {
        "merchant_id": merchant["merchant_id"],
        "name": merchant["name"],
        "category": merchant["category"],
        "district": merchant["district"],
        "address": merchant["address"],
        "offers": [
            {"rule_id": r.id, "title": r.title, "zh": say(r, "zh"), "en": say(r, "en")}
            for r in policy.rules
        ],
    }


def partners_json(union: Union) -> dict[str, Any]:
    """The list as ``/api/v1/partners`` answers it."""
    now = union.clock()
    listed = [_entry(m, p) for m, p in partners_today(union, now)]
    return {"format": "unioncard.partners.v1", "as_of": iso(now), "partners": listed}


@bp.get("/partners")
def page() -> Any:
    """The public page: where the card gives discounts today."""
    union: Union = current_app.extensions["unioncard"]
    lang = request.args.get("lang", "zh")
    lang = lang if lang in LANGUAGES else "zh"
    listed = [_entry(m, p) for m, p in partners_today(union, union.clock())]
    with force_locale(lang):
        return render_template(
            "partners.html", partners=listed, lang=lang, lang_tag="zh-CN" if lang == "zh" else "en"
        )
