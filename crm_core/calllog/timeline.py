"""The call detail: what happened to one call, in order, as the reader may see it.

Built from the call row (start, answer, end, outcome, disposition, wrap-up), its `call_agents`
(each agent the call rang, for how long, who took it, transfers) and `call_legs` (each channel and
why it hung up), plus the wrap-up's communication record and the recording's state. Times are UTC
here; the page shows them in settings.timezone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.calllog.access import call_visibility
from crm_core.calllog.models import Call, CallAgent, CallLeg
from crm_core.calllog.recording_models import Recording
from crm_core.calllog.review import call_row
from crm_core.comms.models import CommunicationRecord
from crm_core.members.models import Member
from crm_core.security.models import User
from crm_core.security.policy import Principal, apply_field_policy


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    at: dt.datetime | None
    kind: str  # started | queued | rang | answered | transfer | leg_ended | ended | wrapup_done
    who: str | None = None
    seconds: float | None = None  # how long it rang, waited, talked…
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class CallDetail:
    call: dict[str, Any]
    events: list[TimelineEvent]
    legs: list[dict[str, Any]]
    recording: dict[str, Any] | None
    communications: list[dict[str, Any]] = field(default_factory=list)


_ORDER = {"started": 0, "queued": 1, "rang": 2, "transfer": 2, "answered": 3, "leg_ended": 4, "ended": 5}


async def call_detail(session: AsyncSession, principal: Principal, call_id: int) -> CallDetail | None:
    """The call with its timeline, or None when it does not exist or `principal` may not see it."""
    found = (
        await session.execute(
            select(Call, Member.name.label("member_name"), User.display_name.label("agent_name"))
            .outerjoin(Member, Member.id == Call.member_id)
            .outerjoin(User, User.id == Call.agent_user_id)
            .where(Call.id == call_id, call_visibility(principal))
        )
    ).first()
    if found is None:
        return None
    call: Call = found[0]
    view = call_row(principal, _Flat(call, found.member_name, found.agent_name))
    view.update({"ring_s": call.ring_s, "hangup_cause": call.hangup_cause, "state": call.state, "pbx": call.pbx})
    offers = (
        await session.execute(
            select(CallAgent, User.display_name)
            .outerjoin(User, User.id == CallAgent.agent_user_id)
            .where(CallAgent.call_id == call_id)
            .order_by(CallAgent.seq)
        )
    ).all()
    legs = (
        (await session.execute(select(CallLeg).where(CallLeg.call_id == call_id).order_by(CallLeg.id))).scalars().all()
    )
    events = build_timeline(call, [(offer, name) for offer, name in offers], list(legs))
    return CallDetail(
        call=view,
        events=events,
        legs=[
            {
                "channel": leg.channel,
                "role": leg.role,
                "started_at": leg.started_at,
                "answered_at": leg.answered_at,
                "ended_at": leg.ended_at,
                "hangup_cause": leg.hangup_cause,
            }
            for leg in legs
        ],
        recording=await _recording(session, call),
        communications=await _communications(session, principal, call),
    )


class _Flat:
    """A Call row with the joined names, shaped like a review row for `call_row`."""

    def __init__(self, call: Call, member_name: str | None, agent_name: str | None) -> None:
        self._call = call
        self.member_name = member_name
        self.agent_name = agent_name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def build_timeline(call: Call, offers: list[tuple[CallAgent, str | None]], legs: list[CallLeg]) -> list[TimelineEvent]:
    """The events of one call in time order (pure: the call, its offers and legs as read)."""
    events = [TimelineEvent(call.started_at, "started", detail=call.direction)]
    if call.queue:
        events.append(TimelineEvent(call.started_at, "queued", detail=call.queue, seconds=call.wait_s))
    taker: str | None = None
    for offer, name in offers:
        who = name or offer.agent_endpoint
        kind = "transfer" if offer.via == "transfer" else "rang"
        events.append(
            TimelineEvent(
                offer.rang_at, kind, who=who, seconds=offer.ring_s, detail="answered" if offer.answered else None
            )
        )
        if offer.answered:
            taker = who
    if call.answered_at is not None:
        events.append(
            TimelineEvent(call.answered_at, "answered", who=taker or call.agent_endpoint, seconds=call.talk_s)
        )
    for leg in legs:
        if leg.ended_at is not None:
            events.append(TimelineEvent(leg.ended_at, "leg_ended", who=leg.channel, detail=leg.hangup_cause))
    if call.ended_at is not None:
        events.append(TimelineEvent(call.ended_at, "ended", detail=call.outcome))
        if call.wrapup_s is not None:
            done = call.ended_at + dt.timedelta(seconds=call.wrapup_s)
            events.append(TimelineEvent(done, "wrapup_done", detail=call.disposition, seconds=call.wrapup_s))
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(events, key=lambda e: (e.at or far, _ORDER.get(e.kind, 6)))


async def _recording(session: AsyncSession, call: Call) -> dict[str, Any] | None:
    row = (
        (
            await session.execute(
                select(Recording)
                .where(
                    or_(
                        Recording.call_id == call.id,
                        (Recording.pbx == call.pbx) & (Recording.linkedid == call.linkedid),
                    )
                )
                .order_by(Recording.id.desc())
                .limit(1)
            )
        )
        .scalars()
        .first()
    )
    if row is None:
        return None
    return {
        "id": row.id,
        "state": row.state,
        "duration_s": row.duration_s,
        "legal_hold": row.legal_hold,
        "retain_until": row.retain_until,
        "pci_spans": row.pci_spans or [],
    }


async def _communications(session: AsyncSession, principal: Principal, call: Call) -> list[dict[str, Any]]:
    """The wrap-up record(s) written for this call (linked by Linkedid), through the field policy."""
    rows = await session.execute(
        select(CommunicationRecord).where(CommunicationRecord.call_id == call.linkedid).order_by(CommunicationRecord.id)
    )
    return [
        apply_field_policy(
            principal,
            "communication",
            {
                "id": r.id,
                "member_id": r.member_id,
                "category": r.category,
                "urgency": r.urgency,
                "status": r.status,
                "summary": r.summary,
                "created_at": r.created_at,
            },
        )
        for r in rows.scalars()
    ]
