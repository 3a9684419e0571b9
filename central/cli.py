"""The union's commands: ``unioncard central ...``, ``unioncard keys ...`` and
``unioncard roster build``.

Each command parses its options, calls one function of the union's service and
prints the result. The clock is the one ``unioncard.cli.main`` made, passed as
click's context object.
"""

from __future__ import annotations

import functools
import json
import secrets
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO, TypeVar
from zoneinfo import ZoneInfo

import click

from central import policies
from central.auditexport import export_bundle
from central.closing import close_exits
from central.errors import ConflictError, InputError, NotFoundError
from central.fleet import fleet_table
from central.keys import (
    TOKEN_SCHEMES,
    create_keys,
    finish_rotation,
    load_keys,
    refuse_existing_keys,
    rotate,
    write_token_scheme,
)
from central.migrate import PRE_MIGRATIONS
from central.parallel import ForkedWorkers
from central.partners import draft_review
from central.serve import check_listen, run_gunicorn
from central.service import CentralPaths, Union, build_roster_file
from central.statement import (
    UNION_TIMEZONE,
    provisional_line,
    statement_csv,
    statement_html,
    statement_lines,
)
from central.store import Store, settlement_table
from pact.chain import entry_hash
from pact.device import check_signature, device_key
from pact.errors import CompactionNeededError, DeviceSignatureError, SignatureError
from pact.event import EVENT
from pact.files import atomic_write
from pact.money import fen
from pact.receipt import normal_code
from pact.timefmt import Clock, iso, parse_moment

F = TypeVar("F", bound=Callable[..., Any])
OUT_FILE = click.Path(path_type=Path, dir_okay=False)
ROOT_OFFLINE = (
    "move {key} offline now (a USB stick in a safe): the service and daily work do "
    "not need it; `unioncard keys rotate ... --root-key FILE` asks for it"
)


def central_options(command: F) -> F:
    """``--data`` and ``--database-url``: the command gets ``paths`` and ``database_url``."""

    @functools.wraps(command)
    def wrapper(data: Path, database_url: str | None, **kwargs: Any) -> Any:
        return command(paths=CentralPaths(data), database_url=database_url, **kwargs)

    wrapper = click.option(
        "--database-url",
        envvar="UNIONCARD_DATABASE_URL",
        help="SQLAlchemy URL (default: SQLite in the data folder), e.g. postgresql://host/db",
    )(wrapper)
    wrapper = click.option(
        "--data",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="UNIONCARD_CENTRAL_DATA",
        default=Path("central-data"),
        show_default=True,
        help="The central service's data folder (keys; the SQLite database).",
    )(wrapper)
    return wrapper  # type: ignore[return-value]


def duration(text: str) -> timedelta:
    """``72h``, ``3d``, ``90m``, ``30s``: a lifetime typed by a person, at most
    :data:`LONGEST` (a signed file valid longer would outlive every key it names)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value, unit = int(text[:-1]), text[-1]
        if value <= 0 or unit not in units:
            raise ValueError
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r}: use a number and a unit, like 72h or 3d") from None
    if value * units[unit] > LONGEST.total_seconds():
        raise click.BadParameter(f"{text!r}: at most {LONGEST.days}d")
    return timedelta(seconds=value * units[unit])


LONGEST = timedelta(days=3650)
# The shortest roster `publish-roster` signs: the timer publishes one a day (00:15,
# systemd/unioncard-publish.timer) and the shops sync from 01:00 with up to 4 hours'
# random delay (unioncard-sync.timer), so a roster must outlast the day to the next one
# and the night's syncs that fetch it; a shorter one expires on the terminals first,
# and members get no discount until the next publication reaches them.
SHORTEST_ROSTER = timedelta(hours=30)


def roster_lifetime(text: str) -> timedelta:
    """A roster's ``--expires-in``: a :func:`duration` of at least :data:`SHORTEST_ROSTER`."""
    lifetime = duration(text)
    if lifetime < SHORTEST_ROSTER:
        hours = SHORTEST_ROSTER // timedelta(hours=1)
        raise click.BadParameter(
            f"{text!r}: at least {hours}h: a roster is published once a day and terminals "
            "fetch it in the night's sync, so a shorter one expires on them before the next "
            "publication reaches them (members get no discount until then)"
        )
    return lifetime


def percent_to_basis_points(text: str) -> int:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise click.BadParameter(f"{text!r} is not a percentage like 5 or 7.5") from None
    bp = value * 100
    if bp != bp.to_integral_value() or not 0 <= bp <= 10000:
        raise click.BadParameter(f"{text!r}: use 0 to 100 with at most two decimals")
    return int(bp)


