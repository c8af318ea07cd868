"""The panel's WebSocket hub: every user's own stream of numbered frames.

Frames are JSON `{"seq": n, "type": "...", "data": {...}}`, numbered per user. Each user's last
`BUFFER` frames are kept, so a client that reconnects with `?last_seq=n` gets exactly what it missed;
one that fell further behind gets a `resync` frame (its state, current call and the queues) instead.
A connection whose outbound queue fills (a slow or stalled browser) is cut off with close code 4001
rather than let server memory grow; its client reconnects and resumes the same way.

Routing: an agent receives its own pops, calls and state; supervisors also receive the agent states
of their teams (org units below theirs) and the `wallboard` frames; everyone signed in receives
queue counts and banners.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.security.models import OrgUnit, User
from crm_core.security.policy import Role
from crm_core.security.web_sessions import SessionInfo
from cti.calls.events import (
    AgentStateChanged,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallMissed,
    CallOffered,
    DomainEvent,
)
from cti.calls.tracker import CallTracker
from cti.screenpop import ScreenPop

log = logging.getLogger(__name__)

BUFFER = 256  # frames kept per user for resume
SEND_BUFFER_LIMIT = 256 * 1024  # bytes waiting in one connection's socket buffer before it is cut off
CLOSE_SLOW = 4001
CLOSE_SIGNED_OUT = 4003
HEARTBEAT = 15.0
STREAM_IDLE_TTL = 900.0  # a user with no open socket this long is forgotten (a later connect resyncs)
QUEUE_STATS_EVERY = 0.25  # seconds between queue-count frames while calls change

PopRenderer = Callable[[ScreenPop, str], str]


def text_frame(text: str) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2), as a server sends it."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


@dataclass(eq=False)  # identity: connections live in sets
class Connection:
    """One open socket. Frames are written straight to its transport, synchronously: aiohttp's
    `send_str` is a coroutine, so fanning a broadcast out through it needs a task (or an await) per
    client, which measured ~120 µs a frame — 250 ms to reach 2,000 panels (scripts/bench/ws_fanout.py).
    Safe because no compression is negotiated and aiohttp itself writes whole frames per call. A client
    whose unsent bytes pass SEND_BUFFER_LIMIT (it stopped reading) is cut off instead of buffered."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport
    language: str
    token: str
    cut: bool = False

    def offer(self, text: str) -> bool:
        if self.cut or self.transport.is_closing():
            return False
        if self.transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
            self.cut = True
            return False
        self.transport.write(text_frame(text))
        return True


@dataclass
class UserStream:
    user_id: int
    role: Role
    endpoint: str | None
    org_path: str | None
    seq: int = 0
    frames: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=BUFFER))
    connections: set[Connection] = field(default_factory=set)
    call: dict[str, Any] | None = None  # the live call's pop frame data, for a resync
    idle_since: float | None = None  # time.monotonic() when its last socket closed


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    user_id: int
    org_path: str | None


