"""The audit bundle (pure): one self-describing, signed file an outside auditor checks
offline, with no server and no card reader.

The union's central service exports it (``unioncard central audit export``) for one
merchant and period; the auditor verifies it (``unioncard audit verify FILE --trust
ROOT_PUBLIC_KEY``), which re-checks every signature and digest and then runs the
audit engine (:mod:`pact.audit`) over its contents. docs/protocol.md ("Audit bundle")
documents the format. The file is the canonical JSON (pact.signing) of::

    {"format": "unioncard.audit-bundle", "version": 2,
     "manifest": <signed envelope, signed by the root's audit role>,
     "parts": {"roots": [...], "policies": [...], "rosters": [...],
               "members": [...], "enrolments": [...], "entries": [...]}}

followed by one newline. The manifest's ``signed`` part names the merchant, the
period and, for each part, the SHA-256 of the canonical JSON of each of its items in
order, so that one signature covers everything and a failure names the item.

:func:`verify_bundle` refuses, with a :class:`~pact.errors.BundleError` (exit 2)
that names where, anything that is not exactly such a file: not UTF-8, not JSON,
not in canonical form, a root chain that does not verify or is not anchored in the
auditor's root key, a manifest signature, an item's digest, a policy's or roster
header's signature (by that role's key in some root version of the chain), an
enrolment record's signature (the audit key), an item of the wrong shape. Only
then :func:`audit_bundle` judges the entries. Bytes in, values out: no file, no
clock.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pact.audit import (
    IN_TURN,
    QUOTA_LOOKBACK,
    UNTIED_KINDS,
    Contact,
    Facts,
    Finding,
    Runner,
    audit,
)
from pact.chain import entry_hash
from pact.device import SIGNATURE_HEX, check_signature, device_key
from pact.errors import (
    BundleError,
    DeviceSignatureError,
    PolicyError,
    SignatureError,
    TrustError,
    WireFormatError,
)
from pact.event import EVENT
from pact.money import fen
from pact.policy import Policy, parse_policy_document
from pact.receipt import verification_code
from pact.roster import Membership
from pact.sale import REVERSALS, Sale
from pact.signing import canonical_json, public_bytes, sign, verify
from pact.timefmt import YEARS, iso, parse_iso
from pact.trust import Root, load_pinned_root, trust_anchor, update_root
from pact.wire import (
    ENTRY_YEARS,
    HASH_HEX,
    LINE_KEYS,
    LINE_OPTIONAL,
    check_bounds,
    is_entry_time,
    sale_checks,
)

FORMAT = "unioncard.audit-bundle"
# a shop's export of its own journal (terminal decommission): its device key is the
# shop's word against the union's (pin_device_keys)
JOURNAL_EXPORT = "unioncard.journal-export.v1"
VERSION = 2  # 1: before each chain carried its anchor (refused: export it again)
MANIFEST_TYPE = "audit-bundle-manifest"
ENROLMENT_TYPE = "enrolment"
# The parts, in the order they are checked (and sorted in the file: canonical JSON).
PARTS = ("roots", "policies", "rosters", "enrolments", "members", "entries")
MEMBER_STATUSES = ("active", "suspended", "left")
MEMBER_FACT_FIELDS = frozenset({"at", "status", "tier", "valid_until"})
# Who vouches for an enrolment record: the central store keeps no signature of its
# own for a terminal's enrolment, so the audit key signs each record at export.
ATTESTED_BY = "audit key, at export"
_HEX = re.compile(r"^[0-9a-f]*$")


# ---------------------------------------------------------------------------- values
@dataclass(frozen=True)
class MemberFact:
    """A member's standing from ``at`` on (the union's member history), by token."""

    at: str  # ISO 8601 UTC
    status: str  # active, suspended, left
    tier: int
    valid_until: str | None  # YYYY-MM-DD, or None: no end

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "status": self.status,
            "tier": self.tier,
            "valid_until": self.valid_until,
        }


def membership_at(history: Sequence[MemberFact], at: datetime) -> Membership | None:
    """The standing the history (oldest first) gives at ``at``: its last fact from
    ``at`` or before (None: not a member yet); as the union's own audit reads it."""
    then = [h for h in history if parse_iso(h.at) <= at]
    if not then:
        return None
    h = then[-1]
    until = date.fromisoformat(h.valid_until) if h.valid_until is not None else None
    return Membership(h.status, h.tier, until)


