"""The union's key material on disk (an adapter).

``KEYS/signing.pem``  Ed25519 private key that signs rosters and policies (0600)
``KEYS/token.key``    32 random bytes, hex: the HMAC key that turns PANs into tokens (0600)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from central.errors import CentralError
from terminal.files import atomic_write
from terminal.signing import key_id, public_bytes


@dataclass(frozen=True)
class UnionKeys:
    signing: Ed25519PrivateKey
    token_key: bytes

    @property
    def signing_key_id(self) -> str:
        return key_id(self.signing.public_key())

    @property
    def token_key_id(self) -> str:
        return hashlib.sha256(b"unioncard token key id" + self.token_key).hexdigest()[:16]

    def trusted_keys_json(self) -> dict[str, str]:
        return {self.signing_key_id: public_bytes(self.signing.public_key()).hex()}


def create_keys(directory: Path) -> UnionKeys:
    if (directory / "signing.pem").exists():
        raise CentralError(f"keys already exist in {directory}: refusing to overwrite them")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    signing = Ed25519PrivateKey.generate()
    token_key = os.urandom(32)
    pem = signing.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    atomic_write(directory / "signing.pem", pem, mode=0o600)
    atomic_write(directory / "token.key", token_key.hex().encode() + b"\n", mode=0o600)
    return UnionKeys(signing, token_key)


def load_keys(directory: Path) -> UnionKeys:
    try:
        key = load_pem_private_key((directory / "signing.pem").read_bytes(), password=None)
        token_key = bytes.fromhex((directory / "token.key").read_text().strip())
    except FileNotFoundError as exc:
        raise CentralError(
            f"missing key file {exc.filename}: run `unioncard central init` first"
        ) from None
    except ValueError as exc:
        raise CentralError(f"a key file in {directory} is damaged: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CentralError(f"{directory / 'signing.pem'} is not an Ed25519 key")
    return UnionKeys(key, token_key)
