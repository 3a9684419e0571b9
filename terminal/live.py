"""Live updates for the cashier page (an adapter): server-sent events.

``Changes`` is a version counter that grows whenever something the page shows may
have changed: a card went in or out (the reader's monitor, bridged by
:func:`watch_reader`), a sale was confirmed, voided or refunded, a sync ran. Each
``/api/v1/events`` stream waits on it and sends the page's whole picture (reader,
status, today's sales) as one ``update`` event when it changed; between changes it
looks again every ``KEEPALIVE`` seconds (a sync run by the nightly timer, in another
process, shows up that way) and sends a comment so proxies keep the stream open. A
stream ends after ``LIFETIME`` seconds; the browser's EventSource reconnects at once,
so a server thread is never held for good.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)
KEEPALIVE = 15.0
LIFETIME = 300.0
RETRY_MS = 1000


class Changes:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.version = 0
        self.closed = False

    def bump(self) -> None:
        with self._cond:
            self.version += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Wait up to ``timeout`` s for a version other than ``seen``; return the version."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen or self.closed, timeout)
            return self.version

    def close(self) -> None:
        """Stop every stream (the daemon is stopping)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def watch_reader(monitor: Any, changes: Changes) -> threading.Thread:
    """Bump ``changes`` whenever the card monitor's state changes (a card in or out, a
    reader plugged or gone), until ``changes`` is closed."""

    def run() -> None:
        version = monitor.snapshot().version
        while not changes.closed:
            state = monitor.wait_changed(version, timeout=1.0)
            if state.version != version:
                version = state.version
                changes.bump()

    thread = threading.Thread(target=run, name="reader-events", daemon=True)
    thread.start()
    return thread


def stream(
    changes: Changes,
    picture: Callable[[], dict[str, Any]],
    keepalive: float = KEEPALIVE,
    lifetime: float = LIFETIME,
) -> Iterator[str]:
    """The text of an event stream: an ``update`` event with ``picture()`` at once and
    after every change of it."""
    yield f"retry: {RETRY_MS}\n\n"
    seen, sent = None, None
    ends = time.monotonic() + lifetime
    while not changes.closed and time.monotonic() < ends:
        version = changes.version if seen is None else changes.wait(seen, keepalive)
        try:
            current = json.dumps(picture(), ensure_ascii=False, sort_keys=True)
        except Exception as exc:  # the terminal is closing: end the stream (the page retries)
            log.warning("event stream ended: %s", exc)
            return
        if current != sent:
            sent = current
            yield f"event: update\ndata: {current}\n\n"
        elif version == seen:
            yield ": keepalive\n\n"
        seen = version