@dataclass(frozen=True)
class Enrolment:
    """What the union holds of one terminal: its merchant and its device key, and its
    calls as the union recorded them by the export (the audit's silence check)."""

    terminal_id: str
    merchant_id: str
    enrolled_at: str
    device_key: str | None  # hex Ed25519 public key, registered at its first sync
    device_key_at: str | None
    last_contact_at: str | None = None  # its last call of any kind
    last_upload_at: str | None = None  # when the union received its newest entry
    last_seq: int = 0  # the newest entry the union holds from it
    policy_version: int | None = None  # the policy it last reported holding
    revoked_at: str | None = None
    # the newest seq the union holds of its entries journaled from the period's context
    # start to before its end (0: none): those the bundle must hold
    held_in_period: int = 0

    def signed(self, attested_at: str) -> dict[str, Any]:
        return {
            "type": ENROLMENT_TYPE,
            "terminal_id": self.terminal_id,
            "merchant_id": self.merchant_id,
            "enrolled_at": self.enrolled_at,
            "device_key": self.device_key,
            "device_key_at": self.device_key_at,
            "last_contact_at": self.last_contact_at,
            "last_upload_at": self.last_upload_at,
            "last_seq": self.last_seq,
            "policy_version": self.policy_version,
            "revoked_at": self.revoked_at,
            "held_in_period": self.held_in_period,
            "attested_by": ATTESTED_BY,
            "attested_at": attested_at,
        }

    @classmethod
    def from_signed(cls, signed: Mapping[str, Any]) -> Enrolment:
        """The record in an enrolment's signed part; ValueError or TypeError when it is
        not one."""
        names = [f for f in cls.__dataclass_fields__]
        if set(signed) != {*names, "type", "attested_by", "attested_at"}:
            raise ValueError("fields")
        record = cls(**{name: signed[name] for name in names})
        parse_iso(record.enrolled_at)
        for moment in (
            record.device_key_at,
            record.last_contact_at,
            record.last_upload_at,
            record.revoked_at,
        ):
            if moment is not None:
                parse_iso(moment)
        if not isinstance(record.terminal_id, str) or not _whole(record.last_seq):
            raise ValueError("terminal or last seq")
        if not _whole(record.held_in_period):
            raise ValueError("held in period")
        if record.policy_version is not None and not _whole(record.policy_version):
            raise ValueError("policy version")
        return record

    def contact(self) -> Contact:
        def moment(text: str | None) -> datetime | None:
            return parse_iso(text) if text is not None else None

        return Contact(
            merchant_id=self.merchant_id,
            enrolled_at=parse_iso(self.enrolled_at),
            last_contact=moment(self.last_contact_at),
            last_upload=moment(self.last_upload_at),
            last_seq=self.last_seq,
            policy_version=self.policy_version,
            revoked=self.revoked_at is not None,
            held_in_period=self.held_in_period,
        )


@dataclass(frozen=True)
class Period:
    """The days audited (the union's local days) and their UTC instants; entries from
    ``context_start`` on are in the bundle for the quotas' earlier use, but only those
    from ``start`` to before ``end`` are judged."""

    first: date
    last: date
    start: datetime
    end: datetime
    context_start: datetime
    timezone: str

    @classmethod
    def of(cls, first: date, last: date, timezone: str) -> Period:
        """The period of the local days ``first`` to ``last`` in ``timezone`` (an IANA
        name); ValueError when the zone is unknown or a day has no start in UTC."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"{timezone!r} is not a time zone") from None
        if first.year not in YEARS or last.year not in YEARS:
            raise ValueError(f"the days must be of the years {YEARS.start} to {YEARS.stop - 1}")
        start = datetime.combine(first, time(0), zone).astimezone(UTC)
        end = datetime.combine(last + timedelta(days=1), time(0), zone).astimezone(UTC)
        return cls(first, last, start, end, start - QUOTA_LOOKBACK, timezone)

    def as_json(self) -> dict[str, str]:
        return {
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "start": iso(self.start),
            "end": iso(self.end),
            "context_start": iso(self.context_start),
            "timezone": self.timezone,
        }


@dataclass(frozen=True)
class Export:
    """Everything a bundle holds, as the central service gathers it."""

    merchant_id: str
    period: Period
    exported_at: datetime
    roots: Sequence[bytes]  # every root metadata version, oldest first (v1 first)
    policies: Sequence[bytes]  # every signed version of the merchant's policy
    roster_headers: Sequence[Mapping[str, Any]]  # the signed headers of the rosters named
    members: Mapping[str, Sequence[MemberFact]]  # token -> its history, oldest first
    terminals: Sequence[Enrolment]
    entries: Sequence[Sale]  # each terminal's, from its first in the context on, in order


def digest(item: Any) -> str:
    """The manifest's digest of one item: SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(item)).hexdigest()


