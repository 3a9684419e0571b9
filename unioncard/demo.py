"""``unioncard demo``: the whole product end to end on embedded defaults.

A central service on SQLite, a terminal enrolled to it, pcscd with the virtual
reader, and emulated member and non-member cards read through the real PC/SC
path. The demo cards' numbers stay in memory: the members file is never written.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from central import create_app as central_app
from central.keys import create_keys
from central.serve import ThreadedServer
from central.service import CentralPaths, Union
from central.store import settlement_table
from pact.timefmt import Clock
from reader.emulation.vpcd import CardEmulator
from reader.fresh import FreshCardReader
from reader.pcscd import Pcscd
from sync.client import CentralClient
from sync.run import run_sync
from terminal.access import new_api_token
from terminal.democards import DEMO_CARDS, members_csv
from terminal.devicekey import load_public_key
from terminal.errors import ConfigError
from terminal.service import TerminalService
from terminal.state import TerminalState
from terminal.web import create_app as terminal_app

MARKER = ".unioncard-demo"


def prepare(data: Path) -> None:
    """Recreate the demo folder; refuse to delete a folder the demo did not make."""
    if data.exists() and any(data.iterdir()):
        if not (data / MARKER).exists():
            raise ConfigError(f"{data} is not empty and not a demo folder: choose another --data")
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    (data / MARKER).write_text("created by `unioncard demo`; deleted on the next demo run\n")


def run_demo(data: Path, serve: bool, echo: Callable[[str], Any], clock: Clock) -> None:
    started = time.monotonic()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log in the demo
    data = data.resolve()
    prepare(data)
    paths = CentralPaths(data / "central")
    echo(f"== union: setting up the central service in {paths.data_dir}")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, None, clock)
    imported = union.import_members(members_csv())
    echo(f"   imported {imported.read} demo members (card numbers kept only as keyed tokens)")
    union.add_merchant("M0001", "Demo Supermarket", 500)
    echo("   partner shop M0001 'Demo Supermarket': members get 5% off (policy signed)")
    version, members = union.publish_roster()
    echo(f"   signed member roster v{version} ({members} members)")

    app = central_app({"DATA_DIR": str(paths.data_dir), "CLOCK": clock})
    with ThreadedServer(app) as central_server:
        echo(f"   central service listening on {central_server.url}")
        terminal_dir = data / "terminal"
        bundle = union.enrol_terminal("T0001", "M0001", central_server.url)
        state = TerminalState(terminal_dir)
        state.enrol(bundle)
        echo("== shop: terminal T0001 enrolled for M0001")

        # Each card insertion is read for at most one sale. The demo inserts a card
        # and rings it up at once, so a card already in the reader when the monitor
        # starts (at the first sale) counts as inserted; the daemon does not do that.
        reader = FreshCardReader(accept_present=True, clock=clock)

        service = TerminalService(terminal_dir, reader, clock, card_timeout=10.0)
        client = CentralClient(central_server.url, "T0001", state.enrolment.api_secret)
        try:
            report = run_sync(
                "T0001", service.state, service.journal, client, clock, events=service.record_event
            )
            echo(f"   first sync: {report.describe()}")
            with Pcscd() as pcscd:
                how = "started pcscd" if pcscd.started_here else "using the running pcscd"
                echo(f"== card reader: {how} with the vsmartcard virtual reader")
                for key, amount in (("member", 12800), ("nonmember", 4550), ("suspended", 2000)):
                    card = DEMO_CARDS[key]
                    echo(
                        f"-- cashier rings up {amount // 100}.{amount % 100:02d}; "
                        f"customer presents a {card.label} card"
                    )
                    with CardEmulator(pan=card.pan, expiry="2030-12"):
                        result = service.checkout(amount, confirm=True)
                    echo(f"   {result.describe()}")
                report = run_sync(
                    "T0001",
                    service.state,
                    service.journal,
                    client,
                    clock,
                    events=service.record_event,
                )
                echo(f"== nightly sync: {report.describe()}")
                echo("== union: settlement summary")
                for line in settlement_table(union.settlement()):
                    echo(line)
                count = service.journal.verify(load_public_key(terminal_dir))
                echo(
                    f"== auditor: terminal journal hash chain intact ({count} entries), "
                    "every device signature verified"
                )
                echo(f"demo finished in {time.monotonic() - started:.1f} s")
                if serve:
                    serve_forever(service, terminal_app, central_server.url, echo)
                reader.close()  # stop watching the reader before pcscd goes away
        finally:
            reader.close()
            client.close()
            service.close()
            union.close()


def serve_forever(
    service: Any, terminal_app: Any, central_url: str, echo: Callable[[str], Any]
) -> None:
    token = new_api_token(service.state.dir)
    with ThreadedServer(terminal_app(service), port=8080) as web:
        echo(f"cashier page: {web.url}/   central service: {central_url}")
        echo(f"sign in to the page once with the till token: {token}")
        echo(
            "present a card in another shell: unioncard card emulate --demo member "
            "(or nonmember, suspended); Ctrl-C here to stop"
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            echo("stopping")


@click.command("demo")
@click.option(
    "--data",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("demo-data"),
    show_default=True,
    help="Demo data folder (recreated on every run).",
)
@click.option("--serve", is_flag=True, help="Keep the services running to look around.")
@click.pass_obj
def demo(clock: Clock, data: Path, serve: bool) -> None:
    """Run the whole product end to end on SQLite and the virtual card reader."""
    run_demo(data, serve, click.echo, clock)
