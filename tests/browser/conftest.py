"""The whole product in a private network namespace: real Asterisk and customer phones, the panel
server with its CTI engine on PostgreSQL (through the unix socket), and Debian's Chromium.

Module-scoped: entering the namespace moves the pytest thread, so it is entered and left by the one
fixture that starts (and stops) everything inside it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from agent_panel.server import start_panel
from crm_core import migrate
from crm_core.db import make_engine, make_sessionmaker, transaction
from crm_core.security.models import User
from crm_core.security.policy import Role
from crm_core.settings import QueuePolicy, Settings
from cti.engine import CtiEngine
from tests.browser.chromium import Chromium, launch
from tests.browser.netns import free_port, isolated_network, unix_socket_url
from tests.conftest import IN_CI, create_pg_database, drop_pg_database
from tests.db import factories

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from asterisk_sandbox import Sandbox, SandboxError

ARTEFACTS = Path(os.environ.get("CTI_TEST_ARTEFACTS", "var/test-artefacts"))
SEATS = {"agent1": "webrtc2001", "agent2": "webrtc2002"}
SUPERVISOR_SEAT = "webrtc2003"


@dataclass
class Stack:
    sandbox: Sandbox
    engine: CtiEngine
    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    base_url: str
    chromium: Chromium
    db: AsyncEngine

    def screenshot_path(self, name: str) -> str:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        return str(ARTEFACTS / f"{name}.png")


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("browser tests need root (network namespace, Asterisk sandbox)")
        pytest.skip("browser tests need root")
    tcp_url = await create_pg_database()
    await migrate.upgrade(tcp_url)
    try:
        with isolated_network("10.99.7") as address:
            try:
                # Called on this thread (not an executor's): what it starts must live in the namespace.
                sandbox = Sandbox.up(
                    agents=0,
                    customers=2,
                    instance=f"browser-{os.getpid()}",
                    bind=address,
                    wrapup_seconds=2,
                    queue_max_wait=60,
                    timeout=120,
                )
            except SandboxError as exc:
                pytest.fail(f"sandbox did not start: {exc}")
            db = make_engine(unix_socket_url(tcp_url))
            sessions = make_sessionmaker(db)
            chromium = None
            runner = None
            engine = None
            try:
                st = sandbox.state
                await factories.org_tree(sessions)
                for username, endpoint in SEATS.items():
                    await factories.principal(sessions, username, Role.AGENT, "310", endpoint)
                    async with transaction(sessions) as session:
                        await session.execute(
                            update(User).where(User.username == username).values(display_name=f"坐席{endpoint[-1]}")
                        )
                await factories.principal(sessions, "sup1", Role.SUPERVISOR, "300", SUPERVISOR_SEAT)
                settings = Settings(
                    database_url=unix_socket_url(tcp_url),
                    ami_host=st["ami"]["host"],
                    ami_port=st["ami"]["port"],
                    ami_user=st["ami"]["user"],
                    ami_secret=st["ami"]["secret"],
                    http_host="127.0.0.1",
                    http_port=free_port(),
                    sip_ws_url=st["http"]["ws_url"],
                    sip_domain=address,
                    sip_secrets={e: st["endpoints"][e]["secret"] for e in (*SEATS.values(), SUPERVISOR_SEAT)},
                    # MixMonitor writes inside the sandbox's root; the pipeline reads it from the host.
                    recordings_source_map={st["recordings_dir_chroot"]: st["recordings_dir"]},
                    recordings_dir=str(tmp_path_factory.mktemp("recordings")),
                    queues={
                        # Wrap-up required: the agent stays in wrap-up after a call until the form is saved.
                        "member-service": QueuePolicy(wrapup_seconds=2, team="310", wrapup_required=True),
                        "vip": QueuePolicy(wrapup_seconds=2, team="310"),
                    },
                )
                engine = CtiEngine(settings, sessions)
                runner = await start_panel(settings, engine)
                await engine.ami.wait_connected(20)
                chromium = await launch(tmp_path_factory.mktemp("chromium"))
                yield Stack(
                    sandbox=sandbox,
                    engine=engine,
                    sessions=sessions,
                    settings=settings,
                    base_url=f"http://127.0.0.1:{settings.http_port}",
                    chromium=chromium,
                    db=db,
                )
            finally:
                if chromium is not None:
                    await chromium.close()
                if runner is not None:
                    await runner.cleanup()
                await db.dispose()
                sandbox.down(purge=True)
    finally:
        await drop_pg_database(tcp_url)
