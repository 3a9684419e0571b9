"""The audit of one merchant-year (issue 15): 500 sales a day for 365 days (182,500
sales) on two terminals, every discount recomputed (pact.audit: the signed policy,
the member's standing, the card's quota use at the merchant) and every device
signature checked, against a plain chain-hash verification of the same entries
(pact.chain.check_chain) in the same run.

The entries are made once, honestly (each discount is the policy's, with the card's
earlier use counted) and signed with a real device key per terminal (pact.device), so
a clean audit finds nothing: the bench checks that it does not.

The audit runs as `central audit run` and `audit verify` run it: its costly checks in
forked processes, one per core (central.parallel.ForkedWorkers). The baseline, a chain
check, is one loop in one process, as any auditor's script would be.
"""

from __future__ import annotations

import gc
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.core import Context, Figure, check, percentile, runs_spread
from bench.policy import policy_3
from central.parallel import ForkedWorkers
from pact.audit import Facts, audit
from pact.basket import Basket, Line, RuleUsage
from pact.chain import GENESIS, check_chain, seal
from pact.device import KeySigner, check_signature, sign_entry
from pact.discount import journal_record, quote
from pact.policy import Policy, quota_periods
from pact.roster import Membership
from pact.sale import Sale, SaleDraft
from pact.timefmt import iso

