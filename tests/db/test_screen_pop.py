"""The screen pop reads the caller once, as the call queues, and shows each agent only what they may see."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.comms import service as comms
from crm_core.comms.schemas import CommunicationIn
from crm_core.db import read_session, transaction
from crm_core.member360 import member_360, read_member_360, read_member_360_in_lanes
from crm_core.members import service as members
from crm_core.members.errors import MemberNotFound
from crm_core.members.models import Member, Organisation
from crm_core.members.schemas import AddressIn
from crm_core.security import service as security
from crm_core.security.policy import SYSTEM, DataScope, Level, Principal, Role
from crm_core.settings import Settings
from cti.bus import EventBus
from cti.calls.events import AgentRinging, CallAnswered, CallArrived, CallEnded, CallOffered, DomainEvent
from cti.crm import CallerRecord, CrmGateway, caller_view, candidate_view
from cti.screenpop import ScreenPop, ScreenPopper
from tests.db import factories

Sessions = async_sessionmaker[AsyncSession]
CALLER = "13500135000"
ID_NUMBER = "11010119900307123X"


async def _team_member(sessions: Sessions, settings: Settings) -> tuple[int, Principal]:
    """A member of team 310 (org tree 300 → 310, 320) with an id number, a secondary phone, an
    address, a company and a communication record: every part of the 360 that a policy can touch."""
    await factories.org_tree(sessions)
    staff = await factories.principal(sessions, "staff310", Role.CRM_STAFF, org_unit="310")
    async with transaction(sessions) as session:
        org = Organisation(name="青叶科技", org_type="enterprise", phone_e164="+862161234567", credit_code="91310000X")
        session.add(org)
        await session.flush()
        org_id = org.id
    joined = await factories.member(
        sessions,
        settings,
        staff,
        name="赵敏",
        mobile=CALLER,
        organisation_id=org_id,
        contacts=[{"kind": "home", "phone": "010-87654321"}],
    )
    async with transaction(sessions) as session:
        await members.add_address(
            session, SYSTEM, joined.member_id, AddressIn(province="上海", city="上海", detail="南京西路100号")
        )
        member = await session.get(Member, joined.member_id)
        assert member is not None
        member.id_type, member.id_number = "resident_id", ID_NUMBER
        await comms.add_record(
            session,
            SYSTEM,
            CommunicationIn(member_id=joined.member_id, direction="in", category="enquiry", summary="咨询积分"),
        )
        # An administrator override the pop must honour: agents do not see birthdays.
        await security.set_field_permission(session, Role.AGENT, "member", "birthday", Level.HIDDEN)
    return joined.member_id, staff


async def test_a_prefetched_pop_shows_each_principal_exactly_what_member_360_shows(
    sessions: Sessions, settings: Settings
) -> None:
    member_id, staff = await _team_member(sessions, settings)
    agent = await factories.principal(sessions, "agent1", Role.AGENT)
    admin = await factories.principal(sessions, "admin1", Role.ADMIN)
    supervisor_300 = await factories.principal(sessions, "sup300", Role.SUPERVISOR, org_unit="300")
    supervisor_320 = await factories.principal(sessions, "sup320", Role.SUPERVISOR, org_unit="320")
    principals = {
        "agent": agent,
        "admin": admin,
        "supervisor of the parent unit": supervisor_300,
        "supervisor of another team": supervisor_320,
        "department-only supervisor of the parent": dataclasses.replace(supervisor_300, scope=DataScope.DEPARTMENT),
        "the owner, own scope": dataclasses.replace(staff, scope=DataScope.OWN),
        "an agent with own scope": dataclasses.replace(agent, scope=DataScope.OWN),
        "staff of the member's team": dataclasses.replace(staff, user_id=-1, scope=DataScope.DEPARTMENT),
    }
    crm = CrmGateway(sessions)
    caller = await crm.read_caller(CALLER)  # read once, for nobody in particular
    assert caller.member is not None and caller.member.profile["id_number"] == ID_NUMBER
    seen: dict[str, dict[str, Any] | None] = {}
    for label, principal in principals.items():
        candidates, member = caller_view(principal, caller)
        async with read_session(sessions) as session:
            try:
                expected: dict[str, Any] | None = await member_360(session, principal, member_id)
            except MemberNotFound:
                expected = None
        assert member == expected, label
        assert candidates == [candidate_view(principal, c) for c in caller.candidates], label
        seen[label] = member
    assert await crm.read_caller(CALLER) is not caller  # nothing cached the view itself
    # What that means for the people involved:
    as_agent = seen["agent"]
    assert as_agent is not None
    assert as_agent["profile"]["id_number"] == "110***********123X" and "birthday" not in as_agent["profile"]
    assert [c["phone"] for c in as_agent["contacts"] if not c["primary"]] == ["010****4321"]
    assert as_agent["addresses"][0]["detail"] == "南京******"
    assert "credit_code" not in as_agent["organisation"]
    as_admin = seen["admin"]
    assert as_admin is not None and as_admin["profile"]["id_number"] == ID_NUMBER
    assert as_admin["organisation"]["credit_code"] == "91310000X"
    assert seen["supervisor of the parent unit"] is not None
    assert seen["supervisor of another team"] is None  # outside the scope: the pick-list only
    assert seen["department-only supervisor of the parent"] is None
    assert seen["the owner, own scope"] is not None and seen["an agent with own scope"] is None
    assert seen["staff of the member's team"] is not None
    # Showing it to the agent first did not mask the shared read for the administrator after.
    assert caller.member.profile["id_number"] == ID_NUMBER


class Recorder:
    """The full pops (early ones, see test_a_ring_before_the_360_is_read_pops_who_is_calling_first,
    are kept apart)."""

    def __init__(self) -> None:
        self.pops: list[ScreenPop] = []
        self.early: list[ScreenPop] = []

    def __call__(self, event: DomainEvent) -> None:
        if isinstance(event, ScreenPop):
            (self.early if event.partial else self.pops).append(event)


def wired(crm: CrmGateway, *, inline_recorder: bool = False) -> tuple[EventBus, ScreenPopper, Recorder]:
    """A bus with the popper subscribed as the engine subscribes it, and a recorder of its pops."""
    bus = EventBus()
    popper = ScreenPopper(bus, crm)
    recorder = Recorder()
    bus.subscribe(
        popper, (CallArrived, CallOffered, AgentRinging, CallAnswered, CallEnded), name="screen-pop", inline=True
    )
    bus.subscribe(recorder, (ScreenPop,), name="recorder", inline=inline_recorder)
    return bus, popper, recorder


def counted_reads(crm: CrmGateway) -> list[str | None]:
    """The numbers of `crm`'s caller reads, noted as each starts."""
    reads: list[str | None] = []
    read_caller = crm.read_caller

    async def counted(number: str | None) -> CallerRecord:
        reads.append(number)
        return await read_caller(number)

    crm.read_caller = counted  # type: ignore[method-assign]
    return reads


