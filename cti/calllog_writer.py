"""Bus subscriber writing the call log: a live row on each call change, the full summary at the end.

Every write carries a revision derived from the event time, and crm_core.calllog.write_call ignores
anything not newer than what is stored — so replays, duplicates and restarts never duplicate a call.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.schemas import AgentOffer, CallLogEntry, LegEntry
from crm_core.calllog.service import write_calls
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
    """Writes CallProgress and CallEnded in batches; the member is matched once per call.

    Snapshots are coalesced per call (only the newest revision of each call is kept) and flushed in one
    transaction every `flush_interval` seconds with `write_calls` (a multi-row upsert plus bulk child
    rows: the same few statements for 1 or 500 calls), so a busy PBX costs a few statements per
    interval instead of several per call. If the database is unreachable the batch stays pending and is retried
    with backoff: nothing is dropped while the process lives (a crash loses at most one interval,
    which the next resync closes as lost calls).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        crm: CrmGateway,
        pbx: str = "default",
        *,
        flush_interval: float = 0.05,
        max_retry_delay: float = 5.0,
    ) -> None:
        self.sessions = sessions
        self.crm = crm
        self.pbx = pbx
        self.flush_interval = flush_interval
        self.max_retry_delay = max_retry_delay
        self.written = 0
        self.stale = 0
        self.failures = 0
        self.batches = 0
        self._members: dict[str, int | None] = {}
        self._pending: dict[str, CallLogEntry] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def _member_for(self, linkedid: str, number: str | None, variables: Mapping[str, str]) -> int | None:
        """The member the call is filed under: the one click-to-dial named (CTI_MEMBER_ID), else the
        caller-ID match when it is unambiguous."""
        if linkedid not in self._members:
            named = variables.get("CTI_MEMBER_ID")
            if named is not None and named.isdigit():
                self._members[linkedid] = int(named)
            elif number is None:
                return None  # not known yet (a click-to-dial before the customer is dialled): ask again later
            else:
                self._members[linkedid] = best_member(await self.crm.lookup(number))
        return self._members[linkedid]

    async def __call__(self, event: DomainEvent) -> None:
        if isinstance(event, CallEnded):
            member_id = await self._member_for(event.linkedid, event.customer_number, event.variables)
            self._members.pop(event.linkedid, None)
            entry = entry_from_ended(event, self.pbx, member_id)
        elif isinstance(event, CallProgress):
            snap = event.snapshot
            number = snap.callee_number if snap.direction == "outbound" else snap.caller_number
            member_id = await self._member_for(snap.linkedid, number, snap.variables)
            entry = entry_from_progress(event, self.pbx, member_id)
        else:
            return
        self.enqueue(entry)

    def enqueue(self, entry: CallLogEntry) -> None:
        current = self._pending.get(entry.linkedid)
        if current is None or current.revision < entry.revision:
            self._pending[entry.linkedid] = entry
        self._idle.clear()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="call-log-flush")

    async def _flush_loop(self) -> None:
        delay = self.flush_interval
        while self._pending:
            await asyncio.sleep(self.flush_interval)
            batch, self._pending = self._pending, {}
            try:
                await self._write(list(batch.values()))
                delay = self.flush_interval
            except (SQLAlchemyError, OSError) as exc:
                self.failures += 1
                for linkedid, entry in batch.items():  # put back, unless a newer snapshot arrived
                    newer = self._pending.get(linkedid)
                    if newer is None or newer.revision < entry.revision:
                        self._pending[linkedid] = entry
                delay = min(max(delay * 2, 0.1), self.max_retry_delay)
                log.warning(
                    "call log write failed (%s); %d calls pending, retry in %.1fs",
                    exc.__class__.__name__,
                    len(self._pending),
                    delay,
                )
                await asyncio.sleep(delay)
        self._idle.set()

    async def _write(self, entries: list[CallLogEntry]) -> None:
        endpoints = {a.agent_endpoint for e in entries for a in e.agents}
        endpoints.update(e.agent_endpoint for e in entries if e.agent_endpoint)
        users = await self.crm.user_ids(endpoints)  # from the principal cache: no query per write
        async with transaction(self.sessions) as session:
            results = await write_calls(session, entries, users)  # a constant number of statements
        self.batches += 1
        for entry, call_id in zip(entries, results, strict=True):
            if call_id is None:
                self.stale += 1
            else:
                self.written += 1
            log.debug(
                "call log %s %s caller=%s -> %s", entry.linkedid, entry.state, mask_phone(entry.caller_raw), call_id
            )

    async def drain(self) -> None:
        """Wait until everything enqueued so far is written (used on shutdown and by tests)."""
        await self._idle.wait()