# ---------------------------------------------------------------------------- central
@click.group()
def central() -> None:
    """The union's central service: members, merchants, rosters, settlement."""


@central.command("init")
@central_options
@click.pass_obj
def central_init(clock: Clock, paths: CentralPaths, database_url: str | None) -> None:
    """Create the union's keys and the database (a new union: refused over a database
    that holds one, whose tokens and terminals only its own keys match)."""
    refuse_existing_keys(paths.keys)
    if database_url is None:
        paths.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(database_url or paths.database_url)
    try:
        if store.holds_a_union():
            raise ConflictError(
                "the database already holds a union's members, merchants or sales: new keys "
                "would match neither its tokens nor its terminals; restore the keys folder "
                f"({paths.keys}) from its backup instead"
            )
    finally:
        store.close()
    create_keys(paths.keys, now=clock())
    Union.open(paths, database_url, clock).close()
    click.echo(f"created union keys and root metadata v1 in {paths.keys}")
    click.echo(ROOT_OFFLINE.format(key=paths.keys / "root.pem"))


@central.command("migrate")
@central_options
@click.pass_obj
def central_migrate(clock: Clock, paths: CentralPaths, database_url: str | None) -> None:
    """Bring the database's schema to this release's (back the database up first).

    The service and every other command refuse a database of another release's
    schema; a new, empty database needs no migrating (it is made at this release's).
    """
    if database_url is None and not paths.data_dir.is_dir():
        raise NotFoundError(
            f"the union's data folder {paths.data_dir} does not exist: give the right --data "
            "(or $UNIONCARD_CENTRAL_DATA), or --database-url"
        )
    before, after = Store.migrate(database_url or paths.database_url)
    if before == after:
        click.echo(f"the database is at revision {after}: nothing to do")
    else:
        was = "a new database" if before is None else f"revision {before}"
        was = "a database made before migrations" if before == PRE_MIGRATIONS else was
        click.echo(f"migrated the database from {was} to revision {after}")


@central.command("import-members")
@click.argument("members_csv", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--full", is_flag=True, help="The file is every member: those missing from it have left."
)
@click.option(
    "--allow-left",
    type=click.IntRange(min=0),
    help="With --full: how many members may be marked left (asked when more than a tenth).",
)
@central_options
@click.pass_obj
def central_import(
    clock: Clock,
    members_csv: Path,
    full: bool,
    allow_left: int | None,
    paths: CentralPaths,
    database_url: str | None,
) -> None:
    """Add or update members from MEMBERS.csv (member_id,pan[,status,tier,valid_until,
    district,workplace]), in one transaction: a bad line rejects the whole file, naming
    it. Each change is kept in the member history with its date. Card numbers are turned
    into keyed tokens; they are not stored. A progress bar on a terminal. A --full import
    that would mark more than a tenth of the members left is refused unless
    --allow-left gives their number."""
    if allow_left is not None and not full:
        raise click.BadParameter("--allow-left goes with --full", param_hint="--allow-left")
    size = members_csv.stat().st_size
    union = Union.open(paths, database_url, clock)
    try:
        with (
            members_csv.open(encoding="utf-8-sig", newline="") as lines,
            click.progressbar(
                length=size, label="importing", hidden=not sys.stderr.isatty(), file=sys.stderr
            ) as bar,
        ):
            read = [0, 0]  # characters read, and shown

            def counted() -> Iterator[str]:
                for line in lines:
                    read[0] += len(line)
                    yield line

            def progress(_: int) -> None:  # a chunk of members done
                bar.update(read[0] - read[1])
                read[1] = read[0]

            result = union.import_members(
                counted(), full=full, progress=progress, allow_left=allow_left
            )
    finally:
        union.close()
    click.echo(f"{result.describe()}; run `unioncard central publish-roster` to sign them")


@central.command("add-merchant")
@click.argument("merchant_id")
@click.option("--name", required=True)
@click.option("--discount", "percent", required=True, help="Member discount in percent, e.g. 5")
@click.option("--category", help="supermarket, pharmacy, cinema, salon, restaurant, travel, ...")
@click.option("--district", help="The district it is in.")
@click.option("--address", help="Its address.")
@click.option("--contact", help="A person and a telephone number.")
@central_options
@click.pass_obj
def central_add_merchant(
    clock: Clock,
    merchant_id: str,
    name: str,
    percent: str,
    category: str | None,
    district: str | None,
    address: str | None,
    contact: str | None,
    paths: CentralPaths,
    database_url: str | None,
) -> None:
    """Add a partner shop with a percentage member discount, and its registry entry."""
    bp = percent_to_basis_points(percent)
    registry = {"category": category, "district": district, "address": address}
    registry["contact"] = contact
    union = Union.open(paths, database_url, clock)
    try:
        version = union.add_merchant(merchant_id, name, bp, registry)
    finally:
        union.close()
    click.echo(f"added merchant {merchant_id} ({name}), {percent}% off; policy v{version} signed")