async def eventually(check: Callable[[], object]) -> None:
    """Until `check()` is true, for up to 2 s (the assertions after it say what was expected)."""
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0.02)


def offered(at: float) -> CallOffered:
    return CallOffered(
        at=at,
        linkedid="1795528258.9",
        uniqueid="1795528258.9",
        caller_number=CALLER,
        caller_name=None,
        dnis="4008001234",
        queue="member-service",
        position=1,
    )


def ringing(agent: str, at: float) -> AgentRinging:
    return AgentRinging(
        at=at,
        linkedid="1795528258.9",
        uniqueid=f"1795528258.{int(at)}",
        agent=agent,
        interface=f"PJSIP/{agent}",
        via="queue",
        queue="member-service",
        direction="inbound",
        caller_number=CALLER,
        caller_name=None,
        dnis="4008001234",
    )


async def test_the_caller_is_read_once_when_queued_and_popped_per_agent_with_their_permissions(
    sessions: Sessions, settings: Settings
) -> None:
    member_id, _staff = await _team_member(sessions, settings)
    agent = await factories.principal(sessions, "agent1", Role.AGENT, agent_endpoint="agent1001")
    await factories.principal(sessions, "sup320", Role.SUPERVISOR, org_unit="320", agent_endpoint="agent1002")
    crm = CrmGateway(sessions)
    reads = counted_reads(crm)
    assert await crm.warm_principals() == 2
    bus, popper, recorder = wired(crm)
    t0 = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC).timestamp()
    bus.publish(offered(t0))
    await asyncio.sleep(0.2)  # the read happens while the call waits, before any agent rings
    assert reads == [CALLER]
    bus.publish(ringing("agent1001", t0 + 1))
    bus.publish(ringing("agent1002", t0 + 1))
    await eventually(lambda: len(recorder.pops) == 2)
    await bus.close()
    assert reads == [CALLER]  # two agents rang: no second read
    by_agent = {p.agent: p for p in recorder.pops}
    as_agent, as_other_team = by_agent["agent1001"], by_agent["agent1002"]
    assert as_agent.user_id == agent.user_id
    assert as_agent.member is not None and as_agent.member["profile"]["id"] == member_id
    assert as_agent.member["profile"]["id_number"] == "110***********123X"
    assert as_other_team.member is None  # a supervisor of another team: outside the data scope
    assert [c["member_id"] for c in as_other_team.candidates] == [member_id]
    await popper.close()
    await crm.close()


