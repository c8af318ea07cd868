"""Operations: `/healthz` (database and AMI) and `/metrics` (Prometheus text).

Not public: an administrator's session, or the monitoring system's bearer token (`CTI_MONITOR_TOKEN`;
unset means sessions only), compared in constant time.
"""

from __future__ import annotations

import hmac
import time

from aiohttp import web
from sqlalchemy import text

from agent_panel.auth import COOKIE, public
from agent_panel.keys import AUTH, ENGINE, HUB, SESSIONS, SETTINGS
from crm_core.security.policy import Role

STARTED = time.monotonic()


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)


async def _authorised(request: web.Request) -> bool:
    token = request.app[SETTINGS].monitor_token
    sent = request.headers.get("Authorization", "")
    if token and sent.startswith("Bearer ") and hmac.compare_digest(sent[7:], token):
        return True
    cookie = request.cookies.get(COOKIE)
    info = await request.app[AUTH].resolve(request.app, cookie) if cookie else None
    return info is not None and info.principal.role == Role.ADMIN


# Marked public for the session middleware only: the check above replaces it (a bearer token has no
# session), and refuses everyone else.
@public
async def healthz(request: web.Request) -> web.Response:
    if not await _authorised(request):
        return web.json_response({"error": "forbidden"}, status=403)
    db_ok = True
    try:
        async with request.app[SESSIONS]() as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        db_ok = False
    ami_ok = request.app[ENGINE].ami.connected
    status = 200 if db_ok and ami_ok else 503
    return web.json_response({"database": db_ok, "ami": ami_ok}, status=status)


@public
async def metrics(request: web.Request) -> web.Response:
    if not await _authorised(request):
        return web.json_response({"error": "forbidden"}, status=403)
    engine = request.app[ENGINE]
    hub = request.app[HUB].stats()
    lines = [
        "# TYPE cti_uptime_seconds gauge",
        f"cti_uptime_seconds {time.monotonic() - STARTED:.0f}",
        "# TYPE cti_ami_connected gauge",
        f"cti_ami_connected {int(engine.ami.connected)}",
        "# TYPE cti_ami_events_total counter",
        f"cti_ami_events_total {engine.events_fed}",
        "# TYPE cti_ws_connections gauge",
        f"cti_ws_connections {hub['connections']}",
        "# TYPE cti_ws_frames_total counter",
        f"cti_ws_frames_total {hub['frames_sent']}",
        "# TYPE cti_ws_cut_off_total counter",
        f"cti_ws_cut_off_total {hub['cut_off']}",
        "# TYPE cti_bus_queued gauge",
        "# TYPE cti_bus_handled_total counter",
        "# TYPE cti_bus_failed_total counter",
        "# TYPE cti_bus_dropped_total counter",
    ]
    for sub in engine.bus.stats():
        label = f'{{subscriber="{sub.name}"}}'
        lines += [
            f"cti_bus_queued{label} {sub.queued + sub.backlog}",
            f"cti_bus_handled_total{label} {sub.handled}",
            f"cti_bus_failed_total{label} {sub.failed}",
            f"cti_bus_dropped_total{label} {sub.dropped}",
        ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")
