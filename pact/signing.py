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

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pact.errors import SignatureError


def canonical_json(value: Any) -> bytes:
    """Deterministic bytes for ``value``: the exact bytes that get signed or hashed."""
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
