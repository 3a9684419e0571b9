"""The fleet view: each terminal's last contact and what it reported at the end of its
last sync (versions installed, entries pending, warnings, software), and revocation
(when, why, the last entry held then).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (
    ("last_contact_at", sa.String(length=32)),
    ("reported_at", sa.String(length=32)),
    ("root_version", sa.Integer()),
    ("snapshot_version", sa.Integer()),
    ("roster_version", sa.Integer()),
    ("policy_version", sa.Integer()),
    ("pending", sa.BigInteger()),
    ("warnings", sa.Text()),
    ("software", sa.String(length=64)),
    ("revoked_at", sa.String(length=32)),
    ("revoked_reason", sa.String(length=200)),
    ("revoked_last_seq", sa.BigInteger()),
)


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("terminals", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("terminals") as batch:  # SQLite drops a column by copying
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
