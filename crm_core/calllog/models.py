"""Call log tables. Written idempotently from the telephony side (cti) on each state change."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class Call(Base):
    """One conversation as the caller lived it, across queue, agents and transfers."""

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("pbx", "linkedid"),
        Index("ix_calls_started", "started_at", "id"),  # keyset pagination of the call-log review
        Index("ix_calls_agent_started", "agent_user_id", "started_at", "id"),  # the review filtered by agent
        Index("ix_calls_outcome_started", "outcome", "started_at", "id"),  # … by outcome (abandoned, missed)
        Index("ix_calls_caller", "caller_e164", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pbx: Mapped[str] = mapped_column(String(32), default="default")  # ids are unique per PBX only
    linkedid: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # live | ended
    direction: Mapped[str] = mapped_column(String(16))  # inbound | outbound | internal
    caller_raw: Mapped[str | None] = mapped_column(String(64))
    caller_e164: Mapped[str | None] = mapped_column(String(20))
    caller_name: Mapped[str | None] = mapped_column(String(100))
    callee_raw: Mapped[str | None] = mapped_column(String(64))
    callee_e164: Mapped[str | None] = mapped_column(String(20), index=True)
    dnis: Mapped[str | None] = mapped_column(String(32))  # which 400 line was dialled
    queue: Mapped[str | None] = mapped_column(String(64), index=True)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"), index=True)
    agent_endpoint: Mapped[str | None] = mapped_column(String(64))
    agent_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # ix_calls_agent_started
    started_at: Mapped[dt.datetime]
    answered_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    wait_s: Mapped[float | None] = mapped_column(Float)
    ring_s: Mapped[float | None] = mapped_column(Float)
    talk_s: Mapped[float | None] = mapped_column(Float)
    wrapup_s: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(String(16))  # answered|abandoned|no_answer|busy|failed|lost
    hangup_cause: Mapped[str | None] = mapped_column(String(32))
    disposition: Mapped[str | None] = mapped_column(String(32))
    recording_file: Mapped[str | None] = mapped_column(String(255))
    cti_call_id: Mapped[str | None] = mapped_column(String(64), index=True)  # our id on click-to-dial
    transfers: Mapped[int] = mapped_column(Integer, default=0)
    # Monotonic per call: a write carrying an older revision than the stored one is ignored, so a
    # replayed or re-ordered write can never move the row backwards.
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CallAgent(Base):
    """Each time an agent was offered the call, in order; `answered` marks who took it."""

    __tablename__ = "call_agents"
    __table_args__ = (
        UniqueConstraint("call_id", "seq"),
        Index("ix_call_agents_user_call", "agent_user_id", "call_id"),  # call-log visibility: calls that rang me
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    agent_endpoint: Mapped[str] = mapped_column(String(64), index=True)
    agent_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    rang_at: Mapped[dt.datetime | None]
    ring_s: Mapped[float | None] = mapped_column(Float)
    answered: Mapped[bool] = mapped_column(Boolean, default=False)
    via: Mapped[str | None] = mapped_column(String(16))  # queue | direct | transfer | click_to_dial


class CallLeg(Base):
    """A channel of the call (Uniqueid), for the call detail timeline."""

    __tablename__ = "call_legs"
    __table_args__ = (UniqueConstraint("call_id", "uniqueid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    uniqueid: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))  # customer | agent | local | other
    started_at: Mapped[dt.datetime | None]
    answered_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    hangup_cause: Mapped[str | None] = mapped_column(String(32))
    extra: Mapped[dict[str, str] | None] = mapped_column(JSON)


class AgentStateLog(Base):
    """Agent state history with durations (ready, ringing, on call, wrap-up, paused with reason)."""

    __tablename__ = "agent_state_log"
    __table_args__ = (Index("ix_agent_state_agent_started", "agent_endpoint", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_endpoint: Mapped[str] = mapped_column(String(64))
    agent_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
