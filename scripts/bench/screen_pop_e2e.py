"""Benchmark: screen pop end to end, from the AMI ``AgentCalled`` event to the member card in Chromium.

The issue's figure: from the moment the server receives ``AgentCalled`` to the moment the pop card is
rendered in the agent's browser, p99 < 50 ms, with 1,000,000 members on PostgreSQL.

What runs (the same stack as tests/browser/conftest.py, all started by this script and stopped at the
end whatever happens):

* a private network namespace (``tests.browser.netns.isolated_network``): WebRTC needs a non-loopback
  address, and nothing inside can clash with ports on the machine;
* a sandbox Asterisk (``--instance``, no baresip phones) with the product's ``asterisk-config``;
* the panel server with its ``CtiEngine`` in this process (``agent_panel.server.start_panel``), on a
  copy of the cached 1,000,000-member database (``CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY``,
  a few seconds; dropped at the end) reached through PostgreSQL's unix socket. If the copy cannot be
  made (another bench is connected to the cached database) the run uses the cached database itself
  and deletes what it wrote;
* Debian's Chromium (Playwright, ``tests.browser.chromium``) signed in as ``bench_webrtc2001``, a CRM
  agent (copied from the demo user ``agent1``) at the WebRTC seat ``webrtc2001``, logged in to the
  queues and Ready;
* callers: one at a time, AMI ``Originate Local/4008001234@from-customers`` into ``load-generator``
  with a demo member's own mobile (11 national digits) as caller ID. The agent never answers: the
  browser rings, the card pops, the caller hangs up ``--hold`` seconds after the IVR answered and
  the next call starts ``--gap`` seconds after the engine saw the call end.

Clocks. The server side is stamped with ``time.time()``: an extra AMI listener registered before
the engine's own (so it runs first) notes each ``AgentCalled`` and ``QueueCallerJoin`` by
``Linkedid``; ``bus.publish`` is wrapped to note AgentRinging and ScreenPop; the hub's ``_on_pop``
to note when the pop frame was rendered and queued for the WebSocket. The browser side uses
``performance.timeOrigin + performance.now()``: ``window.panel.pops`` (workspace.js, when the card
is in the DOM), plus an init script that stamps the WebSocket ``message`` event of each pop frame
and the task after the next animation frame (the card painted). Chromium derives ``timeOrigin``
from its own monotonic clock, so it can drift from the system clock: each run measures the offset
(the ``page.evaluate`` round trip with the smallest RTT, midpoint) and subtracts it.

Figures (JSON on stdout, progress on stderr), per run and as the median over ``--runs``:

* ``end_to_end``: AgentCalled received → card in the DOM; goal p99 < 50 ms;
* ``segments``: ``server`` AgentCalled → ScreenPop published (tracker, bus, screen popper:
  ``to_ringing`` + ``popper``); ``hub`` ScreenPop → pop frame queued for the socket (bus to the
  ws-hub subscriber, the card's HTML rendered per language, JSON); ``transport`` frame queued →
  WebSocket message event in the page; ``browser`` message → card in the DOM (JSON.parse, showPop);
  ``paint`` card in the DOM → the task after the next frame;
* ``context``: Asterisk's ``Timestamp`` on AgentCalled → received (AMI socket and reader);
  QueueCallerJoin → AgentCalled; ``ScreenPop.lookup_ms``; the caller read ScreenPopper starts at
  CallOffered (``CrmGateway.read_caller``, wrapped: its ``lookup`` and 360 parts), how long before
  the ring it started and how long the ring then waited for it (0 when it was done in time);
* ``pops``: calls placed, rings (AgentCalled), matched (rendered), missing (rang, no card).

With 100 calls the nearest-rank p99 is the 99th of 100 samples, the second largest: one slow pop
moves it. Look at ``max_ms`` and the per-run figures, and use ``--calls`` for more samples.

    .venv/bin/python scripts/bench/screen_pop_e2e.py [--calls 100] [--runs 3] [--warmup 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # scripts/: asterisk_sandbox

import _common as common
import asyncpg  # type: ignore[import-untyped]
from asterisk_sandbox import AmiClient as SandboxAmi
from asterisk_sandbox import Sandbox, SandboxError
from cti_pipeline import BENCH_USER_PREFIX, purge_bench_rows
from cti_pipeline import caller_numbers as draw_caller_numbers
from playwright.async_api import Page, expect
from sqlalchemy import select
from sqlalchemy.engine import make_url

from agent_panel.keys import HUB
from agent_panel.server import start_panel
from agent_panel.ws import Hub
from crm_core.db import make_engine, make_sessionmaker, transaction
from crm_core.security.models import User
from crm_core.security.passwords import hash_password_sync
from crm_core.settings import QueuePolicy, Settings
from cti.ami.protocol import AmiMessage
from cti.calls.events import AgentRinging, CallEnded, DomainEvent
from cti.engine import CtiEngine
from cti.heap import settle_heap
from cti.screenpop import ScreenPop
from tests.browser.chromium import CHROMIUM, launch
from tests.browser.netns import free_port, isolated_network, unix_socket_url

GOAL_P99_MS = 50.0
DID = "4008001234"  # member-service: ringall, so the one Ready agent rings for every call
SEAT = "webrtc2001"
USERNAME = f"{BENCH_USER_PREFIX}{SEAT}"
TEAM = "310"  # agent1's team in the demo org tree

# Stamps in the page (epoch ms on Chromium's clock). The WebSocket subclass registers its listener in
# the constructor, before socket.js sets onmessage, so it sees each frame first; a regex on the head of
# the frame finds a pop's linkedid without a second JSON.parse. The MutationObserver fires after
# showPop's task; requestAnimationFrame runs at the start of the next frame and the MessageChannel task
# after that frame's style, layout and paint: when the card is on screen, to within a frame's commit.
BROWSER_PROBE = r"""
(() => {
  const stamp = () => performance.timeOrigin + performance.now();
  const probe = { ws: {}, painted: {} };
  window.__popProbe = probe;
  const head = /^\{"seq":\s*\d+,\s*"type":\s*"pop",\s*"data":\s*\{"linkedid":\s*"([^"]+)"/;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (m) => {
        const at = stamp();
        if (typeof m.data !== "string") return;
        const hit = head.exec(m.data.slice(0, 200));
        if (hit && !(hit[1] in probe.ws)) probe.ws[hit[1]] = at;
      });
    }
  };
  document.addEventListener("DOMContentLoaded", () => {
    const pop = document.getElementById("pop");
    if (!pop) return;
    new MutationObserver(() => {
      const id = pop.dataset.linkedid;
      if (!id || id in probe.painted) return;
      probe.painted[id] = null;
      requestAnimationFrame(() => {
        const channel = new MessageChannel();
        channel.port1.onmessage = () => { probe.painted[id] = stamp(); };
        channel.port2.postMessage(0);
      });
    }).observe(pop, { attributes: true, attributeFilter: ["data-linkedid"] });
  });
})();
"""

COLLECT = """() => {
  const probe = window.__popProbe;
  const out = { pops: window.panel.pops.splice(0), ws: probe.ws, painted: probe.painted };
  probe.ws = {};
  probe.painted = {};
  return out;
}"""


# ------------------------------------------------------------------------------ server-side stamps
class ServerStamps:
    """``time.time()`` of each step on the server, keyed by Linkedid (first occurrence wins).

    Registered without touching the product: an AMI listener added before ``start_panel`` (the
    engine subscribes its ``feed`` in ``start()``, later, so this one runs first for each event),
    and instance attributes shadowing ``bus.publish`` and the hub's ``_on_pop``.
    """

    def __init__(self, engine: CtiEngine) -> None:
        self.run = "setup"
        self.called: dict[str, float] = {}
        self.called_run: dict[str, str] = {}
        self.asterisk_at: dict[str, float] = {}
        self.joined: dict[str, float] = {}
        self.extra_rings = 0
        self.ringing: dict[str, float] = {}
        self.popped: dict[str, float] = {}
        self.lookup_ms: dict[str, float] = {}
        self.with_member: set[str] = set()
        self.hub_in: dict[str, float] = {}
        self.frame_queued: dict[str, float] = {}
        self.caller_of: dict[str, str | None] = {}
        # The caller read (lookup + unmasked 360) that ScreenPopper starts at CallOffered, by number
        # (every call has its own): started, lookup done, 360 done.
        self.read_started: dict[str | None, float] = {}
        self.lookup_done: dict[str | None, float] = {}
        self.read_done: dict[str | None, float] = {}
        self.ended = 0
        engine.ami.on_event(self._on_ami, names=("AgentCalled", "QueueCallerJoin"))
        publish = engine.bus.publish

        def stamped_publish(event: DomainEvent) -> None:
            now = time.time()
            if isinstance(event, AgentRinging):
                self.ringing.setdefault(event.linkedid, now)
            elif isinstance(event, ScreenPop):
                if event.linkedid not in self.popped:
                    self.popped[event.linkedid] = now
                    self.lookup_ms[event.linkedid] = event.lookup_ms
                    self.caller_of[event.linkedid] = event.caller_number
                    if event.member is not None:
                        self.with_member.add(event.linkedid)
            elif isinstance(event, CallEnded):
                self.ended += 1
            publish(event)

        setattr(engine.bus, "publish", stamped_publish)  # noqa: B010

        crm = engine.crm
        read_caller, lookup = crm.read_caller, crm.lookup

        async def stamped_read_caller(number: str | None) -> Any:
            self.read_started.setdefault(number, time.time())
            try:
                return await read_caller(number)
            finally:
                self.read_done.setdefault(number, time.time())

        async def stamped_lookup(number: str | None) -> Any:
            try:
                return await lookup(number)
            finally:
                self.lookup_done.setdefault(number, time.time())

        # Instance attributes shadow the methods: ScreenPopper calls crm.read_caller, which calls self.lookup.
        setattr(crm, "read_caller", stamped_read_caller)  # noqa: B010
        setattr(crm, "lookup", stamped_lookup)  # noqa: B010

    def _on_ami(self, msg: AmiMessage) -> None:
        now = time.time()
        linkedid = msg.get("Linkedid")
        if not linkedid:
            return
        if msg.get("Event") == "QueueCallerJoin":
            self.joined.setdefault(linkedid, now)
            return
        if linkedid in self.called:
            self.extra_rings += 1
            return
        self.called[linkedid] = now
        self.called_run[linkedid] = self.run
        with contextlib.suppress(TypeError, ValueError):
            self.asterisk_at[linkedid] = float(msg.get("Timestamp") or "")

    def watch_hub(self, hub: Hub) -> None:
        on_pop = hub._on_pop

        def stamped_on_pop(pop: ScreenPop) -> None:
            self.hub_in.setdefault(pop.linkedid, time.time())
            on_pop(pop)
            self.frame_queued.setdefault(pop.linkedid, time.time())

        setattr(hub, "_on_pop", stamped_on_pop)  # noqa: B010


# ------------------------------------------------------------------------------ browser
async def sign_in(page: Page, base_url: str, password: str) -> None:
    """As tests/browser/test_agent_panel.py: the login form, the softphone registered, queues, Ready."""
    await page.goto(f"{base_url}/login")
    await page.fill("#username", USERNAME)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base_url}/")
    await expect(page.locator("#sip-status")).to_have_attribute("data-status", "registered", timeout=20_000)
    await page.click("#btn-login")
    await page.click("#btn-ready")
    await expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready", timeout=10_000)


async def clock_offset(page: Page, samples: int = 25) -> dict[str, float]:
    """Chromium's ``timeOrigin + now()`` minus ``time.time()``, from the round trip with the smallest RTT.

    The true offset lies within ± rtt/2 of the midpoint estimate.
    """
    best: tuple[float, float] | None = None
    for _ in range(samples):
        before = time.time()
        browser_ms = await page.evaluate("performance.timeOrigin + performance.now()")
        after = time.time()
        rtt = after - before
        if best is None or rtt < best[0]:
            best = (rtt, browser_ms / 1000 - (before + after) / 2)
    assert best is not None
    return {"offset_ms": round(best[1] * 1000, 3), "rtt_ms": round(best[0] * 1000, 3)}


# ------------------------------------------------------------------------------ calls
async def originate(ami: SandboxAmi, number: str, hold_s: float) -> bool:
    resp = await ami.action(
        "Originate",
        {
            "Channel": f"Local/{DID}@from-customers",
            "Context": "load-generator",
            # TIMEOUT(absolute) takes fractions; `_X.` needs two characters, so "1.0", never "1".
            "Exten": f"{hold_s:.1f}",
            "Priority": "1",
            "CallerID": f"<{number}>",
            "Timeout": "30000",
            "Async": "true",
        },
        timeout=10,
    )
    return bool(resp.get("Response") == "Success")


async def wait_until(predicate: Callable[[], bool], limit_s: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


async def place_one(engine: CtiEngine, stamps: ServerStamps, ami: SandboxAmi, number: str, args: Any) -> bool:
    """One call, rung and ended, before the next: the pop is measured on a quiet system."""
    ended = stamps.ended
    if not await originate(ami, number, args.hold):
        common.log(f"  Originate refused for {number}")
        return False
    limit = args.hold + 10
    if not await wait_until(lambda: stamps.ended > ended and engine.tracker.live_calls == 0, limit):
        common.log(f"  call from {number} not ended within {limit:.0f} s (live {engine.tracker.live_calls})")
    await asyncio.sleep(args.gap)
    return True


# ------------------------------------------------------------------------------ figures
def ms_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in ms (nearest rank), or only the count when there is nothing."""
    if not seconds:
        return {"samples": 0}
    out = common.latency_summary(seconds)
    out["p90_ms"] = round(common.percentile(seconds, 90) * 1000, 3)
    return {k: out[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "samples")}


