"""Voids (pure): when a sale may be reversed, and the journal entry that does it.

A void reverses one sale of the current business day whole: the entry names the
sale (``ref_seq``), carries the same amounts, rules and basket (so the settlement
subtracts them and the member's quota use is given back), and the supervisor's
reason (``note``). A sale is voided at most once; a void is not voided.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pact.errors import ReversalError
from pact.policy import Policy, shop_day
from pact.sale import MAX_NOTE, Sale, SaleDraft
from pact.timefmt import parse_iso

VOID = "void"


def void_draft(
    sale: Sale, later: Iterable[Sale], reason: str, policy: Policy | None, now: datetime
) -> SaleDraft:
    """The entry that voids ``sale``; ``later`` are the entries journaled after it.

    Raises :class:`ReversalError` (one line, naming the sale) when it may not be.
    """
    reason = " ".join(reason.split())
    if not reason:
        raise ReversalError(f"say why sale {sale.seq} is voided (a reason is required)")
    if len(reason) > MAX_NOTE:
        raise ReversalError(f"the reason is longer than {MAX_NOTE} characters")
    if not sale.is_sale:
        raise ReversalError(f"entry {sale.seq} is a {sale.kind}, not a sale: it cannot be voided")
    for entry in later:
        if entry.ref_seq == sale.seq:
            raise ReversalError(f"sale {sale.seq} was already voided (entry {entry.seq})")
    if shop_day(policy, parse_iso(sale.at)) != shop_day(policy, now):
        raise ReversalError(
            f"sale {sale.seq} is not of today's business day: only today's sales can be voided"
        )
    return SaleDraft(
        terminal_id=sale.terminal_id,
        merchant_id=sale.merchant_id,
        token=sale.token,
        pan_last4=sale.pan_last4,
        member=sale.member,
        gross=sale.gross,
        discount=sale.discount,
        net=sale.net,
        rules=sale.rules,
        roster_version=sale.roster_version,
        policy_version=sale.policy_version,
        basket=sale.basket,
        atc=None,
        kind=VOID,
        ref_seq=sale.seq,
        note=reason,
    )
