"""The union's root of trust: root metadata, role keys, thresholds, rotation (pure).

Modelled on The Update Framework (TUF specification, sections 4.3 and 5.3). The
root metadata is a signed envelope (pact.signing) whose ``signed`` part is::

    {"type": "root", "version": 1, "issued_at": "...Z", "expires_at": "...Z",
     "keys": {"<keyid>": {"keytype": "ed25519", "public": "<32-byte hex>"}},
     "roles": {"root":     {"keyids": ["<keyid>", ...], "threshold": 1},
               "roster":   {...}, "policy": {...}, "snapshot": {...},
               "audit":    {...}}}

The ``audit`` role (the key that signs audit bundles, pact.bundle) came later: root
versions made before it have no such entry and still load; :meth:`Root.has_role`
tells. Terminals do not use it.

A terminal pins root version N at enrolment. Root N+1 is accepted only when it is
signed by a threshold of root N's root keys AND a threshold of its own root keys,
and versions are walked one at a time (no jumps); enrolled again, it never goes back
to an older version (:func:`pin_again`). Revoking a role key is a new root version
without it. Nothing here touches the disk or the clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from pact.errors import SignatureError, TrustError
from pact.signing import canonical_json, key_id, load_public_key, public_bytes, sign, verify
from pact.timefmt import iso, parse_iso

ROLES = ("root", "roster", "policy", "snapshot", "audit")
OPTIONAL_ROLES = frozenset({"audit"})  # absent from root versions made before it
MAX_ROOT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Role:
    keyids: tuple[str, ...]
    threshold: int


@dataclass(frozen=True)
class Root:
    version: int
    issued_at: datetime
    expires_at: datetime
    keys: Mapping[str, Ed25519PublicKey]
    roles: Mapping[str, Role]
    data: bytes  # the envelope as received, kept to re-install or pass on

    def trusted(self, role: str) -> dict[str, Ed25519PublicKey]:
        """The public keys of ``role``, by key id (none for an optional role this
        version does not name)."""
        if role not in self.roles:
            return {}
        return {kid: self.keys[kid] for kid in self.roles[role].keyids}

    def has_role(self, role: str) -> bool:
        """False for an optional role (audit) of a root made before it."""
        return role in self.roles

    def threshold(self, role: str) -> int:
        """How many of ``role``'s keys must sign (1 for a role not named: no key can)."""
        return self.roles[role].threshold if role in self.roles else 1

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def _parse(data: bytes) -> tuple[Any, Root]:
    """Parse root metadata without checking any signature."""
    if len(data) > MAX_ROOT_BYTES:
        raise TrustError("root metadata refused: oversized")
    try:
        envelope = json.loads(data)
        signed = envelope["signed"]
        if signed["type"] != "root":
            raise TrustError("root metadata refused: not a root document")
        keys: dict[str, Ed25519PublicKey] = {}
        for kid, entry in signed["keys"].items():
            if entry["keytype"] != "ed25519":
                raise TrustError(f"root metadata refused: key type {entry['keytype']!r}")
            key = load_public_key(entry["public"])
            if key_id(key) != kid:
                raise TrustError(f"root metadata refused: key id {kid[:12]} does not match its key")
            keys[kid] = key
        roles: dict[str, Role] = {}
        for name in ROLES:
            if name in OPTIONAL_ROLES and name not in signed["roles"]:
                continue
            raw = signed["roles"][name]
            keyids = tuple(str(k) for k in raw["keyids"])
            threshold = raw["threshold"]
            if len(set(keyids)) != len(keyids):
                raise TrustError(f"root metadata refused: role {name} lists a key twice")
            if not isinstance(threshold, int) or not 1 <= threshold <= len(keyids):
                raise TrustError(f"root metadata refused: role {name} has an impossible threshold")
            unknown = [k for k in keyids if k not in keys]
            if unknown:
                raise TrustError(f"root metadata refused: role {name} names an unknown key")
            roles[name] = Role(keyids, threshold)
        root = Root(
            version=int(signed["version"]),
            issued_at=parse_iso(signed["issued_at"]),
            expires_at=parse_iso(signed["expires_at"]),
            keys=keys,
            roles=roles,
            data=bytes(data),
        )
    except TrustError:
        raise
    except (
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        OverflowError,
        RecursionError,
        SignatureError,
    ):
        raise TrustError("root metadata refused: malformed") from None
    if root.version < 1:
        raise TrustError("root metadata refused: version must be 1 or more")
    return envelope, root