def build_bundle(export: Export, audit_key: Ed25519PrivateKey) -> bytes:
    """The bundle's bytes: every part, and the manifest signed with ``audit_key``
    (which also signs each enrolment record)."""
    attested_at = iso(export.exported_at)
    parts: dict[str, list[Any]] = {
        "roots": [json.loads(data) for data in export.roots],
        "policies": [json.loads(data) for data in export.policies],
        "rosters": [dict(header) for header in export.roster_headers],
        "enrolments": [
            sign(t.signed(attested_at), [audit_key])
            for t in sorted(export.terminals, key=lambda t: t.terminal_id)
        ],
        "members": [
            {"token": token, "history": [fact.as_json() for fact in export.members[token]]}
            for token in sorted(export.members)
        ],
        "entries": [
            e.as_json() for e in sorted(export.entries, key=lambda e: (e.terminal_id, e.seq))
        ],
    }
    root_version = int(parts["roots"][-1]["signed"]["version"]) if parts["roots"] else 0
    manifest = {
        "type": MANIFEST_TYPE,
        "format": FORMAT,
        "version": VERSION,
        "merchant_id": export.merchant_id,
        "period": export.period.as_json(),
        "exported_at": attested_at,
        "root_version": root_version,
        "parts": {name: [digest(item) for item in items] for name, items in parts.items()},
    }
    document = {
        "format": FORMAT,
        "version": VERSION,
        "manifest": sign(manifest, [audit_key]),
        "parts": parts,
    }
    return canonical_json(document) + b"\n"


# ---------------------------------------------------------------------------- verified
@dataclass(frozen=True)
class Bundle:
    """A bundle whose every signature and digest verified: what the audit runs over."""

    merchant_id: str
    period: Period
    exported_at: str
    root: Root  # the newest root version in the bundle (its audit key signed it)
    root_versions: int
    entries: tuple[Sale, ...]
    policies: Mapping[int, Policy]  # version -> the signed policy
    rosters: Mapping[int, Mapping[str, Any]]  # version -> its signed header
    device_keys: Mapping[str, Ed25519PublicKey]  # terminal -> its registered key
    members: Mapping[str, tuple[MemberFact, ...]]  # token -> history
    terminals: Mapping[str, Enrolment]  # each enrolment record, by terminal

    def facts(self) -> Facts:
        """What the audit trusts besides the entries, all from the bundle."""
        merchant = self.merchant_id

        def policy(merchant_id: str, version: int) -> Policy | None:
            return self.policies.get(version) if merchant_id == merchant else None

        def membership(token: str, at: datetime) -> Membership | None:
            return membership_at(self.members.get(token, ()), at)

        exported = parse_iso(self.exported_at)
        return Facts(
            policy=policy,
            device_key=self.device_keys.get,
            membership=membership,
            since=self.period.start,
            until=min(self.period.end, exported),
            terminals={t: record.contact() for t, record in self.terminals.items()},
            chained_from=self.period.context_start,
            signed_policies=tuple(self.policies.values()),
        )

    def judged(self) -> set[tuple[str, int]]:
        """(terminal, seq) of the entries of the period (the rest is context)."""
        start, end = self.period.start, self.period.end
        return {(e.terminal_id, e.seq) for e in self.entries if start <= parse_iso(e.at) < end}

    def summary(self) -> str:
        judged = len(self.judged())
        return (
            f"audit bundle of {self.merchant_id}, {self.period.first} to {self.period.last} "
            f"(exported {self.exported_at}): {judged} entries in the period "
            f"({len(self.entries)} with context) from {len(self.terminals)} terminal(s), "
            f"{len(self.policies)} policy version(s), root v{self.root.version}: "
            "every signature and digest verified"
        )


def pin_device_keys(bundle: Bundle, shops: Mapping[str, str]) -> None:
    """Check the bundle's device keys against those the shops gave the auditor
    (terminal -> 64 hex digits: a terminal's ``device.pub``, or the ``device_key`` of
    its journal export). The bundle's own are the union's word, signed with the audit
    key: a union re-signing a terminal's entries with a key of its own, and naming
    that key, is caught only here. BundleError names the first that differs."""
    for terminal_id, given in sorted(shops.items()):
        held = bundle.device_keys.get(terminal_id)
        if held is None:
            raise BundleError(
                f"the bundle holds no device key of terminal {terminal_id}, whose key the "
                "shop gave: it has no entries of that terminal"
            )
        if public_bytes(held).hex() != given.lower():
            raise BundleError(
                f"terminal {terminal_id}'s device key in the bundle "
                f"({public_bytes(held).hex()[:16]}...) is not the one the shop gave "
                f"({given.lower()[:16]}...): the union's record of it is not the shop's"
            )


