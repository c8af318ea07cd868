"""Communication records (交流记录, seed 001)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class CommunicationRecord(Base):
    __tablename__ = "communication_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(8))  # in | out
    category: Mapped[str] = mapped_column(String(16))  # enquiry|complaint|suggestion|return_visit|other
    urgency: Mapped[str] = mapped_column(String(16), default="normal")  # normal | important | urgent
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | in_progress | done
    summary: Mapped[str] = mapped_column(Text)
    contact_name: Mapped[str | None] = mapped_column(String(50))
    phone_e164: Mapped[str | None] = mapped_column(String(20))
    call_id: Mapped[str | None] = mapped_column(String(64), index=True)  # Asterisk Linkedid
    agent_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    # "Not contacted in N days" and the 360's latest records both read (member_id, created_at DESC).
    __table_args__ = (Index("ix_comm_member_created", "member_id", "created_at"),)
