"""The audit's behaviour checks and its stored runs (issue 15, item 1): each finding is
made the way it happens, through a real terminal, its journal, a sync and the central
service, and shows the right terminal and seq; the same history short of the trigger
has none. Then the evidence findings tests/test_audit.py does not make, and the store
of runs and findings on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import central.service
from central import policies
from central.console import UNFINISHED_AFTER
from central.errors import InputError
from central.store import Store, sales
from pact.audit import HIGH, MEDIUM, Thresholds
from pact.cards import PanTokenizer
from pact.event import OFFLINE_LIMIT, event_code
from pact.money import fen
from pact.timefmt import iso
from reader.identity import identity_from_pan
from terminal.checkout import checkout
from terminal.service import TerminalService
from terminal.supervisor import set_pin
from terminal.syncing import sync_terminal
from tests.conftest import Clock, Site
from tests.helpers import MEMBER_PAN, with_luhn
from tests.test_console import _csrf, console, sign_in  # noqa: F401 - the fixture
from tests.test_policy_checkout import card
from unioncard.cli import cli

HOUR = timedelta(hours=1)
PIN = "2468"


def audit(clock, tmp_path: Path, first: str, last: str | None = None) -> tuple[int, list[str]]:
    """`unioncard central audit run` on the test's clock: (exit status, lines)."""
    done = CliRunner().invoke(cli, audit_args(tmp_path, first, last), obj=clock)
    assert "audit run #" in done.stderr, done.output
    return done.exit_code, done.stdout.splitlines()


def audit_args(tmp_path: Path, first: str, last: str | None = None) -> list[str]:
    return [
        "central", "audit", "run", "--merchant", "M0001", "--from", first,
        "--to", last or first, "--by", "ada", "--data", str(tmp_path / "central"),
    ]  # fmt: skip


def kinds(lines: list[str]) -> list[str]:
    return [line.split(" detail=")[0] for line in lines]


def offline_terms(stop_hours: int) -> dict:
    return {
        **policies.percent_terms(500),
        "offline_warn_hours": 1,
        "offline_stop_hours": stop_hours,
    }


def test_a_terminal_silent_past_its_policys_offline_limit(site: Site, clock, tmp_path) -> None:
    union = site.union
    version = union.publish_policy("M0001", offline_terms(2))
    site.sync(clock)
    site.sell(MEMBER_PAN, 10000, clock)
    site.sell(MEMBER_PAN, 10000, clock)
    site.sync(clock)
    assert union.store.terminal("T1")["policy_version"] == version  # as it reported
    day = clock().date().isoformat()
    clock.advance(HOUR + HOUR)  # two hours: at the limit, not past it
    assert audit(clock, tmp_path, day) == (0, [])
    clock.advance(timedelta(minutes=30))
    code, lines = audit(clock, tmp_path, day)
    assert code == 1
    assert kinds(lines) == ["terminal=T1 seq=2 finding=silent"]
    assert "past its offline limit of 2 hours" in lines[0]
    assert "the union holds its entries up to 2" in lines[0]
    # a revoked terminal is expected to be silent
    union.store.revoke_terminal("T1", "stolen", "2026-11-28T12:00:00Z")
    assert audit(clock, tmp_path, day) == (0, [])


def test_voids_and_refunds_above_the_share_of_sales(site: Site, clock, tmp_path) -> None:
    site.sync(clock)
    set_pin(site.state.dir, PIN)
    day = clock().date().isoformat()
    minimum = Thresholds().reversal_min_sales
    for n in range(minimum):  # twenty shoppers, members or not
        site.sell(with_luhn(f"62148300001{n:04d}"), 1000, clock)
    service = TerminalService(site.state.dir, lambda **_: None, clock)  # type: ignore[arg-type,return-value]
    try:
        service.void(1, "wrong amount", PIN)
        service.void(2, "wrong amount", PIN)  # 2 of 20: 10 %, not above
        site.sync(clock)
        assert audit(clock, tmp_path, day) == (0, [])
        third = service.void(3, "customer left", PIN)
    finally:
        service.close()
    site.sync(clock)
    code, lines = audit(clock, tmp_path, day)
    assert code == 1
    assert kinds(lines) == [f"terminal=T1 seq={third.seq - 2},{third.seq - 1},{third.seq} "
                            "finding=reversal_share"]  # fmt: skip
    assert lines[0].endswith(
        "detail=3 voids and refunds against 20 sales (15%), above the 10% the audit allows"
    )


