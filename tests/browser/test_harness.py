"""The browser-test harness itself: a private network namespace plus Debian's Chromium with fake media.

Proves what every WebRTC softphone test relies on: inside ``isolated_network()`` Chromium offers a host
ICE candidate on the veth address (loopback is never used for media), two peer connections in one page
connect and carry audio, and afterwards the pytest thread is back in the machine's namespace (PostgreSQL
over TCP works again).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from tests.browser.chromium import chromium_context
from tests.browser.netns import isolated_network, thread_namespace
from tests.conftest import missing_part

pytestmark = pytest.mark.e2e

PREFIX = "10.99.0"

# Two RTCPeerConnections in one page, wired to each other directly (no signalling server): pc1 sends the
# fake microphone, pc2 receives it. Resolves with what the test checks, or rejects after `timeoutMs`.
LOOPBACK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>webrtc loopback</title></head><body>
<script>
async function runLoopback(timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  const config = {iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require'};
  const pc1 = new RTCPeerConnection(config);
  const pc2 = new RTCPeerConnection(config);
  const candidates = [];
  pc1.onicecandidate = (e) => {
    if (e.candidate) { candidates.push(e.candidate.candidate); pc2.addIceCandidate(e.candidate); }
  };
  pc2.onicecandidate = (e) => {
    if (e.candidate) { candidates.push(e.candidate.candidate); pc1.addIceCandidate(e.candidate); }
  };
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: false});
  stream.getAudioTracks().forEach((track) => pc1.addTrack(track, stream));
  await pc1.setLocalDescription(await pc1.createOffer());
  await pc2.setRemoteDescription(pc1.localDescription);
  await pc2.setLocalDescription(await pc2.createAnswer());
  await pc1.setRemoteDescription(pc2.localDescription);

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  let bytesReceived = 0;
  while (Date.now() < deadline) {
    if (pc2.connectionState === 'connected') {
      const stats = await pc2.getStats();
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') bytesReceived = s.bytesReceived;
      });
      if (bytesReceived > 0) break;
    }
    if (pc2.connectionState === 'failed') break;
    await sleep(50);
  }
  const result = {
    candidates,
    pc1State: pc1.connectionState,
    pc2State: pc2.connectionState,
    bytesReceived,
  };
  pc1.close();
  pc2.close();
  stream.getTracks().forEach((t) => t.stop());
  return result;
}
</script></body></html>
"""


@asynccontextmanager
async def serve_loopback_page() -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1 (free port, a secure context for getUserMedia); yields the page URL."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=LOOPBACK_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/"
    finally:
        await runner.cleanup()


def candidate_address(candidate: str) -> tuple[str, str]:
    """(address, type) of an SDP ``candidate:`` line: foundation comp proto prio ADDRESS port typ TYPE …"""
    fields = candidate.split()
    return fields[4], fields[fields.index("typ") + 1]


async def test_chromium_in_isolated_network_connects_webrtc_over_the_veth_address(tmp_path: Path) -> None:
    with isolated_network(PREFIX) as media_address:
        assert media_address == f"{PREFIX}.1"
        async with serve_loopback_page() as url, chromium_context(tmp_path / "profile") as context:
            page = await context.new_page()
            await page.goto(url)
            result = await page.evaluate("runLoopback(15000)")

    hosts = {candidate_address(c) for c in result["candidates"]}
    veth_hosts = {addr for addr, kind in hosts if kind == "host" and addr in (f"{PREFIX}.1", f"{PREFIX}.2")}
    assert veth_hosts, f"no host candidate on the veth pair: {json.dumps(result, indent=1)}"
    assert not any(addr.endswith(".local") for addr, _ in hosts), "mDNS candidates: the flag did not apply"
    assert result["pc1State"] == "connected", result
    assert result["pc2State"] == "connected", result
    assert result["bytesReceived"] > 0, result


def test_isolated_network_returns_the_thread_to_its_namespace_even_after_an_error() -> None:
    before = thread_namespace()
    with pytest.raises(RuntimeError, match="inside"), isolated_network(PREFIX):
        assert thread_namespace() != before
        raise RuntimeError("inside")
    assert thread_namespace() == before


async def test_postgresql_by_unix_socket_inside_and_by_tcp_after() -> None:
    try:
        await (await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")).close()
    except (OSError, asyncpg.PostgresError) as exc:
        missing_part(f"PostgreSQL not reachable on 127.0.0.1:5432: {exc}")

    with isolated_network(PREFIX):
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=2):
            pass  # the namespace's own loopback: nothing listens there
        inside = await asyncpg.connect(host="/var/run/postgresql", user="postgres", database="postgres")
        try:
            assert await inside.fetchval("SELECT 1") == 1
        finally:
            await inside.close()

    after = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres")
    try:
        assert await after.fetchval("SELECT 1") == 1
    finally:
        await after.close()


async def test_executor_threads_started_inside_stay_inside() -> None:
    """Blocking work that runs in the loop's executor while inside (a host name lookup, say) must not
    leave a thread behind that serves later tests from inside the namespace."""
    loop = asyncio.get_running_loop()
    outside = thread_namespace()
    with isolated_network(PREFIX):
        inside_ns = await loop.run_in_executor(None, thread_namespace)
        assert inside_ns != outside
    for _ in range(8):  # every executor thread used afterwards is back outside
        assert await loop.run_in_executor(None, thread_namespace) == outside
    try:
        conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres", timeout=5)
    except OSError as exc:
        missing_part(f"PostgreSQL not reachable on 127.0.0.1:5432: {exc}")
        return
    await asyncio.get_running_loop().run_in_executor(None, lambda: None)
    await conn.close()
