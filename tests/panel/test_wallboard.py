"""The wallboard in the panel: frames reach supervisors (not agents) within a second, coalesced; the
page and the JSON snapshot are for supervisors and administrators only."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from cti.calls.events import CallAnswered, CallOffered
from tests.panel.conftest import Panel, login
from tests.unit.test_wallboard import agent_state

Q = "member-service"


def offered(linkedid: str) -> CallOffered:
    return CallOffered(
        at=time.time(), linkedid=linkedid, uniqueid=linkedid, caller_number="13800138000", caller_name=None,
        dnis="4008001234", queue=Q, position=1,
    )  # fmt: skip


def answered(linkedid: str, wait: float) -> CallAnswered:
    return CallAnswered(
        at=time.time(), linkedid=linkedid, uniqueid=f"{linkedid}.1", agent="webrtc2001", interface="PJSIP/webrtc2001",
        queue=Q, wait_seconds=wait, ring_seconds=1.0, first=True,
    )  # fmt: skip


async def next_of_type(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float) -> dict[str, Any] | None:
    """The next frame of ``kind`` within ``timeout`` seconds (other frames are skipped), or None."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        try:
            frame: dict[str, Any] = await ws.receive_json(timeout=left)
        except TimeoutError:
            return None
        if frame["type"] == kind:
            return frame
    return None


async def test_a_supervisor_gets_the_wallboard_within_a_second_and_an_agent_does_not(panel: Panel) -> None:
    async with panel.client() as sup, panel.client() as agent:
        await login(sup, "sup1")
        await login(agent, "agent1")
        ws_sup, ws_agent = await sup.ws_connect("/ws"), await agent.ws_connect("/ws")
        resync_sup, resync_agent = await ws_sup.receive_json(timeout=5), await ws_agent.receive_json(timeout=5)
        assert resync_sup["type"] == resync_agent["type"] == "resync"
        assert resync_sup["data"]["wallboard"]["queues"][Q]["offered"] == 0  # the board comes with the resync
        assert resync_agent["data"]["wallboard"] is None
        sent = time.monotonic()
        panel.engine.publish([offered("call-1")])
        frame = await next_of_type(ws_sup, "wallboard", timeout=1.0)
        assert frame is not None, "no wallboard frame within 1 s of the event"
        assert time.monotonic() - sent < 1.0
        board = frame["data"]["queues"][Q]
        assert (board["offered"], board["waiting"]) == (1, 1)
        assert frame["data"]["agents"] is None  # frames stay small: agents come as team_state frames
        assert await next_of_type(ws_agent, "wallboard", timeout=1.5) is None
        await ws_sup.close()
        await ws_agent.close()


async def test_a_burst_of_events_is_coalesced_into_few_frames_with_the_final_counts(panel: Panel) -> None:
    async with panel.client() as sup:
        await login(sup, "sup1")
        ws = await sup.ws_connect("/ws")
        assert (await ws.receive_json(timeout=5))["type"] == "resync"
        for i in range(50):
            panel.engine.publish([offered(f"burst-{i}")])
            panel.engine.publish([answered(f"burst-{i}", wait=5.0 if i % 2 else 30.0)])
        frames = []
        while (frame := await next_of_type(ws, "wallboard", timeout=1.0)) is not None:
            frames.append(frame)
        assert 1 <= len(frames) <= 3  # 100 events; at most one frame per 0.3 s after the first
        last = frames[-1]["data"]["queues"][Q]
        assert (last["offered"], last["answered"], last["answered_within"], last["service_level"]) == (50, 50, 25, 50.0)
        assert await next_of_type(ws, "wallboard", timeout=0.8) is None  # nothing changed: nothing sent
        await ws.close()


async def test_the_json_snapshot_and_the_page_are_for_supervisors_and_admins(panel: Panel) -> None:
    panel.engine.publish([offered("call-9")])
    panel.engine.publish([answered("call-9", wait=12.0)])
    for username in ("sup1", "admin1"):
        async with panel.client() as client:
            await login(client, username)
            response = await client.get("/api/v1/wallboard")
            assert response.status == 200
            board = await response.json()
            q = board["queues"][Q]
            assert (q["offered"], q["answered"], q["asa"], q["service_level"]) == (1, 1, 12.0, 100.0)
            assert len(q["by_hour"]["offered"]) == len(board["hours"]) == 24
            page = await client.get("/wallboard")
            assert page.status == 200
            html = await page.text()
            assert 'data-queue="member-service"' in html and 'data-queue="vip"' in html
            assert "/static/dist/chart.umd.min.js" in html and 'href="/wallboard"' in html
    for username in ("agent1", "staff1"):
        async with panel.client() as client:
            await login(client, username)
            assert (await client.get("/api/v1/wallboard")).status == 403
            assert (await client.get("/wallboard", allow_redirects=False)).status == 403
            assert 'href="/wallboard"' not in await (await client.get("/members")).text()


async def test_the_page_is_served_in_chinese_by_default(panel: Panel) -> None:
    async with panel.client() as client:
        await login(client, "sup1")
        html = await (await client.get("/wallboard")).text()
        assert "实时看板" in html and "服务水平" in html


async def test_supervisors_see_the_agents_of_their_teams_and_admins_everyone(panel: Panel) -> None:
    panel.engine.publish([agent_state("webrtc2001", time.time(), "ready")])  # agent1, org unit 310
    panel.engine.publish([agent_state("webrtc2002", time.time(), "paused", reason="lunch")])  # agent2, 320
    seen = {}
    for username in ("sup1", "admin1"):  # sup1 supervises 310
        async with panel.client() as client:
            await login(client, username)
            board = await (await client.get("/api/v1/wallboard")).json()
            seen[username] = [a["agent"] for a in board["agents"]]
            ws = await client.ws_connect("/ws")
            resync = await ws.receive_json(timeout=5)
            assert [a["agent"] for a in resync["data"]["wallboard"]["agents"]] == seen[username]
            await ws.close()
            # Queue-wide counts are not cut by team: the queue is shared.
            assert board["queues"][Q]["agents"]["ready"] == 1 and board["queues"][Q]["agents"]["paused"] == 1
    assert seen == {"sup1": ["webrtc2001"], "admin1": ["webrtc2001", "webrtc2002"]}