def test_a_card_used_more_than_n_times_a_day_in_the_shops_time_zone(
    site: Site, clock, tmp_path
) -> None:
    site.sync(clock)
    limit = Thresholds().card_uses_per_day
    clock.now = clock.now.replace(hour=15, minute=0)  # 23:00 in Shanghai, the policy's zone
    for _ in range(3):
        site.sell(MEMBER_PAN, 1000, clock)
        clock.advance(timedelta(minutes=10))
    clock.now = clock.now.replace(hour=16, minute=10)  # 00:10 the next day there
    for _ in range(limit):
        site.sell(MEMBER_PAN, 1000, clock)
        clock.advance(timedelta(minutes=10))
    site.sync(clock)
    # eight uses on one day in UTC, but three and five in Shanghai: at the limit
    assert audit(clock, tmp_path, "2026-11-28", "2026-11-29") == (0, [])
    over = site.sell(MEMBER_PAN, 1000, clock)
    site.sync(clock)
    code, lines = audit(clock, tmp_path, "2026-11-28", "2026-11-29")
    assert code == 1
    assert kinds(lines) == [f"terminal=T1 seq={over['seq']} finding=card_uses"]
    assert lines[0].endswith(
        f"card •••• {MEMBER_PAN[-4:]} was used {limit + 1} times on 2026-11-29 at this "
        f"merchant (more than {limit} a day): from here on"
    )


def test_members_turned_away_while_the_terminal_was_out_of_date(
    site: Site, clock, tmp_path
) -> None:
    union = site.union
    union.publish_policy("M0001", offline_terms(2))
    site.journal.close()
    member = card(site.state)
    service = TerminalService(site.state.dir, lambda *, timeout, tokenize: member, clock)
    day = clock().date().isoformat()
    try:
        sync_terminal(service.state, service.journal, clock)
        assert service.checkout(10000, confirm=True).sale.discount == 500
        sync_terminal(service.state, service.journal, clock)
        assert audit(clock, tmp_path, day) == (0, [])
        clock.advance(2 * HOUR)
        held = [service.checkout(10000, confirm=True).sale for _ in range(2)]
        assert [(s.discount, s.member) for s in held] == [(0, False), (0, False)]
        [stop] = [
            e
            for e in service.journal.sales()
            if event_code(e) == OFFLINE_LIMIT and " stop since " in (e.note or "")
        ]
        assert stop.seq < held[0].seq
        sync_terminal(service.state, service.journal, clock)
        assert service.checkout(10000, confirm=True).sale.discount == 500  # in date again
        sync_terminal(service.state, service.journal, clock)
    finally:
        service.close()
    code, lines = audit(clock, tmp_path, day)
    assert code == 1
    # not two under-discounts: the terminal kept the rule that stops discounts offline
    assert kinds(lines) == [f"terminal=T1 seq={held[0].seq},{held[1].seq} finding=turned_away"]
    assert (
        f"2 members got no discount ({fen(1000)} owed in all) while the terminal was out "
        f'of date: entry {stop.seq} says "{stop.note}"'
    ) in lines[0]


# ------------------------------------------------------------------ evidence, in the store
def test_an_entry_removed_from_the_unions_store_is_a_gap(site: Site, clock, tmp_path) -> None:
    site.sync(clock)
    for _ in range(3):
        site.sell(MEMBER_PAN, 1000, clock)
    site.sync(clock)
    with site.union.store.engine.begin() as conn:
        conn.execute(sa.delete(sales).where(sales.c.seq == 2))
    code, lines = audit(clock, tmp_path, clock().date().isoformat())
    assert (code, kinds(lines)) == (1, ["terminal=T1 seq=1,3 finding=gap"])
    assert lines[0].endswith("detail=entries 2 to 2 are missing")


