"""The example policies in config/policies/: valid by the schema and by the terminal, and
priced right at the edges of each shop's rules (local time: Asia/Shanghai)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import jsonschema
import pytest

from pact.basket import Basket, Line, RuleUsage
from pact.discount import Quote, quote
from pact.errors import PolicyError
from pact.policy import Policy, StatusChange, load_policy_file, parse_terms
from pact.roster import Membership
from pact.text import Msg


def english(reasons: tuple[Msg, ...]) -> list[str]:
    """A quote's reasons in English (each is a message id with parameters)."""
    return [str(r) for r in reasons]


ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "config" / "policies").glob("*.json"))
SHANGHAI = ZoneInfo("Asia/Shanghai")
SCHEMA = json.loads((ROOT / "config" / "policy.schema.json").read_text())


def shop(name: str) -> Policy:
    policy, form = load_policy_file((ROOT / "config" / "policies" / f"{name}.json").read_bytes())
    assert form == "offer"
    return policy


def local(text: str) -> datetime:
    """A shop's wall-clock time, as the UTC instant the terminal's clock gives."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).astimezone(UTC)


def sell(
    policy: Policy,
    *lines: tuple[str, str, int, int],
    at: str = "2026-11-30 10:00",  # a Monday
    tier: int = 1,
    usage: dict[str, RuleUsage] | None = None,
) -> Quote:
    basket = Basket(tuple(Line(*line) for line in lines))
    return quote(basket, Membership("active", tier, None), policy, local(at), usage or {})


def test_every_shop_kind_has_an_example() -> None:
    names = {p.stem for p in EXAMPLES}
    assert names == {"supermarket", "salon", "cinema", "pharmacy", "billiards", "travel"}


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_are_valid_by_schema_and_engine(path: Path) -> None:
    raw = json.loads(path.read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(raw)
    policy, _ = load_policy_file(path.read_bytes())
    assert policy.rules


BAD_TERMS = [
    {"rules": [{"id": "r", "kind": "percent_off", "basis_points": 10001}]},
    {"rules": [{"id": "r", "kind": "percent_off"}]},
    {"rules": [{"id": "r", "kind": "percent_off", "basis_points": 5, "price": 1}]},
    {"rules": [{"id": "r", "kind": "amount_off", "amount": 0}]},
    {
        "rules": [
            {"id": "r", "kind": "free_item", "when": {"hours": [{"from": "9:00", "to": "10:00"}]}}
        ]
    },
    {"rules": [{"id": "r", "kind": "member_price", "price": 100, "eligible": {}}]},
    {"rules": [{"id": "r", "kind": "member_price", "price": 100, "quota": {"per": "day"}}]},
    {"rules": [], "rounding": "up"},
    {"rules": [], "merchant_id": "M1"},
    {"rule": []},
]


@pytest.mark.parametrize("terms", BAD_TERMS)
def test_schema_and_terminal_both_refuse(terms: dict) -> None:
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(terms)
    with pytest.raises(PolicyError):
        parse_terms(terms)


def test_schema_accepts_the_signed_forms(union_keys) -> None:
    from tests.helpers import policy_bytes

    signed = json.loads(
        policy_bytes(
            union_keys,
            datetime(2026, 11, 1, tzinfo=UTC),
            terms=json.loads((ROOT / "config" / "policies" / "billiards.json").read_text()),
        )
    )
    validator = jsonschema.Draft202012Validator(SCHEMA)
    validator.validate(signed)
    validator.validate(signed["signed"])


# ---------------------------------------------------------------------------- supermarket
def test_supermarket_five_percent_except_tobacco() -> None:
    policy = shop("supermarket")
    q = sell(policy, ("RICE", "grocery", 1, 10000), ("CIG", "tobacco", 2, 2500))
    assert (q.gross, q.discount, q.net) == (15000, 500, 14500)
    assert [lq.discount for lq in q.lines] == [500, 0]
    q = sell(policy, ("CIG", "tobacco", 1, 2500), ("LOTTO", "lottery", 1, 1000))
    assert q.discount == 0
    assert english(q.reasons) == ["5% off for members: no eligible items in the basket"]


@pytest.mark.parametrize(
    "unit_price, discount", [(10, 1), (9, 0), (12800, 640), (12810, 641), (12809, 640)]
)
def test_supermarket_rounds_half_up_to_the_fen(unit_price: int, discount: int) -> None:
    assert sell(shop("supermarket"), ("X", "grocery", 1, unit_price)).discount == discount


def test_supermarket_suspended_or_exited_merchant_gives_nothing() -> None:
    base = shop("supermarket")
    for status in ("suspended", "exited"):
        policy = Policy(**{**base.__dict__, "status": status})
        q = sell(policy, ("RICE", "grocery", 1, 10000))
        assert q.discount == 0 and english(q.reasons) == [f"merchant {status}: no member discounts"]
    scheduled = Policy(
        **{**base.__dict__, "status_changes": (StatusChange("exited", local("2026-12-01 00:00")),)}
    )
    assert sell(scheduled, ("R", "grocery", 1, 10000), at="2026-11-30 23:59").discount == 500
    assert sell(scheduled, ("R", "grocery", 1, 10000), at="2026-12-01 00:00").discount == 0


# ---------------------------------------------------------------------------- salon
def test_salon_member_price_haircut() -> None:
    policy = shop("salon")
    q = sell(policy, ("CUT", "haircut", 1, 4500), ("SHAMPOO", "care", 1, 3800))
    assert (q.discount, q.applied) == (1500, ("haircut-30",))
    assert [lq.net for lq in q.lines] == [3000, 3800]
    assert sell(policy, ("CUT", "haircut", 2, 4500)).discount == 3000
    gold = sell(policy, ("CUT", "haircut", 1, 4500), tier=2)
    assert (gold.discount, gold.applied) == (2000, ("haircut-gold-25",))
    assert any(
        "haircut-30" in n.rule_id and "gives more" in str(n.reason) for n in gold.not_applied
    )
    plain = sell(policy, ("CUT", "haircut", 1, 4500), tier=1)
    assert any("only for member tier 2 (this member is tier 1)" in str(r) for r in plain.reasons)


def test_salon_member_price_above_the_shop_price_gives_nothing() -> None:
    q = sell(shop("salon"), ("CUT", "haircut", 1, 2800))
    assert q.discount == 0
    assert "Haircut 30.00 for members: gives nothing at these prices" in english(q.reasons)


# ---------------------------------------------------------------------------- cinema
def test_cinema_one_free_film_a_month_and_snacks() -> None:
    policy = shop("cinema")
    q = sell(policy, ("F1", "film", 1, 4500), ("F2", "film", 1, 3500), ("POP", "snack", 1, 2000))
    assert q.applied == ("free-film", "snacks-10")
    assert [lq.discount for lq in q.lines] == [0, 3500, 200]  # the cheaper film is free
    used = sell(
        policy,
        ("F1", "film", 1, 4500),
        ("POP", "snack", 1, 2000),
        usage={"free-film": RuleUsage(uses=1)},
    )
    assert (used.discount, used.applied) == (200, ("snacks-10",))
    assert "One free film a month: quota used: 1/1 this month" in english(used.reasons)


def test_cinema_two_tickets_on_one_line_frees_one() -> None:
    q = sell(shop("cinema"), ("F1", "film", 2, 4000))
    assert q.discount == 4000 and q.lines[0].net == 4000


# ---------------------------------------------------------------------------- pharmacy
@pytest.mark.parametrize(
    "otc, discount, capped",
    [
        (10000, 800, False),
        (25000, 2000, False),  # exactly 20.00: not capped
        (25100, 2000, True),  # 20.08 -> capped at 20.00
        (30000, 2000, True),
        (12345, 980, False),  # 9.876 -> down to the jiao: 9.80
        (100, 0, False),  # 0.08 -> less than a jiao
    ],
)
def test_pharmacy_eight_percent_otc_capped_per_visit(otc: int, discount: int, capped: bool) -> None:
    q = sell(shop("pharmacy"), ("OTC", "otc", 1, otc), ("RX", "prescription", 1, 50000))
    assert q.discount == discount
    assert q.lines[1].discount == 0  # prescription medicine is never discounted
    assert any("capped at 20.00 per transaction" in str(r) for r in q.reasons) == capped


def test_pharmacy_prescription_only_gets_nothing() -> None:
    q = sell(shop("pharmacy"), ("RX", "prescription", 1, 50000))
    assert q.discount == 0
    assert english(q.reasons) == [
        "8% off over-the-counter medicine: no eligible items in the basket (otc)"
    ]


# ---------------------------------------------------------------------------- billiards
TABLE = ("T1", "table", 2, 3000)


@pytest.mark.parametrize(
    "at, discount, reason",
    [
        ("2026-11-30 13:59", 0, "outside hours 14:00-18:00"),  # Monday
        ("2026-11-30 14:00", 3000, None),  # start of the window
        ("2026-11-30 17:59", 3000, None),
        ("2026-11-30 18:00", 0, "outside hours 14:00-18:00"),  # end (exclusive)
        ("2026-12-05 15:00", 0, "only on Mon-Fri, not Sat"),
        ("2026-10-01 15:00", 0, "not on holidays (2026-10-01 is one)"),  # a Thursday
        ("2026-12-03 22:00", 1200, None),  # Thursday night: 20% off
        ("2026-12-04 01:59", 1200, None),  # still Thursday night, past midnight
        ("2026-12-04 02:00", 0, "outside hours 22:00-02:00"),
        ("2026-12-05 01:00", 0, "only on Mon-Thu, Sun, not Fri"),  # Friday night
        ("2026-11-30 01:00", 1200, None),  # Monday 01:00 is Sunday night
        ("2026-12-04 21:59", 0, "outside hours"),
    ],
)
def test_billiards_half_price_weekday_afternoons(at: str, discount: int, reason) -> None:
    q = sell(shop("billiards"), TABLE, at=at)
    assert q.discount == discount, q.reasons
    if reason is not None:
        assert any(reason in str(r) for r in q.reasons), q.reasons


def test_billiards_window_is_judged_in_shanghai_not_utc() -> None:
    policy = shop("billiards")
    basket = Basket((Line(*TABLE),))
    member = Membership("active", 0, None)
    # 06:00 UTC is 14:00 in Shanghai; 05:59:59 UTC is 13:59:59
    assert quote(basket, member, policy, datetime(2026, 11, 30, 6, 0, tzinfo=UTC)).discount == 3000
    before = datetime(2026, 11, 30, 5, 59, 59, tzinfo=UTC)
    assert quote(basket, member, policy, before).discount == 0


# ---------------------------------------------------------------------------- travel
@pytest.mark.parametrize(
    "lines, discount",
    [
        ([("TOUR", "tour", 1, 300000)], 30000),  # exactly at the minimum spend
        ([("TOUR", "tour", 1, 299999)], 0),  # one fen below
        ([("TOUR", "tour", 2, 150000)], 30000),  # two travellers
        ([("TOUR", "tour", 1, 299999), ("VISA", "visa", 1, 20000)], 0),  # visa fee not counted
        ([("TOUR", "tour", 1, 800000), ("GIFT", "gift_card", 1, 100000)], 30000),
    ],
)
def test_travel_three_hundred_off_a_tour_over_three_thousand(lines, discount: int) -> None:
    q = sell(shop("travel"), *lines)
    assert q.discount == discount
    if discount == 0:
        assert any(
            "minimum spend 3000.00 not reached (eligible items 2999.99)" in str(r)
            for r in q.reasons
        )
