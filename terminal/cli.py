"""``unioncard``: the one command line for shops, technicians, union staff and auditors.

Every failure a person can cause or meet ends in one line on stderr that names
what is wrong and what to do, and a non-zero exit status. No tracebacks.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from pact.errors import UnioncardError
from pact.money import fen, parse_yuan
from reader.emulator import PROFILES
from reader.errors import CardError

EXPECTED = (UnioncardError, CardError)


def now_utc() -> datetime:
    return datetime.now(UTC)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def parse_duration(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value, unit = int(text[:-1]), text[-1]
        if value <= 0 or unit not in units:
            raise ValueError
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r}: use a number and a unit, like 72h or 3d") from None
    return timedelta(seconds=value * units[unit])


def percent_to_basis_points(text: str) -> int:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise click.BadParameter(f"{text!r} is not a percentage like 5 or 7.5") from None
    bp = value * 100
    if bp != bp.to_integral_value() or not 0 <= bp <= 10000:
        raise click.BadParameter(f"{text!r}: use 0 to 100 with at most two decimals")
    return int(bp)


# ---------------------------------------------------------------------------- root
@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what happens to stderr.")
def cli(verbose: bool) -> None:
    """unioncard: member discounts at partner shops for the union's member service card."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# ---------------------------------------------------------------------------- card
@cli.group()
def card() -> None:
    """Read a card, or emulate one on the virtual reader."""


@card.command("read")
@click.option("--reader", "reader_name", help="Use the reader whose name contains this text.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 600),
    default=30.0,
    show_default=True,
    help="Seconds to wait for a card.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    envvar="UNIONCARD_DATA_DIR",
    help="Terminal data folder (for the token key); without it no token is shown.",
)
def card_read(reader_name: str | None, timeout: float, as_json: bool, data: Path | None) -> None:
    """Wait for a card and print what was read (never the full card number).

    Exit codes: 0 read; 2 pcscd not running or no reader; 3 no card within the
    timeout; 4 card not supported or blocked; 5 card removed during the read.
    """
    from pact.cards import PanTokenizer
    from reader.pcsc import read_card

    token_key = None
    if data is not None:
        from terminal.state import TerminalState

        token_key = TerminalState(data).enrolment.token_key
    identity = read_card(
        reader_substring=reader_name,
        timeout=timeout,
        tokenize=PanTokenizer(token_key),
        today=now_utc().astimezone().date(),
    )
    if as_json:
        click.echo(json.dumps(identity.as_json()))
    else:
        click.echo(
            f"{identity.scheme} card •••• {identity.pan_last4}, expires {identity.expiry}, "
            f"application {identity.aid.hex().upper()}"
        )


@card.command("emulate")
@click.option("--pan", help="Card number of the emulated card (test cards only).")
@click.option(
    "--demo",
    "demo_card",
    type=click.Choice(["member", "member2", "suspended", "nonmember"]),
    help="Use one of `unioncard demo`'s cards instead of --pan.",
)
@click.option("--expiry", default="2030-12", show_default=True, help="YYYY-MM")
@click.option(
    "--profile",
    default="unionpay",
    show_default=True,
    type=click.Choice(sorted(PROFILES)),
)
@click.option("--port", default=35963, show_default=True, help="vpcd port (35963 = first reader).")
def card_emulate(
    pan: str | None, demo_card: str | None, expiry: str, profile: str, port: int
) -> None:
    """Present an emulated chip card to the vsmartcard virtual reader until Ctrl-C."""
    from reader.emulator import CardEmulator
    from terminal.demo import DEMO_CARDS

    if (pan is None) == (demo_card is None):
        fail("give exactly one of --pan or --demo")
    number = pan if pan is not None else DEMO_CARDS[str(demo_card)].pan
    try:
        emulator = CardEmulator(pan=number, expiry=expiry, profile=profile, port=port)
    except ValueError as exc:
        fail(str(exc))
    click.echo(
        f"presenting a {profile} card •••• {number[-4:]} on vpcd port {port}; Ctrl-C to remove"
    )
    try:
        emulator.run_forever()
    except ConnectionError as exc:
        fail(str(exc), 2)
    except KeyboardInterrupt:
        click.echo("card removed")


# ---------------------------------------------------------------------------- central
central_data = click.option(
    "--data",
    type=click.Path(path_type=Path),
    envvar="UNIONCARD_CENTRAL_DATA",
    default=Path("central-data"),
    show_default=True,
    help="The central service's data folder.",
)
central_db = click.option(
    "--database-url",
    envvar="UNIONCARD_DATABASE_URL",
    help="SQLAlchemy URL (default: SQLite in the data folder), e.g. postgresql://host/db",
)


