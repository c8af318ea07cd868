"""Screen pop: when an agent's phone rings, publish what the panel shows about the caller.

The caller is read from the CRM (lookup + the member's unmasked 360) as soon as the call reaches a
service line (CallArrived: the dialplan names the DNIS, before it answers and queues the call; or
CallOffered, for a call that enters a queue otherwise), before any agent rings; at AgentRinging only
the agent's own permissions are applied to what was read (`cti.crm.caller_view`, no query), so the
pop is ready within milliseconds of the ring. While the call waits, the read is renewed every
`refresh_after` seconds (30 by default, the principal cache's ttl): a caller who waits long is not
shown a 360 older than that, and a queue full of waiting calls costs one read per call per 30 s, not
per ring. A ring whose read is still under way (it came within milliseconds of the offer, or the
call never queued) waits for it in a task of its own, so the pops of other agents and calls behind
it are not held up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from crm_core.members.lookup import Candidate
from crm_core.phones import mask_phone
from crm_core.security.policy import Principal
from cti.bus import EventBus
from cti.calls.events import AgentRinging, CallAnswered, CallArrived, CallEnded, CallOffered, DomainEvent
from cti.crm import CallerRecord, CrmGateway, best_member, caller_view, candidate_view

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ScreenPop(DomainEvent):
    """What one agent's panel shows for a ringing call; `candidates` ranked, `member` when one stands out."""

    linkedid: str
    agent: str
    user_id: int | None
    queue: str | None
    dnis: str | None
    direction: str
    caller_number: str | None
    caller_name: str | None
    candidates: tuple[dict[str, Any], ...]
    member: dict[str, Any] | None
    ringing_at: float
    lookup_ms: float
    partial: bool = False
    """True for the early pop of a ring that came before the member's 360 was read: the candidates
    (who is calling) only; the full pop for the same call and agent follows when the read is done."""


class CallerReadStopped(Exception):
    """The call's caller read was stopped (engine stop) before it returned anything."""


class _CallerRead:
    """The CRM read of one call's caller: read at once, then every `refresh_after` seconds until
    stopped, so a call that waits long in the queue still pops a recent 360."""

    def __init__(self, crm: CrmGateway, linkedid: str, number: str | None, refresh_after: float) -> None:
        loop = asyncio.get_running_loop()
        self.crm = crm
        self.number = number
        self.refresh_after = refresh_after
        self.first: asyncio.Future[CallerRecord] = loop.create_future()
        self.latest: CallerRecord | None = None
        # The ranked candidates, known after the lookup (a few ms), before the 360 read (tens of ms
        # under load): enough for an early pop that tells the agent who is calling.
        self.candidates: asyncio.Future[tuple[Candidate, ...]] = loop.create_future()
        self._stopped = False
        self._sleeping = False
        self.task = loop.create_task(self._keep_fresh(), name=f"caller-read:{linkedid}")

    def stop(self) -> None:
        """No more refreshes. A read under way is let finish (its result is simply not used):
        cancelling a query mid-flight would cost the pool its connection."""
        self._stopped = True
        if self._sleeping:
            self.task.cancel()

    @property
    def failed(self) -> bool:
        return self.first.done() and self.first.exception() is not None

    async def record(self) -> CallerRecord:
        """The newest read, waiting for the first one if it is still under way."""
        return self.latest if self.latest is not None else await asyncio.shield(self.first)

    def _fail_first(self, exc: BaseException) -> None:
        for future in (self.first, self.candidates):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody rings

    async def _keep_fresh(self) -> None:
        try:
            while True:
                try:
                    if not self.candidates.done():
                        # The lookup is cached for a few seconds: read_caller repeats it for free.
                        self.candidates.set_result(tuple(await self.crm.lookup(self.number)))
                    record = await self.crm.read_caller(self.number)
                except Exception as exc:
                    if not self.first.done():
                        self._fail_first(exc)  # the ring waiting for it fails, as a direct read would
                        return
                    log.warning(
                        "refreshing the caller %s failed (%s); the pop keeps the last read",
                        mask_phone(self.number),
                        exc.__class__.__name__,
                    )
                else:
                    self.latest = record
                    if not self.first.done():
                        self.first.set_result(record)
                if self._stopped:
                    return
                self._sleeping = True
                await asyncio.sleep(self.refresh_after)
                self._sleeping = False
        finally:
            self._fail_first(CallerReadStopped())


