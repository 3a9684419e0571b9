"""PostgreSQL taking in a fleet's uploads: 10,000 terminals x 500 sales (5 million) through
the central service's ingest, against a plain ``COPY`` of the same rows (issue 14's
goal: in under 5 minutes). ``--quick``: 200 terminals x 500.

The fleet: 1,000 merchants with 10 terminals each, every terminal enrolled with its own
Ed25519 device key. Each terminal's 500 entries are one chain made with
``pact.chain.seal`` (sales over the 3 days before the run, 80 % by members, a one-line
basket as a plain-amount checkout journals it), uploaded as one batch.

What is signed: ingest checks that every new entry carries a device signature and that
the newest one's verifies under the terminal's key (through the chain it vouches for
the rest); an auditor checks them all. So the newest entry of each batch is signed with
the terminal's real key, and the others carry a placeholder signature of the same
length (128 hex digits), which ingest stores but does not verify. Signing every entry
would cost the generator about 125 s of CPU and change nothing ingest does.

The entries are made before the clock starts, by ``WORKERS`` processes, each writing
its terminals' batches (pickled ``Sale`` lists) to a file on disk. Then, the clock
running, the same number of uploader processes (each its own ``Store``, its own
connection, as a server's workers) take their terminals' batches in turn: read the
terminal's row (as the API's authentication does) and ``Union.ingest`` it (the chain
check, the device signature of the newest entry, the store of the entries and the
dashboard's daily and monthly totals, one transaction a batch). Unpickling a batch
(about 2.5 ms, on the clock) stands in for the API's parsing of the upload body (about
9 ms, which bench/ingest.py measures). The baseline is the same processes each ``COPY``ing
its share of the same rows (``Sale.as_row`` with ``received_at`` and
``receipt_code``) into a bare table of the same columns, with no key or index, in one
``COPY`` a process. Each runs once (5M rows a time), the baseline first, each into its
own PostgreSQL schema, dropped after.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import pickle
import random
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.core import Context, Figure, check
from bench.pg import PG_URL, pg_schema, schema_url
from central.service import Union
from central.store import Store, merchants, sales, sales_monthly
from central.store import terminals as terminals_table
from pact.chain import GENESIS, seal
from pact.device import KeySigner, public_key_hex, sign_entry
from pact.receipt import verification_code
from pact.sale import Sale, SaleDraft
from pact.timefmt import iso, parse_iso

PER_TERMINAL = 500  # one upload batch a terminal
TERMINALS_PER_MERCHANT = 10
WORKERS = int(os.environ.get("UNIONCARD_BENCH_FLEET_WORKERS", "4"))  # uploader processes
GOAL = "<= 300"  # issue 14: "in under 5 minutes"
PLACEHOLDER_SIG = "5a" * 64  # stored, not verified (see the docstring)
RECEIVED_AT = "2026-01-01T00:00:00Z"
NAME = "PostgreSQL taking in {sales} sales ({terminals:,} terminals x {per}), wall time"


def _terminal_id(t: int) -> str:
    return f"T{t:06d}"


def _merchant_id(t: int) -> str:
    return f"M{t // TERMINALS_PER_MERCHANT:05d}"


def _device_key(t: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fleet %d" % t).digest())


def _chain(t: int, now: datetime, rng: random.Random) -> list[Sale]:
    """Terminal ``t``'s entries, chained by pact.chain.seal, the newest signed."""
    terminal_id, merchant_id = _terminal_id(t), _merchant_id(t)
    start = now - timedelta(days=3)
    offsets = sorted(rng.randrange(3 * 86400) for _ in range(PER_TERMINAL))
    prev, out = GENESIS, []
    for i, offset in enumerate(offsets):
        member = rng.random() < 0.8
        gross = rng.randrange(500, 50_000)
        discount = gross * 5 // 100 if member else 0
        rules = {"member": discount} if member else {}
        draft = SaleDraft(
            terminal_id=terminal_id,
            merchant_id=merchant_id,
            token=rng.randbytes(16).hex() if member else None,
            pan_last4=f"{rng.randrange(10000):04d}",
            member=member,
            gross=gross,
            discount=discount,
            net=gross - discount,
            rules=tuple(rules),
            roster_version=1,
            policy_version=1,
            basket={
                "lines": [
                    {
                        "sku": "amount",
                        "category": "general",
                        "qty": 1,
                        "unit_price": gross,
                        "discount": discount,
                        "by_rule": rules,
                    }
                ],
                "tier": 0 if member else None,
                "discounts": rules,
            },
        )
        sale = seal(
            draft,
            seq=i + 1,
            sale_id=str(uuid.UUID(int=t * 1_000_000 + i + 1)),
            at=iso(start + timedelta(seconds=offset)),
            prev_hash=prev,
        )
        prev = sale.hash
        out.append(dataclasses.replace(sale, sig=PLACEHOLDER_SIG))
    out[-1] = sign_entry(KeySigner(_device_key(t)), out[-1])  # what ingest verifies
    return out


