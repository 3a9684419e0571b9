"""`unioncard policy check`, `unioncard quote` and `unioncard central set-policy` as a
merchant, an auditor and union staff run them: one clear line and exit 1 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import invoke as run
from tests.test_cli import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "config" / "policies"
BASKET = [
    {"sku": "COLD", "category": "otc", "qty": 2, "unit_price": "150.00"},
    {"sku": "RX1", "category": "prescription", "qty": 1, "unit_price": "88.00"},
]


def write(path: Path, value: object) -> Path:
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def test_policy_check_prints_the_rules_in_plain_words() -> None:
    result = run("policy", "check", str(EXAMPLES / "pharmacy.json"))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "never discounted: gift_card, lottery, prescription, tobacco" in result.stdout
    assert "otc-8 (8% off over-the-counter medicine): 8% off, on otc, at most 20.00" in (
        result.stdout
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (
            {"rules": [{"id": "r", "kind": "percent_off", "basis_points": 12000}]},
            "rules[0].basis_points must be a whole number 0..10000",
        ),
        (
            {"rules": [{"id": "r", "kind": "percent_off", "basis_points": 5, "amount": 1}]},
            "rules[0].amount does not apply to a percent_off rule",
        ),
        ({"rules": [], "rounding": "up"}, "rounding is 'up'; it must be one of"),
        ("{not json", "not valid JSON"),
    ],
)
def test_policy_check_refuses_a_bad_policy_in_one_line(tmp_path, content, message) -> None:
    path = write(tmp_path / "bad.json", content)
    assert_one_line_error(run("policy", "check", str(path)), 1, f"{path}: {message}")


def test_policy_check_missing_file_is_one_line(tmp_path) -> None:
    result = run("policy", "check", str(tmp_path / "nope.json"))
    assert_one_line_error(result, 1, "cannot read the policy file")


def test_quote_prices_a_basket_line_by_line(tmp_path) -> None:
    basket = write(tmp_path / "basket.json", BASKET)
    result = run(
        "quote", "--policy", str(EXAMPLES / "pharmacy.json"), "--basket", str(basket), "--json"
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["gross"], body["discount"], body["net"]) == ("388.00", "20.00", "368.00")
    assert [line["discount_fen"] for line in body["lines"]] == [2000, 0]
    assert body["reasons"] == ["8% off over-the-counter medicine: capped at 20.00 per transaction"]
    text = run("quote", "--policy", str(EXAMPLES / "pharmacy.json"), "--basket", str(basket))
    assert "gross 388.00, discount 20.00, net 368.00" in text.stdout
    assert "applied: otc-8 20.00" in text.stdout


def test_quote_replays_a_time_a_tier_and_usage(tmp_path) -> None:
    films = write(
        tmp_path / "films.json",
        {"lines": [{"sku": "F1", "category": "film", "unit_price": "45.00"}]},
    )
    usage = write(tmp_path / "usage.json", {"free-film": {"uses": 1}})
    common = ["quote", "--policy", str(EXAMPLES / "cinema.json"), "--basket", str(films), "--json"]
    assert json.loads(run(*common).stdout)["discount_fen"] == 4500
    used = json.loads(run(*common, "--usage", str(usage)).stdout)
    assert used["discount_fen"] == 0
    assert used["not_applied"] == [
        {
            "rule": "free-film",
            "reason": "quota used: 1/1 this month",
            "reason_id": {
                "id": "quota used: %(used)s/%(quota)s %(period)s",
                "params": {"period": {"id": "this month", "params": {}}, "quota": 1, "used": 1},
            },
        },
        {
            "rule": "snacks-10",
            "reason": "no eligible items in the basket (drink, snack)",
            "reason_id": {
                "id": "no eligible items in the basket (%(items)s)",
                "params": {"items": "drink, snack"},
            },
        },
    ]
    tables = write(tmp_path / "t.json", [{"sku": "T", "category": "table", "unit_price": "30.00"}])
    billiards = ["quote", "--policy", str(EXAMPLES / "billiards.json"), "--basket", str(tables)]
    at_two = json.loads(run(*billiards, "--at", "2026-11-30T14:00", "--json").stdout)
    assert (at_two["at"], at_two["discount_fen"]) == ("2026-11-30T06:00:00Z", 1500)
    utc = json.loads(run(*billiards, "--at", "2026-11-30T05:59:59Z", "--json").stdout)
    assert utc["discount_fen"] == 0
    salon = write(tmp_path / "s.json", [{"sku": "CUT", "category": "haircut", "unit_price": "45"}])
    gold = ["quote", "--policy", str(EXAMPLES / "salon.json"), "--basket", str(salon), "--json"]
    assert json.loads(run(*gold, "--tier", "2").stdout)["discount_fen"] == 2000


@pytest.mark.parametrize(
    "basket, usage, message",
    [
        (
            [{"sku": "A", "category": "otc", "qty": 0, "unit_price": "1"}],
            None,
            "basket[0].qty must be a whole number 1..9999",
        ),
        (
            [{"sku": "A", "category": "otc", "unit_price": 3.5}],
            None,
            'basket[0].unit_price must be yuan as a string, like "12.50"',
        ),
        ("[", None, "the basket file is not valid JSON"),
        (BASKET, {"otc-8": {"uses": "one"}}, "usage['otc-8'].uses must be a whole number"),
        (BASKET, {"free-film": {"uses": 1}}, "usage names rule 'free-film', not in the policy"),
    ],
)
def test_quote_refuses_a_bad_basket_or_usage_in_one_line(tmp_path, basket, usage, message):
    args = ["quote", "--policy", str(EXAMPLES / "pharmacy.json")]
    args += ["--basket", str(write(tmp_path / "basket.json", basket))]
    if usage is not None:
        args += ["--usage", str(write(tmp_path / "usage.json", usage))]
    assert_one_line_error(run(*args), 1, message)


def test_quote_refuses_a_bad_policy_in_one_line(tmp_path) -> None:
    policy = write(tmp_path / "p.json", {"rules": [{"id": "r", "kind": "free_item", "items": 0}]})
    basket = write(tmp_path / "b.json", BASKET)
    result = run("quote", "--policy", str(policy), "--basket", str(basket))
    assert_one_line_error(result, 1, "rules[0].items must be a whole number 1..100")


def test_set_policy_drafts_and_a_second_admin_signs(tmp_path) -> None:
    data = str(tmp_path / "central")
    assert run("central", "init", "--data", data).returncode == 0
    added = run(
        "central", "add-merchant", "M0003", "--name", "Cinema", "--discount", "5", "--data", data
    )
    assert added.returncode == 0, added.stderr
    for name in ("ada", "bob"):
        made = run("central", "add-user", name, "--role", "admin", "--data", data)
        assert made.returncode == 0, made.stderr
    cinema = str(EXAMPLES / "cinema.json")
    result = run("central", "set-policy", "M0003", cinema, "--by", "ada", "--data", data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "merchant M0003: 2 rules; draft #1 by ada waits for a second admin: "
        "`unioncard central approve-policy 1 --by NAME`"
    )
    waiting = run("central", "drafts", "--data", data)
    assert waiting.stdout.startswith("#1 M0003: 2 rules, by ada at ")
    own = run("central", "approve-policy", "1", "--by", "ada", "--data", data)
    assert_one_line_error(own, 1, "ada drafted #1: a second admin must approve it")
    approved = run("central", "approve-policy", "1", "--by", "bob", "--data", data)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == "draft #1 approved by bob; M0003 policy v2 signed"
    again = run("central", "approve-policy", "1", "--by", "bob", "--data", data)
    assert_one_line_error(again, 1, "draft #1 was approved already")
    stranger = run("central", "set-policy", "M0003", cinema, "--by", "eve", "--data", data)
    assert_one_line_error(stranger, 1, "'eve' is not a union admin")
    bad = write(tmp_path / "bad.json", {"rules": [{"id": "r", "kind": "percent_off"}]})
    failed = run("central", "set-policy", "M0003", str(bad), "--by", "ada", "--data", data)
    assert_one_line_error(failed, 1, "bad.json: rules[0].basis_points is missing")
    unknown = run("central", "set-policy", "M9999", cinema, "--by", "ada", "--data", data)
    assert_one_line_error(unknown, 1, "no merchant M9999")
