"""Small builders for DB tests: users with roles in an org tree, and members."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.members import service as members
from crm_core.members.schemas import MemberIn
from crm_core.security import service as security
from crm_core.security.models import User
from crm_core.security.passwords import hash_password_sync
from crm_core.security.policy import SYSTEM, Principal, Role
from crm_core.settings import Settings

PASSWORD = "correct horse battery"


async def org_tree(sessions: async_sessionmaker[AsyncSession]) -> None:
    """300 电话中心 → 310 team A, 320 team B (codes as in seed 003)."""
    async with transaction(sessions) as session:
        await security.add_org_unit(session, "300", "电话中心")
        await security.add_org_unit(session, "310", "一组", parent_code="300", kind="team")
        await security.add_org_unit(session, "320", "二组", parent_code="300", kind="team")


@lru_cache(maxsize=1)
def password_hash() -> str:
    """argon2 costs ~0.1 s a hash by design; tests that make dozens of users share one."""
    return hash_password_sync(PASSWORD)


async def principal(
    sessions: async_sessionmaker[AsyncSession],
    username: str,
    role: Role,
    org_unit: str | None = None,
    agent_endpoint: str | None = None,
) -> Principal:
    async with transaction(sessions) as session:
        unit = await security.org_unit_by_code(session, org_unit) if org_unit else None
        user = User(
            username=username,
            display_name=username,
            password_hash=password_hash(),
            role=role.value,
            org_unit_id=unit.id if unit else None,
            agent_endpoint=agent_endpoint,
        )
        session.add(user)
        await session.flush()
        return await security.principal_for(session, user)


async def member(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    who: Principal = SYSTEM,
    **fields: Any,
) -> members.JoinResult:
    data = MemberIn(**({"name": "张伟", "mobile": "13800138000"} | fields))
    async with transaction(sessions) as session:
        return await members.join(session, who, data, settings)


class FlakySessions:
    """A session factory whose first `failures` sessions fail as if the database connection dropped."""

    def __init__(self, real: async_sessionmaker[AsyncSession], failures: int) -> None:
        self.real = real
        self.failures = failures
        self.kw = real.kw  # what the sessions are bound to, as async_sessionmaker tells it

    def __call__(self) -> Any:
        if self.failures > 0:
            self.failures -= 1
            return _failing()
        return self.real()


@asynccontextmanager
async def _failing() -> AsyncIterator[None]:
    raise OperationalError("SELECT 1", {}, Exception("connection to server was lost"))
    yield  # pragma: no cover
