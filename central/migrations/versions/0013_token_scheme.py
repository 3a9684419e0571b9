"""The scheme the members' tokens are made by (issue 16 item 5): a union switching to
the memory-hard scheme re-tokenises every member in one import, and publishes no
roster while its tokens and its keys disagree. A database that already holds members
holds tokens of the first scheme (HMAC-SHA256). A member's earlier tokens (a new card,
a new scheme) are kept with the time they were replaced, so the audit still finds the
member behind a sale made with one.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "member_tokens",
        sa.Column("token", sa.String(length=32), primary_key=True),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("until", sa.String(length=32), nullable=False),
    )
    op.create_index("ix_member_tokens_member_id", "member_tokens", ["member_id"])
    op.create_table(
        "union_settings",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("value", sa.String(length=256), nullable=False),
    )
    op.execute(
        "INSERT INTO union_settings (name, value) SELECT 'token_scheme', 'hmac-sha256-128' "
        "WHERE EXISTS (SELECT 1 FROM members)"
    )


def downgrade() -> None:
    op.drop_table("union_settings")
    op.drop_index("ix_member_tokens_member_id", table_name="member_tokens")
    op.drop_table("member_tokens")
