"""The signed member roster (format ``UCR1``): build, verify, look up.

Layout, byte for byte (docs/protocol.md has the full description)::

    b"UCR1"                       magic, 4 bytes
    header length                 unsigned 32-bit big-endian
    header                        canonical JSON signed envelope (terminal.signing)
    body                          member_count records of RECORD_SIZE bytes, sorted by token

    record = token (16) | status (1) | tier (1) | valid_until (u32 BE, days since 1970-01-01)

The header's ``signed`` part names the version, issue and expiry times, the member
count and the SHA-256 of the body, so the body is covered by the signature.
Lookups binary-search the body in place; no per-member Python objects are made.
Pure: bytes in, values out.
"""

from __future__ import annotations

import hashlib
import json
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
    version: int
    issued_at: datetime
    expires_at: datetime
    member_count: int
    body_sha256: str
    token_key_id: str

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at


class Roster:
    """A verified roster. Build one with :func:`verify_roster`."""

    def __init__(self, header: RosterHeader, body: bytes | memoryview) -> None:
        self.header = header
        self._body = memoryview(body)
        self._count = header.member_count

    @property
    def version(self) -> int:
        return self.header.version

    def __len__(self) -> int:
        return self._count

    def lookup(self, token: bytes) -> Membership | None:
        """Binary search for ``token``; None when it is not on the roster."""
        body, lo, hi = self._body, 0, self._count
        while lo < hi:
            mid = (lo + hi) // 2
            off = mid * RECORD_SIZE
            key = bytes(body[off : off + TOKEN_BYTES])
            if key < token:
                lo = mid + 1
            elif key > token:
                hi = mid
            else:
                _, status, tier, days = RECORD.unpack_from(body, off)
                until = None if days == NO_END else EPOCH + timedelta(days=days)
                return Membership(STATUS_NAMES.get(status, "suspended"), tier, until)
        return None


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


def sign_packed(
    packed: list[bytes],
    *,
    version: int,
    issued_at: datetime,
    expires_at: datetime,
    token_key_id: str,
    keys: list[Ed25519PrivateKey],
) -> bytes:
    """Sign records already packed (``MemberRecord.pack``) and sorted."""
    if version < 1:
        raise ValueError("roster version must be 1 or more")
    if expires_at <= issued_at:
        raise ValueError("a roster must expire after it is issued")
    for a, b in zip(packed, packed[1:], strict=False):
        if a[:TOKEN_BYTES] >= b[:TOKEN_BYTES]:
            raise ValueError("two members have the same card (duplicate token)")
    body = b"".join(packed)
    signed: dict[str, Any] = {
        "type": "roster",
        "kind": "full",
        "version": version,
        "issued_at": iso(issued_at),
        "expires_at": iso(expires_at),
        "member_count": len(packed),
        "record_size": RECORD_SIZE,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "token_scheme": TOKEN_SCHEME,
        "token_key_id": token_key_id,
    }
    header = canonical_json(sign(signed, keys))
    return MAGIC + struct.pack(">I", len(header)) + header + body


def split_roster(data: bytes) -> tuple[Any, memoryview]:
    """Parse the framing only: (envelope, body). Raises RosterError when malformed."""
    if len(data) > MAX_ROSTER_BYTES:
        raise RosterError(f"roster refused: oversized ({len(data)} bytes)")
    if len(data) < 8 or data[:4] != MAGIC:
        raise RosterError("roster refused: malformed (not a UCR1 roster file)")
    (hlen,) = struct.unpack_from(">I", data, 4)
    if hlen > MAX_HEADER_BYTES or 8 + hlen > len(data):
        raise RosterError("roster refused: malformed (bad header length)")
    try:
        envelope = json.loads(bytes(data[8 : 8 + hlen]))
    except ValueError:
        raise RosterError("roster refused: malformed (header is not JSON)") from None
    return envelope, memoryview(data)[8 + hlen :]


def verify_roster(
    data: bytes,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    now: datetime | None,
    installed_version: int = 0,
    threshold: int = 1,
) -> Roster:
    """Check size, framing, signatures, version, expiry and body digest; return the Roster.

    Nothing in ``data`` is used before its signature has been checked. ``now=None``
    skips the expiry check (used when re-loading the installed roster at start-up;
    the checkout judges expiry on every sale and fails closed).
    """
    envelope, body = split_roster(data)
    try:
        signed = verify(envelope, trusted, threshold, what="roster")
    except SignatureError as exc:
        raise RosterError(f"roster refused: {exc}") from None
    try:
        if signed["type"] != "roster" or signed["kind"] != "full":
            raise RosterError("roster refused: malformed (not a full roster)")
        header = RosterHeader(
            version=int(signed["version"]),
            issued_at=parse_iso(signed["issued_at"]),
            expires_at=parse_iso(signed["expires_at"]),
            member_count=int(signed["member_count"]),
            body_sha256=str(signed["body_sha256"]),
            token_key_id=str(signed["token_key_id"]),
        )
        record_size = int(signed["record_size"])
    except (KeyError, TypeError, ValueError):
        raise RosterError("roster refused: malformed header") from None
    if record_size != RECORD_SIZE:
        raise RosterError(f"roster refused: record size {record_size} is not supported")
    if header.version <= installed_version:
        raise RosterError(
            f"roster refused: rollback (version {header.version} is not newer than "
            f"installed version {installed_version})"
        )
    if now is not None and header.is_expired(now):
        raise RosterError(f"roster refused: expired at {iso(header.expires_at)}")
    if len(body) != header.member_count * RECORD_SIZE:
        raise RosterError("roster refused: body length does not match the member count")
    if hashlib.sha256(body).hexdigest() != header.body_sha256:
        raise RosterError("roster refused: body digest mismatch")
    return Roster(header, body)