def audit_bundle(bundle: Bundle, runner: Runner = IN_TURN) -> list[Finding]:
    """The audit engine's findings over the bundle's entries (pact.audit.audit, its
    costly checks run by ``runner``), those that name an entry of the period or none
    (a terminal's silence): what ``central audit run`` gives, complaints aside."""
    judged = bundle.judged()
    findings = audit(bundle.entries, bundle.facts(), runner)
    return [
        f
        for f in findings
        if f.kind in UNTIED_KINDS or any((f.terminal_id, s) in judged for s in f.seqs)
    ]


@dataclass(frozen=True)
class ReceiptCheck:
    entry: Sale
    problem: str | None  # None: the entry's hash and device signature verify
    reversed_by: tuple[Sale, ...] = ()  # the voids and refunds of the sale in the bundle

    def line(self, code: str) -> str:
        e = self.entry
        what = "sale" if e.is_sale else f"{e.kind} of sale {e.ref_seq}"
        verdict = (
            "device signature verified"
            if self.problem is None
            else f"device signature does NOT verify ({self.problem})"
        )
        later = "".join(
            f"; {r.kind} #{r.seq} at {r.at} (net {fen(r.net)})" for r in self.reversed_by
        )
        return (
            f"{code}: terminal {e.terminal_id} {what} #{e.seq} of merchant {e.merchant_id} at "
            f"{e.at}: card •••• {e.pan_last4}, gross {fen(e.gross)}, discount "
            f"{fen(e.discount)}, net {fen(e.net)}; {verdict}{later}"
        )


def find_receipt(bundle: Bundle, code: str) -> list[ReceiptCheck]:
    """The bundle's entries whose receipt shows ``code`` (pact.receipt, in its shown
    form), each with its hash and device signature checked."""
    found = []
    for entry in bundle.entries:
        if entry.kind == EVENT or verification_code(entry) != code:
            continue  # (an event has no receipt)
        key = bundle.device_keys.get(entry.terminal_id)
        try:
            if key is None:
                raise DeviceSignatureError("its terminal has no device key in the bundle")
            if entry_hash(entry.prev_hash, entry) != entry.hash:
                raise DeviceSignatureError("altered: its fields do not give its hash")
            check_signature(key, entry)
            problem = None
        except (DeviceSignatureError, SignatureError) as exc:
            problem = str(exc)
        later = tuple(
            e
            for e in bundle.entries
            if entry.is_sale
            and e.kind in REVERSALS
            and (e.terminal_id, e.ref_seq) == (entry.terminal_id, entry.seq)
        )
        found.append(ReceiptCheck(entry, problem, later))
    return found


# ---------------------------------------------------------------------------- verify
def verify_bundle(data: bytes, anchor: bytes) -> Bundle:
    """Check the bundle in ``data`` against the root key (or pinned root metadata) in
    ``anchor``, the file the auditor trusts. Raises BundleError naming where."""
    doc = _parse(data)
    parts: dict[str, list[Any]] = doc["parts"]
    roots = _roots(parts["roots"], anchor)
    newest = roots[-1]
    manifest = _manifest(doc["manifest"], newest)
    for name in PARTS:
        listed = manifest["parts"][name]
        items = parts[name]
        if len(listed) != len(items):
            raise BundleError(
                f"audit bundle refused: part {name} holds {len(items)} items where the "
                f"manifest lists {len(listed)}"
            )
        for i, (item, expected) in enumerate(zip(items, listed, strict=True)):
            if digest(item) != expected:
                raise BundleError(
                    f"audit bundle refused: {_label(name, i, item)}: its digest is not the "
                    "one the signed manifest lists (changed after the union signed it)"
                )
    merchant_id = manifest["merchant_id"]
    policies = _policies(parts["policies"], roots, merchant_id)
    rosters = _rosters(parts["rosters"], roots)
    terminals = _enrolments(parts["enrolments"], newest, merchant_id)
    keys = {
        t: device_key(record.device_key)
        for t, record in terminals.items()
        if record.device_key is not None
    }
    members = _members(parts["members"])
    entries = _entries(parts["entries"], merchant_id, keys)
    return Bundle(
        merchant_id=merchant_id,
        period=_period(manifest["period"]),
        exported_at=manifest["exported_at"],
        root=newest,
        root_versions=len(roots),
        entries=entries,
        policies=policies,
        rosters=rosters,
        device_keys=keys,
        members=members,
        terminals=terminals,
    )


