"""Programmatic Alembic: `cti db upgrade|downgrade|current` and the tests use these."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from crm_core.db import make_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Tables that migrations make per engine and no model describes: the knowledge base's full-text
# index (FTS5 and its shadow tables on SQLite, a tsvector table on PostgreSQL).
UNMODELLED_PREFIXES = ("kb_fts", "kb_search")


def modelled(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's include_name: leave the unmodelled tables out of autogenerate's comparison."""
    return not (type_ == "table" and name is not None and name.startswith(UNMODELLED_PREFIXES))


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def _in_thread(fn_name: str, url: str, revision: str) -> None:
    # env.py runs its own event loop with asyncio.run; keep it off the caller's loop.
    getattr(command, fn_name)(alembic_config(url), revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`; running it again is a no-op."""
    await asyncio.to_thread(_in_thread, "upgrade", url, revision)


async def downgrade(url: str, revision: str) -> None:
    await asyncio.to_thread(_in_thread, "downgrade", url, revision)


async def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            has_table = await conn.run_sync(lambda sync: sync.dialect.has_table(sync, "alembic_version"))
            if not has_table:
                return None
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
            return None if row is None else str(row[0])
    finally:
        await engine.dispose()