def run_figures(
    stamps: ServerStamps, run: str, placed: int, page_data: dict[str, Any], offset_s: float
) -> dict[str, Any]:
    """One run's samples: every linkedid that rang during ``run``, matched to the page's stamps."""
    rendered: dict[str, float] = {}  # the first card (an early pop, who is calling, when the 360 was late)
    rendered_full: dict[str, float] = {}  # the card with the member's 360
    for pop in page_data["pops"]:
        rendered.setdefault(pop["linkedid"], pop["rendered_at"] / 1000 - offset_s)
        if not pop.get("partial"):
            rendered_full.setdefault(pop["linkedid"], pop["rendered_at"] / 1000 - offset_s)
    ws_at = {k: v / 1000 - offset_s for k, v in page_data["ws"].items()}
    painted = {k: v / 1000 - offset_s for k, v in page_data["painted"].items() if v is not None}
    rang = [lid for lid, r in stamps.called_run.items() if r == run]
    series: dict[str, list[float]] = {
        k: []
        for k in (
            "end_to_end",
            "end_to_end_full_360",
            "end_to_end_uncorrected",
            "end_to_end_painted",
            "server",
            "to_ringing",
            "popper",
            "hub",
            "transport",
            "browser",
            "paint",
            "asterisk_to_server",
            "join_to_agent_called",
            "lookup",
            "caller_read",
            "caller_read_lookup",
            "caller_read_360",
            "read_started_before_ring",
            "ring_waited_for_read",
        )
    }
    missing: list[str] = []
    for lid in rang:
        called = stamps.called[lid]
        if lid not in rendered:
            missing.append(lid)
            continue
        series["end_to_end"].append(rendered[lid] - called)
        if lid in rendered_full:
            series["end_to_end_full_360"].append(rendered_full[lid] - called)
        series["end_to_end_uncorrected"].append(rendered[lid] + offset_s - called)
        if lid in painted:
            series["end_to_end_painted"].append(painted[lid] - called)
            series["paint"].append(painted[lid] - rendered[lid])
        if lid in stamps.popped:
            series["server"].append(stamps.popped[lid] - called)
            series["lookup"].append(stamps.lookup_ms[lid] / 1000)
            if lid in stamps.ringing:
                series["to_ringing"].append(stamps.ringing[lid] - called)
                series["popper"].append(stamps.popped[lid] - stamps.ringing[lid])
            if lid in stamps.frame_queued:
                series["hub"].append(stamps.frame_queued[lid] - stamps.popped[lid])
                if lid in ws_at:
                    series["transport"].append(ws_at[lid] - stamps.frame_queued[lid])
        if lid in ws_at:
            series["browser"].append(rendered[lid] - ws_at[lid])
        if lid in stamps.asterisk_at:
            series["asterisk_to_server"].append(max(0.0, called - stamps.asterisk_at[lid]))
        if lid in stamps.joined:
            series["join_to_agent_called"].append(called - stamps.joined[lid])
        number = stamps.caller_of.get(lid)
        if number in stamps.read_started and number in stamps.read_done:
            started, done = stamps.read_started[number], stamps.read_done[number]
            series["caller_read"].append(done - started)
            if number in stamps.lookup_done:
                series["caller_read_lookup"].append(stamps.lookup_done[number] - started)
                series["caller_read_360"].append(done - stamps.lookup_done[number])
            if lid in stamps.ringing:
                series["read_started_before_ring"].append(stamps.ringing[lid] - started)
                series["ring_waited_for_read"].append(max(0.0, done - stamps.ringing[lid]))
    e2e = series["end_to_end"]
    slowest = sorted(((rendered[lid] - stamps.called[lid], lid) for lid in rang if lid in rendered), reverse=True)[:3]
    return {
        "pops": {
            "placed": placed,
            "rang": len(rang),
            "matched": len(e2e),
            "missing": len(missing),
            "missing_ids": missing[:20],
            "with_member_360": sum(1 for lid in rang if lid in stamps.with_member),
        },
        "end_to_end_ms": ms_summary(e2e),
        "end_to_end_full_360_ms": ms_summary(series["end_to_end_full_360"]),
        "end_to_end_uncorrected_ms": ms_summary(series["end_to_end_uncorrected"]),
        "end_to_end_painted_ms": ms_summary(series["end_to_end_painted"]),
        "segments_ms": {
            k: ms_summary(series[k]) for k in ("server", "to_ringing", "popper", "hub", "transport", "browser", "paint")
        },
        "context_ms": {
            "asterisk_to_server": ms_summary(series["asterisk_to_server"]),
            "join_to_agent_called": ms_summary(series["join_to_agent_called"]),
            "screen_pop_lookup": ms_summary(series["lookup"]),
            **{k: ms_summary(series[k]) for k in ("caller_read", "caller_read_lookup", "caller_read_360")},
            "read_started_before_ring": ms_summary(series["read_started_before_ring"]),
            "ring_waited_for_read": ms_summary(series["ring_waited_for_read"]),
        },
        "slowest": [
            {
                "linkedid": lid,
                "end_to_end_ms": round(total * 1000, 2),
                "server_ms": _ms_between(stamps.called.get(lid), stamps.popped.get(lid)),
                "hub_ms": _ms_between(stamps.popped.get(lid), stamps.frame_queued.get(lid)),
                "transport_ms": _ms_between(stamps.frame_queued.get(lid), ws_at.get(lid)),
                "browser_ms": _ms_between(ws_at.get(lid), rendered.get(lid)),
            }
            for total, lid in slowest
        ],
        "_e2e_s": e2e,  # pooled over runs by the caller, then removed
    }