def open_union(data: Path, database_url: str | None) -> Any:
    from central.service import CentralPaths, Union

    return Union.open(CentralPaths(data), database_url, now_utc)


@cli.group()
def central() -> None:
    """The union's central service: members, merchants, rosters, settlement."""


@central.command("init")
@central_data
@central_db
def central_init(data: Path, database_url: str | None) -> None:
    """Create the union's keys and the database."""
    from central.keys import create_keys
    from central.service import CentralPaths

    paths = CentralPaths(data)
    keys = create_keys(paths.keys)
    open_union(data, database_url).close()
    click.echo(f"created union keys and root metadata v1 in {paths.keys}")
    del keys


@central.command("import-members")
@click.argument("members_csv", type=click.File("r", encoding="utf-8-sig"))
@central_data
@central_db
def central_import(members_csv: Any, data: Path, database_url: str | None) -> None:
    """Add or update members from MEMBERS.csv (member_id,pan[,status,tier,valid_until,...]).

    Card numbers are turned into keyed tokens; they are not stored.
    """
    union = open_union(data, database_url)
    try:
        count = union.import_members(members_csv.read())
    finally:
        union.close()
    click.echo(f"imported {count} members; run `unioncard central publish-roster` to sign them")


@central.command("add-merchant")
@click.argument("merchant_id")
@click.option("--name", required=True)
@click.option("--discount", "percent", required=True, help="Member discount in percent, e.g. 5")
@central_data
@central_db
def central_add_merchant(
    merchant_id: str, name: str, percent: str, data: Path, database_url: str | None
) -> None:
    """Add a partner shop with a percentage member discount."""
    bp = percent_to_basis_points(percent)
    union = open_union(data, database_url)
    try:
        version = union.add_merchant(merchant_id, name, bp)
    finally:
        union.close()
    click.echo(f"added merchant {merchant_id} ({name}), {percent}% off; policy v{version} signed")


@central.command("set-status")
@click.argument("merchant_id")
@click.argument("status", type=click.Choice(["active", "suspended", "exited"]))
@central_data
@central_db
def central_set_status(merchant_id: str, status: str, data: Path, database_url: str | None) -> None:
    """Suspend, exit or re-activate a merchant.

    Its terminals stop (or resume) discounting at their next sync.
    """
    union = open_union(data, database_url)
    try:
        version = union.set_merchant_status(merchant_id, status)
    finally:
        union.close()
    click.echo(f"merchant {merchant_id} is now {status}; policy v{version} signed")


@central.command("merchants")
@central_data
@central_db
def central_merchants(data: Path, database_url: str | None) -> None:
    """List the partner shops and their status."""
    union = open_union(data, database_url)
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
    "--url", "central_url", required=True, help="The central service URL the terminal uses."
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Where to write the bundle."
)
@central_data
@central_db
def central_enrol(
    terminal_id: str,
    merchant_id: str,
    central_url: str,
    out: Path,
    data: Path,
    database_url: str | None,
) -> None:
    """Register a terminal and write its enrolment bundle (keep it secret; mode 0600)."""
    from pact.files import atomic_write

    if out.exists():
        fail(f"{out} already exists: choose another --out or remove it")
    union = open_union(data, database_url)
    try:
        bundle = union.enrol_terminal(terminal_id, merchant_id, central_url)
    finally:
        union.close()
    atomic_write(out, bundle, mode=0o600)
    click.echo(f"enrolled terminal {terminal_id} for merchant {merchant_id}; bundle in {out}")


@central.command("publish-roster")
@click.option("--expires-in", default="72h", show_default=True, help="Lifetime, e.g. 72h or 3d.")
@central_data
@central_db
def central_publish(expires_in: str, data: Path, database_url: str | None) -> None:
    """Sign a new full roster of every member."""
    lifetime = parse_duration(expires_in)
    union = open_union(data, database_url)
    try:
        version, count = union.publish_roster(lifetime)
    finally:
        union.close()
    click.echo(f"signed roster v{version} with {count} members, valid for {expires_in}")


@central.command("settlement")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), help="First day (UTC).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), help="Day after the last (UTC).")
@click.option("--json", "as_json", is_flag=True)
@central_data
@central_db
def central_settlement(
    start: datetime | None,
    end: datetime | None,
    as_json: bool,
    data: Path,
    database_url: str | None,
) -> None:
    """Per-merchant totals of sales received: count, member sales, gross, discount, net."""
    union = open_union(data, database_url)
    try:
        rows = union.settlement(start.date() if start else None, end.date() if end else None)
    finally:
        union.close()
    print_settlement(rows, as_json)