async def test_principals_are_refreshed_in_the_background_not_on_the_ringing_path(
    sessions: Sessions, settings: Settings
) -> None:
    await factories.principal(sessions, "agent1", Role.AGENT, agent_endpoint="agent1001")
    crm = CrmGateway(sessions, ttl=0.4)
    first = await crm.principal_for_endpoint("agent1001")
    assert first is not None and first.level("member", "birthday") == Level.READ
    async with transaction(sessions) as session:
        await security.set_field_permission(session, Role.AGENT, "member", "birthday", Level.HIDDEN)
    await asyncio.sleep(0.25)  # past half the ttl: still served from the cache, a reload starts aside
    assert await crm.principal_for_endpoint("agent1001") is first
    for _ in range(50):
        await asyncio.sleep(0.02)
        refreshed = await crm.principal_for_endpoint("agent1001")
        if refreshed is not first:
            break
    assert refreshed is not None and refreshed.level("member", "birthday") == Level.HIDDEN
    await crm.close()


async def test_a_call_answered_while_its_read_is_under_way_pops_once_and_leaves_nothing_running(
    sessions: Sessions, settings: Settings
) -> None:
    member_id, _staff = await _team_member(sessions, settings)
    await factories.principal(sessions, "agent1", Role.AGENT, agent_endpoint="agent1001")
    crm = CrmGateway(sessions)
    await crm.warm_principals()
    reads: list[str | None] = []
    read_caller = crm.read_caller

    async def slow(number: str | None) -> CallerRecord:
        reads.append(number)
        await asyncio.sleep(0.2)  # a busy database: the ring and the answer come before the read
        return await read_caller(number)

    crm.read_caller = slow  # type: ignore[method-assign]
    bus, popper, recorder = wired(crm)
    t0 = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC).timestamp()
    bus.publish(ringing("agent1001", t0))  # a direct ring: no CallOffered before it
    bus.publish(
        CallAnswered(
            at=t0 + 1,
            linkedid="1795528258.9",
            uniqueid="1795528258.10",
            agent="agent1001",
            interface="PJSIP/agent1001",
            queue="member-service",
            wait_seconds=1.0,
            ring_seconds=1.0,
            first=True,
        )
    )
    await eventually(lambda: recorder.pops)
    await bus.close()
    assert reads == [CALLER]  # the answer did not make the waiting pop read again
    assert [p.member["profile"]["id"] if p.member else None for p in recorder.pops] == [member_id]
    assert popper._reads == {} and not popper._tasks  # stopped: no refresh left running
    await popper.close()
    await crm.close()


async def test_a_ring_before_the_360_is_read_pops_who_is_calling_first(sessions: Sessions, settings: Settings) -> None:
    """Asterisk rings an idle agent within a millisecond of the caller joining the queue: the agent
    sees who is calling (from the lookup) at once, and the full card as soon as the 360 is read."""
    member_id, _staff = await _team_member(sessions, settings)
    await factories.principal(sessions, "agent1", Role.AGENT, agent_endpoint="agent1001")
    crm = CrmGateway(sessions)
    read_caller = crm.read_caller
    release = asyncio.Event()

    async def slow(number: str | None) -> CallerRecord:
        await release.wait()  # the 360 read is slow (a loaded database)
        return await read_caller(number)

    crm.read_caller = slow  # type: ignore[method-assign]
    await crm.warm_principals()
    bus, popper, recorder = wired(crm)
    t0 = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC).timestamp()
    bus.publish(offered(t0))
    bus.publish(ringing("agent1001", t0))
    await eventually(lambda: recorder.early)
    assert len(recorder.early) == 1 and recorder.pops == []
    early = recorder.early[0]
    assert early.partial and early.member is None
    assert [c["member_id"] for c in early.candidates] == [member_id]
    release.set()
    await eventually(lambda: recorder.pops)
    await bus.close()
    (full,) = recorder.pops
    assert not full.partial and full.member is not None and full.member["profile"]["id"] == member_id
    await popper.close()
    await crm.close()


