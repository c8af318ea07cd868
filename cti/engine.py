"""The CTI engine: AMI → tracker → event bus → subscribers (call log, screen pop, callbacks, agents).

One object owns the pipeline's lifecycle so `cti serve`, the demo, the tests and the benchmarks run
exactly the same wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core import calendar_store
from crm_core.business_calendar import BusinessCalendar
from crm_core.settings import Settings
from cti.agents import AgentManager
from cti.ami.actions import command, core_show_channels, queue_status
from cti.ami.client import AmiClient
from cti.ami.protocol import AmiMessage
from cti.bus import EventBus
from cti.callbacks import CallbackFeeder
from cti.calllog_writer import CallLogWriter
from cti.calls.events import (
    AgentRinging,
    AgentStateChanged,
    CallAbandoned,
    CallAnswered,
    CallArrived,
    CallEnded,
    CallMissed,
    CallOffered,
    CallTransferred,
    DomainEvent,
)
from cti.calls.progress import CallProgress
from cti.calls.tracker import CallTracker
from cti.crm import CrmGateway
from cti.dialer import Dialer
from cti.retry import with_db_retry
from cti.screenpop import ScreenPopper
from cti.survey import USER_EVENT as SURVEY_EVENT
from cti.survey import SurveyAnswered, SurveyRecorder
from cti.survey import parse as parse_survey
from cti.wallboard import Wallboard
from cti.wallboard_seed import seed_board
from recordings.jobs import enqueue_recording
from recordings.retention import RetentionSchedule
from recordings.worker import RecordingWorker

log = logging.getLogger(__name__)

# Events after which the call's live row is rewritten (a crash then loses nothing already seen).
_PROGRESS_EVENTS = (CallOffered, AgentRinging, CallAnswered, CallTransferred)


def ami_client_from(settings: Settings) -> AmiClient:
    return AmiClient(
        settings.ami_host,
        settings.ami_port,
        settings.ami_user,
        settings.ami_secret,
        events=settings.ami_events if settings.ami_events != "on" else True,
    )


async def pbx_uptime(client: AmiClient) -> float | None:
    """Seconds since Asterisk started: a restart shows as a later boot time than the last one seen."""
    for line in await command(client, "core show uptime seconds"):
        if line.startswith("System uptime:"):
            with contextlib.suppress(ValueError):
                return float(line.split(":", 1)[1])
    return None


class CtiEngine:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        ami: AmiClient | None = None,
        calendar: BusinessCalendar | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.ami = ami or ami_client_from(settings)
        self.clock = clock
        self.tracker = CallTracker(wrapup_seconds={q: p.wrapup_seconds for q, p in settings.queues.items()})
        self.bus = EventBus()
        self.crm = CrmGateway(sessions)
        self.calendar = calendar  # None: the calendar store's (administrator's overrides, team hours)
        calendar_store.STORE.use_timezone(settings.timezone)
        self.agents = AgentManager(self.ami, sessions, settings, self.crm)
        self.dialer = Dialer(self.ami, self.agents, self.crm)
        self.screen_pops = ScreenPopper(self.bus, self.crm)
        self.call_log = CallLogWriter(sessions, self.crm, settings.pbx_name)
        self.callbacks = CallbackFeeder(sessions, self.crm, settings, self.calendar)
        self.recordings = RecordingWorker(settings, sessions)
        self.surveys = SurveyRecorder(sessions, settings.pbx_name)
        self.retention = RetentionSchedule(settings, sessions)
        # Fed inline by publish(): O(1) per event, so it never lags the tracker (docs/KPIS.md).
        self.wallboard = Wallboard(settings.queues, settings.timezone, now=clock())
        self.events_fed = 0
        self._resyncing = False
        self._held: list[AmiMessage] = []
        self._ticker: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self, *, wait: float | None = 10.0) -> None:
        """Subscribe everything, connect to AMI (resync on every login) and start the clock tick."""
        self.subscribe_all()
        try:
            await self.crm.warm_principals()  # the first ring of each agent then waits for no query
            await self.callbacks.load_open_numbers(attempts=2)
        except Exception:  # the database is down: both load again on first use
            log.warning("warming the CRM caches failed; they load on first use", exc_info=True)
        await self.seed_wallboard()
        self._unsubscribe = self.ami.on_event(self.feed)
        self.ami.on_connected(self._resync)
        self._ticker = asyncio.create_task(self._tick(), name="tracker-tick")
        await self.recordings.start()
        await self.retention.start()
        self.ami.start()
        if wait is not None:
            await self.ami.wait_connected(wait)

    def subscribe_all(self) -> None:
        """The subscribers of the pipeline; separate from start() so a replay can run without a PBX."""
        bus = self.bus
        bus.subscribe(self.call_log, (CallProgress, CallEnded), name="call-log", overflow="block")
        bus.subscribe(self.callbacks, (CallAbandoned, CallMissed, CallEnded), name="callbacks", overflow="block")
        bus.subscribe(self.agents, (AgentStateChanged, CallEnded), name="agents", overflow="block")
        bus.subscribe(self.queue_recording, (CallEnded,), name="recordings", overflow="block")
        bus.subscribe(self.surveys, (SurveyAnswered,), name="surveys", overflow="block")
        # CallArrived (or CallOffered) starts the caller read before any agent rings; answered or ended
        # calls stop it.
        # Inline: a ring pops inside publish, not behind the rest of the AMI read (see ScreenPopper._pop).
        bus.subscribe(
            self.screen_pops,
            (CallArrived, CallOffered, AgentRinging, CallAnswered, CallEnded),
            name="screen-pop",
            inline=True,
        )

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.ami.close()
        await self.bus.close()
        await self.retention.stop()
        await self.recordings.stop()  # after the bus: the last CallEnded are queued, running jobs finish
        await self.screen_pops.close()
        await self.crm.close()
        await self.call_log.drain()
        await self.agents.drain()

    async def seed_wallboard(self) -> None:
        """Today's wallboard from the call log, before the first resync replays the live calls (which
        then count once). The database being down leaves the board counting from now."""
        try:
            offered = await seed_board(self.sessions, self.wallboard, self.settings.pbx_name)
        except Exception:
            log.warning("seeding the wallboard from the call log failed; it counts from now", exc_info=True)
        else:
            log.info("wallboard seeded from the call log: %d calls offered today", offered)

    async def queue_recording(self, event: CallEnded) -> None:
        """A finished call with a MixMonitor file: its recording row and job, then wake the worker."""
        if not event.recording_file:
            return
        settings = self.settings
        started = dt.datetime.fromtimestamp(event.started_at, dt.UTC)
        recording_file = event.recording_file
        queued = await with_db_retry(
            lambda: enqueue_recording(
                self.sessions,
                settings,
                linkedid=event.linkedid,
                source_path=recording_file,
                queue=event.queue,
                started_at=started,
            ),
            what=f"queueing the recording of {event.linkedid}",
        )
        if queued is not None:
            self.recordings.wake()

    def feed(self, msg: AmiMessage) -> None:
        """One AMI event through the tracker; held back while a resync is being taken."""
        if self._resyncing:
            self._held.append(msg)
            return
        self.events_fed += 1
        if msg.get("UserEvent") == SURVEY_EVENT:  # the post-call survey's answer (cti/survey.py)
            answer = parse_survey(msg, self.clock())
            if answer is not None:
                self.bus.publish(answer)
            return
        self.publish(self.tracker.feed(msg, self.clock()))

    def publish(self, events: list[DomainEvent]) -> None:
        bus = self.bus
        progressed: set[str] = set()
        for event in events:
            bus.publish(event)
            try:
                self.wallboard.feed(event)
            except Exception:  # a wallboard bug must not stop the calls
                log.exception("wallboard failed on %r", event)
            if isinstance(event, _PROGRESS_EVENTS):
                progressed.add(event.linkedid)
        for linkedid in progressed:
            snapshot = self.tracker.call_snapshot(linkedid)
            if snapshot is not None:
                bus.publish(CallProgress(at=events[-1].at, snapshot=snapshot))

    async def _resync(self, client: AmiClient) -> None:
        """After each (re)login: rebuild live calls and agents from the PBX's own lists.

        Events that arrive while the lists are taken are held and fed afterwards, so a channel born
        between the list and the resync is not mistaken for one that vanished.
        """
        self._resyncing = True
        try:
            uptime = await pbx_uptime(client)
            channels = await core_show_channels(client)
            status = await queue_status(client)
            members = [e for e in status.events if e.name == "QueueMember"]
            entries = [e for e in status.events if e.name == "QueueEntry"]
            events = self.tracker.resync(channels.events, members, entries, self.clock(), uptime=uptime)
            log.info(
                "resync: %d channels, %d queue members, %d waiting; %d events",
                len(channels.events),
                len(members),
                len(entries),
                len(events),
            )
            self.publish(events)
            self.wallboard.forget_seeded_unless(lambda linkedid: self.tracker.call_snapshot(linkedid) is not None)
        finally:
            self._resyncing = False
            held, self._held = self._held, []
            for msg in held:
                self.feed(msg)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            events = self.tracker.tick(self.clock())
            if events:
                self.publish(events)
            self.crm.refresh_principals()  # off the ringing path: reloads those half their ttl old
