"""The auditor's tools: ``roster verify``, ``policy check``, ``quote``, ``audit verify``
and ``audit receipt``.

They read files and the shared core (pact) only: no central service, no
terminal, no card reader. An outside auditor, a merchant trying out offers and
union staff use them alike. A policy file may be any of three forms
(``pact.policy.load_policy_file``): a signed policy as terminals receive it,
its signed part on its own, or the unsigned *terms* union staff write (the
examples in config/policies/); these commands read the content, and a terminal
checks the signatures when it installs a policy. ``audit verify`` checks an audit
bundle (pact.bundle) the union exported, every signature and digest, and then runs
the audit engine over it; ``audit receipt CODE --bundle FILE`` finds a receipt's
entry in one.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from central.parallel import ForkedWorkers
from pact.basket import RuleUsage, parse_basket, parse_usage
from pact.bundle import (
    JOURNAL_EXPORT,
    Bundle,
    audit_bundle,
    find_receipt,
    pin_device_keys,
    verify_bundle,
)
from pact.discount import describe_quote, quote, quote_json
from pact.errors import BasketError, BundleError, PolicyError, TrustError
from pact.policy import Policy, describe_policy, load_policy_file
from pact.receipt import normal_code
from pact.roster import (
    Membership,
    is_delta,
    layer_changes,
    split_roster,
    verify_delta,
    verify_roster,
)
from pact.timefmt import Clock, iso, parse_moment
from pact.trust import Root, trust_anchor

file_path = click.Path(path_type=Path, dir_okay=False)


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BasketError(f"cannot read the {what} file {path}: {exc.strerror}") from None


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(read_file(path, what))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BasketError(f"{path}: the {what} file is not valid JSON ({exc})") from None


def read_policy(path: Path) -> tuple[Policy, str]:
    try:
        return load_policy_file(read_file(path, "policy"))
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def trusted_root(trust: Path) -> Root:
    """The root an auditor pins: a root JSON file, or the root public key file (hex or
    PEM) with the root metadata versions in ``roots/`` beside it."""
    folder = trust.parent.joinpath("roots")
    candidates = sorted(folder.glob("*.json"), key=lambda p: -int(p.stem))
    try:
        return trust_anchor(trust.read_bytes(), [p.read_bytes() for p in candidates])
    except TrustError as exc:
        raise TrustError(f"{exc} ({trust}; root metadata looked for in {folder})") from None


# ---------------------------------------------------------------------------- roster
@click.command("verify")
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
@click.option("--at", "at", help="Judge expiry at this time (ISO 8601 with a zone), not now.")
@click.pass_obj
def roster_verify(
    clock: Clock, file: Path, trust: Path, installed_version: int, at: str | None
) -> None:
    """Verify FILE: exit 0 and print version, members and expiry, or exit 1 with the reason."""
    try:
        now = parse_moment(at) if at is not None else clock()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
    root = trusted_root(trust)
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
    click.echo(
        f"roster v{roster.version}: {len(roster)} members; expires {iso(roster.header.expires_at)}"
    )


# ---------------------------------------------------------------------------- policy
@click.group("policy")
def policy() -> None:
    """Merchant policies: validate one and read its rules in plain words."""


@policy.command("check")
@click.argument("policy_file", metavar="POLICY", type=file_path)
def policy_check(policy_file: Path) -> None:
    """Validate POLICY and print its rules in plain words.

    POLICY is a signed policy (policy.json from a terminal or the union), its
    signed part alone, or unsigned terms (rules, exclude, combine, ...) as
    `unioncard central set-policy` takes them. Signatures are not checked here.
    """
    parsed, form = read_policy(policy_file)
    click.echo(f"{policy_file}: valid")
    for line in describe_policy(parsed, form):
        click.echo(f"  {line}")


@click.command("quote")
@click.option("--policy", "policy_file", required=True, type=file_path, help="Policy file.")
@click.option(
    "--basket",
    "basket_file",
    required=True,
    type=file_path,
    help='JSON: [{"sku": "A1", "category": "grocery", "qty": 2, "unit_price": "12.50"}, ...]',
)
@click.option("--tier", type=click.IntRange(0, 255), default=0, show_default=True)
@click.option(
    "--at",
    "at_text",
    help="When (ISO 8601); without a zone it is the policy's local time. Default: now.",
)
@click.option(
    "--usage",
    "usage_file",
    type=file_path,
    help='JSON: the member\'s use this period, {"rule-id": {"uses": 1, "amount": "15.00"}}',
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def quote_command(
    clock: Clock,
    policy_file: Path,
    basket_file: Path,
    tier: int,
    at_text: str | None,
    usage_file: Path | None,
    as_json: bool,
) -> None:
    """Price a basket for a member under a policy, line by line, with reasons.

    Auditors replay a journaled sale with its basket, tier, time and the
    member's earlier use of quota rules; merchants try out their offers.
    """
    parsed, form = read_policy(policy_file)
    try:
        basket = parse_basket(read_json(basket_file, "basket"))
    except ValueError as exc:
        raise BasketError(f"{basket_file}: {exc}") from None
    usage: dict[str, RuleUsage] = {}
    if usage_file is not None:
        try:
            usage = parse_usage(read_json(usage_file, "usage"))
        except ValueError as exc:
            raise BasketError(f"{usage_file}: {exc}") from None
        unknown = sorted(set(usage) - {r.id for r in parsed.rules})
        if unknown:
            raise BasketError(f"{usage_file}: usage names rule {unknown[0]!r}, not in the policy")
    try:
        now = parse_moment(at_text, parsed.zone) if at_text is not None else clock()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
    q = quote(basket, Membership("active", tier, None), parsed, now, usage)
    if as_json:
        click.echo(json.dumps({"at": iso(now), "tier": tier, **quote_json(q)}))
        return
    for line in describe_quote(q, parsed, form, now, tier):
        click.echo(line)


# ---------------------------------------------------------------------------- audit bundle
def read_bundle(file: Path, trust: Path) -> Bundle:
    """The bundle in ``file``, verified against the root key (or root metadata JSON) in
    ``trust``; the root metadata versions come from the bundle itself."""
    try:
        anchor = trust.read_bytes()
    except OSError as exc:
        raise TrustError(f"cannot read the trust file {trust}: {exc.strerror}") from None
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read the audit bundle {file}: {exc.strerror}") from None
    try:
        return verify_bundle(data, anchor)
    except BundleError as exc:
        raise BundleError(f"{file}: {exc}") from None


TRUST = click.option(
    "--trust",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The union's root public key file (root.pub; or a root metadata JSON).",
)


def shop_keys(given: tuple[str, ...]) -> dict[str, str]:
    """Each ``--device-key``: ``TERMINAL=FILE`` (the hex key, as ``device.pub``) or the
    shop's journal export FILE (``terminal decommission`` writes it), by terminal."""
    keys: dict[str, str] = {}
    for item in given:
        terminal_id, sep, name = item.partition("=")
        path = Path(name if sep else item)
        if sep:
            key = read_file(path, "device key").decode("utf-8", "replace").strip()
        else:
            export = read_json(path, "journal export")
            if not isinstance(export, dict) or export.get("format") != JOURNAL_EXPORT:
                raise BundleError(
                    f"{path}: not a shop's journal export ({JOURNAL_EXPORT}): give "
                    "TERMINAL=FILE for a device.pub"
                )
            terminal_id, key = str(export.get("terminal_id")), str(export.get("device_key"))
        if not re.fullmatch(r"[0-9a-fA-F]{64}", key) or not terminal_id:
            raise BundleError(f"{path}: not a device key (64 hex digits) of a named terminal")
        if keys.get(terminal_id, key.lower()) != key.lower():
            raise BundleError(f"two different device keys given for terminal {terminal_id}")
        keys[terminal_id] = key.lower()
    return keys