def test_a_signature_replaced_in_the_unions_store_does_not_verify(
    site: Site, clock, tmp_path
) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 1000, clock)
    site.sell(MEMBER_PAN, 1000, clock)
    site.sync(clock)
    [first, second] = site.union.store.sales_for("T1")
    with site.union.store.engine.begin() as conn:
        conn.execute(sa.update(sales).where(sales.c.seq == 1).values(sig=second.sig))
    code, lines = audit(clock, tmp_path, clock().date().isoformat())
    assert (code, kinds(lines)) == (1, ["terminal=T1 seq=1 finding=bad_signature"])


def test_a_card_counter_going_backwards_is_found(site: Site, clock, tmp_path) -> None:
    site.sync(clock)
    tokenize = PanTokenizer(site.state.enrolment.token_key)
    for atc in (7, 9, 8):
        identity = identity_from_pan("unionpay", b"\xa0", MEMBER_PAN, "2030-12", tokenize, atc=atc)
        checkout(site.state.current, site.state.enrolment, site.journal, identity, 1000, clock())
        clock.advance(timedelta(minutes=1))
    site.sync(clock)
    code, lines = audit(clock, tmp_path, clock().date().isoformat())
    assert (code, kinds(lines)) == (1, ["terminal=T1 seq=3 finding=atc_backwards"])


def test_the_terminals_clock_going_back_is_found(site: Site, clock, tmp_path) -> None:
    site.sync(clock)
    clock.advance(HOUR)  # the member's standing is the union's from its start
    site.sell(MEMBER_PAN, 1000, clock)
    clock.advance(-timedelta(minutes=4))  # within the tolerance
    site.sell(MEMBER_PAN, 1000, clock)
    site.sync(clock)
    day = clock().date().isoformat()
    assert audit(clock, tmp_path, day) == (0, [])
    clock.advance(-timedelta(minutes=10))
    site.sell(MEMBER_PAN, 1000, clock)
    site.sync(clock)
    code, lines = audit(clock, tmp_path, day)
    assert (code, kinds(lines)) == (1, ["terminal=T1 seq=2,3 finding=time_backwards"])


def test_entries_dated_after_the_union_received_them_are_found(site: Site, clock, tmp_path) -> None:
    """The shop's clock put ahead (to make a time window's or a quota period's discount
    look due): entries dated later than the union received them, past the tolerance,
    are found, one finding per run of them; a clock ahead within it is not."""
    site.sync(clock)
    clock.advance(HOUR)
    site.sell(MEMBER_PAN, 1000, clock)
    site.sell(MEMBER_PAN, 1000, Clock(clock() + timedelta(minutes=4)))  # within the tolerance
    site.sync(clock)
    day = clock().date().isoformat()
    assert audit(clock, tmp_path, day) == (0, [])
    ahead = Clock(clock() + timedelta(hours=3))
    for _ in range(3):
        site.sell(MEMBER_PAN, 1000, ahead)
        ahead.advance(timedelta(minutes=1))
    site.sync(clock)  # the union receives them at its own time
    code, lines = audit(clock, tmp_path, day)
    assert (code, kinds(lines)) == (1, ["terminal=T1 seq=3,5 finding=dated_after_receipt"])
    assert f"3 entries dated as late as {iso(ahead() - timedelta(minutes=1))}" in lines[0]
    assert f"received this terminal's newest entry at {iso(clock())}" in lines[0]