def _share(workers: int, terminals: int, w: int) -> range:
    """The terminals of process ``w``: a run of whole merchants."""
    merchants = terminals // TERMINALS_PER_MERCHANT
    first, last = merchants * w // workers, merchants * (w + 1) // workers
    return range(first * TERMINALS_PER_MERCHANT, last * TERMINALS_PER_MERCHANT)


def _generate(job: tuple[int, int, int, str, str]) -> str:
    """Write process ``w``'s batches to a file; return its name."""
    workers, terminals, w, folder, now = job
    rng = random.Random(w)
    path = Path(folder) / f"fleet-{w}.pickle"
    with path.open("wb") as out:
        for t in _share(workers, terminals, w):
            pickle.dump(_chain(t, parse_iso(now), rng), out, protocol=pickle.HIGHEST_PROTOCOL)
    return str(path)


def _batches(path: str) -> Iterator[list[Sale]]:
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return


def _upload(job: tuple[str, str, Any, str]) -> dict[str, float]:
    """Process ``w``'s uploads through Union.ingest (the clock starts at the barrier)."""
    schema, path, barrier, now = job
    store = Store.open(schema_url(schema))
    union = Union(store, None, lambda: parse_iso(now))  # type: ignore[arg-type]
    with store.engine.connect():
        pass  # the connection is made before the clock starts, as a running server's is
    barrier.wait()
    started, ingest, batches = time.perf_counter(), 0.0, 0
    for batch in _batches(path):
        t0 = time.perf_counter()
        terminal = store.terminal(batch[0].terminal_id)
        assert terminal is not None
        result = union.ingest(terminal, batch)
        ingest += time.perf_counter() - t0
        if result.accepted != len(batch):
            raise RuntimeError(f"{batch[0].terminal_id}: {result.accepted} accepted")
        batches += 1
    done = time.perf_counter() - started
    store.close()
    return {"seconds": done, "ingest_seconds": ingest, "batches": batches}


COPY_COLUMNS = [c.name for c in sales.columns]


