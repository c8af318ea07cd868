"""In-panel notifications (SLA warnings and escalations today): stored per user, pushed when online."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    read_at: Mapped[dt.datetime | None]

    __table_args__ = (Index("ix_notifications_user_created", "user_id", "created_at"),)


# Who is told at once (a WebSocket push); set by the panel, None in jobs without a hub.
Pusher = Callable[[int, dict[str, Any]], None]


def as_dict(n: Notification) -> dict[str, Any]:
    return {
        "id": n.id,
        "kind": n.kind,
        "title": n.title,
        "body": n.body,
        "link": n.link,
        "created_at": n.created_at.isoformat(),
        "read": n.read_at is not None,
    }


async def notify(
    session: AsyncSession, user_ids: Iterable[int], *, kind: str, title: str, body: str = "", link: str | None = None
) -> list[Notification]:
    rows = [Notification(user_id=u, kind=kind, title=title, body=body, link=link) for u in sorted(set(user_ids))]
    session.add_all(rows)
    await session.flush()
    return rows


async def list_for(
    session: AsyncSession, user_id: int, *, unread_only: bool = False, limit: int = 50
) -> list[dict[str, Any]]:
    stmt = select(Notification).where(Notification.user_id == user_id)
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    rows = await session.execute(stmt.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit))
    return [as_dict(n) for n in rows.scalars()]


async def mark_read(session: AsyncSession, user_id: int, notification_id: int | None = None) -> int:
    """Mark one (or, with None, all) of the user's notifications read; returns how many changed."""
    stmt = update(Notification).where(Notification.user_id == user_id, Notification.read_at.is_(None))
    if notification_id is not None:
        stmt = stmt.where(Notification.id == notification_id)
    result = await session.execute(stmt.values(read_at=utcnow()).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
