"""Asyncio AMI engine: wire protocol (:mod:`.protocol`), supervised client (:mod:`.client`), typed actions
(:mod:`.actions`)."""

from cti.ami.client import AmiClient, AmiClientStats, AmiEventList, AmiEventStream
from cti.ami.errors import (
    AmiActionError,
    AmiAuthError,
    AmiConnectError,
    AmiDisconnected,
    AmiError,
    AmiTimeout,
)
from cti.ami.protocol import AmiMessage, AmiParser, AmiParserStats, encode_action

__all__ = [
    "AmiActionError",
    "AmiAuthError",
    "AmiClient",
    "AmiClientStats",
    "AmiConnectError",
    "AmiDisconnected",
    "AmiError",
    "AmiEventList",
    "AmiEventStream",
    "AmiMessage",
    "AmiParser",
    "AmiParserStats",
    "AmiTimeout",
    "encode_action",
]
