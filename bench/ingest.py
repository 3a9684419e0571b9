"""Central ingest of uploaded sales on SQLite and PostgreSQL, against parse-only.

The sales are made by real checkouts on a bench terminal and encoded exactly as the
sync uploads them (batches of 500). Product: parse + validate + chain check + store
in one transaction (`Union.ingest`). Baseline: parse + validate only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa

from bench.core import Context, Figure, paired, ratio_figure
from bench.fixtures import terminal_with_roster
from bench.pg import PG_URL
from central.service import Union
from central.store import Store, metadata
from pact.cards import PanTokenizer
from pact.wire import decode_sales, encode_sales
from reader.identity import identity_from_pan
from terminal.checkout import checkout

BATCH = 500


def _batches(ctx: Context, count: int) -> tuple[list[bytes], str]:
    """Upload bodies of ``count`` batches of real signed sales, and their device key."""
    site = terminal_with_roster(ctx.workdir / "ingest-terminal", 1000, ctx.clock)
    identity = identity_from_pan(
        "unionpay",
        b"\xa0",
        site.member_pan,
        "2030-12",
        PanTokenizer(site.state.enrolment.token_key),
    )
    now = ctx.clock()
    for _ in range(count * BATCH):
        checkout(site.state.current, site.state.enrolment, site.journal, identity, 12800, now)
    sales = site.journal.sales()
    site.journal.close()
    batches = [
        json.dumps(encode_sales("T-BENCH", sales[i : i + BATCH])).encode()
        for i in range(0, len(sales), BATCH)
    ]
    return batches, site.state.device_public_key()


def _measure(
    name: str, store: Store, batches: list[bytes], device_key: str, clock: Callable[[], datetime]
) -> Figure:
    union = Union(store, None, clock)  # type: ignore[arg-type]
    store.add_merchant("M0001", "Bench", 500, "2026-01-01T00:00:00Z")
    store.add_terminal("T-BENCH", "M0001", "0" * 64, "2026-01-01T00:00:00Z")
    store.set_device_key("T-BENCH", device_key, "2026-01-01T00:00:00Z")
    terminal = store.terminal("T-BENCH")
    assert terminal is not None
    product_queue = iter(batches)
    baseline_queue = iter(batches)

    def ingest() -> None:
        _, sales = decode_sales(json.loads(next(product_queue)))
        union.ingest(terminal, sales)

    def parse_only() -> None:
        decode_sales(json.loads(next(baseline_queue)))

    pair = paired(ingest, parse_only, rounds=len(batches) - 3, warmup=3)
    held = len(store.sales_for("T-BENCH"))
    if held != len(batches) * BATCH:
        raise RuntimeError(f"ingest stored {held} sales, expected {len(batches) * BATCH}")
    figure = ratio_figure(
        f"central ingest of a {BATCH}-sale batch vs parse-only, {name}",
        pair,
        "<= 2.5",  # issue 14: with the chain and signature checks, on both stores
        "json.loads + pact.wire.decode_sales of the same batch",
    )
    figure.detail["sales_per_second"] = round(BATCH / pair.detail()["product_p50_ms"] * 1000)
    return figure


def _pg_store() -> tuple[Store, Callable[[], None]]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = sa.create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://"),
        connect_args={"options": f"-csearch_path={schema}"},
    )
    metadata.create_all(engine)

    def drop() -> None:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return Store(engine), drop


def figures(ctx: Context) -> list[Figure]:
    count = ctx.scale(40, 12)
    batches, device_key = _batches(ctx, count)
    out = []
    sqlite_store = Store.open(f"sqlite:///{ctx.workdir / 'ingest-central.db'}")
    out.append(_measure("SQLite", sqlite_store, batches, device_key, ctx.clock))
    sqlite_store.close()
    try:
        pg_store, drop = _pg_store()
    except sa.exc.OperationalError as exc:
        out.append(
            Figure(
                "central ingest of a 500-sale batch vs parse-only, PostgreSQL",
                None,
                "x",
                note=f"not measured: PostgreSQL not reachable at {PG_URL} "
                f"({str(exc).splitlines()[0]})",
            )
        )
        return out
    try:
        out.append(_measure("PostgreSQL", pg_store, batches, device_key, ctx.clock))
    finally:
        pg_store.close()
        drop()
    return out
