"""Service-desk input shapes (pydantic v2): what the API and the importer accept."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from crm_core.service.models import Priority, RequestType


class RequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: RequestType
    subject: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=20_000)
    team_id: int | None = None  # default: the creator's team
    member_id: int | None = None
    phone: str | None = Field(default=None, max_length=40)
    call_id: str | None = Field(default=None, max_length=64)
    priority: Priority | None = None  # default: from the type and the member's tier
    categories: list[str] = Field(default_factory=list, max_length=20)


class WorkOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: str = Field(min_length=1, max_length=24)
    owner_user_id: int | None = None
    planned_minutes: int | None = Field(default=None, ge=0, le=100_000)
    note: str = Field(default="", max_length=5_000)