def _refuse(where: str, what: str) -> BundleError:
    return BundleError(f"audit bundle refused: {where}: {what}")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(data: bytes) -> dict[str, Any]:
    """The bundle's text and document: UTF-8, JSON, in canonical form, of the shape
    the format says (the parts' items are checked later)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = data[: exc.start].decode("utf-8", errors="replace")
        raise _refuse(_where_at(prefix, len(prefix)), f"not UTF-8 at byte {exc.start}") from None
    try:
        doc = json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        where = _where_at(text, exc.pos)
        raise _refuse(where, f"not JSON at character {exc.pos} ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise _refuse("the file", f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or set(doc) != {"format", "version", "manifest", "parts"}:
        raise _refuse("the file", "not an audit bundle (format, version, manifest, parts)")
    if doc["format"] != FORMAT:
        raise _refuse("the file", f"its format is not {FORMAT}")
    if type(doc["version"]) is not int or doc["version"] != VERSION:  # (true == 1)
        again = " (its chains carry no anchor: export it again)" if doc["version"] == 1 else ""
        raise _refuse(
            "the file",
            f"format version {doc['version']!r}: this unioncard reads version {VERSION}{again}",
        )
    try:
        canonical = canonical_json(doc).decode() + "\n"
    except UnicodeEncodeError as exc:  # a lone surrogate escaped in a string
        raise _refuse("the file", f"not in canonical form ({exc.reason})") from None
    except RecursionError:  # parsed, but nested too deep to write again
        raise _refuse("the file", "not an audit bundle (nested too deep)") from None
    if canonical != text:
        at = next(
            (i for i, (a, b) in enumerate(zip(text, canonical, strict=False)) if a != b),
            min(len(text), len(canonical)),
        )
        raise _refuse(
            _where_at(text, at),
            f"not in canonical form at character {at} (the bytes the union signed were changed)",
        )
    parts = doc["parts"]
    if not isinstance(parts, dict) or set(parts) != set(PARTS):
        raise _refuse("the parts", f"must be exactly {', '.join(PARTS)}")
    for name in PARTS:
        if not isinstance(parts[name], list):
            raise _refuse(f"part {name}", "must be a list")
    return doc


def _roots(items: list[Any], anchor: bytes) -> list[Root]:
    """The root chain v1..vN, each version signed by the one before (as terminals
    walk it), and anchored: the auditor's trusted root key signs one of them."""
    if not items:
        raise _refuse("part roots", "no root metadata")
    datas = [canonical_json(item) for item in items]
    chain: list[Root] = []
    for i, data in enumerate(datas):
        try:
            root = load_pinned_root(data) if i == 0 else update_root(chain[-1], data)
        except TrustError as exc:
            raise _refuse(_label("roots", i, items[i]), str(exc)) from None
        if i == 0 and root.version != 1:
            raise _refuse(_label("roots", i, items[i]), "the chain must start at root v1")
        chain.append(root)
    try:
        anchored = trust_anchor(anchor, list(reversed(datas)))
    except (TrustError, SignatureError) as exc:
        raise _refuse("part roots", f"{exc} (the trust file given)") from None
    pinned = chain[anchored.version - 1] if anchored.version <= len(chain) else None
    if pinned is None or json.loads(pinned.data)["signed"] != json.loads(anchored.data)["signed"]:
        raise _refuse(
            "part roots",
            f"the trusted root v{anchored.version} is not in the bundle's chain "
            f"(v1 to v{len(chain)})",
        )
    return chain


def _envelope_shape(envelope: Any, where: str) -> None:
    """A signed envelope exactly as pact.signing writes it: its signatures' key ids
    and signatures in lower-case hex, so that no other spelling of the same signature
    passes (nothing but the manifest's own signatures escapes the manifest's digests)."""
    if not isinstance(envelope, dict) or set(envelope) != {"signed", "signatures"}:
        raise _refuse(where, "not a signed envelope (signed, signatures)")
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or not signatures:
        raise _refuse(where, "no signatures")
    for entry in signatures:
        if (
            not isinstance(entry, dict)
            or set(entry) != {"keyid", "sig"}
            or not _is_hex(entry["keyid"], 64)
            or not _is_hex(entry["sig"], SIGNATURE_HEX)
        ):
            raise _refuse(where, "a signature is malformed (keyid, sig: lower-case hex)")


