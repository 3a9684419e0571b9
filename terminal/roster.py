"""The signed member roster (format ``UCR1``): build, verify, look up, apply deltas.

Layout, byte for byte (docs/protocol.md has the full description)::

    b"UCR1"                       magic, 4 bytes
    header length                 unsigned 32-bit big-endian
    header                        canonical JSON signed envelope (terminal.signing)
    body                          full: member_count records of RECORD_SIZE bytes, sorted
                                  by token; delta: upserts records, then removals tokens

    record = token (16) | status (1) | tier (1) | valid_until (u32 BE, days since 1970-01-01)

The header's ``signed`` part names the version, issue and expiry times, the member
count and the SHA-256 of the full body, so the body is covered by the signature.
A delta from version N to N+1 names N's body digest (its base) and N+1's; the
terminal stores the result as the delta's header followed by the full N+1 body,
which verifies like any roster. Lookups search the body in place (it may be a
memory-mapped file): no per-member Python objects are made. Pure: bytes in,
values out.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from reader.identity import TOKEN_BYTES, TOKEN_SCHEME
from terminal.errors import RosterError, SignatureError
from terminal.signing import canonical_json, sign, verify
from terminal.timefmt import iso, parse_iso

MAGIC = b"UCR1"
RECORD = struct.Struct(">16sBBI")
RECORD_SIZE = RECORD.size  # 22 bytes
MAX_ROSTER_BYTES = 400 * 1024 * 1024  # refuse anything larger before parsing
MAX_HEADER_BYTES = 64 * 1024
EPOCH = date(1970, 1, 1)
NO_END = 0xFFFFFFFF  # valid_until for "no end date"

STATUS_ACTIVE = 1
STATUS_SUSPENDED = 2
STATUS_NAMES = {STATUS_ACTIVE: "active", STATUS_SUSPENDED: "suspended"}
STATUS_CODES = {name: code for code, name in STATUS_NAMES.items()}

Buffer = bytes | bytearray | memoryview | mmap.mmap


@dataclass(frozen=True)
class MemberRecord:
    token: bytes
    status: str = "active"
    tier: int = 0
    valid_until: date | None = None

    def pack(self) -> bytes:
        if len(self.token) != TOKEN_BYTES:
            raise ValueError(f"a token is {TOKEN_BYTES} bytes")
        if self.status not in STATUS_CODES:
            raise ValueError(f"unknown member status {self.status!r}: use active or suspended")
        if not 0 <= self.tier <= 255:
            raise ValueError("tier must be 0..255")
        days = NO_END if self.valid_until is None else (self.valid_until - EPOCH).days
        return RECORD.pack(self.token, STATUS_CODES[self.status], self.tier, days)


@dataclass(frozen=True)
class Membership:
    """The answer to "is this card a member?" at one moment."""

    status: str
    tier: int
    valid_until: date | None

    def is_valid_on(self, day: date) -> bool:
        return self.status == "active" and (self.valid_until is None or day <= self.valid_until)


@dataclass(frozen=True)
class RosterHeader:
    kind: str  # "full" or "delta"
    version: int
    issued_at: datetime
    expires_at: datetime
    member_count: int  # members in the full roster of this version
    body_sha256: str  # digest of the full body of this version
    token_key_id: str
    base_version: int | None = None  # delta only
    base_body_sha256: str | None = None  # delta only
    upserts: int = 0  # delta only
    removals: int = 0  # delta only
    delta_sha256: str | None = None  # delta only

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def _key64(buf: Buffer, off: int) -> int:
    return int.from_bytes(buf[off : off + 8], "big")


def lower_bound(body: Buffer, count: int, token: bytes, size: int = RECORD_SIZE) -> int:
    """Index of the first record whose token is >= ``token`` in a sorted body.

    Tokens are HMAC outputs, so uniformly spread: interpolation on the first 8
    bytes finds the neighbourhood in two or three probes; a binary search finishes.
    """
    lo, hi = 0, count  # answer in [lo, hi]
    target = int.from_bytes(token[:8], "big")
    key_lo, key_hi = 0, 1 << 64
    for _ in range(4):
        if hi - lo <= 16:
            break
        span = key_hi - key_lo
        guess = lo + (target - key_lo) * (hi - lo) // span if span > 0 else lo
        guess = min(max(guess, lo), hi - 1)
        k = _key64(body, guess * size)
        if k < target:
            lo, key_lo = guess + 1, k
        else:
            hi, key_hi = guess, k + 1
    while lo < hi:
        mid = (lo + hi) // 2
        off = mid * size
        if bytes(body[off : off + TOKEN_BYTES]) < token:
            lo = mid + 1
        else:
            hi = mid
    return lo


class Roster:
    """A verified full roster. Build one with :func:`verify_roster`."""

    def __init__(self, header: RosterHeader, body: Buffer, data: Buffer | None = None) -> None:
        self.header = header
        self.body = memoryview(body)
        self.data = data  # the whole file, for re-installing or applying a delta
        self._count = header.member_count

    @property
    def version(self) -> int:
        return self.header.version

    def remap(self, data: Buffer) -> Roster:
        """The same verified roster served from ``data``, a copy of this roster's file
        that we wrote ourselves (e.g. memory-mapped after install): framing and length
        are checked, the body is not hashed again."""
        envelope, body = split_roster(data)
        if len(body) != len(self.body) or envelope.get("signed", {}).get("version") != self.version:
            raise RosterError("the installed roster file does not match what was verified")
        return Roster(self.header, body, data)

    def __len__(self) -> int:
        return self._count

    def lookup(self, token: bytes) -> Membership | None:
        """The member record for ``token``; None when it is not on the roster."""
        body = self.body
        i = lower_bound(body, self._count, token)
        off = i * RECORD_SIZE
        if i >= self._count or bytes(body[off : off + TOKEN_BYTES]) != token:
            return None
        _, status, tier, days = RECORD.unpack_from(body, off)
        until = None if days == NO_END else EPOCH + timedelta(days=days)
        return Membership(STATUS_NAMES.get(status, "suspended"), tier, until)


def _frame(signed: Mapping[str, Any], keys: list[Ed25519PrivateKey], body: Buffer) -> bytes:
    header = canonical_json(sign(signed, keys))
    return MAGIC + struct.pack(">I", len(header)) + header + bytes(body)


def _check_sorted(packed: list[bytes], size: int) -> None:
    for a, b in zip(packed, packed[1:], strict=False):
        if a[:TOKEN_BYTES] >= b[:TOKEN_BYTES]:
            raise ValueError("two members have the same card (duplicate token)")
    if any(len(p) != size for p in packed):
        raise ValueError("bad record size")


def build_roster(
    records: Iterable[MemberRecord],
    *,
    version: int,
    issued_at: datetime,
    expires_at: datetime,
    token_key_id: str,
    keys: list[Ed25519PrivateKey],
) -> bytes:
    """Serialise and sign a full roster. Duplicate tokens are refused."""
    return sign_packed(
        sorted(r.pack() for r in records),
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        token_key_id=token_key_id,
        keys=keys,
    )


def _common(
    version: int,
    issued_at: datetime,
    expires_at: datetime,
    token_key_id: str,
) -> dict[str, Any]:
    if version < 1:
        raise ValueError("roster version must be 1 or more")
    if expires_at <= issued_at:
        raise ValueError("a roster must expire after it is issued")
    return {
        "type": "roster",
        "version": version,
        "issued_at": iso(issued_at),
        "expires_at": iso(expires_at),
        "record_size": RECORD_SIZE,
        "token_scheme": TOKEN_SCHEME,
        "token_key_id": token_key_id,
    }


def sign_packed(
    packed: list[bytes],
    *,
    version: int,
    issued_at: datetime,
    expires_at: datetime,
    token_key_id: str,
    keys: list[Ed25519PrivateKey],
) -> bytes:
    """Sign records already packed (``MemberRecord.pack``) and sorted: a full roster."""
    _check_sorted(packed, RECORD_SIZE)
    body = b"".join(packed)
    signed = _common(version, issued_at, expires_at, token_key_id)
    signed.update(
        kind="full",
        member_count=len(packed),
        body_sha256=hashlib.sha256(body).hexdigest(),
    )
    return _frame(signed, keys, body)


def build_delta(
    base: Roster,
    new_packed: list[bytes],
    *,
    issued_at: datetime,
    expires_at: datetime,
    keys: list[Ed25519PrivateKey],
) -> bytes:
    """The signed delta from ``base`` (version N) to the full roster ``new_packed`` (N+1)."""
    _check_sorted(new_packed, RECORD_SIZE)
    body = base.body
    old = {bytes(body[i : i + RECORD_SIZE]) for i in range(0, len(body), RECORD_SIZE)}
    new = set(new_packed)
    new_tokens = {r[:TOKEN_BYTES] for r in new_packed}
    upserts = sorted(new - old)
    removals = sorted({r[:TOKEN_BYTES] for r in old} - new_tokens)
    delta_body = b"".join(upserts) + b"".join(removals)
    signed = _common(base.version + 1, issued_at, expires_at, base.header.token_key_id)
    signed.update(
        kind="delta",
        member_count=len(new_packed),
        body_sha256=hashlib.sha256(b"".join(new_packed)).hexdigest(),
        base_version=base.version,
        base_body_sha256=base.header.body_sha256,
        upserts=len(upserts),
        removals=len(removals),
        delta_sha256=hashlib.sha256(delta_body).hexdigest(),
    )
    return _frame(signed, keys, delta_body)


def split_roster(data: Buffer) -> tuple[Any, memoryview]:
    """Parse the framing only: (envelope, body). Raises RosterError when malformed."""
    if len(data) > MAX_ROSTER_BYTES:
        raise RosterError(f"roster refused: oversized ({len(data)} bytes)")
    if len(data) < 8 or bytes(data[:4]) != MAGIC:
        raise RosterError("roster refused: malformed (not a UCR1 roster file)")
    (hlen,) = struct.unpack_from(">I", data, 4)
    if hlen > MAX_HEADER_BYTES or 8 + hlen > len(data):
        raise RosterError("roster refused: malformed (bad header length)")
    try:
        envelope = json.loads(bytes(data[8 : 8 + hlen]))
    except ValueError:
        raise RosterError("roster refused: malformed (header is not JSON)") from None
    return envelope, memoryview(data)[8 + hlen :]


def _verified_header(
    envelope: Any,
    trusted: Mapping[str, Ed25519PublicKey],
    threshold: int,
    now: datetime | None,
    installed_version: int,
) -> RosterHeader:
    try:
        signed = verify(envelope, trusted, threshold, what="roster")
    except SignatureError as exc:
        raise RosterError(f"roster refused: {exc}") from None
    try:
        kind = signed["kind"]
        if signed["type"] != "roster" or kind not in ("full", "delta"):
            raise RosterError("roster refused: malformed (not a roster)")
        delta = kind == "delta"
        header = RosterHeader(
            kind=kind,
            version=int(signed["version"]),
            issued_at=parse_iso(signed["issued_at"]),
            expires_at=parse_iso(signed["expires_at"]),
            member_count=int(signed["member_count"]),
            body_sha256=str(signed["body_sha256"]),
            token_key_id=str(signed["token_key_id"]),
            base_version=int(signed["base_version"]) if delta else None,
            base_body_sha256=str(signed["base_body_sha256"]) if delta else None,
            upserts=int(signed["upserts"]) if delta else 0,
            removals=int(signed["removals"]) if delta else 0,
            delta_sha256=str(signed["delta_sha256"]) if delta else None,
        )
        record_size = int(signed["record_size"])
    except (KeyError, TypeError, ValueError):
        raise RosterError("roster refused: malformed header") from None
    if record_size != RECORD_SIZE:
        raise RosterError(f"roster refused: record size {record_size} is not supported")
    if header.member_count < 0 or header.upserts < 0 or header.removals < 0:
        raise RosterError("roster refused: malformed header (negative count)")
    if header.version <= installed_version:
        raise RosterError(
            f"roster refused: rollback (version {header.version} is not newer than "
            f"installed version {installed_version})"
        )
    if now is not None and header.is_expired(now):
        raise RosterError(f"roster refused: expired at {iso(header.expires_at)}")
    return header


def verify_roster(
    data: Buffer,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    now: datetime | None,
    installed_version: int = 0,
    threshold: int = 1,
) -> Roster:
    """Check size, framing, signatures, version, expiry and body digest; return the Roster.

    ``data`` is a full roster, or an installed delta result (delta header + full
    body). Nothing in it is used before its signature has been checked.
    ``now=None`` skips the expiry check (re-loading the installed roster at
    start-up; the checkout judges expiry on every sale and fails closed).
    """
    envelope, body = split_roster(data)
    header = _verified_header(envelope, trusted, threshold, now, installed_version)
    if len(body) != header.member_count * RECORD_SIZE:
        raise RosterError("roster refused: body length does not match the member count")
    if hashlib.sha256(body).hexdigest() != header.body_sha256:
        raise RosterError("roster refused: body digest mismatch")
    return Roster(header, body, data)


def is_delta(data: Buffer) -> bool:
    """True when ``data`` is framed as a roster whose header says kind "delta" (unverified)."""
    try:
        envelope, _ = split_roster(data)
        return bool(envelope["signed"]["kind"] == "delta")
    except (RosterError, KeyError, TypeError):
        return False


def verify_delta(
    data: Buffer,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    now: datetime | None,
    installed_version: int = 0,
    threshold: int = 1,
) -> RosterHeader:
    """Check a delta's signature, version, expiry, counts and digest (not its base)."""
    envelope, delta_body = split_roster(data)
    header = _verified_header(envelope, trusted, threshold, now, installed_version)
    if header.kind != "delta":
        raise RosterError("roster refused: not a delta")
    if len(delta_body) != header.upserts * RECORD_SIZE + header.removals * TOKEN_BYTES:
        raise RosterError("roster refused: delta length does not match its counts")
    if hashlib.sha256(delta_body).hexdigest() != header.delta_sha256:
        raise RosterError("roster refused: delta digest mismatch")
    return header