def _ms_between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round((end - start) * 1000, 2)


# ------------------------------------------------------------------------------ the stack
async def measure(sb: Sandbox, address: str, args: Any, url: str, numbers: list[str], password: str) -> dict[str, Any]:
    """Inside the namespace: engine + panel, Chromium signed in and Ready, warm-up, then the runs."""
    st = sb.state
    settings = Settings(
        database_url=unix_socket_url(url),
        ami_host=st["ami"]["host"],
        ami_port=st["ami"]["port"],
        ami_user=st["ami"]["user"],
        ami_secret=st["ami"]["secret"],
        http_host="127.0.0.1",
        http_port=free_port(),
        sip_ws_url=st["http"]["ws_url"],
        sip_domain=address,
        sip_secrets={SEAT: st["endpoints"][SEAT]["secret"]},
        pbx_name=args.pbx,
        queues={
            "member-service": QueuePolicy(wrapup_seconds=args.wrapup, team=TEAM),
            "vip": QueuePolicy(wrapup_seconds=args.wrapup, team=TEAM),
        },
    )
    db = make_engine(settings.database_url)
    engine = CtiEngine(settings, make_sessionmaker(db))
    stamps = ServerStamps(engine)  # before start_panel: its AMI listener must run before engine.feed
    runner = None
    chromium = None
    ami: SandboxAmi | None = None
    try:
        runner = await start_panel(settings, engine)
        stamps.watch_hub(runner.app[HUB])
        await engine.ami.wait_connected(20)
        settle_heap()  # as `cti serve` does once started
        chromium = await launch(Path(tempfile.mkdtemp(prefix="bench-screen-pop-chromium-")))
        await chromium.context.add_init_script(script=BROWSER_PROBE)
        page = await chromium.context.new_page()
        page.on("console", lambda m: common.log(f"  console {m.type}: {m.text}") if m.type == "error" else None)
        await sign_in(page, f"http://127.0.0.1:{settings.http_port}", password)
        common.log(f"{USERNAME} signed in at {SEAT}, softphone registered, Ready")
        ami = await sb.ami(events="off")  # the callers' own AMI session: actions only

        feed = iter(numbers)
        stamps.run = "warmup"
        for _ in range(args.warmup):
            await place_one(engine, stamps, ami, next(feed), args)
        await page.evaluate(COLLECT)
        common.log(f"warm-up: {args.warmup} calls, {len(stamps.popped)} pops")

        runs: list[dict[str, Any]] = []
        for index in range(args.runs):
            clock = await clock_offset(page)
            stamps.run = f"run{index}"
            placed = 0
            started = time.perf_counter()
            for n in range(args.calls):
                placed += await place_one(engine, stamps, ami, next(feed), args)
                if (n + 1) % 25 == 0:
                    common.log(f"  run {index + 1}: {n + 1}/{args.calls} calls")
            await asyncio.sleep(0.3)
            page_data = await page.evaluate(COLLECT)
            clock_after = await clock_offset(page)
            offset_s = (clock["offset_ms"] + clock_after["offset_ms"]) / 2 / 1000
            figures = run_figures(stamps, stamps.run, placed, page_data, offset_s)
            figures["clock"] = {"before": clock, "after": clock_after, "offset_used_ms": round(offset_s * 1000, 3)}
            figures["wall_s"] = round(time.perf_counter() - started, 1)
            e2e = figures["end_to_end_ms"]
            common.log(
                f"run {index + 1}/{args.runs}: e2e p50 {e2e.get('p50_ms')} p99 {e2e.get('p99_ms')} "
                f"max {e2e.get('max_ms')} ms; matched {figures['pops']['matched']}/{figures['pops']['rang']} "
                f"(clock offset {figures['clock']['offset_used_ms']} ms)"
            )
            runs.append(figures)
        hub_stats = runner.app[HUB].stats()
        bus = {
            s.name: {"handled": s.stats.handled, "failed": s.stats.failed, "dropped": s.stats.dropped}
            for s in engine.bus.subscriptions
        }
        return {"runs": runs, "extra_rings": stamps.extra_rings, "bus": bus, "hub": hub_stats}
    finally:
        if ami is not None:
            with contextlib.suppress(Exception):
                await ami.close()
        if chromium is not None:
            with contextlib.suppress(Exception):
                await chromium.close()
        if runner is not None:
            await runner.cleanup()  # stops the engine (cleanup_ctx)
        await db.dispose()


