"""The terminal's device key on disk (an adapter).

``device.pem`` in the data folder: the Ed25519 private key made at enrolment,
readable by its owner only (0600). ``device.pub``: its public key, hex, for the
union and auditors. The daemon refuses to start when the key file is readable by
anyone else. The journal signs with it through ``pact.device.Signer``; a secure
element can stand in for :class:`pact.device.KeySigner` later.
"""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from pact.device import KeySigner, device_key, public_key_hex
from pact.errors import SignatureError
from pact.files import atomic_write
from terminal.errors import ConfigError

KEY_FILE = "device.pem"
PUBLIC_FILE = "device.pub"


def create_device_key(data_dir: Path) -> KeySigner:
    """Make the terminal's device key (once: an existing key is kept and returned)."""
    path = data_dir / KEY_FILE
    if path.exists():  # kept: the union knows it; its public half is written again if lost
        signer = load_signer(data_dir)
        if not (data_dir / PUBLIC_FILE).exists():
            public = (public_key_hex(signer.public_key()) + "\n").encode()
            atomic_write(data_dir / PUBLIC_FILE, public, mode=0o644)
        return signer
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    atomic_write(path, pem, mode=0o600)
    public = (public_key_hex(key.public_key()) + "\n").encode()
    atomic_write(data_dir / PUBLIC_FILE, public, mode=0o644)
    return KeySigner(key)


def load_public_key(data_dir: Path) -> Ed25519PublicKey:
    """The device's public key (``device.pub``: needs no secret, e.g. for an auditor)."""
    path = data_dir / PUBLIC_FILE
    try:
        return device_key(path.read_text().strip())
    except FileNotFoundError:
        raise ConfigError(f"no device public key at {path}: enrol this terminal again") from None
    except SignatureError:
        raise ConfigError(f"{path} does not hold a device public key") from None


def readable_by_others(path: Path) -> str | None:
    """The mode of the secret file ``path`` (``"0644"``) when its group or others may
    read or write it; None when it is private or missing (its use says so)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    return f"{stat.S_IMODE(mode):04o}" if mode & (stat.S_IRWXG | stat.S_IRWXO) else None


def load_signer(data_dir: Path) -> KeySigner:
    """The device key; refused when missing, damaged or readable by others."""
    path = data_dir / KEY_FILE
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no device key at {path}: it is made at enrolment; enrol this terminal again"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the device key {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the device key {path} is readable by others (mode {stat.S_IMODE(mode):04o}): "
            f"run `chmod 600 {path}`, and ask the union whether to re-enrol"
        )
    try:
        key = load_pem_private_key(data, password=None)
    except ValueError:
        raise ConfigError(f"the device key {path} is damaged: enrol this terminal again") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key: enrol this terminal again")
    return KeySigner(key)
