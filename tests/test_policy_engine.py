"""Properties of the discount engine over arbitrary baskets and policies (hypothesis)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pact.basket import Basket, Line, RuleUsage
from pact.discount import Quote, discount_owed, quote
from pact.policy import (
    COMBINE_MODES,
    HOLIDAY_MODES,
    QUOTA_PERIODS,
    ROUNDING_MODES,
    RULE_KINDS,
    DateRange,
    HourRange,
    Policy,
    Quota,
    Rule,
    Selection,
    Window,
    quota_periods,
)
from pact.roster import Membership
from pact.text import Msg


def english(reasons: tuple[Msg, ...]) -> list[str]:
    """A quote's reasons in English (each is a message id with parameters)."""
    return [str(r) for r in reasons]


CATEGORIES = ("grocery", "tobacco", "otc", "prescription", "film", "snack", "table", "tour")
SKUS = ("A", "B", "C", "D", "E")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

lines = st.builds(
    Line,
    sku=st.sampled_from(SKUS),
    category=st.sampled_from(CATEGORIES),
    qty=st.integers(1, 5),
    unit_price=st.one_of(st.integers(0, 200), st.integers(0, 200_000)),
)
baskets = st.lists(lines, min_size=1, max_size=12).map(lambda ls: Basket(tuple(ls)))
selections = st.builds(
    Selection,
    categories=st.frozensets(st.sampled_from(CATEGORIES), max_size=3),
    skus=st.frozensets(st.sampled_from(SKUS), max_size=2),
).filter(bool)
minutes = st.integers(0, 24 * 60 - 1)
hour_ranges = (
    st.tuples(minutes, minutes).filter(lambda t: t[0] != t[1]).map(lambda t: HourRange(*t))
)
days = st.dates(date(2025, 12, 1), date(2027, 1, 31))
date_ranges = st.tuples(days, days).map(lambda t: DateRange(min(t), max(t)))
windows = st.builds(
    Window,
    weekdays=st.frozensets(st.integers(1, 7), max_size=7),
    hours=st.lists(hour_ranges, max_size=2).map(tuple),
    dates=st.lists(date_ranges, max_size=2).map(tuple),
    holidays=st.sampled_from(HOLIDAY_MODES),
)
quotas = st.builds(
    Quota,
    per=st.sampled_from(QUOTA_PERIODS),
    uses=st.none() | st.integers(1, 3),
    amount=st.none() | st.integers(1, 50_000),
).filter(lambda q: q.uses is not None or q.amount is not None)
rules = st.builds(
    Rule,
    id=st.just(""),
    kind=st.sampled_from(RULE_KINDS),
    basis_points=st.integers(0, 10000),
    amount=st.integers(1, 100_000),
    price=st.integers(0, 100_000),
    items=st.integers(1, 4),
    per=st.sampled_from(("transaction", "item")),
    pick=st.sampled_from(("cheapest", "dearest")),
    eligible=st.none() | selections,
    exclude=st.just(Selection()) | selections,
    min_spend=st.just(0) | st.integers(0, 300_000),
    cap=st.none() | st.integers(1, 50_000),
    when=st.none() | windows,
    tiers=st.none() | st.frozensets(st.integers(0, 3), min_size=1),
    quota=st.none() | quotas,
    title=st.just(""),
)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    drawn = draw(st.lists(rules, max_size=6))
    return Policy(
        merchant_id="M0001",
        merchant_name="Shop",
        status="active",
        version=1,
        issued_at=EPOCH,
        expires_at=EPOCH + timedelta(days=800),
        rounding=draw(st.sampled_from(ROUNDING_MODES)),
        rules=tuple(Rule(**{**r.__dict__, "id": f"r{i}"}) for i, r in enumerate(drawn)),
        combine=draw(st.sampled_from(COMBINE_MODES)),
        holidays=draw(st.frozensets(days, max_size=5)),
        exclude=draw(st.just(Selection()) | selections),
    )