class Hub:
    """Bus subscriber and /ws handler. One per server process (see ARCHITECTURE: beyond one machine,
    events reach each process's hub through PostgreSQL NOTIFY or Redis)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tracker: CallTracker,
        agent_state: Callable[[str], AgentStateChanged | None],
        render_pop: PopRenderer,
        *,
        all_states: Callable[[], Iterable[AgentStateChanged]] = tuple,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions = sessions
        self.tracker = tracker
        self.agent_state = agent_state
        self.render_pop = render_pop
        self.all_states = all_states
        self.clock = clock
        self.streams: dict[int, UserStream] = {}
        # Supervisors and administrators, who also see their teams' agents: an agent-state event
        # looks at these few streams, not at every agent's (2,000 agents × 500 events/s otherwise).
        self.watchers: dict[int, UserStream] = {}
        self.by_endpoint: dict[str, DirectoryEntry] = {}
        self.banner: dict[str, Any] | None = None
        self.queue_stats: dict[str, dict[str, Any]] = {}
        # The wallboard's current board for a supervisor's resync, its agents cut to what that user
        # may see (set by agent_panel.routes.wallboard).
        self.wallboard: Callable[[UserStream], dict[str, Any] | None] = lambda stream: None
        self.frames_sent = 0
        self.cut_off = 0
        self._stats_dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.load_directory()
        self._tasks.append(asyncio.create_task(self._queue_stats_loop(), name="ws-queue-stats"))
        self._tasks.append(asyncio.create_task(self._directory_loop(), name="ws-directory"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream in self.streams.values():
            for conn in list(stream.connections):
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    async def load_directory(self) -> None:
        """Which user sits at which endpoint, and where in the org tree (for supervisors' teams)."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(User.id, User.agent_endpoint, OrgUnit.path)
                .outerjoin(OrgUnit, OrgUnit.id == User.org_unit_id)
                .where(User.agent_endpoint.is_not(None), User.active.is_(True))
            )
            self.by_endpoint = {endpoint: DirectoryEntry(uid, path) for uid, endpoint, path in rows if endpoint}

    async def _directory_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            self.forget_idle_streams()
            with contextlib.suppress(Exception):
                await self.load_directory()

    def forget_idle_streams(self, now: float | None = None) -> int:
        """Drop the buffers of users gone for STREAM_IDLE_TTL: a signed-out shift must not keep
        256 frames per agent for ever. Their next connect gets a resync instead of a replay."""
        now = time.monotonic() if now is None else now
        idle = [
            uid
            for uid, s in self.streams.items()
            if not s.connections and s.idle_since is not None and now - s.idle_since > STREAM_IDLE_TTL
        ]
        for uid in idle:
            del self.streams[uid]
            self.watchers.pop(uid, None)
        return len(idle)

    # ------------------------------------------------------------------ sending
    def _stream(self, info: SessionInfo) -> UserStream:
        p = info.principal
        stream = self.streams.get(p.user_id)
        if stream is None:
            stream = UserStream(p.user_id, p.role, info.agent_endpoint, p.org_unit_path)
            self.streams[p.user_id] = stream
        else:
            stream.endpoint, stream.org_path, stream.role = info.agent_endpoint, p.org_unit_path, p.role
        if p.role in (Role.SUPERVISOR, Role.ADMIN):
            self.watchers[p.user_id] = stream
        else:
            self.watchers.pop(p.user_id, None)
        if info.agent_endpoint:
            self.by_endpoint[info.agent_endpoint] = DirectoryEntry(p.user_id, p.org_unit_path)
        return stream

    def _send(self, stream: UserStream, kind: str, data: dict[str, Any], *, text: str | None = None) -> None:
        stream.seq += 1
        if text is None:
            frame = json.dumps({"seq": stream.seq, "type": kind, "data": data}, ensure_ascii=False)
        else:
            frame = '{"seq":%d,%s' % (stream.seq, text)  # noqa: UP031 - pre-serialised body
        stream.frames.append((stream.seq, frame))
        for conn in list(stream.connections):
            if conn.offer(frame):
                self.frames_sent += 1
            elif conn.cut:
                self._cut(stream, conn)

    def _cut(self, stream: UserStream, conn: Connection) -> None:
        stream.connections.discard(conn)
        self.cut_off += 1
        log.warning("ws: user %d stopped reading (>%d bytes unsent): cut off", stream.user_id, SEND_BUFFER_LIMIT)
        asyncio.get_running_loop().create_task(_close_slow(conn))

    def send_to_user(self, user_id: int, kind: str, data: dict[str, Any]) -> None:
        stream = self.streams.get(user_id)
        if stream is not None:
            self._send(stream, kind, data)

    def broadcast(self, kind: str, data: dict[str, Any], *, roles: Iterable[Role] | None = None) -> None:
        """One serialisation for every recipient: only the sequence number differs per user. Users
        briefly disconnected get it too (into their buffer), so a resume does not miss a banner."""
        body = json.dumps({"type": kind, "data": data}, ensure_ascii=False)[1:]
        allowed = None if roles is None else set(roles)
        for stream in self.streams.values():
            if allowed is None or stream.role in allowed:
                self._send(stream, kind, data, text=body)

    def _user_for(self, endpoint: str | None) -> UserStream | None:
        if endpoint is None:
            return None
        entry = self.by_endpoint.get(endpoint)
        return None if entry is None else self.streams.get(entry.user_id)

    # ------------------------------------------------------------------ bus events
    async def __call__(self, event: DomainEvent) -> None:
        if isinstance(event, ScreenPop):
            self._on_pop(event)
        elif isinstance(event, AgentStateChanged):
            self._on_agent_state(event)
        elif isinstance(event, CallAnswered):
            stream = self._user_for(event.agent)
            if stream is not None:
                if stream.call is not None and stream.call.get("linkedid") == event.linkedid:
                    stream.call["answered"] = True
                self._send(stream, "call_answered", {"linkedid": event.linkedid, "agent": event.agent})
            self._stats_dirty.set()
        elif isinstance(event, CallEnded):
            self._on_call_ended(event)
        elif isinstance(event, CallAbandoned | CallMissed | CallOffered):
            self._stats_dirty.set()

    def _on_pop(self, pop: ScreenPop) -> None:
        stream = self.streams.get(pop.user_id) if pop.user_id is not None else self._user_for(pop.agent)
        if stream is None:
            return
        snap = self.tracker.call_snapshot(pop.linkedid)
        spy = snap.variables.get("CTI_SPY") if snap is not None else None
        if spy is not None and snap is not None:
            # A supervisor's listen / whisper / barge leg ringing: no caller, no card to pop.
            agent = snap.variables.get("CTI_SPY_AGENT")
            self._send(stream, "supervising", {"linkedid": pop.linkedid, "mode": spy, "agent": agent})
            return
        data = pop_data(pop)
        if snap is not None:
            data["queued_at"] = snap.queued_at or snap.started_at
        stream.call = data
        languages = {c.language for c in stream.connections} or {"zh_CN"}
        data["html"] = {lang: self.render_pop(pop, lang) for lang in languages}
        self._send(stream, "pop", data)

    def _on_agent_state(self, event: AgentStateChanged) -> None:
        data = agent_state_data(event)
        stream = self._user_for(event.agent)
        if stream is not None:
            self._send(stream, "agent_state", data)
        entry = self.by_endpoint.get(event.agent)
        agent_path = entry.org_path if entry else None
        for sup in self.watchers.values():
            if sup.connections and sup.endpoint != event.agent and sees_team(sup, agent_path):
                self._send(sup, "team_state", data)
        self._stats_dirty.set()

    def _on_call_ended(self, event: CallEnded) -> None:
        self._stats_dirty.set()
        talked = {leg.agent for leg in event.agents if leg.answered} | (
            {event.answered_by} if event.answered_by else set()
        )
        for agent in {a.agent for a in event.agents} | ({event.answered_by} if event.answered_by else set()):
            stream = self._user_for(agent)
            if stream is None:
                continue
            member_id = stream.call.get("member_id") if stream.call else None
            if stream.call is not None and stream.call.get("linkedid") == event.linkedid:
                stream.call = None
            self._send(
                stream,
                "call_ended",
                {
                    "linkedid": event.linkedid,
                    "outcome": event.outcome,
                    # Each agent who talked wraps up, not only the first (a transfer adds agents).
                    "answered": agent in talked,
                    "direction": event.direction,
                    "queue": event.queue,
                    "customer_number": event.customer_number,
                    "talk_seconds": round(event.talk_seconds, 1),
                    "member_id": member_id or _int(event.variables.get("CTI_MEMBER_ID")),
                },
            )

    # ------------------------------------------------------------------ queue counts
    def compute_queue_stats(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        stats: dict[str, dict[str, Any]] = {}
        snapshot = self.tracker.snapshot(now)
        for call in snapshot.calls:
            if call.queue is None:
                continue
            q = stats.setdefault(call.queue, {"waiting": 0, "longest_wait": 0.0, "talking": 0})
            if call.status in ("queued", "ringing"):
                q["waiting"] += 1
                q["longest_wait"] = max(q["longest_wait"], round(now - (call.queued_at or call.started_at), 1))
            elif call.status == "talking":
                q["talking"] += 1
        for agent in snapshot.agents:
            for queue in agent.queues:
                q = stats.setdefault(queue, {"waiting": 0, "longest_wait": 0.0, "talking": 0})
                # Static members whose phone is offline (unavailable) could not take a call.
                q["agents_ready"] = q.get("agents_ready", 0) + (1 if agent.state == "ready" and agent.available else 0)
                q["agents_logged_in"] = q.get("agents_logged_in", 0) + (1 if agent.available else 0)
        return stats

    async def _queue_stats_loop(self) -> None:
        while True:
            await self._stats_dirty.wait()
            self._stats_dirty.clear()
            stats = self.compute_queue_stats()
            if stats != self.queue_stats:
                self.queue_stats = stats
                self.broadcast("queues", {"queues": stats})
            await asyncio.sleep(QUEUE_STATS_EVERY)

    def send_wallboard(self, board: dict[str, Any]) -> None:
        """A `wallboard` frame to supervisors and administrators only (the watchers), serialised once."""
        body = json.dumps({"type": "wallboard", "data": board}, ensure_ascii=False)[1:]
        for stream in self.watchers.values():
            self._send(stream, "wallboard", board, text=body)

    def callbacks_changed(self, callback_id: int) -> None:
        """A callback was opened, claimed or closed (and committed): lists refresh."""
        self.broadcast(
            "callbacks_changed", {"callback_id": callback_id}, roles=(Role.AGENT, Role.SUPERVISOR, Role.ADMIN)
        )

    # ------------------------------------------------------------------ banners
    def post_banner(self, text: str, by: str) -> dict[str, Any]:
        self.banner = {"text": text, "by": by, "at": self.clock()} if text else None
        self.broadcast("banner", self.banner or {"text": ""})
        return self.banner or {}

    # ------------------------------------------------------------------ the /ws handler
    def resync_data(self, stream: UserStream, language: str) -> dict[str, Any]:
        state = self.agent_state(stream.endpoint) if stream.endpoint else None
        call = None
        if stream.call is not None:
            call = dict(stream.call)
            linkedid = call.get("linkedid")
            if linkedid is None or self.tracker.call_snapshot(linkedid) is None:
                stream.call = call = None
        team = []
        if stream.role in (Role.SUPERVISOR, Role.ADMIN):
            for other in self.all_states():
                entry = self.by_endpoint.get(other.agent)
                if other.agent != stream.endpoint and sees_team(stream, entry.org_path if entry else None):
                    team.append(agent_state_data(other))
        return {
            "team": team,
            "agent_state": agent_state_data(state) if state else None,
            "call": call,
            "queues": self.queue_stats,
            "banner": self.banner,
            "language": language,
            "wallboard": self.wallboard(stream) if stream.role in (Role.SUPERVISOR, Role.ADMIN) else None,
        }

    async def handle(self, request: web.Request, info: SessionInfo, token: str, language: str) -> web.WebSocketResponse:
        # No permessage-deflate: frames are small, and compressing each broadcast once per client (the
        # browsers ask for it) costs more CPU than the bytes are worth on a LAN.
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=64 * 1024, compress=False)
        await ws.prepare(request)
        transport = request.transport
        if transport is None:  # the client went away during the handshake
            return ws
        stream = self._stream(info)
        conn = Connection(ws, transport, language, token)
        try:
            last = int(request.query.get("last_seq", "-1"))
        except ValueError:
            last = -1
        if not await self._replay(ws, stream, last):
            data = self.resync_data(stream, language)
            if data["call"] is not None and "html" in data["call"] and language not in data["call"]["html"]:
                data["call"] = None  # rendered for another language; the next event brings it
            conn.offer(json.dumps({"seq": stream.seq, "type": "resync", "data": data}, ensure_ascii=False))
        else:
            conn.offer(json.dumps({"seq": stream.seq, "type": "resumed", "data": {"from": last}}))
        # No await between the replay's last check and this: no frame can fall between the two.
        stream.connections.add(conn)
        stream.idle_since = None
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and msg.data == "ping":
                    await ws.send_str('{"type":"pong"}')
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            stream.connections.discard(conn)
            if not stream.connections:
                stream.idle_since = time.monotonic()
        return ws

    async def _replay(self, ws: web.WebSocketResponse, stream: UserStream, last: int) -> bool:
        """Send the frames after `last`, waiting for the socket to drain as needed (a long replay must
        not trip the slow-client limit of live frames). False when they are no longer all buffered."""
        if not 0 <= last <= stream.seq:
            return False
        sent = last
        while True:
            pending = [(seq, frame) for seq, frame in stream.frames if seq > sent]
            if not pending:
                return True
            if pending[0][0] != sent + 1:
                return False  # fell out of the buffer (before or during the replay)
            for seq, frame in pending:
                await ws.send_str(frame)
                sent = seq

    async def close_token(self, token: str) -> None:
        """Signed out: its open sockets close too."""
        for stream in self.streams.values():
            for conn in list(stream.connections):
                if conn.token == token:
                    stream.connections.discard(conn)
                    await conn.ws.close(code=CLOSE_SIGNED_OUT, message=b"signed out")

    def stats(self) -> dict[str, Any]:
        return {
            "users": len(self.streams),
            "connections": sum(len(s.connections) for s in self.streams.values()),
            "frames_sent": self.frames_sent,
            "cut_off": self.cut_off,
        }


