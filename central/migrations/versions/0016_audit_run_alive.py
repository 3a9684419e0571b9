"""A running audit run says it is alive: the console shows a run whose process stopped
(the service restarted while it ran) as not finished within minutes, not an hour on.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch:
        batch.add_column(sa.Column("alive_at", sa.String(length=32), nullable=True))
    op.execute("UPDATE audit_runs SET alive_at = run_at WHERE alive_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch:
        batch.drop_column("alive_at")
