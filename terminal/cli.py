"""The shop's commands: ``unioncard terminal ...`` and ``unioncard sync``.

Each command parses its options, calls one function of the terminal (or the
sync) and prints the result. The settings come from the TOML file, the
environment and the command line (terminal.settings); the clock is the one
``unioncard.cli.main`` made, passed as click's context object.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pact.errors import RefusedError, UnioncardError
from pact.event import UPDATE_INSTALLED, UPDATE_REFUSED
from pact.money import fen, parse_yuan
from pact.text import N_
from pact.timefmt import Clock
from reader.fresh import FreshCardReader
from sync.errors import CentralForgotError, CentralRefusedError
from terminal import daemon
from terminal import settings as settings_file
from terminal.access import API_TOKEN_FILE, new_api_token, new_supervisor_token, token_digest
from terminal.decommission import (
    data_folder_lock,
    export_journal,
    journal_held,
    pending_problem,
    wipe,
    write_export,
)
from terminal.devicekey import load_public_key
from terminal.disk import UPDATE_REFUSED as DISK_UPDATE_REFUSED
from terminal.disk import check_space, fail_full, is_disk_full
from terminal.errors import InputError
from terminal.journal import Journal
from terminal.notify import Notifier
from terminal.service import CardReaderFn, TerminalService, journal_event
from terminal.settings import Settings
from terminal.state import TerminalState
from terminal.supervisor import set_pin
from terminal.syncing import (
    SOFTWARE,
    central_client,
    enrol_by_code,
    preview_sync,
    sync_terminal,
)

F = TypeVar("F", bound=Callable[..., Any])

as_json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def with_settings(*keys: str) -> Callable[[F], F]:
    """Give the command ``settings``: ``--config`` and ``--data``, plus options for the
    setting ``keys`` named (``reader``, ``card_timeout``, ``listen_host``, ``listen_port``)."""
    options = {
        "reader": click.option(
            "--reader", "reader", help="Use the readers whose name contains this text."
        ),
        "card_timeout": click.option(
            "--timeout", "card_timeout", type=float, help="Seconds to wait for a card."
        ),
        "listen_host": click.option("--host", "listen_host", help="Address to listen on."),
        "listen_port": click.option("--port", "listen_port", type=int, help="Port to listen on."),
    }

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(config: Path | None, data: Path | None, **kwargs: Any) -> Any:
            overrides = {key: kwargs.pop(key) for key in keys}
            loaded = settings_file.load(config, os.environ, {"data_dir": data, **overrides})
            return command(settings=loaded, **kwargs)

        for key in reversed(keys):
            wrapper = options[key](wrapper)
        wrapper = click.option(
            "--data",
            type=click.Path(path_type=Path, file_okay=False),
            help="The terminal's data folder (default: data_dir in the settings).",
        )(wrapper)
        wrapper = click.option(
            "--config",
            type=click.Path(path_type=Path, dir_okay=False),
            help="Settings file (default: $UNIONCARD_CONFIG, else /etc/unioncard/terminal.toml).",
        )(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


def open_terminal(
    settings: Settings,
    clock: Clock,
    reader: CardReaderFn | None = None,
    monotonic: Callable[[], float] | None = None,
    check_journal: bool = False,
) -> TerminalService:
    """The terminal service with its card reader (by default a ``FreshCardReader``: each
    card insertion is read for at most one sale; its monitor starts at the first read)."""
    if reader is None:
        reader = FreshCardReader(settings.reader, clock=clock)
    return TerminalService(
        settings.data_dir,
        reader,
        clock,
        settings.card_timeout,
        printer=settings.printer,
        monotonic=monotonic,
        check_journal=check_journal,
    )


@click.group()
def terminal() -> None:
    """The shop's terminal: enrol, check out, serve the cashier page."""


