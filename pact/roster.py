"""The signed member roster (format ``UCR1``): build, verify, look up, apply deltas.

Layout, byte for byte (docs/protocol.md has the full description)::

    b"UCR1"                       magic, 4 bytes
    header length                 unsigned 32-bit big-endian
    header                        canonical JSON signed envelope (pact.signing)
    body                          full: every layer of this version, oldest first;
                                  delta: only the layer it adds

    layer  = records of RECORD_SIZE bytes, sorted by token
    record = token (16) | status (1) | tier (1) | valid_until (u32 BE, days since 1970-01-01)

A version's roster is a stack of layers, like a log-structured merge tree. The
first layer holds the members; each later layer holds the records a delta added
or changed, and a record of status 0 ("removed") for each card that left. A
lookup asks the newest layer first. The header's ``signed`` part lists every
layer's record count and SHA-256, and ``body_sha256`` is the SHA-256 of those
layer digests in order, so the whole body is covered by the signature.

A delta from version N to N+1 is one new layer: its header names N's body digest
(its base) and lists N+1's layers, so applying it costs what the layer costs, and
must reproduce exactly the digest that N+1's header names. The union caps the
stack (:data:`MAX_LAYERS`, :data:`MAX_OVERLAY`) and then signs a compacted roster
of one layer, which terminals fetch in full. Lookups search the layers in place
(memory-mapped files): no per-member Python objects are made. Pure: bytes in,
values out.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import mmap
import struct
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pact.cards import DEFAULT_SCHEME, TOKEN_BYTES, TokenScheme
from pact.errors import CompactionNeededError, RosterError, SignatureError
from pact.signing import canonical_json, sign, verify
from pact.timefmt import iso, parse_iso

MAGIC = b"UCR1"
RECORD = struct.Struct(">16sBBI")
RECORD_SIZE = RECORD.size  # 22 bytes
MAX_ROSTER_BYTES = 400 * 1024 * 1024  # refuse anything larger before parsing
MAX_HEADER_BYTES = 64 * 1024
EPOCH = date(1970, 1, 1)
NO_END = 0xFFFFFFFF  # valid_until for "no end date"

STATUS_REMOVED = 0  # only in a delta layer: the card is no longer on the roster
STATUS_ACTIVE = 1
STATUS_SUSPENDED = 2
STATUS_NAMES = {STATUS_ACTIVE: "active", STATUS_SUSPENDED: "suspended"}
STATUS_CODES = {name: code for code, name in STATUS_NAMES.items()}

MAX_LAYERS = 8  # a version with more would be compacted by the union
MAX_OVERLAY = 5  # percent: delta layers together hold at most this share of the first's records

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
class Layer:
    """One layer of a version's body, as its signed header lists it."""

    records: int
    sha256: str  # hex SHA-256 of the layer's bytes


def layered_digest(layers: Iterable[Layer]) -> str:
    """A body's digest: SHA-256 over its layers' SHA-256 digests (32 bytes each), in order."""
    h = hashlib.sha256()
    for layer in layers:
        h.update(bytes.fromhex(layer.sha256))
    return h.hexdigest()


@dataclass(frozen=True)
class RosterHeader:
    kind: str  # "full" or "delta"
    version: int
    issued_at: datetime
    expires_at: datetime
    member_count: int  # members on the roster of this version
    body_sha256: str  # layered_digest(layers)
    token_key_id: str
    layers: tuple[Layer, ...]  # every layer of this version, oldest first
    base_version: int | None = None  # delta only
    base_body_sha256: str | None = None  # delta only
    token_scheme: TokenScheme = DEFAULT_SCHEME  # how a tap becomes a token (pact.cards)

    @property
    def added(self) -> Layer:
        """The layer a delta adds (the newest layer)."""
        return self.layers[-1]

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at


_PREFIX = struct.Struct(">Q")  # a token's first 8 bytes as an integer
_TOKEN = struct.Struct(">QQ")  # a whole token as two integers (compares like the bytes)


