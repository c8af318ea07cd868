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


class ItemNotAvailable(LoyaltyError):
    """The catalogue item does not exist or is withdrawn."""


class OutOfStock(LoyaltyError):
    def __init__(self, item_id: int, requested: int) -> None:
        super().__init__(f"catalogue item {item_id}: fewer than {requested} left")
        self.item_id = item_id
        self.requested = requested


class RedemptionNotFound(LoyaltyError):
    pass


class RedemptionAlreadyDecided(LoyaltyError):
    """Approve, reject and cancel act only on a request still awaiting approval, exactly once."""

    def __init__(self, redemption_id: int, state: str) -> None:
        super().__init__(f"redemption {redemption_id} is already {state}")
        self.redemption_id = redemption_id
        self.state = state


class SameApprover(LoyaltyError):
    """Maker-checker: the person who asked for a redemption cannot approve it."""


class NotAnApprover(LoyaltyError):
    """Only CRM staff and administrators (real users, not jobs) decide redemptions."""