@central.command("admit-merchant")
@click.argument("merchant_id")
@click.option(
    "--by",
    "admitted_by",
    required=True,
    help="The console admin who admits it (`central add-user NAME --role admin`).",
)
@click.option(
    "--standard",
    "standards",
    multiple=True,
    required=True,
    help="A standard the merchant agreed to (give each with its own --standard).",
)
@central_options
@click.pass_obj
def central_admit_merchant(
    clock: Clock,
    merchant_id: str,
    admitted_by: str,
    standards: tuple[str, ...],
    paths: CentralPaths,
    database_url: str | None,
) -> None:
    """Record a merchant's admission: the standards it agreed to, as a checklist, with
    the date and the admin who admitted it."""
    union = Union.open(paths, database_url, clock)
    try:
        union.admit_merchant(merchant_id, list(standards), admitted_by)
    finally:
        union.close()
    click.echo(f"merchant {merchant_id} admitted by {admitted_by}: {len(standards)} standards")


@central.command("set-status")
@click.argument("merchant_id")
@click.argument("status", type=click.Choice(["active", "suspended", "exited"]))
@click.option("--reason", required=True, help="Why: kept in the merchant's history.")
@click.option(
    "--at",
    "effective",
    default=None,
    help="When it takes effect (ISO 8601; without a zone, the union's time): default now.",
)
@click.option(
    "--by",
    "decided_by",
    required=True,
    help="The console admin who decides it (`central add-user NAME --role admin`).",
)
@central_options
@click.pass_obj
def central_set_status(
    clock: Clock,
    merchant_id: str,
    status: str,
    reason: str,
    effective: str | None,
    decided_by: str,
    paths: CentralPaths,
    database_url: str | None,
) -> None:
    """Suspend, reinstate (active) or exit a merchant, now or at a later time.

    A new policy is signed at once with the change in it: the merchant's terminals
    learn it at their next sync and apply it at its time, and one that never syncs
    again stops discounting when its policy expires. An exit is final.
    """
    try:
        when = None if effective is None else parse_moment(effective, ZoneInfo(UNION_TIMEZONE))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
    if not reason.strip():
        raise click.BadParameter("give the reason", param_hint="--reason")
    union = Union.open(paths, database_url, clock)
    try:
        version = union.set_merchant_status(merchant_id, status, reason.strip(), when, decided_by)
    finally:
        union.close()
    at = "now" if when is None else f"from {iso(when)}"
    click.echo(f"merchant {merchant_id} is {status} {at}; policy v{version} signed")


@central.command("set-policy")
@click.argument("merchant_id")
@click.argument("policy_file", metavar="POLICY.json", type=click.Path(path_type=Path))
@click.option("--by", "drafted_by", required=True, help="The admin who drafts it.")
@central_options
@click.pass_obj
def central_set_policy(
    clock: Clock,
    merchant_id: str,
    policy_file: Path,
    drafted_by: str,
    paths: CentralPaths,
    database_url: str | None,
) -> None:
    """Draft a merchant's offers from POLICY.json: signed as its next policy version once
    a second admin approves the draft (`central approve-policy DRAFT --by NAME`).

    POLICY.json holds the terms only (rules, exclude, combine, rounding, timezone,
    holidays; see config/policies/ and config/policy.schema.json). The union adds
    the merchant, its status, the version and the expiry, and signs. Its terminals
    install the new policy at their next sync.
    """
    try:
        data = policy_file.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the policy file {policy_file}: {exc.strerror}") from None
    terms = policies.parse_terms_file(data, str(policy_file))
    union = Union.open(paths, database_url, clock)
    try:
        draft = union.draft_policy(merchant_id, terms, drafted_by)
    finally:
        union.close()
    count = len(terms["rules"])
    click.echo(
        f"merchant {merchant_id}: {count} rule{'s' if count != 1 else ''}; draft #{draft} "
        f"by {drafted_by} waits for a second admin: `unioncard central approve-policy "
        f"{draft} --by NAME`"
    )


