"""The statistics dashboard's slowest page at 5 million sales against the same page at
50,000 sales, on PostgreSQL (issue 14, item 8; goal: at most 1.5x).

The page reads the running totals ingest keeps (``sales_monthly``, ``sales_daily``,
``member_monthly``) and the terminals' table, never the sales, so its time should not
grow with the sales. Both states have the same union: 1,000 merchants (10 categories)
with 10 terminals each, 10,000 terminals, over the year up to the bench's day, and the
same members' totals; they differ in the sales only: 10,000 terminals x 500 sales (5M)
against 10,000 x 5 (50,000). ``--quick``: 1,000 terminals x 500 against 1,000 x 5.

How the states are loaded: not by 5M uploads (bench/ingest.py measures ingest). The
sales are drawn (seeded; a day of the year, member or not, amounts, one in 50 voided,
one in 100 a refund) as the tuples ingest folds, folded by ``pact.tally.fold_sales``
(the function ingest uses) and written with ``central.store.add_totals`` (the
statement ingest uses), so the tables hold what ingest of those sales would have left.
The members' totals (20 districts x 25 workplaces, 12 months) are written directly.

Product: the 5M state's page; baseline: the 50,000 state's; each a GET of the page by
a signed-in admin through Flask's test client, alternately.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from bench.core import Context, Figure, repeated, steady_figure, timed
from bench.pg import PG_URL
from central import create_app
from central.keys import create_keys
from central.service import CentralPaths
from central.statement import UNION_TIMEZONE
from central.store import (
    add_totals,
    make_engine,
    member_monthly,
    merchants,
    sales_daily,
    sales_monthly,
    terminals,
)
from pact.tally import add, by_month, fold_sales, month_of
from pact.timefmt import iso

MERCHANTS_PER_TERMINALS = 10  # terminals per merchant
CATEGORIES = ("supermarket", "pharmacy", "cinema", "salon", "restaurant", "travel", "books",
              "sports", "optician", "bakery")  # fmt: skip
PASSWORD = "bench password 1"
CHUNK = 200_000  # sales folded at a time


def _sales(
    terminal_count: int, per_terminal: int, first: datetime, rng: random.Random
) -> Iterator[tuple[str, str, str | None, bool, int, int, int]]:
    """The sales, as (at, merchant_id, kind, member, gross, discount, net)."""
    seconds = 365 * 86400
    for t in range(terminal_count):
        merchant_id = f"M{t // MERCHANTS_PER_TERMINALS:05d}"
        for _ in range(per_terminal):
            at = iso(first + timedelta(seconds=rng.randrange(seconds)))
            member = rng.random() < 0.8
            gross = rng.randrange(500, 50_000)
            discount = gross * 5 // 100 if member else 0
            roll = rng.random()
            kind = "void" if roll < 0.02 else "refund" if roll < 0.03 else None
            yield at, merchant_id, kind, member, gross, discount, gross - discount


def _load(url: str, terminal_count: int, per_terminal: int, now: datetime) -> int:
    """Fill the database at ``url`` (made at the head): merchants, terminals, users'
    totals as described above. Returns the daily rows written."""
    rng = random.Random(8)
    engine = make_engine(url)
    zone = ZoneInfo(UNION_TIMEZONE)
    merchant_count = terminal_count // MERCHANTS_PER_TERMINALS
    stamp = iso(now - timedelta(days=400))
    try:
        with engine.begin() as conn:
            conn.execute(
                merchants.insert(),
                [
                    {
                        "merchant_id": f"M{m:05d}",
                        "name": f"Shop {m}",
                        "status": "active",
                        "basis_points": 500,
                        "status_changed_at": stamp,
                        "category": CATEGORIES[m % len(CATEGORIES)],
                    }  # fmt: skip
                    for m in range(merchant_count)
                ],
            )
            conn.execute(
                terminals.insert(),
                [
                    {
                        "terminal_id": f"T{t:06d}",
                        "merchant_id": f"M{t // 10:05d}",
                        "secret_sha256": "0" * 64,
                        "enrolled_at": stamp,
                        # one in 20 silent for 30 hours, one in 50 for 100
                        "last_contact_at": iso(
                            now - timedelta(hours=30 if t % 20 == 0 else 100 if t % 50 == 1 else 1)
                        ),
                    }  # fmt: skip
                    for t in range(terminal_count)
                ],
            )
            first = datetime.combine(now.astimezone(zone).date(), time(0), zone) - timedelta(
                days=364
            )
            daily: dict[Any, dict[str, int]] = {}
            chunk: list[tuple[str, str, str | None, bool, int, int, int]] = []
            for sale in _sales(terminal_count, per_terminal, first.astimezone(UTC), rng):
                chunk.append(sale)
                if len(chunk) >= CHUNK:
                    for key, figures in fold_sales(chunk, zone).items():
                        add(daily, key, figures)
                    chunk = []
            for key, figures in fold_sales(chunk, zone).items():
                add(daily, key, figures)
            add_totals(conn, sales_daily, ("day", "merchant_id"), daily)
            add_totals(conn, sales_monthly, ("month", "merchant_id"), by_month(daily))
            members: dict[Any, dict[str, int]] = {}
            for i in range(12):
                month = month_of((now - timedelta(days=30 * i)).astimezone(zone).date())
                for d in range(20):
                    for w in range(25):
                        joined = 40 if i == 11 else rng.randrange(5)
                        left = rng.randrange(3)
                        members[(month, f"District {d}", f"Workplace {d}-{w}")] = {
                            "active": joined - left, "joined": joined, "left": left,
                        }  # fmt: skip
            add_totals(conn, member_monthly, ("month", "district", "workplace"), members)
        return len(daily)
    finally:
        engine.dispose()


class _State:
    """A union (data folder, keys, PostgreSQL schema) with an admin and a merchant's
    user signed in."""

    def __init__(self, workdir: Path, terminal_count: int, per_terminal: int, now: datetime):
        self.schema = f"bench_dash_{uuid.uuid4().hex[:8]}"
        self.admin_engine = make_engine(PG_URL)
        with self.admin_engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
        url = f"{PG_URL}?options=-csearch_path%3D{self.schema}"
        paths = CentralPaths(workdir / self.schema)
        create_keys(paths.keys, now=now)
        self.app = create_app(
            {"DATA_DIR": str(paths.data_dir), "DATABASE_URL": url, "CLOCK": lambda: now}
        )
        self.daily_rows = _load(url, terminal_count, per_terminal, now)
        union = self.app.extensions["unioncard"]
        union.add_user("bench-admin", "admin", None, PASSWORD)
        union.add_user("bench-shop", "merchant", "M00000", PASSWORD)
        self.admin = self._sign_in("bench-admin")
        self.shop = self._sign_in("bench-shop")

    def _sign_in(self, name: str) -> Any:
        client = self.app.test_client()
        page = client.get("/console/login").get_data(as_text=True)
        found = re.search(r'name="csrf-token" content="([^"]+)"', page)
        if found is None:
            raise RuntimeError("no CSRF token on the sign-in page")
        answer = client.post(
            "/console/login",
            data={"name": name, "password": PASSWORD, "csrf_token": found.group(1)},
        )
        if answer.status_code != 302:
            raise RuntimeError(f"{name} could not sign in: {answer.status_code}")
        return client

    def page(self, who: str) -> Callable[[], None]:
        client = self.admin if who == "admin" else self.shop

        def get() -> None:
            answer = client.get("/console/dashboard")
            if answer.status_code != 200 or b"<svg" not in answer.data:
                raise RuntimeError(f"the dashboard answered {answer.status_code}")

        return get

    def close(self) -> None:
        self.app.extensions["unioncard"].close()
        with self.admin_engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin_engine.dispose()


def figures(ctx: Context) -> list[Figure]:
    name = "dashboard's slowest page at 5M sales vs at 50,000 sales, PostgreSQL"
    terminal_count = ctx.scale(10_000, 1_000)
    now = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    try:
        big = _State(ctx.workdir, terminal_count, 500, now)
    except sa.exc.OperationalError as exc:
        reason = str(exc).splitlines()[0]
        return [Figure(name, None, "x", note=f"not measured: PostgreSQL at {PG_URL}: {reason}")]
    small = _State(ctx.workdir, terminal_count, 5, now)
    try:
        # the slowest page at 5M: the union's (admin) or a merchant's own
        for state in (big, small):
            for who in ("admin", "shop"):
                state.page(who)()  # warm: the policies parsed, the templates compiled
        times = {who: min(timed(big.page(who)) for _ in range(3)) for who in ("admin", "shop")}
        slowest = max(times, key=lambda who: times[who])
        runs = repeated(
            big.page(slowest),
            small.page(slowest),
            rounds=ctx.scale(15, 5),
            repeats=ctx.scale(7, 3),
        )
        figure = steady_figure(
            name,
            runs,
            "<= 1.5",
            f"the same page ({'the union' if slowest == 'admin' else 'a merchant'}'s) with "
            f"{terminal_count * 5:,} sales",
        )
        figure.detail.update(
            {
                "sales": terminal_count * 500,
                "baseline_sales": terminal_count * 5,
                "terminals": terminal_count,
                "merchants": terminal_count // MERCHANTS_PER_TERMINALS,
                "daily_rows": big.daily_rows,
                "baseline_daily_rows": small.daily_rows,
                "union_page_ms": round(times["admin"] * 1000, 1),
                "merchant_page_ms": round(times["shop"] * 1000, 1),
            }
        )
        figure.note = (
            "totals loaded as ingest would leave them (pact.tally.fold_sales of drawn "
            "sales, central.store.add_totals), not by uploads; see bench/dashboard.py"
        )
        return [figure]
    finally:
        big.close()
        small.close()
