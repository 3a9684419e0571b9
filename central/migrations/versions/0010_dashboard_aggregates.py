"""The dashboard's running totals (issue 14 item 8): sales per local day and merchant,
and per local month and merchant; members per local month, district and workplace.
Ingest and the members' import keep them from now on; this fills them from the sales
and the member history held before, with the same rules (pact.tally).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

from central.statement import UNION_TIMEZONE
from pact.tally import (
    MEMBER_FIGURES,
    SALE_FIGURES,
    add,
    by_month,
    fold_sales,
    local_day,
    member_change,
    month_of,
)

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

CHUNK = 20_000  # rows read at a time


def _figures(names: tuple[str, ...]) -> list[sa.Column[Any]]:
    return [sa.Column(name, sa.BigInteger(), nullable=False) for name in names]


def upgrade() -> None:
    op.create_table(
        "sales_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        *_figures(SALE_FIGURES),
        sa.PrimaryKeyConstraint("day", "merchant_id"),
    )
    op.create_table(
        "sales_monthly",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        *_figures(SALE_FIGURES),
        sa.PrimaryKeyConstraint("month", "merchant_id"),
    )
    op.create_table(
        "member_monthly",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("district", sa.String(length=64), nullable=False),
        sa.Column("workplace", sa.String(length=128), nullable=False),
        *_figures(MEMBER_FIGURES),
        sa.PrimaryKeyConstraint("month", "district", "workplace"),
    )
    op.create_index(
        "ix_member_monthly_district", "member_monthly", ["district", "month"], unique=False
    )
    zone = ZoneInfo(UNION_TIMEZONE)
    conn = op.get_bind()
    _backfill_sales(conn, zone)
    _backfill_members(conn, zone)


def _backfill_sales(conn: sa.Connection, zone: ZoneInfo) -> None:
    names = ("at", "merchant_id", "kind", "member", "gross", "discount", "net")
    sales = sa.table("sales", *(sa.column(n) for n in names))
    query = sa.select(*(sales.c[n] for n in names))
    daily: dict[Any, dict[str, int]] = {}
    result = conn.execute(query.execution_options(stream_results=True, yield_per=CHUNK))
    for part in result.partitions():
        for key, found in fold_sales((tuple(r) for r in part), zone).items():
            add(daily, key, found)

    def columns() -> list[sa.ColumnClause[Any]]:
        return [sa.column(n, sa.BigInteger()) for n in SALE_FIGURES]

    day_table = sa.table(
        "sales_daily", sa.column("day", sa.Date()), sa.column("merchant_id"), *columns()
    )
    month_table = sa.table(
        "sales_monthly", sa.column("month"), sa.column("merchant_id"), *columns()
    )
    _insert(conn, day_table, ("day", "merchant_id"), daily)
    _insert(conn, month_table, ("month", "merchant_id"), by_month(daily))


def _backfill_members(conn: sa.Connection, zone: ZoneInfo) -> None:
    history = sa.table(
        "member_history",
        *(sa.column(n) for n in ("id", "member_id", "at", "status", "district", "workplace")),
    )
    query = sa.select(
        history.c.member_id,
        history.c.at,
        history.c.status,
        history.c.district,
        history.c.workplace,
    ).order_by(history.c.member_id, history.c.id)
    totals: dict[Any, dict[str, int]] = {}
    months: dict[str, str] = {}  # an import writes many rows at one time
    previous: dict[str, Any] | None = None
    result = conn.execute(query.execution_options(stream_results=True, yield_per=CHUNK))
    for part in result.partitions():
        for member_id, at, status, district, workplace in part:
            row = {"member_id": member_id, "status": status}
            row |= {"district": district, "workplace": workplace}
            old = previous if previous and previous["member_id"] == member_id else None
            month = months.get(at)
            if month is None:
                month = months[at] = month_of(local_day(at, zone))
            for place, figures in member_change(old, row):
                add(totals, (month, *place), figures)
            previous = row
    table = sa.table(
        "member_monthly",
        *(sa.column(n) for n in ("month", "district", "workplace")),
        *(sa.column(n, sa.BigInteger()) for n in MEMBER_FIGURES),
    )
    _insert(conn, table, ("month", "district", "workplace"), totals)


def _insert(
    conn: sa.Connection,
    table: sa.TableClause,
    keys: tuple[str, ...],
    rows: dict[Any, dict[str, int]],
) -> None:
    batch: list[dict[str, Any]] = []
    for key in sorted(rows):
        if not any(rows[key].values()):
            continue
        batch.append({**dict(zip(keys, key, strict=True)), **rows[key]})
        if len(batch) >= CHUNK:
            conn.execute(table.insert(), batch)
            batch = []
    if batch:
        conn.execute(table.insert(), batch)


def downgrade() -> None:
    op.drop_index("ix_member_monthly_district", table_name="member_monthly")
    op.drop_table("member_monthly")
    op.drop_table("sales_monthly")
    op.drop_table("sales_daily")