@central.command("approve-policy")
@click.argument("draft_id", type=int)
@click.option("--by", "approved_by", required=True, help="The second admin, who approves.")
@central_options
@click.pass_obj
def central_approve_policy(
    clock: Clock, draft_id: int, approved_by: str, paths: CentralPaths, database_url: str | None
) -> None:
    """Approve a policy draft (not your own): it is signed as the merchant's next
    policy version."""
    union = Union.open(paths, database_url, clock)
    try:
        draft = union.store.draft(draft_id)
        version = union.approve_policy(draft_id, approved_by)
    finally:
        union.close()
    merchant = draft["merchant_id"] if draft else "?"
    click.echo(f"draft #{draft_id} approved by {approved_by}; {merchant} policy v{version} signed")


@central.command("drafts")
@central_options
@click.pass_obj
def central_drafts(clock: Clock, paths: CentralPaths, database_url: str | None) -> None:
    """The policy drafts waiting for a second admin: each one's terms in plain words,
    and what it changes against the merchant's policy in force (read them before
    `central approve-policy`)."""
    union = Union.open(paths, database_url, clock)
    try:
        rows = [(row, draft_review(union, row)) for row in union.store.drafts()]
    finally:
        union.close()
    for row, review in rows:
        rules = len(json.loads(row["terms"]).get("rules", []))
        click.echo(
            f"#{row['id']} {row['merchant_id']}: {rules} rules, by {row['drafted_by']} at "
            f"{row['drafted_at']}"
        )
        click.echo("  terms:")
        click.echo("".join(f"    {line}\n" for line in review.terms), nl=False)
        against = f"policy v{review.against} in force" if review.against else "no policy signed"
        click.echo(f"  changes against {against}:")
        click.echo("".join(f"    {line}\n" for line in review.changes), nl=False)
    if not rows:
        click.echo("no drafts wait")


@central.command("merchants")
@central_options
@click.pass_obj
def central_merchants(clock: Clock, paths: CentralPaths, database_url: str | None) -> None:
    """List the partner shops and their status."""
    union = Union.open(paths, database_url, clock)
    try:
        rows = [
            (r, union.store.latest_version(f"policy:{r['merchant_id']}"))
            for r in union.store.merchants()
        ]
    finally:
        union.close()
    for r, policy in rows:
        version = f"policy v{policy[0]}" if policy else "no policy"
        click.echo(f"{r['merchant_id']:<10} {r['name']:<24} {r['status']:<9} {version}")


@central.command("enrol")
@click.argument("terminal_id")
@click.option("--merchant", "merchant_id", required=True)
@click.option(
    "--url",
    "central_url",
    required=True,
    help="The central service URL the terminal uses: https (plain http only to 127.0.0.1).",
)
@click.option(
    "--ca-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The union's CA certificate (PEM) that signed the service's TLS certificate; the "
    "terminal trusts only it. Needed for an https URL.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Where to write the bundle."
)
@central_options
@click.pass_obj
def central_enrol(
    clock: Clock,
    terminal_id: str,
    merchant_id: str,
    central_url: str,
    ca_cert: Path | None,
    out: Path,
    paths: CentralPaths,
    database_url: str | None,
) -> None:
    """Register a terminal and write its enrolment bundle (keep it secret; mode 0600)."""
    if out.exists():
        raise InputError(f"{out} already exists: choose another --out or remove it")
    try:
        ca_pem = ca_cert.read_text() if ca_cert is not None else None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the CA certificate {ca_cert}: {exc}") from None
    union = Union.open(paths, database_url, clock)
    try:
        bundle = union.enrol_terminal(terminal_id, merchant_id, central_url, ca_pem)
    finally:
        union.close()
    atomic_write(out, bundle, mode=0o600)
    click.echo(f"enrolled terminal {terminal_id} for merchant {merchant_id}; bundle in {out}")


@central.command("enrol-code")
@click.argument("terminal_id")
@click.option("--merchant", "merchant_id", required=True, help="The merchant it serves.")
@central_options
@click.pass_obj
def central_enrol_code(
    clock: Clock, terminal_id: str, merchant_id: str, paths: CentralPaths, database_url: str | None
) -> None:
    """Make a one-time code that enrols TERMINAL_ID for a merchant over the network
    (`unioncard terminal enrol --central URL --code CODE` on the terminal). It works
    once, for 24 hours; only its digest is kept, so it is shown this once."""
    union = Union.open(paths, database_url, clock)
    try:
        code, expires = union.create_enrol_code(terminal_id, merchant_id)
    finally:
        union.close()
    click.echo(code)
    click.echo(
        f"enrols terminal {terminal_id} of merchant {merchant_id} once, until {iso(expires)}",
        err=True,
    )


