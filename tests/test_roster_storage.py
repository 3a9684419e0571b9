"""Bounded roster storage (issue 14, item 12): a roster file is kept only while a
terminal may still ask for it (the roster lifetime, the oldest version a live terminal
reported); terminals keep syncing from what is left. The rule on SQLite and
PostgreSQL; a terminal syncing on, through the service on SQLite."""

from __future__ import annotations

from datetime import timedelta

from central.service import Union
from pact.cards import luhn_complete
from pact.timefmt import iso
from tests.conftest import Site
from tests.helpers import MEMBER_PAN


def _versions(union: Union, kind: str) -> list[int]:
    latest = union.store.latest_version(kind)
    top = latest[0] if latest else 0
    return [v for v in range(1, top + 1) if union.store.signed(kind, v) is not None]


def test_old_rosters_go_once_no_terminal_can_ask_for_them(site: Site, clock) -> None:
    union = site.union
    many = "".join(f"M{n},{luhn_complete(f'62220200000001{n:02d}')}\n" for n in range(40))
    union.import_members("member_id,pan\n" + many)
    union.publish_roster()  # v2: 41 members (a full file: most of it changed)
    site.sync(clock)  # the terminal holds v2 and reports it
    for n in range(3, 8):  # a publication a day, each with one change: a delta each
        clock.advance(timedelta(days=1))
        union.import_members(f"member_id,pan\nU{n},{luhn_complete(f'62220200000000{n:02d}')}\n")
        union.publish_roster()
    assert _versions(union, "roster") == [1, 2, 3, 4, 5, 6, 7]
    deltas = _versions(union, "roster-delta")  # a compaction now and then: no delta
    assert deltas and set(deltas) <= {3, 4, 5, 6, 7}
    # the terminal, heard from 5 days ago, is not live: only the lifetime keeps files
    deleted, kept = union.prune_rosters()
    # made in the last 72 hours (v4 exactly then: a snapshot naming it is valid till now)
    assert _versions(union, "roster") == [4, 5, 6, 7]
    assert _versions(union, "roster-delta") == [v for v in deltas if v >= 4]
    left = 4 + len([v for v in deltas if v >= 4])
    assert (deleted, kept) == (3 + len(deltas) - (left - 4), left)
    assert union.prune_rosters() == (0, left)  # nothing more to delete
    # a live terminal that reports v5 keeps v5 past the lifetime
    site.sync(clock)  # it installs v7
    for _ in range(4):
        clock.advance(timedelta(days=1))
        union.publish_roster()  # v8 .. v11, a day apart
    union.store.report_terminal("T1", iso(clock()), {"roster_version": 6, "pending": 0})
    union.prune_rosters()
    assert _versions(union, "roster") == [6, 7, 8, 9, 10, 11]
    # it syncs on from what is left, to the newest, and its members still get discounts
    site.sync(clock)
    assert site.state.current.roster_version == 11
    assert site.sell(MEMBER_PAN, 10000, clock)["discount"] == "5.00"


def test_pruning_on_both_stores(union: Union, clock) -> None:
    """The same rule on SQLite and PostgreSQL, with a live terminal's report."""
    union.add_merchant("M0001", "Shop", 500)
    union.enrol_terminal("T1", "M0001", "http://127.0.0.1:9")
    for _ in range(5):  # v1 .. v5, a day apart
        union.publish_roster()
        clock.advance(timedelta(days=1))
    union.store.report_terminal("T1", iso(clock()), {"roster_version": 1, "pending": 0})
    files = len(_versions(union, "roster")) + len(_versions(union, "roster-delta"))
    assert union.prune_rosters() == (0, files)  # a live terminal holds v1: all stay
    union.store.revoke_terminal("T1", iso(clock()), "lost")  # not live any more
    union.prune_rosters()
    assert _versions(union, "roster") == [3, 4, 5]  # the last 72 hours'
    assert all(v >= 3 for v in _versions(union, "roster-delta"))
