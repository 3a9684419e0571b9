"""How a writer of the central store on SQLite waits for the database's write lock.

SQLite's own wait (busy_timeout) looks again after 1, 2, 5, 10, 15, 20, 25 ms: a writer
behind one that holds the lock for 12 ms starts only at 18 ms. An upload waits so behind
the terminal's batch before it (sync.run's pipelined requests, each in a worker of its
own), and each such gap adds to the sync (docs/benchmarks.md, "The sync's throughput").
"""

from __future__ import annotations

import sqlite3
import time

BUSY_TIMEOUT_MS = 10_000  # how long a transaction waits for SQLite's write lock at most
QUEUE_WAIT = 1.0  # seconds of it spent asking again every fraction of a millisecond


def begin_soon(raw: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE on ``raw``, asking again every fraction of a millisecond while
    another writer holds the lock, for :data:`QUEUE_WAIT` seconds at the most; False
    when it is still held (the caller then waits as SQLite does, up to its
    busy_timeout). Any other error than a busy lock is raised at once."""
    raw.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + QUEUE_WAIT
        pause = 0.0002  # then half as long again each time, up to 2 ms
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return True
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 1.5, 0.002)
    finally:
        raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
