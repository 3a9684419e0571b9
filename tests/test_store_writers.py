"""Writers of the central store on SQLite take turns at its write lock (BEGIN
IMMEDIATE): one behind another starts as soon as the lock is free, asking again every
fraction of a millisecond for a while (central.sqlitewait.begin_soon: SQLite's own wait
looks again only after 1, 2, 5, 10, 15 ms ...), then as SQLite waits; either way it
waits for the lock and then writes, and the connection keeps its busy_timeout."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import central.sqlitewait
from central.sqlitewait import BUSY_TIMEOUT_MS
from central.store import Store


@pytest.mark.parametrize("queue_wait", [1.0, 0.05], ids=["asks-again", "then-as-sqlite"])
def test_a_writer_behind_another_writes_once_the_lock_is_free(
    tmp_path: Path, monkeypatch, queue_wait: float
) -> None:
    monkeypatch.setattr(central.sqlitewait, "QUEUE_WAIT", queue_wait)
    url = f"sqlite:///{tmp_path / 'central.db'}"
    first, second = Store.open(url), Store.open(url)
    holding, release, written = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        with first._writing():  # BEGIN IMMEDIATE: the write lock, until the commit
            holding.set()
            release.wait(10)

    def write() -> None:
        second.add_merchant("M0002", "Other", 500, "2026-01-01T00:00:00Z")
        written.set()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.3)
    assert not written.is_set()  # waiting for the lock
    release.set()
    holder.join(10)
    writer.join(10)
    assert written.is_set()
    assert second.merchant("M0002") is not None
    with second.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS
    first.close()
    second.close()
