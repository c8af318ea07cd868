"""members, cards, contacts, organisations, users and field permissions

Revision ID: 0001
Revises:
Create Date: 2026-11-24 14:04:55.327335
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import crm_core.db

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "field_permissions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_field_permissions")),
        sa.UniqueConstraint("role", "entity", "field", name=op.f("uq_field_permissions_role_entity_field")),
    )
    op.create_table(
        "number_sequences",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("next_value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_number_sequences")),
    )
    op.create_table(
        "org_units",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["org_units.id"], name=op.f("fk_org_units_parent_id_org_units")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_units")),
        sa.UniqueConstraint("code", name=op.f("uq_org_units_code")),
    )
    with op.batch_alter_table("org_units", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_org_units_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_org_units_path"), ["path"], unique=False)

    op.create_table(
        "organisations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("org_type", sa.String(length=16), nullable=False),
        sa.Column("phone_e164", sa.String(length=20), nullable=True),
        sa.Column("credit_code", sa.String(length=18), nullable=True),
        sa.Column("created_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisations")),
        sa.UniqueConstraint("credit_code", name=op.f("uq_organisations_credit_code")),
    )
    with op.batch_alter_table("organisations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_organisations_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_organisations_phone_e164"), ["phone_e164"], unique=False)

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("org_unit_id", sa.Integer(), nullable=True),
        sa.Column("data_scope", sa.String(length=32), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", crm_core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_unit_id"], ["org_units.id"], name=op.f("fk_users_org_unit_id_org_units")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_users_org_unit_id"), ["org_unit_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_users_role"), ["role"], unique=False)

    op.create_table(
        "members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_no", sa.String(length=32), nullable=False),
        sa.Column("customer_type", sa.String(length=16), nullable=False),
        sa.Column("member_type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("gender", sa.String(length=8), nullable=True),
        sa.Column("birthday", sa.Date(), nullable=True),
        sa.Column("id_type", sa.String(length=16), nullable=True),
        sa.Column("id_number", sa.String(length=32), nullable=True),
        sa.Column("mobile_e164", sa.String(length=20), nullable=True),
        sa.Column("email", sa.String(length=50), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=True),
        sa.Column("organisation_id", sa.Integer(), nullable=True),
        sa.Column("owner_user_id", sa.Integer(), nullable=True),
        sa.Column("org_unit_id", sa.Integer(), nullable=True),
        sa.Column("remark", sa.String(length=500), nullable=True),
        sa.Column("created_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["org_unit_id"], ["org_units.id"], name=op.f("fk_members_org_unit_id_org_units")),
        sa.ForeignKeyConstraint(
            ["organisation_id"], ["organisations.id"], name=op.f("fk_members_organisation_id_organisations")
        ),
        sa.ForeignKeyConstraint(["owner_user_id"], ["users.id"], name=op.f("fk_members_owner_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_members")),
        sa.UniqueConstraint("member_no", name=op.f("uq_members_member_no")),
        sa.UniqueConstraint("mobile_e164", name=op.f("uq_members_mobile_e164")),
    )
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.create_index("ix_members_id_type_number", ["id_type", "id_number"], unique=False)
        batch_op.create_index(batch_op.f("ix_members_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_members_org_unit_id"), ["org_unit_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_members_organisation_id"), ["organisation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_members_owner_user_id"), ["owner_user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_members_status"), ["status"], unique=False)

    op.create_table(
        "member_addresses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("province", sa.String(length=20), nullable=False),
        sa.Column("city", sa.String(length=20), nullable=False),
        sa.Column("district", sa.String(length=20), nullable=True),
        sa.Column("detail", sa.String(length=200), nullable=False),
        sa.Column("postcode", sa.String(length=6), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_member_addresses_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_addresses")),
    )
    with op.batch_alter_table("member_addresses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_addresses_member_id"), ["member_id"], unique=False)

    op.create_table(
        "member_cards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("card_no", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("issued_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status_changed_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("replaces_card_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_cards_member_id_members"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["replaces_card_id"],
            ["member_cards.id"],
            name=op.f("fk_member_cards_replaces_card_id_member_cards"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_cards")),
        sa.UniqueConstraint("card_no", name=op.f("uq_member_cards_card_no")),
    )
    with op.batch_alter_table("member_cards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_cards_member_id"), ["member_id"], unique=False)

    op.create_table(
        "member_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("changed_by", sa.Integer(), nullable=True),
        sa.Column("changed_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["changed_by"], ["users.id"], name=op.f("fk_member_changes_changed_by_users")),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_member_changes_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_changes")),
    )
    with op.batch_alter_table("member_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_changes_member_id"), ["member_id"], unique=False)

    op.create_table(
        "member_contacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("phone_e164", sa.String(length=20), nullable=False),
        sa.Column("contact_name", sa.String(length=50), nullable=True),
        sa.Column("relation", sa.String(length=20), nullable=True),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.Column("created_at", crm_core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_member_contacts_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_contacts")),
        sa.UniqueConstraint(
            "member_id", "kind", "phone_e164", name=op.f("uq_member_contacts_member_id_kind_phone_e164")
        ),
    )
    with op.batch_alter_table("member_contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_contacts_member_id"), ["member_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_member_contacts_phone_e164"), ["phone_e164"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("member_contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_contacts_phone_e164"))
        batch_op.drop_index(batch_op.f("ix_member_contacts_member_id"))

    op.drop_table("member_contacts")
    with op.batch_alter_table("member_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_changes_member_id"))

    op.drop_table("member_changes")
    with op.batch_alter_table("member_cards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_cards_member_id"))

    op.drop_table("member_cards")
    with op.batch_alter_table("member_addresses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_addresses_member_id"))

    op.drop_table("member_addresses")
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_members_status"))
        batch_op.drop_index(batch_op.f("ix_members_owner_user_id"))
        batch_op.drop_index(batch_op.f("ix_members_organisation_id"))
        batch_op.drop_index(batch_op.f("ix_members_org_unit_id"))
        batch_op.drop_index(batch_op.f("ix_members_name"))
        batch_op.drop_index("ix_members_id_type_number")

    op.drop_table("members")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_role"))
        batch_op.drop_index(batch_op.f("ix_users_org_unit_id"))

    op.drop_table("users")
    with op.batch_alter_table("organisations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_organisations_phone_e164"))
        batch_op.drop_index(batch_op.f("ix_organisations_name"))

    op.drop_table("organisations")
    with op.batch_alter_table("org_units", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_org_units_path"))
        batch_op.drop_index(batch_op.f("ix_org_units_parent_id"))

    op.drop_table("org_units")
    op.drop_table("number_sequences")
    op.drop_table("field_permissions")
