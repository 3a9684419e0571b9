"""The union's operations: members, merchants, terminals, signed files, ingest, settlement.

Wires the store (SQLAlchemy) and the keys (disk) to the pure core. The clock is
a parameter so tests and replays are exact.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from central import policies
from central.errors import (
    AuthError,
    CentralError,
    ConflictError,
    EvidenceError,
    InputError,
    NotFoundError,
    TooManyError,
)
from central.fleet import SILENT_AFTER, FleetRow, fleet_row
from central.keys import UnionKeys, load_keys, root_versions
from central.statement import UNION_TIMEZONE, Statement, build_statement, period_bounds
from central.store import REGISTRY_LENGTHS, ROLES, ImportResult, IngestResult, Settlement, Store
from pact.address import NO_CA, REMOTE_HTTP, central_url_fault
from pact.audit import (
    IN_TURN,
    MEDIUM,
    QUOTA_LOOKBACK,
    UNTIED_KINDS,
    Contact,
    Facts,
    Finding,
    Runner,
)
from pact.audit import audit as audit_entries
from pact.cards import is_card_number, shown_member
from pact.device import check_signature, device_key
from pact.enrolcode import check_request, code_digest, format_code, normal_code
from pact.errors import (
    CompactionNeededError,
    DeviceSignatureError,
    RosterError,
    SignatureError,
)
from pact.policy import MERCHANT_STATUSES, Policy, parse_policy_document, quota_periods
from pact.roster import (
    MemberRecord,
    Membership,
    build_delta,
    sign_packed,
    verify_roster,
)
from pact.sale import Sale
from pact.signing import key_id
from pact.snapshot import build_snapshot
from pact.text import N_, Msg
from pact.timefmt import iso, parse_iso
from pact.usage import build_usage, count_usage
from pact.wire import MAX_VERSION

ROSTER_LIFETIME = timedelta(hours=72)
ENROL_CODE_LIFETIME = timedelta(hours=24)
# How long a pipelined upload waits for the terminal's request before it (Union.ingest):
# that request's tries on a bad network included, so that its own answer comes first.
PIPELINE_WAIT = 2.0
PASSWORDS = PasswordHasher()  # argon2id, the library's recommended parameters
USER_NAME = re.compile(r"[A-Za-z0-9._@-]{2,64}")
MERCHANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")  # what a signed policy may name
TERMINAL_ID = MERCHANT_ID  # no '.': a terminal's credentials are <terminal_id>.<secret>
MERCHANT_NAME_MAX = 128  # characters: the signed policy's merchant_name
MIN_PASSWORD = 10
LOCK_AFTER = 5  # wrong passwords in a row lock an account ...
LOCK_FOR = timedelta(minutes=15)  # ... for this long
ALIVE_EVERY = 60.0  # seconds: a running audit run says it is alive this often
CONTACT_GRAIN = timedelta(minutes=1)  # a terminal's last contact is kept to the minute
ENROL_WINDOW = timedelta(minutes=15)  # wrong enrolment codes are counted over this long:
ENROL_TRIES_PER_SOURCE = 10  # from one address
ENROL_TRIES_ALL = 100  # from anywhere (100 bits a code: guessing is hopeless either way)
POLICY_LIFETIME = timedelta(days=30)
# an approval whose signing has not finished after this long was left by a process that
# died: the next admin's approval takes it over
APPROVAL_STALE = timedelta(minutes=10)


MEMBER_COLUMNS = ("member_id", "pan", "status", "tier", "valid_until", "district", "workplace")


@dataclass(frozen=True)
class CentralPaths:
    data_dir: Path

    @property
    def keys(self) -> Path:
        return self.data_dir / "keys"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'central.db'}"


def member_rows(
    lines: Iterable[str], tokenize: Callable[[str], bytes]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The members of MEMBERS.csv as ``(line number, row)``, a chunk at a time (a file
    of 8 million members is never held whole); the ``pan`` column is turned into a token
    by ``tokenize`` (``UnionKeys.tokenize``) and dropped here. InputError names the
    first bad line; a member listed twice is the store's to find
    (central.store.Store.import_members).

    A token of the memory-hard scheme costs milliseconds of one core (pact.cards):
    each chunk's are made on every core at once (Argon2id runs outside the GIL).
    """
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        chunk: list[tuple[int, dict[str, Any], str]] = []
        for item in _checked_rows(lines):
            chunk.append(item)
            if len(chunk) == TOKEN_CHUNK:
                yield from _tokenized(chunk, tokenize, pool)
                chunk = []
        yield from _tokenized(chunk, tokenize, pool)


TOKEN_CHUNK = 512  # rows tokenised at once

log = logging.getLogger(__name__)


def storable(text: object) -> bool:
    """Text a database keeps: a string with no NUL (PostgreSQL refuses it) and no lone
    surrogate (UTF-8 cannot carry it): each was a 500 in a terminal's report."""
    if not isinstance(text, str) or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def registry_fields(registry: Mapping[str, str | None]) -> dict[str, str]:
    """A merchant's registry entry as the store keeps it: each field given, on one line,
    within its column (central.store.REGISTRY_LENGTHS); InputError names the first
    that is not (a longer one was a traceback on PostgreSQL)."""
    given = {}
    for name, value in registry.items():
        most = REGISTRY_LENGTHS[name]
        text = " ".join((value or "").split())
        if len(text) > most:
            raise InputError(
                N_(
                    "the merchant's %(name)s is %(length)s characters long; at most %(most)s "
                    "fit: shorten it"
                ),
                name=name,
                length=str(len(text)),
                most=most,
            )
        if not storable(text):
            raise InputError(
                N_(
                    "the merchant's %(name)s holds a character that cannot be stored (a NUL, or "
                    "half of a surrogate pair): type it again"
                ),
                name=name,
            )
        if text:
            given[name] = text
    return given


def check_terminal_id(terminal_id: str) -> None:
    """What a terminal id may be (as the console's form checks it): ``T.1`` was enrolled
    and then refused on every call (its credentials split at the first '.'), an empty
    one kept, a 40-character one a traceback on PostgreSQL."""
    if not TERMINAL_ID.fullmatch(terminal_id):
        raise InputError(
            N_(
                "%(terminal_id)s is not a terminal id: 1 to 32 letters, digits, - or _, such as "
                "T0001"
            ),
            terminal_id=repr(terminal_id),
        )


class MerchantLeftError(ConflictError):
    """A merchant that has left the programme (its exit in force, or closed) gets no
    new terminal (409, as the API documents a request that contradicts what the union
    holds; the line says the merchant left)."""


def _run_by(who: str) -> str:
    """Who ran an audit, as its run keeps it: one line of at most 64 characters."""
    return " ".join(who.split())[:64] or "staff"


def _tokenized(
    chunk: list[tuple[int, dict[str, Any], str]],
    tokenize: Callable[[str], bytes],
    pool: ThreadPoolExecutor,
) -> Iterator[tuple[int, dict[str, Any]]]:
    tokens = pool.map(tokenize, [pan for _, _, pan in chunk])
    for (line, row, _), token in zip(chunk, tokens, strict=True):
        yield line, {**row, "token": token.hex()}


def _checked_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any], str]]:
    """Each row of MEMBERS.csv checked: ``(line number, row without its token, pan)``.
    A file that is not CSV in UTF-8 (a bad byte, an open quote, a field too long) is an
    InputError naming the line, as a bad row is."""
    reader = csv.DictReader(lines)
    try:
        yield from _checked_csv_rows(reader)
    except UnicodeDecodeError:  # text is decoded ahead of the CSV reader: "near"
        raise InputError(
            N_("members file near line %(line)s: not text in UTF-8: save it as CSV UTF-8"),
            line=reader.line_num + 1,
        ) from None
    except csv.Error as exc:
        raise InputError(
            N_("members file line %(line)s: not CSV (%(exc)s): save it as CSV UTF-8"),
            line=reader.line_num + 1,
            exc=str(exc),
        ) from None


