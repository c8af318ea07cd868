"""Roles, data scopes and field-level permissions: pure rules, no I/O.

Every view of a record that leaves the service layer (API, screen pop, export, logs) goes through
`apply_field_policy`, so all exits show the same thing for the same person.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crm_core.phones import mask_phone


class Role(enum.StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    CRM_STAFF = "crm_staff"
    ADMIN = "admin"


class Level(enum.IntEnum):
    """Ordered: a higher level includes the lower ones."""

    HIDDEN = 0
    MASKED = 1
    READ = 2
    WRITE = 3


class DataScope(enum.StrEnum):
    OWN = "own"
    DEPARTMENT = "department"
    DEPARTMENT_AND_BELOW = "department_and_below"
    ALL = "all"


DEFAULT_SCOPE: dict[Role, DataScope] = {
    Role.AGENT: DataScope.ALL,  # agents take calls from any member; fields are masked instead
    Role.SUPERVISOR: DataScope.DEPARTMENT_AND_BELOW,
    Role.CRM_STAFF: DataScope.DEPARTMENT_AND_BELOW,
    Role.ADMIN: DataScope.ALL,
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: passed into every service call that reads or writes CRM data."""

    user_id: int
    username: str
    role: Role
    org_unit_id: int | None = None
    org_unit_path: str | None = None
    scope: DataScope = DataScope.OWN
    # Administrator overrides loaded from field_permissions: (entity, field) -> level.
    overrides: Mapping[tuple[str, str], Level] = field(default_factory=dict)
    # Queues served by this supervisor's teams (settings.queues[...].team): their calls that no agent
    # took (abandoned, missed) are the supervisor's to review too. Filled by the panel per session.
    supervised_queues: frozenset[str] = frozenset()

    def level(self, entity: str, field_name: str) -> Level:
        override = self.overrides.get((entity, field_name))
        if override is not None:
            return override
        return default_level(self.role, entity, field_name)


# Built-in policy: (entity, field) -> level per role; fields not listed get the role's default.
_ROLE_DEFAULT: dict[Role, Level] = {
    Role.AGENT: Level.READ,
    Role.SUPERVISOR: Level.WRITE,
    Role.CRM_STAFF: Level.WRITE,
    Role.ADMIN: Level.WRITE,
}
_FIELD_RULES: dict[tuple[str, str], dict[Role, Level]] = {
    ("member", "id_number"): {Role.AGENT: Level.MASKED, Role.SUPERVISOR: Level.MASKED},
    ("member", "birthday"): {Role.AGENT: Level.READ},
    ("member", "name"): {Role.AGENT: Level.WRITE},
    ("member", "gender"): {Role.AGENT: Level.WRITE},
    ("member", "email"): {Role.AGENT: Level.WRITE},
    ("member", "remark"): {Role.AGENT: Level.WRITE},
    ("member", "mobile"): {Role.AGENT: Level.READ},
    ("member", "status"): {Role.AGENT: Level.READ, Role.SUPERVISOR: Level.READ},
    ("member", "member_type"): {Role.AGENT: Level.READ},
    # Secondary phones (home, work, contact persons) and addresses: agents see them masked.
    ("contact", "phone"): {Role.AGENT: Level.MASKED},
    ("address", "detail"): {Role.AGENT: Level.MASKED},
    ("organisation", "credit_code"): {Role.AGENT: Level.HIDDEN},
}


# Entity-wide defaults that differ from the role's: agents write the records of their own calls.
_ENTITY_DEFAULT: dict[tuple[Role, str], Level] = {
    (Role.AGENT, "communication"): Level.WRITE,
}


def default_level(role: Role, entity: str, field_name: str) -> Level:
    rule = _FIELD_RULES.get((entity, field_name))
    if rule is not None and role in rule:
        return rule[role]
    return _ENTITY_DEFAULT.get((role, entity), _ROLE_DEFAULT[role])


def mask_id_number(value: str) -> str:
    """Keep the region code and the last 4 characters (110101********1234 → 110***********1234)."""
    if len(value) <= 4:
        return "*" * len(value)
    head = 3 if len(value) > 10 else 1
    return value[:head] + "*" * (len(value) - head - 4) + value[-4:]


def mask_text(value: str) -> str:
    if len(value) <= 2:
        return value[:1] + "*" * (len(value) - 1)
    return value[:2] + "*" * min(len(value) - 2, 8)


def _mask_phone_str(value: str) -> str:
    return mask_phone(value) or ""


_MASKERS: dict[str, Callable[[str], str]] = {
    "id_number": mask_id_number,
    "mobile": _mask_phone_str,
    "phone": _mask_phone_str,
}


def mask_value(field_name: str, value: Any) -> Any:
    if value is None or value == "":
        return value
    masker = _MASKERS.get(field_name, mask_text)
    return masker(str(value))


def apply_field_policy(principal: Principal, entity: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The view of one record that `principal` may see: hidden fields dropped, masked ones masked."""
    view: dict[str, Any] = {}
    for name, value in row.items():
        level = principal.level(entity, name)
        if level == Level.HIDDEN:
            continue
        view[name] = mask_value(name, value) if level == Level.MASKED else value
    return view


def visible_columns(principal: Principal, entity: str, columns: Iterable[str]) -> list[str]:
    """Columns an export may contain (hidden ones are left out, not blanked)."""
    return [c for c in columns if principal.level(entity, c) > Level.HIDDEN]


def in_scope(
    principal: Principal, owner_user_id: int | None, org_unit_id: int | None, org_unit_path: str | None
) -> bool:
    """Whether a record already read (its owner, org unit and that unit's path) is inside the
    principal's data scope: the Python twin of `security.service.scope_filter`, for data fetched
    before it was known who would see it (the screen pop reads the caller while the call queues).
    Paths are materialised ids ("/1/4/9/"), so a prefix test is the filter's `LIKE '/1/4/%'`."""
    own = owner_user_id is not None and owner_user_id == principal.user_id
    if principal.scope == DataScope.ALL:
        return True
    if principal.scope == DataScope.OWN or principal.org_unit_id is None:
        return own
    if principal.scope == DataScope.DEPARTMENT:
        return own or (org_unit_id is not None and org_unit_id == principal.org_unit_id)
    if principal.org_unit_path is None:
        return False
    return own or (org_unit_path is not None and org_unit_path.startswith(principal.org_unit_path))


class PermissionDenied(Exception):
    """Raised when a principal writes a field or record outside its permissions."""


def check_writable(principal: Principal, entity: str, fields: Iterable[str]) -> None:
    denied = sorted(f for f in fields if principal.level(entity, f) < Level.WRITE)
    if denied:
        raise PermissionDenied(f"{principal.role} may not change {entity} fields: {', '.join(denied)}")


SYSTEM = Principal(user_id=0, username="system", role=Role.ADMIN, scope=DataScope.ALL)
"""For jobs and CLI commands run by an operator; never used for a person's request."""
