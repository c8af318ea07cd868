"""Typed AMI errors, so callers can tell "retry later" from "fix the configuration" from "Asterisk said no"."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cti.ami.protocol import AmiMessage

__all__ = ["AmiActionError", "AmiAuthError", "AmiConnectError", "AmiDisconnected", "AmiError", "AmiTimeout"]


class AmiError(Exception):
    """Base of every error raised by the AMI engine."""


class AmiConnectError(AmiError):
    """A connection attempt failed: refused, timed out, or no banner (a dying Asterisk may accept and close)."""


class AmiAuthError(AmiConnectError):
    """Asterisk refused the Login (wrong user/secret, ACL): retrying quickly cannot help."""


class AmiDisconnected(AmiError, ConnectionError):
    """Not connected, or the connection dropped before the action's answer arrived."""


class AmiTimeout(AmiError, TimeoutError):
    """No answer to an action within its timeout."""


class AmiActionError(AmiError):
    """Asterisk answered ``Response: Error`` (e.g. "Interface not found", "Channel not found")."""

    def __init__(self, action: str, response: AmiMessage) -> None:
        self.action = action
        self.response = response
        super().__init__(f"{action} failed: {response.get('Message', response.get('Response', '?'))}")