# a run of 12 digits or more, spaced or dashed (a card number, in any cell)
_LONG_NUMBER = re.compile(r"\d(?:[ \u00a0\u2007\u202f-]*\d){11,}")


def _shown_cell(cell: str) -> str:
    """A header cell as an error may show it: every long number in it (a file with no
    header, whose first line holds a member's card number) by its last four digits
    only. (A whole-cell check missed a line read as one cell: tab- or ';'-separated, or
    a card number with a non-breaking space.)"""
    return _LONG_NUMBER.sub(lambda m: "••••" + re.sub(r"\D", "", m.group())[-4:], cell)


def _checked_csv_rows(reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, Any], str]]:
    header = reader.fieldnames or []
    for required in ("member_id", "pan"):
        if required not in header:
            shown = ",".join(_shown_cell(cell) for cell in header)
            raise InputError(
                N_("members file has no %(required)s column (header: %(shown)s)"),
                required=repr(required),
                shown=shown,
            )
    unknown = set(header) - set(MEMBER_COLUMNS)
    if unknown:
        shown = ", ".join(sorted(_shown_cell(cell) for cell in unknown))
        raise InputError(N_("members file has unknown columns: %(shown)s"), shown=shown)
    for raw in reader:
        line = reader.line_num
        member_id = (raw.get("member_id") or "").strip()
        pan = (raw.get("pan") or "").replace(" ", "").strip()
        if not member_id:
            raise InputError(N_("members file line %(line)s: member_id is empty"), line=line)
        if len(member_id) > 64:
            raise InputError(
                N_("members file line %(line)s: member_id is longer than 64"), line=line
            )
        if not is_card_number(pan):
            raise InputError(
                N_("members file line %(line)s: the card number of member %(member)s is not valid"),
                line=line,
                member=str(shown_member(member_id)),
            )
        if not all(storable(v) for v in raw.values() if isinstance(v, str)):
            raise InputError(
                N_(
                    "members file line %(line)s: a character that cannot be stored (a NUL): "
                    "check the file"
                ),
                line=line,
            )
        status = (raw.get("status") or "active").strip()
        if status not in ("active", "suspended"):
            raise InputError(
                N_("members file line %(line)s: status must be active or suspended"), line=line
            )
        try:
            tier = int((raw.get("tier") or "0").strip())
            until_text = (raw.get("valid_until") or "").strip()
            valid_until = date.fromisoformat(until_text) if until_text else None
        except ValueError:
            raise InputError(
                N_("members file line %(line)s: tier must be a number and valid_until YYYY-MM-DD"),
                line=line,
            ) from None
        if not 0 <= tier <= 255:
            raise InputError(N_("members file line %(line)s: tier must be 0..255"), line=line)
        yield (
            line,
            {
                "member_id": member_id,
                "token": "",
                "pan_last4": pan[-4:],
                "status": status,
                "tier": tier,
                "valid_until": valid_until,
                "district": (raw.get("district") or "").strip()[:64] or None,
                "workplace": (raw.get("workplace") or "").strip()[:128] or None,
            },
            pan,
        )


def parse_members_csv(text: str, tokenize: Callable[[str], bytes]) -> list[dict[str, Any]]:
    """Every member of a (small) MEMBERS.csv, each once (``roster build`` offline)."""
    rows, seen = [], set()
    for line, row in member_rows(io.StringIO(text), tokenize):
        if row["member_id"] in seen:
            raise InputError(
                N_("members file line %(line)s: member %(member)s is listed twice"),
                line=line,
                member=str(shown_member(row["member_id"])),
            )
        seen.add(row["member_id"])
        rows.append(row)
    return rows


def pack_members(rows: Iterable[Mapping[str, Any]]) -> list[bytes]:
    """The roster records of member rows (hex token, status, tier, valid_until), sorted."""
    return sorted(
        MemberRecord(bytes.fromhex(r["token"]), r["status"], r["tier"], r["valid_until"]).pack()
        for r in rows
    )


def sign_full(
    keys: UnionKeys, packed: list[bytes], version: int, now: datetime, lifetime: timedelta
) -> bytes:
    """A full roster of one layer, signed with the roster key."""
    return sign_packed(
        packed,
        version=version,
        issued_at=now,
        expires_at=now + lifetime,
        token_key_id=keys.token_key_id,
        keys=[keys.roster],
        token_scheme=keys.token_scheme,
    )


@dataclass(frozen=True)
class BuiltRoster:
    """A roster built offline (``unioncard roster build``)."""

    data: bytes  # the file to write: a full roster, or a delta from the base
    full: bytes | None  # with a base: the full roster of the new version (the same layers)
    base_version: int | None
    members: int
    layers: int


def build_roster_file(
    keys: UnionKeys,
    members_csv: str,
    version: int,
    now: datetime,
    lifetime: timedelta,
    base: bytes | None = None,
) -> BuiltRoster:
    """Sign roster ``version`` of the members in MEMBERS.csv (the PANs are consumed):
    a full roster, or, given the previous full roster ``base``, a delta from it.

    Raises :class:`InputError` for a version that does not follow the base, and
    ``CompactionNeededError`` when the change is too big for a delta.
    """
    packed = pack_members(parse_members_csv(members_csv, keys.tokenize))
    if base is None:
        return BuiltRoster(
            sign_full(keys, packed, version, now, lifetime), None, None, len(packed), 1
        )
    root = keys.current_root
    old = verify_roster(base, root.trusted("roster"), now=None, threshold=root.threshold("roster"))
    if version != old.version + 1:
        raise InputError(
            N_("--version: a delta from v%(version)s must be v%(next)s"),
            version=str(old.version),
            next=old.version + 1,
        )
    if (old.header.token_key_id, old.header.token_scheme) != (keys.token_key_id, keys.token_scheme):
        raise InputError(
            N_(
                "--base: roster v%(version)s has other tokens (token key or scheme): build a "
                "full roster, without --base"
            ),
            version=str(old.version),
        )
    delta, full = build_delta(
        old, packed, issued_at=now, expires_at=now + lifetime, keys=[keys.roster]
    )
    return BuiltRoster(delta, full, old.version, len(packed), len(old.layers) + 1)


def check_central_url(central_url: str, has_ca: bool) -> None:
    """The URL a terminal is enrolled with: https with the union's CA certificate, or
    plain http to the machine's own address only (the demo, the tests)."""
    fault = central_url_fault(central_url, has_ca)
    if fault == NO_CA:
        raise InputError(
            N_(
                "--url %(central_url)s is https: give the union's CA certificate with --ca-cert "
                "FILE, so that the terminal can check the service's certificate"
            ),
            central_url=central_url,
        )
    if fault == REMOTE_HTTP:
        raise InputError(
            N_(
                "--url %(central_url)s is plain http to another machine: give an https URL and "
                "--ca-cert FILE (plain http only to 127.0.0.1, ::1 or localhost)"
            ),
            central_url=central_url,
        )
    if fault is not None:
        raise InputError(
            N_("--url %(central_url)s is not an https URL such as https://union.example"),
            central_url=central_url,
        )


