"""Migrations upgrade an empty database on both engines; the latest step goes down and up again."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from crm_core import migrate
from crm_core.db import make_engine
from crm_core.models import Base
from tests.conftest import create_pg_database, drop_pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_url(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    else:
        url = await create_pg_database()
        yield url
        await drop_pg_database(url)


async def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_creates_every_model_table_and_is_idempotent(empty_url: str) -> None:
    assert await migrate.current_revision(empty_url) is None
    await migrate.upgrade(empty_url)
    head = await migrate.current_revision(empty_url)
    await migrate.upgrade(empty_url)  # second run is a no-op
    assert await migrate.current_revision(empty_url) == head
    tables = await _tables(empty_url)
    assert set(Base.metadata.tables) <= tables


async def test_latest_step_downgrades_and_upgrades(empty_url: str) -> None:
    await migrate.upgrade(empty_url)
    head = await migrate.current_revision(empty_url)
    await migrate.downgrade(empty_url, "-1")
    below = await migrate.current_revision(empty_url)
    assert below != head
    await migrate.upgrade(empty_url)
    assert await migrate.current_revision(empty_url) == head
    assert set(Base.metadata.tables) <= await _tables(empty_url)


UNMODELLED = {"include_name": migrate.modelled}


async def test_models_and_migrations_agree(empty_url: str) -> None:
    """Autogenerate against the migrated schema finds nothing to do: no model change lacks a migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    await migrate.upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts=UNMODELLED), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []
