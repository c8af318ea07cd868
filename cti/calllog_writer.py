"""Bus subscriber writing the call log: a live row on each call change, the full summary at the end.

Every write carries a revision derived from the event time, and crm_core.calllog.write_call ignores
anything not newer than what is stored — so replays, duplicates and restarts never duplicate a call.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.schemas import AgentOffer, CallLogEntry, LegEntry
from crm_core.calllog.service import write_call
from crm_core.db import transaction
from crm_core.phones import mask_phone
from cti.calls.events import CallEnded, DomainEvent
from cti.calls.progress import CallProgress
from cti.crm import CrmGateway, best_member

log = logging.getLogger(__name__)


def utc(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)


def revision(at: float, final: bool) -> int:
    """Orders snapshots of one call: later events win, and the final summary beats a live row of the
    same instant."""
    return int(at * 1_000_000) * 2 + (1 if final else 0)


def entry_from_ended(event: CallEnded, pbx: str, member_id: int | None) -> CallLogEntry:
    started = utc(event.started_at)
    assert started is not None
    return CallLogEntry(
        linkedid=event.linkedid,
        pbx=pbx,
        revision=revision(event.at, final=True),
        state="ended",
        direction=event.direction,
        started_at=started,
        caller_raw=event.caller_number,
        caller_name=event.caller_name,
        callee_raw=event.callee_number,
        dnis=event.dnis,
        queue=event.queue,
        member_id=member_id,
        agent_endpoint=event.answered_by,
        answered_at=utc(event.answered_at),
        ended_at=utc(event.ended_at),
        wait_s=event.wait_seconds,
        ring_s=event.ring_seconds,
        talk_s=event.talk_seconds,
        outcome=event.outcome,
        hangup_cause=event.reason or event.hangup_cause_text,
        recording_file=event.recording_file,
        cti_call_id=event.cti_call_id,
        transfers=len(event.transfers),
        agents=tuple(
            AgentOffer(
                agent_endpoint=leg.agent,
                rang_at=utc(leg.rang_at),
                ring_s=leg.ring_seconds,
                answered=leg.answered,
                via=leg.via,
            )
            for leg in event.agents
        ),
        legs=tuple(
            LegEntry(
                uniqueid=leg.uniqueid,
                channel=leg.channel,
                role=leg.role,
                started_at=utc(leg.started_at),
                answered_at=utc(leg.answered_at),
                ended_at=utc(leg.ended_at),
                hangup_cause=leg.hangup_cause_text,
            )
            for leg in event.legs
        ),
    )


def entry_from_progress(event: CallProgress, pbx: str, member_id: int | None) -> CallLogEntry:
    snap = event.snapshot
    started = utc(snap.started_at)
    assert started is not None
    return CallLogEntry(
        linkedid=snap.linkedid,
        pbx=pbx,
        revision=revision(event.at, final=False),
        state="live",
        direction=snap.direction,
        started_at=started,
        caller_raw=snap.caller_number,
        caller_name=snap.caller_name,
        callee_raw=snap.callee_number,
        dnis=snap.dnis,
        queue=snap.queue,
        member_id=member_id,
        agent_endpoint=snap.answered_by,
        answered_at=utc(snap.answered_at),
        recording_file=snap.recording_file,
        cti_call_id=snap.variables.get("CTI_CALLID"),
    )


class CallLogWriter:
    """Writes CallProgress and CallEnded; the member is matched once per call and remembered."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], crm: CrmGateway, pbx: str = "default") -> None:
        self.sessions = sessions
        self.crm = crm
        self.pbx = pbx
        self.written = 0
        self.stale = 0
        self._members: dict[str, int | None] = {}

    async def _member_for(self, linkedid: str, number: str | None) -> int | None:
        if linkedid not in self._members:
            self._members[linkedid] = best_member(await self.crm.lookup(number))
        return self._members[linkedid]

    async def __call__(self, event: DomainEvent) -> None:
        if isinstance(event, CallEnded):
            member_id = await self._member_for(event.linkedid, event.customer_number)
            self._members.pop(event.linkedid, None)
            entry = entry_from_ended(event, self.pbx, member_id)
        elif isinstance(event, CallProgress):
            snap = event.snapshot
            number = snap.callee_number if snap.direction == "outbound" else snap.caller_number
            entry = entry_from_progress(event, self.pbx, await self._member_for(snap.linkedid, number))
        else:
            return
        async with transaction(self.sessions) as session:
            call_id = await write_call(session, entry)
        if call_id is None:
            self.stale += 1
        else:
            self.written += 1
        log.debug("call log %s %s caller=%s -> %s", entry.linkedid, entry.state, mask_phone(entry.caller_raw), call_id)