# ------------------------------------------------------------------ stored runs
def test_each_run_and_its_findings_are_stored(site: Site, clock, tmp_path) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 10000, clock)
    site.sync(clock)
    day = clock().date().isoformat()
    assert audit(clock, tmp_path, day) == (0, [])
    with site.union.store.engine.begin() as conn:
        conn.execute(sa.update(sales).values(discount=300, net=9700))
    done = CliRunner().invoke(cli, [*audit_args(tmp_path, day), "--json"], obj=clock)
    assert done.exit_code == 1 and done.stderr.strip() == "audit run #2: 2 findings for M0001"
    out = done.stdout
    printed = json.loads(out)
    store = site.union.store
    runs = store.audit_runs("M0001")
    assert [(r["id"], r["findings"], r["run_by"], r["first_day"]) for r in runs] == [
        (2, 2, "ada", date.fromisoformat(day)),
        (1, 0, "ada", date.fromisoformat(day)),
    ]
    stored = store.audit_findings(run_id=2)
    assert [(f["terminal_id"], f["seqs"], f["kind"], f["detail"]) for f in stored] == [
        (p["terminal_id"], p["seqs"], p["kind"], p["detail"]) for p in printed
    ]
    assert stored[1]["message"] == printed[1]["detail_id"]  # translatable again


def test_the_store_keeps_runs_and_filters_findings(store: Store) -> None:
    store.add_merchant("M0001", "Shop", 500, "2026-11-28T09:00:00Z")
    store.add_merchant("M0002", "Other", 500, "2026-11-28T09:00:00Z")

    def finding(terminal: str, seqs: list[int], kind: str, severity: str) -> dict:
        return {
            "severity": severity,
            "terminal_id": terminal,
            "seqs": seqs,
            "kind": kind,
            "detail": f"{kind} at {seqs}",
            "detail_id": {"id": "%(what)s", "params": {"what": "中文 ok"}},
        }

    first = store.add_audit_run(
        "M0001", date(2026, 11, 1), date(2026, 11, 30), "2026-12-01T01:00:00Z", "ada",
        [finding("T1", [4], "over_discount", HIGH), finding("T2", [7, 9], "gap", HIGH),
         finding("T1", [12], "card_uses", MEDIUM)],
    )  # fmt: skip
    second = store.add_audit_run(
        "M0001", date(2026, 12, 1), date(2026, 12, 1), "2026-12-02T01:00:00Z", "bo", []
    )
    other = store.add_audit_run(
        "M0002", date(2026, 11, 1), date(2026, 11, 30), "2026-12-01T02:00:00Z", "ada",
        [finding("T9", [1], "silent", MEDIUM)],
    )  # fmt: skip
    assert len({first, second, other}) == 3
    assert [r["id"] for r in store.audit_runs("M0001")] == [second, first]
    assert [r["findings"] for r in store.audit_runs()] == [1, 0, 3]
    mine = store.audit_findings(merchant_id="M0001")
    assert [(f["terminal_id"], f["seqs"], f["kind"]) for f in mine] == [
        ("T1", [4], "over_discount"),
        ("T2", [7, 9], "gap"),
        ("T1", [12], "card_uses"),
    ]
    assert mine[0]["message"] == {"id": "%(what)s", "params": {"what": "中文 ok"}}
    assert mine[0]["run_id"] == first and mine[0]["first_day"] == date(2026, 11, 1)
    pick = lambda **kw: [(f["terminal_id"], f["kind"]) for f in store.audit_findings(**kw)]  # noqa: E731
    assert pick(merchant_id="M0001", severity=HIGH) == [("T1", "over_discount"), ("T2", "gap")]
    assert pick(merchant_id="M0001", terminal_id="T1", kind="card_uses") == [("T1", "card_uses")]
    assert pick(run_id=other) == [("T9", "silent")]
    assert pick(kind="silent", merchant_id="M0001") == []


