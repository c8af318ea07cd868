"""`cti serve`: the panel, the API and the CTI engine in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from agent_panel.app import create_app
from crm_core.db import make_engine, make_sessionmaker
from crm_core.settings import Settings
from cti.engine import CtiEngine
from cti.heap import settle_heap

log = logging.getLogger(__name__)


async def start_panel(settings: Settings, engine: CtiEngine, *, start_engine: bool = True) -> web.AppRunner:
    app = create_app(settings, engine.sessions, engine, start_engine=start_engine)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port, backlog=1024).start()
    log.info("panel listening on http://%s:%d/", settings.http_host, settings.http_port)
    return runner


async def serve(settings: Settings) -> None:
    db = make_engine(settings.database_url)
    engine = CtiEngine(settings, make_sessionmaker(db))
    runner = await start_panel(settings, engine)
    settle_heap()  # started: what exists now lives as long as the server
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await db.dispose()
