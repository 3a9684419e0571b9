"""The signed policy (document, verification, plain words) and the engine's basics."""

from __future__ import annotations

import ast
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.keys import UnionKeys
from pact.basket import Basket, Line
from pact.discount import quote
from pact.errors import PolicyError
from pact.money import fen, parse_yuan
from pact.policy import (
    build_policy,
    describe_policy,
    load_policy_file,
    parse_terms,
    percent_text,
    period_start,
    verify_policy,
    weekdays_text,
)
from pact.roster import Membership
from pact.signing import canonical_json, key_id, sign
from pact.text import N_, Msg
from tests.helpers import policy_bytes, trusted


def english(reasons: tuple[Msg, ...]) -> list[str]:
    """A quote's reasons in English (each is a message id with parameters)."""
    return [str(r) for r in reasons]


ROOT = Path(__file__).resolve().parents[1]
MEMBER = Membership("active", 1, None)
NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # Monday 14:00 in Shanghai


def _policy(keys, clock, **kw):
    return verify_policy(policy_bytes(keys, clock(), **kw), trusted(keys), merchant_id="M0001")


def amount(gross: int) -> Basket:
    return Basket.of_amount(gross)


@pytest.mark.parametrize(
    "gross, bp, rounding, discount",
    [
        (12800, 500, "half-up", 640),
        (10, 500, "half-up", 1),  # 0.5 fen rounds up
        (9, 500, "half-up", 0),  # 0.45 fen rounds down
        (10, 500, "down", 0),
        (19999, 1000, "down", 1999),
        (19999, 1000, "down-to-jiao", 1990),  # 19.999 -> 19.99 -> 19.90
        (100, 10000, "half-up", 100),  # free: never more than the amount
        (12345, 800, "down-to-jiao", 980),  # 9.876 -> 9.80
    ],
)
def test_percent_rounding(union_keys, clock, gross, bp, rounding, discount) -> None:
    policy = _policy(union_keys, clock, basis_points=bp, rounding=rounding)
    q = quote(amount(gross), MEMBER, policy, clock())
    assert (q.discount, q.net) == (discount, gross - discount)


@pytest.mark.parametrize(
    "member, status, lifetime, reason",
    [
        (None, "active", timedelta(days=1), "not a member"),
        (Membership("suspended", 1, None), "active", timedelta(days=1), "membership suspended"),
        (Membership("active", 1, date(2020, 1, 1)), "active", timedelta(days=1), "ended"),
        (MEMBER, "exited", timedelta(days=1), "merchant exited"),
        (MEMBER, "suspended", timedelta(days=1), "merchant suspended"),
        (MEMBER, "active", timedelta(seconds=-1), "expired"),
    ],
)
def test_no_discount_with_reason(union_keys, clock, member, status, lifetime, reason) -> None:
    # a policy that expired before "now": issue it in the past
    policy = verify_policy(
        policy_bytes(
            union_keys,
            clock() - timedelta(days=2),
            status=status,
            lifetime=timedelta(days=2) + lifetime,
        ),
        trusted(union_keys),
        merchant_id="M0001",
    )
    q = quote(amount(5000), member, policy, clock())
    assert q.discount == 0 and q.net == 5000 and q.applied == ()
    assert [lq.discount for lq in q.lines] == [0]
    assert any(reason in str(r) for r in q.reasons), q.reasons


def test_checkout_reason_for_not_a_member_is_kept(union_keys, clock) -> None:
    policy = _policy(union_keys, clock)
    reason = Msg.of(N_("not a union member"))
    q = quote(amount(5000), None, policy, clock(), not_member_reason=reason)
    assert q.reasons == (reason,) and str(q.reasons[0]) == "not a union member"


def test_policy_for_another_merchant_is_refused(union_keys, clock) -> None:
    with pytest.raises(PolicyError, match="for merchant M0002"):
        verify_policy(
            policy_bytes(union_keys, clock(), merchant_id="M0002"),
            trusted(union_keys),
            merchant_id="M0001",
        )


