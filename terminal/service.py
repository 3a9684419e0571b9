"""The terminal as one object: state + journal + a card reader, shared by the CLI and web.

The card reader is passed in as a function (``reader.fresh.FreshCardReader`` in
the daemon), so this module does not import pyscard.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pact.basket import Basket
from pact.cards import PanTokenizer
from pact.money import fen
from pact.timefmt import iso
from reader.identity import CardIdentity, Tokenize
from terminal.checkout import SaleResult, checkout
from terminal.errors import BusyError
from terminal.journal import Journal
from terminal.state import TerminalState

EXPIRY_WARNING = timedelta(hours=24)


class CardReaderFn(Protocol):
    def __call__(self, *, timeout: float, tokenize: Tokenize) -> CardIdentity: ...


class TerminalService:
    def __init__(
        self,
        data_dir: Path,
        read_card: CardReaderFn,
        clock: Callable[[], datetime],
        card_timeout: float = 30.0,
    ) -> None:
        self.state = TerminalState.open(data_dir)
        self.state.load()
        self.journal = Journal.existing(self.state.journal_path, self.state.signer())
        self.read_card = read_card
        self.clock = clock
        self.card_timeout = card_timeout
        self._lock = threading.Lock()

    def close(self) -> None:
        self.journal.close()

    def checkout(self, basket: Basket | int, timeout: float | None = None) -> SaleResult:
        """Wait for a card, price the sale and journal it. One checkout at a time.

        ``basket`` may be a plain amount in fen (one line of category ``general``).
        """
        if not self._lock.acquire(blocking=False):
            raise BusyError("another checkout is waiting for a card: finish or cancel it first")
        try:
            identity = self.read_card(
                timeout=self.card_timeout if timeout is None else timeout,
                tokenize=PanTokenizer(self.state.enrolment.token_key),
            )
            self.state.refresh()
            generation = self.state.current  # this sale's roster and policy, taken once
            return checkout(
                generation, self.state.enrolment, self.journal, identity, basket, self.clock()
            )
        finally:
            self._lock.release()

    def recent_sales(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest sales for the cashier page: last four digits and amounts only."""
        return [
            {
                "seq": r["seq"],
                "at": r["at"],
                "pan_last4": r["pan_last4"],
                "member": r["member"],
                "gross": fen(r["gross"]),
                "discount": fen(r["discount"]),
                "net": fen(r["net"]),
                "uploaded": r["uploaded"],
            }
            for r in self.journal.recent(limit)
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
