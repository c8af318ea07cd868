"""SLA policies, the computed status of each request's clocks, and escalations fired (once each)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class SlaPolicy(Base):
    """Targets in business minutes for one (type, priority); type "*" is the fallback for any type."""

    __tablename__ = "sla_policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(8))
    first_response_minutes: Mapped[int]
    resolution_minutes: Mapped[int]
    warn_percent: Mapped[int] = mapped_column(default=80)  # level 0: a warning to the owner
    escalate_percent: Mapped[int] = mapped_column(default=150)  # level 2: past the due time, to the supervisors
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("type", "priority", name="uq_sla_policy_type_priority"),)


class SlaStatus(Base):
    """The clocks as last computed from the request's history (a cache: `sla.refresh` rewrites it)."""

    __tablename__ = "service_sla_status"

    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id", ondelete="CASCADE"), primary_key=True)
    response_due_at: Mapped[dt.datetime | None]
    response_at: Mapped[dt.datetime | None]
    response_breached: Mapped[bool] = mapped_column(default=False)
    resolution_due_at: Mapped[dt.datetime | None]
    resolution_at: Mapped[dt.datetime | None]
    resolution_breached: Mapped[bool] = mapped_column(default=False)
    resolution_used_s: Mapped[int] = mapped_column(default=0)  # business seconds on the resolution clock
    paused: Mapped[bool] = mapped_column(default=False)
    next_check_at: Mapped[dt.datetime | None] = mapped_column(index=True)  # the next threshold to escalate at
    computed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SlaEscalation(Base):
    """A warning or escalation that fired; the unique key makes each (request, clock, level) fire once."""

    __tablename__ = "sla_escalations"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id", ondelete="CASCADE"))
    clock: Mapped[str] = mapped_column(String(12))  # response | resolution
    level: Mapped[int]  # 0 warning (owner), 1 breached (team lead), 2 escalated (supervisors)
    fired_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("request_id", "clock", "level", name="uq_sla_escalation_once"),)
