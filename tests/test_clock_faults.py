"""Clock faults (issue 16, item 2): a terminal clock that jumps backwards or forwards.

Four things must hold whatever the clock does, and each test checks them end to end,
through the terminal's service, its journal, a sync and `unioncard central audit run`:

- the sequence numbers stay gapless (the journal verifies: chain and signatures);
- no entry's time goes below the **last trusted time**: the later of the newest time
  the union signed in the generation in service (root, snapshot, roster, policy
  issue times) and the terminal's newest journal entry (pact.generation.entry_time).
  An entry is journaled at the clock's time or, when the clock reads earlier, at
  the last trusted time; a sale is priced at that same time. A clock more than
  2 minutes behind it (5 behind signed time) is known to be wrong: members get no
  discount until the time is set;
- the jump is journaled as a ``clock-jump`` event, in the chain;
- the union's audit reports it (finding ``clock_jump``; members turned away while
  the clock was wrong, ``turned_away``, rather than as under-discounts).

The terminal's clock here is its own (a test clock and a hand-moved monotonic clock);
the union's clock (the ``clock`` fixture) keeps the right time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from pact.basket import Basket, Line
from pact.event import CLOCK_JUMP, EVENT, OFFLINE_LIMIT, STARTUP, UPDATE_INSTALLED, event_code
from pact.generation import ENTRY_TOLERANCE, Generation, entry_time
from pact.sale import Sale
from pact.timefmt import parse_iso
from terminal.checkout import price
from terminal.devicekey import load_public_key
from terminal.service import TerminalService
from terminal.supervisor import set_pin
from terminal.syncing import sync_terminal
from tests.conftest import Clock, Site
from tests.test_audit_behaviour import audit, kinds
from tests.test_events import Monotonic
from tests.test_policy_checkout import card

HOUR = timedelta(hours=1)
PIN = "2468"
ROOT = Path(__file__).resolve().parents[1]
CLOCK_MSG = (
    "the terminal journaled a clock jump (the times of the entries around it may be wrong): "
    "%(note)s"
)
BEHIND_MSG = (
    "the terminal's clock (%(now)s) is behind its newest journal entry (%(last)s): "
    "set the date and time"
)
TWO_UNITS = Basket((Line("TEA", "grocery", 2, 5000),))  # 100.00: 5.00 off for a member


@dataclass
class Till:
    """A terminal of the union's site, served by a TerminalService on a clock of its own."""

    site: Site
    wall: Clock  # the terminal's wall clock
    mono: Monotonic  # its monotonic clock (seconds)

    def open(self) -> TerminalService:
        member = card(self.site.state)
        return TerminalService(
            self.site.state.dir,
            lambda *, timeout, tokenize: member,
            self.wall,
            card_timeout=1,
            monotonic=self.mono,
        )

    def tick(self, delta: timedelta) -> None:
        """Time passes, both clocks in step."""
        self.wall.advance(delta)
        self.mono.now += delta.total_seconds()

    def jump(self, delta: timedelta, passed: float = 10.0) -> None:
        """The wall clock jumps by ``delta`` while ``passed`` seconds really pass."""
        self.wall.advance(delta + timedelta(seconds=passed))
        self.mono.now += passed


@pytest.fixture
def till(site: Site, clock: Clock) -> Iterator[Till]:
    """A terminal that installed the union's roster and policy (5 % off), its supervisor
    PIN set, an hour later (the member's standing at the union starts with the site)."""
    site.sync(clock)
    site.journal.close()
    set_pin(site.state.dir, PIN)
    clock.advance(HOUR)
    yield Till(site, Clock(clock()), Monotonic())


def checked(service: TerminalService) -> list[Sale]:
    """Every entry, after checking the four points' journal side: the chain and every
    device signature verify, the seqs run 1..n, and no entry's time is below the last
    trusted time when it was journaled (the signed times, and every entry before it)."""
    journal = service.journal
    entries = journal.sales()
    assert journal.verify(load_public_key(service.state.dir)) == len(entries)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    signed = service.state.current.last_trusted_time()
    assert signed is not None
    floor = signed
    for entry in entries:
        at = parse_iso(entry.at)
        assert at >= floor, (entry.seq, entry.at, floor)
        floor = at
    return entries