@terminal.command("enrol")
@click.argument(
    "bundle", required=False, type=click.Path(path_type=Path, exists=True, dir_okay=False)
)
@click.option("--central", "central_url", help="The union's central service (with --code).")
@click.option("--code", help="The one-time enrolment code the union gave for this terminal.")
@click.option(
    "--ca-cert",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="The union's CA certificate (PEM), for an https central service (with --code).",
)
@with_settings()
@click.pass_obj
def terminal_enrol(
    clock: Clock,
    bundle: Path | None,
    central_url: str | None,
    code: str | None,
    ca_cert: Path | None,
    settings: Settings,
) -> None:
    """Enrol this terminal: online with the one-time code the union gave (`--central
    URL --code CODE`, which also runs the first sync), or offline from the BUNDLE file
    the union issued (it works for one terminal only: the first to sync with it)."""
    if bundle is not None and (central_url or code or ca_cert):
        raise InputError(N_("give either a BUNDLE file or --central and --code, not both"))
    if bundle is None:
        if not (central_url and code):
            raise InputError(
                N_("give the union's --central URL and the --code it gave, or a BUNDLE file")
            )
        enrolment, report = enrol_by_code(settings.data_dir, central_url, code, ca_cert, clock)
        click.echo(
            f"enrolled as terminal {enrolment.terminal_id} of merchant "
            f"{enrolment.merchant_id}; first sync: {report.describe()}"
        )
        for problem in report.problems:
            click.echo(f"warning: {problem}", err=True)
    else:
        enrolment = TerminalState(settings.data_dir).enrol(bundle.read_bytes())
        click.echo(
            f"enrolled as terminal {enrolment.terminal_id} of merchant "
            f"{enrolment.merchant_id}; now run `unioncard sync`"
        )
    if token_digest(settings.data_dir / API_TOKEN_FILE) is None:
        click.echo(
            f"till token (shown once; the till API and the cashier page's sign-in need it): "
            f"{new_api_token(settings.data_dir)}"
        )
    else:
        click.echo("the till token is kept (`unioncard terminal api-token` makes a new one)")


@terminal.command("api-token")
@with_settings()
def terminal_api_token(settings: Settings) -> None:
    """Make the till token (every endpoint of the till API, sent as ``Authorization:
    Bearer TOKEN``, and the cashier page's sign-in); it replaces the old one, and signs
    out every browser signed in with it. Printed once; only its SHA-256 is kept (0600)."""
    state = TerminalState.open(settings.data_dir)
    state.enrolment  # noqa: B018 - refuses a folder that is not an enrolled terminal
    click.echo(new_api_token(state.dir))


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
@with_settings()
@click.pass_obj
def terminal_install_update(
    clock: Clock, snapshot: Path, roster: Path | None, policy: Path | None, settings: Settings
) -> None:
    """Install an update by hand (e.g. from a USB stick when the network is down).

    It is verified exactly as a downloaded one; on refusal the old one stays.
    """
    state = TerminalState.open(settings.data_dir)
    state.load()
    journal = Journal.existing(state.journal_path, state.signer())
    download = state.roster_download
    try:
        with state.updating():  # no sync meanwhile: the download file is the sync's too
            before = state.current
            try:
                if roster is not None:  # copied as the sync downloads: never whole in memory
                    _copy_in(roster, download, state.dir)
                snap = state.install(
                    snapshot.read_bytes(),
                    clock(),
                    download if roster else None,
                    policy.read_bytes() if policy else None,
                )
            except RefusedError as exc:
                journal_event(journal, state, UPDATE_REFUSED, f"by hand: {exc}", clock())
                raise
            finally:
                download.unlink(missing_ok=True)  # if not installed
        if before.snapshot is not None and before.snapshot.version == snap.version:
            click.echo(f"snapshot v{snap.version} is already installed: nothing changed")
            return
        journal_event(
            journal,
            state,
            UPDATE_INSTALLED,
            f"by hand: snapshot v{snap.version} (roster v{before.roster_version} -> "
            f"v{snap.roster_version}, policy v{before.policy_version} -> v{snap.policy_version})",
            clock(),
        )
    finally:
        journal.close()
    click.echo(
        f"installed snapshot v{snap.version}: roster v{snap.roster_version}, "
        f"policy v{snap.policy_version}"
    )


def _copy_in(source: Path, target: Path, data_dir: Path) -> None:
    """Copy an update's roster into the data folder; a full disk is refused as the
    install refuses it (DiskFullError, one line), leaving no partial copy."""
    check_space(data_dir, DISK_UPDATE_REFUSED)
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        target.unlink(missing_ok=True)
        if is_disk_full(exc):
            fail_full(data_dir, DISK_UPDATE_REFUSED)
        raise