# ------------------------------------------------------------------------------ database
async def prepare(args: Any) -> tuple[str, dict[str, Any], list[str], str]:
    """The cached database (built on first use), a copy of it to write into, the agent and the callers."""
    cached_url, database = await common.cached_demo_database(args.members, args.seed_db)
    url = cached_url
    if not args.in_place:
        name = f"{common.BENCH_PREFIX}screen_pop_{os.getpid()}"
        started = time.perf_counter()
        try:
            await copy_database(make_url(cached_url).database or "", name)
            url = common.pg_url(name)
            database["copy"] = {"name": name, "copy_s": round(time.perf_counter() - started, 1)}
            common.log(f"copied the cached database to {name} in {database['copy']['copy_s']} s")
        except asyncpg.ObjectInUseError:
            common.log("the cached database is in use by another session: running in it, cleaning up after")
            args.in_place = True
    database["in_place"] = args.in_place
    password = secrets.token_urlsafe(18)
    db = make_engine(url)
    try:
        sessions = make_sessionmaker(db)
        await ensure_browser_agent(sessions, password)
        total = args.warmup + args.calls * args.runs
        pairs = await draw_caller_numbers(sessions, total, args.unknown_share, args.seed)
    finally:
        await db.dispose()
    return url, database, [number for _, number in pairs], password