def events_of(entries: list[Sale]) -> list[tuple[int, str | None]]:
    return [(e.seq, event_code(e)) for e in entries if e.kind == EVENT]


def sync_with(till: Till, service: TerminalService, union: Clock) -> None:
    """A sync on the terminal's clock, with the union's clock set to the right time
    (the terminal's own, now that it reads right)."""
    union.now = till.wall()
    sync_terminal(service.state, service.journal, till.wall)
    assert service.journal.counts()[1] == 0  # all uploaded


# ---------------------------------------------------------------------------- pure
def test_the_entry_time_is_never_below_the_last_trusted_time(till: Till) -> None:
    generation: Generation = till.site.state.current
    signed = generation.last_trusted_time()
    assert signed is not None
    newest = signed + HOUR
    right = entry_time(generation, newest + timedelta(seconds=5), newest)
    assert (right.at, right.problem, right.last) == (newest + timedelta(seconds=5), None, newest)
    # a small step back (NTP slews; a clock a little off): the newest entry's time, trusted
    small = entry_time(generation, newest - ENTRY_TOLERANCE, newest)
    assert (small.at, small.problem, small.behind) == (newest, None, ENTRY_TOLERANCE)
    # further back: the same time, and the clock is known to be wrong
    back = entry_time(generation, newest - ENTRY_TOLERANCE - timedelta(seconds=1), newest)
    assert back.at == newest and back.problem is not None
    assert back.problem.id == BEHIND_MSG
    # behind the union's signed time, with no entry yet: that time, and refused
    early = entry_time(generation, signed - HOUR, None)
    assert early.at == signed and early.problem is not None
    assert "behind the last signed update" in str(early.problem)


# ------------------------------------------------------------------ a backward jump
def test_a_pi_that_lost_its_time_over_a_power_cut(till: Till, clock: Clock, tmp_path: Path) -> None:
    """The shop's power is cut; the Pi (no real-time clock) comes back an hour behind,
    and NTP sets it right a little later."""
    day = clock().date().isoformat()
    service = till.open()
    service.startup("test")
    first = service.checkout(TWO_UNITS, confirm=True).sale
    till.tick(timedelta(minutes=5))
    second = service.checkout(TWO_UNITS, confirm=True).sale
    assert (first.discount, second.discount) == (500, 500)
    service.close()

    till.wall.advance(-HOUR)  # the time fake-hwclock saved before the cut
    service = till.open()
    try:
        events = service.startup("test")
        assert [event_code(e) for e in events] == [CLOCK_JUMP, STARTUP]
        assert {e.at for e in events} == {second.at}  # journaled at the last trusted time
        assert (events[0].note or "").startswith(
            f"clock-jump: the clock reads {till.wall().strftime('%Y-%m-%dT%H:%M:%SZ')}, "
            f"3600 s before entry time {second.at}"
        )
        assert "members get no discount until the time is set" in (events[0].note or "")
        # a member is turned away, the sale journaled at the last trusted time
        held = service.checkout(TWO_UNITS, confirm=True)
        assert (held.sale.discount, held.sale.member, held.verdict) == (0, False, "roster_expired")
        assert held.sale.at == second.at
        assert [r.id for r in held.quote.reasons] == [BEHIND_MSG]
        status = service.status()
        assert any(w["id"] == BEHIND_MSG for w in status["warning_ids"])
        # a void and a refund under the wrong clock: the money goes back, at that time too
        void = service.void(first.seq, "wrong amount", PIN)
        refund = service.refund(second.seq, [(0, 1)], "one returned", PIN)
        assert (void.at, refund.at) == (second.at, second.at)
        assert events_of(service.journal.sales()) == [(1, STARTUP), (4, CLOCK_JUMP), (5, STARTUP)]
        # NTP sets the time: a step forward against the monotonic clock
        till.jump(HOUR + timedelta(minutes=5))
        fixed = service.checkout(TWO_UNITS, confirm=True)
        assert fixed.sale.discount == 500 and fixed.sale.at > second.at
        entries = checked(service)
        forward = [(s, c) for s, c in events_of(entries) if s > 5]
        assert forward == [(fixed.sale.seq - 1, CLOCK_JUMP)]
        assert "against the monotonic clock" in (entries[fixed.sale.seq - 2].note or "")
        sync_with(till, service, clock)
    finally:
        service.close()

    code, lines = audit(clock, tmp_path, day)
    assert code == 1
    assert kinds(lines) == [
        "terminal=T1 seq=4 finding=clock_jump",
        f"terminal=T1 seq={held.sale.seq} finding=turned_away",
        f"terminal=T1 seq={fixed.sale.seq - 1} finding=clock_jump",
    ]
    assert "3600 s before entry time" in lines[0]
    assert "1 members got no discount (5.00 owed in all)" in lines[1]


