"""Drop the sales' index on merchant_id alone: the index on (merchant_id, at) (0002)
serves every lookup by merchant, and each index costs every ingested row its update
(issue 14: the ingest of a 500-sale batch against its parsing).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_sales_merchant_id", table_name="sales")


def downgrade() -> None:
    op.create_index("ix_sales_merchant_id", "sales", ["merchant_id"], unique=False)
