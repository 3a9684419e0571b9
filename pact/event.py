"""Event entries (pure): what happened to a terminal, journaled in the same signed chain
as its sales.

An event is an entry of ``kind`` "event" that moves no money: no card, no amounts, no
rules, no basket; ``note`` says what happened as ``"<code>: <detail>"``. The codes:

- ``startup``: the daemon started (the software and the versions it serves with);
- ``clock-jump``: the wall clock moved against the monotonic clock, or reads earlier
  than the newest entry;
- ``update-installed`` / ``update-refused``: a roster, policy or root update was
  installed, or refused (and why);
- ``integrity-failure``: the journal's chain or signatures did not verify;
- ``offline-limit``: the roster or policy expired, so members get no discounts until
  the terminal syncs.

docs/protocol.md ("Entry kinds") documents them; the audit reads them.
"""

from __future__ import annotations

from pact.sale import MAX_NOTE, Sale, SaleDraft

EVENT = "event"
STARTUP = "startup"
CLOCK_JUMP = "clock-jump"
UPDATE_INSTALLED = "update-installed"
UPDATE_REFUSED = "update-refused"
INTEGRITY_FAILURE = "integrity-failure"
OFFLINE_LIMIT = "offline-limit"
CODES = frozenset(
    {STARTUP, CLOCK_JUMP, UPDATE_INSTALLED, UPDATE_REFUSED, INTEGRITY_FAILURE, OFFLINE_LIMIT}
)


def event_note(code: str, detail: str) -> str:
    """``"<code>: <detail>"`` on one line, cut to the note's length."""
    if code not in CODES:
        raise ValueError(f"{code!r} is not an event code (one of {', '.join(sorted(CODES))})")
    text = f"{code}: {' '.join(detail.split())}"
    return text if len(text) <= MAX_NOTE else text[: MAX_NOTE - 1] + "…"


def event_draft(
    code: str,
    detail: str,
    *,
    terminal_id: str,
    merchant_id: str,
    roster_version: int,
    policy_version: int,
) -> SaleDraft:
    """The journal entry of one event (the versions the terminal holds when it happens;
    0 for none)."""
    return SaleDraft(
        terminal_id=terminal_id,
        merchant_id=merchant_id,
        token=None,
        pan_last4="",
        member=False,
        gross=0,
        discount=0,
        net=0,
        rules=(),
        roster_version=roster_version,
        policy_version=policy_version,
        kind=EVENT,
        note=event_note(code, detail),
    )


def event_code(entry: Sale) -> str | None:
    """The code of an event entry; None for a sale, void or refund."""
    if entry.kind != EVENT or entry.note is None:
        return None
    return entry.note.partition(":")[0]
