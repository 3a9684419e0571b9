"""An audit run's state: the console starts a run and shows it running until its
findings are stored (a merchant-year takes longer than a web request may), or the
line that says why it stopped.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch:
        # the runs stored before were stored whole, findings and all
        batch.add_column(
            sa.Column("state", sa.String(length=8), nullable=False, server_default="done")
        )
        batch.add_column(sa.Column("finished_at", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("error", sa.String(length=500), nullable=True))
    op.execute("UPDATE audit_runs SET finished_at = run_at WHERE finished_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch:
        batch.drop_column("error")
        batch.drop_column("finished_at")
        batch.drop_column("state")
