"""Device signatures on journal entries (pure).

Each terminal holds its own Ed25519 key (made at enrolment; the union records the
public key). The journal signs every entry over its hash::

    sig = Ed25519-sign(device key, b"unioncard journal entry v1\\x00" || bytes(hash))

Because each hash covers the previous one, the newest entry's signature vouches
for every entry before it: the central service checks the chain and that one
signature per upload; an auditor checks them all. A verifier needs only the
entries and the device's public key (docs/protocol.md, "Device signatures").

The signing is behind :class:`Signer`, so that a secure element (an ATECC608, a
TPM through PKCS#11) can hold the key later; :class:`KeySigner` holds it in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from pact.errors import DeviceSignatureError, SignatureError
from pact.sale import Sale
from pact.signing import key_id, load_public_key, public_bytes

CONTEXT = b"unioncard journal entry v1\x00"
SIGNATURE_HEX = 128  # an Ed25519 signature: 64 bytes


class Signer(Protocol):
    """Signs with the terminal's device key, wherever that key lives."""

    def public_key(self) -> Ed25519PublicKey: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclasses.dataclass(frozen=True)
class KeySigner:
    """A :class:`Signer` over a key in memory (loaded from the terminal's key file)."""

    key: Ed25519PrivateKey

    def public_key(self) -> Ed25519PublicKey:
        return self.key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    def __repr__(self) -> str:  # never the key
        return f"KeySigner(key_id={key_id(self.public_key())[:16]})"


def message(entry_hash: str) -> bytes:
    """What the device signs for the entry whose hash is ``entry_hash`` (hex)."""
    return CONTEXT + bytes.fromhex(entry_hash)


def sign_entry(signer: Signer, sale: Sale) -> Sale:
    """``sale`` (hashed) with its device signature."""
    return dataclasses.replace(sale, sig=signer.sign(message(sale.hash)).hex())


def public_key_hex(key: Ed25519PublicKey) -> str:
    return public_bytes(key).hex()


def device_key(text: str) -> Ed25519PublicKey:
    """A device's public key from its hex form; SignatureError when it is not one."""
    if not isinstance(text, str) or len(text) != 64:
        raise SignatureError("a device key is 64 hex digits (an Ed25519 public key)")
    return load_public_key(text)


def check_signature(key: Ed25519PublicKey, sale: Sale) -> None:
    """Raise :class:`DeviceSignatureError` naming the sale unless its signature verifies."""
    if sale.sig is None:
        raise DeviceSignatureError(f"sale {sale.seq} has no device signature")
    try:
        signature = bytes.fromhex(sale.sig)
        if len(signature) != SIGNATURE_HEX // 2:
            raise ValueError("not an Ed25519 signature")
        # libsodium's verify: twice OpenSSL's speed, the audit checking every entry
        # (docs/benchmarks.md); the same equation, and stricter (it also refuses
        # small-order keys and points, which no honest device key is)
        crypto_sign_open(signature + message(sale.hash), public_bytes(key))
    except (CryptoError, ValueError):
        raise DeviceSignatureError(
            f"sale {sale.seq}: the device signature does not verify (the entry was "
            "changed or signed by another key)"
        ) from None


def check_signatures(key: Ed25519PublicKey, sales: Iterable[Sale]) -> int:
    """Check every sale's signature; return how many. Raises on the first bad one."""
    count = 0
    for sale in sales:
        check_signature(key, sale)
        count += 1
    return count
