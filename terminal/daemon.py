"""The terminal daemon (``unioncard terminal serve``): the cashier page and the till API
on waitress (one process, threads, beside the card monitor's thread), with systemd's
notifications: READY once serving, STATUS, and a WATCHDOG ping fed only while the card
monitor runs and the journal answers. SIGTERM stops it cleanly: no new requests, the
ones in flight (a confirmation being journaled) finish, then the journal closes.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable

from terminal.notify import Notifier
from terminal.service import TerminalService

log = logging.getLogger(__name__)
THREADS = 12  # requests served at once (pages' event streams, a till, a supervisor)
SHUTDOWN_WAIT = 10.0  # seconds for requests in flight at SIGTERM


def problem(service: TerminalService, monitor_running: Callable[[], bool]) -> str | None:
    """Why the daemon is not healthy, or None: the card monitor must run and the
    journal answer (a missing pcscd is not a problem of the daemon: the monitor waits
    for it and the page says so)."""
    if not monitor_running():
        return "the card monitor has stopped"
    return service.journal_problem()


def log_to_stdout() -> None:
    """One line per event on stdout, which journald keeps (it adds the time)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def serve(
    service: TerminalService,
    monitor_running: Callable[[], bool],
    host: str,
    port: int,
    notifier: Notifier,
    echo: Callable[[str], object],
    sync_batch: int = 500,
) -> None:
    """Serve until SIGTERM or Ctrl-C."""
    # Flask and waitress are imported only by the command that serves pages.
    from waitress import create_server

    from terminal.syncing import sync_terminal  # (requests, for "sync now": the daemon only)
    from terminal.web import create_app

    def sync() -> object:  # "sync now" on the page: the daemon's own journal and state
        return sync_terminal(service.state, service.journal, service.clock, sync_batch)

    app = create_app(service, sync)
    server = create_server(app, host=host, port=port, threads=THREADS)
    stopped = threading.Event()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # systemd stops the daemon with SIGTERM

    def watchdog(interval: float) -> None:
        while not stopped.wait(interval):
            trouble = problem(service, monitor_running)
            if trouble is None:
                notifier.watchdog(f"serving on {host}:{port}")
            else:  # not fed: systemd restarts the daemon after WatchdogSec
                log.error("unhealthy, the watchdog is not fed: %s", trouble)
                notifier.status(f"unhealthy: {trouble}")

    signal.signal(signal.SIGTERM, stop)
    if notifier.watchdog_interval is not None:
        threading.Thread(
            target=watchdog, args=(notifier.watchdog_interval,), name="watchdog", daemon=True
        ).start()
    echo(f"cashier page on http://{host}:{port}/ (Ctrl-C to stop)")
    notifier.ready(f"serving on {host}:{port}")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        stopped.set()
        app.extensions["unioncard_changes"].close()  # ends the pages' event streams
        notifier.stopping()
        log.info("stopping: finishing the requests in flight")
        server.close()
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=SHUTDOWN_WAIT)
