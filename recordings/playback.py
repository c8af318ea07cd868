"""Governed playback: which file a call's recording is, who played it, and byte ranges.

HTTP itself (sendfile, Range/If-Range, 206/416) is aiohttp's FileResponse; what it does not check is
here: the zero-length suffix range it would answer with the whole file, and the path a stored row
names, which must stay inside the recordings directory whatever the database holds.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.models import Call
from crm_core.calllog.recording_models import Recording, RecordingAccess
from crm_core.db import transaction

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$", re.ASCII | re.IGNORECASE)


class RecordingUnavailable(Exception):
    """No playable file: not recorded, still processing, purged or missing."""


@dataclass(frozen=True, slots=True)
class Requester:
    user_id: int
    remote: str | None
    user_agent: str | None


async def recording_of_call(session: AsyncSession, call_id: int) -> Recording | None:
    """The call's recording (the newest row if a call somehow has two). Also found by the call's
    (pbx, linkedid): the worker may process the file before the batched call-log write has linked it."""
    call = await session.get(Call, call_id)
    if call is None:
        return None
    stmt = (
        select(Recording)
        .where(or_(Recording.call_id == call_id, and_(Recording.pbx == call.pbx, Recording.linkedid == call.linkedid)))
        .order_by(Recording.id.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def call_id_of(session: AsyncSession, recording: Recording) -> int | None:
    """The recording's call, linked or found by (pbx, linkedid)."""
    if recording.call_id is not None:
        return recording.call_id
    stmt = select(Call.id).where(Call.pbx == recording.pbx, Call.linkedid == recording.linkedid)
    return (await session.execute(stmt)).scalar_one_or_none()


def stored_file(recordings_dir: str | Path, recording: Recording) -> Path:
    """The file on disk, refusing anything that would leave the recordings directory."""
    if recording.state != "ready" or not recording.storage_path:
        raise RecordingUnavailable(f"recording is {recording.state}")
    root = Path(recordings_dir).resolve()
    path = (root / recording.storage_path).resolve()
    if not path.is_relative_to(root):
        raise RecordingUnavailable("recording path outside the recordings directory")
    return path


def range_is_empty_suffix(header: str | None) -> bool:
    """`bytes=-0` asks for nothing (RFC 9110 14.1.1: unsatisfiable); FileResponse would send it all."""
    if not header:
        return False
    found = _RANGE.match(header.strip())
    return found is not None and found.group(1) == "" and found.group(2) != "" and int(found.group(2)) == 0


async def audit(
    sessions: async_sessionmaker[AsyncSession],
    who: Requester,
    action: str,
    *,
    recording_id: int | None,
    call_id: int | None,
    detail: str | None = None,
) -> None:
    async with transaction(sessions) as session:
        session.add(
            RecordingAccess(
                recording_id=recording_id,
                call_id=call_id,
                user_id=who.user_id,
                action=action,
                remote=(who.remote or "")[:64] or None,
                user_agent=(who.user_agent or "")[:255] or None,
                detail=detail[:255] if detail else None,
            )
        )


class SeenGrants:
    """Grant nonces already audited: an audio element fetches one play as many Range requests, and
    the audit wants one row per play. Bounded; an evicted nonce at worst logs its play twice."""

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, nonce: str) -> bool:
        return nonce in self._seen

    def remember(self, nonce: str) -> None:
        """Only after the grant passed its checks: a refused one must be checked again next time."""
        self._seen[nonce] = None
        self._seen.move_to_end(nonce)
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