def finished(store: Store, run_id: int, within: float = 60.0) -> dict:
    """The run once it is no longer running (the console runs it in a thread)."""
    deadline = time.monotonic() + within
    while True:
        [run] = [r for r in store.audit_runs() if r["id"] == run_id]
        if run["state"] != "running" or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def test_the_console_shows_a_run_running_then_its_findings_or_why_it_stopped(
    console,  # noqa: F811
    site: Site,
    clock,
) -> None:
    """A run the console started is shown running, on a page that looks again every
    5 s, until its findings are stored; a run that stopped says why (a refused request,
    an unexpected error), and one that has not said it is alive for 3 minutes (its
    process stopped) did not finish."""
    union = console.extensions["unioncard"]
    day = clock().date()
    aud, _ = sign_in(console, "aud")

    def page(run: int) -> str:
        return aud.get(f"/console/audit?merchant=M0001&run={run}").get_data(as_text=True)

    first = union.start_audit("M0001", day, day, "aud")
    text = page(first)
    assert 'data-state="running"' in text and '<meta http-equiv="refresh" content="5">' in text
    assert f"运行 #{first} 正在进行" in text and 'id="findings"' not in text
    union.finish_audit(first, "M0001", day, day)
    text = page(first)
    assert "refresh" not in text and 'id="run-state"' not in text and 'id="findings"' in text
    assert union.store.audit_runs()[0]["state"] == "done"

    refused = union.start_audit("M0001", day, day, "aud")
    union.finish_audit(refused, "M0001", day, day - timedelta(days=1))  # as if it were asked
    text = page(refused)
    assert 'data-state="failed"' in text and "check --from and --to" in text
    assert "refresh" not in text

    def broken(*args: object) -> list:
        raise RuntimeError("the disk went away")

    union.audit = broken
    stopped = union.start_audit("M0001", day, day, "aud")
    union.finish_audit(stopped, "M0001", day, day)
    [run] = [r for r in union.store.audit_runs() if r["id"] == stopped]
    assert run["state"] == "failed" and "RuntimeError" in run["error"]
    assert "the disk went away" not in run["error"]  # the log has it, not the page

    lost = union.start_audit("M0001", day, day, "aud")  # its process is gone: never finished
    assert 'data-state="running"' in page(lost)
    clock.advance(UNFINISHED_AFTER)
    assert 'data-state="running"' in page(lost)
    clock.advance(timedelta(seconds=1))
    text = page(lost)
    assert 'data-state="unfinished"' in text and "refresh" not in text
    with pytest.raises(InputError):
        union.start_audit("M0001", day, day - timedelta(days=1), "aud")  # refused at once