DEVICE_KEY = click.option(
    "--device-key",
    "device_keys",
    multiple=True,
    metavar="[TERMINAL=]FILE",
    help="A device key the shop gave you, to check the bundle's against: a shop's journal "
    "export, or TERMINAL=FILE of its device.pub (repeat for each terminal).",
)


@click.command("verify")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@TRUST
@DEVICE_KEY
def audit_verify(file: Path, trust: Path | None, device_keys: tuple[str, ...]) -> None:
    """Verify the audit bundle FILE offline (`central audit export` writes it): the root
    chain from the --trust key, the signed manifest and every part's digests, each
    policy's and roster header's signature, each terminal's enrolment record; then
    audit its entries (the chain, device signatures, card counters, every discount
    recomputed). Exit 0 and a summary when clean; 1 and one line per finding,
    `terminal=<id> seq=<n> finding=<kind> detail=<text>`; 2 when the bundle is
    malformed or a signature or digest fails, naming where."""
    if trust is None:
        raise click.UsageError("give the union's root public key with --trust")
    shops = shop_keys(device_keys)
    bundle = read_bundle(file, trust)
    try:
        pin_device_keys(bundle, shops)
    except BundleError as exc:
        raise BundleError(f"{file}: {exc}") from None
    findings = audit_bundle(bundle, ForkedWorkers())
    for finding in findings:
        click.echo(finding.line())
    if findings:
        click.echo(f"{len(findings)} findings; {bundle.summary()}", err=True)
        sys.exit(1)
    click.echo(f"clean: {bundle.summary()}; no findings")


@click.command("receipt")
@click.argument("code")
@click.option(
    "--bundle",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Look in this audit bundle (offline, with --trust), not the union's store.",
)
@TRUST
@click.option(
    "--data",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="UNIONCARD_CENTRAL_DATA",
    default=Path("central-data"),
    show_default=True,
    help="Without --bundle: the central service's data folder.",
)
@click.option(
    "--database-url",
    envvar="UNIONCARD_DATABASE_URL",
    help="Without --bundle: the union's database URL (default: SQLite in the data folder).",
)
@click.pass_context
def audit_receipt(
    ctx: click.Context,
    code: str,
    bundle: Path | None,
    trust: Path | None,
    data: Path,
    database_url: str | None,
) -> None:
    """Find the journal entry a receipt's verification CODE (like 7K2QF-3XW9M) belongs
    to, and check its device signature with the key its terminal registered: in an
    audit bundle (--bundle FILE --trust root.pub, offline; the bundle is verified
    first), or in the union's store.

    Exit 0 when found and verified; 1 when there is no such entry or it does not
    verify; 2 when the bundle does not verify.
    """
    if bundle is None:
        if trust is not None:
            raise click.UsageError("--trust goes with --bundle")
        # the union's store and its database layer: only when asked, so the offline
        # check of a bundle loads the shared core alone
        from central.cli import audit_receipt as union_receipt

        ctx.invoke(union_receipt, code=code, data=data, database_url=database_url)
        return
    if trust is None:
        raise click.UsageError("--bundle needs the union's root public key: --trust FILE")
    try:
        shown = normal_code(code)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="CODE") from None
    checks = find_receipt(read_bundle(bundle, trust), shown)
    if not checks:
        click.echo(f"error: no entry in {bundle} has the receipt code {shown}", err=True)
        sys.exit(1)
    for check in checks:
        click.echo(check.line(shown))
    if any(check.problem is not None for check in checks):
        sys.exit(1)