@terminal.command("status")
@with_settings()
@as_json_option
@click.pass_obj
def terminal_status(clock: Clock, settings: Settings, as_json: bool) -> None:
    """What the terminal holds: roster, policy, journal, the last sync, warnings."""
    service = open_terminal(settings, clock)
    try:
        status = service.status()
    finally:
        service.close()
    if as_json:
        click.echo(json.dumps(status))
        return
    for key, value in status.items():
        if key == "sync":
            for what, when in value.items():
                click.echo(f"{what:<18} {_shown(when)}")
        elif not key.endswith("warnings") and not key.endswith("_ids"):
            label = "entries" if key == "sales" else key  # events too, not sales only
            click.echo(f"{label:<18} {_shown(value)}")
    for warning in status["warnings"]:
        click.echo(f"warning: {warning}")


def _shown(value: object) -> str:
    """A status value for people: "-" for none, a mapping as name=value pairs."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_shown(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_shown(v) for v in value) or "-"
    return str(value)


@terminal.command("checkout")
@click.argument("amount")
@with_settings("reader", "card_timeout")
@as_json_option
@click.pass_obj
def terminal_checkout(clock: Clock, amount: str, settings: Settings, as_json: bool) -> None:
    """Charge AMOUNT (yuan): wait for the card, apply the discount, journal the sale."""
    try:
        gross = parse_yuan(amount)
    except ValueError as exc:
        raise InputError(f"AMOUNT {amount!r}: {exc}") from None
    service = open_terminal(settings, clock)
    try:
        result = service.checkout(gross, confirm=True)
    finally:
        service.close()
    if as_json:
        click.echo(json.dumps(result.as_json()))
    else:
        click.echo(result.describe())


def _secret(prompt: str, confirm: bool = False) -> str:
    """A PIN from the keyboard, unechoed; from standard input a line (twice with
    ``confirm``) without getpass's warnings about a terminal that is not there."""
    if sys.stdin.isatty():
        return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))
    lines = [sys.stdin.readline() for _ in range(2 if confirm else 1)]
    if not all(lines):
        raise click.Abort
    if confirm and lines[0].strip() != lines[1].strip():
        raise click.UsageError("the two PINs differ: give the same PIN twice")
    return lines[0].strip()


@terminal.command("set-pin")
@with_settings()
def terminal_set_pin(settings: Settings) -> None:
    """Set the supervisor's PIN (4 to 8 digits), which voids and refunds need. Read twice from the
    keyboard (or twice from standard input); kept as a scrypt hash (0600)."""
    state = TerminalState.open(settings.data_dir)
    state.enrolment  # noqa: B018 - refuses a folder that is not an enrolled terminal
    pin = _secret("new supervisor PIN", confirm=True)
    set_pin(state.dir, pin)
    click.echo("supervisor PIN set")


@terminal.command("supervisor-token")
@with_settings()
def terminal_supervisor_token(settings: Settings) -> None:
    """Make the till's supervisor token (voids and refunds on the till API, sent as
    ``Authorization: Bearer TOKEN``); it replaces the old one. Printed once; only its
    SHA-256 is kept (0600)."""
    state = TerminalState.open(settings.data_dir)
    state.enrolment  # noqa: B018 - refuses a folder that is not an enrolled terminal
    click.echo(new_supervisor_token(state.dir))


@terminal.command("void")
@click.argument("seq", type=click.IntRange(min=1))
@click.option("--reason", required=True, help="Why the sale is voided (journaled).")
@with_settings()
@click.pass_obj
def terminal_void(clock: Clock, seq: int, reason: str, settings: Settings) -> None:
    """Void sale SEQ of today's business day (the supervisor's PIN is asked for).

    The void is journaled, signed and uploaded like a sale; the settlement subtracts
    it and the member's quota use is given back.
    """
    pin = _secret("supervisor PIN")
    service = open_terminal(settings, clock)
    try:
        entry = service.void(seq, reason, pin)
    finally:
        service.close()
    click.echo(f"sale {seq} voided by entry #{entry.seq}: {fen(entry.net)} reversed")


def _refund_item(text: str) -> tuple[int, int]:
    index, _, qty = text.partition(":")
    try:
        return int(index), int(qty or "1")
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give a line's index and units as INDEX:QTY, like 0:2"
        ) from None