def _lower_bound(body: Buffer, count: int, target: tuple[int, int], size: int) -> int:
    """Index of the first record whose token is >= ``token`` in a sorted body.

    Tokens are HMAC outputs, so uniformly spread: interpolation on the first 8
    bytes finds the neighbourhood in two or three probes (at most four, so a skewed
    body costs a binary search, never a scan); a binary search finishes. Tokens are
    read as integers straight from the buffer, without slicing it.
    """
    first = target[0]
    lo, hi = 0, count  # answer in [lo, hi]
    key_lo, key_hi = 0, 1 << 64  # key_lo <= first < key_hi
    for _ in range(4):
        if hi - lo <= 16:
            break
        guess = lo + (first - key_lo) * (hi - lo) // (key_hi - key_lo)
        guess = min(max(guess, lo), hi - 1)
        (k,) = _PREFIX.unpack_from(body, guess * size)
        if k < first:
            lo, key_lo = guess + 1, k
        else:
            hi, key_hi = guess, k + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _TOKEN.unpack_from(body, mid * size) < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


class Roster:
    """A verified roster: a stack of layers. Build one with :func:`verify_roster`
    (and :func:`apply_delta`)."""

    def __init__(
        self,
        header: RosterHeader,
        layers: Sequence[Buffer],
        files: Sequence[Buffer],
        tokens: Sequence[list[bytes]] = (),
    ) -> None:
        if len(layers) != len(header.layers):
            raise RosterError("roster refused: malformed (layer count)")
        self.header = header
        self.layers = tuple(memoryview(b) for b in layers)
        # the files the layers live in: a full roster, then any deltas applied to it
        self.files = tuple(files)
        self._first = (self.layers[0], header.layers[0].records)
        # The later layers are small (MAX_OVERLAY): their tokens are kept as a sorted
        # list each, searched by bisect in C. ``tokens`` passes on lists already made.
        made = list(tokens[: len(self.layers) - 1])
        made += [_tokens_of(body) for body in self.layers[1 + len(made) :]]
        self._tokens = tuple(made)
        self._overlays = tuple(zip(reversed(self._tokens), reversed(self.layers[1:]), strict=True))

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def data(self) -> Buffer:
        """The newest file: a full roster, or the last delta applied (both name this
        version, its layers and its body digest)."""
        return self.files[-1]

    def remap(self, data: Buffer) -> Roster:
        """The same verified roster with its newest file served from ``data``, a copy
        of that file we wrote ourselves (e.g. memory-mapped after install): framing
        and length are checked, nothing is hashed again."""
        envelope, body = split_roster(data)
        newest = split_roster(self.data)[1]
        if len(body) != len(newest) or envelope.get("signed", {}).get("version") != self.version:
            raise RosterError("the installed roster file does not match what was verified")
        layers: Sequence[memoryview] = (
            _layer_views(body, self.header.layers)
            if len(self.files) == 1
            else (*self.layers[:-1], body)
        )
        return Roster(self.header, layers, (*self.files[:-1], data), self._tokens)

    def __len__(self) -> int:
        return self.header.member_count

    def lookup(self, token: bytes) -> Membership | None:
        """The member record for ``token``; None when it is not on the roster."""
        if len(token) != TOKEN_BYTES:
            return None
        for tokens, body in self._overlays:  # newest layer first
            i = bisect_left(tokens, token)
            if i < len(tokens) and tokens[i] == token:
                return _membership(body, i)
        body, count = self._first
        i = _lower_bound(body, count, _TOKEN.unpack(token), RECORD_SIZE)
        if i < count and body[i * RECORD_SIZE : i * RECORD_SIZE + TOKEN_BYTES] == token:
            return _membership(body, i)
        return None

    def records(self) -> Iterator[bytes]:
        """Every member's current record, in token order (the layers merged)."""
        if len(self.layers) == 1:  # a first layer holds members only
            body = self.layers[0]
            return (bytes(body[i : i + RECORD_SIZE]) for i in range(0, len(body), RECORD_SIZE))
        return _merged(self.layers)