@central.command("add-user")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["admin", "auditor", "merchant"]),
    required=True,
    help="admin: everything; auditor: reads everything; merchant: one merchant's own.",
)
@click.option("--merchant", "merchant_id", help="The merchant a merchant user belongs to.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
@central_options
@click.pass_obj
def central_add_user(
    clock: Clock,
    name: str,
    role: str,
    merchant_id: str | None,
    password_stdin: bool,
    paths: CentralPaths,
    database_url: str | None,
) -> None:
    """Add a person of the union's console (/console). Without --password-stdin a
    password is made and printed once: give it to the person."""
    made = not password_stdin
    password = secrets.token_urlsafe(12) if made else sys.stdin.readline().rstrip("\r\n")
    union = Union.open(paths, database_url, clock)
    try:
        union.add_user(name, role, merchant_id, password)
    finally:
        union.close()
    click.echo(f"added {role} {name}" + (f" of merchant {merchant_id}" if merchant_id else ""))
    if made:
        click.echo(f"password (shown once): {password}")


@central.command("unlock-user")
@click.argument("name")
@central_options
@click.pass_obj
def central_unlock_user(
    clock: Clock, name: str, paths: CentralPaths, database_url: str | None
) -> None:
    """Lift the lock of a console user's account after wrong passwords (it lifts itself
    after 15 minutes): for the person, once you know it was them."""
    union = Union.open(paths, database_url, clock)
    try:
        union.unlock_user(name)
    finally:
        union.close()
    click.echo(f"unlocked {name}: the next sign-in checks the password again")


@central.command("terminals")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per terminal, in a list.")
@central_options
@click.pass_obj
def central_terminals(
    clock: Clock, as_json: bool, paths: CentralPaths, database_url: str | None
) -> None:
    """The fleet: each terminal's merchant, last contact, the last entry the union
    holds, the roster and policy it reported at its last sync, what was pending then,
    and its warnings (silent past the offline limit, revoked, its own)."""
    union = Union.open(paths, database_url, clock)
    try:
        rows = union.fleet()
    finally:
        union.close()
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows]))
    else:
        for line in fleet_table(rows):
            click.echo(line)


@central.command("revoke-terminal")
@click.argument("terminal_id")
@click.option("--reason", required=True, help="Why: lost, stolen, the merchant exited, ...")
@central_options
@click.pass_obj
def central_revoke_terminal(
    clock: Clock, terminal_id: str, reason: str, paths: CentralPaths, database_url: str | None
) -> None:
    """Revoke a terminal: every call it makes is refused from now on, its uploads
    included; the last entry the union holds from it is recorded."""
    union = Union.open(paths, database_url, clock)
    try:
        last = union.revoke_terminal(terminal_id, reason)
    finally:
        union.close()
    click.echo(f"terminal {terminal_id} revoked; the union holds its entries up to #{last}")


@central.command("publish-roster")
@click.option(
    "--expires-in",
    default="72h",
    show_default=True,
    help="Lifetime, e.g. 72h or 3d; at least 30h (published daily, fetched in the night's "
    "syncs: a shorter roster expires on terminals before the next one reaches them).",
)
@central_options
@click.pass_obj
def central_publish(
    clock: Clock, expires_in: str, paths: CentralPaths, database_url: str | None
) -> None:
    """The union's daily job: sign the next roster of every member (a layer of
    changes, or a full one); delete the roster files no terminal can still ask for
    (older than the roster lifetime and than every live terminal's version); renew
    each policy past half its life; close the merchants whose exit took effect once
    their terminals are decommissioned (or 14 days after), writing their final
    statements under the data folder's final/."""
    lifetime = roster_lifetime(expires_in)
    union = Union.open(paths, database_url, clock)
    try:
        version, count = union.publish_roster(lifetime)
        deleted, kept = union.prune_rosters()
        renewed = union.refresh_policies()
        closed = close_exits(union, paths.data_dir / "final")
    finally:
        union.close()
    click.echo(f"signed roster v{version} with {count} members, valid for {expires_in}")
    if deleted:
        click.echo(f"deleted {deleted} old roster files no terminal can ask for; {kept} kept")
    for merchant_id, policy_version in renewed:
        click.echo(f"renewed the policy of {merchant_id}: v{policy_version}")
    for done in closed.closed:
        click.echo(
            f"closed merchant {done.merchant_id}: its terminals revoked, the final statement "
            f"({done.sales} sales, {done.first} to {done.last}) in {done.folder}"
        )
    if closed.problems:
        raise click.ClickException("; ".join(closed.problems))


