"""The audit engine (pure): findings over a merchant's journal entries, from what the
journal keeps and what the union signed, trusting neither the shop nor the union's
own figures.

It runs over the central store's entries (``unioncard central audit run``) and, being
pure, over any other copy of them. Each :class:`Finding` has a severity, the terminal,
the seq or seqs, a kind and a plain explanation (a message: English here, Chinese from
the catalogue). The checks:

- evidence, per terminal: a gap in the seqs, a broken chain (an entry whose hash is
  not its content's, or that does not follow the one before: edited, reordered,
  forked), a device signature that does not verify, time going backwards beyond
  :data:`CLOCK_TOLERANCE`, a clock jump the terminal itself journaled (a
  ``clock-jump`` event: its clock read behind its last trusted time, or moved against
  its monotonic clock; ``clock_jump``); across the union's sales, a card's
  transaction counter (ATC) that repeats or goes backwards;
- compliance, per sale: the discount recomputed from the entry's basket with the
  signed policy version it names, the member's status and tier at that moment (the
  union's member history) and the card's earlier use at that merchant on all its
  terminals (quotas): over-discounts, under-discounts, discounts to a card that was
  not an active member, discounts after the merchant's suspension or exit;
- behaviour (:class:`Thresholds` holds the limits, each with its default): a terminal
  silent past its policy's offline stop (``silent``, from the union's record of its
  last call, :class:`Contact`); a terminal whose voids and refunds are more than a
  share of its sales over the period (``reversal_share``); one card used more than N
  times in a day (the policy's time zone) at the merchant (``card_uses``); members
  given no discount because the terminal had journaled an ``offline-limit`` event
  (its roster or policy out of date, or no sync for too long: pact.event), or a
  ``clock-jump`` event saying its clock read behind its last trusted time (members get
  no discount until the time is set), counted until it next installs an update or
  serves a member again (``turned_away``; those sales are not also under-discounts).

Entries before :attr:`Facts.since` are context (the quotas' earlier use, the card
counters); the behaviour checks count only the entries from then on.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from heapq import heappop, heappush
from typing import Protocol, TypeVar
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pact.basket import Basket, Line, RuleUsage
from pact.chain import GENESIS, entry_hash
from pact.device import check_signature
from pact.discount import discount_owed
from pact.errors import DeviceSignatureError, ReversalError, SignatureError
from pact.event import CLOCK_JUMP, OFFLINE_LIMIT, UPDATE_INSTALLED, event_code
from pact.money import fen
from pact.policy import DEFAULT_TIMEZONE, OFFLINE_STOP_HOURS, Policy, quota_periods
from pact.reversal import VOID, refund_draft, void_draft
from pact.roster import Membership
from pact.sale import DRAFT_FIELDS, REVERSALS, Sale
from pact.text import N_, Msg
from pact.timefmt import iso, parse_iso

CLOCK_TOLERANCE = timedelta(minutes=5)
# the audit reads each chain from this long before its period: the longest quota period
# (a month), and a day (the quotas' earlier use; the chain's anchor)
QUOTA_LOOKBACK = timedelta(days=32)
HIGH, MEDIUM, LOW = "high", "medium", "low"
SEVERITIES = (HIGH, MEDIUM, LOW)
# the kinds of finding, for the console's filter
EVIDENCE_KINDS = (
    "edited", "gap", "fork", "time_backwards", "clock_jump", "bad_signature", "atc_repeated",
    "atc_backwards", "dated_after_receipt", "missing_chain",
)  # fmt: skip
# what a ``clock-jump`` event's note says when the terminal stopped discounts for it
# (terminal.service: its clock read behind its last trusted time, pact.generation)
CLOCK_STOPS_DISCOUNTS = "members get no discount"
COMPLIANCE_KINDS = (
    "unknown_policy", "not_a_member", "merchant_not_active", "bad_basket", "over_discount",
    "under_discount", "bad_reversal",
)  # fmt: skip
BEHAVIOUR_KINDS = ("silent", "reversal_share", "card_uses", "turned_away")
# findings about the terminal or the period as a whole, not tied to entries judged
UNTIED_KINDS = frozenset({"silent", "complaint", "missing_chain"})


@dataclass(frozen=True)
class Finding:
    severity: str  # high, medium, low
    terminal_id: str
    seqs: tuple[int, ...]
    kind: str
    detail: Msg

    def line(self) -> str:
        """``terminal=<id> seq=<n> finding=<kind> detail=<text>`` (English)."""
        seq = ",".join(str(s) for s in self.seqs)
        return f"terminal={self.terminal_id} seq={seq} finding={self.kind} detail={self.detail}"

    def as_json(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "terminal_id": self.terminal_id,
            "seqs": list(self.seqs),
            "kind": self.kind,
            "detail": str(self.detail),
            "detail_id": self.detail.as_json(),
        }


@dataclass(frozen=True)
class Thresholds:
    """The behaviour checks' limits (the defaults are the union's; docs/operations.md)."""

    # voids and refunds above this share of a terminal's sales over the period ...
    reversal_percent: int = 10
    # ... once it has at least this many sales (fewer say nothing)
    reversal_min_sales: int = 20
    # one card used more than this many times in one day at one merchant
    card_uses_per_day: int = 5


@dataclass(frozen=True)
class Contact:
    """What the union knows of one of the merchant's terminals' calls."""

    merchant_id: str
    enrolled_at: datetime
    last_contact: datetime | None  # its last call of any kind
    last_upload: datetime | None  # when the union received its newest entry
    last_seq: int  # the newest entry the union holds (0: none)
    policy_version: int | None  # the policy it last reported holding
    revoked: bool = False  # a revoked terminal is expected to be silent
    # the newest seq the union holds of its entries journaled in the audit's time, from
    # the context start (a bundle's record); None: not known (the store's own audit)
    held_in_period: int | None = None


@dataclass
class Facts:
    """What the audit trusts besides the entries: the union's signed policies, each
    terminal's device key, and each card's standing at a moment; for the behaviour
    checks, the period and the union's record of the terminals' calls."""

    policy: Callable[[str, int], Policy | None]  # (merchant, version) -> the signed policy
    device_key: Callable[[str], Ed25519PublicKey | None]  # terminal -> its registered key
    membership: Callable[[str, datetime], Membership | None]  # (token, at) -> standing
    findings: list[Finding] = field(default_factory=list)
    since: datetime | None = None  # the period's start: earlier entries are context only
    # From this time on each terminal's entries are all there (a bundle's or the store's
    # context start): its first must be its first ever (seq 1) or journaled before it,
    # the chain's anchor. None: not checked (a version 1 bundle holds no anchors).
    chained_from: datetime | None = None
    until: datetime | None = None  # the period's end, or now if sooner: silence counts to it
    terminals: Mapping[str, Contact] = field(default_factory=dict)  # the merchant's terminals
    thresholds: Thresholds = field(default_factory=Thresholds)
    # Every version of the merchant's policy the union signed (as far as it holds them):
    # the union's word on the merchant's status from each one's signing on, so that a
    # sale naming an older version than a suspension's or an exit's is judged by it.
    signed_policies: Sequence[Policy] = ()


T = TypeVar("T")
# an entry's place in time order: (its time, its terminal, its seq)
_Place = tuple[datetime, str, int]


class Runner(Protocol):
    """Runs ``count`` independent pieces of pure work, ``work(0)`` to
    ``work(count - 1)``, and gives their results in that order: one after the other
    (:data:`IN_TURN`), or side by side in processes of their own (the command line's
    ``central.parallel.ForkedWorkers``)."""

    @property
    def workers(self) -> int: ...

    def __call__(self, work: Callable[[int], T], count: int) -> list[T]: ...


class _InTurn:
    workers = 1

    def __call__(self, work: Callable[[int], T], count: int) -> list[T]:
        return [work(k) for k in range(count)]


IN_TURN: Runner = _InTurn()


def audit(entries: Iterable[Sale], facts: Facts, runner: Runner = IN_TURN) -> list[Finding]:
    """Every finding over ``entries`` (one merchant's, of any of its terminals, each
    terminal's from its first entry in the period on), ordered by terminal and seq.

    The costly checks (each entry's hash and device signature, each sale's discount
    recomputed) go by card: ``runner`` may run one share of the cards in each of its
    workers, in processes of their own. The policies and device keys are looked up
    first, here; a worker asks ``facts.membership`` itself, so with workers in other
    processes it must answer from memory (``central.service.Union.audit`` reads the
    standing of every card the entries name first)."""
    kept = list(entries)
    facts_ = _Cached(facts)
    by_terminal: dict[str, list[Sale]] = {}
    by_card: dict[str, list[Sale]] = {}
    for entry in kept:
        by_terminal.setdefault(entry.terminal_id, []).append(entry)
        card = entry.token if entry.token is not None else entry.sale_id
        by_card.setdefault(card, []).append(entry)
        facts_.at(entry)  # parsed here, once: the workers inherit them
    # each card's entries in one share (its quota use and its day's uses are its own)
    shares = [kept] if runner.workers <= 1 else _dealt(by_card.values(), runner.workers)
    for merchant_id, version in {(e.merchant_id, e.policy_version) for e in kept}:
        facts_.policy(merchant_id, version)
    for terminal_id, terminal_entries in by_terminal.items():
        terminal_entries.sort(key=_seq)
        facts_.device_key(terminal_id)
    stretches: dict[tuple[str, int], Sale] = {}
    for terminal_entries in by_terminal.values():
        stretches.update(_offline_stretches(terminal_entries))
    done = runner(lambda k: _share(shares[k], facts_, stretches), len(shares))
    altered = {key for share in done for key in share.altered}
    unsigned = {key for share in done for key in share.bad_signatures}
    findings: list[Finding] = []
    for terminal_id in sorted(by_terminal):
        findings += _evidence(by_terminal[terminal_id], facts_, altered, unsigned)
        findings += _dated_after_receipt(by_terminal[terminal_id], facts_)
        findings += _reversals(by_terminal[terminal_id], facts_)
        findings += _missing_head(by_terminal[terminal_id], facts_)
        findings += _missing_tail(by_terminal[terminal_id], facts_)
    findings += _missing_chains(by_terminal, facts_)
    findings += _counters(kept)
    findings += [f for share in done for f in share.findings]
    findings += _turned_away(stretches, [t for share in done for t in share.turned])
    judged = [e for e in kept if facts.since is None or facts_.at(e) >= facts.since]
    findings += _silent(facts_)
    findings += _reversal_share(judged, facts.thresholds)
    return sorted(findings, key=lambda f: (f.terminal_id, f.seqs, f.kind, str(f.detail)))


def _seq(entry: Sale) -> int:
    return entry.seq


def _dealt(cards: Iterable[list[Sale]], count: int) -> list[list[Sale]]:
    """Each card's entries dealt whole into ``count`` shares of nearly as many entries
    each: the cards with most entries first, each to the share that holds fewest so far
    (the workers run side by side, and the audit waits for the largest share)."""
    shares: list[list[Sale]] = [[] for _ in range(count)]
    sizes = [(0, k) for k in range(count)]  # a heap: (entries so far, share)
    for entries in sorted(cards, key=len, reverse=True):
        size, k = heappop(sizes)
        shares[k] += entries
        heappush(sizes, (size + len(entries), k))
    return shares


def _first(pair: tuple[_Place, Sale]) -> _Place:
    return pair[0]


@dataclass(frozen=True)
class _Share:
    """One worker's share of the costly checks: the entries whose hash is not their
    content's, those whose device signature does not verify, the sales' findings,
    and the sales of stretches out of date that got less than owed (their place in
    time order, the event's key, the seq and the discount owed)."""

    altered: list[tuple[str, int]]
    bad_signatures: list[tuple[str, int]]
    findings: list[Finding]
    turned: list[tuple[_Place, tuple[str, int], int, int]]


def _share(
    entries: Sequence[Sale], facts: _Cached, stretches: Mapping[tuple[str, int], Sale]
) -> _Share:
    """The costly checks over one share of the cards (every entry of each)."""
    altered, unsigned = [], []
    for entry in entries:
        if entry_hash(entry.prev_hash, entry) != entry.hash:
            altered.append((entry.terminal_id, entry.seq))
        key = facts.device_key(entry.terminal_id)
        if entry.sig is not None and key is not None:
            try:
                check_signature(key, entry)
            except (DeviceSignatureError, SignatureError):
                unsigned.append((entry.terminal_id, entry.seq))
    at = facts.at
    ordered = sorted((((at(e), e.terminal_id, e.seq), e) for e in entries), key=_first)
    findings, turned = _compliance(ordered, facts, stretches)
    since = facts.facts.since
    findings += _card_uses([e for (t, _, _), e in ordered if since is None or t >= since], facts)
    return _Share(altered, unsigned, findings, turned)


class _Cached:
    """The facts, each policy and device key looked up once, each entry's time parsed once."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self._policies: dict[tuple[str, int], Policy | None] = {}
        self._keys: dict[str, Ed25519PublicKey | None] = {}
        self._at: dict[tuple[str, int], datetime] = {}
        # merchant -> its signed policies in signing order, and when each was signed
        self._signed: dict[str, tuple[list[datetime], list[Policy]]] = {}
        for policy in sorted(facts.signed_policies, key=lambda p: (p.issued_at, p.version)):
            times, kept = self._signed.setdefault(policy.merchant_id, ([], []))
            times.append(policy.issued_at)
            kept.append(policy)

    def policy(self, merchant_id: str, version: int) -> Policy | None:
        key = (merchant_id, version)
        if key not in self._policies:
            self._policies[key] = self.facts.policy(merchant_id, version)
        return self._policies[key]

    def newest_signed(self, merchant_id: str, at: datetime) -> Policy | None:
        """The merchant's newest policy signed before ``at`` (None: none known); one
        signed in the same second as a sale may have come after it."""
        times, kept = self._signed.get(merchant_id, ([], []))
        found = bisect_left(times, at)
        return kept[found - 1] if found else None

    def device_key(self, terminal_id: str) -> Ed25519PublicKey | None:
        if terminal_id not in self._keys:
            self._keys[terminal_id] = self.facts.device_key(terminal_id)
        return self._keys[terminal_id]

    def at(self, entry: Sale) -> datetime:
        key = (entry.terminal_id, entry.seq)
        found = self._at.get(key)
        if found is None:
            found = self._at[key] = parse_iso(entry.at)
        return found


def _evidence(
    entries: Sequence[Sale],
    facts: _Cached,
    altered: set[tuple[str, int]],
    unsigned: set[tuple[str, int]],
) -> list[Finding]:
    """One terminal's entries in seq order, the entries whose hash is not their
    content's and those whose signature does not verify being ``altered`` and
    ``unsigned`` (found by :func:`_share`); an entry with no signature at all, of a
    terminal with a registered key, is a bad signature too."""
    out: list[Finding] = []
    before: Sale | None = None
    for entry in entries:
        t = entry.terminal_id
        if (t, entry.seq) in altered:
            out.append(
                Finding(HIGH, t, (entry.seq,), "edited",
                        Msg.of(N_("the entry's content is not what its hash covers: it was "
                                  "changed after it was journaled")))
            )  # fmt: skip
        if before is not None:
            if entry.seq != before.seq + 1:
                out.append(
                    Finding(HIGH, t, (before.seq, entry.seq), "gap",
                            Msg.of(N_("entries %(first)s to %(last)s are missing"),
                                   first=before.seq + 1, last=entry.seq - 1))
                )  # fmt: skip
            elif entry.prev_hash != before.hash:
                out.append(
                    Finding(HIGH, t, (before.seq, entry.seq), "fork",
                            Msg.of(N_("the entry does not follow the one before it: the "
                                      "journal was forked or reordered")))
                )  # fmt: skip
            if facts.at(entry) < facts.at(before) - CLOCK_TOLERANCE:
                out.append(
                    Finding(MEDIUM, t, (before.seq, entry.seq), "time_backwards",
                            Msg.of(N_("the time goes back from %(before)s to %(at)s"),
                                   before=before.at, at=entry.at))
                )  # fmt: skip
        elif entry.seq == 1 and entry.prev_hash != GENESIS:
            out.append(
                Finding(HIGH, t, (1,), "fork",
                        Msg.of(N_("the first entry does not start the chain")))
            )  # fmt: skip
        if event_code(entry) == CLOCK_JUMP:
            out.append(
                Finding(MEDIUM, t, (entry.seq,), "clock_jump",
                        Msg.of(N_("the terminal journaled a clock jump (the times of the "
                                  "entries around it may be wrong): %(note)s"),
                               note=(entry.note or "").partition(": ")[2]))
            )  # fmt: skip
        if (t, entry.seq) in unsigned:
            out.append(
                Finding(HIGH, t, (entry.seq,), "bad_signature",
                        Msg.of(N_("the device signature does not verify with the "
                                  "terminal's registered key")))
            )  # fmt: skip
        elif entry.sig is None and facts.device_key(t) is not None:
            out.append(
                Finding(HIGH, t, (entry.seq,), "bad_signature",
                        Msg.of(N_("the entry carries no device signature, though its "
                                  "terminal has a registered key: nothing but the union's "
                                  "word vouches for it")))
            )  # fmt: skip
        before = entry
    return out


def _missing_head(entries: Sequence[Sale], facts: _Cached) -> list[Finding]:
    """One terminal's entries (in seq order) that start within the audit's time: the
    entries before the first were left out (of a bundle, or deleted from the store), for
    the chain's first link here has nothing to be checked against. They start at its
    seq 1 or at its anchor, the entry before the audit's time."""
    since = facts.facts.chained_from
    if not entries or since is None:
        return []
    first = entries[0]
    if first.seq == 1 or facts.at(first) < since:
        return []
    period = facts.facts.since
    judged = next((e.seq for e in entries if period is None or facts.at(e) >= period), None)
    return [
        Finding(HIGH, first.terminal_id, tuple(sorted({first.seq, judged or first.seq})), "gap",
                Msg.of(N_("the entries before %(seq)s are missing: it is not the terminal's "
                          "first entry, and it was journaled at %(at)s, after %(since)s, "
                          "where the entries checked start"),
                       seq=first.seq, at=first.at, since=iso(since)))
    ]  # fmt: skip


def _missing_chains(by_terminal: Mapping[str, Sequence[Sale]], facts: _Cached) -> list[Finding]:
    """The merchant's terminals of which the union holds entries journaled in the
    audit's time (its record of each, in a bundle) and none is here: a whole chain
    left out, which no check of entries can see."""
    return [
        Finding(HIGH, terminal_id, (contact.held_in_period,), "missing_chain",
                Msg.of(N_("the union holds this terminal's entries up to %(seq)s journaled "
                          "in the audit's time, and none of them is here"),
                       seq=contact.held_in_period))
        for terminal_id, contact in sorted(facts.facts.terminals.items())
        if contact.held_in_period and terminal_id not in by_terminal
    ]  # fmt: skip


def _missing_tail(entries: Sequence[Sale], facts: _Cached) -> list[Finding]:
    """One terminal's entries (in seq order) that stop short of the newest entry the
    union had received before the period's end (or now): those after them were
    journaled before that receipt, after the last one here, so within the audit's
    time; they are missing (left out of a bundle, or deleted from the store). The
    chain shows a gap between entries, not at its end: this is the end's check."""
    contact = facts.facts.terminals.get(entries[0].terminal_id) if entries else None
    until = facts.facts.until
    if contact is None or contact.last_upload is None or until is None:
        return []
    newest = entries[-1].seq
    if newest >= contact.last_seq or contact.last_upload >= until:
        return []
    return [
        Finding(HIGH, entries[-1].terminal_id, (newest, contact.last_seq), "gap",
                Msg.of(N_("entries %(first)s to %(last)s, which the union had received by "
                          "%(at)s, are missing"),
                       first=newest + 1, last=contact.last_seq, at=iso(contact.last_upload)))
    ]  # fmt: skip


def _reversals(entries: Sequence[Sale], facts: _Cached) -> list[Finding]:
    """Each void or refund that is not what the terminal makes of the sale it names
    (pact.reversal, given the entries between them): one that takes back other amounts,
    rules or lines than the sale's, a sale voided twice or after a refund, a reversal of
    a reversal or an event, units refunded that were not sold. The sale must be among
    ``entries`` (one terminal's, in seq order); the time limits (today's sales, the
    refund window) are the terminal's to keep and are not judged here."""
    by_seq = {e.seq: e for e in entries}
    earlier: dict[int, list[Sale]] = {}  # sale's seq -> its reversals so far, in seq order
    out: list[Finding] = []
    for entry in entries:
        if entry.kind not in REVERSALS or entry.ref_seq is None:
            continue
        sale = by_seq.get(entry.ref_seq)
        if sale is None:  # before the audit's context (a gap says if it should be here)
            continue
        # what pact.reversal reads of the entries between: the sale's earlier reversals
        between = list(earlier.setdefault(sale.seq, []))
        earlier[sale.seq].append(entry)
        policy = facts.policy(sale.merchant_id, sale.policy_version)
        then = facts.at(sale)  # within the time limits: only what it takes back is judged
        try:
            if entry.kind == VOID:
                draft = void_draft(sale, between, entry.note or "", policy, then)
            else:
                items = [(line["of"], line["qty"]) for line in (entry.basket or {})["lines"]]
                draft = refund_draft(sale, between, items, entry.note or "", policy, then)
        except ReversalError as exc:
            why = exc.msg
        except (KeyError, TypeError, ValueError):
            why = Msg.of(N_("its lines do not name the sale's lines and units"))
        else:
            wrong = [n for n in DRAFT_FIELDS if getattr(draft, n) != _reversal_value(entry, n)]
            if not wrong:
                continue
            why = Msg.of(N_("it does not take back what the sale gave (%(fields)s differ)"),
                         fields=", ".join(wrong))  # fmt: skip
        said = (
            N_("a void of entry %(sale)s that the terminal would not make: %(why)s")
            if entry.kind == VOID
            else N_("a refund of entry %(sale)s that the terminal would not make: %(why)s")
        )
        out.append(
            Finding(HIGH, entry.terminal_id, (sale.seq, entry.seq), "bad_reversal",
                    Msg.of(said, sale=sale.seq, why=why))
        )  # fmt: skip
    return out


def _reversal_value(entry: Sale, name: str) -> object:
    """A field of a journaled reversal as its draft holds it (rules as a tuple)."""
    value = getattr(entry, name)
    return tuple(value) if name == "rules" else value


def _dated_after_receipt(entries: Sequence[Sale], facts: _Cached) -> list[Finding]:
    """One terminal's entries (in seq order) dated later than the union's receipt of its
    newest entry, by more than the clock's tolerance: each was received by then, so the
    terminal's clock was ahead when it journaled them, and the time their discount was
    judged by (a time window, a quota's period, the merchant's status) cannot be
    trusted. One finding per run of such entries, its first and last seq."""
    contact = facts.facts.terminals.get(entries[0].terminal_id) if entries else None
    if contact is None or contact.last_upload is None:
        return []
    bound = contact.last_upload + CLOCK_TOLERANCE
    runs: list[list[Sale]] = []
    for entry in entries:
        if facts.at(entry) <= bound:
            continue
        if runs and runs[-1][-1].seq == entry.seq - 1:
            runs[-1].append(entry)
        else:
            runs.append([entry])
    return [
        Finding(MEDIUM, run[0].terminal_id, tuple(sorted({run[0].seq, run[-1].seq})),
                "dated_after_receipt",
                Msg.of(N_("%(count)s entries dated as late as %(latest)s, after the union "
                          "received this terminal's newest entry at %(received)s: its clock "
                          "was ahead, and the times their discounts were judged by cannot "
                          "be trusted"),
                       count=len(run), latest=max(e.at for e in run),
                       received=iso(contact.last_upload)))
        for run in runs
    ]  # fmt: skip


def _counters(entries: Sequence[Sale]) -> list[Finding]:
    """A card's ATC must go up from one sale to the next, at any merchant."""
    out: list[Finding] = []
    by_card: dict[str, list[Sale]] = {}
    for e in entries:
        if e.kind is None and e.token is not None and e.atc is not None:
            by_card.setdefault(e.token, []).append(e)
    for sales in by_card.values():
        sales.sort(key=lambda e: (e.at, e.terminal_id, e.seq))
        for before, entry in zip(sales, sales[1:], strict=False):
            if before.atc is None or entry.atc is None:  # pragma: no cover - filtered above
                continue
            if entry.atc <= before.atc:
                kind = "atc_repeated" if entry.atc == before.atc else "atc_backwards"
                out.append(
                    Finding(HIGH, entry.terminal_id, (entry.seq,), kind,
                            Msg.of(N_("the card's transaction counter went from %(before)s "
                                      "(%(where)s) to %(atc)s: a copied or replayed card"),
                                   before=before.atc, atc=entry.atc,
                                   where=f"{before.terminal_id} #{before.seq}"))
                )  # fmt: skip
    return out


class _Usage:
    """Each card's quota use as the sales go by, in time order (what
    :func:`pact.usage.count_usage` counts over a card's earlier entries, kept as it
    goes: each sale's use is found by bisecting the card's own uses, not by reading
    all of them again)."""

    def __init__(self) -> None:
        # token -> rule -> (times, [(terminal, seq, amount)]) in time order
        self._uses: dict[str, dict[str, tuple[list[datetime], list[tuple[str, int, int]]]]] = {}
        self._back: dict[tuple[str, int, str], int] = {}  # given back by voids and refunds

    def add(self, entry: Sale, at: datetime) -> None:
        if entry.token is None or not entry.basket:
            return
        discounts = entry.basket.get("discounts", {})
        if entry.kind in REVERSALS and entry.ref_seq is not None:
            for rule_id, amount in discounts.items():
                key = (entry.terminal_id, entry.ref_seq, rule_id)
                self._back[key] = self._back.get(key, 0) + int(amount)
        elif entry.kind is None:
            rules = self._uses.setdefault(entry.token, {})
            for rule_id, amount in discounts.items():
                times, uses = rules.setdefault(rule_id, ([], []))
                times.append(at)
                uses.append((entry.terminal_id, entry.seq, int(amount)))

    def of(self, token: str, periods: Mapping[str, datetime]) -> dict[str, RuleUsage]:
        out = {}
        rules = self._uses.get(token, {})
        for rule_id, since in periods.items():
            times, uses = rules.get(rule_id, ([], []))
            count = total = 0
            for terminal_id, seq, amount in uses[bisect_left(times, since) :]:
                remaining = amount - self._back.get((terminal_id, seq, rule_id), 0)
                if remaining > 0:
                    count, total = count + 1, total + remaining
            out[rule_id] = RuleUsage(count, total)
        return out


def _compliance(
    entries: Sequence[tuple[_Place, Sale]],
    facts: _Cached,
    stretches: Mapping[tuple[str, int], Sale],
) -> tuple[list[Finding], list[tuple[_Place, tuple[str, int], int, int]]]:
    """The sales' findings over ``entries`` (in time order, with their place in it:
    every sale of a card among them), and the sales of a stretch out of date that got
    less than owed (not findings of their own: :func:`_turned_away`)."""
    out: list[Finding] = []
    usage = _Usage()
    turned: list[tuple[_Place, tuple[str, int], int, int]] = []  # (place, event, seq, owed)
    for place, entry in entries:
        at = place[0]
        if entry.kind is None and entry.basket is not None:
            finding, owed = _check_sale(entry, at, usage, facts)
            event = stretches.get((entry.terminal_id, entry.seq))
            if finding is not None and finding.kind == "under_discount" and event is not None:
                turned.append((place, (event.terminal_id, event.seq), entry.seq, owed))
            elif finding is not None:
                out.append(finding)
        usage.add(entry, at)
    return out, turned


def _turned_away(
    stretches: Mapping[tuple[str, int], Sale],
    turned: Iterable[tuple[_Place, tuple[str, int], int, int]],
) -> list[Finding]:
    """One finding per event whose stretch turned members away, its sales in time order."""
    by_event: dict[tuple[str, int], list[tuple[int, int]]] = {}  # event -> [(seq, owed)]
    for _, key, seq, owed in sorted(turned):
        by_event.setdefault(key, []).append((seq, owed))
    events = {(e.terminal_id, e.seq): e for e in stretches.values()}
    out = []
    for key, sales in by_event.items():
        event = events[key]
        out.append(
            Finding(LOW, event.terminal_id, tuple(seq for seq, _ in sales), "turned_away",
                    Msg.of(N_("%(count)s members got no discount (%(owed)s owed in all) "
                              "while the terminal was out of date: entry %(event)s says "
                              "\"%(note)s\""),
                           count=len(sales), owed=fen(sum(owed for _, owed in sales)),
                           event=event.seq, note=event.note or ""))
        )  # fmt: skip
    return out


def _offline_stretches(entries: Sequence[Sale]) -> dict[tuple[str, int], Sale]:
    """The sales a terminal journaled to a card with no member discount after an
    ``offline-limit`` event that stops discounts (not a mere warning), or a
    ``clock-jump`` event of a clock behind its last trusted time, until it next
    installs an update or serves a member: sale -> that event."""
    out: dict[tuple[str, int], Sale] = {}
    current: Sale | None = None
    for entry in entries:  # in seq order
        code = event_code(entry)
        if code == OFFLINE_LIMIT:
            key = (entry.note or "").partition(": ")[2]
            if not key.startswith("warn "):
                current = entry
        elif code == CLOCK_JUMP and CLOCK_STOPS_DISCOUNTS in (entry.note or ""):
            current = entry
        elif code == UPDATE_INSTALLED or (entry.kind is None and entry.member):
            current = None
        elif current is not None and entry.kind is None and entry.token is not None:
            if not entry.discount:
                out[(entry.terminal_id, entry.seq)] = current
    return out


def _check_sale(
    entry: Sale, at: datetime, usage: _Usage, facts: _Cached
) -> tuple[Finding | None, int]:
    """The finding on one sale, if any, and the discount the policy gives it."""
    t, seq = entry.terminal_id, (entry.seq,)
    policy = facts.policy(entry.merchant_id, entry.policy_version)
    if policy is None:
        if entry.discount:
            return Finding(HIGH, t, seq, "unknown_policy",
                           Msg.of(N_("a discount under policy v%(version)s, which the union "
                                     "never signed for this merchant"),
                                  version=entry.policy_version)), 0  # fmt: skip
        return None, 0
    member = facts.facts.membership(entry.token, at) if entry.token is not None else None
    if entry.discount and (member is None or member.status != "active"):
        return Finding(HIGH, t, seq, "not_a_member",
                       Msg.of(N_("a discount of %(amount)s to a card that was not an active "
                                 "member then"), amount=fen(entry.discount))), 0  # fmt: skip
    status = policy.status_at(at)
    if entry.discount and status != "active":
        return Finding(HIGH, t, seq, "merchant_not_active",
                       Msg.of(N_("a discount of %(amount)s while the merchant was %(status)s"),
                              amount=fen(entry.discount), status=status)), 0  # fmt: skip
    newer = facts.newest_signed(entry.merchant_id, at) if entry.discount else None
    if newer is not None and newer.version > policy.version and newer.status_at(at) != "active":
        # the sale names a version signed before the union suspended or exited the shop
        return Finding(MEDIUM, t, seq, "merchant_not_active",
                       Msg.of(N_("a discount of %(amount)s while the merchant was %(status)s "
                                 "(policy v%(version)s, signed %(signed)s); the sale names "
                                 "v%(named)s, signed before it"),
                              amount=fen(entry.discount), status=newer.status_at(at),
                              version=newer.version, signed=iso(newer.issued_at),
                              named=policy.version)), 0  # fmt: skip
    try:
        lines = tuple(
            Line(str(x["sku"]), str(x["category"]), int(x["qty"]), int(x["unit_price"]))
            for x in entry.basket["lines"]  # type: ignore[index]
        )
        basket = Basket(lines)
    except (KeyError, TypeError, ValueError):
        return Finding(HIGH, t, seq, "bad_basket",
                       Msg.of(N_("the entry's basket cannot be read back"))), 0  # fmt: skip
    used: Mapping[str, RuleUsage] = {}
    if entry.token is not None and member is not None:
        periods = dict(quota_periods(policy, at))
        if periods:
            used = usage.of(entry.token, periods)
    owed = discount_owed(basket, member, policy, at, used)
    if entry.discount > owed:
        return Finding(HIGH, t, seq, "over_discount",
                       Msg.of(N_("a discount of %(given)s where the policy gives %(owed)s"),
                              given=fen(entry.discount), owed=fen(owed))), owed  # fmt: skip
    if entry.discount < owed:
        return Finding(MEDIUM, t, seq, "under_discount",
                       Msg.of(N_("a discount of %(given)s where the member was owed %(owed)s"),
                              given=fen(entry.discount), owed=fen(owed))), owed  # fmt: skip
    return None, owed


# ---------------------------------------------------------------------------- behaviour
def _silent(facts: _Cached) -> list[Finding]:
    """Each terminal not revoked whose last call is further back, at the period's end
    (or now), than its policy's offline stop."""
    until = facts.facts.until
    if until is None:
        return []
    out = []
    for terminal_id, c in sorted(facts.facts.terminals.items()):
        if c.revoked:
            continue
        heard = max(
            (t for t in (c.last_contact, c.last_upload) if t is not None), default=c.enrolled_at
        )
        policy = facts.policy(c.merchant_id, c.policy_version) if c.policy_version else None
        stop = policy.offline_stop_hours if policy is not None else OFFLINE_STOP_HOURS
        if until - heard <= timedelta(hours=stop):
            continue
        out.append(
            Finding(MEDIUM, terminal_id, (c.last_seq,) if c.last_seq else (), "silent",
                    Msg.of(N_("the terminal has not called the union since %(at)s "
                              "(%(hours)s hours by %(until)s, past its offline limit of "
                              "%(limit)s hours); the union holds its entries up to "
                              "%(seq)s"),
                           at=iso(heard), hours=int((until - heard).total_seconds() // 3600),
                           until=iso(until), limit=stop, seq=c.last_seq))
        )  # fmt: skip
    return out


def _reversal_share(entries: Sequence[Sale], thresholds: Thresholds) -> list[Finding]:
    """Each terminal whose voids and refunds are above the share of its sales."""
    sales: dict[str, int] = {}
    reversals: dict[str, list[int]] = {}
    for e in entries:
        if e.kind is None:
            sales[e.terminal_id] = sales.get(e.terminal_id, 0) + 1
        elif e.kind in REVERSALS:
            reversals.setdefault(e.terminal_id, []).append(e.seq)
    out = []
    for terminal_id, seqs in sorted(reversals.items()):
        count = sales.get(terminal_id, 0)
        if count < thresholds.reversal_min_sales:
            continue
        if len(seqs) * 100 <= thresholds.reversal_percent * count:
            continue
        out.append(
            Finding(MEDIUM, terminal_id, tuple(sorted(seqs)), "reversal_share",
                    Msg.of(N_("%(reversals)s voids and refunds against %(sales)s sales "
                              "(%(share)s%%), above the %(limit)s%% the audit allows"),
                           reversals=len(seqs), sales=count,
                           share=len(seqs) * 100 // count, limit=thresholds.reversal_percent))
        )  # fmt: skip
    return out


def _card_uses(entries: Sequence[Sale], facts: _Cached) -> list[Finding]:
    """Each card used more than the limit in one day (the policy's time zone) at one
    merchant: the first use over it."""
    limit = facts.facts.thresholds.card_uses_per_day
    zones: dict[tuple[str, int], ZoneInfo] = {}
    days: dict[tuple[str, str, date], list[Sale]] = {}
    for e in entries:
        if e.kind is not None or e.token is None:
            continue
        key = (e.merchant_id, e.policy_version)
        zone = zones.get(key)
        if zone is None:
            policy = facts.policy(*key)
            zone = zones[key] = policy.zone if policy is not None else ZoneInfo(DEFAULT_TIMEZONE)
        day = facts.at(e).astimezone(zone).date()
        uses = days.get((e.token, e.merchant_id, day))
        if uses is None:
            days[(e.token, e.merchant_id, day)] = [e]
        else:
            uses.append(e)
    over_limit = [(key, uses) for key, uses in days.items() if len(uses) > limit]
    out = []
    for (_, _, day), uses in sorted(over_limit, key=lambda kv: kv[0][1:]):
        uses.sort(key=lambda e: (e.at, e.terminal_id, e.seq))
        over = uses[limit]
        out.append(
            Finding(MEDIUM, over.terminal_id, (over.seq,), "card_uses",
                    Msg.of(N_("card •••• %(last4)s was used %(count)s times on %(day)s at "
                              "this merchant (more than %(limit)s a day): from here on"),
                           last4=over.pan_last4, count=len(uses), day=day.isoformat(),
                           limit=limit))
        )  # fmt: skip
    return out


def kinds() -> tuple[str, ...]:
    """Every kind of finding (complaints included), for filters."""
    return (*EVIDENCE_KINDS, *COMPLIANCE_KINDS, *BEHAVIOUR_KINDS, "complaint")