async def _close_slow(conn: Connection) -> None:
    """Close code 4001 tells the client to resume; one that does not read even that is dropped."""
    try:
        await asyncio.wait_for(conn.ws.close(code=CLOSE_SLOW, message=b"too slow; resume"), timeout=5)
    except (TimeoutError, ConnectionError):
        conn.transport.abort()


def sees_team(stream: UserStream, agent_path: str | None) -> bool:
    if stream.role == Role.ADMIN:
        return True
    if stream.org_path is None or agent_path is None:
        return False
    return agent_path.startswith(stream.org_path)


def pop_data(pop: ScreenPop) -> dict[str, Any]:
    member = pop.member or {}
    profile = member.get("profile") or {}
    return {
        "linkedid": pop.linkedid,
        "agent": pop.agent,
        "queue": pop.queue,
        "dnis": pop.dnis,
        "direction": pop.direction,
        "caller_number": pop.caller_number,
        "caller_name": pop.caller_name,
        "ringing_at": pop.ringing_at,
        "lookup_ms": round(pop.lookup_ms, 2),
        "member_id": profile.get("id") or (pop.candidates[0]["member_id"] if pop.partial and pop.candidates else None),
        "member_name": profile.get("name"),
        "partial": pop.partial,
        "candidates": len(pop.candidates),
        "answered": False,
    }


def agent_state_data(event: AgentStateChanged) -> dict[str, Any]:
    return {
        "agent": event.agent,
        "name": event.name,
        "state": event.state,
        "paused": event.paused,
        "pause_reason": event.pause_reason,
        "queues": list(event.queues),
        "available": event.available,
        "linkedid": event.linkedid,
        "at": event.at,
    }


def _int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