SALES_A_DAY = 500
TERMINALS = ("T1", "T2")
CARDS = 5_000  # the merchant's regular customers (members)
START = datetime(2025, 1, 1, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
ITEMS = (
    Line("RICE-5KG", "grocery", 1, 4990),
    Line("MILK-1L", "dairy", 2, 1350),
    Line("BREAD", "bakery", 1, 880),
    Line("COLA-6", "drink", 1, 2190),
    Line("CHIPS", "snack", 3, 650),
    Line("EGGS", "grocery", 1, 1290),
)


def merchant_year(days: int, policy: Policy) -> tuple[list[Sale], dict[str, KeySigner]]:
    """``days`` of sales at M0001, each priced by ``policy`` with the card's earlier
    quota use, chained and signed per terminal."""
    rng = random.Random(15)
    signers = {t: KeySigner(Ed25519PrivateKey.generate()) for t in TERMINALS}
    prev = dict.fromkeys(TERMINALS, GENESIS)
    seqs = dict.fromkeys(TERMINALS, 0)
    tokens = [f"{n:032x}" for n in range(CARDS)]
    member = Membership("active", 0, None)
    used: dict[tuple[str, str, datetime], RuleUsage] = {}
    entries = []
    step = timedelta(hours=12) / SALES_A_DAY
    for day in range(days):
        for n in range(SALES_A_DAY):
            at = START + timedelta(days=day) + n * step
            terminal = TERMINALS[n % len(TERMINALS)]
            token = tokens[rng.randrange(CARDS)]
            basket = Basket(tuple(rng.sample(ITEMS, rng.randint(1, 5))))
            periods = quota_periods(policy, at)
            usage = {r: used.get((token, r, since), RuleUsage()) for r, since in periods}
            q = quote(basket, member, policy, at, usage)
            for rule_id, since in periods:
                given = dict(q.by_rule).get(rule_id, 0)
                if given:
                    was = usage[rule_id]
                    used[(token, rule_id, since)] = RuleUsage(was.uses + 1, was.amount + given)
            draft = SaleDraft(
                terminal_id=terminal, merchant_id="M0001", token=token, pan_last4="1234",
                member=True, gross=q.gross, discount=q.discount, net=q.net, rules=q.applied,
                roster_version=1, policy_version=1, basket=journal_record(q, member),
                atc=None,
            )  # fmt: skip
            seqs[terminal] += 1
            sale = seal(
                draft, seq=seqs[terminal], sale_id=str(uuid.UUID(int=rng.getrandbits(128))),
                at=iso(at), prev_hash=prev[terminal],
            )  # fmt: skip
            sale = sign_entry(signers[terminal], sale)
            prev[terminal] = sale.hash
            entries.append(sale)
    return entries, signers


def _seconds(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def figures(ctx: Context) -> list[Figure]:
    days = ctx.scale(365, 10)
    rounds = ctx.scale(3, 2)
    policy = policy_3()
    made = time.perf_counter()
    entries, signers = merchant_year(days, policy)
    made = time.perf_counter() - made
    keys = {t: s.public_key() for t, s in signers.items()}
    member = Membership("active", 0, None)
    facts = Facts(
        policy=lambda merchant, version: policy,
        device_key=keys.get,
        membership=lambda token, at: member,
    )
    by_terminal = {t: [e for e in entries if e.terminal_id == t] for t in TERMINALS}

    found: list[object] = []

    runner = ForkedWorkers()  # as `central audit run` and `audit verify` run it

    def product() -> None:
        found[:] = audit(entries, facts, runner)

    def baseline() -> None:
        for chain in by_terminal.values():
            check_chain(chain, GENESIS, 0)

    def signatures() -> None:
        for t, chain in by_terminal.items():
            for e in chain:
                check_signature(keys[t], e)

    product_s, baseline_s = [], []
    for i in range(rounds):  # A B, B A, ...
        if i % 2 == 0:
            product_s.append(_seconds(product))
            baseline_s.append(_seconds(baseline))
        else:
            baseline_s.append(_seconds(baseline))
            product_s.append(_seconds(product))
    if found:
        raise RuntimeError(f"the honest merchant-year has {len(found)} findings: {found[:3]}")
    signed = _seconds(signatures)
    alone = _seconds(lambda: audit(entries, facts))  # one process, as the console runs it
    ratios = [p / b for p, b in zip(product_s, baseline_s, strict=True)]
    size = f"{len(entries):,} sales ({days} days of {SALES_A_DAY})"
    seconds = round(percentile(product_s, 50), 2)
    ratio = round(percentile(ratios, 50), 3)
    return [
        Figure(
            name=f"audit of one merchant-year, {size}, every discount and signature",
            value=seconds,
            unit="s",
            goal="<= 10" if not ctx.quick else None,
            met=check(seconds, "<= 10") if not ctx.quick else None,
            spread=runs_spread(product_s, f"{rounds} runs, s", ".2f"),
            note=(
                f"as `central audit run` runs it: its costly checks (each entry's hash and "
                f"signature, each sale's discount) in {runner.workers} forked processes, a "
                f"share of the cards each (central.parallel); in one process "
                f"{alone:.1f} s. Entries made and signed in {made:.1f} s; the signature "
                f"checks alone (Ed25519, libsodium, one core) {signed:.2f} s, "
                f"{signed / len(entries) * 1e6:.0f} µs each"
            ),
            detail={
                "entries": len(entries),
                "workers": runner.workers,
                "signatures_s": round(signed, 2),
                "one_process_s": round(alone, 2),
            },
            runs=[round(s, 3) for s in product_s],
        ),
        Figure(
            name=f"audit of one merchant-year vs chain-hash verification, {size}",
            value=ratio,
            unit="x",
            goal="<= 5",
            met=check(ratio, "<= 5"),
            baseline="pact.chain.check_chain over the same entries, per terminal",
            spread=runs_spread(ratios, f"{rounds} pairs", ".3f"),
            detail={
                "audit_s": round(percentile(product_s, 50), 3),
                "chain_s": round(percentile(baseline_s, 50), 3),
                "signatures_over_chain": round(signed / percentile(baseline_s, 50), 3),
            },
            runs=[round(r, 4) for r in ratios],
        ),
    ]


def prose(figures: list[Figure]) -> list[str]:
    """What the audit's time is made of, for docs/benchmarks.md (from this run's figures)."""
    whole = next((f for f in figures if f.name.startswith("audit of one merchant-year,")), None)
    ratio = next((f for f in figures if f.name.startswith("audit of one merchant-year vs")), None)
    if whole is None or whole.value is None or ratio is None or ratio.value is None:
        return []
    d, r = whole.detail, ratio.detail
    entries = d["entries"]
    signatures = d["signatures_s"]
    chain = r["chain_s"]
    return [
        "",
        "### The audit of a merchant-year",
        "",
        f"**The figures.** {whole.value:g} s (goal <= 10) and {ratio.value:g}x a chain check "
        f"(goal <= 5) for {entries:,} entries, with {d['workers']} workers; in one process "
        f"{d['one_process_s']:g} s.",
        "",
        f"**What they are made of.** Checking every entry's Ed25519 signature alone takes "
        f"{signatures:g} s on one core ({signatures / entries * 1e6:.0f} µs each, libsodium; "
        f"OpenSSL's took twice that), {signatures / chain:.1f}x the whole chain check "
        f"({chain:g} s, {chain / entries * 1e6:.1f} µs an entry with orjson's canonical JSON). "
        "So while the audit checks every signature, as the issue asks, it cannot come within "
        "5x of the chain check on one core, and within 5x on two only if nothing else cost "
        "anything: the rest of one process's audit, mostly the discounts recomputed (each "
        "sale priced by pact.discount.discount_owed, the quote without its lines' split "
        f"and reasons, with the card's quota use), takes {d['one_process_s'] - signatures:.1f} "
        "s more. Grouping the entries, parsing their times, the chains and the checks "
        f"across terminals run in the parent, under 1 s. The {d['workers']} workers together ran "
        f"{d['one_process_s'] / whole.value:.2f}x as fast as one process (each share's "
        "checks run slower side by side than alone on this machine). Under 10 s would "
        f"need about {(d['one_process_s'] - 1) / 9:.1f} cores' worth of the shares' work "
        "done at "
        "once, or fewer signatures to check (the chain makes the newest entry's signature "
        "vouch for every entry before it: checking one signature a batch, as the ingest "
        "does, would prove the same history, but not each entry's own signature).",
    ]
