"""Checkout path vs a bare durable SQLite commit, with a roster of millions of members.

Product: `terminal.checkout.checkout` for a card identity already read (roster
lookup, quote, hash-chained journal append with WAL + synchronous=FULL).
Baseline: one INSERT + COMMIT of a row of the same size into another SQLite file
in the same folder with the same durability settings.
"""

from __future__ import annotations

import os
import sqlite3

from bench.core import Context, Figure, paired, ratio_figure
from bench.fixtures import terminal_with_roster
from pact.cards import PanTokenizer
from reader.identity import identity_from_pan
from terminal.checkout import checkout


def figures(ctx: Context) -> list[Figure]:
    members = ctx.scale(5_000_000, 180_000)
    rounds = ctx.scale(400, 80)
    site = terminal_with_roster(ctx.workdir / "checkout", members, ctx.clock)
    now = ctx.clock()
    identity = identity_from_pan(
        "unionpay",
        b"\xa0",
        site.member_pan,
        "2030-12",
        PanTokenizer(site.state.enrolment.token_key),
    )

    base = sqlite3.connect(ctx.workdir / "checkout" / "baseline.db", isolation_level=None)
    base.execute("PRAGMA journal_mode=WAL")
    base.execute("PRAGMA synchronous=FULL")
    base.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    payload = os.urandom(200).hex()

    def product() -> None:
        checkout(site.state.current, site.state.enrolment, site.journal, identity, 12800, now)

    def baseline() -> None:
        base.execute("BEGIN")
        base.execute("INSERT INTO t (payload) VALUES (?)", [payload])
        base.execute("COMMIT")

    pair = paired(product, baseline, rounds)
    site.journal.close()
    base.close()
    label = f"checkout vs durable commit, {members:,} members"
    return [
        ratio_figure(f"{label} (p50)", pair, "<= 2.0", "bare INSERT+COMMIT, WAL, synchronous=FULL"),
        ratio_figure(
            f"{label} (p99)", pair, "<= 3.0", "bare INSERT+COMMIT, WAL, synchronous=FULL", p=99
        ),
    ]
