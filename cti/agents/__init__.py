"""Agent sessions: queue login/logout, pause with reason codes, wrap-up, and state history.

State always comes back from Asterisk's own events (QueueMember*, via the tracker's
AgentStateChanged), so a change made outside the product — a supervisor's CLI, a phone's DND — shows
up here exactly like one made through it. Actions only ask Asterisk; they never set state themselves.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.service import AgentStateChange, log_agent_states
from crm_core.db import transaction
from crm_core.settings import Settings
from cti.ami.actions import AmiActionSender, queue_add, queue_pause, queue_remove
from cti.ami.errors import AmiActionError
from cti.calls.events import AgentStateChanged, CallEnded, DomainEvent
from cti.crm import CrmGateway
from cti.retry import with_db_retry

log = logging.getLogger(__name__)

WRAPUP_REASON = "wrap-up"


class AgentError(Exception):
    """A refused agent action, with a reason the panel can show."""


def interface_of(endpoint: str) -> str:
    return f"PJSIP/{endpoint}"


class AgentManager:
    """Bus subscriber (AgentStateChanged, CallEnded) plus the agent actions the panel calls."""

    def __init__(
        self,
        ami: AmiActionSender,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        crm: CrmGateway | None = None,
        *,
        flush_interval: float = 0.05,
    ) -> None:
        self.ami = ami
        self.sessions = sessions
        self.settings = settings
        self.states: dict[str, AgentStateChanged] = {}
        self.required_wrapups: set[str] = set()
        self.crm = crm
        self.flush_interval = flush_interval
        self._pending: list[AgentStateChange] = []
        self._flusher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ events

    async def __call__(self, event: DomainEvent) -> None:
        if isinstance(event, AgentStateChanged):
            self.states[event.agent] = event
            state = "wrap_up" if event.paused and event.pause_reason == WRAPUP_REASON else event.state
            reason = event.pause_reason if state == "paused" else None
            self._pending.append(
                AgentStateChange(event.agent, state, reason, dt.datetime.fromtimestamp(event.at, dt.UTC))
            )
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="agent-states")
        elif isinstance(event, CallEnded) and event.outcome == "answered":
            await self._maybe_hold_for_wrapup(event)

    async def _maybe_hold_for_wrapup(self, event: CallEnded) -> None:
        """Queues with required wrap-up keep the agent paused until the wrap-up is saved."""
        policy = self.settings.queues.get(event.queue or "")
        if policy is None or not policy.wrapup_required:
            return
        for agent in event.answered_agents:
            if not self.is_logged_in(agent):
                continue  # took the call by a transfer, from outside the queues: nothing to hold
            self.required_wrapups.add(agent)
            try:
                await queue_pause(self.ami, interface=interface_of(agent), paused=True, reason=WRAPUP_REASON)
            except AmiActionError as exc:
                log.warning("could not hold %s for wrap-up: %s", agent, exc)

    async def _flush_loop(self) -> None:
        """Write the state history in batches (a ringall queue makes ~10 state changes per call):
        one transaction per interval, retried while the database is away, in event order."""
        while self._pending:
            await asyncio.sleep(self.flush_interval)
            batch, self._pending = self._pending, []
            # Without a gateway (tests, tools) log_agent_states looks the user ids up itself.
            users = None if self.crm is None else await self.crm.user_ids(c.agent_endpoint for c in batch)

            async def record(batch: list[AgentStateChange] = batch, users: dict[str, int] | None = users) -> None:
                async with transaction(self.sessions) as session:
                    await log_agent_states(session, batch, users)

            await with_db_retry(record, what=f"{len(batch)} agent state changes")

    async def drain(self) -> None:
        """Wait until every state change received so far is written."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.wait({self._flusher})

    # ------------------------------------------------------------------ actions

    def state_of(self, endpoint: str) -> AgentStateChanged | None:
        return self.states.get(endpoint)

    def is_logged_in(self, endpoint: str) -> bool:
        state = self.states.get(endpoint)
        return state is not None and state.state != "logged_out"

    def is_busy(self, endpoint: str) -> bool:
        state = self.states.get(endpoint)
        return state is not None and state.state in ("ringing", "on_call")

    async def login(self, endpoint: str, queues: list[str] | None = None, name: str | None = None) -> list[str]:
        """QueueAdd to each queue (default: every configured queue); already-member is not an error."""
        joined = []
        for queue in queues or list(self.settings.queues):
            if queue not in self.settings.queues:
                raise AgentError(f"unknown queue {queue!r}")
            try:
                await queue_add(
                    self.ami,
                    queue=queue,
                    interface=interface_of(endpoint),
                    member_name=name or endpoint,
                    state_interface=interface_of(endpoint),
                )
            except AmiActionError as exc:
                if "Already there" not in str(exc):
                    raise AgentError(f"login to {queue} failed: {exc}") from exc
            joined.append(queue)
        return joined

    async def logout(self, endpoint: str, queues: list[str] | None = None) -> None:
        for queue in queues or list(self.settings.queues):
            try:
                await queue_remove(self.ami, queue=queue, interface=interface_of(endpoint))
            except AmiActionError as exc:
                if "Not there" not in str(exc):
                    raise AgentError(f"logout from {queue} failed: {exc}") from exc

    async def pause(self, endpoint: str, reason: str) -> None:
        if reason not in self.settings.pause_reasons:
            raise AgentError(f"unknown pause reason {reason!r}; use one of {self.settings.pause_reasons}")
        if not self.is_logged_in(endpoint):
            raise AgentError(f"{endpoint} is not logged in to any queue")
        await queue_pause(self.ami, interface=interface_of(endpoint), paused=True, reason=reason)

    async def ready(self, endpoint: str) -> None:
        if not self.is_logged_in(endpoint):
            raise AgentError(f"{endpoint} is not logged in to any queue")
        self.required_wrapups.discard(endpoint)
        await queue_pause(self.ami, interface=interface_of(endpoint), paused=False)

    async def finish_wrapup(self, endpoint: str) -> None:
        """The wrap-up form was saved: release a required wrap-up hold."""
        if endpoint not in self.required_wrapups:
            return
        if not self.is_logged_in(endpoint):
            self.required_wrapups.discard(endpoint)  # logged out meanwhile: no hold left to release
            return
        await self.ready(endpoint)
