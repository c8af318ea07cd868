"""Service requests, their append-only history, work orders and return visits (seed 003's flow:
服务请求 → 服务受理 → 工单派发 → 维修处理 → 服务回访).

The history (`service_request_events`) is the source of truth for everything time-based: the SLA
clocks are recomputed from it (crm_core/service/sla.py), so a calendar change gives exact figures.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class RequestType(enum.StrEnum):
    ENQUIRY = "enquiry"
    COMPLAINT = "complaint"
    REPAIR = "repair"
    SUGGESTION = "suggestion"
    RETURN_VISIT = "return_visit"


class Priority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class RequestState(enum.StrEnum):
    NEW = "new"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    WAITING_CUSTOMER = "waiting_customer"
    RESOLVED = "resolved"
    CLOSED = "closed"
    MERGED = "merged"


OPEN_STATES = frozenset(
    {RequestState.NEW, RequestState.ASSIGNED, RequestState.IN_PROGRESS, RequestState.WAITING_CUSTOMER}
)


class ServiceRequest(Base):
    __tablename__ = "service_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    no: Mapped[str] = mapped_column(String(24), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(20), default=RequestState.NEW)
    team_id: Mapped[int] = mapped_column(ForeignKey("org_units.id"))
    owner_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    phone_e164: Mapped[str | None] = mapped_column(String(20))
    call_id: Mapped[str | None] = mapped_column(String(64), index=True)  # 进线记录: the call's Linkedid
    subject: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)  # 报修类别
    resolution: Mapped[str | None] = mapped_column(Text)  # 处理结果
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    first_response_at: Mapped[dt.datetime | None]
    resolved_at: Mapped[dt.datetime | None]
    closed_at: Mapped[dt.datetime | None]
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("service_requests.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (
        Index("ix_sr_team_state", "team_id", "state"),
        Index("ix_sr_owner_state", "owner_user_id", "state"),
        Index("ix_sr_member_created", "member_id", "created_at"),
    )


class ServiceRequestEvent(Base):
    """One thing that happened to a request; never updated or deleted."""

    __tablename__ = "service_request_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # created | state | assigned | transferred | responded | comment | merged | priority | escalated
    kind: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_sre_request_at", "request_id", "at", "id"),)


class WorkOrderState(enum.StrEnum):
    REGISTERED = "registered"  # 登记
    DISPATCHED = "dispatched"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"


class WorkOrder(Base):
    __tablename__ = "work_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id", ondelete="CASCADE"), index=True)
    no: Mapped[str] = mapped_column(String(24), unique=True)
    kind: Mapped[str] = mapped_column(String(24))  # repair | return_repair | onsite | ...
    state: Mapped[str] = mapped_column(String(16), default=WorkOrderState.REGISTERED)
    owner_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    planned_minutes: Mapped[int | None]  # 计划工时
    actual_minutes: Mapped[int | None]  # 实际工时
    planned_end: Mapped[dt.datetime | None]
    actual_start: Mapped[dt.datetime | None]
    actual_end: Mapped[dt.datetime | None]
    note: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReturnVisitState(enum.StrEnum):
    SCHEDULED = "scheduled"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ReturnVisit(Base):
    __tablename__ = "return_visits"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id", ondelete="CASCADE"), unique=True)
    due_at: Mapped[dt.datetime] = mapped_column(index=True)
    state: Mapped[str] = mapped_column(String(16), default=ReturnVisitState.SCHEDULED)
    owner_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    outcome: Mapped[str | None] = mapped_column(Text)
    score: Mapped[int | None]  # 1–5
    done_at: Mapped[dt.datetime | None]


class TeamRotation(Base):
    """Round-robin pointer per team, in the database so that several servers agree on the next agent."""

    __tablename__ = "service_team_rotation"

    team_id: Mapped[int] = mapped_column(ForeignKey("org_units.id", ondelete="CASCADE"), primary_key=True)
    last_user_id: Mapped[int | None]
