"""Knowledge-base workflow: draft → in_review → approved (published) → archived, with versions.

Editing an approved article makes a new draft version; agents keep reading the approved one until
the new one is approved, which supersedes it. The reviewer must not be the version's author
(审核 by a second person). Who may do what:

* read approved articles: everyone signed in; an article limited to a team is read by that team (and
  its sub-units), supervisors above it, CRM staff and administrators;
* write drafts and submit them: supervisors, CRM staff, administrators;
* approve, reject, archive: supervisors and administrators.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import utcnow
from crm_core.kb import search
from crm_core.kb.models import KbArticle, KbCategory, KbVersion, VersionState
from crm_core.security.models import OrgUnit
from crm_core.security.policy import Principal, Role

AUTHORS = frozenset({Role.SUPERVISOR, Role.CRM_STAFF, Role.ADMIN})
REVIEWERS = frozenset({Role.SUPERVISOR, Role.ADMIN})
OPEN_VERSIONS = (VersionState.DRAFT, VersionState.REJECTED, VersionState.IN_REVIEW)


class KbError(Exception):
    status = 400


class NotFound(KbError):
    status = 404


class NotAllowed(KbError):
    status = 403


class Conflict(KbError):
    status = 409


def _require(principal: Principal, roles: frozenset[Role], what: str) -> None:
    if principal.role not in roles:
        raise NotAllowed(f"your role may not {what}")


def _visible_sql(principal: Principal) -> tuple[str, dict[str, object]]:
    """Condition on `a` (kb_articles) for search: unarchived, and the team rule."""
    if principal.role in (Role.ADMIN, Role.CRM_STAFF):
        return "a.archived = false", {}
    if principal.org_unit_path is None:
        return "a.archived = false AND a.team_id IS NULL", {}
    return (
        "a.archived = false AND (a.team_id IS NULL OR a.team_id IN "
        "(SELECT id FROM org_units WHERE path LIKE :team_prefix) "
        "OR :unit_path LIKE (SELECT path FROM org_units WHERE id = a.team_id) || '%')",
        {"team_prefix": principal.org_unit_path + "%", "unit_path": principal.org_unit_path},
    )


async def add_category(
    session: AsyncSession, principal: Principal, name: str, parent_id: int | None = None
) -> KbCategory:
    _require(principal, AUTHORS, "edit the knowledge base")
    parent = await session.get(KbCategory, parent_id) if parent_id is not None else None
    if parent_id is not None and parent is None:
        raise NotFound(f"no category {parent_id}")
    category = KbCategory(name=name, parent_id=parent_id)
    session.add(category)
    await session.flush()
    category.path = f"{parent.path if parent else '/'}{category.id}/"
    await session.flush()
    return category


async def categories(session: AsyncSession) -> list[dict[str, Any]]:
    counts = dict(
        (
            await session.execute(
                select(KbArticle.category_id, func.count())
                .where(KbArticle.archived.is_(False), KbArticle.approved_version_id.is_not(None))
                .group_by(KbArticle.category_id)
            )
        ).all()
    )
    rows = (await session.execute(select(KbCategory).order_by(KbCategory.path))).scalars()
    return [
        {
            "id": c.id,
            "name": c.name,
            "parent_id": c.parent_id,
            "depth": c.path.count("/") - 2,
            "articles": counts.get(c.id, 0),
        }
        for c in rows
    ]


async def create_article(
    session: AsyncSession, principal: Principal, *, category_id: int, title: str, body: str, team_id: int | None = None
) -> KbArticle:
    _require(principal, AUTHORS, "write articles")
    if await session.get(KbCategory, category_id) is None:
        raise NotFound(f"no category {category_id}")
    if team_id is not None and await session.get(OrgUnit, team_id) is None:
        raise NotFound(f"no team {team_id}")
    article = KbArticle(category_id=category_id, team_id=team_id, created_by_user_id=principal.user_id or None)
    session.add(article)
    await session.flush()
    session.add(
        KbVersion(article_id=article.id, number=1, title=title, body=body, author_user_id=principal.user_id or None)
    )
    await session.flush()
    return article


async def _open_version(session: AsyncSession, article_id: int) -> KbVersion | None:
    return (
        await session.execute(
            select(KbVersion)
            .where(KbVersion.article_id == article_id, KbVersion.state.in_([str(s) for s in OPEN_VERSIONS]))
            .order_by(KbVersion.number.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def _article(session: AsyncSession, article_id: int) -> KbArticle:
    article = await session.get(KbArticle, article_id, populate_existing=True)
    if article is None:
        raise NotFound(f"no article {article_id}")
    return article


async def edit(session: AsyncSession, principal: Principal, article_id: int, *, title: str, body: str) -> KbVersion:
    """Change the open draft, or start a new version from the approved one."""
    _require(principal, AUTHORS, "write articles")
    article = await _article(session, article_id)
    if article.archived:
        raise Conflict("the article is archived")
    draft = await _open_version(session, article_id)
    if draft is not None and draft.state == VersionState.IN_REVIEW:
        raise Conflict("a version is in review: approve or reject it first")
    if draft is None:
        last = (
            await session.execute(select(func.max(KbVersion.number)).where(KbVersion.article_id == article_id))
        ).scalar_one()
        draft = KbVersion(
            article_id=article_id,
            number=int(last or 0) + 1,
            title=title,
            body=body,
            author_user_id=principal.user_id or None,
        )
        session.add(draft)
    else:
        draft.title, draft.body, draft.state = title, body, VersionState.DRAFT
        draft.author_user_id = principal.user_id or draft.author_user_id
    article.updated_at = utcnow()
    await session.flush()
    return draft


async def submit(session: AsyncSession, principal: Principal, article_id: int) -> KbVersion:
    _require(principal, AUTHORS, "submit articles")
    draft = await _open_version(session, article_id)
    if draft is None or draft.state == VersionState.IN_REVIEW:
        raise Conflict("nothing to submit: no draft")
    draft.state = VersionState.IN_REVIEW
    await session.flush()
    return draft


async def review(
    session: AsyncSession, principal: Principal, article_id: int, *, approve: bool, note: str | None = None
) -> KbVersion:
    """Approve (publish) or reject the version in review; of concurrent reviews one decides."""
    _require(principal, REVIEWERS, "review articles")
    pending = await _open_version(session, article_id)
    if pending is None or pending.state != VersionState.IN_REVIEW:
        raise Conflict("no version is in review")
    if pending.author_user_id == principal.user_id:
        raise NotAllowed("a second person must review: you wrote this version")
    now = utcnow()
    decided = await session.execute(
        update(KbVersion)
        .where(KbVersion.id == pending.id, KbVersion.state == VersionState.IN_REVIEW)
        .values(
            state=VersionState.APPROVED if approve else VersionState.REJECTED,
            reviewer_user_id=principal.user_id or None,
            reviewed_at=now,
            review_note=note,
        )
        .execution_options(synchronize_session=False)
    )
    if decided.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("someone else reviewed it first")
    if approve:
        article = await _article(session, article_id)
        if article.approved_version_id is not None:
            await session.execute(
                update(KbVersion)
                .where(KbVersion.id == article.approved_version_id)
                .values(state=VersionState.SUPERSEDED)
                .execution_options(synchronize_session=False)
            )
        article.approved_version_id = pending.id
        article.updated_at = now
        await session.flush()
        await search.index_article(session, article_id, pending.title, pending.body)
    await session.refresh(pending)
    return pending


async def archive(session: AsyncSession, principal: Principal, article_id: int) -> None:
    _require(principal, REVIEWERS, "archive articles")
    article = await _article(session, article_id)
    article.archived = True
    article.updated_at = utcnow()
    if article.approved_version_id is not None:
        await session.execute(
            update(KbVersion)
            .where(KbVersion.id == article.approved_version_id)
            .values(state=VersionState.ARCHIVED)
            .execution_options(synchronize_session=False)
        )
    await session.flush()
    await search.unindex_article(session, article_id)


async def _readable(session: AsyncSession, principal: Principal, article: KbArticle) -> bool:
    if principal.role in (Role.ADMIN, Role.CRM_STAFF) or article.team_id is None:
        return True
    if principal.org_unit_path is None:
        return False
    team_path = (await session.execute(select(OrgUnit.path).where(OrgUnit.id == article.team_id))).scalar_one()
    return team_path.startswith(principal.org_unit_path) or principal.org_unit_path.startswith(team_path)


def _version(v: KbVersion) -> dict[str, Any]:
    return {
        "id": v.id,
        "number": v.number,
        "title": v.title,
        "body": v.body,
        "state": v.state,
        "author_user_id": v.author_user_id,
        "created_at": v.created_at.isoformat(),
        "reviewer_user_id": v.reviewer_user_id,
        "reviewed_at": v.reviewed_at.isoformat() if v.reviewed_at else None,
        "review_note": v.review_note,
    }


async def read(
    session: AsyncSession, principal: Principal, article_id: int, *, count_view: bool = True
) -> dict[str, Any]:
    """The approved version (authors also get the versions list); counts a view (浏览次数)."""
    article = await _article(session, article_id)
    if not await _readable(session, principal, article):
        raise NotFound(f"no article {article_id}")
    versions = list(
        (
            await session.execute(
                select(KbVersion).where(KbVersion.article_id == article_id).order_by(KbVersion.number)
            )
        ).scalars()
    )
    approved = next((v for v in versions if v.id == article.approved_version_id), None)
    author = principal.role in AUTHORS
    if (approved is None or article.archived) and not author:
        raise NotFound(f"no article {article_id}")
    if count_view and approved is not None:
        await session.execute(
            update(KbArticle)
            .where(KbArticle.id == article_id)
            .values(views=KbArticle.views + 1)
            .execution_options(synchronize_session=False)
        )
    return {
        "id": article.id,
        "category_id": article.category_id,
        "team_id": article.team_id,
        "archived": article.archived,
        "views": article.views + (1 if count_view and approved is not None else 0),
        "approved": _version(approved) if approved else None,
        "versions": [_version(v) for v in versions] if author else None,
    }


async def search_articles(
    session: AsyncSession, principal: Principal, query: str, *, category_id: int | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """Approved articles matching `query` (Chinese segmented), best first, with highlighted snippets."""
    if len(query) > 200:
        raise KbError("the query is too long (200 characters at most)")
    condition, params = _visible_sql(principal)
    if category_id is not None:
        condition += " AND a.category_id IN (SELECT id FROM kb_categories WHERE path LIKE :category_prefix)"
        path = (await session.execute(select(KbCategory.path).where(KbCategory.id == category_id))).scalar_one_or_none()
        if path is None:
            raise NotFound(f"no category {category_id}")
        params = params | {"category_prefix": path + "%"}
    hits, terms = await search.search_ids(
        session, query, visible_sql=condition, params=params, limit=min(max(limit, 1), 50)
    )
    if not hits:
        return []
    rows = await session.execute(
        select(
            KbArticle.id, KbArticle.category_id, KbArticle.views, KbVersion.title, KbVersion.body, KbVersion.reviewed_at
        )
        .join(KbVersion, KbVersion.id == KbArticle.approved_version_id)
        .where(KbArticle.id.in_([h.article_id for h in hits]))
    )
    by_id = {r.id: r for r in rows.all()}
    return [
        {
            "id": h.article_id,
            "title": by_id[h.article_id].title,
            "snippet": search.snippet(by_id[h.article_id].body, terms),
            "category_id": by_id[h.article_id].category_id,
            "views": by_id[h.article_id].views,
            "rank": round(h.rank, 4),
            "published_at": _iso(by_id[h.article_id].reviewed_at),
        }
        for h in hits
        if h.article_id in by_id
    ]


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


async def review_queue(session: AsyncSession, principal: Principal) -> list[dict[str, Any]]:
    _require(principal, REVIEWERS, "review articles")
    rows = await session.execute(
        select(KbVersion).where(KbVersion.state == VersionState.IN_REVIEW).order_by(KbVersion.created_at)
    )
    return [_version(v) | {"article_id": v.article_id} for v in rows.scalars()]