async def copy_database(source: str, target: str) -> None:
    """FILE_COPY copies the files (seconds for ~1 GB) instead of WAL-logging every block (PG 15's default)."""
    for name in (source, target):
        if not name.startswith(common.BENCH_PREFIX):
            raise ValueError(f"benchmarks only touch databases named {common.BENCH_PREFIX}*: {name!r}")
    await common.drop_pg_database(target)
    admin = await common._admin()
    try:
        await admin.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}" STRATEGY FILE_COPY')
    finally:
        await admin.close()


async def ensure_browser_agent(sessions: Any, password: str) -> None:
    """The CRM user the browser signs in as: agent1's role, team and scope, at the WebRTC seat."""
    async with transaction(sessions) as session:
        template = (await session.execute(select(User).where(User.username == "agent1"))).scalar_one()
        holder = (await session.execute(select(User).where(User.agent_endpoint == SEAT))).scalar_one_or_none()
        if holder is not None and holder.username != USERNAME:
            raise SystemExit(f"user {holder.username!r} already sits at {SEAT}: the bench will not take it over")
        user = holder or User(username=USERNAME, agent_endpoint=SEAT)
        user.display_name = f"Bench {SEAT}"
        user.password_hash = hash_password_sync(password)
        user.role = template.role
        user.org_unit_id = template.org_unit_id
        user.data_scope = template.data_scope
        user.active = True
        user.failed_logins = 0
        user.locked_until = None
        session.add(user)


