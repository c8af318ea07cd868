"""The wallboard: the page, its JSON snapshot and the push of `wallboard` frames to supervisors.

The KPI state lives in the engine (:class:`cti.wallboard.Wallboard`, fed inline with every domain
event). Here a small loop turns its changes into WebSocket frames: the board calls back on each change,
the loop sends at most one frame per PUSH_EVERY seconds and only after a change, so a burst of events
costs one frame and an idle centre none (waiting times tick in the browser from the entry times).

Frames carry the queues' figures, not the agent list (2,000 agents would make every frame hundreds
of KiB); the page and the resync get the agents a supervisor may see (their teams; an admin all), and
the screen follows them with the hub's `team_state` frames, which are already routed that way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from agent_panel.auth import SUPERVISORS, allow, session_of
from agent_panel.keys import ENGINE, HUB, I18N
from agent_panel.render import language_of, render
from agent_panel.ws import DirectoryEntry, Hub, UserStream
from crm_core.security.policy import Role
from cti.wallboard import Wallboard

PUSH_EVERY = 0.3  # seconds: frames coalesce to at most ~3 a second; an event reaches screens in < 1 s


def setup(app: web.Application) -> None:
    app.router.add_get("/wallboard", wallboard_page)
    app.router.add_get("/api/v1/wallboard", wallboard_json)
    app.cleanup_ctx.append(_push_wallboard)


def board_for(app: web.Application, role: Role, org_path: str | None) -> dict[str, Any]:
    """The board now, with the agents of the reader's teams only (every agent for an admin)."""
    engine = app[ENGINE]
    board = engine.wallboard.snapshot(engine.clock())
    if role != Role.ADMIN:
        by_endpoint = app[HUB].by_endpoint
        board["agents"] = [a for a in board["agents"] if in_team(by_endpoint.get(a["agent"]), org_path)]
    return board


def in_team(entry: DirectoryEntry | None, org_path: str | None) -> bool:
    """The hub's team rule (agent_panel.ws.sees_team): the agent's org unit is the reader's or below."""
    if entry is None or entry.org_path is None or org_path is None:
        return False
    return entry.org_path.startswith(org_path)


@allow(*SUPERVISORS)
async def wallboard_json(request: web.Request) -> web.Response:
    """Today's KPIs per queue, by hour, and the states of the reader's agents (docs/KPIS.md)."""
    principal = session_of(request).principal
    board = board_for(request.app, principal.role, principal.org_unit_path)
    return web.json_response(board, headers={"Cache-Control": "no-store"})


@allow(*SUPERVISORS)
async def wallboard_page(request: web.Request) -> web.Response:
    app = request.app
    language = language_of(request)
    settings = app[ENGINE].settings
    principal = session_of(request).principal
    return render(
        request,
        "wallboard.html",
        {
            "board": board_for(app, principal.role, principal.org_unit_path),
            "queue_names": {q: app[I18N].gettext(language, q) for q in settings.queues},
            "pause_reasons": {r: app[I18N].gettext(language, r) for r in settings.pause_reasons},
        },
    )


async def push_loop(hub: Hub, board: Wallboard, clock: Callable[[], float], changed: asyncio.Event) -> None:
    """Send the board to supervisors after each change, coalescing changes within PUSH_EVERY."""
    while True:
        await changed.wait()
        changed.clear()
        hub.send_wallboard(board.snapshot(clock(), agents=False))
        await asyncio.sleep(PUSH_EVERY)


async def _push_wallboard(app: web.Application) -> AsyncIterator[None]:
    engine, hub = app[ENGINE], app[HUB]
    changed = asyncio.Event()
    engine.wallboard.on_change = changed.set

    def for_resync(stream: UserStream) -> dict[str, Any]:
        return board_for(app, stream.role, stream.org_path)

    hub.wallboard = for_resync
    task = asyncio.create_task(push_loop(hub, engine.wallboard, engine.clock, changed), name="wallboard-push")
    yield
    engine.wallboard.on_change = None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