class ScreenPopper:
    """Bus subscriber: CallArrived or CallOffered starts the caller read, AgentRinging turns it into a ScreenPop for
    the agent, CallAnswered / CallEnded stop it. Keeps latency figures for the benchmarks.

    Subscribe it to CallArrived, CallOffered, AgentRinging, CallAnswered and CallEnded, inline
    (`CtiEngine.subscribe_all`): every handler is synchronous, what must wait runs in tasks of its own.
    A ring with no read under way (a direct call, a transfer after the answer) starts one and waits for it.
    """

    def __init__(self, bus: EventBus, crm: CrmGateway, *, refresh_after: float = 30.0, max_calls: int = 10_000) -> None:
        self.bus = bus
        self.crm = crm
        self.refresh_after = refresh_after
        self.max_calls = max_calls
        self.latencies_ms: list[float] = []
        self.failed = 0  # pops that waited for a caller read and failed (logged; the bus counts the others)
        self._reads: dict[str, _CallerRead] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: DomainEvent) -> None:
        if isinstance(event, AgentRinging):
            self._pop(event)
        elif isinstance(event, CallArrived | CallOffered):
            self._start_read(event.linkedid, event.caller_number)  # the same number: the read goes on
        elif isinstance(event, CallAnswered | CallEnded):
            self._stop_read(event.linkedid)

    def _start_read(self, linkedid: str, number: str | None) -> _CallerRead:
        read = self._reads.get(linkedid)
        if read is None or read.number != number:
            self._stop_read(linkedid)
            read = self._reads[linkedid] = _CallerRead(self.crm, linkedid, number, self.refresh_after)
            self._tasks.add(read.task)  # stopped reads finish their last query: close() still ends them
            read.task.add_done_callback(self._tasks.discard)
            while len(self._reads) > self.max_calls:  # CallEnded lost or never sent: forget the oldest
                self._stop_read(next(iter(self._reads)))
        return read

    def _stop_read(self, linkedid: str) -> None:
        read = self._reads.pop(linkedid, None)
        if read is not None:
            read.stop()

    def _read_for(self, event: AgentRinging) -> _CallerRead:
        read = self._reads.get(event.linkedid)
        if read is None or read.number != event.caller_number or read.failed:
            read = self._start_read(event.linkedid, event.caller_number)
        return read

    def _pop(self, event: AgentRinging) -> None:
        """Pop at once when the agent's principal is cached and the caller read is there (the usual
        case: no query, no wait, so the engine subscribes this inline, inside `publish`). Otherwise
        the pop waits in a task of its own, so the other agents' pops behind it are not held up
        (ringall rings many agents at once). The task keeps the read: the call may be answered (and
        its read stopped) before it is done."""
        started = time.perf_counter()
        known, principal = self.crm.cached_principal(event.agent)
        if known and principal is None:  # an endpoint with no CRM user: the number only
            self._publish(event, None, [], None, started, partial=False)
            return
        read = self._read_for(event)
        if principal is not None and read.latest is not None:
            candidates, member = caller_view(principal, read.latest)
            self._publish(event, principal, candidates, member, started, partial=False)
            return
        task = asyncio.get_running_loop().create_task(
            self._pop_later(event, principal, read, started), name=f"screen-pop:{event.linkedid}:{event.agent}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pop_later(
        self, event: AgentRinging, principal: Principal | None, read: _CallerRead, started: float
    ) -> None:
        try:
            if principal is None:
                principal = await self.crm.principal_for_endpoint(event.agent)
            if principal is None:
                self._publish(event, None, [], None, started, partial=False)
                return
            await self._publish_early_pop(event, principal, read, started)
            candidates, member = caller_view(principal, await read.record())
            self._publish(event, principal, candidates, member, started, partial=False)
        except Exception:
            self.failed += 1
            log.exception("screen pop failed: call=%s agent=%s", event.linkedid, event.agent)

    async def _publish_early_pop(
        self, event: AgentRinging, principal: Principal, read: _CallerRead, started: float
    ) -> None:
        """Who is calling, as soon as the lookup knows, when the member's 360 is still being read."""
        candidates = await asyncio.shield(read.candidates)
        if read.latest is not None or (best_member(list(candidates)) is None and len(candidates) != 1):
            return  # the full pop is as quick, or no 360 will come (unknown caller, pick-list)
        views = [candidate_view(principal, c) for c in candidates]
        self._publish(event, principal, views, None, started, partial=True)

    def _publish(
        self,
        event: AgentRinging,
        principal: Principal | None,
        candidates: list[dict[str, Any]],
        member: dict[str, Any] | None,
        started: float,
        *,
        partial: bool,
    ) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        if not partial:
            self.latencies_ms.append(elapsed_ms)
            if len(self.latencies_ms) > 100_000:
                del self.latencies_ms[:50_000]
        pop = ScreenPop(
            at=event.at,
            linkedid=event.linkedid,
            agent=event.agent,
            user_id=None if principal is None else principal.user_id,
            queue=event.queue,
            dnis=event.dnis,
            direction=event.direction,
            caller_number=event.caller_number,
            caller_name=event.caller_name,
            candidates=tuple(candidates),
            member=member,
            ringing_at=event.at,
            lookup_ms=elapsed_ms,
            partial=partial,
        )
        log.info(
            "screen pop%s call=%s agent=%s caller=%s candidates=%d in %.1f ms",
            " (early)" if partial else "",
            event.linkedid,
            event.agent,
            mask_phone(event.caller_number),
            len(candidates),
            elapsed_ms,
        )
        self.bus.publish(pop)

    async def close(self) -> None:
        """Stop every caller read (on engine stop)."""
        tasks = list(self._tasks)
        self._reads.clear()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
