"""communication records

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 14:06:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import crm_core.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "communication_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("contact_name", sa.String(length=50), nullable=True),
        sa.Column("phone_e164", sa.String(length=20), nullable=True),
        sa.Column("call_id", sa.String(length=64), nullable=True),
        sa.Column("agent_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_user_id"], ["users.id"], name=op.f("fk_communication_records_agent_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_communication_records_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_communication_records")),
    )
    with op.batch_alter_table("communication_records", schema=None) as batch_op:
        batch_op.create_index("ix_comm_member_created", ["member_id", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_communication_records_agent_user_id"), ["agent_user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_communication_records_call_id"), ["call_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("communication_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_communication_records_call_id"))
        batch_op.drop_index(batch_op.f("ix_communication_records_agent_user_id"))
        batch_op.drop_index("ix_comm_member_created")

    op.drop_table("communication_records")
