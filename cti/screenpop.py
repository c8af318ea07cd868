"""Screen pop: when an agent's phone rings, look the caller up and publish what the panel shows.

Runs as a bus subscriber on AgentRinging, so the pop is ready before the agent answers.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from crm_core.phones import mask_phone
from cti.bus import EventBus
from cti.calls.events import AgentRinging, DomainEvent
from cti.crm import CrmGateway

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


class ScreenPopper:
    """Bus subscriber turning AgentRinging into ScreenPop; keeps latency figures for the benchmark."""

    def __init__(self, bus: EventBus, crm: CrmGateway) -> None:
        self.bus = bus
        self.crm = crm
        self.latencies_ms: list[float] = []

    async def __call__(self, event: AgentRinging) -> None:
        started = time.perf_counter()
        principal = await self.crm.principal_for_endpoint(event.agent)
        candidates: list[dict[str, Any]] = []
        member: dict[str, Any] | None = None
        # An endpoint with no CRM user (a test phone, a misconfigured seat) pops the number only.
        if principal is not None:
            candidates, member = await self.crm.pop_view(principal, event.caller_number)
        elapsed_ms = (time.perf_counter() - started) * 1000
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
        )
        log.info(
            "screen pop call=%s agent=%s caller=%s candidates=%d in %.1f ms",
            event.linkedid,
            event.agent,
            mask_phone(event.caller_number),
            len(candidates),
            elapsed_ms,
        )
        self.bus.publish(pop)
