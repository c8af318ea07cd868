"""A real Asterisk (Debian sid chroot) with baresip phones, up once for the whole test session.

Built on first use by ``scripts/asterisk_sandbox.py`` (about a minute, cached outside the work tree).
Nothing here skips in CI: a sandbox that cannot be built or started fails the tests.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from asterisk_sandbox import AmiClient, BaresipPhone, Sandbox, SandboxError, gather_closing  # noqa: E402

from crm_core import migrate  # noqa: E402
from crm_core.db import make_engine, make_sessionmaker, transaction  # noqa: E402
from crm_core.members.schemas import MemberIn  # noqa: E402
from crm_core.members.service import join  # noqa: E402
from crm_core.security.models import User  # noqa: E402
from crm_core.security.policy import SYSTEM, Role  # noqa: E402
from crm_core.settings import Settings  # noqa: E402
from cti.engine import CtiEngine  # noqa: E402
from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402
from tests.db.factories import password_hash  # noqa: E402
from tests.telephony.support import Recorder, Sessions  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Phones of the session sandbox: agent1001/agent1002 are static members of member-service (agent1002
# also of vip); agent1003 belongs to no queue and acts as supervisor / spare.
SESSION_AGENTS = 3
SESSION_CUSTOMERS = 2


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """One sandbox for the session; stopped (only what it started) at the end."""
    if os.geteuid() != 0:
        msg = "the Asterisk sandbox needs root (debootstrap, chroot)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        sb = Sandbox.up(
            agents=SESSION_AGENTS, customers=SESSION_CUSTOMERS, instance=f"pytest-{os.getpid()}", timeout=120
        )
    except SandboxError as exc:
        pytest.fail(f"Asterisk sandbox did not start: {exc}")
    try:
        yield sb
    finally:
        # CTI_SANDBOX_KEEP=1 keeps config, logs and recordings of the run for a look afterwards.
        sb.down(purge=os.environ.get("CTI_SANDBOX_KEEP") != "1")


@pytest.fixture
async def ami(sandbox: Sandbox) -> AsyncIterator[AmiClient]:
    """A fresh AMI session as the filtered CTI user (what the product sees)."""
    client = await sandbox.ami()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def phones(sandbox: Sandbox) -> AsyncIterator[dict[str, BaresipPhone]]:
    """ctrl_tcp clients for every phone; any call a test leaves behind is hung up afterwards, so the
    next test starts with idle phones."""
    clients = {name: await sandbox.phone(name).connect() for name in sandbox.phones()}
    try:
        yield clients
    finally:
        for client in clients.values():
            with contextlib.suppress(Exception):
                await client.command("hangupall", "all")
        await gather_closing(*clients.values())


@pytest.fixture(scope="module")
async def pg_sessions() -> AsyncIterator[Sessions]:
    url = await create_pg_database()
    await migrate.upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    async with transaction(sessions) as session:
        for endpoint in ("agent1001", "agent1002", "agent1003"):
            session.add(
                User(
                    username=endpoint,
                    display_name=f"坐席{endpoint[-4:]}",
                    password_hash=password_hash(),
                    role=Role.AGENT.value,
                    agent_endpoint=endpoint,
                )
            )
    settings = Settings(database_url=url)
    async with transaction(sessions) as session:
        # The sandbox's customer phones present 13800138001 and 13800138002.
        await join(session, SYSTEM, MemberIn(name="张伟", mobile="13800138001", member_type="gold"), settings)
    yield sessions
    await engine.dispose()
    await drop_pg_database(url)


@pytest.fixture
async def recorder(engine: CtiEngine) -> AsyncIterator[Recorder]:
    """Domain events of the module's `engine` fixture, from this test on."""
    rec = Recorder()
    subscription = engine.bus.subscribe(rec, name="test-recorder", maxsize=100_000)
    yield rec
    await engine.bus.unsubscribe(subscription)