def test_a_clock_stepped_back_an_hour_while_running(
    till: Till, clock: Clock, tmp_path: Path
) -> None:
    day = clock().date().isoformat()
    service = till.open()
    try:
        before = service.checkout(TWO_UNITS, confirm=True).sale
        till.jump(-HOUR)
        held = [service.checkout(TWO_UNITS, confirm=True).sale]
        till.tick(timedelta(minutes=10))
        held.append(service.checkout(TWO_UNITS, confirm=True).sale)  # still behind
        assert [(s.discount, s.at) for s in held] == [(0, before.at), (0, before.at)]
        # the jump is journaled once, before the first sale it touched
        assert events_of(service.journal.sales()) == [(2, CLOCK_JUMP)]
        assert held[0].seq == 3
        till.tick(HOUR)  # the clock passes the newest entry again
        after = service.checkout(TWO_UNITS, confirm=True).sale
        assert after.discount == 500 and after.at > before.at
        entries = checked(service)
        assert events_of(entries) == [(2, CLOCK_JUMP)]
        sync_with(till, service, clock)
    finally:
        service.close()
    code, lines = audit(clock, tmp_path, day)
    assert code == 1
    assert kinds(lines) == [
        "terminal=T1 seq=2 finding=clock_jump",
        "terminal=T1 seq=3,4 finding=turned_away",
    ]


# ------------------------------------------------------------------ a forward jump
def test_a_clock_a_year_ahead_then_set_back(till: Till, clock: Clock, tmp_path: Path) -> None:
    """The clock leaps a year ahead and is set back by hand. Ahead, the roster and the
    offline limits have run out: no discount. Set back, the clock reads behind the
    entries journaled ahead: the terminal keeps their time and gives no discount (it
    cannot tell a clock set right from one set back to win discounts) until its clock
    passes them, or a person looks; the union's audit sees both jumps."""
    day = clock().date()
    service = till.open()
    try:
        right = service.checkout(TWO_UNITS, confirm=True).sale
        till.jump(timedelta(days=365))
        ahead = service.checkout(TWO_UNITS, confirm=True)
        assert ahead.sale.discount == 0 and ahead.verdict == "roster_expired"
        codes = [c for _, c in events_of(service.journal.sales())]
        assert codes == [CLOCK_JUMP, OFFLINE_LIMIT, OFFLINE_LIMIT]
        jumped = service.journal.entry(2)
        assert jumped is not None and "+31536000 s against the monotonic clock" in (
            jumped.note or ""
        )
        till.jump(-timedelta(days=365))  # set right by hand
        back = [service.checkout(TWO_UNITS, confirm=True) for _ in range(2)]
        assert [(b.sale.discount, b.sale.at) for b in back] == [(0, ahead.sale.at)] * 2
        assert [r.id for r in back[0].quote.reasons] == [BEHIND_MSG]
        till.tick(timedelta(days=1))  # a day later, still behind the entries made ahead
        later = service.checkout(TWO_UNITS, confirm=True).sale
        assert (later.discount, later.at) == (0, ahead.sale.at)
        entries = checked(service)
        assert [c for _, c in events_of(entries)] == [
            CLOCK_JUMP, OFFLINE_LIMIT, OFFLINE_LIMIT, CLOCK_JUMP,
        ]  # fmt: skip
        behind = [e for e in entries if event_code(e) == CLOCK_JUMP][1]
        assert behind.at == ahead.sale.at and behind.seq == back[0].sale.seq - 1
        sync_with(till, service, clock)
    finally:
        service.close()
    code, lines = audit(clock, tmp_path, day.isoformat(), (day + timedelta(days=400)).isoformat())
    assert code == 1
    assert kinds(lines) == [
        f"terminal=T1 seq={jumped.seq} finding=clock_jump",
        # every entry from the jump on is dated a year after the union received it
        f"terminal=T1 seq={jumped.seq},{later.seq} finding=dated_after_receipt",
        f"terminal=T1 seq={behind.seq} finding=clock_jump",
    ]  # no discount was owed a year ahead: the policy had expired by then
    assert right.discount == 500


