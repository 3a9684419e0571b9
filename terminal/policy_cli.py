"""`unioncard policy check`, `unioncard quote` and `unioncard central set-policy`.

For merchants, union staff and auditors. A policy file may be any of three forms
(pact.policy.load_policy_file): a signed policy as terminals receive it, its
signed part on its own, or the unsigned *terms* union staff write (the examples
in config/policies/). These commands read the content; a terminal checks the
signatures when it installs a policy. Every failure is one line naming the file,
the field and what is wrong, and exit status 1.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from pact.basket import RuleUsage, parse_basket, parse_usage
from pact.discount import Quote, quote, quote_json
from pact.errors import BasketError, PolicyError
from pact.money import fen
from pact.policy import Policy, describe_policy, load_policy_file
from pact.roster import Membership
from pact.timefmt import iso

file_path = click.Path(path_type=Path, dir_okay=False)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BasketError(f"cannot read the {what} file {path}: {exc.strerror}") from None


def _policy(path: Path) -> tuple[Policy, str]:
    try:
        return load_policy_file(_read(path, "policy"))
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(_read(path, what))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BasketError(f"{path}: the {what} file is not valid JSON ({exc})") from None


@click.group("policy")
def policy_group() -> None:
    """Merchant policies: validate one and read its rules in plain words."""


@policy_group.command("check")
@click.argument("policy_file", metavar="POLICY", type=file_path)
def policy_check(policy_file: Path) -> None:
    """Validate POLICY and print its rules in plain words.

    POLICY is a signed policy (policy.json from a terminal or the union), its
    signed part alone, or unsigned terms (rules, exclude, combine, ...) as
    `unioncard central set-policy` takes them. Signatures are not checked here.
    """
    policy, form = _policy(policy_file)
    click.echo(f"{policy_file}: valid")
    for line in describe_policy(policy, form):
        click.echo(f"  {line}")


def _moment(text: str | None, policy: Policy) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time like 2026-11-30T14:00 or 2026-11-30T06:00:00Z",
            param_hint="--at",
        ) from None
    if moment.tzinfo is None:  # a local time of the shop
        moment = moment.replace(tzinfo=policy.zone)
    return moment.astimezone(UTC)


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
def quote_cmd(
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
    policy, form = _policy(policy_file)
    try:
        basket = parse_basket(_json(basket_file, "basket"))
    except ValueError as exc:
        raise BasketError(f"{basket_file}: {exc}") from None
    usage: dict[str, RuleUsage] = {}
    if usage_file is not None:
        try:
            usage = parse_usage(_json(usage_file, "usage"))
        except ValueError as exc:
            raise BasketError(f"{usage_file}: {exc}") from None
        unknown = sorted(set(usage) - {r.id for r in policy.rules})
        if unknown:
            raise BasketError(f"{usage_file}: usage names rule {unknown[0]!r}, not in the policy")
    now = _moment(at_text, policy)
    q = quote(basket, Membership("active", tier, None), policy, now, usage)
    if as_json:
        click.echo(json.dumps({"at": iso(now), "tier": tier, **quote_json(q)}))
        return
    for line in _describe_quote(q, policy, form, now, tier):
        click.echo(line)


def _describe_quote(q: Quote, policy: Policy, form: str, now: datetime, tier: int) -> list[str]:
    local = now.astimezone(policy.zone)
    head = (
        "unsigned terms" if form == "offer" else f"policy v{policy.version} of {policy.merchant_id}"
    )
    out = [
        f"{head}; {local:%Y-%m-%d %a %H:%M} {policy.timezone} ({iso(now)}); member tier {tier}",
        f"{'sku':<16} {'category':<14} {'qty':>4} {'unit':>10} {'gross':>11} "
        f"{'discount':>10} {'net':>11}  rules",
    ]
    for lq in q.lines:
        out.append(
            f"{lq.line.sku[:16]:<16} {lq.line.category[:14]:<14} {lq.line.qty:>4} "
            f"{fen(lq.line.unit_price):>10} {fen(lq.gross):>11} {fen(lq.discount):>10} "
            f"{fen(lq.net):>11}  {', '.join(lq.rules)}"
        )
    out.append(f"gross {fen(q.gross)}, discount {fen(q.discount)}, net {fen(q.net)}")
    for rule_id, amount in q.by_rule:
        out.append(f"applied: {rule_id} {fen(amount)}")
    for reason in q.reasons:
        out.append(f"note: {reason}")
    return out


@click.command("set-policy")
@click.argument("merchant_id")
@click.argument("policy_file", metavar="POLICY.json", type=file_path)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    envvar="UNIONCARD_CENTRAL_DATA",
    default=Path("central-data"),
    show_default=True,
    help="The central service's data folder.",
)
@click.option(
    "--database-url",
    envvar="UNIONCARD_DATABASE_URL",
    help="SQLAlchemy URL (default: SQLite in the data folder), e.g. postgresql://host/db",
)
def set_policy(merchant_id: str, policy_file: Path, data: Path, database_url: str | None) -> None:
    """Set a merchant's offers from POLICY.json and sign a new policy version.

    POLICY.json holds the terms only (rules, exclude, combine, rounding, timezone,
    holidays; see config/policies/ and config/policy.schema.json). The union adds
    the merchant, its status, the version and the expiry, and signs. Its terminals
    install the new policy at their next sync.
    """
    from central import policies
    from central.service import CentralPaths, Union

    terms = policies.parse_terms_file(_read(policy_file, "policy"), str(policy_file))
    union = Union.open(CentralPaths(data), database_url, lambda: datetime.now(UTC))
    try:
        union.store.merchant(merchant_id)
        policies.save_terms(union.store, merchant_id, terms, union.clock())
        version = union.publish_policy(merchant_id)
    finally:
        union.close()
    count = len(terms["rules"])
    click.echo(
        f"merchant {merchant_id}: {count} rule{'s' if count != 1 else ''}; policy v{version} signed"
    )


def register(root: click.Group, central: click.Group) -> None:
    """Add these commands to the `unioncard` command line (terminal.cli)."""
    root.add_command(policy_group)
    root.add_command(quote_cmd)
    central.add_command(set_policy)
