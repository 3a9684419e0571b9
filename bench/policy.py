"""Quote time vs the durable journal commit it precedes: a typical basket (5 lines, a
shop's 3 rules) and an extreme one (50 lines, 20 rules).

Product: `pact.discount.quote` (pure; every rule is in its time window, so
each one is priced over the basket).
Baseline: as in bench/checkout.py, one INSERT + COMMIT of a row into an SQLite
file with WAL and synchronous=FULL: the journal write every checkout does after
its quote.

Each figure is the median of eleven paired runs (A B A B ...), the spread the range
and IQR of the runs' ratios.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime

from bench.core import Context, Figure, repeated, steady_figure
from pact.basket import Basket, Line, RuleUsage
from pact.discount import quote
from pact.policy import Policy, parse_terms
from pact.roster import Membership

CATEGORIES = ("grocery", "dairy", "bakery", "drink", "snack", "household", "otc", "tobacco")


def basket_50() -> Basket:
    return Basket(
        tuple(
            Line(f"SKU{i:04d}", CATEGORIES[i % len(CATEGORIES)], 1 + i % 3, 199 + 137 * i)
            for i in range(50)
        )
    )


def policy_20() -> Policy:
    """Twenty rules of every kind, with eligibility, caps, tiers, windows and quotas."""
    day = {"weekdays": [1, 2, 3, 4, 5, 6, 7], "hours": [{"from": "06:00", "to": "05:00"}]}
    rules = []
    for i in range(20):
        category = CATEGORIES[i % 7]  # never tobacco
        kind = ("percent_off", "amount_off", "member_price", "free_item")[i % 4]
        rule: dict[str, object] = {
            "id": f"rule-{i:02d}",
            "kind": kind,
            "eligible": {"categories": [category, CATEGORIES[(i + 1) % 7]]},
            "exclude": {"skus": [f"SKU{i:04d}"]},
            "min_spend": 1000 * i,
            "cap": 5000 + 100 * i,
            "when": day,
            "tiers": [0, 1, 2],
        }
        if kind == "percent_off":
            rule["basis_points"] = 300 + 50 * i
        elif kind == "amount_off":
            rule["amount"] = 500 + 10 * i
        elif kind == "member_price":
            rule["price"] = 300 + 20 * i
        else:
            rule["items"] = 1 + i % 3
        if i % 5 == 0:
            rule["quota"] = {"per": "month", "uses": 4, "amount": 20000}
        rules.append(rule)
    return parse_terms(
        {
            "combine": "sequence",
            "exclude": {"categories": ["tobacco", "lottery", "gift_card", "prescription"]},
            "holidays": ["2026-10-01"],
            "rules": rules,
        }
    )


def basket_5() -> Basket:
    return Basket(
        (
            Line("RICE-5KG", "grocery", 1, 4990),
            Line("MILK-1L", "dairy", 2, 1350),
            Line("BREAD", "bakery", 1, 880),
            Line("COLA-6", "drink", 1, 2190),
            Line("CHIPS", "snack", 3, 650),
        )
    )


def policy_3() -> Policy:
    """A supermarket's typical three rules: 5 % off for members, 10 % off drinks and
    snacks over 20.00, 3.00 off dairy (once a month)."""
    return parse_terms(
        {
            "combine": "sequence",
            "exclude": {"categories": ["tobacco", "lottery", "gift_card", "prescription"]},
            "rules": [
                {"id": "member-5", "kind": "percent_off", "basis_points": 500},
                {
                    "id": "snacks-10",
                    "kind": "percent_off",
                    "basis_points": 1000,
                    "eligible": {"categories": ["drink", "snack"]},
                    "min_spend": 2000,
                },
                {
                    "id": "dairy-3",
                    "kind": "amount_off",
                    "amount": 300,
                    "eligible": {"categories": ["dairy"]},
                    "quota": {"per": "month", "uses": 1},
                },
            ],
        }
    )


def figures(ctx: Context) -> list[Figure]:
    rounds, repeats = ctx.scale(400, 60), ctx.scale(11, 5)
    folder = ctx.workdir / "policy"
    folder.mkdir(parents=True, exist_ok=True)
    member = Membership("active", 1, None)
    now = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    cases = []
    for basket, policy, name, goal in (
        (basket_5(), policy_3(), "quote (5 lines, 3 rules) vs durable commit (p50)", "<= 0.05"),
        (basket_50(), policy_20(), "quote (50 lines, 20 rules) vs durable commit (p50)", "<= 0.4"),
    ):
        usage = {r.id: RuleUsage(0, 0) for r in policy.rules if r.quota is not None}
        sample = quote(basket, member, policy, now, usage)
        if len(sample.applied) < min(3, len(policy.rules)):
            raise RuntimeError(f"{name}: only {len(sample.applied)} rules applied")
        cases.append((basket, policy, name, goal, usage, sample))

    base = sqlite3.connect(folder / "baseline.db", isolation_level=None)
    base.execute("PRAGMA journal_mode=WAL")
    base.execute("PRAGMA synchronous=FULL")
    base.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    payload = os.urandom(200).hex()

    def baseline() -> None:
        base.execute("BEGIN")
        base.execute("INSERT INTO t (payload) VALUES (?)", [payload])
        base.execute("COMMIT")

    out = []
    for basket, policy, name, goal, usage, sample in cases:

        def product(
            basket: Basket = basket, policy: Policy = policy, usage: dict[str, RuleUsage] = usage
        ) -> None:
            quote(basket, member, policy, now, usage)

        runs = repeated(product, baseline, rounds, repeats)
        figure = steady_figure(name, runs, goal, "bare INSERT+COMMIT, WAL, synchronous=FULL")
        figure.note = f"{len(sample.applied)} of {len(policy.rules)} rules applied in sequence"
        out.append(figure)
    base.close()
    return out
