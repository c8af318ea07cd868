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