def test_a_run_says_it_is_alive_while_it_works(
    console,  # noqa: F811
    site: Site,
    clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that takes long says it is alive as it goes, so the page shows it running
    however long it takes (and not, like a run whose process stopped, unfinished)."""
    union = console.extensions["unioncard"]
    monkeypatch.setattr(central.service, "ALIVE_EVERY", 0.02)
    day = clock().date()
    aud, _ = sign_in(console, "aud")
    working, release = threading.Event(), threading.Event()
    audit = union.audit

    def slow(*args: object) -> list:
        working.set()
        release.wait(30)
        return audit(*args)

    union.audit = slow
    run = union.start_audit("M0001", day, day, "aud")
    worker = threading.Thread(target=union.finish_audit, args=(run, "M0001", day, day))
    worker.start()
    try:
        assert working.wait(30)
        clock.advance(UNFINISHED_AFTER * 3)  # the run has taken 9 minutes so far
        deadline = time.monotonic() + 30
        while union.store.audit_runs()[0]["alive_at"] != iso(clock()):
            assert time.monotonic() < deadline, "the run never said it is alive"
            time.sleep(0.02)
        text = aud.get(f"/console/audit?merchant=M0001&run={run}").get_data(as_text=True)
        assert 'data-state="running"' in text
    finally:
        release.set()
        worker.join(30)
    [row] = [r for r in union.store.audit_runs() if r["id"] == run]
    assert row["state"] == "done"


def test_the_console_runs_stores_and_filters_findings(console, site: Site, clock) -> None:  # noqa: F811
    """An auditor runs the audit on the console: the run is stored under their name,
    and its findings are listed, filtered by kind, severity, terminal and run, with
    a link to the merchant's history; a merchant's user may do none of it. (The
    fixture made one sale, uploaded; the union's store is then edited.)"""
    with site.union.store.engine.begin() as conn:
        conn.execute(sa.update(sales).values(discount=300, net=9700))
    day = clock().date()
    site.union.add_complaint("M0001", day, "refused the discount", "5010", "ada")
    aud, _ = sign_in(console, "aud")
    page = aud.get("/console/audit").get_data(as_text=True)
    assert 'data-run="' not in page  # no run yet
    done = aud.post(
        "/console/audit",
        data={"merchant": "M0001", "from": day, "to": day, "csrf_token": _csrf(page)},
    )
    assert done.status_code == 302 and done.headers["Location"].endswith(
        "/console/audit?merchant=M0001&run=1"
    )
    run = finished(site.union.store, 1)  # the run goes on in the background
    assert (run["run_by"], run["state"], run["findings"]) == ("aud", "done", 3)

    def rows(query: str) -> list[tuple[str, str, str]]:
        text = aud.get(f"/console/audit?{query}").get_data(as_text=True)
        return re.findall(
            r'<tr data-kind="(\w+)" data-severity="(\w+)"><td>\w+</td><td>([^<]*)<', text
        )

    assert rows("merchant=M0001&run=1") == [
        ("edited", "high", "T1"), ("under_discount", "medium", "T1"), ("complaint", "medium", "-"),
    ]  # fmt: skip
    assert rows("merchant=M0001&severity=high") == [("edited", "high", "T1")]
    assert rows("merchant=M0001&kind=complaint") == [("complaint", "medium", "-")]
    assert [k for k, _, _ in rows("merchant=M0001&terminal=T1")] == ["edited", "under_discount"]
    assert rows("run=2") == []
    for odd in ("²", "99999999999999999999", "-1"):  # not a run number: no filter, no 500
        assert aud.get(f"/console/audit?merchant=M0001&run={odd}").status_code == 200
    text = aud.get("/console/audit?merchant=M0001&run=1").get_data(as_text=True)
    assert f"会员 {day} 的投诉（卡 •••• 5010）：refused the discount" in text
    assert 'id="history" href="/console/merchants/M0001"' in text
    assert '<tr data-run="1">' in text
    shop, _ = sign_in(console, "shop1")
    assert shop.post("/console/audit", data={"merchant": "M0001"}).status_code in (400, 403)
    assert shop.get("/console/audit?merchant=M0001&run=1").status_code == 403


def test_a_started_run_is_kept_with_its_state_on_either_store(union, clock) -> None:
    """The store keeps a started run's state, on SQLite and on PostgreSQL: running with
    no findings, then done with them (and when), or failed with its line."""
    union.add_merchant("M0001", "Shop", 500)
    day = clock().date()
    union.add_complaint("M0001", day, "refused the discount", None, "ada")
    run = union.start_audit("M0001", day, day, "aud  \n x")
    [row] = union.store.audit_runs("M0001")
    assert (row["id"], row["state"], row["findings"], row["run_by"]) == (run, "running", 0, "aud x")
    assert row["alive_at"] == row["run_at"]
    clock.advance(timedelta(seconds=30))
    union.store.audit_run_alive(run, iso(clock()))  # what the running run says each minute
    assert union.store.audit_runs("M0001")[0]["alive_at"] == iso(clock())
    union.finish_audit(run, "M0001", day, day)
    [row] = union.store.audit_runs("M0001")
    assert (row["state"], row["findings"], row["finished_at"]) == ("done", 1, iso(clock()))
    clock.advance(timedelta(seconds=30))
    union.store.audit_run_alive(run, iso(clock()))  # too late: the run is done
    assert union.store.audit_runs("M0001")[0]["alive_at"] != iso(clock())
    assert [f["kind"] for f in union.store.audit_findings(run_id=run)] == ["complaint"]
    other = union.start_audit("M0001", day, day, "aud")
    union.finish_audit(other, "M0001", day, day - timedelta(days=1))
    row = union.store.audit_runs("M0001")[0]
    assert (row["id"], row["state"], row["findings"]) == (other, "failed", 0)
    assert "check --from and --to" in row["error"]
    assert union.store.audit_findings(run_id=other) == []