def _merged(layers: Sequence[memoryview]) -> Iterator[bytes]:
    streams = [_keyed_records(body, -n) for n, body in enumerate(layers)]
    previous = None
    for token, _, record in heapq.merge(*streams):  # the newest layer first on a tie
        if token != previous and record[TOKEN_BYTES] != STATUS_REMOVED:
            yield record
        previous = token


def _membership(body: memoryview, i: int) -> Membership | None:
    _, status, tier, days = RECORD.unpack_from(body, i * RECORD_SIZE)
    if status == STATUS_REMOVED:
        return None
    until = None if days == NO_END else EPOCH + timedelta(days=days)
    return Membership(STATUS_NAMES.get(status, "suspended"), tier, until)


_TOKEN_ONLY = struct.Struct(f"{TOKEN_BYTES}s{RECORD_SIZE - TOKEN_BYTES}x")


def _tokens_of(body: memoryview) -> list[bytes]:
    """The tokens of a layer, in its (sorted) order."""
    return [token for (token,) in _TOKEN_ONLY.iter_unpack(body)]


def _keyed_records(body: memoryview, rank: int) -> Iterator[tuple[bytes, int, bytes]]:
    for off in range(0, len(body), RECORD_SIZE):
        record = bytes(body[off : off + RECORD_SIZE])
        yield record[:TOKEN_BYTES], rank, record


def layer_changes(layer: Buffer) -> tuple[int, int]:
    """A delta layer's (added or changed, removed) record counts."""
    removed = sum(
        1 for off in range(TOKEN_BYTES, len(layer), RECORD_SIZE) if layer[off] == STATUS_REMOVED
    )
    return len(layer) // RECORD_SIZE - removed, removed


def _layer_views(body: memoryview, layers: Sequence[Layer]) -> list[memoryview]:
    views, pos = [], 0
    for layer in layers:
        end = pos + layer.records * RECORD_SIZE
        views.append(body[pos:end])
        pos = end
    return views


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
    token_scheme: TokenScheme = DEFAULT_SCHEME,
) -> bytes:
    """Serialise and sign a full roster of one layer. Duplicate tokens are refused."""
    return sign_packed(
        sorted(r.pack() for r in records),
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        token_key_id=token_key_id,
        keys=keys,
        token_scheme=token_scheme,
    )


def _common(
    version: int,
    issued_at: datetime,
    expires_at: datetime,
    token_key_id: str,
    member_count: int,
    layers: Sequence[Layer],
    token_scheme: TokenScheme,
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
        "token_scheme": token_scheme.label,
        "token_key_id": token_key_id,
        "member_count": member_count,
        "layers": [asdict(layer) for layer in layers],
        "body_sha256": layered_digest(layers),
    }


def sign_packed(
    packed: list[bytes],
    *,
    version: int,
    issued_at: datetime,
    expires_at: datetime,
    token_key_id: str,
    keys: list[Ed25519PrivateKey],
    token_scheme: TokenScheme = DEFAULT_SCHEME,
) -> bytes:
    """Sign records already packed (``MemberRecord.pack``) and sorted: a full roster of
    one layer (also what the union signs to compact a stack of layers)."""
    _check_sorted(packed, RECORD_SIZE)
    if any(p[TOKEN_BYTES] == STATUS_REMOVED for p in packed):
        raise ValueError("a roster's first layer holds members only (status 0 is 'removed')")
    body = b"".join(packed)
    layer = Layer(len(packed), hashlib.sha256(body).hexdigest())
    signed = _common(
        version, issued_at, expires_at, token_key_id, len(packed), [layer], token_scheme
    )
    signed["kind"] = "full"
    return _frame(signed, keys, body)