async def test_a_ring_pops_inside_publish_when_the_read_and_the_principal_are_there(
    sessions: Sessions, settings: Settings
) -> None:
    """The usual ring: the caller was read while queued, the agent's principal is cached. The pop is
    published before `publish(AgentRinging)` returns, not after whatever else the loop has queued."""
    member_id, _staff = await _team_member(sessions, settings)
    await factories.principal(sessions, "agent1", Role.AGENT, agent_endpoint="agent1001")
    crm = CrmGateway(sessions)
    assert await crm.warm_principals() == 1
    bus, popper, recorder = wired(crm, inline_recorder=True)
    t0 = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC).timestamp()
    bus.publish(offered(t0))
    await eventually(lambda: popper._reads[offered(t0).linkedid].latest is not None)
    bus.publish(ringing("agent1001", t0 + 1))
    assert [p.member["profile"]["id"] if p.member else None for p in recorder.pops] == [member_id]  # no await
    assert not popper._tasks - {read.task for read in popper._reads.values()}  # no pop waited in a task
    await bus.close()
    await popper.close()
    await crm.close()


async def test_a_ring_for_an_agent_not_yet_cached_pops_after_loading_them(
    sessions: Sessions, settings: Settings
) -> None:
    """A cold principal cache (the first ring after a restart, a new agent): the pop loads the
    principal in a task, so it still comes, with the agent's permissions applied."""
    member_id, _staff = await _team_member(sessions, settings)
    agent = await factories.principal(sessions, "agent1", Role.AGENT, agent_endpoint="agent1001")
    crm = CrmGateway(sessions)  # nothing warmed
    bus, popper, recorder = wired(crm)
    t0 = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC).timestamp()
    bus.publish(offered(t0))
    bus.publish(ringing("agent1001", t0 + 1))
    bus.publish(ringing("phone-without-user", t0 + 1))
    await eventually(lambda: len(recorder.pops) == 2)
    await bus.close()
    by_agent = {p.agent: p for p in recorder.pops}
    assert by_agent["agent1001"].user_id == agent.user_id
    assert by_agent["agent1001"].member is not None and by_agent["agent1001"].member["profile"]["id"] == member_id
    assert by_agent["agent1001"].member["profile"]["id_number"] == "110***********123X"
    assert by_agent["phone-without-user"].user_id is None and by_agent["phone-without-user"].member is None
    assert popper.failed == 0
    await popper.close()
    await crm.close()


async def test_the_360_read_in_lanes_is_the_360_read_in_one_session(sessions: Sessions, settings: Settings) -> None:
    """The screen pop reads the sections side by side on PostgreSQL: the same record, whatever the lanes."""
    member_id, _staff = await _team_member(sessions, settings)
    async with read_session(sessions) as session:
        expected = await read_member_360(session, member_id)
    assert expected is not None and expected.sections["organisation"] and expected.sections["communications"]
    for lanes in (1, 2, 3, 20):
        assert await read_member_360_in_lanes(sessions, member_id, lanes) == expected
    assert await read_member_360_in_lanes(sessions, member_id + 1000) is None


async def test_the_read_starts_when_the_call_reaches_the_line_and_the_queue_join_does_not_repeat_it(
    sessions: Sessions, settings: Settings
) -> None:
    """What the dialplan does before Queue() (answer, recording, a greeting: 0.8 s in the fixtures'
    reference dialplan) lets the read finish before an idle agent rings, a few ms after the join."""
    member_id, _staff = await _team_member(sessions, settings)
    await factories.principal(sessions, "agent1", Role.AGENT, agent_endpoint="agent1001")
    crm = CrmGateway(sessions)
    await crm.warm_principals()
    reads = counted_reads(crm)
    bus, popper, recorder = wired(crm, inline_recorder=True)
    t0 = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC).timestamp()
    linkedid = offered(t0).linkedid
    bus.publish(CallArrived(at=t0, linkedid=linkedid, caller_number=CALLER, caller_name=None, dnis="4008001234"))
    await eventually(lambda: popper._reads[linkedid].latest is not None)
    bus.publish(offered(t0 + 0.8))
    bus.publish(ringing("agent1001", t0 + 0.81))
    assert [p.member["profile"]["id"] if p.member else None for p in recorder.pops] == [member_id]
    assert reads == [CALLER]  # one read, from the arrival
    await bus.close()
    await popper.close()
    await crm.close()
