"""The audit's costly checks in forked workers (central.parallel.ForkedWorkers, as
`central audit run` and `audit verify` run them) find what the audit finds in one
process: the same findings, in the same order, whatever the number of workers; a
card's quota use is counted over all its sales though its sales are one worker's
share among several."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import pytest

import bench.audit
from bench.audit import merchant_year
from bench.policy import policy_3
from central.parallel import ForkedWorkers
from pact.audit import IN_TURN, Facts, Finding, Thresholds, audit
from pact.chain import entry_hash
from pact.device import sign_entry
from pact.roster import Membership
from pact.sale import Sale


@pytest.fixture(scope="module")
def year(request: pytest.FixtureRequest) -> tuple[list[Sale], Facts, dict]:  # type: ignore[type-arg]
    # few cards, so that cards come back within a month: the dairy offer is once a month
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench.audit, "CARDS", 40)
        entries, signers = merchant_year(6, policy_3())
    keys = {t: s.public_key() for t, s in signers.items()}
    active = Membership("active", 0, None)
    policy = policy_3()
    facts = Facts(
        policy=lambda merchant, version: policy,
        device_key=keys.get,
        membership=lambda token, at: active if int(token, 16) % 10 else None,  # 1 in 10 left
        thresholds=Thresholds(card_uses_per_day=1000),  # the cards come back often here
    )
    return entries, facts, signers


def test_an_honest_year_is_clean_in_workers(year) -> None:  # type: ignore[no-untyped-def]
    entries, facts, _ = year
    members = dataclasses.replace(facts, membership=lambda token, at: Membership("active", 0, None))
    repeats = Counter((e.token, e.at[:7]) for e in entries if "dairy-3" in e.rules)
    assert max(repeats.values()) == 1  # the quota was honoured ...
    dairy = Counter((e.token, e.at[:7]) for e in entries if "MILK-1L" in str(e.basket))
    assert max(dairy.values()) > 1  # ... where cards came back for more dairy
    assert audit(entries, members, ForkedWorkers(2)) == []
    assert audit(entries, members, ForkedWorkers(3)) == []


def _tampered(entries: list[Sale], signers: dict) -> tuple[list[Sale], Sale]:  # type: ignore[type-arg]
    out = list(entries)
    out[10] = dataclasses.replace(out[10], discount=out[10].discount + 100)  # not re-hashed
    out[20] = dataclasses.replace(out[20], sig=out[22].sig)  # another entry's signature
    # a second dairy discount in a month to a card, re-sealed and re-signed on the terminal
    again = next(
        n
        for n, e in enumerate(out)
        if n > 40
        and "MILK-1L" in str(e.basket)
        and "dairy-3" not in e.rules
        and any(
            "dairy-3" in d.rules and d.token == e.token and d.at[:7] == e.at[:7] for d in out[:n]
        )
    )
    e = out[again]
    forged = dataclasses.replace(e, discount=e.discount + 300, net=e.net - 300)
    forged = dataclasses.replace(forged, hash=entry_hash(forged.prev_hash, forged))
    out[again] = sign_entry(signers[e.terminal_id], forged)
    return out, out[again]


def test_the_same_findings_in_workers_as_in_one_process(year) -> None:  # type: ignore[no-untyped-def]
    entries, facts, signers = year
    tampered, forged = _tampered(entries, signers)
    alone = audit(tampered, facts, IN_TURN)
    kinds = Counter(f.kind for f in alone)
    # edited, a bad signature, the forged quota (over), a fork after the re-sealed entry,
    # and the discounts to the cards that left
    assert {"edited", "bad_signature", "over_discount", "fork", "not_a_member"} <= set(kinds)
    over = {(f.terminal_id, f.seqs) for f in alone if f.kind == "over_discount"}
    assert (forged.terminal_id, (forged.seq,)) in over  # the quota, counted per card
    for workers in (2, 3, 5):
        assert audit(tampered, facts, ForkedWorkers(workers)) == alone, workers


def test_the_workers_are_processes_of_their_own() -> None:
    pids = ForkedWorkers(2)(lambda k: (k, os.getpid()), 4)
    assert [k for k, _ in pids] == [0, 1, 2, 3]
    assert os.getpid() not in {pid for _, pid in pids}
    assert ForkedWorkers(1)(lambda k: os.getpid(), 2) == [os.getpid()] * 2


def test_a_failure_in_a_worker_reaches_the_caller() -> None:
    def work(k: int) -> Finding:
        raise ValueError(f"share {k} failed")

    with pytest.raises(ValueError, match="share . failed"):
        ForkedWorkers(2)(work, 2)


class _Count:
    """A runner that records the shares' sizes (one worker each) and runs them in turn."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.sizes: list[int] = []

    def __call__(self, work, count):  # type: ignore[no-untyped-def]
        done = [work(k) for k in range(count)]
        self.sizes = [len(share.altered) for share in done]
        return done


def test_the_shares_hold_nearly_as_many_entries_each(year) -> None:  # type: ignore[no-untyped-def]
    """The audit waits for its largest share: each card's entries are dealt whole, the
    most first, to the share with fewest so far, so no share holds more than the
    busiest card's entries beyond another."""
    entries, facts, _ = year
    # every entry "altered" (its hash not its content's), so a share's findings count it
    altered = [dataclasses.replace(e, hash="0" * 64) for e in entries]
    busiest = max(Counter(e.token for e in entries).values())
    for workers in (2, 3, 4):
        runner = _Count(workers)
        audit(altered, facts, runner)
        assert sum(runner.sizes) == len(entries)
        assert len(runner.sizes) == workers
        assert max(runner.sizes) - min(runner.sizes) <= busiest, (workers, runner.sizes)
