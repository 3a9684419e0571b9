"""The member history: each member's status, tier, validity, district and workplace
from a date on, written by every import that changed them (and "left" for those a
full import no longer lists).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "member_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("district", sa.String(length=64), nullable=True),
        sa.Column("workplace", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_member_history_member_id"), "member_history", ["member_id"], unique=False
    )
    # the members held before the history: their values, known since an unknown date
    op.execute(
        "INSERT INTO member_history (member_id, at, status, tier, valid_until, district, "
        "workplace) SELECT member_id, '1970-01-01T00:00:00Z', status, tier, valid_until, "
        "district, workplace FROM members"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_member_history_member_id"), table_name="member_history")
    op.drop_table("member_history")
