"""Quote time for a 50-line basket under a 20-rule policy vs the durable journal commit it precedes.

Product: `pact.discount.quote` (pure; every rule is in its time window, so
each one is priced over the basket).
Baseline: as in bench/checkout.py, one INSERT + COMMIT of a row into an SQLite
file with WAL and synchronous=FULL: the journal write every checkout does after
its quote.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime

from bench.core import Context, Figure, paired, ratio_figure
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


def figures(ctx: Context) -> list[Figure]:
    rounds = ctx.scale(400, 80)
    folder = ctx.workdir / "policy"
    folder.mkdir(parents=True, exist_ok=True)
    basket, policy = basket_50(), policy_20()
    member = Membership("active", 1, None)
    now = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    usage = {r.id: RuleUsage(1, 1000) for r in policy.rules if r.quota is not None}
    sample = quote(basket, member, policy, now, usage)
    if len(sample.applied) < 10:
        raise RuntimeError(f"the bench policy applies only {len(sample.applied)} rules")

    base = sqlite3.connect(folder / "baseline.db", isolation_level=None)
    base.execute("PRAGMA journal_mode=WAL")
    base.execute("PRAGMA synchronous=FULL")
    base.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    payload = os.urandom(200).hex()

    def product() -> None:
        quote(basket, member, policy, now, usage)

    def baseline() -> None:
        base.execute("BEGIN")
        base.execute("INSERT INTO t (payload) VALUES (?)", [payload])
        base.execute("COMMIT")

    pair = paired(product, baseline, rounds)
    base.close()
    figure = ratio_figure(
        "quote (50 lines, 20 rules) vs durable commit (p50)",
        pair,
        "<= 0.1",
        "bare INSERT+COMMIT, WAL, synchronous=FULL",
    )
    figure.note = f"{len(sample.applied)} of 20 rules applied in sequence"
    return [figure]
