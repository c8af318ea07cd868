"""Domain errors of the loyalty context; the web layer maps them to problem+json once."""

from __future__ import annotations


class LoyaltyError(Exception):
    pass


class InsufficientPoints(LoyaltyError):
    """A spend or manual deduction asked for more valid points than the member holds."""

    def __init__(self, member_id: int, requested: int, available: int) -> None:
        super().__init__(f"member {member_id}: {requested} points requested, {available} valid")
        self.member_id = member_id
        self.requested = requested
        self.available = available


class LotNotFound(LoyaltyError):
    pass


class LotNotPending(LoyaltyError):
    """Only pending lots can be verified; verifying twice is a caller error, not a silent no-op."""
