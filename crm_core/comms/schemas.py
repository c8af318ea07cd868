"""Pydantic shapes for communication records."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from crm_core.members import validation as v


class CommunicationIn(BaseModel):
    """A 交流记录 (seed 001): direction 呼入/呼出, category, urgency, status, summary."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    member_id: int
    direction: Literal["in", "out"]
    category: Literal["enquiry", "complaint", "suggestion", "return_visit", "other"]
    urgency: Literal["normal", "important", "urgent"] = "normal"
    status: Literal["pending", "in_progress", "done"] = "pending"
    summary: Annotated[str, Field(min_length=1, max_length=2000)]
    contact_name: str | None = Field(default=None, max_length=50)
    phone: str | None = None
    call_id: str | None = Field(default=None, max_length=64)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return None if not value else v.clean_phone(value)
