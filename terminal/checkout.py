"""The checkout use case: card identity -> membership -> quote -> journal.

The clock is read once by the caller and passed in, so a sale can be replayed
exactly by an auditor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reader.identity import CardIdentity
from terminal.journal import Journal
from terminal.money import fen
from terminal.policy import Quote, quote
from terminal.roster import Membership
from terminal.state import TerminalState
from terminal.timefmt import iso


@dataclass(frozen=True)
class SaleResult:
    sale: dict[str, Any]  # as journaled (seq, hash, ...)
    quote: Quote
    member: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.sale["seq"],
            "sale_id": self.sale["sale_id"],
            "at": self.sale["at"],
            "pan_last4": self.sale["pan_last4"],
            "member": self.member,
            "gross": fen(self.quote.gross),
            "discount": fen(self.quote.discount),
            "net": fen(self.quote.net),
            "gross_fen": self.quote.gross,
            "discount_fen": self.quote.discount,
            "net_fen": self.quote.net,
            "rules": list(self.quote.applied),
            "reasons": list(self.quote.reasons),
        }


def membership_for(
    state: TerminalState, identity: CardIdentity, now: datetime
) -> tuple[Membership | None, str]:
    """The member record for this card, or None and the reason it is not one."""
    roster = state.roster
    if roster is None:
        return None, "no member roster installed: run `unioncard sync`"
    if roster.header.is_expired(now):
        return None, (
            f"member roster expired at {iso(roster.header.expires_at)}: "
            "no discounts until the terminal syncs"
        )
    if identity.token is None:
        return None, "this terminal has no token key: re-enrol it"
    found = roster.lookup(identity.token)
    if found is None:
        return None, "not a union member"
    return found, ""


def checkout(
    state: TerminalState, journal: Journal, identity: CardIdentity, gross: int, now: datetime
) -> SaleResult:
    """Price the sale for this card and record it durably before returning."""
    member, reason = membership_for(state, identity, now)
    q = quote(gross, member, state.policy, now, not_member_reason=reason or "not a member")
    enrolment = state.enrolment
    sale = journal.append(
        {
            "terminal_id": enrolment.terminal_id,
            "merchant_id": enrolment.merchant_id,
            "token": identity.token.hex() if identity.token is not None else None,
            "pan_last4": identity.pan_last4,
            "member": member is not None and member.is_valid_on(now.date()),
            "gross": q.gross,
            "discount": q.discount,
            "net": q.net,
            "rules": list(q.applied),
            "roster_version": state.roster.version if state.roster is not None else 0,
            "policy_version": state.policy.version if state.policy is not None else 0,
        },
        at=now,
    )
    return SaleResult(sale=sale, quote=q, member=bool(sale["member"]))
