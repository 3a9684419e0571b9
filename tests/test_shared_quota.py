"""Quotas across a shop's tills (issue 13, item 7): the union's usage file, signed with
the snapshot role, gives each terminal its merchant's other terminals' use; a member
who took the free film at till 1 is refused it at till 2 after till 2's next sync. On
SQLite and PostgreSQL, through the central service's HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from central import create_app
from central.keys import UnionKeys, create_keys
from central.serve import ThreadedServer
from central.service import CentralPaths, Union
from pact.basket import Basket, RuleUsage
from pact.errors import UsageError
from pact.signing import canonical_json
from pact.usage import verify_usage
from terminal.service import TerminalService
from terminal.state import TerminalState
from terminal.supervisor import set_pin
from terminal.syncing import sync_terminal
from tests.conftest import Clock
from tests.helpers import MEMBER_PAN
from tests.test_policy_checkout import FILM, POPCORN, card, terms

PIN = "2468"


@dataclass
class Till:
    service: TerminalService

    def sell(self, *lines):
        return self.service.checkout(Basket(tuple(lines)), confirm=True)

    def sync(self, clock):
        report = sync_terminal(self.service.state, self.service.journal, clock)
        assert not report.problems, report.problems
        return report


@pytest.fixture
def shop(
    union: Union, union_keys: UnionKeys, clock: Clock, tmp_path: Path
) -> Iterator[tuple[Union, Till, Till]]:
    """A cinema (one free film a month) with two tills, T1 and T2, on a central
    service over HTTP backed by ``union``'s store (SQLite or PostgreSQL)."""
    union.add_merchant("M0001", "Cinema", 0)
    union.publish_policy("M0001", terms("cinema"))
    union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    union.publish_roster()
    unused = CentralPaths(tmp_path / "unused")  # the app's own union: replaced below
    create_keys(unused.keys, now=clock())
    app = create_app({"DATA_DIR": str(unused.data_dir), "CLOCK": clock})
    app.extensions["unioncard"].close()
    app.extensions["unioncard"] = union  # the store under test
    tills = []
    with ThreadedServer(app) as server:
        for terminal_id in ("T1", "T2"):
            state = TerminalState(tmp_path / terminal_id)
            state.enrol(union.enrol_terminal(terminal_id, "M0001", server.url))
            member = card(state)
            service = TerminalService(
                state.dir, lambda *, timeout, tokenize, m=member: m, clock, card_timeout=1
            )
            tills.append(Till(service))
        try:
            for till in tills:
                till.sync(clock)
            yield union, tills[0], tills[1]
        finally:
            for till in tills:
                till.service.close()


def test_a_free_film_at_one_till_is_refused_at_the_other_after_its_sync(shop, clock) -> None:
    union, till1, till2 = shop
    first = till1.sell(FILM, POPCORN)
    assert first.sale.rules == ("free-film", "snacks-10") and first.sale.discount == 4700
    till1.sync(clock)
    clock.advance(timedelta(minutes=5))
    # before till 2's next sync, the film is still free there: the exposure within the
    # sync gap (docs/protocol.md, "Usage file")
    gap = till2.service.checkout(Basket((FILM,)))
    assert gap.priced.quote.discount == 4500
    till2.service.cancel(gap.id)
    till2.sync(clock)
    second = till2.sell(FILM, POPCORN)
    assert second.sale.rules == ("snacks-10",) and second.sale.discount == 200
    assert second.as_json()["reasons"] == ["One free film a month: quota used: 1/1 this month"]
    # till 1 counts till 2's sale the same way after its own sync, and its own from its
    # journal, never twice
    till2.sync(clock)
    till1.sync(clock)
    usage = till1.service.state.shared_usage()
    assert usage is not None
    token = first.sale.token
    assert token is not None
    since = usage.rules["free-film"][0]
    assert usage.lookup(token, "free-film", since, clock()) == RuleUsage(0, 0)  # T2 got none
    assert usage.lookup(token, "snacks-10", since, clock()) == RuleUsage(0, 0)  # no quota
    other = till2.service.state.shared_usage()
    assert other is not None
    assert other.lookup(token, "free-film", since, clock()) == RuleUsage(1, 4500)  # T1's


def test_a_void_at_one_till_gives_the_film_back_at_the_other(shop, clock) -> None:
    union, till1, till2 = shop
    set_pin(till1.service.state.dir, PIN)
    first = till1.sell(FILM)
    till1.service.void(first.sale.seq, "wrong card", PIN)
    till1.sync(clock)
    till2.sync(clock)
    assert till2.sell(FILM).sale.discount == 4500  # the void gave it back


def test_the_usage_of_a_past_period_no_longer_counts(shop, clock) -> None:
    union, till1, till2 = shop
    till1.sell(FILM)
    till1.sync(clock)
    till2.sync(clock)
    assert till2.sell(FILM).sale.discount == 0
    # 2026-11-30 21:30 UTC is 1 December 05:30 in Shanghai: a new month, a new free film,
    # though the usage file (of November) has not expired
    clock.advance(timedelta(days=2, hours=12))
    usage = till2.service.state.shared_usage()
    assert usage is not None and clock() < usage.expires_at
    assert till2.sell(FILM).sale.discount == 4500


def test_a_usage_file_must_be_the_unions_and_this_terminals(shop, clock) -> None:
    union, till1, till2 = shop
    till1.sell(FILM)
    till1.sync(clock)
    terminal = {"terminal_id": "T2", "merchant_id": "M0001"}
    data = union.usage_for(terminal)
    state = till2.service.state
    root = state.current.root
    keys = root.trusted("snapshot"), root.threshold("snapshot")
    assert verify_usage(data, *keys, merchant_id="M0001", terminal_id="T2", now=clock())
    # another terminal's file, or another merchant's
    with pytest.raises(UsageError, match="for terminal T2 of merchant M0001, not this one"):
        verify_usage(data, *keys, merchant_id="M0001", terminal_id="T1", now=clock())
    # a figure changed after signing
    envelope = json.loads(data)
    envelope["signed"]["rules"]["free-film"]["members"] = {}
    with pytest.raises(UsageError, match="bad signature"):
        state.install_usage(canonical_json(envelope), clock())
    # expired
    with pytest.raises(UsageError, match="expired"):
        state.install_usage(data, clock() + timedelta(days=4))
    with pytest.raises(UsageError, match="not JSON"):
        state.install_usage(b"{", clock())
    # the file kept is still the good one: the film stays refused at till 2
    till2.sync(clock)
    assert till2.sell(FILM).sale.discount == 0
