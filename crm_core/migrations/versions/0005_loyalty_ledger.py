"""loyalty points ledger: lots, append-only entries, allocations and per-member accounts

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 15:16:49.706175
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import crm_core.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "points_accounts",
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("valid", sa.BigInteger(), nullable=False),
        sa.Column("pending", sa.BigInteger(), nullable=False),
        sa.Column("lifetime", sa.BigInteger(), nullable=False),
        sa.Column("qualifying", sa.BigInteger(), nullable=False),
        sa.Column("debt", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("debt >= 0", name=op.f("ck_points_accounts_debt_not_negative")),
        sa.CheckConstraint("pending >= 0", name=op.f("ck_points_accounts_pending_not_negative")),
        sa.CheckConstraint("valid >= 0", name=op.f("ck_points_accounts_valid_not_negative")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_points_accounts_member_id_members"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_points_accounts")),
    )
    op.create_table(
        "points_lots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("qualifying", sa.Boolean(), nullable=False),
        sa.Column("earned_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", crm_core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("transaction_ref", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_points_lots_amount_positive")),
        sa.CheckConstraint("remaining >= 0 AND remaining <= amount", name=op.f("ck_points_lots_remaining_in_range")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_points_lots_member_id_members"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_lots")),
    )
    with op.batch_alter_table("points_lots", schema=None) as batch_op:
        batch_op.create_index("ix_points_lots_member_state_expires", ["member_id", "state", "expires_at"], unique=False)
        batch_op.create_index("ix_points_lots_member_transaction_ref", ["member_id", "transaction_ref"], unique=False)
        batch_op.create_index("ix_points_lots_state_expires", ["state", "expires_at"], unique=False)

    op.create_table(
        "points_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("valid_change", sa.BigInteger(), nullable=False),
        sa.Column("pending_change", sa.BigInteger(), nullable=False),
        sa.Column("debt_change", sa.BigInteger(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=True),
        sa.Column("ref", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_points_entries_created_by_users")),
        sa.ForeignKeyConstraint(["lot_id"], ["points_lots.id"], name=op.f("fk_points_entries_lot_id_points_lots")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_points_entries_member_id_members"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_entries")),
    )
    with op.batch_alter_table("points_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_points_entries_lot_id"), ["lot_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_points_entries_member_id"), ["member_id"], unique=False)

    op.create_table(
        "points_allocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_points_allocations_amount_positive")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["points_entries.id"], name=op.f("fk_points_allocations_entry_id_points_entries")
        ),
        sa.ForeignKeyConstraint(["lot_id"], ["points_lots.id"], name=op.f("fk_points_allocations_lot_id_points_lots")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_allocations")),
    )
    with op.batch_alter_table("points_allocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_points_allocations_entry_id"), ["entry_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_points_allocations_lot_id"), ["lot_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("points_allocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_points_allocations_lot_id"))
        batch_op.drop_index(batch_op.f("ix_points_allocations_entry_id"))

    op.drop_table("points_allocations")
    with op.batch_alter_table("points_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_points_entries_member_id"))
        batch_op.drop_index(batch_op.f("ix_points_entries_lot_id"))

    op.drop_table("points_entries")
    with op.batch_alter_table("points_lots", schema=None) as batch_op:
        batch_op.drop_index("ix_points_lots_state_expires")
        batch_op.drop_index("ix_points_lots_member_transaction_ref")
        batch_op.drop_index("ix_points_lots_member_state_expires")

    op.drop_table("points_lots")
    op.drop_table("points_accounts")
