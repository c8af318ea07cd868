"""Short-lived signed playback URLs.

The audio element fetches the file with plain GETs (and Range requests), so the grant travels in the
URL: `<recording>.<user>.<action>.<expires>.<nonce>.<mac>`, HMAC-SHA256 over the fields. The media
route also requires the signed-in session of that same user, so a leaked URL is useless to others and
dies within the TTL anyway. The nonce names one grant, which the audit uses to log one row per play.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

Action = Literal["play", "download"]
_ACTIONS: frozenset[str] = frozenset({"play", "download"})


class BadGrant(Exception):
    """The URL was tampered with, expired, or is for someone else."""


@dataclass(frozen=True, slots=True)
class Grant:
    recording_id: int
    user_id: int
    action: Action
    expires: int  # epoch seconds
    nonce: str


def signing_key(configured: str) -> bytes:
    """The configured key, or a random one for this process (URLs then die with a restart)."""
    return configured.encode() if configured else secrets.token_bytes(32)


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(key: bytes, recording_id: int, user_id: int, action: Action, ttl_s: int, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl_s)
    payload = f"{recording_id}.{user_id}.{action}.{expires}.{secrets.token_urlsafe(9)}"
    return f"{payload}.{_mac(key, payload)}"


def verify(key: bytes, token: str, recording_id: int, user_id: int, now: float | None = None) -> Grant:
    parts = token.split(".")
    if len(parts) != 6:
        raise BadGrant("malformed grant")
    rec, user, action, expires, nonce, mac = parts
    if not hmac.compare_digest(mac, _mac(key, ".".join(parts[:5]))):
        raise BadGrant("bad signature")
    if not (rec.isdigit() and user.isdigit() and expires.isdigit()) or action not in _ACTIONS:
        raise BadGrant("malformed grant")
    if int(rec) != recording_id or int(user) != user_id:
        raise BadGrant("grant is for another recording or user")
    if int(expires) < (time.time() if now is None else now):
        raise BadGrant("grant expired")
    return Grant(int(rec), int(user), "play" if action == "play" else "download", int(expires), nonce)
