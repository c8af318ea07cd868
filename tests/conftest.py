"""Shared fixtures: real databases on both engines, created fresh for the session and dropped after."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_core import migrate
from crm_core.db import make_engine, make_sessionmaker
from crm_core.models import Base
from crm_core.settings import Settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("CTI_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def missing_part(reason: str) -> None:
    """A real part is missing: fail in CI (the set-up must install it), skip on a developer's machine."""
    if IN_CI:
        pytest.fail(f"required part missing in CI: {reason}")
    pytest.skip(reason)


async def _pg_admin() -> asyncpg.Connection:
    url = make_url(PG_ADMIN_URL)
    return await asyncpg.connect(
        host=url.host or "/var/run/postgresql",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        database=url.database or "postgres",
    )


async def create_pg_database() -> str:
    """A new empty database; returns its SQLAlchemy URL."""
    try:
        admin = await _pg_admin()
    except (OSError, asyncpg.PostgresError) as exc:
        missing_part(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
        raise
    name = f"cti_test_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    admin = await _pg_admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A migrated database per engine for the whole session; every data-layer test runs on both."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "cti.db"
        url = f"sqlite+aiosqlite:///{path}"
        await migrate.upgrade(url)
        yield url
    else:
        url = await create_pg_database()
        try:
            await migrate.upgrade(url)
            yield url
        finally:
            await drop_pg_database(url)


@pytest.fixture(scope="session")
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url, pool_size=60)
    yield eng
    await eng.dispose()


async def wipe(eng: AsyncEngine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with eng.begin() as conn:
        if eng.dialect.name == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
async def sessions(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on a clean database; the test leaves it clean again."""
    await wipe(engine)
    yield make_sessionmaker(engine)
    await wipe(engine)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    if not SHARED.is_dir():
        pytest.fail(f"shared/ not found beside the repository at {SHARED}")
    yield SHARED
