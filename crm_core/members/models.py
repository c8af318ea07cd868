"""Members, their contact points, addresses, organisations and cards."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class NumberSequence(Base):
    """Counters for member and card numbers: incremented with one UPDATE … RETURNING, so concurrent
    creators never get the same serial on either engine."""

    __tablename__ = "number_sequences"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_value: Mapped[int] = mapped_column(BigInteger, default=1)


class Organisation(Base):
    """A company or institution a member belongs to (企业客户 / 政府及事业单位)."""

    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    org_type: Mapped[str] = mapped_column(String(16))  # enterprise | government
    phone_e164: Mapped[str | None] = mapped_column(String(20), index=True)
    credit_code: Mapped[str | None] = mapped_column(String(18), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_no: Mapped[str] = mapped_column(String(32), unique=True)
    customer_type: Mapped[str] = mapped_column(String(16), default="personal")  # personal|enterprise|government
    member_type: Mapped[str] = mapped_column(String(16), default="standard")  # standard | gold | diamond
    # No index on status: five values over millions of rows; every status query is also keyed by id.
    status: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(50), index=True)
    gender: Mapped[str | None] = mapped_column(String(8))
    birthday: Mapped[dt.date | None] = mapped_column(Date)
    id_type: Mapped[str | None] = mapped_column(String(16))
    id_number: Mapped[str | None] = mapped_column(String(32))
    # The member's own mobile, unique: it is the duplicate-application key of the join workflow.
    mobile_e164: Mapped[str | None] = mapped_column(String(20), unique=True)
    email: Mapped[str | None] = mapped_column(String(50))
    source: Mapped[str | None] = mapped_column(String(16))
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    owner_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    org_unit_id: Mapped[int | None] = mapped_column(ForeignKey("org_units.id"), index=True)
    remark: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (Index("ix_members_id_type_number", "id_type", "id_number"),)


class MemberContact(Base):
    """Every phone reachable for a member: own mobile/home/work lines and contact persons.

    One table keyed by `phone_e164` so caller-ID lookup is a single index probe.
    """

    __tablename__ = "member_contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    # No index of its own: the unique (member_id, kind, phone_e164) index serves member_id lookups.
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # mobile | home | work | contact_person
    phone_e164: Mapped[str] = mapped_column(String(20), index=True)
    contact_name: Mapped[str | None] = mapped_column(String(50))
    relation: Mapped[str | None] = mapped_column(String(20))
    is_primary: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("member_id", "kind", "phone_e164"),)


class Address(Base):
    __tablename__ = "member_addresses"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="home")  # home | work | delivery
    province: Mapped[str] = mapped_column(String(20))
    city: Mapped[str] = mapped_column(String(20))
    district: Mapped[str | None] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(String(200))
    postcode: Mapped[str | None] = mapped_column(String(6))
    is_default: Mapped[bool] = mapped_column(default=False)


class Card(Base):
    __tablename__ = "member_cards"

    id: Mapped[int] = mapped_column(primary_key=True)
    card_no: Mapped[str] = mapped_column(String(32), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))  # active | lost | cancelled | replaced
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    replaces_card_id: Mapped[int | None] = mapped_column(ForeignKey("member_cards.id"))


class MemberChange(Base):
    """Field change history (003: 变动历史 with 字段名/原值/新值/修改人/修改时间)."""

    __tablename__ = "member_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    field: Mapped[str] = mapped_column(String(64))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    changed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