async def cleanup(url: str, args: Any) -> None:
    if not args.in_place:
        await common.drop_pg_database(make_url(url).database or "")
        return
    db = make_engine(url)
    try:
        await purge_bench_rows(make_sessionmaker(db), [args.pbx], [SEAT], drop_users=True)
    finally:
        await db.dispose()


# ------------------------------------------------------------------------------ main
def stop_stale(instance: str) -> None:
    """A sandbox of this bench's own name left running by a killed run is stopped first."""
    with contextlib.suppress(SandboxError):
        old = Sandbox.attach(instance)
        if old.is_running():
            common.log(f"stopping a stale sandbox {instance!r} left by an earlier run")
            old.down(purge=True)


def summarise(measured: dict[str, Any], args: Any) -> dict[str, Any]:
    runs = measured["runs"]
    pooled = [s for run in runs for s in run.pop("_e2e_s")]
    p99s = [run["end_to_end_ms"]["p99_ms"] for run in runs if run["end_to_end_ms"]["samples"]]

    def median_of(path: Sequence[str]) -> float | None:
        values = []
        for run in runs:
            node: Any = run
            for key in path:
                node = node.get(key, {}) if isinstance(node, dict) else {}
            if isinstance(node, int | float):
                values.append(float(node))
        return round(statistics.median(values), 3) if values else None

    median = {
        "end_to_end_p50_ms": median_of(("end_to_end_ms", "p50_ms")),
        "end_to_end_p90_ms": median_of(("end_to_end_ms", "p90_ms")),
        "end_to_end_p99_ms": median_of(("end_to_end_ms", "p99_ms")),
        "end_to_end_max_ms": median_of(("end_to_end_ms", "max_ms")),
        "end_to_end_painted_p99_ms": median_of(("end_to_end_painted_ms", "p99_ms")),
        "end_to_end_full_360_p50_ms": median_of(("end_to_end_full_360_ms", "p50_ms")),
        "end_to_end_full_360_p99_ms": median_of(("end_to_end_full_360_ms", "p99_ms")),
    }
    for segment in ("server", "hub", "transport", "browser", "paint"):
        median[f"{segment}_p50_ms"] = median_of(("segments_ms", segment, "p50_ms"))
        median[f"{segment}_p99_ms"] = median_of(("segments_ms", segment, "p99_ms"))
    missing = sum(run["pops"]["missing"] for run in runs)
    return {
        "median": median,
        "all_runs_end_to_end_ms": ms_summary(pooled),
        "goal_met": bool(p99s) and statistics.median(p99s) < GOAL_P99_MS and missing == 0,
        "pops_missing_total": missing,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help="calls per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="calls before the first run, not counted")
    parser.add_argument("--hold", type=float, default=0.5, help="seconds the caller rings before hanging up")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between a call's end and the next call")
    parser.add_argument("--wrapup", type=int, default=2, help="queue wrap-up seconds (only after answered calls)")
    parser.add_argument("--unknown-share", type=float, default=0.0, help="callers that are no member (new-member form)")
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--seed-db", type=int, default=20261124, help="seed of the cached demo database")
    parser.add_argument("--seed", type=int, default=1, help="seed of the caller numbers")
    parser.add_argument("--instance", default="bench-screen-pop", help="sandbox instance name")
    parser.add_argument(
        "--in-place", action="store_true", help="write into the cached database (cleaned after) instead of a copy"
    )
    args = parser.parse_args()
    args.pbx = f"bench-pop-{os.getpid()}"
    if os.geteuid() != 0:
        raise SystemExit("needs root: a network namespace and the Asterisk sandbox")
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"{CHROMIUM} not installed (scripts/install-system-deps installs it)")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("cti.bus").setLevel(logging.ERROR)  # pops published during stop()

    url, database, numbers, password = asyncio.run(prepare(args))
    stop_stale(args.instance)
    try:
        with isolated_network("10.99.8") as address:
            # Started on this thread, inside the namespace: Asterisk, the Playwright driver, Chromium
            # and every socket the event loop opens live there.
            common.log(f"starting sandbox {args.instance!r} on {address} (no phones)")
            sb = Sandbox.up(
                agents=0,
                customers=0,
                instance=args.instance,
                bind=address,
                wrapup_seconds=args.wrapup,
                queue_max_wait=60,
                timeout=120,
            )
            try:
                version = sb.cli("core show version").strip()
                measured = asyncio.run(measure(sb, address, args, url, numbers, password))
            finally:
                with contextlib.suppress(Exception):
                    sb.down(purge=True)
    finally:
        asyncio.run(cleanup(url, args))
    summary = summarise(measured, args)
    common.emit(
        {
            "bench": "screen_pop_e2e",
            "goal": {"end_to_end_p99_ms": GOAL_P99_MS, "from": "AMI AgentCalled received", "to": "card in the DOM"},
            "goal_met": summary.pop("goal_met"),
            **summary,
            "scenario": {
                "calls_per_run": args.calls,
                "runs": args.runs,
                "warmup_calls": args.warmup,
                "hold_s": args.hold,
                "gap_s": args.gap,
                "unknown_caller_share": args.unknown_share,
                "one_call_at_a_time": True,
                "agent": f"{USERNAME} at {SEAT} in Chromium (WebRTC softphone registered, Ready, never answers)",
            },
            "runs": measured["runs"],
            "extra_agent_called": measured["extra_rings"],
            "bus": measured["bus"],
            "database": {"engine": "postgresql", "members": args.members, **database},
            "asterisk": version,
            "peak_rss_mib": common.peak_rss_mib(),
            "peak_rss_note": "this process: panel server, CTI engine and the bench (Chromium is separate)",
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "machine": common.machine(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
