"""The terminal as one object: state + journal + a card reader, shared by the CLI and web.

The card reader is passed in as a function (``reader.fresh.FreshCardReader`` in
the daemon), so this module does not import pyscard.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, overload
from zoneinfo import ZoneInfo

from pact.basket import Basket
from pact.cards import PanTokenizer
from pact.errors import ReversalError
from pact.money import fen
from pact.policy import DEFAULT_TIMEZONE
from pact.receipt import Receipt, receipt
from pact.reversal import VOID, void_draft
from pact.sale import Sale
from pact.timefmt import iso
from reader.identity import CardIdentity, Tokenize
from terminal.checkout import Priced, SaleResult, price, record
from terminal.errors import (
    BusyError,
    JournalError,
    PendingError,
    PrinterError,
    UnknownSaleError,
)
from terminal.journal import Journal
from terminal.printing import open_printer, print_receipt
from terminal.state import TerminalState
from terminal.supervisor import Supervisor

EXPIRY_WARNING = timedelta(hours=24)
PENDING_TIMEOUT = timedelta(minutes=2)  # a quote not confirmed by then is dropped


@dataclass(frozen=True)
class PendingSale:
    """A priced sale waiting for the cashier to confirm or cancel it."""

    id: str
    expires_at: datetime
    priced: Priced

    def as_json(self) -> dict[str, Any]:
        return {
            "state": "pending",
            "pending_id": self.id,
            "expires_at": iso(self.expires_at),
            **self.priced.as_json(),
        }


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
    ) -> None:
        self.state = TerminalState.open(data_dir)
        self.state.load()
        self.journal = Journal.existing(self.state.journal_path, self.state.signer())
        self.read_card = read_card
        self.clock = clock
        self.card_timeout = card_timeout
        self.pending_timeout = pending_timeout
        self._lock = threading.Lock()  # one checkout (card wait + pricing) at a time
        self._pending_lock = threading.Lock()  # guards _pending
        self._confirm_lock = threading.Lock()  # one confirmation at a time
        self._pending: PendingSale | None = None
        self.supervisor = Supervisor(data_dir, clock)
        self.printer = printer  # the settings' receipt printer, or None
        self._printer_lock = threading.Lock()

    def close(self) -> None:
        self.journal.close()

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
        if not self._lock.acquire(blocking=False):
            raise BusyError("another checkout is waiting for a card: finish or cancel it first")
        try:
            waiting = self._waiting(self.clock())
            if waiting is not None:
                raise BusyError(
                    f"sale {waiting.id} is waiting to be confirmed: confirm or cancel it first"
                )
            identity = self.read_card(
                timeout=self.card_timeout if timeout is None else timeout,
                tokenize=PanTokenizer(self.state.enrolment.token_key),
            )
            self.state.refresh()
            generation = self.state.current  # this sale's roster and policy, taken once
            now = self.clock()
            priced = price(generation, self.state.enrolment, self.journal, identity, basket, now)
            if confirm:
                return record(self.journal, priced)
            pending = PendingSale(uuid.uuid4().hex, now + self.pending_timeout, priced)
            with self._pending_lock:
                self._pending = pending
            return pending
        finally:
            self._lock.release()

    def _waiting(self, now: datetime) -> PendingSale | None:
        """The sale waiting for confirmation, if it has not timed out (a timed-out one
        is dropped: nothing was journaled)."""
        with self._pending_lock:
            pending = self._pending
            if pending is not None and now >= pending.expires_at:
                self._pending = pending = None
            return pending

    def _take(self, pending_id: str, keep: bool = False) -> PendingSale:
        """Return the waiting sale ``pending_id`` and, unless ``keep``, free the slot;
        PendingError otherwise (a timed-out one is dropped)."""
        now = self.clock()
        with self._pending_lock:
            pending = self._pending
            if pending is None or pending.id != pending_id:
                raise PendingError(
                    f"no sale {pending_id} is waiting to be confirmed (it was confirmed, "
                    "cancelled or replaced): check out again"
                )
            if not keep or now >= pending.expires_at:
                self._pending = None
        if now >= pending.expires_at:
            raise PendingError(
                f"sale {pending_id} waited more than {self.pending_timeout.seconds} s and was "
                "dropped (nothing was recorded): check out again"
            )
        return pending

    def confirm(self, pending_id: str) -> SaleResult:
        """Journal the waiting sale: the point of no return."""
        with self._confirm_lock:
            # the slot stays taken until the sale is journaled: no other checkout prices
            # this card's quota without it, and a failed write leaves it to confirm again
            pending = self._take(pending_id, keep=True)
            result = record(self.journal, pending.priced)
            with self._pending_lock:
                if self._pending is pending:
                    self._pending = None
            return result

    def cancel(self, pending_id: str) -> PendingSale:
        """Drop the waiting sale; nothing is journaled and no quota is used."""
        return self._take(pending_id)

    def pending(self) -> PendingSale | None:
        return self._waiting(self.clock())

    def void(self, seq: int, reason: str, pin: object) -> Sale:
        """Void sale ``seq`` of today's business day with a reason, after the supervisor's
        PIN: journals the void entry (the same amounts, rules and basket, reversed)."""
        self.supervisor.check(pin)
        with self._confirm_lock:
            sale = self.journal.entry(seq)
            if sale is None:
                raise ReversalError(f"there is no sale {seq} in this terminal's journal")
            now = self.clock()
            draft = void_draft(
                sale, self.journal.reversals_of(seq), reason, self.state.current.policy, now
            )
            try:
                return self.journal.append(draft, at=now)
            except JournalError:
                if self.journal.reversals_of(seq):  # another process voided it meanwhile
                    raise ReversalError(f"sale {seq} was already voided") from None
                raise

    def receipt(self, seq: int) -> Receipt:
        """The slip of journal entry ``seq`` (merchant, lines, rule titles, code)."""
        entry = self.journal.entry(seq)
        if entry is None:
            raise UnknownSaleError(f"there is no sale {seq} in this terminal's journal")
        policy = self.state.current.policy
        if policy is None:
            return receipt(entry, self.state.enrolment.merchant_id, ZoneInfo(DEFAULT_TIMEZONE))
        titles = {rule.id: rule.label for rule in policy.rules}
        return receipt(entry, policy.merchant_name, policy.zone, titles)

    def print_receipt(self, seq: int) -> Receipt:
        """Print the slip of entry ``seq`` on the settings' ESC/POS printer."""
        if self.printer is None:
            raise PrinterError("no receipt printer is set: name one as `printer` in the settings")
        slip = self.receipt(seq)
        with self._printer_lock:  # one slip at a time on the one printer
            print_receipt(open_printer(self.printer), slip)
        return slip

    def recent_sales(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest entries for the cashier page: last four digits and amounts only;
        a sale voided since says by which entry."""
        rows = self.journal.recent(limit)
        voided = {r["ref_seq"]: r["seq"] for r in rows if r.get("kind") == VOID}
        return [
            {
                "seq": r["seq"],
                "at": r["at"],
                "kind": r.get("kind") or "sale",
                "ref_seq": r.get("ref_seq"),
                "voided_by": voided.get(r["seq"]),
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
        warnings: list[str] = []
        clock = generation.clock_problem(now)
        if clock is not None:
            warnings.append(clock)
        snapshot = generation.snapshot
        if snapshot is not None and snapshot.expires_at - now < EXPIRY_WARNING:
            when = "expired" if snapshot.is_expired(now) else "expires"
            warnings.append(f"the union's update {when} at {iso(snapshot.expires_at)}: sync")
        if roster is None:
            warnings.append("no member roster installed: run `unioncard sync`")
        elif roster.header.is_expired(now):
            warnings.append(
                f"member roster expired at {iso(roster.header.expires_at)}: "
                "no discounts until the terminal syncs"
            )
        elif roster.header.expires_at - now < EXPIRY_WARNING:
            warnings.append(f"member roster expires at {iso(roster.header.expires_at)}: sync today")
        if policy is None:
            warnings.append("no discount policy installed: run `unioncard sync`")
        elif policy.status_at(now) != "active":
            warnings.append(f"merchant {policy.status_at(now)}: no member discounts")
        elif policy.is_expired(now):
            warnings.append(f"discount policy expired at {iso(policy.expires_at)}")
        total, pending = self.journal.counts()
        return {
            "terminal_id": enrolment.terminal_id,
            "merchant_id": enrolment.merchant_id,
            "merchant_name": policy.merchant_name if policy else None,
            "merchant_status": policy.status if policy else None,
            "roster_version": roster.version if roster else None,
            "roster_members": len(roster) if roster else None,
            "roster_expires_at": iso(roster.header.expires_at) if roster else None,
            "policy_version": policy.version if policy else None,
            "sales": total,
            "pending_upload": pending,
            "warnings": warnings,
        }