def _copy(job: tuple[str, str, Any, str]) -> dict[str, float]:
    """The baseline: process ``w``'s rows COPYed into the bare table ``sales_copy``."""
    import psycopg

    schema, path, barrier, _ = job
    conn = psycopg.connect(PG_URL, options=f"-csearch_path={schema}")
    barrier.wait()
    started, rows = time.perf_counter(), 0
    with conn.cursor() as cur:
        with cur.copy(f"COPY sales_copy ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy:
            for batch in _batches(path):
                for s in batch:
                    row = s.as_row()
                    row["received_at"] = RECEIVED_AT
                    row["receipt_code"] = verification_code(s)
                    copy.write_row([row[c] for c in COPY_COLUMNS])
                    rows += 1
    conn.commit()
    conn.close()
    return {"seconds": time.perf_counter() - started, "rows": rows}


def _fleet(schema: str, terminals: int) -> None:
    """The union's merchants and terminals, each terminal with its device key (setup)."""
    store = Store.open(schema_url(schema))
    with store.engine.begin() as conn:
        conn.execute(
            merchants.insert(),
            [
                {
                    "merchant_id": _merchant_id(t),
                    "name": f"Shop {t // TERMINALS_PER_MERCHANT}",
                    "status": "active",
                    "basis_points": 500,
                    "status_changed_at": RECEIVED_AT,
                }
                for t in range(0, terminals, TERMINALS_PER_MERCHANT)
            ],
        )
        conn.execute(
            terminals_table.insert(),
            [
                {
                    "terminal_id": _terminal_id(t),
                    "merchant_id": _merchant_id(t),
                    "secret_sha256": "0" * 64,
                    "enrolled_at": RECEIVED_AT,
                    "device_key": public_key_hex(_device_key(t).public_key()),
                    "device_key_at": RECEIVED_AT,
                }
                for t in range(terminals)
            ],
        )
    store.close()


def _run(
    pool: Any, manager: Any, worker: Any, schema: str, paths: list[str], now: str
) -> tuple[float, list[dict[str, float]]]:
    barrier = manager.Barrier(len(paths) + 1)
    pending = pool.map_async(worker, [(schema, p, barrier, now) for p in paths])
    barrier.wait()
    started = time.perf_counter()
    results = pending.get()
    return time.perf_counter() - started, results


def figures(ctx: Context) -> list[Figure]:
    terminals = ctx.scale(10_000, 200)
    total = terminals * PER_TERMINAL
    name = NAME.format(sales=f"{total:,}", terminals=terminals, per=PER_TERMINAL)
    try:
        with sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://")).connect():
            pass
    except sa.exc.OperationalError as exc:
        return [Figure(name, None, "s", GOAL, note=f"not measured: PostgreSQL not reachable "
                       f"({str(exc).splitlines()[0]})")]  # fmt: skip
    now = iso(ctx.clock())
    spawn = multiprocessing.get_context("spawn")
    folder = ctx.workdir / "fleet"
    folder.mkdir()
    with spawn.Pool(WORKERS) as pool, spawn.Manager() as manager:
        started = time.perf_counter()
        jobs = [(WORKERS, terminals, w, str(folder), now) for w in range(WORKERS)]
        paths = pool.map(_generate, jobs)
        generate_seconds = time.perf_counter() - started
        with pg_schema() as schema:
            with sa.create_engine(
                schema_url(schema).replace("postgresql://", "postgresql+psycopg://")
            ).begin() as conn:
                sa.Table(
                    "sales_copy", sa.MetaData(), *[sa.Column(c.name, c.type) for c in sales.columns]
                ).create(conn)
            copy_seconds, copied = _run(pool, manager, _copy, schema, paths, now)
        with pg_schema() as schema:
            _fleet(schema, terminals)
            load_before = os.getloadavg()[0]
            wall, uploads = _run(pool, manager, _upload, schema, paths, now)
            load_after = os.getloadavg()[0]
            store = Store.open(schema_url(schema))
            with store.engine.connect() as conn:
                held = conn.execute(sa.select(sa.func.count()).select_from(sales)).scalar_one()
                counted = conn.execute(sa.select(sa.func.sum(sales_monthly.c.sales))).scalar_one()
            store.close()
    for p in paths:
        Path(p).unlink()
    if held != total or sum(int(c["rows"]) for c in copied) != total:
        raise RuntimeError(f"stored {held} sales and copied {copied}, expected {total}")
    ingest_cpu = sum(u["ingest_seconds"] for u in uploads)
    return [
        Figure(
            name,
            round(wall, 1),
            "s",
            goal=GOAL,
            met=check(wall, GOAL),
            baseline=f"COPY of the same rows into a bare table, {WORKERS} processes: "
            f"{copy_seconds:.1f} s ({wall / copy_seconds:.2f}x)",
            note=f"{WORKERS} uploader processes on PostgreSQL, once each (the baseline first); "
            "the newest entry of each batch carries a real device signature (what ingest "
            "verifies), the others a placeholder; unpickling stands in for parsing the body",
            detail={
                "sales_per_second": round(total / wall),
                "copy_seconds": round(copy_seconds, 1),
                "ratio_to_copy": round(wall / copy_seconds, 2),
                "copy_rows_per_second": round(total / copy_seconds),
                "ingest_ms_per_batch_mean": round(ingest_cpu / (total / PER_TERMINAL) * 1000, 1),
                "generate_seconds": round(generate_seconds, 1),
                "workers": WORKERS,
                "sales_counted_in_monthly_totals": int(counted or 0),
                "load_average_1min_before_and_after": f"{load_before:.1f}, {load_after:.1f}",
            },
        )
    ]