def print_settlement(rows: list[Any], as_json: bool = False) -> None:
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "merchant_id": r.merchant_id,
                        "name": r.name,
                        "status": r.status,
                        "sales": r.sales,
                        "member_sales": r.member_sales,
                        "gross_fen": r.gross,
                        "discount_fen": r.discount,
                        "net_fen": r.net,
                    }
                    for r in rows
                ]
            )
        )
        return
    click.echo(
        f"{'merchant':<10} {'name':<22} {'status':<9} {'sales':>6} {'members':>8} "
        f"{'gross':>12} {'discount':>10} {'net':>12}"
    )
    for r in rows:
        click.echo(
            f"{r.merchant_id:<10} {r.name[:22]:<22} {r.status:<9} {r.sales:>6} "
            f"{r.member_sales:>8} {fen(r.gross):>12} {fen(r.discount):>10} {fen(r.net):>12}"
        )


@central.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@central_data
@central_db
def central_serve(host: str, port: int, data: Path, database_url: str | None) -> None:
    """Run the central service with gunicorn (2 workers)."""
    from central.serve import run_gunicorn

    run_gunicorn(data, database_url, host, port)


# ---------------------------------------------------------------------------- terminal
terminal_data = click.option(
    "--data",
    type=click.Path(path_type=Path),
    envvar="UNIONCARD_DATA_DIR",
    default=Path("/var/lib/unioncard/terminal"),
    show_default=True,
    help="The terminal's data folder.",
)


def open_terminal(
    data: Path, reader_name: str | None = None, card_timeout: float = 30.0, reader: Any = None
) -> Any:
    """The terminal service with its card reader (by default a ``FreshCardReader``: each
    card insertion is read for at most one sale; its monitor starts at the first read)."""
    from reader.fresh import FreshCardReader
    from terminal.service import TerminalService

    if reader is None:
        reader = FreshCardReader(reader_name, clock=now_utc)
    return TerminalService(data, reader, now_utc, card_timeout)


@cli.group()
def terminal() -> None:
    """The shop's terminal: enrol, check out, serve the cashier page."""


