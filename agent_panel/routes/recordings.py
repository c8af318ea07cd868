"""Recording playback, legal hold and the agent's PCI pause.

Access is checked twice: when the player is built (it gets short-lived signed URLs, one per play or
download) and when the audio is fetched (the URL must be signed for this recording and the signed-in
user). The first fetch of each grant re-checks the call's visibility and writes the audit row; the
audio element's further Range requests for the same play are served without more rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from agent_panel.auth import STAFF, SUPERVISORS, allow, session_of
from agent_panel.keys import ENGINE, HUB, SESSIONS, SETTINGS
from agent_panel.render import render
from agent_panel.routes.api import Strict, _endpoint, parse, refused
from crm_core.calllog.access import can_access_call
from crm_core.calllog.models import Call
from crm_core.calllog.recording_models import Recording
from crm_core.db import read_session
from crm_core.security.policy import Role
from cti.pci import PciRefused, pci_state, recorded_call_of, set_paused
from recordings import signing
from recordings.playback import (
    RecordingUnavailable,
    Requester,
    SeenGrants,
    audit,
    call_id_of,
    range_is_empty_suffix,
    recording_of_call,
    stored_file,
)
from recordings.retention import RecordingNotFound, RecordingPurged, set_legal_hold

log = logging.getLogger(__name__)
GRANT_KEY = web.AppKey("recording_grant_key", bytes)
SEEN = web.AppKey("recording_grants_seen", SeenGrants)
CONTENT_TYPES = {"mp3": "audio/mpeg", "ogg": "audio/ogg", "opus": "audio/ogg", "wav": "audio/wav", "m4a": "audio/mp4"}


def setup(app: web.Application) -> None:
    app[GRANT_KEY] = signing.signing_key(app[SETTINGS].recordings_url_key)
    app[SEEN] = SeenGrants()
    r = app.router
    r.add_get("/calls/{call_id:\\d+}/recording", player_fragment)
    r.add_get("/api/v1/calls/{call_id:\\d+}/recording", recording_json)
    r.add_get("/recordings/{recording_id:\\d+}/audio", audio)
    r.add_post("/api/v1/recordings/{recording_id:\\d+}/{action:hold|release}", legal_hold)
    r.add_get("/api/v1/recording/pci", pci_get)
    r.add_post("/api/v1/recording/{action:pause|resume}", pci_set)


def _requester(request: web.Request) -> Requester:
    return Requester(session_of(request).principal.user_id, request.remote, request.headers.get("User-Agent"))


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


async def _visible_recording(request: web.Request, call_id: int) -> Recording | None:
    """The call's recording if this user may see the call; 404 if the call is not theirs to see."""
    principal = session_of(request).principal
    async with read_session(request.app[SESSIONS]) as session:
        if await can_access_call(session, principal, call_id):
            return await recording_of_call(session, call_id)
        exists = await session.get(Call, call_id) is not None
    # Audited either way; linked only to a call that exists (an id someone tried is in the detail).
    await audit(
        request.app[SESSIONS],
        _requester(request),
        "denied",
        recording_id=None,
        call_id=call_id if exists else None,
        detail=None if exists else f"no call {call_id}",
    )
    raise web.HTTPNotFound(text='{"error": "call not found"}', content_type="application/json")


async def _may_see(session: AsyncSession, request: web.Request, rec: Recording) -> bool:
    """A recording is as visible as its call; one without a call in the log, to administrators only."""
    principal = session_of(request).principal
    call_id = await call_id_of(session, rec)
    if call_id is None:
        return principal.role == Role.ADMIN
    return await can_access_call(session, principal, call_id)


def _view(request: web.Request, rec: Recording | None) -> dict[str, Any]:
    """What the player needs; signed URLs only for a playable file."""
    if rec is None:
        return {"state": "none"}
    settings = request.app[SETTINGS]
    info = session_of(request)
    view: dict[str, Any] = {
        "id": rec.id,
        "call_id": rec.call_id,
        "state": rec.state,
        "format": rec.format,
        "duration_s": rec.duration_s,
        "size_bytes": rec.size_bytes,
        "peaks": rec.peaks or [],
        "pci_spans": rec.pci_spans or [],
        "legal_hold": rec.legal_hold,
        "hold_reason": rec.hold_reason,
        "retain_until": _iso(rec.retain_until),
        "purged_at": _iso(rec.purged_at),
        "can_hold": info.principal.role in SUPERVISORS,
    }
    if rec.state == "ready":
        key, ttl = request.app[GRANT_KEY], settings.recordings_url_ttl_seconds
        base = f"/recordings/{rec.id}/audio?grant="
        view["url"] = base + signing.sign(key, rec.id, info.principal.user_id, "play", ttl)
        view["download_url"] = base + signing.sign(key, rec.id, info.principal.user_id, "download", ttl)
    return view


