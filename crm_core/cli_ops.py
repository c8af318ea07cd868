"""Operator use cases behind the `cti` command, each in its own transaction."""

from __future__ import annotations

from crm_core.db import make_engine, make_sessionmaker, transaction
from crm_core.security import service as security
from crm_core.security.policy import Role
from crm_core.settings import Settings


async def add_user(
    settings: Settings, username: str, password: str, role: str, display_name: str | None, org_unit: str | None
) -> int:
    engine = make_engine(settings.database_url)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            try:
                user = await security.add_user(session, username, password, Role(role), display_name, org_unit)
            except (security.UserExists, security.UnknownOrgUnit) as exc:
                raise ValueError(str(exc)) from exc
            return user.id
    finally:
        await engine.dispose()


async def add_org_unit(settings: Settings, code: str, name: str, parent: str | None, kind: str) -> int:
    engine = make_engine(settings.database_url)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            unit = await security.add_org_unit(session, code, name, parent, kind)
            return unit.id
    finally:
        await engine.dispose()
