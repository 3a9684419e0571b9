"""The terminal as one object: state + journal + a card reader, shared by the CLI and web.

The card reader is passed in as a function (``reader.fresh.FreshCardReader`` in
the daemon), so this module does not import pyscard.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, cast, overload
from zoneinfo import ZoneInfo

from pact.basket import Basket
from pact.cards import PanTokenizer
from pact.event import CLOCK_JUMP, EVENT, INTEGRITY_FAILURE, OFFLINE_LIMIT, STARTUP, event_draft
from pact.generation import EntryTime, Generation, entry_time
from pact.money import fen
from pact.offline import Offline, assess, limit_event, limits_of, noted_limits, to_note
from pact.policy import DEFAULT_TIMEZONE
from pact.receipt import Receipt, receipt
from pact.reversal import REFUND, VOID, refund_draft, refunded_units, void_draft
from pact.sale import Sale
from pact.text import N_, Msg
from pact.timefmt import iso, parse_iso
from reader.errors import NoCardError
from reader.identity import CardIdentity, Tokenize
from terminal.checkout import Priced, SaleResult, price, record
from terminal.disk import SALE_REFUSED, check_space, space_warning
from terminal.errors import (
    BusyError,
    DiskFullError,
    JournalDamagedError,
    JournalError,
    PendingError,
    PrinterError,
    TerminalError,
    UnknownSaleError,
)
from terminal.journal import ANSWERS_KEPT_FOR, Journal, Kept, Once
from terminal.printing import open_printer, print_receipt
from terminal.state import TerminalState
from terminal.supervisor import Supervisor
from terminal.syncrecord import last_sync, success_at

EXPIRY_WARNING = timedelta(hours=24)
# a clock that disagrees with the monotonic clock, or with the newest entry, by more
# than this has jumped (NTP slews small corrections; it does not step by minutes)
CLOCK_TOLERANCE = timedelta(minutes=2)
REMEMBERED_CONFIRMATIONS = 32  # quotes whose confirmation is answered again if asked
log = logging.getLogger(__name__)
PENDING_TIMEOUT = timedelta(minutes=2)  # a quote not confirmed by then is dropped


@dataclass(frozen=True)
class PendingSale:
    """A priced sale waiting for the cashier to confirm or cancel it."""

    id: str
    expires_at: datetime
    priced: Priced
    # when it expires by the monotonic clock, when the service has one: the wall clock
    # set back (NTP correcting it) kept a quote, and every checkout busy, for as long
    deadline: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "state": "pending",
            "pending_id": self.id,
            "expires_at": iso(self.expires_at),
            **self.priced.as_json(),
        }


class WaitStoppedError(TerminalError):
    """The wait for the card was stopped (the cashier's "stop waiting"): nothing was
    priced or recorded."""


@dataclass(eq=False)
class CardRead:
    """The checkout under way, from its start until it answers (one at a time).

    Its card is read in a thread of its own (``reading``), so that the cashier can stop
    waiting for it at once (:meth:`TerminalService.stop_waiting`): the checkout that
    waited (``owner``) then answers :class:`WaitStoppedError`, while the read itself
    goes on until a card comes or its time is up (a reader cannot be interrupted). The
    next checkout takes that read over: the customer's card, inserted a moment later,
    is priced with the amount typed again, not left as a quote of the wrong one.
    """

    owner: object | None  # the checkout that prices the card read; None: stopped
    reading: bool = False
    reader: object | None = None  # the checkout that started the read
    result: tuple[CardIdentity | None, Exception | None] | None = None

    @property
    def stopped(self) -> bool:
        return self.owner is None


CARD_READ_GRACE = 0.5  # s a checkout waits past its own time for its read to answer


def _logged(result: SaleResult) -> SaleResult:
    """One log line per sale: seq, the card's last four digits, the amounts."""
    sale = result.sale
    log.info(
        "sale #%d journaled: card •••• %s, %s, gross %s, discount %s, net %s",
        sale.seq,
        sale.pan_last4,
        "member" if sale.member else "not a member",
        fen(sale.gross),
        fen(sale.discount),
        fen(sale.net),
    )
    return result


def journal_event(
    journal: Journal, state: TerminalState, code: str, detail: str, at: datetime
) -> Sale:
    """Journal an event (pact.event) with the versions ``state`` holds now, at ``at``
    or, when the clock read earlier, at the last trusted time
    (pact.generation.entry_time): an event's time never goes back either."""
    generation = state.current
    at = _entry_time(journal, generation, at).at
    enrolment = state.enrolment
    draft = event_draft(
        code,
        detail,
        terminal_id=enrolment.terminal_id,
        merchant_id=enrolment.merchant_id,
        roster_version=generation.roster_version,
        policy_version=generation.policy_version,
    )
    return journal.append(draft, at=at)


def _entry_time(journal: Journal, generation: Generation, now: datetime) -> EntryTime:
    """When an entry is journaled if the clock reads ``now`` (pact.generation.entry_time)."""
    newest = journal.newest_at()
    return entry_time(generation, now, parse_iso(newest) if newest else None, CLOCK_TOLERANCE)


def _behind_note(when: EntryTime) -> str:
    """The detail of the ``clock-jump`` event of a clock behind the last trusted time."""
    what = "entry time" if when.last == when.newest_entry else "the union's signed time"
    last = iso(when.last) if when.last is not None else "?"
    return (
        f"the clock reads {iso(when.clock)}, {int(when.behind.total_seconds())} s before "
        f"{what} {last}; entries are journaled at that time and members get no discount "
        "until the time is set"
    )


class UnusableJournal:
    """Stands in for a journal found damaged (terminal.journal.check_damage): every use
    raises the damage, so nothing is recorded and no discount given; closing is a no-op
    (the damaged files are never opened, so never rewritten)."""

    signer = None

    def __init__(self, damage: JournalDamagedError) -> None:
        self.damage = damage

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise self.damage


class CardReaderFn(Protocol):
    def __call__(self, *, timeout: float, tokenize: Tokenize) -> CardIdentity: ...


class TerminalService:
    def __init__(
        self,
        data_dir: Path,
        read_card: CardReaderFn,
        clock: Callable[[], datetime],
        card_timeout: float = 30.0,
        pending_timeout: timedelta = PENDING_TIMEOUT,
        printer: str | None = None,
        monotonic: Callable[[], float] | None = None,
        check_journal: bool = False,
    ) -> None:
        """``check_journal``: run SQLite's quick check of the journal first (the daemon's
        start). A damaged journal does not stop the service: it serves its status and
        page, saying why (:attr:`damage`), and refuses every sale."""
        self.state = TerminalState.open(data_dir)
        self.state.load()
        self.state.check_secrets()  # none readable by others, or no start
        signer = self.state.signer()
        self.damage: JournalDamagedError | None = None
        try:
            self.journal = Journal.existing(self.state.journal_path, signer, check_journal)
        except JournalDamagedError as exc:
            log.error("%s", exc)
            self.damage = exc
            self.journal = cast(Journal, UnusableJournal(exc))
        self.read_card = read_card
        self.clock = clock
        self.card_timeout = card_timeout
        self.pending_timeout = pending_timeout
        # one checkout (card wait + pricing) at a time: the one under way, if any
        self._checkout: CardRead | None = None
        self._checkout_cond = threading.Condition()  # guards _checkout and its fields
        # the card reads, one after the other, in one thread kept for them (a thread a
        # checkout mapped and unmapped its stack each time: the address space's peak
        # grew past what the process holds, which a Pi's memory limit counts)
        self._reads: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._read_thread: threading.Thread | None = None
        self._pending_lock = threading.Lock()  # guards _pending
        self._confirm_lock = threading.Lock()  # one confirmation at a time
        self._pending: PendingSale | None = None
        # the quotes confirmed lately, by pending id: a till that asks again (its answer
        # lost) hears of the sale it made, not "check out again" (which made it twice)
        self._confirmed: OrderedDict[str, SaleResult] = OrderedDict()
        self.supervisor = Supervisor(data_dir, clock, self.zone)
        self.printer = printer  # the settings' receipt printer, or None
        self._printer_lock = threading.Lock()
        # Clock jumps: the wall clock is compared with ``monotonic`` (the daemon passes
        # time.monotonic; None, for a caller whose clock is not the wall clock, skips it)
        self.monotonic = monotonic
        self._clock_ref = (clock(), monotonic()) if monotonic is not None else None
        self._clock_behind = False  # the clock reads behind the last trusted time: journaled
        self._offline_noted: tuple[int | None, int | None] | None = None
        self._limits_noted: set[str] | None = None  # pact.offline's keys journaled
        self._limits_lock = threading.Lock()

    def close(self) -> None:
        if self._read_thread is not None:
            self._reads.put(None)  # its loop ends once a read under way answers
        self.journal.close()

    def journal_problem(self) -> str | None:
        """Why the journal does not answer, or None (the daemon's watchdog asks). A
        journal known to be damaged is not a problem of the daemon, which says so on its
        status and page: restarting it would not help."""
        if self.damage is not None:
            return None
        try:
            self.journal.counts()
        except (JournalError, sqlite3.Error) as exc:
            return f"the journal does not answer: {exc}"
        return None

    @overload
    def checkout(
        self, basket: Basket | int, timeout: float | None = ..., *, confirm: Literal[True]
    ) -> SaleResult: ...

    @overload
    def checkout(
        self, basket: Basket | int, timeout: float | None = ..., *, confirm: Literal[False] = ...
    ) -> PendingSale: ...

    def checkout(
        self, basket: Basket | int, timeout: float | None = None, *, confirm: bool = False
    ) -> SaleResult | PendingSale:
        """Wait for a card and price the sale. One checkout at a time.

        Without ``confirm`` the priced sale waits (a :class:`PendingSale`, with an id)
        until :meth:`confirm` journals it or :meth:`cancel` (or the pending timeout)
        drops it, journaling nothing and using no quota. With ``confirm`` it is
        journaled at once (a till that wants one call). ``basket`` may be a plain
        amount in fen (one line of category ``general``).
        """
        if self.damage is not None:  # before the card: no discount, and why
            raise self.damage
        check_space(self.state.dir, SALE_REFUSED)  # a full disk too, before the card
        token = object()  # this checkout
        current = self._begin(token)
        try:
            self.state.refresh()  # a sync in its own process may have installed a roster
            identity = self._read_card(
                current,
                token,
                self.card_timeout if timeout is None else timeout,
                # as the installed roster's tokens were made (a roster of another
                # scheme installed during this very read finds no member: once)
                PanTokenizer(self.state.enrolment.token_key, self.state.current.token_scheme),
            )
            self.state.refresh()
            generation = self.state.current  # this sale's roster and policy, taken once
            now = self.clock()
            # priced and journaled at the clock's time, never before the last trusted
            # time; a clock known to be wrong gives members no discount
            when = self.entry_time(generation, now)
            self.watch_clock(now, when)
            self._note_offline_limit(generation, when.at)
            offline = self.check_offline(generation, when.at)
            priced = price(
                generation,
                self.state.enrolment,
                self.journal,
                identity,
                basket,
                when.at,
                offline,
                self.state.shared_usage(),  # the other tills' quota use, as of the last sync
                clock=when.problem,
            )
            if confirm:
                return _logged(self._record(priced))
            deadline = (
                self.monotonic() + self.pending_timeout.total_seconds()
                if self.monotonic is not None
                else None
            )
            pending = PendingSale(uuid.uuid4().hex, now + self.pending_timeout, priced, deadline)
            with self._pending_lock:
                self._pending = pending
            return pending
        finally:
            self._end(current, token)

    # ------------------------------------------------------------ the card wait

    def _begin(self, token: object) -> CardRead:
        """Start checkout ``token``: BusyError while another is under way (unless it was
        stopped while its card is still being read: this one takes that read over) or
        a priced sale waits for its confirmation."""
        with self._checkout_cond:
            current = self._checkout
            if current is not None and not (current.stopped and current.reading):
                raise BusyError(
                    N_("another checkout is waiting for a card: finish or cancel it first")
                )
            waiting = self._waiting(self.clock())
            if waiting is not None:
                raise BusyError(
                    N_(
                        "a sale of ¥%(net)s (card •••• %(last4)s) is waiting to be confirmed: "
                        "confirm or cancel it first"
                    ),
                    net=fen(waiting.priced.quote.net),
                    last4=waiting.priced.draft.pan_last4,
                )
            if current is None:
                current = self._checkout = CardRead(owner=token)
            else:  # a read stopped, still under way: this checkout waits for its card
                current.owner = token
        return current

    def _end(self, current: CardRead, token: object) -> None:
        """Checkout ``token`` answered: the next may start (a read it left going on, if
        stopped, is ended by that read's thread)."""
        with self._checkout_cond:
            if current.owner is token:
                current.owner = None
            # taken over by another checkout: that one ends it
            if self._checkout is current and current.owner is None and not current.reading:
                self._checkout = None
            self._checkout_cond.notify_all()

    def _read_card(
        self, current: CardRead, token: object, timeout: float, tokenize: Tokenize
    ) -> CardIdentity:
        """The card of checkout ``token``: read in a thread (or the read under way, taken
        over), waiting at most ``timeout`` s; WaitStoppedError when stopped meanwhile."""
        deadline = time.monotonic() + timeout
        with self._checkout_cond:
            while True:
                if not current.reading and current.result is None:
                    # its whole time for the read it starts; a read again, what is left
                    again = current.reader is not None
                    left = max(round(deadline - time.monotonic()), 1) if again else timeout
                    current.reader = token
                    self._start_read(current, left, tokenize)
                while (
                    current.reading
                    and current.owner is token
                    and time.monotonic() < deadline + CARD_READ_GRACE
                ):
                    self._checkout_cond.wait(deadline + CARD_READ_GRACE - time.monotonic())
                if current.owner is not token:
                    raise WaitStoppedError(
                        N_("the wait for the card was stopped: nothing was recorded")
                    )
                if current.reading:  # its time is up: the read goes on, for the next
                    current.owner = None
                    late: Exception = NoCardError(f"no card presented within {timeout:g} s")
                    raise late
                assert current.result is not None
                identity, error = current.result
                current.result = None
                taken_over = current.reader is not token
                if (
                    taken_over
                    and isinstance(error, NoCardError)
                    and deadline - time.monotonic() >= 1
                ):
                    continue  # the read taken over found no card in its own time: read again
                if error is not None:
                    raise error
                assert identity is not None
                return identity

    def _start_read(self, current: CardRead, timeout: float, tokenize: Tokenize) -> None:
        """Read a card for ``current`` in a thread (the caller holds the condition)."""
        current.reading = True

        def run() -> None:
            result: tuple[CardIdentity | None, Exception | None]
            result = (None, RuntimeError("the card read ended without an answer"))
            try:
                result = (self.read_card(timeout=timeout, tokenize=tokenize), None)
            except Exception as exc:  # the checkout waiting for it raises it
                result = (None, exc)
            finally:  # whatever ended it: the checkout is not left waiting for ever
                with self._checkout_cond:
                    current.reading = False
                    current.result = result
                    if current.stopped and self._checkout is current:
                        self._checkout = None  # stopped, and no checkout took it over
                    self._checkout_cond.notify_all()

        if self._read_thread is None:
            self._read_thread = threading.Thread(
                target=self._read_loop, name="card-read", daemon=True
            )
            self._read_thread.start()
        self._reads.put(run)

    def _read_loop(self) -> None:
        """The card reads' thread: each read in turn, until the service closes."""
        while (job := self._reads.get()) is not None:
            job()

    def stop_waiting(self) -> bool:
        """Stop the checkout waiting for a card (the cashier's "stop waiting"): it answers
        WaitStoppedError at once and records nothing. False when none is waiting (a card
        already read is priced: its quote waits to be confirmed or cancelled)."""
        with self._checkout_cond:
            current = self._checkout
            if current is None or not current.reading or current.stopped:
                return False
            current.owner = None
            self._checkout_cond.notify_all()
        return True

    def waiting_for_card(self) -> bool:
        """A checkout waits for a card now (not one stopped)."""
        with self._checkout_cond:
            current = self._checkout
            return current is not None and current.reading and not current.stopped

    def _record(self, priced: Priced) -> SaleResult:
        """Journal a priced sale; a journal found damaged on the way is used no more."""
        try:
            return record(self.journal, priced)
        except JournalDamagedError as exc:
            self.damage = exc
            raise

    def busy(self) -> bool:
        """A checkout is waiting for a card, or a priced sale for its confirmation."""
        return self._checkout is not None or self._waiting(self.clock()) is not None

    def _waiting(self, now: datetime) -> PendingSale | None:
        """The sale waiting for confirmation, if it has not timed out (a timed-out one
        is dropped: nothing was journaled)."""
        with self._pending_lock:
            pending = self._pending
            if pending is not None and self._expired(pending, now):
                self._pending = pending = None
            return pending

    def _expired(self, pending: PendingSale, now: datetime) -> bool:
        if pending.deadline is not None and self.monotonic is not None:
            return self.monotonic() >= pending.deadline
        return now >= pending.expires_at

    def _take(self, pending_id: str, keep: bool = False) -> PendingSale:
        """Return the waiting sale ``pending_id`` and, unless ``keep``, free the slot;
        PendingError otherwise (a timed-out one is dropped)."""
        now = self.clock()
        with self._pending_lock:
            pending = self._pending
            if pending is None or pending.id != pending_id:
                raise PendingError(
                    N_(
                        "this sale is not waiting to be confirmed (it was confirmed, "
                        "cancelled or replaced): check out again"
                    )
                )
            expired = self._expired(pending, now)
            if not keep or expired:
                self._pending = None
        if expired:
            raise PendingError(
                N_(
                    "the sale of ¥%(net)s waited more than %(seconds)s s and was "
                    "dropped (nothing was recorded): check out again"
                ),
                net=fen(pending.priced.quote.net),
                seconds=self.pending_timeout.seconds,
            )
        return pending

    def confirm(self, pending_id: str) -> SaleResult:
        """Journal the waiting sale: the point of no return. Asked again for a quote
        confirmed lately (the till's answer lost), it answers that sale again and
        journals nothing."""
        with self._confirm_lock:
            done = self._confirmed.get(pending_id)
            if done is not None:
                return done
            # the slot stays taken until the sale is journaled: no other checkout prices
            # this card's quota without it, and a failed write leaves it to confirm again
            pending = self._take(pending_id, keep=True)
            result = _logged(self._record(pending.priced))
            with self._pending_lock:
                if self._pending is pending:
                    self._pending = None
            self._confirmed[pending_id] = result
            while len(self._confirmed) > REMEMBERED_CONFIRMATIONS:
                self._confirmed.popitem(last=False)
            return result

    def cancel(self, pending_id: str) -> PendingSale:
        """Drop the waiting sale; nothing is journaled and no quota is used. A cancel
        that comes while the sale is being confirmed waits for it, and then finds it
        confirmed (it answered "cancelled" while the confirmation journaled it)."""
        with self._confirm_lock:
            return self._take(pending_id)

    def pending(self) -> PendingSale | None:
        return self._waiting(self.clock())

    def _authorize(self, pin: object, token: str | None) -> None:
        """The supervisor's PIN (the page, the command line) or the till's token."""
        if token is not None:
            self.supervisor.check_token(token)
        else:
            self.supervisor.check(pin)

    def void(
        self, seq: int, reason: str, pin: object, token: str | None = None, once: Once | None = None
    ) -> Sale:
        """Void sale ``seq`` of today's business day with a reason, after the supervisor's
        PIN or token: journals the void entry (the same amounts, rules and basket,
        reversed), and ``once``'s answer with it (:meth:`replay`)."""
        self._authorize(pin, token)
        now = self._reversal_time()
        policy = self.state.current.policy
        entry = self.journal.append_reversal(
            seq, lambda sale, later: void_draft(sale, later, reason, policy, now), now, once
        )
        log.info("void #%d of sale %d: %s reversed", entry.seq, seq, fen(entry.net))
        return entry

    def refund(
        self,
        seq: int,
        items: Sequence[tuple[int, int]],
        reason: str,
        pin: object,
        token: str | None = None,
        once: Once | None = None,
    ) -> Sale:
        """Refund ``qty`` units of line ``index`` of sale ``seq`` for each ``(index, qty)``,
        with a reason, after the supervisor's PIN or token: journals the refund entry,
        which gives back each rule's discount on those units in proportion
        (pact.reversal), and ``once``'s answer with it (:meth:`replay`)."""
        self._authorize(pin, token)
        now = self._reversal_time()
        policy = self.state.current.policy
        entry = self.journal.append_reversal(
            seq,
            lambda sale, later: refund_draft(sale, later, items, reason, policy, now),
            now,
            once,
        )
        log.info("refund #%d of sale %d: %s paid back", entry.seq, seq, fen(entry.net))
        return entry

    def replay(self, key: str) -> Kept | None:
        """The answer of the void or refund sent with Idempotency-Key ``key`` in the last
        24 hours (terminal.journal.ANSWERS_KEPT_FOR), if one was journaled: kept in the
        journal, so a till that sends it again after a restart is answered it too."""
        return self.journal.replay(key, self.clock() - ANSWERS_KEPT_FOR)

    def _reversal_time(self) -> datetime:
        """A void's or refund's time: a clock jump journaled first, then the clock's
        time, never before the last trusted time (money goes back to the customer even
        when the clock is wrong: no discount is given)."""
        now = self.clock()
        when = self.entry_time(self.state.current, now)
        self.watch_clock(now, when)
        return when.at

    def entry_json(self, seq: int) -> dict[str, Any]:
        """Entry ``seq`` for a till or the page: its amounts, lines and what is left to
        refund of each (no card token)."""
        entry = self.journal.entry(seq)
        if entry is None:
            raise UnknownSaleError(
                N_("there is no sale %(seq)s in this terminal's journal"), seq=seq
            )
        later = self.journal.reversals_of(seq)
        out = entry.as_json()
        out.pop("token", None)
        out["voided_by"] = next((e.seq for e in later if e.kind == VOID), None)
        out["refunds"] = [e.seq for e in later if e.kind == REFUND]
        if entry.is_sale and entry.basket is not None:
            done = refunded_units(entry, later)
            out["refundable"] = [
                0 if out["voided_by"] else line["qty"] - done[i]
                for i, line in enumerate(entry.basket["lines"])
            ]
        return out

    # ------------------------------------------------------------------- events

    def record_event(self, code: str, detail: str) -> Sale:
        """Journal an event (pact.event) with the versions the terminal holds now."""
        entry = journal_event(self.journal, self.state, code, detail, self.clock())
        log.info("event #%d: %s", entry.seq, entry.note)
        return entry

    def startup(self, software: str) -> list[Sale]:
        """What the daemon journals when it starts: an integrity failure of what the
        union does not hold yet, a clock that reads earlier than the newest entry, and
        the start-up itself. Returns the events journaled."""
        if self.damage is not None:
            log.error("serving without a journal: %s", self.damage)
            return []
        try:
            return self._startup(software)
        except DiskFullError as exc:  # the page still serves, and says so
            log.error("nothing journaled at start-up: %s", exc)
            return []

    def _startup(self, software: str) -> list[Sale]:
        events = []
        signer = self.journal.signer
        try:
            if signer is not None:
                self.journal.verify_tail(signer.public_key())
        except JournalError as exc:
            log.error("integrity failure at start-up: %s", exc)
            events.append(self.record_event(INTEGRITY_FAILURE, str(exc)))
        events.extend(self.watch_clock(self.clock()))
        generation = self.state.current
        events.append(
            self.record_event(
                STARTUP,
                f"unioncard {software}; roster v{generation.roster_version}, "
                f"policy v{generation.policy_version}",
            )
        )
        return events

    def entry_time(self, generation: Generation, now: datetime) -> EntryTime:
        """When an entry is journaled if the clock reads ``now``: never before the last
        trusted time (pact.generation.entry_time, which says what that is and why)."""
        if self.damage is not None:  # no journal to read: the signed times only
            return entry_time(generation, now, None, CLOCK_TOLERANCE)
        return _entry_time(self.journal, generation, now)

    def watch_clock(self, now: datetime, when: EntryTime | None = None) -> list[Sale]:
        """Journal a clock jump: the wall clock reading behind the last trusted time
        (more than :data:`CLOCK_TOLERANCE` before the newest entry, or than
        ``pact.generation.CLOCK_TOLERANCE`` before signed time), once until it reads
        right again; or moving more than :data:`CLOCK_TOLERANCE` against the monotonic
        clock. The event itself is journaled at the last trusted time; its note says
        what the clock read. ``when``: the entry time already worked out for ``now``
        (a journaled clock-jump event does not move it: it is dated ``when.at``)."""
        events = []
        when = when or self.entry_time(self.state.current, now)
        if when.problem is not None and not self._clock_behind:
            events.append(self.record_event(CLOCK_JUMP, _behind_note(when)))
        self._clock_behind = when.problem is not None
        if self._clock_ref is not None and self.monotonic is not None:
            wall, mono = self._clock_ref
            tick = self.monotonic()
            drift = (now - wall).total_seconds() - (tick - mono)
            self._clock_ref = (now, tick)
            if abs(drift) > CLOCK_TOLERANCE.total_seconds() and not events:
                events.append(
                    self.record_event(
                        CLOCK_JUMP,
                        f"the clock moved {drift:+.0f} s against the monotonic clock "
                        f"(now {iso(now)})",
                    )
                )
        return events

    def _note_offline_limit(self, generation: Generation, now: datetime) -> None:
        """Journal, once per roster and policy, that they expired: members get no
        discounts until the terminal syncs (the audit counts who was turned away)."""
        roster, policy = generation.roster, generation.policy
        expired = []
        if roster is not None and roster.header.is_expired(now):
            expired.append(f"roster v{roster.version} expired at {iso(roster.header.expires_at)}")
        if policy is not None and policy.is_expired(now):
            expired.append(f"policy v{policy.version} expired at {iso(policy.expires_at)}")
        versions = (generation.roster_version, generation.policy_version)
        if not expired or self._offline_noted == versions:
            return
        self._offline_noted = versions
        self.record_event(
            OFFLINE_LIMIT, "; ".join(expired) + ": no member discounts until the terminal syncs"
        )

    def offline(
        self,
        generation: Generation,
        now: datetime,
        pending: int | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> Offline:
        """Where the terminal stands against its offline limits (pact.offline), counted
        from its last successful sync (before the first, or when that sync's time is
        ahead of ``now``, from the issue time of the union's snapshot it installed).
        ``pending``: the entries waiting for upload, and ``record``: the sync record
        (terminal.syncrecord), when the caller has them."""
        since = success_at(record if record is not None else last_sync(self.state.dir))
        if since is not None and since > now + CLOCK_TOLERANCE:
            # recorded by a sync run with the clock ahead: counted from it, the stop
            # would come that much later; the union's snapshot is the time known
            since = None
        if since is None and generation.snapshot is not None:
            since = generation.snapshot.issued_at
        if pending is None:
            pending = self.journal.counts()[1]
        return assess(limits_of(generation.policy), since, pending, now)

    def check_offline(self, generation: Generation, now: datetime) -> Offline:
        """:meth:`offline`, journaling each limit reached for the first time since the
        last successful sync as an ``offline-limit`` event (once: the journal's events
        say which were)."""
        offline = self.offline(generation, now)
        if not offline.reached:
            return offline
        with self._limits_lock:
            if self._limits_noted is None or to_note(offline, self._limits_noted):
                # what this stretch offline journaled already, also before a restart
                since = iso(offline.since) if offline.since is not None else ""
                self._limits_noted = noted_limits(self.journal.event_notes(since))
            for limit in to_note(offline, self._limits_noted):
                entry = self.record_event(OFFLINE_LIMIT, limit_event(offline, limit))
                self._limits_noted |= noted_limits([entry.note or ""])
        return offline

    def zone(self) -> ZoneInfo:
        """The shop's time zone: its policy's (Asia/Shanghai until one is installed)."""
        policy = self.state.current.policy
        return policy.zone if policy is not None else ZoneInfo(DEFAULT_TIMEZONE)

    def receipt(self, seq: int) -> Receipt:
        """The slip of journal entry ``seq`` (merchant, lines, rule titles, code)."""
        entry = self.journal.entry(seq)
        if entry is None:
            raise UnknownSaleError(
                N_("there is no sale %(seq)s in this terminal's journal"), seq=seq
            )
        if entry.kind == EVENT:
            raise UnknownSaleError(
                N_("entry %(seq)s is an event (%(note)s): it has no receipt"),
                seq=seq,
                note=entry.note or "",
            )
        policy = self.state.current.policy
        if policy is None:
            return receipt(entry, self.state.enrolment.merchant_id, ZoneInfo(DEFAULT_TIMEZONE))
        titles = {rule.id: rule.label for rule in policy.rules}
        return receipt(entry, policy.merchant_name, policy.zone, titles)

    def print_receipt(self, seq: int) -> Receipt:
        """Print the slip of entry ``seq`` on the settings' ESC/POS printer."""
        if self.printer is None:
            raise PrinterError(
                N_("no receipt printer is set: name one as `printer` in the settings")
            )
        slip = self.receipt(seq)
        with self._printer_lock:  # one slip at a time on the one printer
            print_receipt(open_printer(self.printer), slip)
        return slip

    def recent_sales(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest entries for the cashier page: last four digits and amounts only;
        a sale voided since says by which entry, one refunded since by which."""
        rows = self.journal.recent(limit)
        voided = {r["ref_seq"]: r["seq"] for r in rows if r.get("kind") == VOID}
        refunds: dict[int, list[int]] = {}
        for r in rows:
            if r.get("kind") == REFUND:
                refunds.setdefault(r["ref_seq"], []).insert(0, r["seq"])
        return [
            {
                "seq": r["seq"],
                "at": r["at"],
                "kind": r.get("kind") or "sale",
                "ref_seq": r.get("ref_seq"),
                "voided_by": voided.get(r["seq"]),
                "refunded_by": refunds.get(r["seq"], []),
                "refundable": bool(r.get("basket")) and r.get("kind") is None,
                "pan_last4": r["pan_last4"],
                "member": r["member"],
                "gross": fen(r["gross"]),
                "discount": fen(r["discount"]),
                "net": fen(r["net"]),
                "uploaded": r["uploaded"],
            }
            for r in rows
        ]

    def status(self) -> dict[str, Any]:
        self.state.refresh()
        generation = self.state.current  # one generation for the whole answer
        now = self.clock()
        enrolment = self.state.enrolment
        roster, policy = generation.roster, generation.policy
        warnings: list[Msg] = []
        when = self.entry_time(generation, now)
        if when.problem is not None:
            warnings.append(when.problem)
        now = when.at  # what a sale would be priced at
        snapshot = generation.snapshot
        if snapshot is not None and snapshot.expires_at - now < EXPIRY_WARNING:
            at = iso(snapshot.expires_at)
            if snapshot.is_expired(now):
                warnings.append(Msg.of(N_("the union's update expired at %(at)s: sync"), at=at))
            else:
                warnings.append(Msg.of(N_("the union's update expires at %(at)s: sync"), at=at))
        # installed files the trusted root no longer vouches for (a revoked key), or that
        # cannot be read: out of service, and why (the detail in the core's own words)
        warnings.extend(
            Msg.of(N_("out of service until the next sync replaces it: %(reason)s"), reason=r)
            for r in generation.dropped
        )
        if roster is None:
            warnings.append(Msg.of(N_("no member roster installed: run `unioncard sync`")))
        elif roster.header.is_expired(now):
            warnings.append(
                Msg.of(
                    N_("member roster expired at %(at)s: no discounts until the terminal syncs"),
                    at=iso(roster.header.expires_at),
                )
            )
        elif roster.header.expires_at - now < EXPIRY_WARNING:
            warnings.append(
                Msg.of(
                    N_("member roster expires at %(at)s: sync today"),
                    at=iso(roster.header.expires_at),
                )
            )
        if policy is None:
            warnings.append(Msg.of(N_("no discount policy installed: run `unioncard sync`")))
        elif policy.status_at(now) == "suspended":
            warnings.append(Msg.of(N_("merchant suspended: no member discounts")))
        elif policy.status_at(now) == "exited":
            warnings.append(
                Msg.of(
                    N_(
                        "this shop has left the union's programme: no member discounts; once "
                        "every sale is uploaded, run `unioncard terminal decommission`"
                    )
                )
            )
        elif policy.status_at(now) != "active":
            warnings.append(
                Msg.of(N_("merchant %(status)s: no member discounts"), status=policy.status_at(now))
            )
        elif policy.is_expired(now):
            warnings.append(
                Msg.of(N_("discount policy expired at %(at)s"), at=iso(policy.expires_at))
            )
        disk = space_warning(self.state.dir)
        if disk is not None:
            warnings.insert(0, disk)
        total: int | None
        pending: int | None
        if self.damage is not None:
            warnings.insert(0, self.damage.msg)
            total = pending = None
        else:
            total, pending = self.journal.counts()
        record = last_sync(self.state.dir)  # read once: its times and the limits agree
        offline = self.offline(generation, now, pending or 0, record)
        warnings.extend(offline.warnings)
        limits = limits_of(policy)
        return {
            "terminal_id": enrolment.terminal_id,
            "merchant_id": enrolment.merchant_id,
            "merchant_name": policy.merchant_name if policy else None,
            "merchant_status": policy.status_at(now) if policy else None,
            "roster_version": roster.version if roster else None,
            "roster_members": len(roster) if roster else None,
            "roster_expires_at": iso(roster.header.expires_at) if roster else None,
            "policy_version": policy.version if policy else None,
            "sales": total,
            "pending_upload": pending,
            # why the journal cannot be used (terminal.journal.check_damage), or None
            "journal_damaged": str(self.damage) if self.damage is not None else None,
            # pact.offline: counted from the last successful sync
            "offline": {
                "since": iso(offline.since) if offline.since is not None else None,
                "warn_at": iso(offline.since + limits.warn_after) if offline.since else None,
                "stop_at": iso(offline.since + limits.stop_after) if offline.since else None,
                "pending_cap": limits.pending_cap,
                "reached": list(offline.reached),
                "discounts": offline.block is None and self.damage is None,
            },
            # in English, and as messages to translate (pact.text), in the same order
            "warnings": [str(w) for w in warnings],
            "warning_ids": [w.as_json() for w in warnings],
            # the sync record the offline limits were counted from (terminal.syncrecord)
            "sync": record,
        }