def build_delta(
    base: Roster,
    new_packed: list[bytes],
    *,
    issued_at: datetime,
    expires_at: datetime,
    keys: list[Ed25519PrivateKey],
    max_overlay: int | None = MAX_OVERLAY,
) -> tuple[bytes, bytes]:
    """Version N+1 as one more layer on ``base`` (version N), whose members become
    ``new_packed`` (packed, sorted): ``(delta, full)``, the delta from N and the full
    roster of N+1. Both name the same layers and body digest.

    Raises :class:`CompactionNeededError` when the stack would grow past
    :data:`MAX_LAYERS` layers, or its later layers past ``max_overlay`` percent of
    the first layer's records (None: no such limit). Lookups search every layer;
    a compacted roster is one search, and as small as its members.
    """
    _check_sorted(new_packed, RECORD_SIZE)
    old = set(base.records())
    new = set(new_packed)
    gone = {r[:TOKEN_BYTES] for r in old} - {r[:TOKEN_BYTES] for r in new}
    removed = RECORD.pack(b"", STATUS_REMOVED, 0, 0)[TOKEN_BYTES:]
    layer_records = sorted([*(new - old), *(token + removed for token in gone)])
    first = base.header.layers[0].records
    overlay = sum(layer.records for layer in base.header.layers[1:]) + len(layer_records)
    too_big = max_overlay is not None and overlay * 100 > first * max_overlay
    if len(base.layers) >= MAX_LAYERS or too_big:
        raise CompactionNeededError(
            f"roster v{base.version} already has {len(base.layers)} layers and "
            f"{overlay:,} changed records over {first:,}: sign a full roster instead"
        )
    layer_body = b"".join(layer_records)
    layers = (
        *base.header.layers,
        Layer(len(layer_records), hashlib.sha256(layer_body).hexdigest()),
    )
    signed = _common(
        base.version + 1,
        issued_at,
        expires_at,
        base.header.token_key_id,
        len(new),
        layers,
        base.header.token_scheme,
    )
    full = _frame({**signed, "kind": "full"}, keys, b"".join([*base.layers, layer_body]))
    delta = _frame(
        {
            **signed,
            "kind": "delta",
            "base_version": base.version,
            "base_body_sha256": base.header.body_sha256,
        },
        keys,
        layer_body,
    )
    return delta, full


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
    except (ValueError, RecursionError):
        raise RosterError("roster refused: malformed (header is not JSON)") from None
    return envelope, memoryview(data)[8 + hlen :]


