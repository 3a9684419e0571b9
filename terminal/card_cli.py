"""``unioncard card ...``: for the technician at the shop (and the demo).

``read`` reads a card through pcscd as a checkout would, ``watch`` prints what
pcscd reports as it happens, ``emulate`` presents a test card on the vsmartcard
virtual reader.
"""

from __future__ import annotations

import json
import queue
import signal
from pathlib import Path
from typing import Any

import click

from pact.cards import PanTokenizer, is_card_number
from pact.timefmt import Clock
from reader.emulation.images import PROFILES
from reader.emulation.vpcd import CardEmulator
from reader.errors import NoReaderError
from reader.monitor import CardMonitor, describe, state_as_json
from reader.monitor import as_json as event_json
from reader.pcsc import read_card
from terminal.cli import as_json_option
from terminal.democards import DEMO_CARDS
from terminal.state import TerminalState


@click.group()
def card() -> None:
    """Read a card, watch the readers, or emulate a card on the virtual reader."""


@card.command("read")
@click.option("--reader", "reader_name", help="Use the reader whose name contains this text.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 600),
    default=30.0,
    show_default=True,
    help="Seconds to wait for a card.",
)
@as_json_option
@click.option(
    "--data",
    type=click.Path(path_type=Path, file_okay=False),
    help="Terminal data folder (for the token key); without it no token is shown.",
)
@click.pass_obj
def card_read(
    clock: Clock, reader_name: str | None, timeout: float, as_json: bool, data: Path | None
) -> None:
    """Wait for a card and print what was read (never the full card number).

    Exit codes: 0 read; 2 pcscd not running or no reader; 3 no card within the
    timeout; 4 card not supported or blocked; 5 card removed during the read.
    """
    state = TerminalState.open(data) if data is not None else None
    tokenize = (
        PanTokenizer(state.enrolment.token_key, state.current.token_scheme)
        if state is not None
        else PanTokenizer(None)
    )
    identity = read_card(
        reader_name,
        timeout,
        tokenize=tokenize,
        today=clock().astimezone().date(),
    )
    if as_json:
        click.echo(json.dumps(identity.as_json()))
    else:
        click.echo(
            f"{identity.scheme} card •••• {identity.pan_last4}, expires {identity.expiry}, "
            f"application {identity.aid.hex().upper()}"
        )


@card.command("watch")
@click.option("--reader", "reader_name", help="Only readers whose name contains this text.")
@click.option("--present", is_flag=True, help="Report a card already in a reader at start.")
@click.option("--json", "as_json_", is_flag=True, help="One JSON object per line.")
@click.option(
    "--retry",
    type=click.FloatRange(0.05, 60),
    default=0.5,
    show_default=True,
    help="Seconds between reconnects to pcscd.",
)
def card_watch(reader_name: str | None, present: bool, as_json_: bool, retry: float) -> None:
    """Print card and reader events as pcscd reports them, until Ctrl-C or SIGTERM.

    Card in, card out, reader gone or back: "does the reader see the card?".
    Exits 0 after a clean stop, 1 when the watcher did not stop cleanly.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)

    def show(line: str, body: dict[str, Any]) -> None:
        click.echo(json.dumps(body) if as_json_ else line)

    monitor = CardMonitor(reader_name, report_present=present, retry_interval=retry)
    stopped = False
    try:
        monitor.start()
        state = monitor.snapshot()
        names = ", ".join(r.name for r in state.readers) or "none"
        show(
            f"watching readers: {names}" + (f" ({state.error})" if state.error else ""),
            {"event": "watching", **state_as_json(state)},
        )
        while True:
            try:
                event = monitor.events.get(timeout=0.5)
            except queue.Empty:
                continue
            show(describe(event), event_json(event))
    except KeyboardInterrupt:
        pass
    finally:
        stopped = monitor.stop()
        show("stopped", {"event": "stopped", "clean": stopped})
    if not stopped:
        raise SystemExit(1)


@card.command("emulate")
@click.option("--pan", help="Card number of the emulated card (test cards only).")
@click.option(
    "--demo",
    "demo_card",
    type=click.Choice(sorted(DEMO_CARDS)),
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
    if (pan is None) == (demo_card is None):
        raise click.UsageError("give exactly one of --pan or --demo")
    number = pan if pan is not None else DEMO_CARDS[str(demo_card)].pan
    if not is_card_number(number):
        raise click.BadParameter(
            "a card number is 12 to 19 digits and passes the Luhn check (ISO/IEC 7812-1)",
            param_hint="--pan",
        )
    try:
        emulator = CardEmulator(pan=number, expiry=expiry, profile=profile, port=port)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(
        f"presenting a {profile} card •••• {number[-4:]} on vpcd port {port}; Ctrl-C to remove"
    )
    try:
        emulator.run_forever()
    except ConnectionError as exc:
        raise NoReaderError(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("card removed")
