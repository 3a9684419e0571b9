"""The central store's schema as it stood before migrations (made then by
``metadata.create_all``): a database made by an earlier release is stamped at this
revision by ``unioncard central migrate``.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "members",
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("pan_last4", sa.String(length=4), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("tier", sa.Integer(), server_default="0", nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("district", sa.String(length=64), nullable=True),
        sa.Column("workplace", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("member_id"),
        sa.UniqueConstraint("token"),
    )
    op.create_table(
        "merchants",
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("basis_points", sa.Integer(), nullable=False),
        sa.Column("status_changed_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id"),
    )
    op.create_table(
        "sales",
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("sale_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=True),
        sa.Column("pan_last4", sa.String(length=4), nullable=False),
        sa.Column("member", sa.Boolean(), nullable=False),
        sa.Column("gross", sa.BigInteger(), nullable=False),
        sa.Column("discount", sa.BigInteger(), nullable=False),
        sa.Column("net", sa.BigInteger(), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("roster_version", sa.BigInteger(), nullable=False),
        sa.Column("policy_version", sa.BigInteger(), nullable=False),
        sa.Column("basket", sa.Text(), nullable=True),
        sa.Column("atc", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("ref_seq", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.String(length=800), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("sig", sa.String(length=128), nullable=True),
        sa.Column("received_at", sa.String(length=32), nullable=False),
        sa.Column("receipt_code", sa.String(length=11), nullable=True),
        sa.PrimaryKeyConstraint("terminal_id", "seq"),
        sa.UniqueConstraint("sale_id"),
    )
    op.create_index(op.f("ix_sales_merchant_id"), "sales", ["merchant_id"], unique=False)
    op.create_index(op.f("ix_sales_receipt_code"), "sales", ["receipt_code"], unique=False)
    op.create_table(
        "signed_files",
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "version"),
    )
    op.create_table(
        "upload_refusals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.String(length=32), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_upload_refusals_terminal_id"), "upload_refusals", ["terminal_id"], unique=False
    )
    op.create_table(
        "merchant_terms",
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        sa.Column("terms", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.merchant_id"],
        ),
        sa.PrimaryKeyConstraint("merchant_id"),
    )
    op.create_table(
        "terminals",
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("merchant_id", sa.String(length=32), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("enrolled_at", sa.String(length=32), nullable=False),
        sa.Column("device_key", sa.String(length=64), nullable=True),
        sa.Column("device_key_at", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.merchant_id"],
        ),
        sa.PrimaryKeyConstraint("terminal_id"),
    )


def downgrade() -> None:
    op.drop_table("terminals")
    op.drop_table("merchant_terms")
    op.drop_index(op.f("ix_upload_refusals_terminal_id"), table_name="upload_refusals")
    op.drop_table("upload_refusals")
    op.drop_table("signed_files")
    op.drop_index(op.f("ix_sales_receipt_code"), table_name="sales")
    op.drop_index(op.f("ix_sales_merchant_id"), table_name="sales")
    op.drop_table("sales")
    op.drop_table("merchants")
    op.drop_table("members")
