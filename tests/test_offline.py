"""The offline limits (issue 13, item 5): counted from the last successful sync, a
warning after 24 hours, no discounts after 72, none past the pending cap; each journaled
once as an event; nothing journaled ever dropped. The clock is injected."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from central import policies
from pact.basket import Basket
from pact.errors import PolicyError
from pact.event import EVENT, OFFLINE_LIMIT, event_code
from pact.offline import CAP, STOP, WARN, Limits, assess, limits_of
from pact.policy import parse_terms
from pact.timefmt import iso
from terminal.service import TerminalService
from terminal.syncing import sync_terminal
from terminal.syncrecord import RECORD_FILE, keep_sync, last_success
from terminal.web import create_app
from tests.conftest import Site
from tests.helpers import till_client
from tests.test_policy_checkout import FILM, MONDAY, POPCORN, card, make_shop, terms

HOUR = timedelta(hours=1)


def test_the_limits_count_from_the_last_sync() -> None:
    limits = Limits()
    at = lambda hours, pending=0: assess(limits, MONDAY, pending, MONDAY + hours * HOUR)  # noqa: E731
    assert at(23.9).reached == () and at(23.9).block is None and at(23.9).warnings == ()
    warn = at(24)
    assert warn.reached == (WARN,) and warn.block is None
    assert str(warn.warnings[0]) == (
        "no successful sync for 24 hours (since 2026-11-30T06:00:00Z): discounts stop "
        "at 2026-12-03T06:00:00Z unless the terminal syncs"
    )
    stop = at(72)
    assert stop.reached == (STOP,) and stop.block == stop.warnings[0]
    assert "no discounts until the terminal syncs" in str(stop.block)
    # the cap, on its own and beside the others
    assert at(1, 4999).reached == ()
    cap = at(1, 5000)
    assert cap.reached == (CAP,) and "5000 sales are waiting for upload" in str(cap.block)
    both = at(30, 6000)
    assert both.reached == (WARN, CAP) and both.block == both.warnings[1]
    assert at(80, 6000).block == at(80, 6000).warnings[0]  # the stop says it first
    # a clock behind the last sync is no time offline (the clock check refuses it)
    assert assess(limits, MONDAY, 0, MONDAY - 5 * HOUR).reached == ()
    # never synced, nothing installed: nothing to count from
    assert assess(limits, None, 0, MONDAY).reached == ()


def test_the_policy_may_set_other_limits() -> None:
    base = terms("cinema")
    policy = parse_terms(
        {**base, "offline_warn_hours": 2, "offline_stop_hours": 6, "pending_cap": 9}
    )
    assert limits_of(policy) == Limits(2 * HOUR, 6 * HOUR, 9)
    assert limits_of(parse_terms(base)) == Limits(24 * HOUR, 72 * HOUR, 5000)
    with pytest.raises(PolicyError, match="offline_warn_hours .*must be less than"):
        parse_terms({**base, "offline_warn_hours": 72, "offline_stop_hours": 72})
    with pytest.raises(PolicyError, match="pending_cap must be a whole number 1..1000000"):
        parse_terms({**base, "pending_cap": 0})
    with pytest.raises(PolicyError, match="offline_stop_hours must be a whole number 1..720"):
        parse_terms({**base, "offline_stop_hours": 721})


def _service(state, now: list) -> TerminalService:
    member = card(state)
    return TerminalService(state.dir, lambda *, timeout, tokenize: member, lambda: now[0])


def _limit_events(service: TerminalService) -> list[str]:
    return [
        e.note or ""
        for e in service.journal.sales()
        if e.kind == EVENT and event_code(e) == OFFLINE_LIMIT
    ]


def test_warning_then_stop_then_a_sync_restores_discounts(tmp_path: Path) -> None:
    state = make_shop(tmp_path, terms("cinema"))  # synced at MONDAY
    now = [MONDAY + 23 * HOUR]
    service = _service(state, now)
    try:
        snack = Basket((POPCORN,))
        sale = service.checkout(snack, confirm=True)
        assert (sale.verdict, sale.sale.discount) == ("member", 200)
        assert service.status()["offline"]["reached"] == [] and _limit_events(service) == []
        now[0] = MONDAY + 25 * HOUR
        status = service.status()
        assert status["offline"] == {
            "since": "2026-11-30T06:00:00Z",
            "warn_at": "2026-12-01T06:00:00Z",
            "stop_at": "2026-12-03T06:00:00Z",
            "pending_cap": 5000,
            "reached": ["warn"],
            "discounts": True,
        }
        assert any("no successful sync for 25 hours" in w for w in status["warnings"])
        sale = service.checkout(snack, confirm=True)
        assert (sale.verdict, sale.sale.discount) == ("member", 200)  # a warning only
        assert _limit_events(service) == [
            "offline-limit: warn since 2026-11-30T06:00:00Z: warning: the terminal has not synced"
        ]
        service.checkout(snack, confirm=True)
        assert len(_limit_events(service)) == 1  # once
        now[0] = MONDAY + 72 * HOUR
        stopped = service.checkout(Basket((FILM, POPCORN)), confirm=True)
        assert stopped.verdict == "sync_needed" and not stopped.member
        assert (stopped.sale.discount, stopped.sale.net) == (0, 6500)
        assert stopped.as_json()["reasons"] == [
            "no successful sync for 72 hours (since 2026-11-30T06:00:00Z): no discounts "
            "until the terminal syncs"
        ]
        assert service.status()["offline"]["discounts"] is False
        events = _limit_events(service)
        assert events[1].startswith("offline-limit: stop since 2026-11-30T06:00:00Z: ")
        service.checkout(snack, confirm=True)
        # a restart does not journal it again: the journal says it was
        service.close()
        service = _service(state, now)
        service.checkout(snack, confirm=True)
        assert len(_limit_events(service)) == 2
        # every sale is kept, in the chain
        assert service.journal.counts()[0] == 8 and service.journal.verify() == 8
        # a successful sync starts the count again
        keep_sync(state.dir, last_success_at=iso(now[0]))
        assert last_success(state.dir) == now[0]
        again = service.checkout(snack, confirm=True)
        assert (again.verdict, again.sale.discount) == ("member", 200)
        assert service.status()["offline"]["reached"] == []
        now[0] += 24 * HOUR  # a new stretch offline: a new warning
        service.checkout(snack, confirm=True)
        assert len(_limit_events(service)) == 3
    finally:
        service.close()


def test_the_status_counts_the_limits_from_the_sync_record_it_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync that succeeds while the status is being put together: the status shows
    one record, and its offline limits are counted from that record's last success
    (the sync record was read twice, and the two could disagree)."""
    state = make_shop(tmp_path, terms("cinema"))  # synced at MONDAY
    now = [MONDAY + 25 * HOUR]
    service = _service(state, now)
    record, read = state.dir / RECORD_FILE, Path.read_bytes
    synced: list[bool] = []

    def racing(path: Path) -> bytes:
        data = read(path)
        if path == record and not synced:  # a sync succeeds just after this read
            synced.append(True)
            keep_sync(state.dir, last_success_at=iso(now[0]))
        return data

    try:
        till = till_client(create_app(service))
        monkeypatch.setattr(Path, "read_bytes", racing)
        body = till.get("/api/v1/status").get_json()
        monkeypatch.undo()
        assert synced
        assert body["sync"]["last_success_at"] == body["offline"]["since"] == iso(MONDAY)
        assert body["offline"]["reached"] == ["warn"]
        # the next status reads the new record
        body = till.get("/api/v1/status").get_json()
        assert body["sync"]["last_success_at"] == body["offline"]["since"] == iso(now[0])
        assert body["offline"]["reached"] == []
    finally:
        service.close()