@terminal.command("enrol")
@click.argument("bundle", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@terminal_data
def terminal_enrol(bundle: Path, data: Path) -> None:
    """Install the enrolment bundle the union issued for this terminal."""
    from terminal.state import TerminalState

    enrolment = TerminalState(data).enrol(bundle.read_bytes())
    click.echo(
        f"enrolled as terminal {enrolment.terminal_id} of merchant {enrolment.merchant_id}; "
        "now run `unioncard sync`"
    )


@terminal.command("install-update")
@click.option(
    "--snapshot",
    "snapshot",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="The signed snapshot for this merchant.",
)
@click.option(
    "--roster",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="The roster (full, or a delta from the installed one) the snapshot names.",
)
@click.option(
    "--policy",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="The merchant policy the snapshot names.",
)
@terminal_data
def terminal_install_update(
    snapshot: Path, roster: Path | None, policy: Path | None, data: Path
) -> None:
    """Install an update by hand (e.g. from a USB stick when the network is down).

    It is verified exactly as a downloaded one; on refusal the old one stays.
    """
    from terminal.state import TerminalState

    state = TerminalState(data)
    state.load()
    snap = state.install(
        snapshot.read_bytes(),
        now_utc(),
        roster.read_bytes() if roster else None,
        policy.read_bytes() if policy else None,
    )
    click.echo(
        f"installed snapshot v{snap.version}: roster v{snap.roster_version}, "
        f"policy v{snap.policy_version}"
    )


@terminal.command("status")
@terminal_data
@click.option("--json", "as_json", is_flag=True)
def terminal_status(data: Path, as_json: bool) -> None:
    """What the terminal holds: roster, policy, journal, warnings."""
    service = open_terminal(data)
    try:
        status = service.status()
    finally:
        service.close()
    if as_json:
        click.echo(json.dumps(status))
        return
    for key, value in status.items():
        if key != "warnings":
            click.echo(f"{key:<18} {value}")
    for warning in status["warnings"]:
        click.echo(f"warning: {warning}")


@terminal.command("checkout")
@click.argument("amount")
@click.option("--reader", "reader_name")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=30.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@terminal_data
def terminal_checkout(
    amount: str, reader_name: str | None, timeout: float, as_json: bool, data: Path
) -> None:
    """Charge AMOUNT (yuan): wait for the card, apply the discount, journal the sale."""
    try:
        gross = parse_yuan(amount)
    except ValueError as exc:
        fail(str(exc))
    service = open_terminal(data, reader_name, timeout)
    try:
        result = service.checkout(gross)
    finally:
        service.close()
    if as_json:
        click.echo(json.dumps(result.as_json()))
    else:
        click.echo(describe_sale(result.as_json()))


def describe_sale(sale: dict[str, Any]) -> str:
    verdict = "member" if sale["member"] else "not a member"
    line = (
        f"card •••• {sale['pan_last4']}: {verdict}; gross {sale['gross']}, "
        f"discount {sale['discount']}, net {sale['net']} (sale #{sale['seq']})"
    )
    if sale["reasons"]:
        line += f" [{'; '.join(sale['reasons'])}]"
    return line


@terminal.command("journal")
@terminal_data
@click.option("--verify", is_flag=True, help="Check the whole hash chain.")
def terminal_journal(data: Path, verify: bool) -> None:
    """Show the journal's totals, or verify its hash chain."""
    from terminal.journal import Journal
    from terminal.state import TerminalState

    journal = Journal(TerminalState(data).journal_path)
    try:
        if verify:
            count = journal.verify()
            click.echo(f"journal chain intact: {count} sales")
        else:
            total, pending = journal.counts()
            click.echo(f"{total} sales, {pending} waiting for upload")
    finally:
        journal.close()


@terminal.command("serve")
@terminal_data
@click.option("--reader", "reader_name")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
def terminal_serve(data: Path, reader_name: str | None, host: str, port: int) -> None:
    """Serve the cashier page and the till's JSON API."""
    import signal

    from werkzeug.serving import make_server

    from reader.fresh import FreshCardReader
    from terminal.web import create_app

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # systemd stops the daemon with SIGTERM

    reader = FreshCardReader(reader_name, clock=now_utc)
    service = open_terminal(data, reader_name, reader=reader)
    # Watch the readers from now on: a card already in one was not seen going in
    # (it may be the last customer's) and is not read until it is inserted again.
    reader.start()
    try:
        server = make_server(host, port, create_app(service), threaded=True)
        signal.signal(signal.SIGTERM, stop)
        click.echo(f"cashier page on http://{host}:{port}/ (Ctrl-C to stop)")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
        service.close()


# ---------------------------------------------------------------------------- sync
@cli.command("sync")
@terminal_data
def sync_cmd(data: Path) -> None:
    """Upload the journal and pull roster and policy updates."""
    from sync.client import CentralClient
    from sync.run import run_sync
    from terminal.journal import Journal
    from terminal.state import TerminalState

    state = TerminalState(data)
    enrolment = state.enrolment
    state.load()
    journal = Journal(state.journal_path)
    client = CentralClient(enrolment.central_url, enrolment.terminal_id, enrolment.api_secret)
    try:
        report = run_sync(state, journal, client, now_utc)
    finally:
        client.close()
        journal.close()
    click.echo(f"sync: {describe_sync(report)}")
    for problem in report.problems:
        click.echo(f"warning: {problem}", err=True)
    if report.problems:
        sys.exit(1)


def describe_sync(report: Any) -> str:
    parts = [f"uploaded {report.uploaded} sales"]
    if report.root_version is not None:
        parts.append(f"trusted root now v{report.root_version}")
    if report.roster_version is not None:
        parts.append(f"installed roster v{report.roster_version}")
    if report.policy_version is not None:
        parts.append(f"installed policy v{report.policy_version}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------- demo
@cli.command("demo")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=Path("demo-data"),
    show_default=True,
    help="Demo data folder (recreated on every run).",
)
@click.option("--serve", is_flag=True, help="Keep the services running to look around.")
def demo_cmd(data: Path, serve: bool) -> None:
    """Run the whole product end to end on SQLite and the virtual card reader."""
    from terminal.demo import run_demo

    run_demo(data, serve, click.echo)


def register_extensions() -> None:
    """Command groups that live in their own modules."""
    from terminal.roster_cli import keys_group, roster_group

    cli.add_command(keys_group)
    cli.add_command(roster_group)


register_extensions()

from terminal.policy_cli import register as register_policy_commands  # noqa: E402

register_policy_commands(cli, central)


def main() -> None:
    try:
        cli.main(prog_name="unioncard", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EXPECTED as exc:
        fail(str(exc), getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1)
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
