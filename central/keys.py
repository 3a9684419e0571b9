"""The union's key material on disk (an adapter).

``KEYS/root.pem``, ``roster.pem``, ``policy.pem``, ``snapshot.pem``, ``audit.pem``
    Ed25519 private keys, one per role (0600). The root key signs root metadata;
    each other key signs its own kind of document (the audit key: audit bundles,
    central.auditexport). ``audit.pem`` is missing on an install made before the
    audit role: ``unioncard keys rotate audit --root-key FILE`` adds it.
``KEYS/token.key``  32 random bytes, hex: the HMAC key that turns PANs into tokens (0600)
``KEYS/root.pub``   the root public key, hex (for auditors: ``roster verify --trust``)
``KEYS/roots/N.json``  every version of the signed root metadata, in order

A private key file or the token key readable by anyone but its owner is refused
(:func:`check_private`): the service does not start, and says which ``chmod 600``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from central.errors import CentralError
from pact.cards import ARGON2ID, DEFAULT_SCHEME, HMAC_SHA256, TokenScheme
from pact.files import atomic_write
from pact.signing import key_id, public_bytes
from pact.trust import OPTIONAL_ROLES, ROLES, Root, build_root, load_pinned_root, update_root

ROOT_LIFETIME = timedelta(days=365)


@dataclass(frozen=True)
class UnionKeys:
    # None when it is kept offline, as it should be: only `keys rotate --root-key`
    # needs it (the service and daily work sign with the online role keys)
    root: Ed25519PrivateKey | None
    roster: Ed25519PrivateKey
    policy: Ed25519PrivateKey
    snapshot: Ed25519PrivateKey
    token_key: bytes
    root_data: bytes  # the newest signed root metadata
    # signs audit bundles; None on an install made before the audit role (until
    # `keys rotate audit` adds it)
    audit: Ed25519PrivateKey | None = None
    # how card numbers become tokens (pact.cards): ``token.scheme`` beside the token
    # key; an install made before it has none, and tokens of the first scheme
    token_scheme: TokenScheme = HMAC_SHA256

    def tokenize(self, pan: str) -> bytes:
        """The member's token of ``pan`` under the union's token key and scheme."""
        return self.token_scheme.token(pan, self.token_key)

    @property
    def current_root(self) -> Root:
        return load_pinned_root(self.root_data)

    @property
    def token_key_id(self) -> str:
        return hashlib.sha256(b"unioncard token key id" + self.token_key).hexdigest()[:16]

    def role_key(self, role: str) -> Ed25519PrivateKey:
        key: Ed25519PrivateKey | None = getattr(self, role)
        if key is None:
            if role == "root":
                raise CentralError("the root key is kept offline: give it with --root-key")
            raise CentralError(
                f"the union has no {role} key yet (made before the {role} role): run "
                f"`unioncard keys rotate {role} --keys KEYS --root-key FILE` to add it"
            )
        return key

    def trusted_keys_json(self, role: str = "policy") -> dict[str, str]:
        key = self.role_key(role).public_key()
        return {key_id(key): public_bytes(key).hex()}


def _write_key(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    atomic_write(path, pem, mode=0o600)


def check_private(path: Path) -> None:
    """Refuse a secret key file that its group or others may read or write: one line
    naming the file and the ``chmod 600`` to run (a missing file is left to its use)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CentralError(
            f"the key file {path} is readable by others (mode {stat.S_IMODE(mode):04o}): "
            f"run `chmod 600 {path}`, and consider rotating the key (`unioncard keys rotate`)"
        )


def _read_key(path: Path) -> Ed25519PrivateKey:
    check_private(path)
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise CentralError(f"{path} is not an Ed25519 key")
    return key


def refuse_existing_keys(directory: Path) -> None:
    """Refuse (CentralError) when ``directory`` holds any of a union's key files: the
    root key is kept offline, as it should be, and the others still say so."""
    held = [
        name
        for name in ("root.pem", "signing.pem", "root.pub", "token.key", "roots",
                     *(f"{role}.pem" for role in ROLES))
        if (directory / name).exists()
    ]  # fmt: skip
    if held:
        raise CentralError(
            f"keys already exist in {directory} ({', '.join(sorted(held))}): refusing to "
            "overwrite them"
        )