def test_a_sync_recorded_with_the_clock_ahead_does_not_put_the_stop_off(tmp_path: Path) -> None:
    """A sync run while the clock read 48 hours ahead recorded its success then, and the
    limits counted from that future time: discounts went on 48 hours past the stop.
    A success later than now counts from the union's snapshot instead."""
    state = make_shop(tmp_path, terms("cinema"))  # synced at MONDAY
    issued = state.current.snapshot.issued_at  # type: ignore[union-attr]
    keep_sync(state.dir, last_success_at=iso(MONDAY + 48 * HOUR))  # the clock was ahead
    now = [MONDAY + 3 * HOUR]  # and is right again
    service = _service(state, now)
    try:
        status = service.status()
        assert status["offline"]["since"] == iso(issued)
        assert now[0] - issued > 72 * HOUR and status["offline"]["reached"] == ["stop"]
        stopped = service.checkout(Basket((POPCORN,)), confirm=True)
        assert stopped.sale.discount == 0
    finally:
        service.close()


def test_past_the_pending_cap_members_get_no_discount_until_a_sync(tmp_path: Path) -> None:
    state = make_shop(tmp_path, {**terms("cinema"), "pending_cap": 3})
    now = [MONDAY + HOUR]
    service = _service(state, now)
    try:
        snack = Basket((POPCORN,))
        for _ in range(3):
            assert service.checkout(snack, confirm=True).sale.discount == 200
        assert service.journal.counts() == (3, 3)
        held = service.checkout(snack, confirm=True)
        assert held.verdict == "sync_needed" and held.sale.discount == 0
        assert "3 sales are waiting for upload (the limit is 3)" in held.as_json()["reasons"][0]
        [note] = _limit_events(service)
        assert note.startswith("offline-limit: cap since 2026-11-30T06:00:00Z: 3 entries wait")
        # nothing is dropped: the sale and its event are journaled, waiting too
        assert service.journal.counts() == (5, 5)
        till = till_client(create_app(service))
        answer = till.get("/api/v1/status").get_json()
        assert answer["offline"]["reached"] == ["cap"] and answer["offline"]["discounts"] is False
        assert any("waiting for upload" in w for w in answer["warnings"])
        # the sync uploads them all (marked uploaded) and records its success
        service.journal.mark_uploaded(5, now[0])
        keep_sync(state.dir, last_success_at=iso(now[0]))
        assert service.checkout(snack, confirm=True).sale.discount == 200
    finally:
        service.close()