moments = st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC)).map(
    lambda d: d.replace(microsecond=0)
)
members = st.builds(
    Membership, status=st.just("active"), tier=st.integers(0, 3), valid_until=st.none()
)


@st.composite
def usages(draw: st.DrawFn, policy: Policy) -> dict[str, RuleUsage]:
    out = {}
    for rule in policy.rules:
        if rule.quota is not None and draw(st.booleans()):
            out[rule.id] = RuleUsage(draw(st.integers(0, 4)), draw(st.integers(0, 60_000)))
    return out


@st.composite
def cases(draw: st.DrawFn) -> tuple[Basket, Membership, Policy, datetime, dict[str, RuleUsage]]:
    policy = draw(policies())
    return draw(baskets), draw(members), policy, draw(moments), draw(usages(policy))


def eligible_for(policy: Policy, rule_id: str, basket: Basket) -> int:
    rule = next(r for r in policy.rules if r.id == rule_id)
    return sum(
        line.gross
        for line in basket.lines
        if rule.covers(line) and not policy.exclude.matches(line)
    )


PROFILE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROFILE
@given(cases())
def test_amounts_are_whole_fen_and_add_up(case) -> None:
    basket, member, policy, now, usage = case
    q = quote(basket, member, policy, now, usage)
    assert q.gross == basket.gross and q.gross - q.discount == q.net
    assert 0 <= q.discount <= q.gross
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in (q.gross, q.discount, q.net))
    assert [lq.line for lq in q.lines] == list(basket.lines)
    assert sum(lq.discount for lq in q.lines) == q.discount
    assert sum(lq.net for lq in q.lines) == q.net
    assert all(0 <= lq.discount <= lq.gross for lq in q.lines)
    assert sum(d for _, d in q.by_rule) == q.discount
    assert [r for r, _ in q.by_rule] == list(q.applied)
    assert all(d > 0 for _, d in q.by_rule)
    assert len(q.applied) == len(set(q.applied))
    assert {n.rule_id for n in q.not_applied} | set(q.applied) == {r.id for r in policy.rules}
    if policy.combine == "best":
        assert len(q.applied) <= 1


@PROFILE
@given(cases())
def test_discount_never_above_the_eligible_amount_or_a_cap(case) -> None:
    basket, member, policy, now, usage = case
    q = quote(basket, member, policy, now, usage)
    by_id = {r.id: r for r in policy.rules}
    for rule_id, given_fen in q.by_rule:
        rule = by_id[rule_id]
        assert given_fen <= eligible_for(policy, rule_id, basket)
        if rule.cap is not None:
            assert given_fen <= rule.cap
        if policy.rounding == "down-to-jiao":
            assert given_fen % 10 == 0
    for lq in q.lines:
        if policy.exclude.matches(lq.line):
            assert lq.discount == 0 and lq.rules == ()
        for rule_id in lq.rules:
            assert by_id[rule_id].covers(lq.line) and rule_id in q.applied
        assert (lq.discount > 0) == bool(lq.rules)
    if q.discount:
        assert q.discount <= sum(
            lq.gross for lq in q.lines if any(by_id[r].covers(lq.line) for r in q.applied)
        )


@PROFILE
@given(cases(), st.randoms(use_true_random=False))
def test_the_order_of_basket_lines_does_not_matter(case, rnd: random.Random) -> None:
    basket, member, policy, now, usage = case
    shuffled = list(basket.lines)
    rnd.shuffle(shuffled)
    a = quote(basket, member, policy, now, usage)
    b = quote(Basket(tuple(shuffled)), member, policy, now, usage)
    assert (a.gross, a.discount, a.net, a.applied, a.by_rule) == (
        b.gross,
        b.discount,
        b.net,
        b.applied,
        b.by_rule,
    )
    assert a.not_applied == b.not_applied and a.reasons == b.reasons
    assert sorted(a.lines, key=repr) == sorted(b.lines, key=repr)


