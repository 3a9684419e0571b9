"""The merchants' registry (category, district, address, contact), their admission
(the standards agreed, when, by which admin) and the history of their status.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = (
    ("category", sa.String(length=32)),
    ("district", sa.String(length=64)),
    ("address", sa.String(length=200)),
    ("contact", sa.String(length=100)),
    ("standards", sa.Text()),
    ("admitted_at", sa.String(length=32)),
    ("admitted_by", sa.String(length=64)),
)


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("merchants", sa.Column(name, kind, nullable=True))
    op.create_table(
        "merchant_status_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.merchant_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_merchant_status_history_merchant_id"),
        "merchant_status_history",
        ["merchant_id"],
        unique=False,
    )
    # the merchants held before: their status since its last change
    op.execute(
        "INSERT INTO merchant_status_history (merchant_id, status, at) "
        "SELECT merchant_id, status, status_changed_at FROM merchants"
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_merchant_status_history_merchant_id"), table_name="merchant_status_history"
    )
    op.drop_table("merchant_status_history")
    with op.batch_alter_table("merchants") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