def apply_delta(
    base: Roster,
    data: Buffer,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    now: datetime | None,
    threshold: int = 1,
) -> Roster:
    """Verify a delta against ``base`` and return the new roster, whose ``data`` is the
    file to install (delta header + full body), or raise RosterError. The result must
    hash to the digest the delta names.
    """
    header = verify_delta(
        data, trusted, now=now, installed_version=base.version, threshold=threshold
    )
    delta_body = split_roster(data)[1]
    if header.base_version != base.version or header.base_body_sha256 != base.header.body_sha256:
        raise RosterError(
            f"roster refused: delta on the wrong base (it applies to v{header.base_version}, "
            f"installed is v{base.version})"
        )
    if header.version != base.version + 1:
        raise RosterError("roster refused: a delta must lead to the next version")
    split = header.upserts * RECORD_SIZE
    ups, rems = delta_body[:split], delta_body[split:]
    changes: list[tuple[bytes, bytes | None]] = [
        (bytes(ups[i : i + TOKEN_BYTES]), bytes(ups[i : i + RECORD_SIZE]))
        for i in range(0, len(ups), RECORD_SIZE)
    ]
    changes += [(bytes(rems[i : i + TOKEN_BYTES]), None) for i in range(0, len(rems), TOKEN_BYTES)]
    changes.sort(key=lambda c: c[0])
    body, count = base.body, len(base)
    pieces: list[Buffer] = []
    pos = 0
    previous = b""
    for token, record in changes:
        if token == previous:
            raise RosterError("roster refused: delta changes one card twice")
        previous = token
        i = lower_bound(body, count, token)
        if i < pos:
            raise RosterError("roster refused: delta is not sorted")
        present = (
            i < count and bytes(body[i * RECORD_SIZE : i * RECORD_SIZE + TOKEN_BYTES]) == token
        )
        pieces.append(body[pos * RECORD_SIZE : i * RECORD_SIZE])
        if record is None and not present:
            raise RosterError("roster refused: delta removes a card the base does not have")
        if record is not None:
            pieces.append(record)
        pos = i + 1 if present else i
    pieces.append(body[pos * RECORD_SIZE :])
    new_body = b"".join(pieces)
    if len(new_body) != header.member_count * RECORD_SIZE or (
        hashlib.sha256(new_body).hexdigest() != header.body_sha256
    ):
        raise RosterError(
            f"roster refused: applying the delta does not give the digest of v{header.version}"
        )
    hlen = len(data) - len(delta_body)
    file = bytes(data[:hlen]) + new_body
    return Roster(header, memoryview(file)[hlen:], file)
