"""The merchant lifecycle (issue 15 item 4): each status change's reason, its effective
time (a change may be decided ahead of time) and the admin who decided it; a merchant's
closing once it has left (its final statement and audit bundle written, kept until
``retain_until``); a terminal's decommissioning.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("merchant_status_history") as batch:
        batch.add_column(sa.Column("effective_at", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("decided_by", sa.String(length=64), nullable=True))
    # the changes recorded before took effect when they were recorded
    op.execute("UPDATE merchant_status_history SET effective_at = at WHERE effective_at IS NULL")
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(sa.Column("closed_at", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("retain_until", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("final_folder", sa.String(length=500), nullable=True))
    with op.batch_alter_table("terminals") as batch:
        batch.add_column(sa.Column("decommissioned_at", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.drop_column("decommissioned_at")
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("final_folder")
        batch.drop_column("retain_until")
        batch.drop_column("closed_at")
    with op.batch_alter_table("merchant_status_history") as batch:
        batch.drop_column("decided_by")
        batch.drop_column("reason")
        batch.drop_column("effective_at")