def _manifest(envelope: Any, newest: Root) -> dict[str, Any]:
    _envelope_shape(envelope, "the manifest")
    if not newest.has_role("audit"):
        raise _refuse(
            "the manifest",
            f"root v{newest.version} names no audit key, so nothing can vouch for the bundle",
        )
    try:
        signed = verify(
            envelope, newest.trusted("audit"), newest.threshold("audit"), what="its signature"
        )
    except SignatureError as exc:
        raise _refuse("the manifest", f"{exc} (the audit key of root v{newest.version})") from None
    fields = {
        "type",
        "format",
        "version",
        "merchant_id",
        "period",
        "exported_at",
        "root_version",
        "parts",
    }
    if set(signed) != fields or signed["type"] != MANIFEST_TYPE:
        raise _refuse("the manifest", "malformed")
    if signed["format"] != FORMAT or signed["version"] != VERSION:
        raise _refuse("the manifest", "names another format or version than the file")
    if signed["root_version"] != newest.version:
        raise _refuse(
            "the manifest",
            f"signed under root v{signed['root_version']!r}, but the bundle's newest root is "
            f"v{newest.version}",
        )
    try:
        if not isinstance(signed["merchant_id"], str):
            raise ValueError("merchant")
        exported = parse_iso(signed["exported_at"])
    except (ValueError, TypeError, AttributeError):
        raise _refuse("the manifest", "malformed merchant or export time") from None
    if newest.is_expired(exported):  # an audit key its root had let go of by then
        raise _refuse(
            "the manifest",
            f"exported at {iso(exported)}, after the bundle's newest root (v{newest.version}) "
            f"expired at {iso(newest.expires_at)}: a later root is missing",
        )
    _period(signed["period"])
    listed = signed["parts"]
    if not isinstance(listed, dict) or set(listed) != set(PARTS):
        raise _refuse("the manifest", f"its parts must be exactly {', '.join(PARTS)}")
    for name, digests in listed.items():
        if not isinstance(digests, list) or not all(_is_hex(d, 64) for d in digests):
            raise _refuse("the manifest", f"its digests of {name} are malformed")
    return signed


def _period(raw: Any) -> Period:
    try:
        keys = {"from", "to", "start", "end", "context_start", "timezone"}
        if not isinstance(raw, dict) or set(raw) != keys or not isinstance(raw["timezone"], str):
            raise ValueError("fields")
        period = Period(
            first=date.fromisoformat(raw["from"]),
            last=date.fromisoformat(raw["to"]),
            start=parse_iso(raw["start"]),
            end=parse_iso(raw["end"]),
            context_start=parse_iso(raw["context_start"]),
            timezone=str(raw["timezone"]),
        )
    except (ValueError, TypeError, AttributeError):
        raise _refuse("the manifest", "its period is malformed") from None
    if period.last < period.first:
        raise _refuse("the manifest", "its period ends before it starts")
    try:
        days = Period.of(period.first, period.last, period.timezone)
    except ValueError as exc:
        raise _refuse("the manifest", f"its period: {exc}") from None
    if period != days:
        # the instants judged are the days' in the zone: a start moved later hid the
        # findings of the entries before it, and the summary still named the days
        raise _refuse(
            "the manifest",
            "its period's instants are not those of its days in its time zone (start, end, "
            f"and context_start {QUOTA_LOOKBACK.days} days before the start)",
        )
    return period


def _signed_by_some_root(
    envelope: Any, roots: Sequence[Root], role: str, where: str
) -> dict[str, Any]:
    """``envelope``'s signed part when a threshold of ``role``'s keys of some root
    version signed it (a key rotated out later still vouches for what it signed)."""
    _envelope_shape(envelope, where)
    problem = f"not signed by the {role} key of any root version in the bundle"
    for root in reversed(roots):
        try:
            return verify(envelope, root.trusted(role), root.threshold(role), what="it")
        except SignatureError as exc:
            if "bad signature" in str(exc) or "malformed" in str(exc):
                problem = f"{exc} ({role} key of root v{root.version})"
                break
    raise _refuse(where, problem)


def _policies(items: list[Any], roots: Sequence[Root], merchant_id: str) -> dict[int, Policy]:
    out: dict[int, Policy] = {}
    for i, item in enumerate(items):
        where = _label("policies", i, item)
        signed = _signed_by_some_root(item, roots, "policy", where)
        try:
            policy = parse_policy_document(signed)
        except PolicyError as exc:
            raise _refuse(where, str(exc)) from None
        if policy.merchant_id != merchant_id:
            raise _refuse(where, f"it is merchant {policy.merchant_id}'s, not {merchant_id}'s")
        if policy.version in out:
            raise _refuse(where, "a second copy of that version")
        out[policy.version] = policy
    return out


def _rosters(items: list[Any], roots: Sequence[Root]) -> dict[int, Mapping[str, Any]]:
    out: dict[int, Mapping[str, Any]] = {}
    for i, item in enumerate(items):
        where = _label("rosters", i, item)
        signed = _signed_by_some_root(item, roots, "roster", where)
        version = signed.get("version")
        if signed.get("type") != "roster" or not isinstance(version, int) or version in out:
            raise _refuse(where, "not the header of a roster version (or a second copy)")
        out[version] = signed
    return out


