"""The checkout use case: card identity -> membership -> usage -> quote -> journal.

The clock is read once by the caller and passed in, and so is the generation
(``pact.generation.Generation``: the roster and policy in service), taken once
at the start of the sale: a sale never mixes two installs, and it can be
replayed exactly by an auditor. The journal keeps the basket lines, the member's
tier and what each rule gave (field ``basket``), and the roster and policy
versions it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pact.basket import Basket, RuleUsage
from pact.discount import Quote, journal_record, quote, quote_json
from pact.generation import Generation
from pact.offline import Offline
from pact.policy import Policy, quota_periods, shop_day
from pact.roster import Membership
from pact.sale import Sale, SaleDraft
from pact.text import N_, Msg
from pact.timefmt import iso
from pact.usage import NO_USE, SharedUsage
from reader.identity import CardIdentity
from terminal.journal import Journal
from terminal.state import Enrolment

# The card's state for the cashier, one word each (``verdict``): what the page shows
# big. "member" (a discount may be zero: see the reasons), "not_member",
# "member_suspended", "member_ended", "roster_expired" (also: none installed, the
# union's update expired, the clock is wrong: no discounts until a sync),
# "merchant_suspended", "merchant_exited" (the shop has left the programme),
# "no_policy" (none, or expired),
# "sync_needed" (a member, but an offline limit stops discounts: pact.offline).
VERDICTS = (
    "member",
    "not_member",
    "member_suspended",
    "member_ended",
    "roster_expired",
    "merchant_suspended",
    "merchant_exited",
    "no_policy",
    "sync_needed",
)


def verdict(
    generation: Generation, member: Membership | None, reason: Msg | None, now: datetime
) -> str:
    """The card's state for the cashier (``VERDICTS``), from its membership (and the
    reason it has none) and the policy in service."""
    if member is None:
        return "not_member" if reason is not None and reason.id in NOT_MEMBER else "roster_expired"
    if member.status == "suspended":
        return "member_suspended"
    policy = generation.policy
    if not member.is_valid_on(shop_day(policy, now)):
        return "member_ended"
    if policy is None or policy.is_expired(now):
        return "no_policy"
    status = policy.status_at(now)
    if status == "exited":
        return "merchant_exited"
    if status != "active":
        return "merchant_suspended"
    return "member"


NOT_MEMBER = {"not a union member", "this terminal has no token key: re-enrol it"}


@dataclass(frozen=True)
class SaleResult:
    sale: Sale  # as journaled (seq, hash, ...)
    quote: Quote
    member: bool
    verdict: str = "member"  # VERDICTS

    def as_json(self) -> dict[str, Any]:
        """The sale for the till: seq, member, money (yuan strings and ``*_fen``), the
        rules applied, reasons (in English, and as messages to translate:
        ``reason_ids``), per-line amounts and each rule not applied."""
        return {
            "state": "confirmed",
            "seq": self.sale.seq,
            "sale_id": self.sale.sale_id,
            "at": self.sale.at,
            "pan_last4": self.sale.pan_last4,
            "member": self.member,
            "verdict": self.verdict,
            **quote_json(self.quote),
        }

    def describe(self) -> str:
        """One line for the command line and the demo."""
        sale = self.as_json()
        verdict = "member" if sale["member"] else "not a member"
        line = (
            f"card •••• {sale['pan_last4']}: {verdict}; gross {sale['gross']}, "
            f"discount {sale['discount']}, net {sale['net']} (sale #{sale['seq']})"
        )
        if sale["reasons"]:
            line += f" [{'; '.join(sale['reasons'])}]"
        return line


def membership_for(
    generation: Generation, identity: CardIdentity, now: datetime, clock: Msg | None = None
) -> tuple[Membership | None, Msg | None]:
    """The member record for this card, or None and the reason it is not one (a
    message, pact.text). ``clock``: why the terminal's clock is not trusted
    (pact.generation.entry_time), when the caller knows more than ``generation``."""
    roster = generation.roster
    if roster is None:
        return None, Msg.of(N_("no member roster installed: run `unioncard sync`"))
    problem = clock or generation.clock_problem(now)
    if problem is not None:
        return None, problem
    snapshot = generation.snapshot
    if snapshot is not None and snapshot.is_expired(now):
        return None, Msg.of(
            N_("the union's update expired at %(at)s: no discounts until the terminal syncs"),
            at=iso(snapshot.expires_at),
        )
    if roster.header.is_expired(now):
        return None, Msg.of(
            N_("member roster expired at %(at)s: no discounts until the terminal syncs"),
            at=iso(roster.header.expires_at),
        )
    if identity.token is None:
        return None, Msg.of(N_("this terminal has no token key: re-enrol it"))
    found = roster.lookup(identity.token)
    if found is None:
        return None, Msg.of(N_("not a union member"))
    return found, None


def usage_for(
    journal: Journal,
    token: str | None,
    policy: Policy | None,
    now: datetime,
    shared: SharedUsage | None = None,
) -> dict[str, RuleUsage]:
    """This member's use of each quota rule in its current period: from this
    terminal's journal, plus what the union's usage file counts at the merchant's
    other terminals (``shared``, pact.usage)."""
    if token is None or policy is None:
        return {}
    usage = {}
    for rule_id, since in quota_periods(policy, now):
        own = journal.usage(token, rule_id, since)
        others = shared.lookup(token, rule_id, since, now) if shared is not None else NO_USE
        usage[rule_id] = RuleUsage(own.uses + others.uses, own.amount + others.amount)
    return usage


@dataclass(frozen=True)
class Priced:
    """A sale priced for a card, not yet journaled (a quote the cashier may confirm)."""

    draft: SaleDraft
    quote: Quote
    at: datetime  # when it was priced: the sale's time when it is journaled
    verdict: str = "member"  # VERDICTS

    @property
    def member(self) -> bool:
        return self.draft.member

    def as_json(self) -> dict[str, Any]:
        """The quote for the till: member, money, rules, reasons, lines (no seq yet)."""
        return {
            "at": iso(self.at),
            "pan_last4": self.draft.pan_last4,
            "member": self.member,
            "verdict": self.verdict,
            **quote_json(self.quote),
        }


def price(
    generation: Generation,
    enrolment: Enrolment,
    journal: Journal,
    identity: CardIdentity,
    basket: Basket | int,
    now: datetime,
    offline: Offline | None = None,
    shared: SharedUsage | None = None,
    clock: Msg | None = None,
) -> Priced:
    """Price the sale for this card from one generation, journaling nothing.

    ``basket`` may be a plain amount in fen: one line of category ``general``. The
    member's quota use is counted from the journal as it is now, plus the merchant's
    other terminals' from the union's usage file (``shared``). ``offline``: where
    the terminal stands against its offline limits; one that blocks gives a member
    no discount, with its reason (verdict ``sync_needed``). ``clock``: why the
    terminal's clock is not trusted (pact.generation.entry_time): no member discount.
    """
    if not isinstance(basket, Basket):
        basket = Basket.of_amount(basket)
    policy = generation.policy
    member, reason = membership_for(generation, identity, now, clock)
    state = verdict(generation, member, reason, now)
    if state == "member" and offline is not None and offline.block is not None:
        member, reason, state = None, offline.block, "sync_needed"
    token = identity.token.hex() if identity.token is not None else None
    usage = usage_for(journal, token, policy, now, shared) if member is not None else {}
    q = quote(basket, member, policy, now, usage, not_member_reason=reason)
    draft = SaleDraft(
        terminal_id=enrolment.terminal_id,
        merchant_id=enrolment.merchant_id,
        token=token,
        pan_last4=identity.pan_last4,
        member=member is not None and member.is_valid_on(shop_day(policy, now)),
        gross=q.gross,
        discount=q.discount,
        net=q.net,
        rules=q.applied,
        roster_version=generation.roster_version,
        policy_version=generation.policy_version,
        basket=journal_record(q, member),
        atc=identity.atc,
    )
    return Priced(draft, q, now, state)


def record(journal: Journal, priced: Priced) -> SaleResult:
    """Journal a priced sale durably (the point of no return) and return it."""
    sale = journal.append(priced.draft, at=priced.at)
    return SaleResult(sale=sale, quote=priced.quote, member=sale.member, verdict=priced.verdict)


def checkout(
    generation: Generation,
    enrolment: Enrolment,
    journal: Journal,
    identity: CardIdentity,
    basket: Basket | int,
    now: datetime,
    offline: Offline | None = None,
) -> SaleResult:
    """Price the sale for this card and record it durably before returning (one call)."""
    return record(journal, price(generation, enrolment, journal, identity, basket, now, offline))
