"""Feeds the missed-call callback queue from the event stream (storage and rules: crm_core.callbacks)."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.business_calendar import BusinessCalendar
from crm_core.callbacks.service import MissedCall, close_for_answered_call, record_missed
from crm_core.db import is_disconnect, transaction
from crm_core.phones import mask_phone
from crm_core.settings import Settings
from cti.calls.events import CallAbandoned, CallEnded, CallMissed, DomainEvent
from cti.crm import CrmGateway, best_member
from cti.retry import with_db_retry

log = logging.getLogger(__name__)

_SOURCE = {
    "queue_timeout": "queue_timeout",
    "no_agents": "no_answer",
    "after_hours": "after_hours",
    "queue_exit": "no_answer",
}


class CallbackFeeder:
    """Abandoned, timed-out, agent-less and after-hours calls become callbacks; an answered call with
    the same number (in or out) closes that number's open callback."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        crm: CrmGateway,
        settings: Settings,
        calendar: BusinessCalendar,
    ) -> None:
        self.sessions = sessions
        self.crm = crm
        self.settings = settings
        self.calendar = calendar

    async def __call__(self, event: DomainEvent) -> None:
        if isinstance(event, CallAbandoned):
            await self._missed(
                event.linkedid, event.caller_number, "abandoned", event.at, event.wait_seconds, event.queue
            )
        elif isinstance(event, CallMissed):
            await self._missed(
                event.linkedid, event.caller_number, _SOURCE[event.reason], event.at, event.wait_seconds, event.queue
            )
        elif isinstance(event, CallEnded) and event.outcome == "answered" and event.direction != "internal":

            async def close() -> int | None:
                async with transaction(self.sessions) as session:
                    return await close_for_answered_call(
                        session, event.customer_number, event.direction, event.linkedid
                    )

            closed = await with_db_retry(close, what=f"closing callbacks for call {event.linkedid}")
            if closed is not None:
                log.info(
                    "callback %s closed: %s reached on call %s",
                    closed,
                    mask_phone(event.customer_number),
                    event.linkedid,
                )

    async def _missed(
        self, linkedid: str, number: str | None, source: str, at: float, wait: float, queue: str | None
    ) -> None:
        if not number:
            return
        try:
            member_id = best_member(await self.crm.lookup(number))
        except Exception as exc:
            if not is_disconnect(exc):
                raise
            member_id = None  # the callback matters more than its member link: record it anyway
        missed = MissedCall(
            linkedid=linkedid,
            phone_raw=number,
            source=source,
            missed_at=dt.datetime.fromtimestamp(at, dt.UTC),
            wait_s=wait,
            queue=queue,
            member_id=member_id,
            pbx=self.settings.pbx_name,
        )

        async def record() -> int | None:
            async with transaction(self.sessions) as session:
                return await record_missed(session, missed, self.settings, self.calendar)

        callback_id = await with_db_retry(record, what=f"recording missed call {linkedid}")
        log.info("missed call %s from %s (%s) -> callback %s", linkedid, mask_phone(number), source, callback_id)
