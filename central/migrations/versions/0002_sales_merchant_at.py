"""A merchant's entries by time: the index the usage file's query (pact.usage) and
the statements read, so neither scans every sale of the union.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sales_merchant_at", "sales", ["merchant_id", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_sales_merchant_at", table_name="sales")