def load_pinned_root(data: bytes) -> Root:
    """The root a terminal is enrolled with: it must carry a threshold of its own signatures."""
    envelope, root = _parse(data)
    try:
        verify(envelope, root.trusted("root"), root.threshold("root"), what="root metadata")
    except SignatureError as exc:
        raise TrustError(f"root metadata refused: {exc}") from None
    return root


def pin_again(pinned: Root, data: bytes) -> Root:
    """The root of a new enrolment of a terminal that already pins ``pinned``: loaded
    as :func:`load_pinned_root`, and refused when older than ``pinned`` (an old bundle
    would take the terminal back to keys a newer root revoked: a rollback)."""
    root = load_pinned_root(data)
    if root.version < pinned.version:
        raise TrustError(
            f"root metadata refused: the enrolment's root is version {root.version}, older "
            f"than version {pinned.version} which this terminal already trusts (a rollback "
            "to revoked keys): ask the union for a new enrolment bundle"
        )
    return root


def load_root_signed_by(data: bytes, keys: Mapping[str, Ed25519PublicKey]) -> Root:
    """Root metadata checked against root key(s) an auditor pins by hand."""
    envelope, root = _parse(data)
    try:
        verify(envelope, keys, root.threshold("root"), what="root metadata")
    except SignatureError as exc:
        raise TrustError(f"root metadata refused: {exc}") from None
    return root


def trust_anchor(anchor: bytes, candidates: Sequence[bytes] = ()) -> Root:
    """The root metadata an auditor trusts, from the file the auditor pins by hand.

    ``anchor`` is either a root metadata JSON (taken as pinned: it must carry its own
    threshold of signatures), or the root public key, hex or PEM; then the newest of
    ``candidates`` (root metadata versions, newest first) that this key signs is it.
    """
    if anchor.lstrip().startswith(b"{"):
        return load_pinned_root(anchor)
    text = anchor.decode(errors="replace").strip()
    if text.startswith("-----BEGIN"):
        try:
            pem = load_pem_public_key(anchor)
        except ValueError:
            raise TrustError("the trust file is not a PEM public key") from None
        if not isinstance(pem, Ed25519PublicKey):
            raise TrustError("the trust file is not an Ed25519 public key")
        key = pem
    else:
        key = load_public_key(text)
    for data in candidates:
        try:
            return load_root_signed_by(data, {key_id(key): key})
        except TrustError:
            continue
    raise TrustError("no root metadata is signed by the trusted root key")


def update_root(trusted: Root, data: bytes) -> Root:
    """Accept root version ``trusted.version + 1`` (TUF 5.3.4-5.3.6), or raise TrustError."""
    envelope, new = _parse(data)
    if new.version != trusted.version + 1:
        raise TrustError(
            f"root metadata refused: version {new.version} does not follow "
            f"trusted version {trusted.version} (roots are walked one at a time)"
        )
    try:
        verify(
            envelope,
            trusted.trusted("root"),
            trusted.threshold("root"),
            what=f"root v{new.version} (by the keys of v{trusted.version})",
        )
        verify(
            envelope,
            new.trusted("root"),
            new.threshold("root"),
            what=f"root v{new.version} (by its own keys)",
        )
    except SignatureError as exc:
        raise TrustError(f"root metadata refused: {exc}") from None
    return new


def build_root(
    *,
    version: int,
    issued_at: datetime,
    expires_at: datetime,
    role_keys: Mapping[str, list[Ed25519PublicKey]],
    thresholds: Mapping[str, int] | None = None,
    signers: list[Ed25519PrivateKey],
) -> bytes:
    """Serialise and sign root metadata. ``signers``: old and new root keys on rotation.
    An optional role (:data:`OPTIONAL_ROLES`) left out of ``role_keys`` is left out."""
    keys: dict[str, dict[str, str]] = {}
    roles: dict[str, dict[str, Any]] = {}
    for role in ROLES:
        if role in OPTIONAL_ROLES and role not in role_keys:
            continue
        ids = []
        for key in role_keys[role]:
            kid = key_id(key)
            keys[kid] = {"keytype": "ed25519", "public": public_bytes(key).hex()}
            ids.append(kid)
        roles[role] = {"keyids": ids, "threshold": (thresholds or {}).get(role, 1)}
    signed = {
        "type": "root",
        "version": version,
        "issued_at": iso(issued_at),
        "expires_at": iso(expires_at),
        "keys": keys,
        "roles": roles,
    }
    data = canonical_json(sign(signed, signers))
    _parse(data)  # refuse to sign what a terminal would refuse
    return data