@terminal.command("refund")
@click.argument("seq", type=click.IntRange(min=1))
@click.option(
    "--line",
    "lines",
    multiple=True,
    required=True,
    metavar="INDEX:QTY",
    help="A line of the sale (0 is the first) and how many of its units come back; repeat.",
)
@click.option("--reason", required=True, help="Why the units are refunded (journaled).")
@with_settings()
@click.pass_obj
def terminal_refund(
    clock: Clock, seq: int, lines: tuple[str, ...], reason: str, settings: Settings
) -> None:
    """Refund units of lines of sale SEQ (the supervisor's PIN is asked for).

    Each rule's discount on those units is given back in proportion, rounded down
    until the last unit; the refund is journaled, signed and uploaded like a sale.
    """
    items = [_refund_item(text) for text in lines]
    pin = _secret("supervisor PIN")
    service = open_terminal(settings, clock)
    try:
        entry = service.refund(seq, items, reason, pin)
    finally:
        service.close()
    click.echo(
        f"sale {seq} refunded by entry #{entry.seq}: {fen(entry.gross)} back, "
        f"discount {fen(entry.discount)} reversed, {fen(entry.net)} to pay back"
    )


@terminal.command("journal")
@with_settings()
@click.option(
    "--verify", is_flag=True, help="Check the whole hash chain and every device signature."
)
def terminal_journal(settings: Settings, verify: bool) -> None:
    """Show the journal's totals, or verify its hash chain and every device signature."""
    state = TerminalState.open(settings.data_dir)
    journal = Journal.existing(state.journal_path)
    try:
        if verify:
            count = journal.verify(load_public_key(state.dir))
            click.echo(
                f"journal chain intact: {count} entries (sales, voids, refunds and events), "
                "every device signature verified"
            )
        else:
            total, pending = journal.counts()
            click.echo(
                f"{total} entries (sales, voids, refunds and events), {pending} waiting for upload"
            )
    finally:
        journal.close()


@terminal.command("decommission")
@with_settings()
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to leave the shop's export of its journal "
    "(default: unioncard-journal-<terminal>.json here).",
)
@click.pass_obj
def terminal_decommission(clock: Clock, settings: Settings, out: Path | None) -> None:
    """Take this terminal out of service, for good.

    Refuses while any journal entry is not yet acknowledged by the union (run
    `unioncard sync` first) or while the daemon runs. Then it checks the journal's
    chain, leaves the shop an export of it (--out), tells the union (which revokes
    the terminal), and wipes the keys and data.
    """
    state = TerminalState.open(settings.data_dir)
    enrolment = state.enrolment
    target = out or Path.cwd() / f"unioncard-journal-{enrolment.terminal_id}.json"
    data_dir = settings.data_dir.resolve()
    if target.resolve().is_relative_to(data_dir):
        raise InputError(
            N_("the export %(file)s would be wiped with the data folder: give another --out"),
            file=str(target),
        )
    with data_folder_lock(settings.data_dir):
        journal = Journal.existing(state.journal_path)
        try:
            problem = pending_problem(journal)
            if problem is not None:
                raise problem
            export = export_journal(state, journal, clock)
        finally:
            journal.close()
        write_export(export, target)
        with journal_held(state.journal_path, export.last_seq):  # until the wipe
            note = "the union revoked it"
            client = central_client(enrolment)
            try:
                client.decommission(export.last_seq)
            except CentralForgotError as exc:
                if "was revoked" not in str(exc):  # not revoked: some other 401
                    raise CentralRefusedError(
                        N_(
                            "the union does not know this terminal (%(why)s): nothing was "
                            "wiped; ask the union to check the terminal's enrolment"
                        ),
                        why=str(exc),
                    ) from None
                note = f"the union had already revoked it ({exc})"  # holding every entry
            finally:
                client.close()
            wipe(settings.data_dir)
    click.echo(
        f"terminal {enrolment.terminal_id} decommissioned: {note}; {export.entries} journal "
        f"entries exported to {target}; its keys and data are wiped"
    )