def test_policy_rollback_and_tamper_refused(union_keys: UnionKeys, clock) -> None:
    data = policy_bytes(union_keys, clock(), version=3)
    with pytest.raises(PolicyError, match="rollback"):
        verify_policy(data, trusted(union_keys), merchant_id="M0001", installed_version=3)
    tampered = data.replace(b'"basis_points":500', b'"basis_points":900')
    assert tampered != data
    with pytest.raises(PolicyError, match="bad signature"):
        verify_policy(tampered, trusted(union_keys), merchant_id="M0001")


def test_a_policy_signed_before_the_rule_language_still_verifies() -> None:
    """The v1 shape (percent_off only, rounding named) is a valid policy today."""
    key = Ed25519PrivateKey.generate()
    signed = {
        "type": "policy",
        "merchant_id": "M0001",
        "merchant_name": "Demo Supermarket",
        "status": "active",
        "version": 2,
        "issued_at": "2026-11-01T00:00:00Z",
        "expires_at": "2026-12-01T00:00:00Z",
        "rounding": "half-up",
        "rules": [{"id": "member-discount", "kind": "percent_off", "basis_points": 500}],
    }
    data = canonical_json(sign(signed, [key]))
    policy = verify_policy(data, {key_id(key.public_key()): key.public_key()}, merchant_id="M0001")
    assert (policy.combine, policy.timezone, len(policy.rules)) == ("best", "Asia/Shanghai", 1)
    assert quote(amount(12800), MEMBER, policy, NOW).discount == 640


def _signed_with(terms_or_fields: dict, **header) -> bytes:
    signed = {
        "type": "policy",
        "merchant_id": "M0001",
        "merchant_name": "Shop",
        "status": "active",
        "version": 1,
        "issued_at": "2026-11-01T00:00:00Z",
        "expires_at": "2026-12-31T00:00:00Z",
        **header,
        **terms_or_fields,
    }
    return json.dumps({"signed": signed, "signatures": []}).encode()


RULE = {"id": "r", "kind": "percent_off", "basis_points": 500}


