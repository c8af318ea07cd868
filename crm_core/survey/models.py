"""One answer of the post-call IVR survey; unique per (pbx, call, question), so a replayed or
duplicated AMI UserEvent stores it once."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class SurveyResponse(Base):
    __tablename__ = "survey_responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    pbx: Mapped[str] = mapped_column(String(32))
    linkedid: Mapped[str] = mapped_column(String(64))
    question: Mapped[int] = mapped_column(default=1)
    score: Mapped[int]  # 1–5
    queue: Mapped[str | None] = mapped_column(String(64))
    dnis: Mapped[str | None] = mapped_column(String(32))
    # From the call log when the answer arrives (the agent who answered, the matched member); the
    # reports fall back to the call log for answers that came before the call's row was written.
    agent_endpoint: Mapped[str | None] = mapped_column(String(64))
    agent_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"), index=True)
    answered_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)

    __table_args__ = (
        UniqueConstraint("pbx", "linkedid", "question", name="uq_survey_answer_once"),
        Index("ix_survey_agent_answered", "agent_user_id", "answered_at"),
    )