@central.command("statement")
@click.option("--merchant", "merchant_id", required=True)
@click.option(
    "--from", "first", type=click.DateTime(["%Y-%m-%d"]), required=True, help="First day."
)
@click.option(
    "--to", "last", type=click.DateTime(["%Y-%m-%d"]), required=True, help="Last day (included)."
)
@click.option(
    "--csv", "csv_out", type=click.Path(path_type=Path, dir_okay=False), help="Write CSV."
)
@click.option(
    "--html",
    "html_out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a printable page.",
)
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True)
@central_options
@click.pass_obj
def central_statement(
    clock: Clock,
    merchant_id: str,
    first: datetime,
    last: datetime,
    csv_out: Path | None,
    html_out: Path | None,
    lang: str,
    paths: CentralPaths,
    database_url: str | None,
) -> None:
    """A merchant's settlement statement for the days FROM to TO (the union's time
    zone, Asia/Shanghai): by day and by discount rule, voids and refunds netted, and
    what the union pays for rules its policy says the union funds. Printed; --csv and
    --html also write it (the page in Chinese unless --lang en), each written whole
    or not at all."""
    union = Union.open(paths, database_url, clock)
    try:
        statement = union.statement(merchant_id, first.date(), last.date())
    finally:
        union.close()
    for line in statement_lines(statement):
        click.echo(line)
    provisional = provisional_line(statement)
    if provisional is not None:
        click.echo(f"warning: {provisional}", err=True)
    if csv_out is not None:
        atomic_write(csv_out, statement_csv(statement).encode("utf-8-sig"), mode=0o644)
        click.echo(f"CSV written to {csv_out}", err=True)
    if html_out is not None:
        atomic_write(html_out, statement_html(statement, lang).encode(), mode=0o644)
        click.echo(f"printable page written to {html_out}", err=True)


@central.group("audit")
def central_audit() -> None:
    """The compliance audit of a merchant's sales."""


@central_audit.command("run")
@click.option("--merchant", "merchant_id", required=True)
@click.option("--from", "first", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--to", "last", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON list of the findings.")
@click.option("--by", "run_by", default="staff", show_default=True, help="Who runs it.")
@central_options
@click.pass_obj
def central_audit_run(
    clock: Clock,
    merchant_id: str,
    first: datetime,
    last: datetime,
    as_json: bool,
    run_by: str,
    paths: CentralPaths,
    database_url: str | None,
) -> None:
    """Check the merchant's entries of the days FROM to TO (the union's days): the
    chain, the device signatures, time and card counters, every discount recomputed
    from its basket with the signed policy, the member's standing then and the
    card's earlier use, and its terminals' behaviour (silence past the offline limit,
    voids and refunds, a card's uses a day, members turned away while out of date);
    the merchant's complaints stand among them. The run and its findings are stored
    (the console's Audit page lists them). One line per finding, `terminal=<id>
    seq=<n> finding=<kind> detail=<text>`; exit status 1 when there is any."""
    union = Union.open(paths, database_url, clock)
    try:
        run_id, findings = union.run_audit(
            merchant_id, first.date(), last.date(), run_by, ForkedWorkers()
        )
    finally:
        union.close()
    if as_json:
        click.echo(json.dumps([f.as_json() for f in findings], ensure_ascii=False))
    else:
        for finding in findings:
            click.echo(finding.line())
    click.echo(f"audit run #{run_id}: {len(findings)} findings for {merchant_id}", err=True)
    if findings:
        sys.exit(1)


@central_audit.command("export")
@click.option("--merchant", "merchant_id", required=True)
@click.option("--from", "first", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--to", "last", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--out", type=OUT_FILE, required=True, help="The bundle file to write.")
@central_options
@click.pass_obj
def central_audit_export(
    clock: Clock,
    merchant_id: str,
    first: datetime,
    last: datetime,
    out: Path,
    paths: CentralPaths,
    database_url: str | None,
) -> None:
    """Write the audit bundle of the merchant's days FROM to TO (the union's days) to
    OUT: one file, signed with the audit key, that an outside auditor checks offline
    with `unioncard audit verify OUT --trust root.pub` (docs/protocol.md, "Audit
    bundle"). Written whole or not at all."""
    union = Union.open(paths, database_url, clock)
    try:
        data = export_bundle(union, merchant_id, first.date(), last.date())
    finally:
        union.close()
    atomic_write(out, data, mode=0o644)
    click.echo(f"audit bundle of {merchant_id} written to {out} ({len(data)} bytes)")


@central.group("complaint")
def central_complaint() -> None:
    """Members' complaints against merchants."""