def _layers(signed: Mapping[str, Any]) -> tuple[Layer, ...]:
    raw = signed["layers"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LAYERS:
        raise ValueError("layers")
    layers = tuple(Layer(int(item["records"]), str(item["sha256"])) for item in raw)
    for layer in layers:
        if layer.records < 0 or len(layer.sha256) != 64:
            raise ValueError("layer")
        bytes.fromhex(layer.sha256)
    return layers


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
            layers=_layers(signed),
            base_version=int(signed["base_version"]) if delta else None,
            base_body_sha256=str(signed["base_body_sha256"]) if delta else None,
            token_scheme=_scheme(signed["token_scheme"]),
        )
        record_size = int(signed["record_size"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise RosterError("roster refused: malformed header") from None
    if record_size != RECORD_SIZE:
        raise RosterError(f"roster refused: record size {record_size} is not supported")
    if header.member_count < 0:
        raise RosterError("roster refused: malformed header (negative count)")
    if layered_digest(header.layers) != header.body_sha256:
        raise RosterError("roster refused: malformed header (layers do not give the body digest)")
    if delta and len(header.layers) < 2:
        raise RosterError("roster refused: malformed header (a delta adds a layer to a base)")
    if header.version <= installed_version:
        raise RosterError(
            f"roster refused: rollback (version {header.version} is not newer than "
            f"installed version {installed_version})"
        )
    if now is not None and header.is_expired(now):
        raise RosterError(f"roster refused: expired at {iso(header.expires_at)}")
    return header


def _scheme(label: object) -> TokenScheme:
    """The header's token scheme; a scheme this release does not know is refused in one
    line that says what to do (the union signed it for newer terminals)."""
    if not isinstance(label, str):
        raise TypeError("token_scheme")
    try:
        return TokenScheme.parse(label)
    except ValueError as exc:
        raise RosterError(
            f"roster refused: {exc}: update the terminal's software (unioncard) and sync again"
        ) from None


def verify_roster(
    data: Buffer,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    now: datetime | None,
    installed_version: int = 0,
    threshold: int = 1,
) -> Roster:
    """Check size, framing, signatures, version, expiry and every layer's digest of a
    full roster; return the Roster. Nothing in ``data`` is used before its signature
    has been checked. ``now=None`` skips the expiry check (re-loading the installed
    roster at start-up; the checkout judges expiry on every sale and fails closed).
    """
    envelope, body = split_roster(data)
    header = _verified_header(envelope, trusted, threshold, now, installed_version)
    if header.kind != "full":
        raise RosterError("roster refused: a delta, not a full roster")
    if len(body) != sum(layer.records for layer in header.layers) * RECORD_SIZE:
        raise RosterError("roster refused: body length does not match the layers' records")
    layers = _layer_views(body, header.layers)
    for view, layer in zip(layers, header.layers, strict=True):
        if hashlib.sha256(view).hexdigest() != layer.sha256:
            raise RosterError("roster refused: body digest mismatch")
    return Roster(header, layers, (data,))


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
    """Check a delta's signature, version, expiry and the digest of the layer it adds
    (not its base: :func:`apply_delta` does)."""
    return _checked_delta(data, trusted, now, installed_version, threshold)[0]


def _checked_delta(
    data: Buffer,
    trusted: Mapping[str, Ed25519PublicKey],
    now: datetime | None,
    installed_version: int,
    threshold: int,
) -> tuple[RosterHeader, memoryview]:
    envelope, layer = split_roster(data)
    header = _verified_header(envelope, trusted, threshold, now, installed_version)
    if header.kind != "delta":
        raise RosterError("roster refused: not a delta")
    if len(layer) != header.added.records * RECORD_SIZE:
        raise RosterError("roster refused: delta length does not match its records")
    if hashlib.sha256(layer).hexdigest() != header.added.sha256:
        raise RosterError("roster refused: delta digest mismatch")
    if layered_digest(header.layers[:-1]) != header.base_body_sha256:
        raise RosterError("roster refused: malformed header (base layers and base digest differ)")
    return header, layer


def apply_delta(
    base: Roster,
    data: Buffer,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    now: datetime | None,
    threshold: int = 1,
) -> Roster:
    """Verify a delta against ``base`` and return the new roster (``base``'s layers and
    the delta's), or raise RosterError. The result's layers must give exactly the body
    digest that the delta's signed header names for the new version.
    """
    header, layer = _checked_delta(data, trusted, now, base.version, threshold)
    if header.base_version != base.version or header.base_body_sha256 != base.header.body_sha256:
        raise RosterError(
            f"roster refused: delta on the wrong base (it applies to v{header.base_version}, "
            f"installed is v{base.version})"
        )
    if header.version != base.version + 1:
        raise RosterError("roster refused: a delta must lead to the next version")
    if header.layers[:-1] != base.header.layers:
        raise RosterError("roster refused: delta on the wrong base (its layers differ)")
    if header.token_key_id != base.header.token_key_id:
        raise RosterError("roster refused: a delta cannot change the token key (fetch in full)")
    if header.token_scheme != base.header.token_scheme:
        raise RosterError("roster refused: a delta cannot change the token scheme (fetch in full)")
    return Roster(
        header, (*base.layers, layer), (*base.files, data), (*base._tokens, _tokens_of(layer))
    )
