"""The central service under load, served by gunicorn on loopback (issue 6).

- the worst upload batch against the median while 8 terminals upload at once,
  on SQLite and on PostgreSQL;
- the sync's upload rate (terminal journal -> HTTP -> gunicorn -> store) against
  ingest alone (the same batches stored in-process);
- ingest into PostgreSQL holding 5,000,000 transactions against an empty one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.core import Context, Figure, percentile
from bench.pg import PG_URL
from central.keys import create_keys
from central.service import CentralPaths, Union
from central.store import Store
from pact.device import KeySigner, Signer, public_key_hex
from pact.sale import Sale, SaleDraft
from pact.timefmt import Clock
from pact.wire import encode_device_key, encode_sales
from sync.client import CentralClient, RetryPolicy
from sync.run import run_sync
from terminal.journal import Journal
from terminal.state import TerminalState

BATCH = 500
UPLOADERS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _journal(path: Path, terminal_id: str, count: int, now: datetime, signer: Signer) -> Journal:
    """A real terminal journal with ``count`` sales, all made at ``now``, signed."""
    journal = Journal(path, signer)
    for i in range(count):
        journal.append(
            SaleDraft(
                terminal_id=terminal_id,
                merchant_id="M0001",
                token=os.urandom(16).hex(),
                pan_last4="0000",
                member=i % 3 != 0,
                gross=1000 + i,
                discount=50,
                net=950 + i,
                rules=("member",),
                roster_version=1,
                policy_version=1,
                basket=None,
            ),
            now,
        )
    return journal


@contextmanager
def _pg_schema() -> Iterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _pg_url(schema: str) -> str:
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


@contextmanager
def _gunicorn(
    folder: Path, database_url: str | None, terminals: list[str], clock: Clock
) -> Iterator[tuple[str, dict[str, str]]]:
    """A central service with merchant M0001 and the given terminals, under gunicorn."""
    paths = CentralPaths(folder)
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, database_url, clock)
    union.add_merchant("M0001", "Bench", 500)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    secrets = {
        t: json.loads(union.enrol_terminal(t, "M0001", url))["api_secret"] for t in terminals
    }
    union.close()
    env = {**os.environ, "UNIONCARD_CENTRAL_DATA": str(folder)}
    if database_url:
        env["UNIONCARD_DATABASE_URL"] = database_url
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    process = subprocess.Popen(
        [
            gunicorn,
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "central:create_app()",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.1)
        yield url, secrets
    finally:
        process.terminate()
        process.wait(timeout=20)


def _concurrent(ctx: Context, name: str, database_url: str | None) -> list[Figure]:
    per = ctx.scale(8, 3)  # batches per uploader
    terminals = [f"T{i:03d}" for i in range(UPLOADERS)]
    folder = ctx.workdir / f"central-{name}"
    signers = {t: KeySigner(Ed25519PrivateKey.generate()) for t in terminals}
    journals = {
        t: _journal(folder / "terminals" / f"{t}.db", t, per * BATCH, ctx.clock(), signers[t])
        for t in terminals
    }
    latencies: list[float] = []
    lock = threading.Lock()
    with _gunicorn(folder, database_url, terminals, ctx.clock) as (url, secrets):

        def upload(terminal_id: str) -> None:
            client = CentralClient(
                url, terminal_id, secrets[terminal_id], RetryPolicy(attempts=1, read_timeout=60)
            )
            key = public_key_hex(signers[terminal_id].public_key())
            client.register_device_key(encode_device_key(terminal_id, key))
            sales = journals[terminal_id].sales()
            for i in range(0, len(sales), BATCH):
                batch = encode_sales(terminal_id, sales[i : i + BATCH])
                start = time.perf_counter()
                client.upload_sales(batch)
                with lock:
                    latencies.append(time.perf_counter() - start)
            client.close()

        threads = [threading.Thread(target=upload, args=(t,)) for t in terminals]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    for j in journals.values():
        j.close()
    if len(latencies) != UPLOADERS * per:
        raise RuntimeError("an uploader failed")
    worst, med = max(latencies), percentile(latencies, 50)
    return [
        Figure(
            f"worst upload batch vs the median, {UPLOADERS} concurrent uploaders, {name}",
            round(worst / med, 3),
            "x",
            baseline="median batch latency in the same run",
            note=f"gunicorn, 2 workers, {BATCH}-sale batches",
            detail={
                "median_ms": round(med * 1000, 1),
                "worst_ms": round(worst * 1000, 1),
                "sales_per_second": round(len(latencies) * BATCH / elapsed),
            },
        )
    ]


def _sync_rate(ctx: Context) -> list[Figure]:
    count = ctx.scale(10_000, 3_000)
    folder = ctx.workdir / "central-sync"
    with _gunicorn(folder, None, ["T-SYNC"], ctx.clock) as (url, secrets):
        state = TerminalState(folder / "terminal")
        union = Union.open(CentralPaths(folder), None, ctx.clock)
        bundle = json.loads(union.enrol_terminal("T-TMP", "M0001", url))
        union.close()
        bundle.update(terminal_id="T-SYNC", api_secret=secrets["T-SYNC"])
        state.enrol(json.dumps(bundle).encode())
        journal = _journal(state.journal_path, "T-SYNC", count, ctx.clock(), state.signer())
        sales = journal.sales()
        client = CentralClient(url, "T-SYNC", secrets["T-SYNC"])
        start = time.perf_counter()
        report = run_sync("T-SYNC", state, journal, client, ctx.clock)
        sync_seconds = time.perf_counter() - start
        client.close()
        journal.close()
    if report.uploaded != count:
        raise RuntimeError(f"the sync uploaded {report.uploaded} of {count} sales")
    store = Store.open(f"sqlite:///{folder / 'ingest-only.db'}")
    store.add_merchant("M0001", "Bench", 500, "2026-01-01T00:00:00Z")
    store.add_terminal("T-SYNC", "M0001", "0" * 64, "2026-01-01T00:00:00Z")
    start = time.perf_counter()
    for i in range(0, count, BATCH):
        store.ingest("T-SYNC", "M0001", sales[i : i + BATCH], "2026-01-01T00:00:00Z")
    ingest_seconds = time.perf_counter() - start
    store.close()
    ratio = (count / sync_seconds) / (count / ingest_seconds)
    return [
        Figure(
            "sync upload rate vs ingest alone, SQLite",
            round(ratio, 3),
            "x",
            baseline="Store.ingest of the same batches in-process",
            note="terminal journal -> requests -> gunicorn -> SQLite, end to end",
            detail={
                "sync_sales_per_second": round(count / sync_seconds),
                "ingest_sales_per_second": round(count / ingest_seconds),
            },
        )
    ]


def _preload(url: str, count: int) -> None:
    """COPY ``count`` stored transactions from 2,000 other terminals into the store."""
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY sales (terminal_id, seq, sale_id, at, merchant_id, token, pan_last4, member,"
            " gross, discount, net, rules, roster_version, policy_version, basket, prev_hash,"
            " hash, received_at) FROM STDIN"
        ) as copy:
            h = "0" * 64
            for i in range(count):
                copy.write_row(
                    (
                        f"T-OLD-{i % 2000}",
                        i // 2000 + 1,
                        str(uuid.UUID(int=i)),
                        "2026-06-01T10:00:00Z",
                        "M0001",
                        None,
                        "0000",
                        True,
                        1000,
                        50,
                        950,
                        "[]",
                        1,
                        1,
                        None,
                        h,
                        h,
                        "2026-06-01T10:00:00Z",
                    )
                )
        conn.commit()


def _ingest_batches(store: Store, terminal_id: str, sales: list[Sale]) -> list[float]:
    store.add_terminal(terminal_id, "M0001", "0" * 64, "2026-01-01T00:00:00Z")
    times = []
    for i in range(0, len(sales), BATCH):
        start = time.perf_counter()
        store.ingest(terminal_id, "M0001", sales[i : i + BATCH], "2026-01-01T00:00:00Z")
        times.append(time.perf_counter() - start)
    return times


def _pg_at_scale(ctx: Context) -> list[Figure]:
    rows = ctx.scale(5_000_000, 200_000)
    signer = KeySigner(Ed25519PrivateKey.generate())
    count = ctx.scale(20, 6) * BATCH
    journal = _journal(ctx.workdir / "pg-scale.db", "T-NEW", count, ctx.clock(), signer)
    sales = journal.sales()
    journal.close()
    medians = {}
    for label, preload in (("empty", 0), ("full", rows)):
        with _pg_schema() as schema:
            url = _pg_url(schema)
            store = Store.open(url)
            store.add_merchant("M0001", "Bench", 500, "2026-01-01T00:00:00Z")
            if preload:
                _preload(url, preload)
                with store.engine.begin() as conn:
                    conn.execute(sa.text("ANALYZE sales"))
            medians[label] = percentile(_ingest_batches(store, "T-NEW", sales), 50)
            store.close()
    ratio = medians["full"] / medians["empty"]
    return [
        Figure(
            f"PostgreSQL ingest with {rows:,} transactions stored vs empty",
            round(ratio, 3),
            "x",
            baseline="the same batches into an empty PostgreSQL",
            detail={
                "median_batch_ms_full": round(medians["full"] * 1000, 1),
                "median_batch_ms_empty": round(medians["empty"] * 1000, 1),
            },
        )
    ]


def _pg_available() -> str | None:
    try:
        engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect():
            pass
        engine.dispose()
    except sa.exc.OperationalError as exc:
        return str(exc).splitlines()[0]
    return None


def figures(ctx: Context) -> list[Figure]:
    out = _concurrent(ctx, "SQLite", None)
    out += _sync_rate(ctx)
    problem = _pg_available()
    if problem is not None:
        for name in ("worst upload batch vs the median, PostgreSQL", "PostgreSQL ingest at scale"):
            out.append(
                Figure(name, None, "x", note=f"not measured: PostgreSQL not reachable ({problem})")
            )
    else:
        with _pg_schema() as schema:
            url = _pg_url(schema)
            Store.open(url).close()
            out += _concurrent(ctx, "PostgreSQL", url)
        out += _pg_at_scale(ctx)
    out.append(
        Figure(
            "audit time for a merchant-year",
            None,
            "s",
            note="not measured: the compliance audit is not built yet "
            "(it has its own issue); the figure lands with it",
        )
    )
    return out
