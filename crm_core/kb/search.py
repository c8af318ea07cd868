"""The knowledge base's full-text index and search, one implementation per engine.

PostgreSQL: `kb_search(article_id, document tsvector)` with a GIN index; the document is the
jieba-segmented title (weight A) and body (weight B) under the 'simple' configuration (no stemming,
no stop words: the tokens are already words). SQLite: the FTS5 table `kb_fts(title, body)` whose rowid
is the article id, over the same space-separated tokens (unicode61 then sees one token per word).

A query is all its terms (AND); when that finds nothing, any of them (OR), best matches first, so
"会员积分" still finds an article that only speaks of 积分. On PostgreSQL a query that matches more
than CANDIDATES articles ranks the newest CANDIDATES of them (measured: scripts/bench/kb_search.py).
Only approved, unarchived versions are indexed: a draft is never found by agents.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.kb import segment

CANDIDATES = 500  # PostgreSQL: matches ranked per query (see search_ids)


@dataclass(frozen=True, slots=True)
class Hit:
    article_id: int
    rank: float


def _dialect(session: AsyncSession) -> str:
    assert session.bind is not None
    return session.bind.dialect.name


async def index_article(session: AsyncSession, article_id: int, title: str, body: str) -> None:
    title_tokens = " ".join(segment.index_tokens(title))
    body_tokens = " ".join(await segment.index_tokens_async(body))
    if _dialect(session) == "postgresql":
        await session.execute(
            text(
                "INSERT INTO kb_search (article_id, document) VALUES (:id, "
                "setweight(to_tsvector('simple', :title), 'A') || setweight(to_tsvector('simple', :body), 'B')) "
                "ON CONFLICT (article_id) DO UPDATE SET document = EXCLUDED.document"
            ),
            {"id": article_id, "title": title_tokens, "body": body_tokens},
        )
    else:
        await session.execute(text("DELETE FROM kb_fts WHERE rowid = :id"), {"id": article_id})
        await session.execute(
            text("INSERT INTO kb_fts (rowid, title, body) VALUES (:id, :title, :body)"),
            {"id": article_id, "title": title_tokens, "body": body_tokens},
        )


async def unindex_article(session: AsyncSession, article_id: int) -> None:
    table, key = ("kb_search", "article_id") if _dialect(session) == "postgresql" else ("kb_fts", "rowid")
    await session.execute(text(f"DELETE FROM {table} WHERE {key} = :id"), {"id": article_id})


def _pg_query(terms: list[list[str]], joiner: str) -> str:
    """Terms hold only letters, digits and CJK (segment._clean), so quoting them is enough."""

    def one(term: list[str]) -> str:
        if len(term) == 1:
            return f"'{term[0]}'"
        return "('" + term[0] + "' | (" + " & ".join(f"'{p}'" for p in term[1:]) + "))"

    return f" {joiner} ".join(one(t) for t in terms)


def _fts_query(terms: list[list[str]], joiner: str) -> str:
    def one(term: list[str]) -> str:
        if len(term) == 1:
            return f'"{term[0]}"'
        return f'("{term[0]}" OR (' + " AND ".join(f'"{p}"' for p in term[1:]) + "))"

    return f" {joiner} ".join(one(t) for t in terms)


async def search_ids(
    session: AsyncSession, query: str, *, visible_sql: str, params: dict[str, object], limit: int = 20
) -> tuple[list[Hit], list[str]]:
    """Article ids best first, and the words to highlight. `visible_sql` is a condition on `a`
    (kb_articles) with its own bind parameters, for category and team filters."""
    terms = segment.query_terms(query)
    if not terms:
        return [], []
    words = [word for term in terms for word in term]
    postgres = _dialect(session) == "postgresql"
    for joiner in ("AND", "OR") if len(terms) > 1 or len(terms[0]) > 1 else ("AND",):
        if postgres:
            # Ranking reads every matching document: a word in most articles (积分) costs ~40 ms over
            # 10,000 of them. So the newest CANDIDATES matches are ranked, which a GIN bitmap scan and
            # a sort of ids find in a few milliseconds; narrower queries never reach the cap.
            sql = (
                "WITH c AS MATERIALIZED (SELECT s.article_id FROM kb_search s "
                "JOIN kb_articles a ON a.id = s.article_id "
                f"WHERE s.document @@ to_tsquery('simple', :q) AND {visible_sql} "
                "ORDER BY s.article_id DESC LIMIT :candidates) "
                "SELECT s.article_id, ts_rank(s.document, to_tsquery('simple', :q)) AS rank "
                "FROM c JOIN kb_search s ON s.article_id = c.article_id "
                "ORDER BY rank DESC, s.article_id DESC LIMIT :limit"
            )
            q = _pg_query(terms, "&") if joiner == "AND" else " | ".join(f"'{w}'" for w in words)
        else:
            sql = (
                "SELECT kb_fts.rowid AS article_id, -bm25(kb_fts, 10.0, 1.0) AS rank "
                "FROM kb_fts JOIN kb_articles a ON a.id = kb_fts.rowid "
                f"WHERE kb_fts MATCH :q AND {visible_sql} ORDER BY rank DESC, kb_fts.rowid LIMIT :limit"
            )
            q = _fts_query(terms, "AND") if joiner == "AND" else " OR ".join(f'"{w}"' for w in words)
        bind = {"q": q, "limit": limit, "candidates": CANDIDATES, **params}
        rows = (await session.execute(text(sql), bind)).all()
        if rows:
            return [Hit(int(r.article_id), float(r.rank)) for r in rows], words
    return [], words


def snippet(body: str, terms: list[str], width: int = 60) -> str:
    """A short excerpt around the first term found, HTML-escaped, with the terms in <mark>."""
    lowered = body.lower()
    positions = [p for p in (lowered.find(t) for t in terms) if p >= 0]
    start = max(min(positions) - width // 3, 0) if positions else 0
    excerpt = body[start : start + width]
    out: list[str] = []
    if terms:
        pattern = re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)), re.IGNORECASE)
        position = 0
        for match in pattern.finditer(excerpt):
            out += [html.escape(excerpt[position : match.start()]), f"<mark>{html.escape(match.group(0))}</mark>"]
            position = match.end()
        excerpt = excerpt[position:]
    out.append(html.escape(excerpt))
    return ("…" if start else "") + "".join(out) + ("…" if start + width < len(body) else "")
