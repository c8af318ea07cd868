"""The panel WebSocket: numbered frames, resume after a reconnect, resync when too far behind, a slow
client cut off instead of growing memory, and each user receiving only what is theirs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from agent_panel import ws as hub_module
from agent_panel.keys import HUB
from cti.calls.events import AgentStateChanged
from cti.screenpop import ScreenPop
from tests.panel.conftest import Panel, login


def state_event(agent: str, state: str = "ready") -> AgentStateChanged:
    return AgentStateChanged(
        at=time.time(),
        agent=agent,
        interface=f"PJSIP/{agent}",
        name=agent,
        state=state,  # type: ignore[arg-type]
        previous_state=None,
        paused=state == "paused",
        pause_reason="break" if state == "paused" else None,
        queues=("member-service",),
        paused_queues=(),
        available=True,
        linkedid=None,
    )


def pop_event(agent: str, user_id: int, number: str) -> ScreenPop:
    return ScreenPop(
        at=time.time(),
        linkedid=f"call-{number}",
        agent=agent,
        user_id=user_id,
        queue="member-service",
        dnis="4008001234",
        direction="inbound",
        caller_number=number,
        caller_name=None,
        candidates=(),
        member=None,
        ringing_at=time.time(),
        lookup_ms=0.5,
    )


async def frames_until(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    seen = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        frame = await ws.receive_json(timeout=max(0.01, deadline - asyncio.get_running_loop().time()))
        seen.append(frame)
        if frame["type"] == kind:
            return seen


async def test_each_user_gets_only_their_own_frames(panel: Panel) -> None:
    async with panel.client() as a1, panel.client() as a2, panel.client() as sup:
        await login(a1, "agent1")
        await login(a2, "agent2")
        await login(sup, "sup1")
        ws1, ws2, wss = await a1.ws_connect("/ws"), await a2.ws_connect("/ws"), await sup.ws_connect("/ws")
        for ws in (ws1, ws2, wss):
            assert (await ws.receive_json(timeout=5))["type"] == "resync"
        bus = panel.engine.bus
        bus.publish(pop_event("webrtc2001", panel.principals["agent1"].user_id, "13800138001"))
        bus.publish(state_event("webrtc2001", "ringing"))
        bus.publish(state_event("webrtc2002", "paused"))
        got1 = await frames_until(ws1, "agent_state")
        assert [f["type"] for f in got1] == ["pop", "agent_state"]
        assert got1[0]["data"]["caller_number"] == "13800138001"
        assert "13800138001" in got1[0]["data"]["html"]["zh_CN"]
        assert got1[1]["data"]["agent"] == "webrtc2001"
        assert [f["seq"] for f in got1] == [1, 2]
        got2 = await frames_until(ws2, "agent_state")
        assert [(f["type"], f["data"]["agent"]) for f in got2] == [("agent_state", "webrtc2002")]
        # sup1 leads org unit 310 (agent1's team), not 320 (agent2's).
        team = await frames_until(wss, "team_state")
        assert team[-1]["data"]["agent"] == "webrtc2001"
        with pytest.raises(asyncio.TimeoutError):
            more = await wss.receive_json(timeout=0.5)
            assert more["data"].get("agent") != "webrtc2002", "a supervisor saw another team's agent"
        # Broadcasts (banner) reach everyone, numbered in each user's own sequence.
        panel.app[HUB].post_banner("系统将于今晚维护", "sup1")
        for ws in (ws1, ws2, wss):
            frames = await frames_until(ws, "banner")
            assert frames[-1]["data"]["text"] == "系统将于今晚维护"
        for ws in (ws1, ws2, wss):
            await ws.close()


async def test_reconnect_resumes_from_last_seq_or_resyncs(panel: Panel, monkeypatch: pytest.MonkeyPatch) -> None:
    async with panel.client() as a1:
        await login(a1, "agent1")
        ws = await a1.ws_connect("/ws")
        assert (await ws.receive_json(timeout=5))["type"] == "resync"
        bus = panel.engine.bus
        for state in ("ready", "ringing", "on_call"):
            bus.publish(state_event("webrtc2001", state))
        frames = []
        while len(frames) < 3:
            frames.append(await ws.receive_json(timeout=5))
        assert [f["seq"] for f in frames] == [1, 2, 3]
        await ws.close()
        # Missed while disconnected: seq 4 and 5, and a banner (6) sent to everyone meanwhile.
        bus.publish(state_event("webrtc2001", "wrap_up"))
        bus.publish(state_event("webrtc2001", "ready"))
        await asyncio.sleep(0.3)
        panel.app[HUB].post_banner("午休时段", "sup1")
        ws = await a1.ws_connect("/ws?last_seq=3")
        replay = [await ws.receive_json(timeout=5) for _ in range(4)]
        assert [(f["seq"], f["type"]) for f in replay] == [
            (4, "agent_state"),
            (5, "agent_state"),
            (6, "banner"),
            (6, "resumed"),
        ]
        assert [f["data"]["state"] for f in replay[:2]] == ["wrap_up", "ready"]
        await ws.close()
        # Too far behind (the buffer no longer holds seq 1): a resync instead of a partial replay.
        monkeypatch.setattr(hub_module, "BUFFER", 2)
        stream = panel.app[HUB].streams[panel.principals["agent1"].user_id]
        stream.frames = type(stream.frames)(list(stream.frames)[-2:], maxlen=2)
        ws = await a1.ws_connect("/ws?last_seq=1")
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "resync" and first["seq"] == 6
        await ws.close()
        # A client that claims to be ahead of the server (e.g. after a server restart) resyncs too.
        ws = await a1.ws_connect("/ws?last_seq=999")
        assert (await ws.receive_json(timeout=5))["type"] == "resync"
        await ws.close()


async def test_a_slow_client_is_cut_off_not_buffered(panel: Panel, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = panel.app[HUB]
    async with panel.client() as a1:
        await login(a1, "agent1")
        ws = await a1.ws_connect("/ws")
        assert (await ws.receive_json(timeout=5))["type"] == "resync"
        stream = hub.streams[panel.principals["agent1"].user_id]
        (conn,) = stream.connections
        # A browser that stopped reading: its socket's unsent bytes grow with every frame.
        unsent = 0
        written: list[bytes] = []

        def stalled_write(data: bytes) -> None:
            nonlocal unsent
            unsent += len(data)
            written.append(data)

        monkeypatch.setattr(hub_module, "SEND_BUFFER_LIMIT", 4096)
        monkeypatch.setattr(conn.transport, "write", stalled_write)
        monkeypatch.setattr(conn.transport, "get_write_buffer_size", lambda: unsent)
        for i in range(200):
            hub.send_to_user(stream.user_id, "agent_state", {"n": i, "pad": "x" * 100})
        assert hub.cut_off == 1
        assert conn not in stream.connections
        assert sum(map(len, written)) <= 4096 + 200  # memory stayed bounded: writing stopped at the limit
        assert len(written) < 200
        monkeypatch.undo()
        # Its user reconnects and resumes from the buffer (nothing lost within BUFFER frames).
        ws2 = await a1.ws_connect("/ws?last_seq=0")
        frames = []
        while not frames or frames[-1]["type"] != "resumed":
            frames.append(await ws2.receive_json(timeout=5))
        assert [f["data"]["n"] for f in frames[:-1]] == list(range(200))
        await ws2.close()


async def test_frames_of_every_length_class_reach_a_real_client(panel: Panel) -> None:
    """The hub writes WebSocket frames itself (see Connection): a real client reads the three length
    encodings (7-bit, 16-bit, 64-bit) back intact."""
    hub = panel.app[HUB]
    async with panel.client() as a1:
        await login(a1, "agent1")
        ws = await a1.ws_connect("/ws", max_msg_size=1 << 20)
        assert (await ws.receive_json(timeout=5))["type"] == "resync"
        user_id = panel.principals["agent1"].user_id
        for size in (10, 500, 70_000):
            hub.send_to_user(user_id, "note", {"text": "话" * size})
            frame = await ws.receive_json(timeout=5)
            assert frame["type"] == "note" and frame["data"]["text"] == "话" * size
        await ws.close()


async def test_users_gone_for_long_are_forgotten(panel: Panel) -> None:
    hub = panel.app[HUB]
    async with panel.client() as a1:
        await login(a1, "agent1")
        ws = await a1.ws_connect("/ws")
        assert (await ws.receive_json(timeout=5))["type"] == "resync"
        user_id = panel.principals["agent1"].user_id
        hub.send_to_user(user_id, "note", {"n": 1})
        assert hub.forget_idle_streams() == 0  # connected: kept
        await ws.close()
        for _ in range(50):
            if hub.streams[user_id].idle_since is not None:
                break
            await asyncio.sleep(0.02)
        stream = hub.streams[user_id]
        assert stream.idle_since is not None
        assert hub.forget_idle_streams(stream.idle_since + 60) == 0  # a short break: the buffer stays
        assert hub.forget_idle_streams(stream.idle_since + hub_module.STREAM_IDLE_TTL + 1) == 1
        assert user_id not in hub.streams
        ws = await a1.ws_connect("/ws?last_seq=1")
        assert (await ws.receive_json(timeout=5))["type"] == "resync"  # nothing left to replay
        await ws.close()


def test_text_frames_follow_rfc_6455() -> None:
    for size in (0, 125, 126, 65535, 65536):
        text = "会" * (size // 3) + "x" * (size % 3)
        frame = hub_module.text_frame(text)
        payload = text.encode()
        assert frame[0] == 0x81
        if len(payload) < 126:
            assert frame[1] == len(payload) and frame[2:] == payload
        elif len(payload) < 65536:
            assert frame[1] == 126 and int.from_bytes(frame[2:4], "big") == len(payload) and frame[4:] == payload
        else:
            assert frame[1] == 127 and int.from_bytes(frame[2:10], "big") == len(payload) and frame[10:] == payload
