"""The agent panel's aiohttp application: pages, the JSON API, the WebSocket hub and the CTI engine.

`create_app` wires everything from settings; `cleanup_ctx` starts and stops the hub and (unless the
caller runs it) the CTI engine, so the tests, the demo and `cti serve` run the same application.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_panel.auth import SessionCache, auth_middleware
from agent_panel.i18n import build_catalogues
from agent_panel.keys import AUTH, ENGINE, HUB, I18N, REDEMPTIONS, SESSIONS, SETTINGS
from agent_panel.routes import api, ops, pages
from agent_panel.routes import calls as call_routes
from agent_panel.routes import kb as kb_routes
from agent_panel.routes import loyalty as loyalty_routes
from agent_panel.routes import loyalty_rules as loyalty_rules_routes
from agent_panel.routes import messaging as messaging_routes
from agent_panel.routes import recordings as recording_routes
from agent_panel.routes import reports as report_routes
from agent_panel.routes import service as service_routes
from agent_panel.routes import wallboard as wallboard_routes
from agent_panel.ws import Hub
from crm_core import calendar_store
from crm_core.loyalty.redemption_batch import RedemptionBatcher
from crm_core.settings import Settings
from cti.calls.events import AgentStateChanged, CallAbandoned, CallAnswered, CallEnded, CallMissed, CallOffered
from cti.engine import CtiEngine
from cti.screenpop import ScreenPop

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


@web.middleware
async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    # Scripts only from this server; the softphone's WebSocket may go to the PBX.
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "media-src 'self' blob:; connect-src 'self' ws: wss:; frame-ancestors 'none'",
    )
    return response


def create_app(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    engine: CtiEngine,
    *,
    start_engine: bool = True,
) -> web.Application:
    app = web.Application(middlewares=[security_headers, auth_middleware], client_max_size=2 * 1024 * 1024)
    app[SETTINGS] = settings
    calendar_store.STORE.use_timezone(settings.timezone)  # SLA clocks, return visits, request numbers
    app[SESSIONS] = sessions
    app[ENGINE] = engine
    app[AUTH] = SessionCache()
    app[REDEMPTIONS] = RedemptionBatcher(sessions)  # redemptions that arrive together share a transaction
    app[I18N] = catalogues = build_catalogues(settings.language, settings.timezone)
    app[HUB] = Hub(
        sessions,
        engine.tracker,
        engine.agents.state_of,
        lambda pop, lang: pages.render_pop(catalogues, settings, pop, lang),
        all_states=lambda: tuple(engine.agents.states.values()),
    )
    pages.setup(app)
    api.setup(app)
    ops.setup(app)
    call_routes.setup(app)
    recording_routes.setup(app)
    wallboard_routes.setup(app)
    report_routes.setup(app)
    loyalty_routes.setup(app)
    loyalty_rules_routes.setup(app)
    service_routes.setup(app)
    kb_routes.setup(app)
    messaging_routes.setup(app)
    app.router.add_static("/static/", STATIC, append_version=True)
    app.cleanup_ctx.append(_run_hub)
    app.on_cleanup.append(lambda app: app[REDEMPTIONS].close())
    if start_engine:
        app.cleanup_ctx.append(_run_engine)
    return app


async def _run_hub(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    await hub.start()
    app[ENGINE].callbacks.on_change = hub.callbacks_changed
    app[ENGINE].bus.subscribe(
        hub,
        (ScreenPop, AgentStateChanged, CallAnswered, CallEnded, CallOffered, CallAbandoned, CallMissed),
        name="ws-hub",
        maxsize=50_000,
    )
    yield
    await hub.stop()


async def _run_engine(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    await engine.start(wait=None)
    yield
    await engine.stop()
