"""Knowledge-base tables. The search index (kb_search on PostgreSQL, the FTS5 table kb_fts on SQLite)
is not a model: each engine has its own kind, made by migration 0012 and kept by crm_core.kb.search."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class VersionState(enum.StrEnum):
    DRAFT = "draft"  # 起草
    IN_REVIEW = "in_review"
    APPROVED = "approved"  # 已审核 (published)
    REJECTED = "rejected"  # back to the author with a note; a new draft follows
    SUPERSEDED = "superseded"  # an older approved version
    ARCHIVED = "archived"


class KbCategory(Base):
    __tablename__ = "kb_categories"

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("kb_categories.id"))
    name: Mapped[str] = mapped_column(String(50))
    path: Mapped[str] = mapped_column(String(255), default="/")  # "/1/4/" like org units

    __table_args__ = (UniqueConstraint("parent_id", "name", name="uq_kb_category_name"),)


class KbArticle(Base):
    """An article; what agents read is its approved version, while a newer draft may be in review."""

    __tablename__ = "kb_articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("kb_categories.id"), index=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("org_units.id"))  # None: every team may read it
    approved_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("kb_versions.id", use_alter=True, ondelete="SET NULL")
    )
    archived: Mapped[bool] = mapped_column(default=False)
    views: Mapped[int] = mapped_column(default=0)  # 浏览次数
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class KbVersion(Base):
    __tablename__ = "kb_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("kb_articles.id", ondelete="CASCADE"))
    number: Mapped[int]
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(12), default=VersionState.DRAFT)
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reviewer_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reviewed_at: Mapped[dt.datetime | None]
    review_note: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        UniqueConstraint("article_id", "number", name="uq_kb_version_number"),
        Index("ix_kb_versions_state", "state"),
    )