@QUICK
@given(cases())
def test_the_same_inputs_give_the_same_quote(case) -> None:
    basket, member, policy, now, usage = case
    first = quote(basket, member, policy, now, usage)
    again = quote(basket, member, policy, now, dict(usage))
    assert isinstance(first, Quote) and first == again


@PROFILE
@given(
    cases(),
    st.none()
    | st.builds(
        Membership,
        status=st.sampled_from(("active", "suspended", "lapsed")),
        tier=st.integers(0, 3),
        valid_until=st.none() | st.dates(date(2025, 12, 1), date(2027, 1, 31)),
    ),
)
def test_the_audit_s_discount_is_the_quote_s(case, other: Membership | None) -> None:
    """discount_owed (the audit's recompute, without the quote's lines and reasons)
    gives the quote's discount, for members and not, in and out of their validity."""
    basket, member, policy, now, usage = case
    for who in (member, other):
        assert discount_owed(basket, who, policy, now, usage) == (
            quote(basket, who, policy, now, usage).discount
        )


@PROFILE
@given(cases())
def test_a_quota_is_never_exceeded_by_one_sale(case) -> None:
    basket, member, policy, now, usage = case
    q = quote(basket, member, policy, now, usage)
    by_id = {r.id: r for r in policy.rules}
    for rule_id, given_fen in q.by_rule:
        quota = by_id[rule_id].quota
        if quota is None:
            continue
        used = usage.get(rule_id, RuleUsage())
        if quota.uses is not None:
            assert used.uses + 1 <= quota.uses
        if quota.amount is not None:
            assert used.amount + given_fen <= quota.amount


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policies(),
    members,
    st.lists(st.tuples(baskets, st.integers(0, 6 * 3600)), min_size=1, max_size=12),
    moments,
)
def test_a_quota_is_never_exceeded_over_many_sales(policy, member, sales, start) -> None:
    """Sell again and again, counting usage as the journal does: quotas hold per period."""
    assume(any(r.quota is not None for r in policy.rules))
    journal: list[tuple[datetime, dict[str, int]]] = []
    now = start
    for basket, gap in sales:
        now += timedelta(seconds=gap)
        usage = {
            rule_id: RuleUsage(
                sum(1 for at, d in journal if at >= since and rule_id in d),
                sum(d.get(rule_id, 0) for at, d in journal if at >= since),
            )
            for rule_id, since in quota_periods(policy, now)
        }
        q = quote(basket, member, policy, now, usage)
        journal.append((now, dict(q.by_rule)))
        for rule_id, since in quota_periods(policy, now):
            quota = next(r.quota for r in policy.rules if r.id == rule_id)
            assert quota is not None
            in_period = [d[rule_id] for at, d in journal if at >= since and rule_id in d]
            if quota.uses is not None:
                assert len(in_period) <= quota.uses
            if quota.amount is not None:
                assert sum(in_period) <= quota.amount


@QUICK
@given(cases())
def test_no_member_no_discount(case) -> None:
    basket, _, policy, now, usage = case
    q = quote(basket, None, policy, now, usage)
    assert q.discount == 0 and q.applied == () and english(q.reasons) == ["not a member"]
    suspended = Policy(**{**policy.__dict__, "status": "suspended"})
    q = quote(basket, Membership("active", 0, None), suspended, now, usage)
    assert q.discount == 0 and english(q.reasons) == ["merchant suspended: no member discounts"]


@PROFILE
@given(cases())
def test_best_picks_the_largest_single_offer(case) -> None:
    basket, member, policy, now, usage = case
    best = Policy(**{**policy.__dict__, "combine": "best"})
    q = quote(basket, member, best, now, usage)
    for rule in best.rules:
        alone = Policy(**{**best.__dict__, "rules": (rule,)})
        assert quote(basket, member, alone, now, usage).discount <= q.discount