def create_keys(
    directory: Path, *, now: datetime, token_scheme: TokenScheme = DEFAULT_SCHEME
) -> UnionKeys:
    """Create every role key, the token key (and the scheme its tokens are made by)
    and root metadata version 1."""
    refuse_existing_keys(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    keys = {role: Ed25519PrivateKey.generate() for role in ROLES}
    token_key = os.urandom(32)
    for role, key in keys.items():
        _write_key(directory / f"{role}.pem", key)
    atomic_write(directory / "token.key", token_key.hex().encode() + b"\n", mode=0o600)
    write_token_scheme(directory, token_scheme)
    atomic_write(
        directory / "root.pub",
        public_bytes(keys["root"].public_key()).hex().encode() + b"\n",
        mode=0o644,
    )
    issued = now
    root = build_root(
        version=1,
        issued_at=issued,
        expires_at=issued + ROOT_LIFETIME,
        role_keys={role: [key.public_key()] for role, key in keys.items()},
        signers=[keys["root"]],
    )
    atomic_write(directory / "roots" / "1.json", root, mode=0o644)
    return UnionKeys(
        keys["root"],
        keys["roster"],
        keys["policy"],
        keys["snapshot"],
        token_key,
        root,
        audit=keys["audit"],
        token_scheme=token_scheme,
    )


# what `unioncard keys token-scheme` offers
TOKEN_SCHEMES = {"argon2id": ARGON2ID, "hmac-sha256": HMAC_SHA256}


def write_token_scheme(directory: Path, scheme: TokenScheme) -> None:
    atomic_write(directory / "token.scheme", scheme.label.encode() + b"\n", mode=0o644)


def read_token_scheme(directory: Path) -> TokenScheme:
    """The scheme of the union's tokens: ``token.scheme``, or the first releases'
    HMAC when an install has none."""
    path = directory / "token.scheme"
    if not path.exists():
        return HMAC_SHA256
    try:
        return TokenScheme.parse(path.read_text().strip())
    except ValueError as exc:
        raise CentralError(f"{path}: {exc}: this release cannot make such tokens") from None


def root_versions(directory: Path) -> list[bytes]:
    """Every root metadata version, oldest first."""
    files = sorted((directory / "roots").glob("*.json"), key=lambda p: int(p.stem))
    return [p.read_bytes() for p in files]


ONLINE_ROLES = tuple(role for role in ROLES if role != "root")


def load_keys(directory: Path) -> UnionKeys:
    """The union's keys in ``directory``: the online role keys, the token key and the
    root metadata; the root key too when it is there (it need not be), and the key of
    an optional role (audit) when it is there (an install made before it has none)."""
    try:
        loaded: dict[str, Ed25519PrivateKey | None] = {
            role: _read_key(directory / f"{role}.pem")
            for role in ONLINE_ROLES
            if role not in OPTIONAL_ROLES or (directory / f"{role}.pem").exists()
        }
        root_file = directory / "root.pem"
        loaded["root"] = _read_key(root_file) if root_file.exists() else None
        check_private(directory / "token.key")
        token_key = bytes.fromhex((directory / "token.key").read_text().strip())
        roots = root_versions(directory)
    except FileNotFoundError as exc:
        raise CentralError(
            f"missing key file {exc.filename}: restore the union's keys folder from its "
            "backup (new keys would match neither the members' tokens nor the terminals' "
            "root); a new union makes its keys with `unioncard central init`"
        ) from None
    except ValueError as exc:
        raise CentralError(f"a key file in {directory} is damaged: {exc}") from None
    if not roots:
        raise CentralError(f"no root metadata in {directory / 'roots'}")
    roster, policy, snapshot = (loaded[role] for role in ("roster", "policy", "snapshot"))
    assert roster is not None and policy is not None and snapshot is not None
    return UnionKeys(
        loaded["root"],
        roster,
        policy,
        snapshot,
        token_key,
        roots[-1],
        audit=loaded.get("audit"),
        token_scheme=read_token_scheme(directory),
    )


def read_root_key(path: Path, current: Root) -> Ed25519PrivateKey:
    """The root key in ``path`` (kept offline), which must be the current root's."""
    try:
        key = _read_key(path)
    except FileNotFoundError:
        raise CentralError(
            f"no root key file {path}: give the file of the union's root key (kept "
            "offline) with --root-key"
        ) from None
    except ValueError as exc:
        raise CentralError(f"{path} is not a private key file: {exc}") from None
    if key_id(key.public_key()) not in current.trusted("root"):
        raise CentralError(
            f"{path} is not the union's current root key (root metadata v{current.version} "
            "names another): give the right file"
        )
    return key


def rotate(directory: Path, role: str, *, root_key: Path, now: datetime) -> int:
    """Replace ``role``'s key; sign root version N+1 without the old key. Returns N+1.
    An optional role (audit) the install does not have yet is added the same way.

    ``root_key`` is the file of the current root key, which is kept offline and asked
    for here only. A new root key signs together with the old one (TUF 5.3.4):
    terminals accept the new root only with both signatures; it is written in place
    of the old one at ``root_key`` (to go back offline). The old private key is kept
    as ``ROLE.pem.vN`` (beside it, for the root key) so an auditor can still verify
    what it signed.
    """
    if role not in ROLES:
        raise CentralError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    keys = load_keys(directory)
    current = keys.current_root
    signer = read_root_key(root_key, current)
    new_key = Ed25519PrivateKey.generate()
    role_keys = {
        r: [keys.role_key(r).public_key()]
        for r in ONLINE_ROLES
        if r not in OPTIONAL_ROLES or getattr(keys, r) is not None
    }
    role_keys["root"] = [signer.public_key()]
    role_keys[role] = [new_key.public_key()]
    signers = [signer, new_key] if role == "root" else [signer]
    issued = now
    data = build_root(
        version=current.version + 1,
        issued_at=issued,
        expires_at=issued + ROOT_LIFETIME,
        role_keys=role_keys,
        signers=signers,
    )
    update_root(current, data)  # the terminals' rule, checked before anything is written
    key_file = root_key if role == "root" else directory / f"{role}.pem"
    _write_key(key_file.with_name(key_file.name + ".new"), new_key)
    atomic_write(directory / "roots" / f"{current.version + 1}.json", data, mode=0o644)
    if key_file.exists() or role not in OPTIONAL_ROLES:  # an optional role's first key
        os.replace(key_file, key_file.with_name(f"{key_file.name}.v{current.version}"))
    os.replace(key_file.with_name(key_file.name + ".new"), key_file)
    if role == "root":
        atomic_write(
            directory / "root.pub",
            public_bytes(new_key.public_key()).hex().encode() + b"\n",
            mode=0o644,
        )
    return current.version + 1
