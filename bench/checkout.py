"""Checkout path vs a bare durable SQLite commit, with a roster of millions of members.

Product, as the evidence issue defines it: the keyed token of the card number
(HMAC: the first scheme, pact.cards.HMAC_SHA256), the roster lookup, the quote of a
shop's policy (the cinema's: a free film a month, 10 % off snacks and drinks) on a
5-line basket with the member's quota
use counted from the journal, and the durable journal append (WAL, synchronous=FULL).
Measured twice: without the device signature (a stand-in signer that returns a
fixed 64 bytes), and with it (Ed25519), as its own figure. 2,000 member cards take
turns, so quota counts look at a realistic few sales per card (about two a journal).

A union's tokens are now made memory-hard by default (issue 16: pact.cards.ARGON2ID, about
5 ms a tap on purpose, so that a stolen terminal's roster resists guessing); a checkout
with that token is measured too, as an informative figure beside the goals (defined
for the HMAC token), with the device signature, against the same baseline.

Baseline: one INSERT + COMMIT of a row the size of a journal row into another
SQLite file in the same folder with the same durability settings.

The three (without, with, baseline) run in turn, the order rotating, in eleven runs;
each figure is the median of the runs' ratios (at p50 or p99), with the range and
IQR of the runs beside it. This disk's commit time drifts by 2x within minutes and
the product is part commit, so its ratio drifts with it; only many runs spread over
the module's time and their median hold it still.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bench.core import Context, Figure, Paired, steady_figure, timed
from bench.fixtures import terminal_with_roster
from pact.basket import Basket, Line
from pact.cards import ARGON2ID, HMAC_SHA256, PanTokenizer, luhn_complete
from reader.identity import identity_from_pan
from terminal.checkout import checkout
from terminal.journal import Journal

CINEMA = Path(__file__).resolve().parents[1] / "config" / "policies" / "cinema.json"
BASKET = Basket(
    (
        Line("FILM-2D", "film", 1, 4500),
        Line("FILM-3D", "film", 1, 6500),
        Line("POPCORN-L", "snack", 2, 2800),
        Line("COLA", "drink", 2, 1200),
        Line("GIFT-50", "gift_card", 1, 5000),
    )
)
CARDS = tuple(luhn_complete(f"6214830{i:08d}") for i in range(2000))
BASELINE = "bare INSERT+COMMIT of a journal-row-sized row, WAL, synchronous=FULL"


class NoSignature:
    """A stand-in signer for the figure without the device signature."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key

    def public_key(self) -> Ed25519PublicKey:
        return self._key

    def sign(self, message: bytes) -> bytes:
        return bytes(64)


def interleaved(
    first: Callable[[], object],
    second: Callable[[], object],
    baseline: Callable[[], object],
    rounds: int,
    repeats: int,
) -> tuple[list[Paired], list[Paired]]:
    """Both products and the baseline in turn (order rotating each round), so the two
    ratios share every baseline sample: this disk's commit time drifts by 2x within
    minutes, and a ratio against a baseline taken at another moment moves with it."""
    for fn in (first, second, baseline) * 3:
        fn()
    out_first: list[Paired] = []
    out_second: list[Paired] = []
    gc.disable()
    try:
        for _ in range(repeats):
            a: list[float] = []
            b: list[float] = []
            base: list[float] = []
            for i in range(rounds):
                order = [(a, first), (b, second), (base, baseline)]
                for samples, fn in order[i % 3 :] + order[: i % 3]:
                    samples.append(timed(fn))
            out_first.append(Paired(a, base))
            out_second.append(Paired(b, base))
    finally:
        gc.enable()
    return out_first, out_second


def figures(ctx: Context) -> list[Figure]:
    members = ctx.scale(5_000_000, 180_000)
    rounds, repeats = ctx.scale(300, 60), ctx.scale(11, 5)
    folder = ctx.workdir / "checkout"
    terms = json.loads(CINEMA.read_text())
    site = terminal_with_roster(
        folder, members, ctx.clock, pans=CARDS, terms=terms, scheme=HMAC_SHA256
    )
    tokenize = PanTokenizer(site.state.enrolment.token_key, HMAC_SHA256)
    now = ctx.clock()
    unsigned = Journal(folder / "unsigned.db", NoSignature(site.state.signer().public_key()))
    cards = itertools.cycle(CARDS)
    hard = terminal_with_roster(
        folder / "argon2id", members, ctx.clock, pans=CARDS, terms=terms, scheme=ARGON2ID
    )
    hard_tokenize = PanTokenizer(hard.state.enrolment.token_key, ARGON2ID)

    def sell(journal: Journal) -> None:
        identity = identity_from_pan("unionpay", b"\xa0", next(cards), "2030-12", tokenize)
        checkout(site.state.current, site.state.enrolment, journal, identity, BASKET, now)

    def sell_hard() -> None:
        card = next(cards)
        identity = identity_from_pan("unionpay", b"\xa0", card, "2030-12", hard_tokenize)
        checkout(hard.state.current, hard.state.enrolment, hard.journal, identity, BASKET, now)

    sell(site.journal)
    row = json.dumps(site.journal.sales()[-1].as_row()).encode()
    base = sqlite3.connect(folder / "baseline.db", isolation_level=None)
    base.execute("PRAGMA journal_mode=WAL")
    base.execute("PRAGMA synchronous=FULL")
    base.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    payload = os.urandom(len(row))

    def baseline() -> None:
        base.execute("BEGIN")
        base.execute("INSERT INTO t (payload) VALUES (?)", [payload])
        base.execute("COMMIT")

    plain, signed = interleaved(
        lambda: sell(unsigned), lambda: sell(site.journal), baseline, rounds, repeats
    )
    _, memory_hard = interleaved(
        lambda: None, sell_hard, baseline, ctx.scale(100, 30), ctx.scale(5, 3)
    )
    sample = unsigned.sales()[-1]
    hard_sample = hard.journal.sales()[-1]
    hard.journal.close()
    site.journal.close()
    unsigned.close()
    base.close()
    if hard_sample.discount == 0 or sample.discount == 0 or len(sample.rules) < 1:
        raise RuntimeError("the bench basket got no discount: the cinema policy did not apply")
    label = f"checkout vs durable commit, {members:,} members, 5-line basket"
    note = (
        f"token, lookup, cinema policy quote with quota count, journal; "
        f"journal row {len(row)} bytes"
    )
    out = [
        steady_figure(f"{label}, no signature (p50)", plain, "<= 1.15", BASELINE),
        steady_figure(f"{label}, no signature (p99)", plain, "<= 1.3", BASELINE, p=99),
        steady_figure(f"{label}, with the device signature (p50)", signed, "<= 1.4", BASELINE),
        steady_figure(
            f"{label}, with the device signature and the memory-hard token (p50)",
            memory_hard,
            None,
            BASELINE,
        ),
    ]
    for figure in out:
        figure.note = note
    out[-1].note = (
        f"informative: the token made memory-hard (pact.cards.ARGON2ID, a new union's "
        f"default), {ctx.scale(5, 3)} runs of {ctx.scale(100, 30)}; otherwise as above: {note}"
    )
    return out
