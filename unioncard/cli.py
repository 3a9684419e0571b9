"""``unioncard``: the one command line for shops, technicians, union staff and auditors.

A thin entry point. Each part contributes its commands (``terminal.cli``,
``terminal.card_cli``, ``central.cli``, ``unioncard.auditor``, ``unioncard.demo``);
they are loaded only when named, so ``unioncard card read`` on a shop's Pi does
not load the union's database layer. ``main()`` makes the one clock and passes
it down as click's context object.

Every failure a person can cause or meet ends in one line on stderr that starts
with ``error:``, names what is wrong and what to do, and a non-zero exit status:
a :class:`pact.errors.UnioncardError` or a card reader's
:class:`reader.errors.CardError` exits with its ``exit_code``, a usage error
with 2. No tracebacks.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from datetime import UTC, datetime

import click

from pact.errors import UnioncardError
from reader.errors import CardError

COMMANDS = {
    "card": "terminal.card_cli:card",
    "terminal": "terminal.cli:terminal",
    "sync": "terminal.cli:sync",
    "central": "central.cli:central",
    "keys": "central.cli:keys",
    "roster": "unioncard.cli:roster",
    "audit": "unioncard.cli:audit",
    "policy": "unioncard.auditor:policy",
    "quote": "unioncard.auditor:quote_command",
    "demo": "unioncard.demo:demo",
}
AUDIT_COMMANDS = {
    "receipt": "unioncard.auditor:audit_receipt",
    "verify": "unioncard.auditor:audit_verify",
}
ROSTER_COMMANDS = {
    "build": "central.cli:roster_build",
    "verify": "unioncard.auditor:roster_verify",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when first named (click's documented
    "lazily loading subcommands" pattern): ``{name: "module:attribute"}``."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):  # pragma: no cover - a wiring mistake
            raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
        return command


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens to stderr.")
def cli(verbose: bool) -> None:
    """unioncard: member discounts at partner shops for the union's member service card."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # each retry of the sync's client; its last failure is the error line
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


@click.group("roster", cls=LazyGroup, lazy=ROSTER_COMMANDS)
def roster() -> None:
    """Build (the union) and verify (auditors) signed member rosters, offline."""


@click.group("audit", cls=LazyGroup, lazy=AUDIT_COMMANDS)
def audit() -> None:
    """Check evidence: verify an audit bundle; find the journal entry behind a receipt."""


def system_clock() -> datetime:
    """The wall clock: the one place the product reads it."""
    return datetime.now(UTC)


def fail(message: str, code: int) -> None:
    # one line, also when the message quotes input that holds a line break or another
    # control character: those are written as escapes (\n, \x1c, \u2028)
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    click.echo(f"error: {line}", err=True)
    sys.exit(code)


NEGATIVE = re.compile(r"-[0-9][0-9.,]*")


def usage_line(exc: click.UsageError) -> str:
    """Click's usage error on one line, with where to read more."""
    message = " ".join(exc.format_message().split())
    if isinstance(exc, click.NoSuchOption) and NEGATIVE.fullmatch(exc.option_name):
        # `checkout -1`: click takes a negative number for an option it does not know
        message = "amounts and counts are never negative (a '-' before a number reads as an option)"
    command = exc.ctx.command_path if exc.ctx is not None else "unioncard"
    return f"{message} (see `{command} --help`)"


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="unioncard", standalone_mode=False, obj=system_clock)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help, as click does
        click.echo(exc.format_message(), err=True)
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        fail(usage_line(exc), exc.exit_code)
    except click.ClickException as exc:
        fail(" ".join(exc.format_message().split()), exc.exit_code)
    except (UnioncardError, CardError) as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1)
    sys.exit(0)
