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

``keys rotate`` writes the new key beside the old one as ``ROLE.pem.new``, then root
metadata N+1 naming it, then moves it into place. A rotation cut short between the
two (a power cut) leaves a root naming a key not in place: the service refuses to
start on it, and running the rotation again finishes it (:func:`finish_rotation`).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from central.errors import CentralError
from pact.cards import ARGON2ID, DEFAULT_SCHEME, HMAC_SHA256, TokenScheme
from pact.files import atomic_write, fsync_dir
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
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise CentralError(
            f"{path} is protected by a password, which the union's commands do not ask "
            "for: keep the key without one, on its offline medium (`openssl pkey -in "
            f"{path} -out PLAIN.pem`, then give PLAIN.pem)"
        ) from None
    except UnsupportedAlgorithm as exc:
        raise CentralError(f"{path} is not an Ed25519 key ({exc})") from None
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
        roots = root_versions(directory)
        if roots:
            _refuse_interrupted(directory, roots[-1])
        loaded: dict[str, Ed25519PrivateKey | None] = {
            role: _read_key(directory / f"{role}.pem")
            for role in ONLINE_ROLES
            if role not in OPTIONAL_ROLES or (directory / f"{role}.pem").exists()
        }
        root_file = directory / "root.pem"
        loaded["root"] = _read_key(root_file) if root_file.exists() else None
        check_private(directory / "token.key")
        token_key = bytes.fromhex((directory / "token.key").read_text().strip())
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


def _pending(key_file: Path) -> Path:
    """Where ``keys rotate`` writes a new key before its root metadata names it."""
    return key_file.with_name(key_file.name + ".new")


def _refuse_interrupted(directory: Path, newest: bytes) -> None:
    """Refuse keys a rotation cut short left behind: the newest root metadata names the
    key still waiting in ``ROLE.pem.new``, not the one the service would sign with
    (what it signed, the terminals would refuse), or none (cut between its moves)."""
    waiting = [role for role in ROLES if _pending(directory / f"{role}.pem").exists()]
    if not waiting:
        return
    root = load_pinned_root(newest)
    for role in waiting:
        pending = _pending(directory / f"{role}.pem")
        # not named: a leftover of a rotation cut before it wrote its root (written over)
        if key_id(_read_key(pending).public_key()) in root.trusted(role):
            raise CentralError(
                f"`keys rotate {role}` was cut short: root metadata v{root.version} names the "
                f"key in {pending}, not the one in {directory / f'{role}.pem'}: run `unioncard "
                f"keys rotate {role} --keys {directory} --root-key FILE` again to finish it"
            )


@dataclass(frozen=True)
class Finished:
    """A rotation cut short, finished by :func:`finish_rotation`."""

    role: str
    version: int  # the root metadata version that names the key now in place
    key_file: Path
    old_file: Path | None  # where the old key is kept (an optional role's first has none)

    def describe(self) -> str:
        kept = f"; the old one kept as {self.old_file.name}" if self.old_file else ""
        offline = "; take it back offline" if self.role == "root" else ""
        return (
            f"finished the {self.role} key rotation that was cut short: root metadata "
            f"v{self.version} names the key that waited in {_pending(self.key_file).name}, "
            f"now in {self.key_file}{kept}{offline}"
        )


def finish_rotation(directory: Path, *, root_key: Path) -> list[Finished]:
    """Finish each rotation cut short (a power cut, Ctrl-C) after it wrote root metadata
    N naming the new key and before it moved that key from ``FILE.new`` into place:
    the old key is kept as ``FILE.v(N-1)``, the new one put in its place (and
    ``root.pub`` made the root's), as the rotation would have. A ``FILE.new`` that no
    root names (cut before the root was written) is left to the next rotation, which
    writes over it. ``root_key`` is where the root key is kept (offline)."""
    roots = root_versions(directory)
    if not roots:
        return []
    current = load_pinned_root(roots[-1])
    finished = []
    for role in ROLES:
        key_file = root_key if role == "root" else directory / f"{role}.pem"
        pending = _pending(key_file)
        if not pending.exists():
            continue
        if key_id(_read_key(pending).public_key()) not in current.trusted(role):
            continue
        old = _put_in_place(directory, role, key_file, current.version - 1)
        finished.append(Finished(role, current.version, key_file, old))
    return finished


def _put_in_place(directory: Path, role: str, key_file: Path, old_version: int) -> Path | None:
    """Move the new key waiting in ``FILE.new`` (which the newest root names) to
    ``FILE``, the old one (if any: an optional role's first key has none, and a cut may
    have moved it already) kept as ``FILE.v<old_version>``; a new root key's public
    key goes to ``root.pub`` first. Returns where the old key is kept."""
    pending = _pending(key_file)
    if role == "root":
        public = public_bytes(_read_key(pending).public_key())
        atomic_write(directory / "root.pub", public.hex().encode() + b"\n", mode=0o644)
    old = key_file.with_name(f"{key_file.name}.v{old_version}")
    if key_file.exists():
        os.replace(key_file, old)
    os.replace(pending, key_file)
    fsync_dir(key_file.parent)
    return old if old.exists() else None


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
    finish_rotation(directory, root_key=root_key)  # one cut short first, as it would have
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
    # the new key first, then the root naming it, then the key into place: a cut between
    # the last two is finished by the next run (finish_rotation)
    _write_key(_pending(key_file), new_key)
    atomic_write(directory / "roots" / f"{current.version + 1}.json", data, mode=0o644)
    _put_in_place(directory, role, key_file, current.version)
    return current.version + 1
