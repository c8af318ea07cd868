"""Callback queue tables."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class Callback(Base):
    __tablename__ = "callbacks"
    __table_args__ = (
        # One open callback per caller number: a partial unique index (both engines support it), so a
        # second miss from the same number can only ever update the existing row.
        Index(
            "uq_callbacks_open_number",
            "phone_e164",
            unique=True,
            postgresql_where=text("status <> 'closed'"),
            sqlite_where=text("status <> 'closed'"),
        ),
        Index("ix_callbacks_queue_order", "status", "priority", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    phone_e164: Mapped[str] = mapped_column(String(20))
    phone_raw: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(16))  # open | claimed | closed
    close_reason: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))  # abandoned | no_answer | after_hours | queue_timeout
    queue: Mapped[str | None] = mapped_column(String(64))
    miss_count: Mapped[int] = mapped_column(Integer, default=1)
    longest_wait_s: Mapped[float] = mapped_column(default=0.0)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    first_missed_at: Mapped[dt.datetime]
    last_missed_at: Mapped[dt.datetime]
    due_at: Mapped[dt.datetime]
    next_attempt_at: Mapped[dt.datetime | None]
    claimed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    claimed_at: Mapped[dt.datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    closed_at: Mapped[dt.datetime | None]
    closed_by_linkedid: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CallbackMiss(Base):
    """Each missed call folded into a callback; the unique linkedid makes a replayed miss a no-op."""

    __tablename__ = "callback_misses"
    __table_args__ = (UniqueConstraint("pbx", "linkedid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    callback_id: Mapped[int] = mapped_column(ForeignKey("callbacks.id", ondelete="CASCADE"), index=True)
    pbx: Mapped[str] = mapped_column(String(32), default="default")
    linkedid: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    wait_s: Mapped[float] = mapped_column(default=0.0)
    missed_at: Mapped[dt.datetime]


class CallbackAttempt(Base):
    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    callback_id: Mapped[int] = mapped_column(ForeignKey("callbacks.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    outcome: Mapped[str] = mapped_column(String(16))  # reached | no_answer | busy | wrong_number
    linkedid: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(String(500))
    attempted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