@pytest.mark.parametrize(
    "terms, message",
    [
        ({"rules": [dict(RULE, basis_points=10001)]}, "rules[0].basis_points must be a whole"),
        ({"rules": [dict(RULE, basis_points=5.0)]}, "rules[0].basis_points must be a whole"),
        ({"rules": [dict(RULE, basis_points=True)]}, "rules[0].basis_points must be a whole"),
        ({"rules": [dict(RULE, kind="bogo")]}, "rules[0].kind is 'bogo'; it must be one of"),
        ({"rules": [dict(RULE, amount=100)]}, "rules[0].amount does not apply to a percent_off"),
        ({"rules": [dict(RULE, discount=5)]}, "rules[0].discount is not a known field"),
        ({"rules": [RULE, RULE]}, "rules[1].id 'r' is used twice"),
        ({"rules": [dict(RULE, id="a b")]}, "rules[0].id must be letters"),
        ({"rules": [dict(RULE, cap=0)]}, "rules[0].cap must be a whole number 1.."),
        ({"rules": [dict(RULE, min_spend=-1)]}, "rules[0].min_spend must be a whole number 0.."),
        ({"rules": [dict(RULE, eligible={})]}, "rules[0].eligible must name at least one"),
        (
            {"rules": [dict(RULE, eligible={"categories": ["Tobacco"]})]},
            "rules[0].eligible.categories[0] must be a lower-case category",
        ),
        (
            {"rules": [dict(RULE, when={"hours": [{"from": "14:00", "to": "25:00"}]})]},
            "rules[0].when.hours[0].to must be a time of day",
        ),
        (
            {"rules": [dict(RULE, when={"hours": [{"from": "14:00", "to": "14:00"}]})]},
            "from and to are equal",
        ),
        (
            {"rules": [dict(RULE, when={"weekdays": [0]})]},
            "rules[0].when.weekdays[0] must be a weekday number",
        ),
        (
            {"rules": [dict(RULE, when={"dates": [{"from": "2026-02-01", "to": "2026-01-01"}]})]},
            "is before from",
        ),
        ({"rules": [dict(RULE, when={"weekdays": []})]}, "when.weekdays is empty"),
        ({"rules": [dict(RULE, quota={"per": "year", "uses": 1})]}, "quota.per is 'year'"),
        ({"rules": [dict(RULE, quota={"per": "month"})]}, "must limit uses, amount or both"),
        ({"rules": [dict(RULE, tiers=[256])]}, "rules[0].tiers[0] must be a member tier 0..255"),
        ({"rules": [RULE], "rounding": "bankers"}, "rounding is 'bankers'"),
        ({"rules": [RULE], "combine": "all"}, "combine is 'all'"),
        ({"rules": [RULE], "timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus' is not a known"),
        ({"rules": [RULE], "holidays": ["2026-13-01"]}, "holidays[0] must be a date"),
        ({}, "rules is missing"),
        (
            {"rules": [RULE], "status_changes": [{"status": "gone", "at": "2026-12-01T00:00:00Z"}]},
            "status_changes[0].status is 'gone'",
        ),
    ],
)
def test_malformed_policies_are_refused_naming_the_field(terms, message) -> None:
    with pytest.raises(PolicyError) as err:
        load_policy_file(_signed_with(terms))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_expiry_before_issue_and_bad_times_refused() -> None:
    with pytest.raises(PolicyError, match="expires_at must be later"):
        load_policy_file(_signed_with({"rules": []}, expires_at="2026-10-01T00:00:00Z"))
    with pytest.raises(PolicyError, match="issued_at must be a UTC time"):
        load_policy_file(_signed_with({"rules": []}, issued_at="yesterday"))
    with pytest.raises(PolicyError, match="version must be a whole number 1"):
        load_policy_file(_signed_with({"rules": []}, version=0))


def test_build_refuses_what_a_terminal_would_refuse(union_keys) -> None:
    with pytest.raises(PolicyError, match="rules\\[0\\].basis_points"):
        policy_bytes(union_keys, NOW, terms={"rules": [dict(RULE, basis_points=-1)]})
    with pytest.raises(PolicyError, match="merchant_id is not a known field of a policy's terms"):
        policy_bytes(union_keys, NOW, terms={"rules": [], "merchant_id": "M9"})


def test_status_changes_take_effect_at_their_time(union_keys) -> None:
    exit_at = NOW + timedelta(hours=2)
    data = build_policy(
        merchant_id="M0001",
        merchant_name="Shop",
        status="active",
        status_since=NOW - timedelta(days=100),
        status_changes=[("exited", exit_at)],
        version=1,
        issued_at=NOW,
        expires_at=NOW + timedelta(days=30),
        terms={"rules": [RULE]},
        keys=[union_keys.policy],
    )
    policy = verify_policy(data, trusted(union_keys), merchant_id="M0001")
    assert policy.status_at(exit_at - timedelta(seconds=1)) == "active"
    assert policy.status_at(exit_at) == "exited"
    assert quote(amount(10000), MEMBER, policy, exit_at - timedelta(seconds=1)).discount == 500
    q = quote(amount(10000), MEMBER, policy, exit_at)
    assert q.discount == 0 and english(q.reasons) == ["merchant exited: no member discounts"]
    with pytest.raises(PolicyError, match="later than the change before it"):
        build_policy(
            merchant_id="M0001",
            merchant_name="Shop",
            status="active",
            status_changes=[("suspended", exit_at), ("active", exit_at)],
            version=1,
            issued_at=NOW,
            expires_at=NOW + timedelta(days=30),
            terms={"rules": [RULE]},
            keys=[union_keys.policy],
        )


def test_load_policy_file_reads_all_three_forms(union_keys) -> None:
    terms = {"rules": [RULE]}
    signed = policy_bytes(union_keys, NOW, terms=terms)
    assert load_policy_file(signed)[1] == "signed"
    assert load_policy_file(canonical_json(json.loads(signed)["signed"]))[1] == "document"
    offer, form = load_policy_file(json.dumps(terms).encode())
    assert form == "offer" and offer.status == "active" and not offer.is_expired(NOW)
    with pytest.raises(PolicyError, match="not valid JSON"):
        load_policy_file(b"{nope")
    with pytest.raises(PolicyError, match="exactly: signed, signatures"):
        load_policy_file(b'{"signed": {}, "extra": 1}')


def test_describe_policy_in_plain_words() -> None:
    policy = parse_terms(
        {
            "exclude": {"categories": ["tobacco"]},
            "rules": [
                dict(
                    RULE,
                    title="5% off",
                    cap=2000,
                    min_spend=5000,
                    tiers=[2, 3],
                    when={"weekdays": [1, 2, 3, 4, 5], "hours": [{"from": "22:00", "to": "02:00"}]},
                    quota={"per": "month", "uses": 1},
                )
            ],
        }
    )
    text = "\n".join(describe_policy(policy, "offer"))
    for words in (
        "never discounted: tobacco",
        "1. r (5% off): 5% off, on every item",
        "at least 50.00",
        "at most 20.00 per transaction",
        "Mon-Fri, 22:00-02:00",
        "only member tiers 2, 3",
        "at most 1 use per member per month",
    ):
        assert words in text, text


@pytest.mark.parametrize(
    "bp, text", [(500, "5%"), (750, "7.5%"), (825, "8.25%"), (10000, "100%"), (5, "0.05%")]
)
def test_percent_text(bp: int, text: str) -> None:
    assert percent_text(bp) == text


def test_weekdays_text() -> None:
    assert weekdays_text(frozenset({1, 2, 3, 4, 5})) == "Mon-Fri"
    assert weekdays_text(frozenset({6, 7})) == "Sat, Sun"
    assert weekdays_text(frozenset({1, 3})) == "Mon, Wed"


@pytest.mark.parametrize(
    "per, now, start",
    [
        # 2026-12-01 00:30 in Shanghai is still 2026-11-30 in UTC: the month is December
        ("month", "2026-11-30T16:30:00Z", "2026-11-30T16:00:00Z"),
        ("month", "2026-11-30T15:59:59Z", "2026-10-31T16:00:00Z"),
        ("day", "2026-11-30T15:59:59Z", "2026-11-29T16:00:00Z"),
        ("week", "2026-12-03T06:00:00Z", "2026-11-29T16:00:00Z"),  # Monday 2026-11-30 local
    ],
)
def test_quota_periods_follow_the_shops_local_calendar(per, now, start) -> None:
    from zoneinfo import ZoneInfo

    from pact.timefmt import iso, parse_iso

    assert iso(period_start(per, parse_iso(now), ZoneInfo("Asia/Shanghai"))) == start


def test_lines_keep_their_order_and_categories_compare_lower_case() -> None:
    from pact.basket import parse_basket

    basket = parse_basket(
        [
            {"sku": "CIG", "category": " Tobacco ", "qty": 1, "unit_price": "25.00"},
            {"sku": "A1", "category": "grocery", "unit_price": "1.50"},
        ]
    )
    assert basket.lines == (Line("CIG", "tobacco", 1, 2500), Line("A1", "grocery", 1, 150))
    policy = parse_terms({"exclude": {"categories": ["tobacco"]}, "rules": [RULE]})
    q = quote(basket, MEMBER, policy, NOW)
    assert [lq.discount for lq in q.lines] == [0, 8]


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], "1 to 500 lines"),
        ({"lines": "x"}, "must be a list of lines"),
        ([{"sku": "A", "category": "g", "qty": 0, "unit_price": "1"}], "basket[0].qty"),
        ([{"sku": "A", "category": "g", "qty": 1.0, "unit_price": "1"}], "basket[0].qty"),
        ([{"sku": "A", "category": "g", "unit_price": 12.5}], "basket[0].unit_price must be yuan"),
        ([{"sku": "A", "category": "g", "unit_price": "1.234"}], "more than two decimals"),
        ([{"sku": "A", "category": "g"}], "basket[0].unit_price is missing"),
        ([{"sku": "", "category": "g", "unit_price": "1"}], "basket[0].sku must be text"),
        ([{"sku": "A", "category": "g/h", "unit_price": "1"}], "basket[0].category must be"),
        ([{"sku": "A", "category": "g", "unit_price": "1", "name": "x"}], "unknown fields: name"),
        ([{"sku": "A", "category": "g", "qty": 9999, "unit_price": "999999"}], "above the limit"),
    ],
)
def test_bad_baskets_name_the_field(raw, message) -> None:
    from pact.basket import parse_basket

    with pytest.raises(ValueError) as err:
        parse_basket(raw)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], "usage must be an object"),
        ({"r": 1}, "usage['r'] must be an object"),
        ({"r": {"uses": -1}}, "usage['r'].uses must be a whole number"),
        ({"r": {"amount": 15}}, "usage['r'].amount must be yuan as a string"),
        ({"r": {"count": 1}}, "unknown fields: count"),
    ],
)
def test_bad_usage_names_the_field(raw, message) -> None:
    from pact.basket import parse_usage

    with pytest.raises(ValueError) as err:
        parse_usage(raw)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "text, value",
    [
        ("128", 12800),
        ("128.5", 12850),
        ("0.01", 1),
        ("1,280.00", 128000),
        ("1,280", 128000),
        ("１２８．５０", 12850),  # full-width, as a Chinese keyboard may type it
    ],
)
def test_parse_yuan(text: str, value: int) -> None:
    assert parse_yuan(text) == value
    assert fen(value) == f"{value // 100}.{value % 100:02d}"


