"""Users, org units and principals: the use cases behind `cti user add` and the panel login."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from crm_core.db import utcnow
from crm_core.security.models import FieldPermissionRow, OrgUnit, User
from crm_core.security.passwords import hash_password, verify_password
from crm_core.security.policy import DEFAULT_SCOPE, DataScope, Level, Principal, Role

MAX_FAILED_LOGINS = 5
LOCKOUT = dt.timedelta(minutes=15)


class UserExists(Exception):
    pass


class UnknownOrgUnit(Exception):
    pass


class AuthenticationFailed(Exception):
    """Wrong user or password, or a locked/inactive account; the message never says which."""


async def add_org_unit(
    session: AsyncSession, code: str, name: str, parent_code: str | None = None, kind: str = "department"
) -> OrgUnit:
    parent = None
    if parent_code is not None:
        parent = await org_unit_by_code(session, parent_code)
    unit = OrgUnit(code=code, name=name, kind=kind, parent_id=parent.id if parent else None)
    session.add(unit)
    await session.flush()
    unit.path = f"{parent.path if parent else '/'}{unit.id}/"
    await session.flush()
    return unit


async def org_unit_by_code(session: AsyncSession, code: str) -> OrgUnit:
    unit = (await session.execute(select(OrgUnit).where(OrgUnit.code == code))).scalar_one_or_none()
    if unit is None:
        raise UnknownOrgUnit(f"no org unit with code {code!r}")
    return unit


async def add_user(
    session: AsyncSession,
    username: str,
    password: str,
    role: Role,
    display_name: str | None = None,
    org_unit_code: str | None = None,
    data_scope: DataScope | None = None,
) -> User:
    existing = await session.execute(select(User.id).where(User.username == username))
    if existing.first() is not None:
        raise UserExists(f"user {username!r} already exists")
    unit = await org_unit_by_code(session, org_unit_code) if org_unit_code else None
    user = User(
        username=username,
        display_name=display_name or username,
        password_hash=await hash_password(password),
        role=role.value,
        org_unit_id=unit.id if unit else None,
        data_scope=data_scope.value if data_scope else None,
    )
    session.add(user)
    await session.flush()
    return user


async def principal_for(session: AsyncSession, user: User) -> Principal:
    role = Role(user.role)
    path = None
    if user.org_unit_id is not None:
        path = (await session.execute(select(OrgUnit.path).where(OrgUnit.id == user.org_unit_id))).scalar()
    rows = await session.execute(
        select(FieldPermissionRow.entity, FieldPermissionRow.field, FieldPermissionRow.level).where(
            FieldPermissionRow.role == role.value
        )
    )
    overrides = {(entity, field): Level[level.upper()] for entity, field, level in rows}
    return Principal(
        user_id=user.id,
        username=user.username,
        role=role,
        org_unit_id=user.org_unit_id,
        org_unit_path=path,
        scope=DataScope(user.data_scope) if user.data_scope else DEFAULT_SCOPE[role],
        overrides=overrides,
    )


async def principal_by_username(session: AsyncSession, username: str) -> Principal:
    user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
    if user is None or not user.active:
        raise AuthenticationFailed(f"no active user {username!r}")
    return await principal_for(session, user)


async def authenticate(session: AsyncSession, username: str, password: str) -> Principal:
    """Check a password with lockout after MAX_FAILED_LOGINS failures in a row."""
    user = (await session.execute(select(User).where(User.username == username).with_for_update())).scalar_one_or_none()
    now = utcnow()
    if user is None or not user.active:
        raise AuthenticationFailed("invalid credentials")
    if user.locked_until is not None and user.locked_until > now:
        raise AuthenticationFailed("invalid credentials")
    if not await verify_password(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILED_LOGINS:
            user.locked_until = now + LOCKOUT
            user.failed_logins = 0
        raise AuthenticationFailed("invalid credentials")
    user.failed_logins = 0
    user.locked_until = None
    return await principal_for(session, user)


async def set_field_permission(session: AsyncSession, role: Role, entity: str, field: str, level: Level) -> None:
    row = (
        await session.execute(
            select(FieldPermissionRow).where(
                FieldPermissionRow.role == role.value,
                FieldPermissionRow.entity == entity,
                FieldPermissionRow.field == field,
            )
        )
    ).scalar_one_or_none()
    if row is None:
        session.add(FieldPermissionRow(role=role.value, entity=entity, field=field, level=level.name.lower()))
    else:
        row.level = level.name.lower()
    await session.flush()


def scope_filter(
    principal: Principal,
    owner_col: InstrumentedAttribute[int | None],
    unit_col: InstrumentedAttribute[int | None],
) -> ColumnElement[bool]:
    """WHERE clause restricting records to the principal's data scope."""
    if principal.scope == DataScope.ALL:
        return true()
    if principal.scope == DataScope.OWN:
        return owner_col == principal.user_id
    if principal.org_unit_id is None:
        return owner_col == principal.user_id
    if principal.scope == DataScope.DEPARTMENT:
        return or_(unit_col == principal.org_unit_id, owner_col == principal.user_id)
    if principal.org_unit_path is None:
        return false()
    subtree = select(OrgUnit.id).where(OrgUnit.path.startswith(principal.org_unit_path))
    return or_(unit_col.in_(subtree), owner_col == principal.user_id)
