"""The audit bundle's export: gather a merchant's period from the union's store and
keys, and sign it with the audit key (pact.bundle builds and verifies the file).

``unioncard central audit export`` calls :func:`export_bundle` and writes its bytes
atomically. What goes in (docs/protocol.md, "Audit bundle"):

- each of the merchant's terminals' entries, every kind, from its first journaled in
  the month before the period (the quotas' earlier use, as ``central audit run``
  reads it) to its last in the period: unbroken runs of each chain;
- every root metadata version (v1 on: the chain an auditor walks to the audit key);
- every signed policy version of the merchant, and the roster headers the entries name,
  as signed;
- the member history of each card token the entries name (tokens only: no PAN,
  no name, no member id);
- an enrolment record of each of the merchant's terminals (its merchant, device key,
  enrolled at, and its calls as the union recorded them: the audit's silence check),
  signed by the audit key at export: the store keeps no signature of its own.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from central.errors import CentralError, InputError
from central.service import Union
from central.statement import period_bounds
from pact.bundle import Enrolment, Export, MemberFact, Period, build_bundle
from pact.errors import RosterError
from pact.roster import split_roster
from pact.signing import key_id
from pact.timefmt import iso


def export_bundle(union: Union, merchant_id: str, first: date, last: date) -> bytes:
    """The signed audit bundle of ``merchant_id`` for the local days ``first`` to
    ``last`` (the union's days), as bytes."""
    if last < first:
        raise InputError("the bundle's last day is before its first: check --from and --to")
    union.store.merchant(merchant_id)  # NotFoundError names an unknown merchant
    audit_key = union.keys.role_key("audit")
    now = union.clock()
    zone = union.timezone
    period_bounds(first, last, ZoneInfo(zone))  # (InputError: a day outside the years kept)
    period = Period.of(first, last, zone)  # the instants verify_bundle checks them against
    end, context_start = period.end, period.context_start
    entries = union.store.merchant_chains_between(merchant_id, iso(context_start), iso(end))
    roots = _roots(union)
    newest = json.loads(roots[-1])["signed"]
    audit_ids = newest["roles"].get("audit", {}).get("keyids", [])
    if key_id(audit_key.public_key()) not in audit_ids:
        raise CentralError(
            f"the audit key in the keys folder is not the one root v{newest['version']} "
            "names: restart the service after `keys rotate audit`, or restore the key"
        )
    # every version the union signed, not only those the entries name: the newer ones say
    # when the merchant was suspended or exited (a version never signed that an entry
    # names is missing: the audit says so, unknown_policy)
    policies = []
    for held in reversed(union.store.signed_versions(f"policy:{merchant_id}")):
        data = union.store.signed(f"policy:{merchant_id}", held["version"])
        if data is not None:
            policies.append(data)
    headers: list[dict[str, Any]] = []
    for version in sorted({e.roster_version for e in entries if e.roster_version}):
        data = union.store.signed("roster", version)
        if data is None:  # pruned: no terminal could still ask for it
            continue
        try:
            headers.append(split_roster(data)[0])
        except RosterError as exc:
            raise CentralError(f"roster v{version} held by the union is damaged: {exc}") from None
    return build_bundle(
        Export(
            merchant_id=merchant_id,
            period=period,
            exported_at=now,
            roots=roots,
            policies=policies,
            roster_headers=headers,
            members=_members(union, {e.token for e in entries if e.token is not None}),
            terminals=_terminals(
                union, merchant_id, {e.terminal_id for e in entries}, context_start, end, now
            ),
            entries=entries,
        ),
        audit_key,
    )


def _roots(union: Union) -> list[bytes]:
    roots = []
    version = 1
    while (data := union.root_version(version)) is not None:
        roots.append(data)
        version += 1
    if not roots:
        raise CentralError("the union holds no root metadata: run `unioncard central init`")
    return roots


def _members(union: Union, tokens: set[str]) -> dict[str, list[MemberFact]]:
    out: dict[str, list[MemberFact]] = {}
    for token in sorted(tokens):
        history = union.store.token_history(token)  # a member's earlier token too
        if not history:  # not a member, ever: no facts (the audit: not_a_member)
            continue
        out[token] = [
            MemberFact(
                at=h["at"],
                status=h["status"],
                tier=int(h["tier"]),
                valid_until=h["valid_until"].isoformat() if h["valid_until"] else None,
            )
            for h in history
        ]
    return out


def _terminals(
    union: Union,
    merchant_id: str,
    named: set[str],
    start: datetime,
    end: datetime,
    exported: datetime,
) -> list[Enrolment]:
    """The merchant's terminals (with or without entries) and any other the entries
    name, each with its calls as the union recorded them."""
    contacts = {row["terminal_id"]: row for row in union.store.terminal_contacts(merchant_id)}
    out = []
    for terminal_id in sorted(named | set(contacts)):
        row = union.store.terminal(terminal_id)
        if row is None:
            raise CentralError(f"entries of terminal {terminal_id}, which the union does not hold")
        contact = contacts.get(terminal_id, {})
        out.append(
            Enrolment(
                terminal_id=terminal_id,
                merchant_id=row["merchant_id"],
                enrolled_at=row["enrolled_at"],
                device_key=row["device_key"],
                device_key_at=row["device_key_at"],
                last_contact_at=row["last_contact_at"],
                last_upload_at=contact.get("last_upload_at"),
                last_seq=int(contact.get("last_seq") or 0),
                policy_version=row["policy_version"],
                revoked_at=row["revoked_at"],
                held_in_period=union.store.newest_seq_between(
                    terminal_id, iso(start), iso(end), received_by=iso(exported)
                ),
            )
        )
    return out
