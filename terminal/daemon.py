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
import time
from collections.abc import Callable

from terminal.errors import ConfigError
from terminal.notify import Notifier
from terminal.service import TerminalService

log = logging.getLogger(__name__)
THREADS = 12  # requests served at once (pages' event streams, a till, a supervisor)
SHUTDOWN_WAIT = 10.0  # seconds for requests in flight at SIGTERM
AUTO_SYNC_TICK = 2.0  # seconds between the daemon's checks for a sync due
# How long a thread runs before one waiting for the interpreter's lock takes it (Python's
# default: 5 ms). The till's checkout, back from its fsync, waited behind the requests of
# the pollers and the pages' streams; at 1 ms its p99 ratio under 8 tills polling the
# status every 100 ms was lower than at 5 ms in each of four paired runs (by 0.04 to
# 0.18); the bench's figure at 1 ms was 1.145 and 1.163 (bench/tillapi.py;
# docs/benchmarks.md, "The till API under polling").
SWITCH_INTERVAL = 0.001


def responsive_threads() -> None:
    """Let a thread waiting for the interpreter's lock (a checkout's) take it soon."""
    sys.setswitchinterval(SWITCH_INTERVAL)


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
    sync_every: float = 0.0,
    sync_after_sales: int = 0,
) -> None:
    """Serve until SIGTERM or Ctrl-C; sync by itself every ``sync_every`` seconds and
    after ``sync_after_sales`` new entries, when idle (0: never)."""
    # Flask and waitress are imported only by the command that serves pages.
    from waitress import create_server

    from terminal.syncing import AutoSync, sync_in_a_process  # (the daemon only)
    from terminal.web import MAX_BODY, create_app

    responsive_threads()

    def sync() -> object:  # "sync now" and the daemon's own: a process of their own
        return sync_in_a_process(service.state.dir, sync_batch)

    app = create_app(service, sync)
    # waitress reads a whole body before the app sees it: the same cap there (413)
    try:
        server = create_server(
            app, host=host, port=port, threads=THREADS, max_request_body_size=MAX_BODY
        )
    except (ValueError, OSError) as exc:  # not an address or a name; a port taken
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot serve on {host}:{port} ({reason.rstrip('.')}): set listen_host and "
            "listen_port in the settings to an address of this machine and a free port"
        ) from None
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

    def auto_sync(auto: AutoSync) -> None:
        while not stopped.wait(AUTO_SYNC_TICK):
            try:
                auto.tick()
            except Exception:  # never the end of the daemon: the next tick tries again
                log.exception("the daemon's own sync check failed")

    signal.signal(signal.SIGTERM, stop)
    if service.damage is not None:  # nothing to upload from, nothing to journal an update in
        notifier.status(f"no sales: {service.damage}")
    elif sync_every > 0 or sync_after_sales > 0:
        auto = AutoSync(
            service, app.extensions["unioncard_sync"], sync_every, sync_after_sales, time.monotonic
        )
        threading.Thread(target=auto_sync, args=(auto,), name="auto-sync", daemon=True).start()
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