def check_ca_cert(pem: str, now: datetime) -> str:
    """The union's CA certificate(s) for an enrolment bundle, as PEM: refused when it is
    not a CA's certificate, has expired, or comes with a private key (the bundle goes to
    a shop). Two certificates are fine (a CA being replaced)."""
    if "PRIVATE KEY" in pem:
        raise InputError(
            N_(
                "the CA file holds a private key: give the CA's certificate alone (it goes to "
                "every shop; the key stays with the union)"
            )
        )
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise InputError(
            N_("the CA file is not a PEM certificate (%(exc)s)"), exc=str(exc)
        ) from None
    for cert in certs:
        subject = cert.subject.rfc4514_string()
        try:
            ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            ca = False
        if not ca:
            raise InputError(
                N_(
                    "%(subject)s is not a CA certificate (no basicConstraints CA:TRUE): give the "
                    "CA that signed the service's certificate, not the service's own"
                ),
                subject=subject,
            )
        if cert.not_valid_after_utc <= now:
            raise InputError(
                N_("the CA certificate %(subject)s expired at %(at)s"),
                subject=subject,
                at=str(iso(cert.not_valid_after_utc)),
            )
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


class Union:
    def __init__(
        self,
        store: Store,
        keys: UnionKeys,
        clock: Callable[[], datetime],
        timezone: str = UNION_TIMEZONE,
    ) -> None:
        self.store = store
        self.keys = keys
        self.clock = clock
        self.timezone = timezone  # the union's days: settlement and statements
        self._policies: dict[tuple[str, int], Policy] = {}  # signed_policy's, parsed once

    @classmethod
    def open(
        cls, paths: CentralPaths, database_url: str | None, clock: Callable[[], datetime]
    ) -> Union:
        if not paths.data_dir.is_dir():
            raise NotFoundError(
                N_(
                    "the union's data folder %(folder)s does not exist: give the right --data "
                    "(or $UNIONCARD_CENTRAL_DATA), or create it with `unioncard central init`"
                ),
                folder=str(paths.data_dir),
            )
        keys = load_keys(paths.keys)
        union = cls(Store.open(database_url or paths.database_url), keys, clock)
        known = union.store.latest_version("root")
        roots = root_versions(paths.keys)
        if known is None or known[0] < len(roots):
            union.publish_roots(roots)
        return union

    def close(self) -> None:
        self.store.close()

    def import_members(
        self,
        members_csv: str | Iterable[str],
        full: bool = False,
        progress: Callable[[int], object] | None = None,
        allow_left: int | None = None,
    ) -> ImportResult:
        """Add or update members from MEMBERS.csv, in one transaction, a chunk at a time
        (bounded memory): each change of status, tier, validity, district or workplace
        is kept in the member history with its date. ``full``: the file is every member,
        so those missing from it have left the union; more than a tenth of them only
        when ``allow_left`` allows as many (Store.import_members). ``progress`` hears of
        each chunk (members read). A bad line rejects the whole file, naming it."""
        lines = io.StringIO(members_csv) if isinstance(members_csv, str) else members_csv
        return self.store.import_members(
            member_rows(lines, self.keys.tokenize),
            iso(self.clock()),
            full,
            progress,
            token_scheme=self.keys.token_scheme.label,
            allow_left=allow_left,
        )

    def add_merchant(
        self,
        merchant_id: str,
        name: str,
        basis_points: int,
        registry: Mapping[str, str | None] | None = None,
    ) -> int:
        """Admit a merchant with one rule (``basis_points`` off everything) and publish its
        first signed policy; ``registry``: its category, district, address, contact
        (those given). Everything is checked before anything is written: a merchant
        kept with an id or name its policy cannot carry stopped the daily
        `publish-roster` (which renews every merchant's policy) at that merchant, and a
        registry field longer than its column was a traceback on PostgreSQL after the
        merchant and its policy were kept."""
        given = registry_fields(registry or {})
        if not MERCHANT_ID.fullmatch(merchant_id):
            raise InputError(
                N_(
                    "%(merchant_id)s is not a merchant id: 1 to 32 letters, digits, - or _, such "
                    "as M0001"
                ),
                merchant_id=repr(merchant_id),
            )
        if not name.strip() or len(name) > MERCHANT_NAME_MAX or not name.isprintable():
            raise InputError(
                N_("give the merchant's name: 1 to %(most)s characters on one line"),
                most=MERCHANT_NAME_MAX,
            )
        if not 0 <= basis_points <= 10000:
            raise InputError(N_("the discount must be between 0 and 100 percent"))
        self.store.add_merchant(merchant_id, name, basis_points, iso(self.clock()))
        if given:
            self.store.set_registry(merchant_id, **given)
        return self.publish_policy(merchant_id, policies.percent_terms(basis_points))

    def set_merchant_status(
        self,
        merchant_id: str,
        status: str,
        reason: str | None = None,
        effective: datetime | None = None,
        by: str | None = None,
    ) -> int:
        """Suspend, reinstate or exit a merchant, at once or from ``effective`` on (signed
        ahead into its policy's ``status_changes``, so that a terminal that does not sync
        again still stops then); publishes a new signed policy and returns its version.
        An exit is final: nothing changes a merchant's status once an exit is decided.
        ``by``, when given, is the console admin who decided it (kept in the history)."""
        if status not in MERCHANT_STATUSES:
            raise InputError(N_("the status must be active, suspended or exited"))
        if by is not None:
            self._admin(by)
        self.store.merchant(merchant_id)  # NotFoundError: no merchant M0009
        now = self.clock()
        when = now if effective is None else effective
        if when < now - timedelta(minutes=1):
            raise InputError(
                N_("the effective time %(at)s has passed: a change takes effect now or later"),
                at=str(iso(when)),
            )
        history = self.store.status_history(merchant_id)
        timeline = policies.status_timeline(history, now)
        if timeline.exited_at is not None:
            raise ConflictError(
                N_(
                    "merchant %(merchant_id)s leaves the programme at %(at)s: an exit is final "
                    "(admit the shop again as a new merchant)"
                ),
                merchant_id=merchant_id,
                at=str(iso(timeline.exited_at)),
            )
        in_force = policies.status_timeline(history, when)
        if in_force.status == status and not in_force.ahead:
            raise InputError(
                N_("merchant %(merchant_id)s is already %(status)s then"),
                merchant_id=merchant_id,
                status=status,
            )
        self.store.set_merchant_status(
            merchant_id, status, iso(now), effective_at=iso(max(when, now)), reason=reason, by=by
        )
        return self.publish_policy(merchant_id)

    def refresh_policies(self) -> list[tuple[str, int]]:
        """Sign a new version of each merchant's policy past half its life (the daily
        job), so that no terminal sees its policy expire while the union's service runs.
        A closed merchant's is left to expire. Returns (merchant, version) signed."""
        now = self.clock()
        signed = []
        for merchant in self.store.merchants():
            if merchant["closed_at"] is not None:
                continue
            merchant_id = merchant["merchant_id"]
            latest = self.latest_policy(merchant_id)
            if latest is None or latest.expires_at - now < POLICY_LIFETIME / 2:
                signed.append((merchant_id, self.publish_policy(merchant_id)))
        return signed

    def publish_policy(self, merchant_id: str, terms: Mapping[str, Any] | None = None) -> int:
        """Sign the merchant's next policy version (``terms``, else those in force, and
        its status); return the version (central.policies.publish)."""
        return policies.publish(
            self.store, merchant_id, [self.keys.policy], self.clock(), POLICY_LIFETIME, terms
        )

    def publish_roster(self, lifetime: timedelta = ROSTER_LIFETIME) -> tuple[int, int]:
        """Sign the next roster version of every member; return (version, member count).

        It is the previous version plus one layer of changes, with the delta that
        adds that layer, while the previous version verifies under today's keys and
        has room (``pact.roster.MAX_LAYERS``, ``MAX_OVERLAY``); otherwise a full
        roster of one layer (a compaction), which terminals fetch in full. Snapshots
        naming it are signed on demand.
        """
        held_scheme = self.store.token_scheme()
        if held_scheme not in (None, self.keys.token_scheme.label):
            raise InputError(
                N_(
                    "the members' tokens are of the scheme %(held_scheme)s but the keys make "
                    "%(made)s: finish the switch with `unioncard central import-members --full "
                    "MEMBERS.csv` before publishing a roster"
                ),
                held_scheme=held_scheme,
                made=self.keys.token_scheme.label,
            )
        latest = self.store.latest_signed("roster")
        version = (latest[0] if latest else 0) + 1
        now = self.clock()
        packed = pack_members(self.store.roster_records())
        try:
            base = verify_roster(latest[1], self.roster_keys(), now=None) if latest else None
        except RosterError:  # signed by a roster key since revoked: terminals need the full one
            base = None
        delta = None
        same_tokens = (self.keys.token_key_id, self.keys.token_scheme)
        if base is not None and (base.header.token_key_id, base.header.token_scheme) == same_tokens:
            try:
                delta, data = build_delta(
                    base, packed, issued_at=now, expires_at=now + lifetime, keys=[self.keys.roster]
                )
            except CompactionNeededError:
                delta = None
        if delta is None:
            data = sign_full(self.keys, packed, version, now, lifetime)
        full = verify_roster(data, self.roster_keys(), now=None)
        files: list[tuple[str, int, bytes, str | None]] = [
            ("roster", version, data, full.header.body_sha256)
        ]
        if delta is not None:
            files.append(("roster-delta", version, delta, None))
        # the full roster and its delta together or not at all: another publication at
        # the same time made this version of other members (a delta of one and the full
        # roster of the other disagreed)
        if not self.store.put_signed_together(iso(now), *files):
            raise ConflictError(
                N_(
                    "another publication signed roster v%(version)s at the same time: run "
                    "`unioncard central publish-roster` again"
                ),
                version=version,
            )
        return version, len(packed)

    def prune_rosters(self) -> tuple[int, int]:
        """Delete the roster files no terminal can still ask for: older than the newest,
        than the oldest version a live terminal reported (not revoked, heard from in
        the offline limit), and than the roster lifetime (a snapshot signed since may
        name them). The newest full roster, its delta and those stay. Returns (files
        deleted, files kept)."""
        now = self.clock()
        latest = self.store.latest_version("roster")
        if latest is None:
            return 0, 0
        keep_from = latest[0]
        live = self.store.oldest_live_roster(iso(now - SILENT_AFTER))
        if live is not None:
            keep_from = min(keep_from, live)
        cutoff = iso(now - ROSTER_LIFETIME)
        deleted = sum(
            self.store.prune_signed(kind, keep_from, cutoff) for kind in ("roster", "roster-delta")
        )
        kept = sum(self.store.signed_count(kind)[0] for kind in ("roster", "roster-delta"))
        return deleted, kept

    def roster_keys(self) -> dict[str, Any]:
        root = self.keys.current_root
        return root.trusted("roster")

    def roster_file(self, have: int, want: int) -> tuple[str, bytes] | None:
        """The roster a terminal holding version ``have`` should fetch to reach ``want``:
        the delta when it leads from ``have`` to ``want``, else the full roster."""
        if have == want - 1:
            delta = self.store.signed("roster-delta", want)
            if delta is not None:
                return "delta", delta
        full = self.store.signed("roster", want)
        return None if full is None else ("full", full)

    def snapshot_for(self, merchant_id: str, lifetime: timedelta = ROSTER_LIFETIME) -> bytes | None:
        """The newest snapshot naming the newest roster and this merchant's newest policy.

        Signed on demand with the (online) snapshot key when either has changed
        or the last snapshot is past half its life.
        """
        roster = self.store.latest_version("roster")
        policy = self.store.latest_signed(f"policy:{merchant_id}")
        if roster is None or policy is None:
            return None
        kind = f"snapshot:{merchant_id}"
        now = self.clock()
        latest = self.store.latest_signed(kind)
        if latest is not None:
            envelope = json.loads(latest[1])
            signed = envelope["signed"]
            fresh = parse_iso(signed["expires_at"]) - now > lifetime / 2
            same = (
                signed["roster"]["version"] == roster[0]
                and signed["policy"]["version"] == policy[0]
            )
            current_key = key_id(self.keys.snapshot.public_key())
            by_current_key = any(s["keyid"] == current_key for s in envelope["signatures"])
            if fresh and same and by_current_key:
                return latest[1]
        version = (latest[0] if latest else 0) + 1
        data = build_snapshot(
            merchant_id=merchant_id,
            version=version,
            issued_at=now,
            expires_at=now + lifetime,
            roster_version=roster[0],
            roster_body_sha256=roster[1],
            policy_file=policy[1],
            policy_version=policy[0],
            keys=[self.keys.snapshot],
        )
        if not self.store.put_signed(kind, version, data, iso(now)):
            return self.snapshot_for(merchant_id, lifetime)  # another worker signed it first
        return data

    def usage_for(
        self, terminal: Mapping[str, Any], lifetime: timedelta = ROSTER_LIFETIME
    ) -> bytes:
        """The usage file for ``terminal`` (pact.usage): each member's use of each quota
        rule of its merchant's newest policy in the rule's current period, at the
        merchant's other terminals, as held now; signed with the snapshot key."""
        merchant_id, terminal_id = terminal["merchant_id"], terminal["terminal_id"]
        now = self.clock()
        latest = self.store.latest_version(f"policy:{merchant_id}")
        policy = self.signed_policy(merchant_id, latest[0]) if latest is not None else None
        periods = dict(quota_periods(policy, now)) if policy is not None else {}
        entries = (
            self.store.merchant_entries_since(merchant_id, iso(min(periods.values())), terminal_id)
            if periods
            else []
        )
        return build_usage(
            merchant_id=merchant_id,
            terminal_id=terminal_id,
            issued_at=now,
            expires_at=now + lifetime,
            periods=periods,
            counts=count_usage(entries, periods),
            keys=[self.keys.snapshot],
        )

    def root_version(self, version: int) -> bytes | None:
        """Root metadata version ``version`` (terminals walk them one at a time)."""
        return self.store.signed("root", version)

    def publish_roots(self, roots: list[bytes]) -> None:
        """Make root metadata versions available to terminals (after `keys rotate`)."""
        now = iso(self.clock())
        for data in roots:
            version = json.loads(data)["signed"]["version"]
            self.store.put_signed("root", int(version), data, now)

    def enrol_terminal(
        self, terminal_id: str, merchant_id: str, central_url: str, ca_cert: str | None = None
    ) -> bytes:
        """Register a terminal; return its enrolment bundle (secret: for that shop only).
        ``ca_cert`` is the union's CA certificate (PEM), which the terminal checks the
        service's TLS certificate against; an https ``central_url`` needs it, and plain
        http is refused but to this machine's own address (:func:`check_central_url`).
        A merchant that has left gets none (:meth:`refuse_left`)."""
        check_terminal_id(terminal_id)
        self.refuse_left(merchant_id)
        check_central_url(central_url, ca_cert is not None)
        ca_pem = check_ca_cert(ca_cert, self.clock()) if ca_cert is not None else None
        secret = secrets.token_hex(24)
        self.store.add_terminal(
            terminal_id, merchant_id, hashlib.sha256(secret.encode()).hexdigest(), iso(self.clock())
        )
        bundle = self._bundle(terminal_id, merchant_id, central_url, secret)
        if ca_pem is not None:
            bundle["ca_cert"] = ca_pem
        return json.dumps(bundle, indent=2).encode() + b"\n"

    def _bundle(
        self, terminal_id: str, merchant_id: str, central_url: str, secret: str
    ) -> dict[str, Any]:
        return {
            "format": "unioncard.enrolment.v1",
            "terminal_id": terminal_id,
            "merchant_id": merchant_id,
            "central_url": central_url,
            "api_secret": secret,
            "token_key": self.keys.token_key.hex(),
            "root": self.keys.root_data.decode(),
        }

    def create_enrol_code(self, terminal_id: str, merchant_id: str) -> tuple[str, datetime]:
        """A one-time code that enrols ``terminal_id`` for ``merchant_id`` (pact.enrolcode):
        it works once, until it expires 24 hours from now. Only its digest is kept. A
        merchant that has left gets none (nor is one made before used after it left)."""
        check_terminal_id(terminal_id)
        self.refuse_left(merchant_id)
        now = self.clock()
        code = format_code(secrets.token_bytes(13))
        expires = now + ENROL_CODE_LIFETIME
        normal = normal_code(code)
        assert normal is not None
        self.store.add_enrol_code(
            code_digest(normal), terminal_id, merchant_id, iso(now), iso(expires)
        )
        return code, expires

    def refuse_left(self, merchant_id: str) -> None:
        """Refuse a new terminal for a merchant that has left the programme: its exit in
        force, or closed (its final statement made: a terminal enrolled after it
        uploaded sales the statement never counted). NotFoundError for no merchant."""
        merchant = self.store.merchant(merchant_id)
        if merchant["closed_at"] is not None:
            raise MerchantLeftError(
                N_(
                    "merchant %(merchant_id)s left the programme and was closed at %(at)s: it "
                    "gets no new terminals"
                ),
                merchant_id=merchant_id,
                at=str(merchant["closed_at"]),
            )
        now = self.clock()
        exited_at = policies.status_timeline(self.store.status_history(merchant_id), now).exited_at
        if exited_at is not None and exited_at <= now:
            raise MerchantLeftError(
                N_(
                    "merchant %(merchant_id)s left the programme at %(at)s: it gets no new "
                    "terminals"
                ),
                merchant_id=merchant_id,
                at=str(iso(exited_at)),
            )

    def enrol_by_code(
        self, code: str, device_key_hex: str, signature: str, central_url: str, has_ca: bool,
        source: str,
    ) -> dict[str, Any]:  # fmt: skip
        """Enrol the terminal a one-time code names, registering the device key that
        signed the request; return its bundle (without the CA certificate, which the
        terminal already used to get here). The same device repeating its request (an
        answer lost) gets a new secret while the code lasts and its terminal is not
        revoked; wrong codes are counted, and a source, or
        everyone, that tried too many in :data:`ENROL_WINDOW` must wait."""
        now = self.clock()
        here, everywhere = self.store.enrol_failures_since(iso(now - ENROL_WINDOW), source)
        if here >= ENROL_TRIES_PER_SOURCE or everywhere >= ENROL_TRIES_ALL:
            raise TooManyError(
                N_(
                    "too many wrong enrolment codes were tried: wait 15 minutes, check the code, "
                    "and try again"
                )
            )
        check_central_url(central_url, has_ca)
        try:
            key = device_key(device_key_hex)
        except SignatureError as exc:
            raise InputError(N_("device_key: %(exc)s"), exc=exc.msg) from None
        normal = normal_code(code)
        if normal is not None:
            try:
                check_request(key, signature, normal, central_url)
            except SignatureError as exc:
                raise InputError(exc.msg) from None
            named = self.store.enrol_code(code_digest(normal))
            if named is not None:  # a code made before its merchant left: not used
                self.refuse_left(named["merchant_id"])
        secret = secrets.token_hex(24)
        secret_sha = hashlib.sha256(secret.encode()).hexdigest()
        status, row = (
            self.store.enrol_with_code(code_digest(normal), iso(now), secret_sha, device_key_hex)
            if normal is not None
            else ("unknown", None)
        )
        if status == "used" and row is not None:
            held = self.store.terminal(row["terminal_id"])
            if (
                held is not None
                and held["device_key"] == device_key_hex
                and held["revoked_at"] is None
                and iso(now) < row["expires_at"]
            ):  # a repeat while the code lasts (a copy of the request replayed later
                # reset the terminal's secret, and a revoked terminal got a bundle)
                self.store.set_terminal_secret(row["terminal_id"], secret_sha)
                status = "ok"
        if status != "ok" or row is None:
            if status in ("unknown", "expired", "used"):
                self.store.record_enrol_failure(source, iso(now))
            raise {
                "unknown": AuthError(
                    "this enrolment code is not known: check it, or ask the union for a new one"
                ),
                "expired": AuthError(
                    "this enrolment code has expired (a code lasts 24 hours): ask the union "
                    "for a new one"
                ),
                "used": AuthError(
                    "this enrolment code was used already, by another device: ask the union "
                    "for a new one"
                ),
                "enrolled": ConflictError(
                    f"terminal {row['terminal_id'] if row else '?'} is already enrolled: ask "
                    "the union for a code for a new terminal id"
                ),
            }[status]
        return self._bundle(row["terminal_id"], row["merchant_id"], central_url, secret)

    def authenticate(self, authorization: str | None) -> dict[str, Any]:
        """The terminal named by an ``Authorization: Bearer <terminal_id>.<secret>`` header."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError(N_("missing terminal credentials"))
        terminal_id, _, secret = authorization.removeprefix("Bearer ").partition(".")
        row = self.store.terminal(terminal_id)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if row is None or not hmac.compare_digest(digest, row["secret_sha256"]):
            raise AuthError(N_("unknown terminal or wrong secret"))
        if row["revoked_at"] is not None:
            raise AuthError(
                N_(
                    "terminal %(terminal_id)s was revoked at %(at)s (%(reason)s): the union "
                    "refuses its calls"
                ),
                terminal_id=terminal_id,
                at=str(row["revoked_at"]),
                reason=str(row["revoked_reason"]),
            )
        now = self.clock()
        since = iso(now - CONTACT_GRAIN)
        if row["last_contact_at"] is None or row["last_contact_at"] < since:
            # a write only when the minute kept is over: the calls of a sync (one a batch)
            # neither take the database's write lock nor wait for an ingest holding it
            self.store.touch_terminal(terminal_id, iso(now), since)
        return dict(row)

    # -- the console's people --------------------------------------------------------
    def unlock_user(self, name: str) -> None:
        """Lift the lock of ``name``'s account (wrong passwords) at once, and start its
        count again; NotFoundError for a name no one has."""
        if self.store.user(name) is None:
            raise NotFoundError(
                N_("no console user %(quoted)s: see who signs in at /console"), quoted=repr(name)
            )
        self.store.login_succeeded(name)

    def add_user(self, name: str, role: str, merchant_id: str | None, password: str) -> None:
        """A person of the console: ``admin`` (everything), ``auditor`` (reads
        everything), ``merchant`` (one merchant's own: ``merchant_id``)."""
        if not USER_NAME.fullmatch(name):
            raise InputError(
                N_("%(quoted)s is not a user name: 2 to 64 letters, digits, '.', '_', '-' or '@'"),
                quoted=repr(name),
            )
        if role not in ROLES:
            raise InputError(
                N_("unknown role %(role)s: choose one of %(roles)s"),
                role=repr(role),
                roles=str(", ".join(ROLES)),
            )
        if (role == "merchant") != (merchant_id is not None):
            raise InputError(
                N_("a merchant user needs --merchant, and only a merchant user may have one")
            )
        if len(password) < MIN_PASSWORD:
            raise InputError(
                N_("the password is too short: at least %(least)s characters"),
                least=MIN_PASSWORD,
            )
        self.store.add_user(name, role, merchant_id, PASSWORDS.hash(password), iso(self.clock()))

    def check_login(self, name: str, password: str) -> dict[str, Any]:
        """The user if ``password`` is theirs; AuthError otherwise (the same words for
        an unknown name as for a wrong password, and for a locked account: the answer
        tells no one which accounts exist), or while the account is locked
        (:data:`LOCK_AFTER` wrong passwords lock it for :data:`LOCK_FOR`).

        The try is counted in the database before the password is checked
        (:meth:`Store.login_attempt`), so tries that arrive together, at several
        workers, check no more than :data:`LOCK_AFTER` passwords; a locked account's
        password is not checked at all."""
        now = self.clock()
        # a name no account can have is no account: cut to 64 characters, "name + X"
        # signed in as "name", and its wrong passwords locked nothing
        user = self.store.user(name) if USER_NAME.fullmatch(name) else None
        if user is None or not self.store.login_attempt(
            name, iso(now), iso(now + LOCK_FOR), LOCK_AFTER
        ):
            PASSWORDS.hash(password[:200])  # as long as for a real user: no timing hint
            raise AuthError(N_("wrong user name or password"))
        try:
            PASSWORDS.verify(user["password_hash"], password)
        except (VerifyMismatchError, InvalidHashError):
            raise AuthError(N_("wrong user name or password")) from None  # counted already
        rehash = PASSWORDS.check_needs_rehash(user["password_hash"])
        self.store.login_succeeded(name, PASSWORDS.hash(password) if rehash else None)
        return user

    def record_report(self, terminal: Mapping[str, Any], body: Any) -> None:
        """Keep what the terminal reports at the end of a sync (the fleet view):
        ``{"root_version", "snapshot_version", "roster_version", "policy_version",
        "pending", "warnings": [...], "software"}``; InputError names a bad field."""
        if not isinstance(body, dict):
            raise InputError(N_("the report must be a JSON object"))
        report: dict[str, Any] = {}
        for name in ("root_version", "snapshot_version", "roster_version", "policy_version"):
            value = body.get(name)
            if value is not None and (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not 0 <= value <= MAX_VERSION
            ):
                raise InputError(N_("%(name)s must be a version number or null"), name=name)
            report[name] = value
        pending = body.get("pending")
        if not isinstance(pending, int) or isinstance(pending, bool) or not 0 <= pending < 2**62:
            raise InputError(N_("pending must be a count of entries"))
        warnings = body.get("warnings", [])
        if not isinstance(warnings, list) or not all(storable(w) for w in warnings):
            raise InputError(N_("warnings must be a list of lines"))
        software = body.get("software", "")
        if not storable(software):
            raise InputError(N_("software must be text"))
        report.update(
            pending=pending,
            warnings=json.dumps([w[:300] for w in warnings[:20]], ensure_ascii=False),
            software=software[:64],
        )
        self.store.report_terminal(terminal["terminal_id"], iso(self.clock()), report)

    def revoke_terminal(self, terminal_id: str, reason: str) -> int:
        """Revoke a terminal (lost, stolen, its merchant gone): its calls are refused
        from now on, uploads included. Returns the last seq held from it."""
        if not reason.strip():
            raise InputError(N_("give the reason for revoking the terminal (--reason)"))
        return self.store.revoke_terminal(terminal_id, iso(self.clock()), reason.strip())

    def decommission_terminal(self, terminal: Mapping[str, Any], last_seq: int) -> str:
        """The shop took ``terminal`` out of service with entries up to ``last_seq``:
        revoke it, when the union holds all of them. Returns when it was revoked."""
        at = iso(self.clock())
        terminal_id = terminal["terminal_id"]
        if not self.store.decommission_terminal(terminal_id, at, last_seq):
            held = self.store.tail_seq(terminal_id)
            raise ConflictError(
                N_(
                    "the union holds entries up to seq %(held)s of terminal %(terminal_id)s, and "
                    "the terminal's journal ends at seq %(last_seq)s: sync, then decommission "
                    "again"
                ),
                held=held,
                terminal_id=terminal_id,
                last_seq=last_seq,
            )
        return at

    def fleet(self) -> list[FleetRow]:
        """Every terminal as the fleet view shows it, with its warnings now."""
        now = self.clock()
        return [fleet_row(row, now) for row in self.store.fleet()]

    def register_device_key(self, terminal: dict[str, Any], key_hex: str) -> None:
        """Record the terminal's device public key at its first sync (its secret
        vouches for it); afterwards the same key is acknowledged and another refused."""
        try:
            device_key(key_hex)  # a real Ed25519 public key
        except SignatureError as exc:
            raise InputError(exc.msg) from None
        held = self.store.set_device_key(terminal["terminal_id"], key_hex, iso(self.clock()))
        if held != key_hex:
            refused = ConflictError(
                N_(
                    "terminal %(terminal)s has another device key on record: a replaced Pi is "
                    "enrolled under a new terminal id"
                ),
                terminal=terminal["terminal_id"],
            )
            reason = f"{refused} (offered {key_hex})"
            self.store.record_refusal(
                terminal["terminal_id"], iso(self.clock()), None, None, reason
            )
            raise refused

    def ingest(
        self, terminal: dict[str, Any], batch: Sequence[Sale], pipelined: bool = False
    ) -> IngestResult:
        """Store an upload. The entries already held must be the very copies held; the
        new ones must continue the chain, each carry a device signature, and the newest
        one's must verify under the terminal's registered key (through the chain it
        covers every new entry before it). A batch that does not verify is refused
        whole, and the refusal kept for the audit.

        A ``pipelined`` batch was sent while the terminal's request carrying the entries
        before it may still be on its way (sync.run): when the union does not hold them
        yet, it waits for them, up to :data:`PIPELINE_WAIT` seconds, and then answers what
        it holds, as for any batch that does not follow (the terminal sends it again); the
        union's copy ending early is noted only for a batch sent alone."""
        deadline = time.monotonic() + PIPELINE_WAIT
        pause = 0.002
        while True:
            result = self._ingest_once(terminal, batch)
            if not (result.behind and pipelined) or time.monotonic() >= deadline:
                break
            time.sleep(pause)  # the batch before it is being stored, or is on its way
            pause = min(pause * 2, 0.05)
        if result.behind and not pipelined:  # kept with the refusals: what the union
            held = result.acked_through  # asked for, and when
            note = (
                f"the union holds this terminal's entries through {held} only (its "
                f"database restored from an older backup?): asked for them again from "
                f"{held + 1}"
            )
            self.store.record_refusal(
                terminal["terminal_id"], iso(self.clock()), batch[0].seq, batch[-1].seq, note
            )
            log.warning("terminal %s: %s", terminal["terminal_id"], note)
        return result

    def _ingest_once(self, terminal: dict[str, Any], batch: Sequence[Sale]) -> IngestResult:
        """One try of :meth:`ingest`."""
        terminal_id = terminal["terminal_id"]
        now = iso(self.clock())
        if not batch:
            return self.store.ingest(terminal_id, terminal["merchant_id"], batch, now)
        first, last = batch[0].seq, batch[-1].seq
        key_hex = terminal.get("device_key")
        if key_hex is None:
            raise ConflictError(
                N_("terminal %(terminal_id)s has registered no device key: sync again"),
                terminal_id=terminal_id,
            )
        key = device_key(key_hex)

        def check_new(new: Sequence[Sale]) -> None:
            unsigned = next((s for s in new if s.sig is None), None)
            if unsigned is not None:
                raise DeviceSignatureError(
                    N_("sale %(seq)s has no device signature"), seq=str(unsigned.seq)
                )
            check_signature(key, new[-1])

        try:
            return self.store.ingest(
                terminal_id, terminal["merchant_id"], batch, now, check_new=check_new
            )
        except DeviceSignatureError as exc:
            self.store.record_refusal(terminal_id, now, first, last, str(exc))
            raise EvidenceError(N_("upload refused: %(reason)s"), reason=str(exc)) from None
        except ConflictError as exc:
            self.store.record_refusal(terminal_id, now, first, last, str(exc))
            raise

    def settlement(self, start: date | None = None, end: date | None = None) -> list[Settlement]:
        """Per-merchant totals from the local day ``start`` to before the local day
        ``end`` (the union's time zone, :attr:`timezone`). A day outside the years the
        union keeps is refused as a statement's is (0001-01-01 was an OverflowError)."""
        zone = ZoneInfo(self.timezone)

        def instant(day: date | None) -> str | None:
            return None if day is None else iso(period_bounds(day, day, zone)[0])

        return self.store.settlement(instant(start), instant(end))

    def audit(
        self, merchant_id: str, first: date, last: date, runner: Runner = IN_TURN
    ) -> list[Finding]:
        """The audit's findings (pact.audit) on the merchant's entries journaled from the
        local day ``first`` to ``last``; the month before is read too, for the quotas'
        earlier use, but only the period's entries are judged."""
        self._audit_request(merchant_id, first, last)
        start, end = period_bounds(first, last, ZoneInfo(self.timezone))
        # whole runs of each chain, events too (the chain's own entries, and what the
        # behaviour checks read), from the month before on
        context_start = start - QUOTA_LOOKBACK
        context = self.store.merchant_chains_between(merchant_id, iso(context_start), iso(end))
        judged = {(e.terminal_id, e.seq) for e in context if iso(start) <= e.at < iso(end)}
        # every card's standing read at once, so the audit's workers answer from memory
        standing = self.store.token_histories(e.token for e in context if e.token is not None)

        def key_of(terminal_id: str) -> Any:
            row = self.store.terminal(terminal_id)
            return device_key(row["device_key"]) if row and row["device_key"] else None

        def membership(token: str, at: datetime) -> Membership | None:
            if token not in standing:  # a member's earlier token too (Store.token_history)
                standing[token] = self.store.token_history(token)
            then = [h for h in standing[token] if parse_iso(h["at"]) <= at]
            if not then:
                return None
            h = then[-1]
            return Membership(h["status"], h["tier"], h["valid_until"])

        contacts = {
            row["terminal_id"]: Contact(
                merchant_id=row["merchant_id"],
                enrolled_at=parse_iso(row["enrolled_at"]),
                last_contact=parse_iso(row["last_contact_at"]) if row["last_contact_at"] else None,
                last_upload=parse_iso(row["last_upload_at"]) if row["last_upload_at"] else None,
                last_seq=int(row["last_seq"] or 0),
                policy_version=row["policy_version"],
                revoked=row["revoked_at"] is not None,
            )
            for row in self.store.terminal_contacts(merchant_id)
        }
        facts = Facts(
            self.signed_policy,
            key_of,
            membership,
            since=start,
            until=min(end, self.clock()),
            terminals=contacts,
            chained_from=context_start,
            signed_policies=self.signed_policies(merchant_id),
        )
        findings = audit_entries(context, facts, runner)
        kept = [
            f
            for f in findings
            if f.kind in UNTIED_KINDS or any((f.terminal_id, s) in judged for s in f.seqs)
        ]
        for c in self.store.complaints_between(merchant_id, first, last):
            # the card's words a message of their own, so that they are translated too
            card: Msg | str = (
                Msg.of(N_(" (card •••• %(last4)s)"), last4=c["pan_last4"]) if c["pan_last4"] else ""
            )
            kept.append(
                Finding(
                    MEDIUM,
                    "-",
                    (),
                    "complaint",
                    Msg.of(
                        N_("a member's complaint of %(day)s%(card)s: %(what)s"),
                        day=c["day"].isoformat(),
                        card=card,
                        what=c["what"],
                    ),
                )
            )
        return kept

    def _audit_request(self, merchant_id: str, first: date, last: date) -> None:
        if last < first:
            raise InputError(N_("the audit's last day is before its first: check --from and --to"))
        period_bounds(first, last, ZoneInfo(self.timezone))  # (InputError: years 2000-9998)
        self.store.merchant(merchant_id)  # NotFoundError names an unknown merchant

    def run_audit(
        self, merchant_id: str, first: date, last: date, by: str, runner: Runner = IN_TURN
    ) -> tuple[int, list[Finding]]:
        """:meth:`audit`, its findings stored as one run (who, when, which days): the
        run's number and the findings."""
        findings = self.audit(merchant_id, first, last, runner)
        kept = [f.as_json() for f in findings]
        run_id = self.store.add_audit_run(
            merchant_id, first, last, iso(self.clock()), _run_by(by), kept
        )
        return run_id, findings

    def start_audit(self, merchant_id: str, first: date, last: date, by: str) -> int:
        """A run of :meth:`audit` numbered now, in state ``running``, for
        :meth:`finish_audit` to do (the console, in the background: a merchant-year takes
        longer than a web request may). A wrong request is refused here, at once."""
        self._audit_request(merchant_id, first, last)
        return self.store.start_audit_run(merchant_id, first, last, iso(self.clock()), _run_by(by))

    def finish_audit(self, run_id: int, merchant_id: str, first: date, last: date) -> None:
        """Do a started run: its findings stored, or the line that says why it stopped
        (a central error's; an unexpected one is logged whole and named). While it runs
        it says every :data:`ALIVE_EVERY` seconds that it is alive (``alive_at``), so a
        run whose process stopped is soon told from one still working."""
        stop = threading.Event()
        alive = threading.Thread(
            target=self._say_alive, args=(run_id, stop), name=f"audit-run-{run_id}-alive"
        )
        alive.start()
        try:
            self._finish_audit(run_id, merchant_id, first, last)
        finally:
            stop.set()
            alive.join()

    def _say_alive(self, run_id: int, stop: threading.Event) -> None:
        while not stop.wait(ALIVE_EVERY):
            try:
                self.store.audit_run_alive(run_id, iso(self.clock()))
            except Exception:  # the run goes on; its page may show it stopped meanwhile
                log.warning("audit run #%s could not say it is alive", run_id, exc_info=True)

    def _finish_audit(self, run_id: int, merchant_id: str, first: date, last: date) -> None:
        try:
            findings = self.audit(merchant_id, first, last)
        except CentralError as exc:
            self.store.fail_audit_run(run_id, str(exc), iso(self.clock()))
            return
        except Exception as exc:  # a background run: nobody above to tell
            log.exception("audit run #%s stopped", run_id)
            self.store.fail_audit_run(
                run_id,
                f"the audit stopped ({type(exc).__name__}): the service's log has the rest",
                iso(self.clock()),
            )
            return
        self.store.finish_audit_run(run_id, [f.as_json() for f in findings], iso(self.clock()))

    def admit_merchant(self, merchant_id: str, standards: list[str], by: str) -> None:
        """Keep the standards the merchant agreed to, with today's date and the admin."""
        self._admin(by)
        kept = [" ".join(s.split())[:300] for s in standards if s.strip()]
        if not kept:
            raise InputError(N_("give the standards the merchant agreed to (--standard TEXT)"))
        self.store.admit(merchant_id, json.dumps(kept, ensure_ascii=False), iso(self.clock()), by)

    def draft_policy(self, merchant_id: str, terms: Mapping[str, Any], by: str) -> int:
        """Propose new terms for a merchant (checked now, as `policy check` would): a
        draft, signed only once a second admin approves it (:meth:`approve_policy`)."""
        self._admin(by)
        checked = policies.parse_terms_file(json.dumps(terms).encode(), "the terms")
        return self.store.add_draft(
            merchant_id, json.dumps(checked, ensure_ascii=False), by, iso(self.clock())
        )

    def approve_policy(self, draft_id: int, by: str) -> int:
        """A second admin approves a draft: its terms are signed as the merchant's next
        policy version (returned) and kept as the merchant's terms. The admin who
        drafted it cannot. An approval whose signing never finished (its process died)
        is taken over by the next one after :data:`APPROVAL_STALE`."""
        self._admin(by)
        draft = self.store.draft(draft_id)
        if draft is None:
            raise NotFoundError(
                N_("no policy draft #%(draft_id)s: see `unioncard central drafts`"),
                draft_id=draft_id,
            )
        now = self.clock()
        stale = (
            draft["decision"] == "approved"
            and draft["version"] is None
            and parse_iso(draft["decided_at"]) <= now - APPROVAL_STALE
        )
        if draft["decision"] is not None and not stale:
            raise ConflictError(
                N_("draft #%(draft_id)s was %(decision)s already"),
                draft_id=draft_id,
                decision=str(draft["decision"]),
            )
        if draft["drafted_by"] == by:
            raise AuthError(
                N_("%(by)s drafted #%(draft_id)s: a second admin must approve it (four eyes)"),
                by=by,
                draft_id=draft_id,
            )
        # the decision first, in one conditional UPDATE of a draft still waiting (or of
        # the stale approval read above): of an approval and a rejection (or two
        # approvals) at once, one only goes on to sign
        if not self.store.decide_draft(
            draft_id, "approved", by, iso(now), None, taking_over=draft if stale else None
        ):
            raise ConflictError(N_("draft #%(draft_id)s was decided meanwhile"), draft_id=draft_id)
        merchant_id = draft["merchant_id"]
        try:
            # the draft's own terms: a version signed meanwhile (another draft, a status
            # change) takes this number and this one is refused, never signed with theirs
            version = self.publish_policy(merchant_id, json.loads(draft["terms"]))
        except Exception as exc:
            undone = self._reopen(draft_id, by)
            if not isinstance(exc, CentralError):
                raise
            then = (
                Msg.of(N_("it waits for a decision again"))
                if undone
                else Msg.of(N_("the service's log has the rest"))
            )
            raise ConflictError(
                N_("draft #%(draft_id)s was not signed (%(exc)s): %(then)s"),
                draft_id=draft_id,
                exc=exc.msg,
                then=then,
            ) from None
        self.store.draft_signed(draft_id, version)
        return version

    def _reopen(self, draft_id: int, by: str) -> bool:
        """Signing ``by``'s approval of a draft failed: the draft waits for a decision
        again (True). Said in the log when that cannot be done (the approval is then
        taken over after APPROVAL_STALE)."""
        try:
            reopened = self.store.reopen_draft(draft_id, by)
        except Exception:
            log.exception("draft #%s: approved by %s and not signed; not reopened", draft_id, by)
            return False
        if not reopened:
            log.error("draft #%s: approved by %s and not signed; not reopened", draft_id, by)
        return reopened

    def reject_policy(self, draft_id: int, by: str) -> None:
        self._admin(by)
        if not self.store.decide_draft(draft_id, "rejected", by, iso(self.clock()), None):
            raise ConflictError(
                N_("draft #%(draft_id)s is not waiting for a decision"), draft_id=draft_id
            )

    def _admin(self, name: str) -> None:
        user = self.store.user(name)
        if user is None or user["role"] != "admin":
            raise AuthError(
                N_(
                    "%(quoted)s is not a union admin of the console (`unioncard central add-user "
                    "%(name)s --role admin` makes one): admissions, status changes and policies "
                    "are decided by admins, by name"
                ),
                quoted=repr(name),
                name=name,
            )

    def add_complaint(
        self, merchant_id: str, day: date, what: str, pan_last4: str | None, by: str
    ) -> int:
        """Record a member's complaint against a merchant (it stands among the
        merchant's audit findings); the card's last four digits at most."""
        what = " ".join(what.split())
        if not what:
            raise InputError(N_("say what happened (--what)"))
        if pan_last4 is not None and not (len(pan_last4) == 4 and pan_last4.isdigit()):
            raise InputError(N_("--last4 is the card's last four digits, nothing more"))
        return self.store.add_complaint(
            merchant_id, day, what[:2000], pan_last4, iso(self.clock()), by[:64]
        )

    def statement(self, merchant_id: str, first: date, last: date) -> Statement:
        """The merchant's settlement statement for the local days ``first`` to ``last``
        (central.statement): by day and by rule, voids and refunds netted, the union's
        subsidy where the signed policy says the union funds a rule."""
        if last < first:
            raise InputError(
                N_("the statement's last day is before its first: check --from and --to")
            )
        merchant = self.store.merchant(merchant_id)
        start, end = period_bounds(first, last, ZoneInfo(self.timezone))
        entries = self.store.merchant_entries_between(merchant_id, iso(start), iso(end))
        made = build_statement(
            merchant_id,
            merchant["name"],
            first,
            last,
            entries,
            lambda version: self.signed_policy(merchant_id, version),
            self.timezone,
        )
        made.awaiting = self._awaiting(merchant_id, end)
        return made

    def _awaiting(self, merchant_id: str, end: datetime) -> list[tuple[str, str | None]]:
        """The merchant's terminals whose sales journaled before ``end`` may not all be
        here: not revoked (a revoked one uploads nothing more), enrolled before it, and
        with no report since it that said nothing was pending (its sync ends with one)."""
        until = iso(end)
        awaiting = []
        for row in self.store.terminal_contacts(merchant_id):
            if row["revoked_at"] is not None or row["enrolled_at"] >= until:
                continue
            reported = row["reported_at"]
            if reported is not None and reported >= until and not row["pending"]:
                continue
            awaiting.append((row["terminal_id"], reported))
        return awaiting

    def latest_policy(self, merchant_id: str) -> Policy | None:
        """The merchant's newest signed policy (None: none yet), parsed once."""
        latest = self.store.latest_version(f"policy:{merchant_id}")
        return None if latest is None else self.signed_policy(merchant_id, latest[0])

    def signed_policies(self, merchant_id: str) -> list[Policy]:
        """Every version of the merchant's policy the union holds, oldest first."""
        versions = self.store.signed_versions(f"policy:{merchant_id}")
        found = (self.signed_policy(merchant_id, v["version"]) for v in reversed(versions))
        return [policy for policy in found if policy is not None]

    def signed_policy(self, merchant_id: str, version: int) -> Policy | None:
        """Policy ``version`` of the merchant as the union signed it (None: never signed).
        A signed version never changes: each is parsed once."""
        key = (merchant_id, version)
        if key not in self._policies:
            data = self.store.signed(f"policy:{merchant_id}", version)
            if data is None:
                return None
            self._policies[key] = parse_policy_document(json.loads(data)["signed"])
        return self._policies[key]
