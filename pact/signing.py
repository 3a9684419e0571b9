"""Signed JSON envelopes: ``{"signed": {...}, "signatures": [{"keyid", "sig"}]}``.

The shape follows The Update Framework (TUF spec, "Document formats"): the
signature covers the canonical JSON of ``signed`` (sorted keys, no spaces,
UTF-8). Keys are Ed25519; a key id is the SHA-256 of the raw 32-byte public key.
Pure: no file or network I/O here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pact.errors import SignatureError

# orjson writes what the standard library's definition below writes, ten times faster
# (the chain hashes each entry, the audit all of a merchant's year); datetimes and
# dataclasses, which orjson would write and JSON has no form for, are passed to it
# unwritten so that they fail as they do in the standard library
_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def canonical_json(value: Any) -> bytes:
    """Deterministic bytes for ``value``: the exact bytes that get signed or hashed.

    The definition is ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` in UTF-8: keys sorted by code point, no spaces, non-ASCII
    unescaped, control characters as ``\\uXXXX`` or their short escapes. Values are
    strings, whole numbers, true, false, null, lists and objects (no document here
    holds a fraction). orjson gives the same bytes for those; where it would not, the
    standard library answers: whole numbers beyond 64 bits, keys that are not strings,
    values JSON has no form for (both refuse), and NaN or infinities, which orjson
    writes as ``null`` (so an output with ``null`` in it is written again by the
    standard library, and no number can pass for a null)."""
    try:
        out = orjson.dumps(value, option=_ORJSON)
    except TypeError:  # orjson.JSONEncodeError is one
        return _stdlib_json(value)
    if b"null" in out:
        return _stdlib_json(value)
    return out


def _stdlib_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the raw public key."""
    return hashlib.sha256(public_bytes(key)).hexdigest()


def load_public_key(raw_hex: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(raw_hex))
    except ValueError as exc:
        raise SignatureError(f"not an Ed25519 public key: {raw_hex[:16]}...") from exc


def sign(signed: Mapping[str, Any], keys: list[Ed25519PrivateKey]) -> dict[str, Any]:
    """Wrap ``signed`` in an envelope signed by each of ``keys``."""
    payload = canonical_json(signed)
    signatures = [{"keyid": key_id(k.public_key()), "sig": k.sign(payload).hex()} for k in keys]
    return {"signed": dict(signed), "signatures": signatures}


def verify(
    envelope: Any,
    trusted: Mapping[str, Ed25519PublicKey],
    threshold: int = 1,
    what: str = "document",
) -> dict[str, Any]:
    """Return ``envelope["signed"]`` if at least ``threshold`` distinct trusted keys signed it.

    A key id listed twice counts once. Signatures by unknown keys are ignored.
    Raises :class:`SignatureError` naming the failure.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    if not isinstance(envelope, dict) or not isinstance(envelope.get("signed"), dict):
        raise SignatureError(f"{what} is malformed: no signed part")
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list):
        raise SignatureError(f"{what} is malformed: no signatures")
    payload = canonical_json(envelope["signed"])
    good: set[str] = set()
    for entry in sigs:
        if not isinstance(entry, dict):
            continue
        kid, sig = entry.get("keyid"), entry.get("sig")
        if not isinstance(kid, str) or not isinstance(sig, str) or kid not in trusted:
            continue
        try:
            trusted[kid].verify(bytes.fromhex(sig), payload)
        except (InvalidSignature, ValueError):
            raise SignatureError(f"{what} has a bad signature (key {kid[:12]})") from None
        good.add(kid)
    if len(good) < threshold:
        if not good:
            raise SignatureError(f"{what} is not signed by any trusted key")
        raise SignatureError(f"{what} has {len(good)} of {threshold} required signatures")
    signed: dict[str, Any] = envelope["signed"]
    return signed
