"""drop indexes that bulk imports pay for and no query needs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 15:04:51.441550
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("member_contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_contacts_member_id"))

    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_members_status"))


def downgrade() -> None:
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_members_status"), ["status"], unique=False)

    with op.batch_alter_table("member_contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_contacts_member_id"), ["member_id"], unique=False)
