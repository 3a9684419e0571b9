"""One-time enrolment codes (pure): their form, and what the terminal signs with its new
device key when it uses one.

A code is 20 characters of base32 (100 random bits) shown in groups of four
(``K7QM-3XRT-...``); case, spaces and dashes do not matter. The union keeps only its
SHA-256. The terminal makes its device key first and sends, with the code, its public
key and an Ed25519 signature over::

    b"unioncard enrolment v1\\x00" || normal code || b"\\x00" || central URL

so the union registers the key of the device that holds the code, and a repeat of the
same request (an answer lost on the way) can be told from another device trying a code
already used: the same key, signing again, gets a new secret; another key gets nothing.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pact.device import Signer
from pact.errors import SignatureError

CODE_CHARS = 20
GROUP = 4
ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
CONTEXT = b"unioncard enrolment v1\x00"


def format_code(random_bytes: bytes) -> str:
    """The code for 12.5 bytes of randomness (give 13: the rest is cut), grouped."""
    text = base64.b32encode(random_bytes).decode()[:CODE_CHARS]
    if len(text) < CODE_CHARS:
        raise ValueError("an enrolment code needs 13 random bytes")
    return "-".join(text[i : i + GROUP] for i in range(0, CODE_CHARS, GROUP))


def normal_code(text: str) -> str | None:
    """The code as the union keeps it (capitals, no spaces or dashes); None when it
    cannot be one."""
    code = "".join(text.split()).replace("-", "").upper()
    if len(code) != CODE_CHARS or not set(code) <= ALPHABET:
        return None
    return code


def code_digest(code: str) -> str:
    """What the union keeps of a (normal) code."""
    return hashlib.sha256(b"unioncard enrolment code\x00" + code.encode()).hexdigest()


def request_message(code: str, central_url: str) -> bytes:
    return CONTEXT + code.encode() + b"\x00" + central_url.encode()


def sign_request(signer: Signer, code: str, central_url: str) -> str:
    """The device's signature over its enrolment request (hex)."""
    return signer.sign(request_message(code, central_url)).hex()


def check_request(key: Ed25519PublicKey, signature: str, code: str, central_url: str) -> None:
    """SignatureError unless ``signature`` is the device's over this request."""
    try:
        key.verify(bytes.fromhex(signature), request_message(code, central_url))
    except (InvalidSignature, ValueError):
        raise SignatureError(
            "the enrolment request's signature does not verify with its device key"
        ) from None