def test_before_its_first_sync_a_terminal_counts_from_the_unions_snapshot(
    tmp_path: Path,
) -> None:
    state = make_shop(tmp_path, terms("cinema"))
    (state.dir / "sync.json").unlink()  # installed by hand: no sync recorded
    issued = state.current.snapshot.issued_at  # type: ignore[union-attr]
    now = [issued + 71 * HOUR]
    service = _service(state, now)
    try:
        assert service.status()["offline"]["since"] == iso(issued)
        assert service.checkout(Basket((POPCORN,)), confirm=True).verdict == "member"
        now[0] = issued + 72 * HOUR
        assert service.checkout(Basket((POPCORN,)), confirm=True).verdict == "sync_needed"
    finally:
        service.close()


def test_a_real_sync_lifts_the_stop(site: Site, clock) -> None:
    """Through the central service: the union's policy sets a 2-hour stop; the terminal
    stops giving discounts 2 hours after its last sync, and the next sync lifts it."""
    union = site.union
    offline = {"offline_warn_hours": 1, "offline_stop_hours": 2}
    union.publish_policy("M0001", {**policies.percent_terms(500), **offline})
    site.journal.close()
    member = card(site.state)
    service = TerminalService(site.state.dir, lambda *, timeout, tokenize: member, clock)
    try:
        sync_terminal(service.state, service.journal, clock)
        assert service.checkout(10000, confirm=True).sale.discount == 500
        clock.advance(2 * HOUR)
        held = service.checkout(10000, confirm=True)
        assert held.verdict == "sync_needed" and held.sale.discount == 0
        report = sync_terminal(service.state, service.journal, clock)
        assert not report.problems
        assert service.status()["pending_upload"] == 0
        assert service.checkout(10000, confirm=True).sale.discount == 500
        codes = [n.split(" ")[1] for n in _limit_events(service)]
        assert codes == ["warn", "stop"] or codes == ["stop"]
    finally:
        service.close()