@central_complaint.command("add")
@click.option("--merchant", "merchant_id", required=True)
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), required=True, help="When.")
@click.option("--what", required=True, help="What happened, in the member's words.")
@click.option("--last4", "pan_last4", help="The card's last four digits, if the member gave them.")
@click.option("--by", "recorded_by", default="staff", show_default=True, help="Who records it.")
@central_options
@click.pass_obj
def central_complaint_add(
    clock: Clock,
    merchant_id: str,
    day: datetime,
    what: str,
    pan_last4: str | None,
    recorded_by: str,
    paths: CentralPaths,
    database_url: str | None,
) -> None:
    """Record a member's complaint against a merchant: it stands among the merchant's
    audit findings (`central audit run`), so that an exit rests on evidence."""
    union = Union.open(paths, database_url, clock)
    try:
        number = union.add_complaint(merchant_id, day.date(), what, pan_last4, recorded_by)
    finally:
        union.close()
    click.echo(f"complaint #{number} against {merchant_id} recorded")


@central.command("settlement")
@click.option(
    "--from", "start", type=click.DateTime(["%Y-%m-%d"]), help="First day (the union's days)."
)
@click.option(
    "--to", "end", type=click.DateTime(["%Y-%m-%d"]), help="Day after the last (the union's days)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
@central_options
@click.pass_obj
def central_settlement(
    clock: Clock,
    start: datetime | None,
    end: datetime | None,
    as_json: bool,
    paths: CentralPaths,
    database_url: str | None,
) -> None:
    """Per-merchant totals of sales received: count, member sales, gross, discount, net
    (days in the union's time zone, Asia/Shanghai)."""
    if start is not None and end is not None and end <= start:
        raise click.BadParameter(
            f"{end:%Y-%m-%d} covers nothing from {start:%Y-%m-%d}: --to is the day after "
            "the last (one day: --from 2026-12-01 --to 2026-12-02)",
            param_hint="--to",
        )
    union = Union.open(paths, database_url, clock)
    try:
        rows = union.settlement(start.date() if start else None, end.date() if end else None)
    finally:
        union.close()
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows]))
    else:
        for line in settlement_table(rows):
            click.echo(line)


@central.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@central_options
@click.pass_obj
def central_serve(
    clock: Clock, host: str, port: int, paths: CentralPaths, database_url: str | None
) -> None:
    """Run the central service with gunicorn (2 workers)."""
    Union.open(paths, database_url, clock).close()  # a bad folder or database: one line, now
    check_listen(host, port)  # a port in use: one line, now
    run_gunicorn(paths.data_dir, database_url, host, port)


# ---------------------------------------------------------------------------- keys
@click.group("keys")
def keys() -> None:
    """The union's keys: root, roster, policy, snapshot and audit roles, and the token key."""


@keys.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.pass_obj
def keys_init(clock: Clock, directory: Path) -> None:
    """Create every role key, the token key and root metadata v1 in DIRECTORY.

    Private key files are readable by their owner only (0600).
    """
    create_keys(directory, now=clock())
    click.echo(f"created root, roster, policy, snapshot, audit and token keys in {directory}")
    click.echo(
        f"root metadata v1: {directory / 'roots' / '1.json'}; "
        f"root public key for auditors: {directory / 'root.pub'}"
    )
    click.echo(ROOT_OFFLINE.format(key=directory / "root.pem"))


@keys.command("rotate")
@click.argument("role", type=click.Choice(["root", "roster", "policy", "snapshot", "audit"]))
@click.option(
    "--keys",
    "directory",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
)
@click.option(
    "--root-key",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The union's root key file, kept offline (it signs the new root metadata).",
)
@click.pass_obj
def keys_rotate(clock: Clock, role: str, directory: Path, root_key: Path) -> None:
    """Replace ROLE's key (revoking the old one) with a new root metadata version,
    signed with the root key from --root-key (kept offline; nothing else needs it).

    A new root key is signed in by the old one and written in its place in the
    --root-key file (the old one kept beside it as FILE.vN): take it back offline.
    Afterwards restart the central service and re-sign what the role signs
    (`central publish-roster`, policies). `audit` on an install made before the
    audit role adds its first key (it signs audit bundles: `central audit export`).

    A rotation cut short (a power cut) after it wrote the new root metadata is
    finished by running it again: the key that root names is moved into place, and
    no other key is made.
    """
    finished = finish_rotation(directory, root_key=root_key)
    for done in finished:
        click.echo(done.describe())
    if any(done.role == role for done in finished):
        return
    version = rotate(directory, role, root_key=root_key, now=clock())
    click.echo(
        f"new {role} key; root metadata v{version} written to "
        f"{directory / 'roots' / f'{version}.json'}"
    )


