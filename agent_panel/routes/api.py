"""The panel's JSON API (`/api/v1`): agent state, dialling, wrap-up, callbacks, members, banners.

Payloads are validated with pydantic; a bad one gets 400 with the field errors and changes nothing.
Domain refusals (not logged in, already claimed, out of scope) are 409/404/403 with a message the
panel shows as is.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_panel.auth import ALL_ROLES, STAFF, SUPERVISORS, allow, session_of
from agent_panel.keys import ENGINE, HUB, SESSIONS, SETTINGS
from crm_core.callbacks import service as callbacks
from crm_core.calllog.service import agents_of, call_by_linkedid, set_wrapup
from crm_core.comms.schemas import CommunicationIn
from crm_core.comms.service import add_record, records_for_member
from crm_core.db import read_session, transaction, utcnow
from crm_core.member360 import member_360
from crm_core.members import service as members
from crm_core.members.errors import DuplicateMember, MemberError, MemberNotFound
from crm_core.members.schemas import MemberIn
from crm_core.members.validation import InvalidField
from crm_core.security.policy import PermissionDenied, Role
from cti.agents import AgentError
from cti.dialer import DialRefused
from cti.supervision import SpyRefused, spy

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/me", me)
    r.add_get("/api/v1/softphone", softphone)
    r.add_post("/api/v1/agent/{action:login|logout|ready|pause}", agent_action)
    r.add_post("/api/v1/dial", dial)
    r.add_post("/api/v1/wrapup", wrapup)
    r.add_get("/api/v1/callbacks", callbacks_list)
    r.add_post("/api/v1/callbacks/claim-next", callback_claim_next)
    r.add_post("/api/v1/callbacks/{callback_id:\\d+}/{action:claim|release|dial|attempt}", callback_action)
    r.add_get("/api/v1/members", members_search)
    r.add_post("/api/v1/members", member_create)
    r.add_post("/api/v1/members/{member_id:\\d+}/link-number", member_link_number)
    r.add_get("/api/v1/members/{member_id:\\d+}/comms", comms_list)
    r.add_get("/api/v1/members/{member_id:\\d+}/360", member_view)
    r.add_post("/api/v1/members/{member_id:\\d+}/comms", comms_add)
    r.add_post("/api/v1/broadcast", broadcast)
    r.add_post("/api/v1/supervise", supervise)
    r.add_post("/api/v1/agents/{agent:[A-Za-z0-9_-]+}/{action:ready|pause|logout}", force_agent)
    r.add_get("/api/v1/queues", queues)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


async def parse(request: web.Request, model: type[M]) -> M:
    try:
        payload = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text='{"error": "the body must be JSON"}', content_type="application/json") from exc
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise bad_request(exc.errors(include_url=False, include_context=False, include_input=False)) from exc


def bad_request(errors: Any) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=web.json_response({"error": "invalid request", "details": errors}).text,
        content_type="application/json",
    )


def refused(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def guarded(action: Callable[[], Awaitable[web.Response]]) -> web.Response:
    """Map domain refusals to HTTP answers in one place."""
    try:
        return await action()
    except MemberNotFound:
        return refused(404, "member not found")
    except PermissionDenied as exc:
        return refused(403, str(exc))
    except (InvalidField, ValueError) as exc:
        return refused(400, str(exc))
    except (AgentError, DialRefused, callbacks.CallbackError, MemberError) as exc:
        return refused(409, str(exc))


def _endpoint(request: web.Request) -> str:
    endpoint = session_of(request).agent_endpoint
    if not endpoint:
        raise web.HTTPConflict(text='{"error": "no phone seat is assigned to you"}', content_type="application/json")
    return endpoint


# ---------------------------------------------------------------------------- me and the softphone
@allow(*ALL_ROLES)
async def me(request: web.Request) -> web.Response:
    info = session_of(request)
    engine = request.app[ENGINE]
    state = engine.agents.state_of(info.agent_endpoint) if info.agent_endpoint else None
    return web.json_response(
        {
            "user_id": info.principal.user_id,
            "username": info.principal.username,
            "display_name": info.display_name,
            "role": info.principal.role.value,
            "endpoint": info.agent_endpoint,
            "state": None if state is None else state.state,
        }
    )


@allow(*STAFF)
async def softphone(request: web.Request) -> web.Response:
    """The signed-in agent's own SIP credentials, issued per request and never cached by the browser."""
    settings = request.app[SETTINGS]
    endpoint = _endpoint(request)
    secret = settings.sip_secrets.get(endpoint)
    if secret is None:
        return refused(409, f"no softphone credentials are configured for {endpoint}")
    response = web.json_response(
        {
            "ws_url": settings.sip_ws_url,
            "uri": f"sip:{endpoint}@{settings.sip_domain}",
            "authorization_user": endpoint,
            "password": secret,
            "display_name": session_of(request).display_name,
        }
    )
    response.headers["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------------------- agent state
class PauseIn(Strict):
    reason: str = Field(min_length=1, max_length=32)


@allow(*STAFF)
async def agent_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    endpoint = _endpoint(request)
    agents = request.app[ENGINE].agents
    name = session_of(request).display_name
    reason = (await parse(request, PauseIn)).reason if action == "pause" else None

    async def run() -> web.Response:
        if action == "login":
            return web.json_response({"queues": await agents.login(endpoint, name=name)})
        if action == "logout":
            await agents.logout(endpoint)
        elif action == "ready":
            await agents.ready(endpoint)
        else:
            assert reason is not None
            await agents.pause(endpoint, reason)
        return web.json_response({"ok": True})

    return await guarded(run)


# ---------------------------------------------------------------------------- click-to-dial
class DialIn(Strict):
    member_id: int | None = None
    contact_id: int | None = None
    number: str | None = Field(default=None, max_length=32)
    reference: str | None = Field(default=None, max_length=64)


@allow(*STAFF)
async def dial(request: web.Request) -> web.Response:
    data = await parse(request, DialIn)
    endpoint = _endpoint(request)
    principal = session_of(request).principal
    engine = request.app[ENGINE]

    async def run() -> web.Response:
        started = await engine.dialer.dial(
            principal,
            endpoint,
            number=data.number,
            member_id=data.member_id,
            contact_id=data.contact_id,
            reference=data.reference,
        )
        return web.json_response({"call_id": started.call_id, "number": started.number_masked})

    return await guarded(run)


# ---------------------------------------------------------------------------- wrap-up
class WrapupIn(Strict):
    linkedid: str = Field(min_length=1, max_length=64)
    disposition: str = Field(min_length=1, max_length=32)
    member_id: int | None = None
    category: Literal["enquiry", "complaint", "suggestion", "return_visit", "other"] = "enquiry"
    urgency: Literal["normal", "important", "urgent"] = "normal"
    status: Literal["pending", "in_progress", "done"] = "done"
    summary: str = Field(default="", max_length=2000)
    direction: Literal["in", "out"] = "in"
    follow_up_at: dt.datetime | None = None


@allow(*STAFF)
async def wrapup(request: web.Request) -> web.Response:
    """Save the disposition on the call and a communication record linked to it, then release a
    required wrap-up hold. Saving twice for the same call does not create a second record."""
    data = await parse(request, WrapupIn)
    settings = request.app[SETTINGS]
    if data.disposition not in settings.dispositions:
        return refused(400, f"unknown disposition {data.disposition!r}")
    if data.follow_up_at is not None and data.status == "done":
        return refused(400, "a follow-up needs status pending or in progress")
    if data.member_id is not None and not data.summary:
        return refused(400, "write a summary of the call")
    info = session_of(request)
    engine = request.app[ENGINE]

    async def run() -> web.Response:
        record_id = None
        async with transaction(request.app[SESSIONS]) as session:
            call = await call_by_linkedid(session, data.linkedid, settings.pbx_name)
            if call is None:
                return refused(404, "no such call")
            if info.principal.role == Role.AGENT:
                handled_by = {a.agent_endpoint for a in await agents_of(session, call.id)} | {call.agent_endpoint}
                # An agent without a seat was on no call (a call nobody answered has no endpoint either).
                if info.agent_endpoint is None or info.agent_endpoint not in handled_by:
                    return refused(403, "this call was handled by another agent")
            ended = call.ended_at
            wrapup_s = (utcnow() - ended).total_seconds() if ended else None
            await set_wrapup(
                session, data.linkedid, disposition=data.disposition, wrapup_s=wrapup_s, pbx=settings.pbx_name
            )
            member_id = data.member_id or call.member_id
            if member_id is not None:
                summary = data.summary or data.disposition
                if data.follow_up_at is not None:
                    summary += f"\n[follow-up] {data.follow_up_at.isoformat()}"
                record_id = await add_record(
                    session,
                    info.principal,
                    CommunicationIn(
                        member_id=member_id,
                        direction=data.direction,
                        category=data.category,
                        urgency=data.urgency,
                        status=data.status,
                        summary=summary,
                        phone=call.caller_e164 if data.direction == "in" else call.callee_e164,
                        call_id=data.linkedid,
                    ),
                    replace_for_call=True,
                )
        if info.agent_endpoint:
            try:
                await engine.agents.finish_wrapup(info.agent_endpoint)
            except AgentError as exc:  # the wrap-up is saved; only the release failed (PBX away)
                log.warning("wrap-up saved but %s not released: %s", info.agent_endpoint, exc)
                return web.json_response({"ok": True, "communication_id": record_id, "warning": str(exc)})
        return web.json_response({"ok": True, "communication_id": record_id})

    return await guarded(run)


# ---------------------------------------------------------------------------- callbacks
@allow(*STAFF)
async def callbacks_list(request: web.Request) -> web.Response:
    async with read_session(request.app[SESSIONS]) as session:
        rows = await callbacks.list_callbacks(
            session, session_of(request).principal, mine=request.query.get("mine") == "1"
        )
    return web.json_response({"callbacks": rows})


@allow(*STAFF)
async def callback_claim_next(request: web.Request) -> web.Response:
    async with transaction(request.app[SESSIONS]) as session:
        callback_id = await callbacks.claim_next(session, session_of(request).principal)
    return web.json_response({"callback_id": callback_id})


class AttemptIn(Strict):
    outcome: Literal["reached", "no_answer", "busy", "wrong_number"]
    note: str | None = Field(default=None, max_length=500)
    linkedid: str | None = Field(default=None, max_length=64)


@allow(*STAFF)
async def callback_action(request: web.Request) -> web.Response:
    callback_id = int(request.match_info["callback_id"])
    action = request.match_info["action"]
    info = session_of(request)
    attempt = await parse(request, AttemptIn) if action == "attempt" else None
    app = request.app

    async def run() -> web.Response:
        if action == "dial":
            async with read_session(app[SESSIONS]) as session:
                number, member_id = await callbacks.number_to_dial(session, info.principal, callback_id)
            started = await app[ENGINE].dialer.dial(
                info.principal,
                _endpoint(request),
                number=number,
                member_id=member_id,
                reference=f"callback:{callback_id}",
            )
            return web.json_response({"call_id": started.call_id, "number": started.number_masked})
        async with transaction(app[SESSIONS]) as session:
            if action == "claim":
                await callbacks.claim(session, info.principal, callback_id)
                status = "claimed"
            elif action == "release":
                await callbacks.release(session, info.principal, callback_id)
                status = "open"
            else:
                assert attempt is not None
                status = await callbacks.record_attempt(
                    session,
                    info.principal,
                    callback_id,
                    attempt.outcome,
                    app[SETTINGS],
                    linkedid=attempt.linkedid,
                    note=attempt.note,
                )
        app[HUB].callbacks_changed(callback_id)
        return web.json_response({"callback_id": callback_id, "status": status})

    return await guarded(run)


# ---------------------------------------------------------------------------- members
@allow(*ALL_ROLES)
async def members_search(request: web.Request) -> web.Response:
    query = request.query.get("q", "")[:100]
    async with read_session(request.app[SESSIONS]) as session:
        rows = await members.search_members(session, session_of(request).principal, query)
    return web.json_response({"members": rows})


@allow(*ALL_ROLES)
async def member_create(request: web.Request) -> web.Response:
    """A new member from the pop's form (an unknown caller): an application with what the agent knows;
    the join workflow lists what is still missing."""
    data = await parse(request, MemberIn)
    settings = request.app[SETTINGS]
    engine = request.app[ENGINE]

    async def run() -> web.Response:
        try:
            async with transaction(request.app[SESSIONS]) as session:
                result = await members.submit_application(session, session_of(request).principal, data, settings)
        except DuplicateMember as exc:
            return refused(409, str(exc))
        engine.crm.forget_number(data.mobile)
        return web.json_response(
            {
                "member_id": result.member_id,
                "member_no": result.member_no,
                "status": result.status,
                "missing": result.missing,
            },
            status=201,
        )

    return await guarded(run)


class LinkIn(Strict):
    number: str = Field(min_length=3, max_length=32)
    kind: Literal["mobile", "home", "work"] = "mobile"


@allow(*ALL_ROLES)
async def member_link_number(request: web.Request) -> web.Response:
    member_id = int(request.match_info["member_id"])
    data = await parse(request, LinkIn)
    engine = request.app[ENGINE]

    async def run() -> web.Response:
        async with transaction(request.app[SESSIONS]) as session:
            contact_id = await members.link_number(
                session, session_of(request).principal, member_id, data.number, data.kind
            )
        engine.crm.forget_number(data.number)
        return web.json_response({"member_id": member_id, "contact_id": contact_id, "linked": contact_id is not None})

    return await guarded(run)


@allow(*ALL_ROLES)
async def member_view(request: web.Request) -> web.Response:
    """The member 360 as JSON, through the reader's field permissions (what the card shows)."""
    member_id = int(request.match_info["member_id"])

    async def run() -> web.Response:
        async with read_session(request.app[SESSIONS]) as session:
            view = await member_360(session, session_of(request).principal, member_id)
        return web.json_response(view)

    return await guarded(run)


@allow(*ALL_ROLES)
async def comms_list(request: web.Request) -> web.Response:
    member_id = int(request.match_info["member_id"])

    async def run() -> web.Response:
        async with read_session(request.app[SESSIONS]) as session:
            rows = await records_for_member(session, session_of(request).principal, member_id)
        return web.json_response({"records": rows})

    return await guarded(run)


class CommIn(Strict):
    direction: Literal["in", "out"]
    category: Literal["enquiry", "complaint", "suggestion", "return_visit", "other"]
    urgency: Literal["normal", "important", "urgent"] = "normal"
    status: Literal["pending", "in_progress", "done"] = "pending"
    summary: str = Field(min_length=1, max_length=2000)
    contact_name: str | None = Field(default=None, max_length=50)


@allow(*ALL_ROLES)
async def comms_add(request: web.Request) -> web.Response:
    member_id = int(request.match_info["member_id"])
    data = await parse(request, CommIn)

    async def run() -> web.Response:
        async with transaction(request.app[SESSIONS]) as session:
            record_id = await add_record(
                session, session_of(request).principal, CommunicationIn(member_id=member_id, **data.model_dump())
            )
        return web.json_response({"id": record_id}, status=201)

    return await guarded(run)


# ---------------------------------------------------------------------------- supervisors
class BannerIn(Strict):
    text: str = Field(default="", max_length=300)


@allow(*SUPERVISORS)
async def broadcast(request: web.Request) -> web.Response:
    data = await parse(request, BannerIn)
    banner = request.app[HUB].post_banner(data.text, session_of(request).display_name)
    return web.json_response({"banner": banner})


@allow(*STAFF)
async def queues(request: web.Request) -> web.Response:
    return web.json_response({"queues": request.app[HUB].compute_queue_stats()})


def _in_team(request: web.Request, agent: str) -> bool:
    """Supervisors act on the agents of their org unit and below; administrators on everyone."""
    principal = session_of(request).principal
    if principal.role == Role.ADMIN:
        return True
    entry = request.app[HUB].by_endpoint.get(agent)
    path = entry.org_path if entry else None
    return bool(path and principal.org_unit_path and path.startswith(principal.org_unit_path))


class SuperviseIn(Strict):
    agent: str = Field(min_length=1, max_length=64)
    mode: Literal["listen", "whisper", "barge"]


@allow(*SUPERVISORS)
async def supervise(request: web.Request) -> web.Response:
    """Listen, whisper or barge on an agent's live call: the supervisor's softphone rings first."""
    data = await parse(request, SuperviseIn)
    if not _in_team(request, data.agent):
        return refused(403, f"{data.agent} is not in your team")
    engine = request.app[ENGINE]
    try:
        await spy(engine.ami, engine.agents, _endpoint(request), data.agent, data.mode)
    except SpyRefused as exc:
        return refused(409, str(exc))
    return web.json_response({"ok": True, "agent": data.agent, "mode": data.mode})


class ForceIn(Strict):
    reason: str | None = Field(default=None, max_length=32)


@allow(*SUPERVISORS)
async def force_agent(request: web.Request) -> web.Response:
    """A supervisor sets an agent ready, paused (with a reason) or logged out of the queues."""
    agent, action = request.match_info["agent"], request.match_info["action"]
    data = await parse(request, ForceIn)
    if not _in_team(request, agent):
        return refused(403, f"{agent} is not in your team")
    agents = request.app[ENGINE].agents

    async def run() -> web.Response:
        if action == "ready":
            await agents.ready(agent)
        elif action == "pause":
            await agents.pause(agent, data.reason or "meeting")
        else:
            await agents.logout(agent)
        log.info("%s forced %s %s", session_of(request).principal.username, agent, action)
        return web.json_response({"ok": True, "agent": agent, "action": action})

    return await guarded(run)