@allow(*STAFF)
async def player_fragment(request: web.Request) -> web.Response:
    call_id = int(request.match_info["call_id"])
    rec = await _visible_recording(request, call_id)
    return render(request, "partials/recording_player.html", {"rec": _view(request, rec)})


@allow(*STAFF)
async def recording_json(request: web.Request) -> web.Response:
    rec = await _visible_recording(request, int(request.match_info["call_id"]))
    return web.json_response(_view(request, rec))


@allow(*STAFF)
async def audio(request: web.Request) -> web.StreamResponse:
    recording_id = int(request.match_info["recording_id"])
    who = _requester(request)
    sessions = request.app[SESSIONS]
    try:
        grant = signing.verify(request.app[GRANT_KEY], request.query.get("grant", ""), recording_id, who.user_id)
    except signing.BadGrant as exc:
        # Not linked by id: the URL's recording may not exist at all.
        await audit(sessions, who, "denied", recording_id=None, call_id=None, detail=f"recording {recording_id}: {exc}")
        return refused(403, f"playback refused: {exc}")
    async with read_session(sessions) as session:
        rec = await session.get(Recording, recording_id)
        first = grant.nonce not in request.app[SEEN]
        # The grant was issued after an access check; a first fetch checks again (a role or team
        # change since then counts), further Range requests of the same play ride on it.
        allowed = rec is None or not first or await _may_see(session, request, rec)
        call_id = await call_id_of(session, rec) if rec is not None and first else None
    if rec is not None and not allowed:
        await audit(sessions, who, "denied", recording_id=recording_id, call_id=call_id)
        return refused(403, "playback refused")
    if rec is None:
        return refused(404, "recording not found")
    try:
        path = stored_file(request.app[SETTINGS].recordings_dir, rec)
    except RecordingUnavailable as exc:
        return refused(404, str(exc))
    if first:
        request.app[SEEN].remember(grant.nonce)
        await audit(
            sessions, who, grant.action, recording_id=rec.id, call_id=call_id, detail=request.headers.get("Range")
        )
    if range_is_empty_suffix(request.headers.get("Range")):
        return web.Response(status=416, headers={"Content-Range": f"bytes */{rec.size_bytes or 0}"})
    headers = {"Cache-Control": "private, no-store"}
    if rec.format in CONTENT_TYPES:
        headers["Content-Type"] = CONTENT_TYPES[rec.format]
    if grant.action == "download":
        headers["Content-Disposition"] = f'attachment; filename="call-{rec.call_id or rec.id}.{rec.format}"'
    return web.FileResponse(path, headers=headers)


class HoldIn(Strict):
    reason: str = ""


@allow(*SUPERVISORS)
async def legal_hold(request: web.Request) -> web.Response:
    recording_id = int(request.match_info["recording_id"])
    on = request.match_info["action"] == "hold"
    payload = await parse(request, HoldIn) if request.can_read_body else HoldIn()
    if on and not payload.reason:
        return refused(400, "a legal hold needs a reason")
    sessions = request.app[SESSIONS]
    async with read_session(sessions) as session:
        rec = await session.get(Recording, recording_id)
        if rec is None or not await _may_see(session, request, rec):
            return refused(404, "recording not found")
    try:
        await set_legal_hold(
            sessions,
            recording_id,
            on,
            reason=payload.reason,
            user_id=session_of(request).principal.user_id,
            remote=request.remote,
        )
    except RecordingNotFound:
        return refused(404, "recording not found")
    except RecordingPurged:
        return refused(409, "the recording was already purged")
    return web.json_response({"id": recording_id, "legal_hold": on})


@allow(*STAFF)
async def pci_get(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    try:
        call = recorded_call_of(engine.tracker, _endpoint(request))
    except PciRefused:
        return web.json_response({"linkedid": None, "paused": False})
    state = await pci_state(request.app[SESSIONS], request.app[SETTINGS].pbx_name, call.linkedid)
    return web.json_response({"linkedid": state.linkedid, "paused": state.paused, "since": _iso(state.since)})


@allow(*STAFF)
async def pci_set(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    info = session_of(request)
    paused = request.match_info["action"] == "pause"
    try:
        state = await set_paused(
            engine.ami,
            engine.tracker,
            request.app[SESSIONS],
            pbx=request.app[SETTINGS].pbx_name,
            agent_endpoint=_endpoint(request),
            user_id=info.principal.user_id,
            paused=paused,
        )
    except PciRefused as exc:
        return refused(409, str(exc))
    data = {"linkedid": state.linkedid, "paused": state.paused, "since": _iso(state.since)}
    request.app[HUB].send_to_user(info.principal.user_id, "pci", data)  # every tab of this agent follows
    return web.json_response(data)
