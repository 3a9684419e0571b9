"""``unioncard keys ...`` and ``unioncard roster ...``: for the union's key holders and auditors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import click

from pact.errors import SignatureError
from pact.trust import Root


def _now(at: str | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    from pact.timefmt import parse_iso

    try:
        return parse_iso(at)
    except ValueError:
        raise click.BadParameter(
            f"{at!r}: use ISO 8601 with a zone, e.g. 2026-11-28T09:30:00Z", param_hint="--at"
        ) from None


@click.group("keys")
def keys_group() -> None:
    """The union's keys: root, roster, policy and snapshot roles, and the token key."""


@keys_group.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
def keys_init(directory: Path) -> None:
    """Create every role key, the token key and root metadata v1 in DIRECTORY.

    Private key files are readable by their owner only (0600).
    """
    from central.keys import create_keys

    create_keys(directory)
    click.echo(f"created root, roster, policy, snapshot and token keys in {directory}")
    click.echo(
        f"root metadata v1: {directory / 'roots' / '1.json'}; "
        f"root public key for auditors: {directory / 'root.pub'}"
    )


@keys_group.command("rotate")
@click.argument("role", type=click.Choice(["root", "roster", "policy", "snapshot"]))
@click.option(
    "--keys",
    "directory",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
)
def keys_rotate(role: str, directory: Path) -> None:
    """Replace ROLE's key (revoking the old one) with a new root metadata version.

    A new root key is signed in by the old one. Afterwards restart the central
    service and re-sign what the role signs (`central publish-roster`, policies).
    """
    from central.keys import rotate

    version = rotate(directory, role)
    click.echo(
        f"new {role} key; root metadata v{version} written to "
        f"{directory / 'roots' / f'{version}.json'}"
    )


@click.group("roster")
def roster_group() -> None:
    """Build and verify signed member rosters offline."""


@roster_group.command("build")
@click.option(
    "--members",
    "members_csv",
    type=click.File("r", encoding="utf-8-sig"),
    required=True,
    help="member_id,pan[,status,tier,valid_until,district,workplace]",
)
@click.option(
    "--keys",
    "directory",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
)
@click.option("--version", type=click.IntRange(min=1), required=True)
@click.option("--expires-in", default="72h", show_default=True)
@click.option(
    "--base",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The previous full roster: write a delta from it (one more layer) instead.",
)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option(
    "--full-out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --base: also write the full roster of the new version (the same layers).",
)
def roster_build(
    members_csv: TextIO,
    directory: Path,
    version: int,
    expires_in: str,
    base: Path | None,
    out: Path,
    full_out: Path | None,
) -> None:
    """Turn MEMBERS.csv into a signed roster. The PAN column is consumed, never written."""
    from central.keys import load_keys
    from central.service import parse_members_csv
    from pact.errors import CompactionNeededError
    from pact.files import atomic_write
    from pact.roster import (
        MemberRecord,
        build_delta,
        sign_packed,
        verify_roster,
    )
    from terminal.cli import parse_duration

    keys = load_keys(directory)
    lifetime = parse_duration(expires_in)
    rows = parse_members_csv(members_csv.read(), keys.token_key)
    packed = sorted(
        MemberRecord(bytes.fromhex(r["token"]), r["status"], r["tier"], r["valid_until"]).pack()
        for r in rows
    )
    now = datetime.now(UTC)
    if full_out is not None and base is None:
        raise click.BadParameter("--full-out goes with --base", param_hint="--full-out")
    if base is None:
        data = sign_packed(
            packed,
            version=version,
            issued_at=now,
            expires_at=now + lifetime,
            token_key_id=keys.token_key_id,
            keys=[keys.roster],
        )
        what = f"full roster v{version} with {len(packed)} members"
    else:
        root = keys.current_root
        old = verify_roster(
            base.read_bytes(), root.trusted("roster"), now=None, threshold=root.threshold("roster")
        )
        if version != old.version + 1:
            raise click.BadParameter(
                f"a delta from v{old.version} must be v{old.version + 1}", param_hint="--version"
            )
        try:
            data, full = build_delta(
                old, packed, issued_at=now, expires_at=now + lifetime, keys=[keys.roster]
            )
        except CompactionNeededError as exc:
            raise click.UsageError(f"{exc} (leave out --base)") from None
        what = f"delta roster v{old.version} -> v{version} ({len(packed)} members after)"
        if full_out is not None:
            atomic_write(full_out, full, mode=0o644)
            click.echo(f"wrote full roster v{version} ({len(old.layers) + 1} layers) to {full_out}")
    atomic_write(out, data, mode=0o644)
    click.echo(f"wrote {what} to {out}")


def _trusted_root(trust: Path) -> Root:
    """The root metadata an auditor trusts: a root JSON file, or the newest root in the
    key folder's roots/ signed by the public key in ``trust`` (hex or PEM)."""
    from pact.errors import TrustError
    from pact.signing import key_id, load_public_key
    from pact.trust import load_pinned_root, load_root_signed_by

    raw = trust.read_bytes()
    if raw.lstrip().startswith(b"{"):
        return load_pinned_root(raw)
    text = raw.decode(errors="replace").strip()
    if text.startswith("-----BEGIN"):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        pem = load_pem_public_key(raw)
        if not isinstance(pem, Ed25519PublicKey):
            raise TrustError(f"{trust} is not an Ed25519 public key")
        key = pem
    else:
        key = load_public_key(text)
    candidates = sorted((trust.parent / "roots").glob("*.json"), key=lambda p: -int(p.stem))
    for path in candidates:
        try:
            return load_root_signed_by(path.read_bytes(), {key_id(key): key})
        except TrustError:
            continue
    raise TrustError(f"no root metadata in {trust.parent / 'roots'} is signed by {trust}")


@roster_group.command("verify")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--trust",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="The root public key file (or a root metadata JSON).",
)
@click.option(
    "--installed-version",
    type=click.IntRange(min=0),
    default=0,
    help="Refuse a roster that is not newer than this (rollback).",
)
@click.option("--at", "at", help="Judge expiry at this time (ISO 8601), not now.")
def roster_verify(file: Path, trust: Path, installed_version: int, at: str | None) -> None:
    """Verify FILE: exit 0 and print version, members and expiry, or exit 1 with the reason."""
    from pact.roster import is_delta, layer_changes, split_roster, verify_delta, verify_roster
    from pact.timefmt import iso

    now = _now(at)
    try:
        root = _trusted_root(trust)
        data = file.read_bytes()
        keys, threshold = root.trusted("roster"), root.threshold("roster")
        if is_delta(data):
            header = verify_delta(
                data, keys, now=now, installed_version=installed_version, threshold=threshold
            )
            changed, removed = layer_changes(split_roster(data)[1])
            click.echo(
                f"delta roster v{header.base_version} -> v{header.version}: "
                f"{changed} added or changed, {removed} removed, "
                f"{header.member_count} members after; expires {iso(header.expires_at)}"
            )
            return
        roster = verify_roster(
            data, keys, now=now, installed_version=installed_version, threshold=threshold
        )
    except SignatureError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(
        f"roster v{roster.version}: {len(roster)} members; expires {iso(roster.header.expires_at)}"
    )
