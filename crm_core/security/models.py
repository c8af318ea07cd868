"""Users, the organisation tree and per-role field permissions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class OrgUnit(Base):
    """A node of the organisation tree (seed 004: 集团/区域中心/公司/部门/团队).

    `path` makes a subtree scope a single prefix match.
    """

    __tablename__ = "org_units"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16), default="department")  # company | department | team
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("org_units.id"), index=True)
    # Materialised path of ids, e.g. "/1/4/9/": "department and below" is `path LIKE '/1/4/%'`.
    path: Mapped[str] = mapped_column(String(255), index=True, default="/")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32), index=True)
    org_unit_id: Mapped[int | None] = mapped_column(ForeignKey("org_units.id"), index=True)
    # Optional per-user override of the role's default data scope.
    data_scope: Mapped[str | None] = mapped_column(String(32))
    # The agent's softphone / SIP endpoint (e.g. "agent1001", "webrtc2001"): how AMI events find the user.
    agent_endpoint: Mapped[str | None] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class FieldPermissionRow(Base):
    """An administrator's override of the built-in field policy (crm_core.security.policy)."""

    __tablename__ = "field_permissions"
    __table_args__ = (UniqueConstraint("role", "entity", "field"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[str] = mapped_column(String(32))
    entity: Mapped[str] = mapped_column(String(32))
    field: Mapped[str] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(16))  # hidden | masked | read | write


class WebSession(Base):
    """A signed-in browser: the cookie carries a random token, the table only its SHA-256, so a
    leaked database does not leak live sessions. Kept in the database so a restart logs nobody out."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    remote: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
