"""One-time enrolment codes (their SHA-256, the terminal and merchant they enrol,
when they expire and when they were used) and the wrong codes tried, which the
guessing limit counts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrol_codes",
        sa.Column("code_sha256", sa.String(length=64), nullable=False),
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.String(length=32), nullable=False),
        sa.Column("used_at", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.merchant_id"]),
        sa.PrimaryKeyConstraint("code_sha256"),
    )
    op.create_table(
        "enrol_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_enrol_failures_at"), "enrol_failures", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_enrol_failures_at"), table_name="enrol_failures")
    op.drop_table("enrol_failures")
    op.drop_table("enrol_codes")