@terminal.command("serve")
@with_settings("reader", "card_timeout", "listen_host", "listen_port")
@click.pass_obj
def terminal_serve(clock: Clock, settings: Settings) -> None:
    """Serve the cashier page and the till's JSON API (waitress; systemd's notify
    protocol and watchdog when run by systemd)."""
    daemon.log_to_stdout()
    reader = FreshCardReader(settings.reader, clock=clock)
    # the daemon watches its wall clock against the monotonic clock (clock jumps)
    # and checks every page of its journal first (a damaged one: no sales, and why)
    service = open_terminal(settings, clock, reader, monotonic=time.monotonic, check_journal=True)
    try:
        with data_folder_lock(settings.data_dir):  # one daemon, no decommissioning
            for event in service.startup(SOFTWARE):
                click.echo(f"journaled event #{event.seq}: {event.note}")
            # Watch the readers from now on: a card already in one was not seen going in
            # (it may be the last customer's) and is not read until it is inserted again.
            reader.start()
            daemon.serve(
                service,
                lambda: reader.monitor.snapshot().running,
                settings.listen_host,
                settings.listen_port,
                Notifier(os.environ),
                click.echo,
                sync_batch=settings.sync_batch,
                sync_every=settings.sync_every_minutes * 60,
                sync_after_sales=settings.sync_after_sales,
            )
    finally:
        reader.close()
        service.close()


@click.command("sync")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show what a sync would upload and install; send, install and record nothing.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the outcome as one JSON object on stdout."
)
@with_settings()
@click.pass_obj
def sync(clock: Clock, settings: Settings, dry_run: bool, as_json: bool) -> None:
    """Upload the journal and pull roster and policy updates.

    Ends with one summary line (entries uploaded, sent and still pending; what was
    installed); a progress bar on a terminal while a backlog uploads. Exit status:
    0 done (everything sent was acknowledged, the updates are current); 1 done with a
    problem (an update refused and the old one kept, or entries the union did not
    acknowledge: still pending); 2 a bad option or setting; 6 the central service
    could not be reached or failed, or another sync of this terminal ran on for a
    minute (nothing lost: try again later, as the timer does hourly); 7 the central
    service refused (the error says why: a person must look); 8 the enrolment names a
    central service the terminal may not talk to, or its certificate is not the
    union's (fix the enrolment or ca.pem).
    """
    state = TerminalState.open(settings.data_dir)
    state.enrolment  # noqa: B018 - refuses a folder that is not an enrolled terminal
    # a file the trusted root no longer vouches for is what this sync replaces: said at
    # info (on stderr it read as a refusal); one it cannot replace is a problem it reports
    state.load(dropped_at=logging.INFO)
    journal = Journal.existing(state.journal_path, state.signer())
    try:
        if dry_run:
            plan = preview_sync(state, journal, clock, batch_size=settings.sync_batch)
            _sync_outcome(as_json, plan.as_json(), plan.describe(), plan.problems)
            return
        backlog = journal.counts()[1]
        show_bar = not as_json and backlog > settings.sync_batch and sys.stdout.isatty()
        with click.progressbar(length=backlog, label="uploading", hidden=not show_bar) as bar:
            try:
                report = sync_terminal(
                    state, journal, clock, batch_size=settings.sync_batch, progress=bar.update
                )
            except UnioncardError as exc:
                if as_json:
                    pending = journal.counts()[1]
                    failed = {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
                    click.echo(json.dumps({**failed, "pending": pending}))
                raise
    finally:
        journal.close()
    held = state.current
    summary = (
        f"sync: {report.describe()}; roster v{held.roster_version}, "
        f"policy v{held.policy_version} in service"
    )
    outcome = {
        **report.as_json(),
        "roster_in_service": held.roster_version,
        "policy_in_service": held.policy_version,
    }
    _sync_outcome(as_json, outcome, summary, report.problems)


def _sync_outcome(as_json: bool, outcome: dict[str, Any], line: str, problems: list[str]) -> None:
    """Print the sync's outcome (a JSON object, or its summary line and a warning line
    for each problem) and exit 1 if there were problems."""
    if as_json:
        click.echo(json.dumps({"ok": not problems, **outcome, "exit_code": 1 if problems else 0}))
    else:
        click.echo(line)
        for problem in problems:
            click.echo(f"warning: {problem}", err=True)
    if problems:
        sys.exit(1)
