"""Event entries: start-up, clock jumps, updates installed or refused, integrity
failures and the offline limit are journaled in the signed chain, uploaded, and kept
out of the money."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from pact.basket import Basket
from pact.errors import WireFormatError
from pact.event import (
    CLOCK_JUMP,
    EVENT,
    INTEGRITY_FAILURE,
    OFFLINE_LIMIT,
    STARTUP,
    UPDATE_REFUSED,
    event_code,
    event_draft,
    event_note,
)
from pact.wire import decode_sales, encode_sales
from terminal.devicekey import load_public_key
from terminal.errors import UnknownSaleError
from terminal.journal import Journal
from terminal.service import TerminalService
from tests.conftest import Site
from tests.test_policy_checkout import FILM, LIFETIME, MONDAY, card, make_shop, terms
from unioncard.cli import cli


class Monotonic:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shop(tmp_path: Path):
    """A cinema terminal, its wall clock (a list holding now) and its monotonic clock."""
    state = make_shop(tmp_path, terms("cinema"))
    member = card(state)
    now = [MONDAY]
    mono = Monotonic()

    def open_service() -> TerminalService:
        return TerminalService(
            state.dir,
            lambda *, timeout, tokenize: member,
            lambda: now[0],
            card_timeout=1,
            monotonic=mono,
        )

    service = open_service()
    yield service, now, mono, open_service
    service.close()


def events_of(service: TerminalService) -> list[tuple[int, str | None]]:
    return [(e.seq, event_code(e)) for e in service.journal.sales() if e.kind == EVENT]


def test_an_event_moves_no_money_and_says_what_happened() -> None:
    draft = event_draft(
        STARTUP, "unioncard 0.1.0;\n roster v3", terminal_id="T1", merchant_id="M1",
        roster_version=3, policy_version=2,
    )  # fmt: skip
    assert (draft.kind, draft.note) == (EVENT, "startup: unioncard 0.1.0; roster v3")
    assert (draft.gross, draft.discount, draft.net, draft.rules, draft.token) == (0, 0, 0, (), None)
    assert len(event_note(UPDATE_REFUSED, "x" * 500)) == 200
    with pytest.raises(ValueError, match="not an event code"):
        event_note("reboot", "")


def test_start_up_is_journaled_signed_and_kept_off_the_cashiers_list(shop) -> None:
    service, _, _, _ = shop
    service.checkout(Basket((FILM,)), confirm=True)
    [event] = service.startup("9.9.9")
    assert (event.seq, event_code(event)) == (2, STARTUP)
    assert event.note == "startup: unioncard 9.9.9; roster v1, policy v1"
    assert (event.roster_version, event.policy_version) == (1, 1)
    assert service.journal.verify(load_public_key(service.state.dir)) == 2
    assert [r["seq"] for r in service.recent_sales()] == [1]  # the page lists sales only
    with pytest.raises(UnknownSaleError, match="entry 2 is an event"):
        service.receipt(2)


def test_a_clock_behind_the_newest_entry_is_journaled_at_start_up(shop) -> None:
    service, now, _, open_service = shop
    service.checkout(Basket((FILM,)), confirm=True)
    service.close()
    now[0] -= timedelta(hours=1)  # the Pi lost its time over a power cut
    again = open_service()
    try:
        events = again.startup("1")
        assert [event_code(e) for e in events] == [CLOCK_JUMP, STARTUP]
        assert "3600 s before entry time 2026-11-30T06:00:00Z" in (events[0].note or "")
        now[0] += timedelta(minutes=1)  # a small step back is no jump
        assert again.watch_clock(now[0]) == []
    finally:
        again.close()


def test_a_wall_clock_jump_in_the_daemon_is_journaled_before_the_next_sale(shop) -> None:
    service, now, mono, _ = shop
    mono.now += 30
    now[0] += timedelta(seconds=30)  # in step with the monotonic clock
    service.checkout(Basket((FILM,)), confirm=True)
    mono.now += 10
    now[0] += timedelta(hours=3, seconds=10)  # the wall clock leaps three hours ahead
    sale = service.checkout(Basket((FILM,)), confirm=True).sale
    assert events_of(service) == [(2, CLOCK_JUMP)] and sale.seq == 3
    assert "+10800 s against the monotonic clock" in (service.journal.entry(2).note or "")  # type: ignore[union-attr]
    mono.now += 5
    now[0] += timedelta(seconds=5)
    service.checkout(Basket((FILM,)), confirm=True)
    assert events_of(service) == [(2, CLOCK_JUMP)]  # once per jump


def test_the_offline_limit_is_journaled_once_per_expired_roster(shop) -> None:
    service, now, mono, _ = shop
    service.monotonic = None  # the test leaps a year: not a jump here
    now[0] = MONDAY - timedelta(days=40) + LIFETIME + timedelta(hours=1)
    first = service.checkout(Basket((FILM,)), confirm=True)
    assert first.sale.discount == 0 and not first.sale.member
    service.checkout(Basket((FILM,)), confirm=True)
    # the roster's expiry, once; and (pact.offline) a year without a sync, once
    events = [e for e in service.journal.sales() if e.kind == EVENT]
    assert [(e.seq, event_code(e)) for e in events] == [(1, OFFLINE_LIMIT), (2, OFFLINE_LIMIT)]
    note = events[0].note or ""
    assert "roster v1 expired at" in note and "no member discounts until the terminal syncs" in note
    assert (events[1].note or "").startswith("offline-limit: stop since ")


def test_a_broken_chain_is_journaled_as_an_integrity_failure_at_start_up(shop) -> None:
    service, _, _, open_service = shop
    service.checkout(Basket((FILM,)), confirm=True)
    service.close()
    db = sqlite3.connect(service.state.journal_path)
    db.execute("UPDATE sales SET discount = discount + 2000, net = net - 2000 WHERE seq = 1")
    db.commit()
    db.close()
    again = open_service()
    try:
        events = again.startup("1")
        assert [event_code(e) for e in events] == [INTEGRITY_FAILURE, STARTUP]
        assert "journal chain broken: sale 1" in (events[0].note or "")
    finally:
        again.close()


def test_the_tail_check_reads_only_what_the_union_does_not_hold(shop) -> None:
    service, _, _, _ = shop
    for _ in range(3):
        service.checkout(Basket((FILM,)), confirm=True)
    key = load_public_key(service.state.dir)
    assert service.journal.verify_tail(key) == 3
    service.journal.mark_uploaded(2, MONDAY)
    assert service.journal.verify_tail(key) == 1
    service.journal.mark_uploaded(3, MONDAY)
    assert service.journal.verify_tail(key) == 1  # the newest entry, always


def test_sync_journals_the_update_it_installed_and_uploads_it(site: Site, clock) -> None:
    site.journal.close()
    data = ["--data", str(site.state.dir)]
    done = CliRunner().invoke(cli, ["sync", *data], obj=clock)
    assert done.exit_code == 0, done.output
    assert (
        "sync: uploaded 1 entry (0 still pending), installed roster v1, installed policy v1; "
        "roster v1, policy v1 in service"
    ) in done.output
    journal = Journal(site.state.journal_path)
    try:
        [event] = journal.sales()
        assert event.note == "update-installed: roster v1, policy v1"
        assert journal.counts() == (1, 0)  # uploaded in the same sync
    finally:
        journal.close()
    [stored] = site.union.store.sales_for("T1")
    assert stored.kind == EVENT and stored.note == event.note
    [row] = [r for r in site.union.settlement() if r.merchant_id == "M0001"]
    assert (row.sales, row.gross, row.discount, row.voids, row.refunds) == (0, 0, 0, 0, 0)
    again = CliRunner().invoke(cli, ["sync", *data], obj=clock)
    assert "sync: uploaded 0 entries (0 still pending); " in again.output  # no event


def test_an_update_refused_by_hand_is_journaled(site: Site, clock, tmp_path: Path) -> None:
    site.journal.close()
    bad = tmp_path / "snapshot.json"
    bad.write_text('{"signed": {}, "signatures": []}')
    data = ["--data", str(site.state.dir)]
    done = CliRunner().invoke(
        cli, ["terminal", "install-update", "--snapshot", str(bad), *data], obj=clock
    )
    assert done.exit_code != 0
    journal = Journal(site.state.journal_path)
    try:
        [event] = journal.sales()
    finally:
        journal.close()
    assert event_code(event) == UPDATE_REFUSED and event.note.startswith("update-refused: by hand:")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gross": 100, "net": 100}, "an event moves no money"),
        ({"rules": ["r"]}, "an event moves no money"),
        ({"ref_seq": 1}, "an event names no entry"),
        ({"token": "ab"}, "an event has no card"),
        ({"note": "reboot: now"}, "note must say what happened"),
        ({"note": None}, "note must say what happened"),
    ],
)
def test_the_wire_refuses_a_malformed_event(shop, change, message) -> None:
    service, _, _, _ = shop
    service.checkout(Basket((FILM,)), confirm=True)
    service.startup("1")
    body = encode_sales("T1", service.journal.sales())
    assert decode_sales(body)[1][1].kind == EVENT  # as journaled, it travels
    body["sales"][1].update(change)
    with pytest.raises(WireFormatError, match=message):
        decode_sales(body)