def _enrolments(items: list[Any], newest: Root, merchant_id: str) -> dict[str, Enrolment]:
    out: dict[str, Enrolment] = {}
    for i, item in enumerate(items):
        where = _label("enrolments", i, item)
        _envelope_shape(item, where)
        try:
            signed = verify(
                item, newest.trusted("audit"), newest.threshold("audit"), what="its record"
            )
        except SignatureError as exc:
            raise _refuse(where, f"{exc} (the audit key of root v{newest.version})") from None
        try:
            if signed.get("type") != ENROLMENT_TYPE:
                raise ValueError("type")
            record = Enrolment.from_signed(signed)
        except (ValueError, TypeError, AttributeError):
            raise _refuse(where, "not an enrolment record") from None
        if record.terminal_id in out:
            raise _refuse(where, "a second record of the terminal")
        if record.merchant_id != merchant_id:
            raise _refuse(where, f"the terminal is enrolled for a merchant not {merchant_id}")
        if record.device_key is not None:
            try:
                device_key(record.device_key)
            except (SignatureError, TypeError, AttributeError):
                raise _refuse(where, "its device key is not an Ed25519 public key") from None
        out[record.terminal_id] = record
    return out


def _members(items: list[Any]) -> dict[str, tuple[MemberFact, ...]]:
    out: dict[str, tuple[MemberFact, ...]] = {}
    for i, item in enumerate(items):
        where = _label("members", i, item)
        if not isinstance(item, dict) or set(item) != {"token", "history"}:
            raise _refuse(where, "must have exactly token and history")
        token, history = item["token"], item["history"]
        if not _is_hex(token, 32) or token in out or not isinstance(history, list):
            raise _refuse(where, "a token is 32 hex digits, once; its history a list")
        facts = []
        for fact in history:
            try:
                if not isinstance(fact, dict) or set(fact) != MEMBER_FACT_FIELDS:
                    raise ValueError("fields")
                parse_iso(fact["at"])
                if fact["valid_until"] is not None:
                    date.fromisoformat(fact["valid_until"])
                if fact["status"] not in MEMBER_STATUSES or not _whole(fact["tier"]):
                    raise ValueError("status or tier")
            except (ValueError, TypeError, AttributeError):
                raise _refuse(where, "a fact of its history is malformed") from None
            facts.append(MemberFact(**fact))
        out[token] = tuple(facts)
    return out


def _entries(
    items: list[Any], merchant_id: str, keys: Mapping[str, Ed25519PublicKey]
) -> tuple[Sale, ...]:
    """The entries, each of the shape the wire admits (the content is the audit's to
    judge: an entry that does not add up is a finding, not a malformed bundle)."""
    checks = sale_checks()
    out: list[Sale] = []
    for i, item in enumerate(items):
        where = _label("entries", i, item)
        if not isinstance(item, dict):
            raise _refuse(where, "not an object")
        for name, test, what in checks.typed:
            if not test(item.get(name)):
                raise _refuse(where, f"{name} must be {what}")
        for name, _ in checks.objects:
            if item.get(name) is not None and not isinstance(item[name], dict):
                raise _refuse(where, f"{name} must be an object or null")
        known = {name for name, _, _ in checks.typed} | {name for name, _ in checks.objects}
        if not set(item) <= known:
            raise _refuse(where, f"unknown field {sorted(set(item) - known)[0]}")
        if item.get("sig") is not None and not _is_hex(item["sig"], SIGNATURE_HEX):
            raise _refuse(where, f"sig must be {SIGNATURE_HEX} hex digits")
        for name in ("hash", "prev_hash"):
            if not _is_hex(item[name], HASH_HEX):
                raise _refuse(where, f"{name} must be {HASH_HEX} hex digits")
        try:  # what the union stores and sums (a seq of 2**70, a NUL in a note)
            check_bounds(item, "it")
        except WireFormatError as exc:
            raise _refuse(where, str(exc).removeprefix("it: ").removeprefix("it.")) from None
        if item.get("basket") is not None and not _basket_shape(item["basket"]):
            raise _refuse(
                where,
                "its basket is not of the wire's shape (lines of sku, category, qty, "
                "unit_price, discount[, by_rule, of]; tier; discounts by rule, in fen)",
            )
        if not is_entry_time(item["at"]):
            raise _refuse(
                where,
                "its time is not a UTC time like 2026-11-28T09:30:00Z "
                f"(years {ENTRY_YEARS.start} to {ENTRY_YEARS.stop - 1})",
            )
        entry = Sale.from_json(item)
        if entry.merchant_id != merchant_id:
            raise _refuse(where, f"an entry of merchant {entry.merchant_id}, not {merchant_id}")
        if entry.terminal_id not in keys:
            raise _refuse(where, "its terminal has no enrolment record with a device key")
        if out and (out[-1].terminal_id, out[-1].seq) >= (entry.terminal_id, entry.seq):
            raise _refuse(where, "entries must be in order of terminal and seq, once each")
        out.append(entry)
    return tuple(out)