@pytest.mark.parametrize(
    "text", ["", "abc", "-1", "0", "1.234", "nan", "inf", "99999999", "1e3", "0x10", "1_000"]
)
def test_parse_yuan_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_yuan(text)


@pytest.mark.parametrize("text", ["12,50", "1,2,3", "12,5", "1280,00", ",50"])
def test_a_comma_only_groups_thousands(text: str) -> None:
    """A decimal comma ("12,50" for 12.50) was read as 1250.00: every comma was dropped."""
    with pytest.raises(ValueError, match="a comma only groups thousands"):
        parse_yuan(text)


MONEY_MODULES = (
    "pact/policy.py",
    "pact/basket.py",
    "pact/discount.py",
    "pact/money.py",
    "pact/wire.py",
    "unioncard/auditor.py",
    "pact/sale.py",
    "terminal/checkout.py",
    "terminal/journal.py",
    "central/store.py",
    "central/policies.py",
)


def float_uses(source: str) -> list[str]:
    """Float literals, float() calls and true division (/) in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, float):
            found.append(f"line {node.lineno}: float literal {node.value!r}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "float":
            found.append(f"line {node.lineno}: float()")
        if isinstance(node, ast.BinOp | ast.AugAssign) and isinstance(node.op, ast.Div):
            found.append(f"line {node.lineno}: true division")
    return found


def test_the_float_check_catches_each_kind() -> None:
    assert len(float_uses("a = 0.5\nb = float(a)\nc = a / 2\nc /= 2\n")) == 4
    assert float_uses("a = 5 // 2\nb = divmod(5, 2)\n") == []


@pytest.mark.parametrize("name", MONEY_MODULES)
def test_no_float_in_money_code(name: str) -> None:
    """No float literal, float() call or true division in the money path."""
    assert float_uses((ROOT / name).read_text()) == [], name


def test_membership_end_is_judged_on_the_shop_day(union_keys, clock) -> None:
    """Valid until 28 Nov: still valid at 23:00 in Shanghai (15:00 UTC), not at 01:00 on
    29 Nov in Shanghai, although UTC still says 28 Nov (17:00)."""
    from datetime import UTC, datetime

    from pact.basket import Basket
    from pact.discount import quote as quote_basket

    policy = _policy(union_keys, clock)
    member = Membership("active", 1, date(2026, 11, 28))
    late_evening = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    after_midnight = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
    assert quote_basket(Basket.of_amount(10000), member, policy, late_evening).discount == 500
    ended = quote_basket(Basket.of_amount(10000), member, policy, after_midnight)
    assert ended.discount == 0 and any("ended" in str(r) for r in ended.reasons)
