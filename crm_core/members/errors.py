"""Domain errors of the members context; the web layer maps them to problem+json once."""

from __future__ import annotations


class MemberError(Exception):
    pass


class MemberNotFound(MemberError):
    pass


class DuplicateMember(MemberError):
    """Seed 004: 重复入会申请 — the mobile or ID number already belongs to a member."""

    def __init__(self, reason: str, existing_member_no: str) -> None:
        super().__init__(f"duplicate member: {reason} (existing {existing_member_no})")
        self.reason = reason
        self.existing_member_no = existing_member_no


class NotEligible(MemberError):
    """Seed 001: no service for under-18s or suspended members."""


class InvalidTransition(MemberError):
    pass


class MissingInformation(MemberError):
    """Seed 004: 关键信息缺失 — the application cannot be approved until these are supplied."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__("missing key information: " + ", ".join(missing))
        self.missing = missing


class CardError(MemberError):
    pass


class StaleUpdate(MemberError):
    """The record changed since it was read (optimistic version check)."""