def test_setting_the_clock_back_does_not_revive_an_expired_roster(till: Till) -> None:
    """Offline past the roster's expiry, the clock is set back before it: a little
    (within the tolerance: no jump) or a lot (a jump). Neither gives a discount the
    terminal would not give at its newest entry's time."""
    service = till.open()
    try:
        generation = service.state.current
        assert generation.roster is not None and generation.snapshot is not None
        assert service.checkout(TWO_UNITS, confirm=True).sale.discount == 500
        end = min(generation.roster.header.expires_at, generation.snapshot.expires_at)
        service.monotonic = None  # the shop is closed for three days: no daemon running
        till.wall.now = end + timedelta(seconds=30)
        expired = service.checkout(TWO_UNITS, confirm=True).sale
        assert expired.discount == 0
        # back by 90 s, within the tolerance: the roster would be valid at the clock's
        # time, but the sale is priced at the last trusted time, where it is not
        till.wall.now = end - timedelta(seconds=60)
        member = card(service.state)
        unclamped = price(
            generation, service.state.enrolment, service.journal, member, TWO_UNITS,
            till.wall(), None,
        )  # fmt: skip
        assert unclamped.draft.discount == 500  # what the clock alone would give
        nudged = service.checkout(TWO_UNITS, confirm=True)
        assert (nudged.sale.discount, nudged.sale.at) == (0, expired.at)
        assert nudged.verdict == "roster_expired"
        assert "expired at" in " ".join(str(r) for r in nudged.quote.reasons)
        # back two days: a jump, journaled, and no discount either
        till.wall.now = end - timedelta(days=2)
        far = service.checkout(TWO_UNITS, confirm=True)
        assert (far.sale.discount, far.sale.at) == (0, expired.at)
        assert [r.id for r in far.quote.reasons] == [BEHIND_MSG]
        entries = checked(service)
        codes = [c for _, c in events_of(entries)]
        assert codes.count(CLOCK_JUMP) == 1 and entries[far.sale.seq - 2].kind == EVENT
        assert event_code(entries[far.sale.seq - 2]) == CLOCK_JUMP
        assert UPDATE_INSTALLED not in codes
        offline = service.status()["offline"]
        assert offline["discounts"] is False  # the offline stop holds at the trusted time
    finally:
        service.close()


def test_the_clock_jump_finding_is_explained_in_chinese() -> None:
    """The audit's new kind, like the others, has its Chinese in both catalogues (the
    console's, and the terminal's, which holds all of pact's messages), and so has the
    reason a member gets no discount under a clock behind the newest entry."""
    for part in ("central", "terminal"):
        path = ROOT / part / "translations" / "zh" / "LC_MESSAGES" / "messages.po"
        with path.open("rb") as f:
            catalogue = read_po(f)
        message = catalogue.get(CLOCK_MSG)
        assert message is not None and message.string and not message.fuzzy, part
        assert "%(note)s" in str(message.string)
    terminal = ROOT / "terminal" / "translations" / "zh" / "LC_MESSAGES" / "messages.po"
    with terminal.open("rb") as f:
        message = read_po(f).get(BEHIND_MSG)
    assert message is not None and message.string and "%(last)s" in str(message.string)