@keys.command("token-scheme")
@click.argument("scheme", type=click.Choice(sorted(TOKEN_SCHEMES)))
@click.option(
    "--keys",
    "directory",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
)
def keys_token_scheme(scheme: str, directory: Path) -> None:
    """Make members' tokens by SCHEME from now on: argon2id (memory-hard, 8 MiB: a
    stolen terminal's roster costs about 3,000 times more to reverse; a new union's
    default) or hmac-sha256 (the first releases'). Then import the full members file
    (`central import-members --full MEMBERS.csv`: every member re-tokenised, in one
    transaction; about 7 ms a member a core) and publish the roster; terminals
    tokenise taps as the roster they installed says. No roster is published between
    the two steps. docs/operations.md, "Switch the token scheme".
    """
    load_keys(directory)  # the keys are there and readable
    write_token_scheme(directory, TOKEN_SCHEMES[scheme])
    click.echo(
        f"members' tokens are made by {TOKEN_SCHEMES[scheme].label} from now on: run "
        "`unioncard central import-members --full MEMBERS.csv`, then "
        "`unioncard central publish-roster`"
    )


# ---------------------------------------------------------------------------- roster build
@click.command("build")
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
@click.pass_obj
def roster_build(
    clock: Clock,
    members_csv: TextIO,
    directory: Path,
    version: int,
    expires_in: str,
    base: Path | None,
    out: Path,
    full_out: Path | None,
) -> None:
    """Turn MEMBERS.csv into a signed roster. The PAN column is consumed, never written."""
    if full_out is not None and base is None:
        raise click.BadParameter("--full-out goes with --base", param_hint="--full-out")
    if full_out is not None and _same_file(out, full_out):
        raise click.BadParameter(
            "--full-out is the --out file: give each its own", param_hint="--full-out"
        )
    for option, target in (("--out", out), ("--full-out", full_out)):
        if base is not None and target is not None and _same_file(target, base):
            raise click.BadParameter(
                f"{option} is the --base file, the previous full roster it would write over: "
                "give a new file",
                param_hint=option,
            )
    keys = load_keys(directory)
    lifetime = duration(expires_in)
    try:
        built = build_roster_file(
            keys,
            members_csv.read(),
            version,
            clock(),
            lifetime,
            base.read_bytes() if base is not None else None,
        )
    except CompactionNeededError as exc:
        raise click.UsageError(f"{exc} (leave out --base)") from None
    if built.base_version is None:
        what = f"full roster v{version} with {built.members} members"
    else:
        what = f"delta roster v{built.base_version} -> v{version} ({built.members} members after)"
    if full_out is not None and built.full is not None:
        atomic_write(full_out, built.full, mode=0o644)
        click.echo(f"wrote full roster v{version} ({built.layers} layers) to {full_out}")
    atomic_write(out, built.data, mode=0o644)
    click.echo(f"wrote {what} to {out}")


def _same_file(one: Path, other: Path) -> bool:
    """Whether two paths name one file (also through a link), when either exists."""
    try:
        return one.samefile(other)
    except OSError:  # one is not there yet
        return one.resolve() == other.resolve()


# ---------------------------------------------------------------------------- audit receipt
@click.command("receipt")
@click.argument("code")
@central_options
@click.pass_obj
def audit_receipt(clock: Clock, code: str, paths: CentralPaths, database_url: str | None) -> None:
    """Find the journal entry a receipt's verification CODE (like 7K2QF-3XW9M) belongs to,
    and check its device signature with the key the terminal registered.

    Exit 0 when found and verified; 1 when there is no such entry or it does not verify.
    """
    try:
        shown = normal_code(code)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="CODE") from None
    union = Union.open(paths, database_url, clock)
    try:
        # an event has no receipt (the terminal prints none), though its code is kept
        found = [(e, key) for e, key in union.store.by_receipt_code(shown) if e.kind != EVENT]
    finally:
        union.close()
    if not found:
        raise NotFoundError(f"no entry the union holds has the receipt code {shown}")
    bad = 0
    for entry, key in found:
        try:
            if key is None:
                raise DeviceSignatureError("its terminal registered no device key")
            if entry_hash(entry.prev_hash, entry) != entry.hash:
                raise DeviceSignatureError("altered: its fields do not give its hash")
            check_signature(device_key(key), entry)
            verdict = "device signature verified"
        except (DeviceSignatureError, SignatureError) as exc:
            verdict, bad = f"device signature does NOT verify ({exc})", bad + 1
        what = "sale" if entry.is_sale else f"{entry.kind} of sale {entry.ref_seq}"
        click.echo(
            f"{shown}: terminal {entry.terminal_id} {what} #{entry.seq} of merchant "
            f"{entry.merchant_id} at {entry.at}: card •••• {entry.pan_last4}, gross "
            f"{fen(entry.gross)}, discount {fen(entry.discount)}, net {fen(entry.net)}; {verdict}"
        )
    if bad:
        raise SystemExit(1)
