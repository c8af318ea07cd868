"""Feeds the missed-call callback queue from the event stream (storage and rules: crm_core.callbacks)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core import calendar_store
from crm_core.business_calendar import BusinessCalendar
from crm_core.callbacks.service import MissedCall, close_for_answered_call, open_callback_numbers, record_missed
from crm_core.db import is_disconnect, read_session, transaction
from crm_core.phones import mask_phone, normalise
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
    the same number (in or out) closes that number's open callback.

    Most answered calls come from numbers with no open callback, so the numbers that have one are
    kept in memory (`open_numbers`: loaded at start, added to on each recorded miss, removed from
    on each close) and only those cost a query. Callbacks are opened only here, but another process
    (a second PBX's engine on the same database) could open one too, and agents close them from the
    panel: the set is reloaded every `reload_after` seconds, which bounds how long such a callback
    can go unseen. A closed one still in the set costs one UPDATE that finds nothing.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        crm: CrmGateway,
        settings: Settings,
        calendar: BusinessCalendar | None = None,
        *,
        reload_after: float = 60.0,
    ) -> None:
        self.sessions = sessions
        self.crm = crm
        self.settings = settings
        self.calendar = calendar
        self.reload_after = reload_after
        self.open_numbers: set[str] = set()
        self._loaded_at: float | None = None
        # Called after a callback was opened or closed and committed (the panel refreshes its lists
        # then, not on the call event itself, which would race the write).
        self.on_change: Callable[[int], None] | None = None

    def _team_of(self, queue: str | None) -> str | None:
        policy = self.settings.queues.get(queue) if queue else None
        return policy.team if policy else None

    async def load_open_numbers(self, *, attempts: int | None = None) -> int:
        """(Re)load the numbers with an open callback; returns how many there are. Retries a dropped
        connection `attempts` times (None: until it works, as the close it precedes would)."""

        async def load() -> set[str]:
            async with read_session(self.sessions) as session:
                return await open_callback_numbers(session)

        loaded_at = time.monotonic()
        self.open_numbers = await with_db_retry(load, what="loading open callbacks", attempts=attempts)
        self._loaded_at = loaded_at
        return len(self.open_numbers)

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
            await self._answered(event)

    async def _answered(self, event: CallEnded) -> None:
        e164 = normalise(event.customer_number)
        if e164 is None:
            return
        if self._loaded_at is None or time.monotonic() - self._loaded_at >= self.reload_after:
            await self.load_open_numbers()
        if e164 not in self.open_numbers:
            return  # no open callback for this number: nothing to close, no query

        async def close() -> int | None:
            async with transaction(self.sessions) as session:
                return await close_for_answered_call(session, event.customer_number, event.direction, event.linkedid)

        closed = await with_db_retry(close, what=f"closing callbacks for call {event.linkedid}")
        self.open_numbers.discard(e164)  # closed now, or already closed elsewhere
        if closed is not None:
            if self.on_change is not None:
                self.on_change(closed)
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
                # The queue's team calendar with the administrator's overrides, unless one was given.
                calendar = self.calendar or await calendar_store.STORE.for_unit_code(session, self._team_of(queue))
                return await record_missed(session, missed, self.settings, calendar)

        callback_id = await with_db_retry(record, what=f"recording missed call {linkedid}")
        e164 = normalise(number)
        if callback_id is not None and e164 is not None:
            self.open_numbers.add(e164)
        if callback_id is not None and self.on_change is not None:
            self.on_change(callback_id)
        log.info("missed call %s from %s (%s) -> callback %s", linkedid, mask_phone(number), source, callback_id)