def _fen_by_rule(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and _whole(v) for k, v in value.items()
    )


def _basket_shape(basket: Any) -> bool:
    """A basket of the types the wire admits (pact.wire.check_basket); whether its sums
    add up is the audit's to judge (bad_basket)."""
    if not isinstance(basket, dict) or set(basket) != {"lines", "tier", "discounts"}:
        return False
    lines, tier, discounts = basket["lines"], basket["tier"], basket["discounts"]
    if not isinstance(lines, list) or not lines or not _fen_by_rule(discounts):
        return False
    if tier is not None and not _whole(tier):
        return False
    for line in lines:
        if not isinstance(line, dict) or not LINE_KEYS <= set(line) <= LINE_KEYS | LINE_OPTIONAL:
            return False
        if not isinstance(line["sku"], str) or not isinstance(line["category"], str):
            return False
        if not all(_whole(line[name]) for name in ("qty", "unit_price", "discount")):
            return False
        if "by_rule" in line and not _fen_by_rule(line["by_rule"]):
            return False
        if "of" in line and not _whole(line["of"]):
            return False
    return True


# ---------------------------------------------------------------------------- naming where
# What names an item of each part: (field, ...) looked for in it (in its signed part).
_NAMES = {
    "roots": ("version",),
    "policies": ("version",),
    "rosters": ("version",),
    "enrolments": ("terminal_id",),
    "members": ("token",),
    "entries": ("terminal_id", "seq"),
}
_WHAT = {
    "roots": "root metadata",
    "policies": "policy",
    "rosters": "roster header",
    "enrolments": "enrolment record",
    "members": "member facts",
    "entries": "entry",
}


def _label(part: str, index: int, item: Any) -> str:
    """``entries[17] (entry terminal=T1 seq=5)``: the item, and what it says it is."""
    found = item.get("signed", item) if isinstance(item, dict) else {}
    if not isinstance(found, dict):
        found = {}
    return _named(part, index, {name: found.get(name) for name in _NAMES[part]})


def _named(part: str, index: int, values: Mapping[str, Any]) -> str:
    said = " ".join(f"{k.removesuffix('_id')}={v}" for k, v in values.items() if v is not None)
    if part in ("roots", "policies", "rosters") and values.get("version") is not None:
        said = f"v{values['version']}"
    return f"{part}[{index}] ({_WHAT[part]}{' ' + said if said else ''})"


def _where_at(text: str, pos: int) -> str:
    """What holds character ``pos`` of a bundle's (possibly broken) text: a part's
    item, the manifest, or the file's header."""
    path, starts = _path_at(text, pos)
    if path[:1] == ["manifest"]:
        return "the manifest"
    if len(path) >= 3 and path[0] == "parts" and path[1] in _NAMES and isinstance(path[2], int):
        part, index = str(path[1]), path[2]
        fragment = text[starts[2] : starts[2] + 65536]
        values: dict[str, Any] = {}
        for name in _NAMES[part]:
            found = re.search(rf'"{name}":("([^"\\]{{0,80}})"|(\d{{1,12}}))', fragment)
            if found:
                values[name] = found.group(2) if found.group(2) is not None else found.group(3)
        return _named(part, index, values)
    if len(path) >= 2 and path[0] == "parts" and path[1] in _NAMES:
        return f"part {path[1]}"
    if path[:1] == ["parts"]:
        return "the parts"
    return "the file"


def _path_at(text: str, pos: int) -> tuple[list[str | int], list[int]]:
    """The keys and indexes of the containers open at character ``pos`` of JSON
    ``text`` (read up to there, tolerating what follows), and where the element each
    names starts."""
    # each open container: [key (object) or index (array), wants a key, element start]
    stack: list[list[Any]] = []
    objects: list[bool] = []
    i, end = 0, min(pos, len(text))
    while i < end:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if stack and objects[-1] and stack[-1][1]:
                stack[-1][0] = text[i + 1 : j]
            i = j + 1
            continue
        if c in "{[":
            objects.append(c == "{")
            stack.append([None if c == "{" else 0, c == "{", i + 1])
        elif c in "}]" and stack:
            stack.pop()
            objects.pop()
        elif c == ":" and stack and objects[-1]:
            stack[-1][1], stack[-1][2] = False, i + 1
        elif c == "," and stack:
            if objects[-1]:
                stack[-1][1] = True
            else:
                stack[-1][0] += 1
                stack[-1][2] = i + 1
        i += 1
    return [frame[0] for frame in stack], [frame[2] for frame in stack]


def _is_hex(value: Any, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and bool(_HEX.match(value))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
