"""PCI pause: the agent stops the recording while a customer reads out card or ID data.

The recording is muted in Asterisk (MixMonitorMute on the channel that runs MixMonitor) before the
pause is written down, so a database hiccup can never leave card data on tape; the pause rows become
the spans the player marks and the pipeline stores (a pause never resumed runs to the end of the file,
recordings/pci.py).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.recording_models import RecordingPause
from crm_core.db import read_session, transaction, utcnow
from cti.ami.actions import AmiActionSender, mixmonitor_mute
from cti.ami.errors import AmiError
from cti.calls.tracker import CallSnapshot, CallTracker
from cti.retry import with_db_retry

log = logging.getLogger(__name__)


class PciRefused(Exception):
    """Why the recording could not be paused or resumed, in words the panel shows."""


@dataclass(frozen=True, slots=True)
class PciState:
    linkedid: str
    paused: bool
    since: dt.datetime | None


def recorded_call_of(tracker: CallTracker, agent_endpoint: str) -> CallSnapshot:
    """The agent's answered, recorded call; refuses otherwise."""
    for call in tracker.snapshot().calls:
        if agent_endpoint in call.agents and call.status == "talking":
            if call.recording_channel is None:
                raise PciRefused("this call is not being recorded")
            return call
    raise PciRefused("you are not on a call")


async def _open_pause(session: AsyncSession, pbx: str, linkedid: str) -> RecordingPause | None:
    stmt = (
        select(RecordingPause)
        .where(RecordingPause.pbx == pbx, RecordingPause.linkedid == linkedid, RecordingPause.resumed_at.is_(None))
        .order_by(RecordingPause.id.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def pci_state(sessions: async_sessionmaker[AsyncSession], pbx: str, linkedid: str) -> PciState:
    async with read_session(sessions) as session:
        pause = await _open_pause(session, pbx, linkedid)
    return PciState(linkedid, pause is not None, pause.paused_at if pause else None)


async def set_paused(
    ami: AmiActionSender,
    tracker: CallTracker,
    sessions: async_sessionmaker[AsyncSession],
    *,
    pbx: str,
    agent_endpoint: str,
    user_id: int,
    paused: bool,
) -> PciState:
    call = recorded_call_of(tracker, agent_endpoint)
    current = await pci_state(sessions, pbx, call.linkedid)
    if current.paused == paused:
        raise PciRefused("the recording is already paused" if paused else "the recording is not paused")
    assert call.recording_channel is not None  # checked by recorded_call_of
    try:
        await mixmonitor_mute(ami, channel=call.recording_channel, muted=paused)
    except AmiError as exc:
        raise PciRefused(f"the PBX refused: {exc}") from exc
    now = utcnow()

    async def record() -> None:
        async with transaction(sessions) as session:
            if paused:
                session.add(
                    RecordingPause(
                        pbx=pbx, linkedid=call.linkedid, channel=call.recording_channel, user_id=user_id, paused_at=now
                    )
                )
            else:
                pause = await _open_pause(session, pbx, call.linkedid)
                if pause is not None:
                    pause.resumed_at = now

    await with_db_retry(record, what=f"PCI pause of {call.linkedid}", attempts=20)
    log.info("recording of %s %s by %s", call.linkedid, "paused" if paused else "resumed", agent_endpoint)
    return PciState(call.linkedid, paused, now if paused else None)
