"""Benchmark: real call load on a real Asterisk 22 (sandbox), with the real CtiEngine on 1,000,000 members.

What runs (everything started by this script, the sandbox stopped at the end whatever happens):

* a sandbox Asterisk of its own (``--instance``, default ``bench-cti-load``) with the product's
  ``asterisk-config`` (``--strategy`` renders a copy with another queue strategy instead) and no phones;
* answering agents without phones: ``--agents`` queue members ``Local/<7001…>@load-agent-n/n`` (one
  extension each, added to both queues with QueueAdd) that answer at once and talk ``--talk`` seconds
  (global ``CTI_LOAD_TALK``; see the ``[load-agent-n]`` context in asterisk-config/extensions.conf);
* callers: AMI ``Originate Channel=Local/<DID>@from-customers Context=load-generator`` at ``--rate``
  new calls per second for ``--duration`` seconds, through the 400-number context (4008001234 →
  member-service, ``--vip-share`` of them 4008001235 → vip), each with a distinct caller ID: the
  mobile of a real demo member or (``--unknown-share``) a valid number nobody has, and with
  ``__CTI_CALLID=load-<pid>-<n>`` so the call log can be audited call by call. A caller waits up to
  the queue's ``--max-wait`` (then the product's timeout branch plays its prompt and hangs up) and
  otherwise stays until the agent hangs up;
* the real ``CtiEngine`` (AMI client, tracker, bus, call-log writer, screen pop, callbacks, agent
  states) with settings from the sandbox state, on the cached PostgreSQL database with 1,000,000 demo
  members (``_common.cached_demo_database``). Each load agent has a CRM user whose ``agent_endpoint``
  is the tracker's agent id for it (the Local interface itself), so every AgentRinging gets a real
  screen pop: principal, caller lookup and member 360.

Figures (JSON on stdout, progress on stderr):

* ``calls``: originated (AMI accepted) / failed; ``peak_concurrent_calls``: the highest number of live
  calls in the engine's tracker (sampled every 0.1 s; waiting + ringing + talking calls);
  ``peak_channels``: the highest ``core show channels count`` (Local channels count twice);
* ``screen_pop.lookup_ms``: ``ScreenPop.lookup_ms`` (principal + lookup + 360 measured inside the
  subscriber; includes waiting for the event loop between its database round trips);
  ``screen_pop.<all|steady>.fed_to_pop_ms``: from the moment the engine was fed the AMI event that made
  the agent ring (AgentCalled) to the moment the ScreenPop was published on the bus (adds the time
  queued behind other pops); ``ami_read_lag_ms``: from Asterisk's ``Timestamp`` on that event to the
  feed (socket, AMI reader, event loop); ``asterisk_to_pop_ms``: the sum, what an agent would see.
  ``all`` pops, and ``steady`` = rings after the first ``--settle`` seconds of load (the first calls
  ring idle agents in bulk and load every agent's principal). Goal: p99 < 10 ms;
* ``call_log``: every originated call must be in the calls table exactly once, ``state = ended``, with the
  caller ID it was given: ``lost``/``duplicated``/``not_ended``/``wrong_caller`` are 0, or listed;
  plus the outcomes (answered, abandoned…) and ``unexpected`` rows (calls the bench did not place);
* ``cpu``: CPU seconds and share of the load window for Asterisk, this process (the engine plus the
  small load generator) and the PostgreSQL backends serving it; ``timeline``: the same every 5 s with
  live calls, so a rate Asterisk cannot sustain shows;
* ``bus``: per subscriber handled / failed / dropped events and how many it was still behind when the
  engine was stopped; ``drain_s``: the time the subscribers needed after the last call ended to catch
  up (bounded by ``--drain-limit``: a subscriber still behind then is reported, not waited for; the call
  log is waited for first, so the audit sees everything the writer got);
* ``peak_rss_mib``: peak resident memory of this process (the engine; the load generator is tiny).

    .venv/bin/python scripts/bench/cti_load.py [--duration 60] [--rate 10] [--concurrency 60] [--agents 90]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # scripts/: asterisk_sandbox

import _common as common
from asterisk_sandbox import CONFIG_DIR, Sandbox, SandboxError
from asterisk_sandbox import AmiClient as SandboxAmi
from cti_pipeline import caller_numbers as draw_caller_numbers
from cti_pipeline import (
    ensure_agent_users,
    pg_backends_cpu,
    pg_cpu_since,
    proc_cpu_s,
    profile_report,
    purge_bench_rows,
    self_cpu_s,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import make_engine, make_sessionmaker
from crm_core.settings import QueuePolicy, Settings
from cti import screenpop
from cti.ami.protocol import AmiMessage
from cti.calls.events import AgentRinging, DomainEvent
from cti.engine import CtiEngine
from cti.heap import settle_heap
from cti.screenpop import ScreenPop

Sessions = async_sessionmaker[AsyncSession]

GOAL_POP_P99_MS = 10.0
GOAL_CONCURRENT = 50
GOAL_RATE = 10.0
DIDS = {"member-service": "4008001234", "vip": "4008001235"}
AGENT_BASE = 7001
AGENT_CONTEXT = "load-agent-n"


def agent_interface(index: int) -> str:
    """The queue member interface of load agent ``index``; also its id in the tracker (a Local member
    is its own id, see ``cti.calls.tracker._agent_id``) and so its CRM user's ``agent_endpoint``."""
    return f"Local/{AGENT_BASE + index}@{AGENT_CONTEXT}/n"


# ------------------------------------------------------------------------------ instrumentation
def ms_summary(seconds: Sequence[float]) -> dict[str, float]:
    return common.latency_summary(seconds) if seconds else {"samples": 0}


class PopClock:
    """Times each screen pop from the AMI event that made the agent ring to the ScreenPop's publication.

    Without touching the engine: ``engine.feed`` (the AMI client's event callback, registered by
    ``start()``) is wrapped to note when each event enters the engine, and ``engine.bus.publish`` to
    note which event was being fed when an AgentRinging was published and when its ScreenPop was.
    A ScreenPop carries the AgentRinging's ``at``, ``linkedid`` and ``agent``: that is the key. A ring
    that came before the caller's 360 was read gets an early pop (``partial``: who is calling, from the
    lookup) and then the full one: the samples time the full pop, ``first_samples`` the first of the two.

    The triggering event's ``Timestamp`` header (Asterisk's clock when it sent the event, the same
    system clock) also gives how long the event took to get from Asterisk into the engine
    (``ami_read_lag``): AMI socket, the reader's parsing, and the event loop's other work.
    """

    def __init__(self, engine: CtiEngine) -> None:
        self.feeding: tuple[float, AmiMessage | None] = (time.perf_counter(), None)
        self.ringing: dict[tuple[str, str, float], tuple[float, float | None]] = {}
        # (fed at, seconds to the pop, seconds from Asterisk's Timestamp to the feed or None)
        self.samples: list[tuple[float, float, float | None]] = []
        self.first_samples: list[tuple[float, float, float | None]] = []
        self.early_pops = 0
        self.popped_early: set[tuple[str, str, float]] = set()
        self.rings = 0
        self.pops = 0
        self.pops_with_member = 0
        self.pops_with_candidates = 0
        self.unmatched = 0
        feed = engine.feed
        publish = engine.bus.publish
        clock = time.perf_counter

        def timed_feed(msg: AmiMessage) -> None:
            self.feeding = (clock(), msg)
            feed(msg)

        def timed_publish(event: DomainEvent) -> None:
            if isinstance(event, AgentRinging):
                self.rings += 1
                fed, msg = self.feeding
                lag = None
                stamp = msg.get("Timestamp") if msg is not None else None
                if stamp:
                    with contextlib.suppress(ValueError):
                        lag = max(0.0, time.time() - (clock() - fed) - float(stamp))
                self.ringing[(event.linkedid, event.agent, event.at)] = (fed, lag)
            elif isinstance(event, ScreenPop):
                self.pops += 1
                self.pops_with_member += event.member is not None
                self.pops_with_candidates += bool(event.candidates)
                key = (event.linkedid, event.agent, event.at)
                ring = self.ringing.get(key) if event.partial else self.ringing.pop(key, None)
                if ring is None:
                    self.unmatched += 1
                else:
                    sample = (ring[0], clock() - ring[0], ring[1])
                    if key not in self.popped_early:  # the ring's first pop
                        self.first_samples.append(sample)
                    if event.partial:
                        self.early_pops += 1
                        self.popped_early.add(key)
                    else:
                        self.samples.append(sample)
                        self.popped_early.discard(key)
            publish(event)

        # Where a pop's time goes, timed from outside: on the ringing path the principal cache's answer
        # and the agent's field policy applied to the caller read (`cti.crm.caller_view`, called by
        # the pop at once, or after waiting when the read or the principal was not there yet: those
        # rings are counted); off it, the caller reads themselves (started at CallArrived or CallOffered).
        self.principal_s: list[float] = []
        self.pop_view_s: list[float] = []
        self.caller_read_s: list[float] = []
        self.rings_that_waited = 0
        crm, popper = engine.crm, engine.screen_pops
        cached_principal, caller_view, read_caller, pop_later = (
            crm.cached_principal,
            screenpop.caller_view,
            crm.read_caller,
            popper._pop_later,
        )

        def timed_principal(endpoint: str) -> Any:
            started = clock()
            try:
                return cached_principal(endpoint)
            finally:
                self.principal_s.append(clock() - started)

        def timed_caller_view(principal: Any, record: Any) -> Any:
            started = clock()
            try:
                return caller_view(principal, record)
            finally:
                self.pop_view_s.append(clock() - started)

        def counted_pop_later(*args: Any) -> Any:
            self.rings_that_waited += 1
            return pop_later(*args)

        async def timed_read_caller(number: str | None) -> Any:
            started = clock()
            try:
                return await read_caller(number)
            finally:
                self.caller_read_s.append(clock() - started)

        setattr(crm, "cached_principal", timed_principal)  # noqa: B010
        setattr(screenpop, "caller_view", timed_caller_view)  # noqa: B010  (this process only runs the bench)
        setattr(popper, "_pop_later", counted_pop_later)  # noqa: B010
        setattr(crm, "read_caller", timed_read_caller)  # noqa: B010
        # Instance attributes shadow the methods: start() subscribes the AMI client to engine.feed.
        setattr(engine, "feed", timed_feed)  # noqa: B010
        setattr(engine.bus, "publish", timed_publish)  # noqa: B010

    def summary(self, settle_at: float) -> dict[str, Any]:
        """p50/p99/max of fed→pop, Asterisk→fed and Asterisk→pop, for all pops and after ``settle_at``."""
        out: dict[str, Any] = {}
        for label, chosen in (
            ("all", self.samples),
            ("steady", [s for s in self.samples if s[0] >= settle_at]),
        ):
            out[label] = {
                "fed_to_pop_ms": ms_summary([s[1] for s in chosen]),
                "ami_read_lag_ms": ms_summary([s[2] for s in chosen if s[2] is not None]),
                "asterisk_to_pop_ms": ms_summary([s[1] + s[2] for s in chosen if s[2] is not None]),
            }
        first = [s[1] for s in self.first_samples if s[0] >= settle_at]
        out["steady"]["fed_to_first_pop_ms"] = ms_summary(first)  # the early pop where there was one
        return out


class Sampler:
    """Every 0.1 s the tracker's live calls and the event loop's lag (how late a 0.1 s sleep wakes up:
    the time other work held the loop, or the process waited for a CPU); every 1 s Asterisk's channel
    count; every 5 s CPU shares."""

    def __init__(self, engine: CtiEngine, ami: SandboxAmi, asterisk_pid: int) -> None:
        self.engine = engine
        self.ami = ami
        self.asterisk_pid = asterisk_pid
        self.peak_calls = 0
        self.peak_calls_at = 0.0
        self.peak_channels = 0
        self.timeline: list[dict[str, Any]] = []
        self.loop_lag_s: list[float] = []
        self.started = time.perf_counter()

    async def run(self) -> None:
        tick = 0
        last = (time.perf_counter(), proc_cpu_s(self.asterisk_pid), self_cpu_s(), pg_backends_cpu())
        channels = 0
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(0.1)
            self.loop_lag_s.append(max(0.0, time.perf_counter() - asked - 0.1))
            tick += 1
            live = self.engine.tracker.live_calls
            if live > self.peak_calls:
                self.peak_calls, self.peak_calls_at = live, time.perf_counter() - self.started
            if tick % 10 == 0:
                channels = await self._channels()
                self.peak_channels = max(self.peak_channels, channels)
            if tick % 50 == 0:
                now = (time.perf_counter(), proc_cpu_s(self.asterisk_pid), self_cpu_s(), pg_backends_cpu())
                span = now[0] - last[0]
                self.timeline.append(
                    {
                        "t_s": round(now[0] - self.started, 1),
                        "live_calls": live,
                        "channels": channels,
                        "asterisk_cpu_share": round((now[1] - last[1]) / span, 2),
                        "engine_cpu_share": round((now[2] - last[2]) / span, 2),
                        "pg_cpu_share": round(pg_cpu_since(last[3]) / span, 2),
                        "behind": {s.name: s.queued + s.backlog for s in self.engine.bus.stats()},
                    }
                )
                last = now

    async def _channels(self) -> int:
        with contextlib.suppress(Exception):
            resp = await self.ami.action("Command", {"Command": "core show channels count"}, timeout=2)
            m = re.search(r"(\d+) active channels?", resp.get("Output", ""))
            if m:
                return int(m.group(1))
        return 0


def loop_thread_waited_s() -> float:
    """Seconds this thread (the event loop's) has been runnable but waiting for a CPU."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def set_engine_nice(nice: int) -> None:
    """Give the event loop's thread `nice`, also against Asterisk.

    Asterisk runs in a session of its own (the sandbox starts it with setsid). Where the kernel groups
    each session's threads for scheduling (`kernel.sched_autogroup_enabled`, on by default), a thread's
    nice only ranks it inside its own session: against Asterisk the two sessions get equal CPU, and
    under this load the loop's thread waited on the run queue about as long as it ran. The session's
    own nice (`/proc/self/autogroup`) is what ranks the two.
    """
    os.setpriority(os.PRIO_PROCESS, 0, nice)  # this (the event loop's) thread
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(str(nice))


# ------------------------------------------------------------------------------ load generation
class Caller:
    """One originated call: its id, caller ID, DID and what AMI answered."""

    __slots__ = ("did", "index", "kind", "load_id", "number", "ok", "reason", "sent_at")

    def __init__(self, index: int, load_id: str, kind: str, number: str, did: str) -> None:
        self.index = index
        self.load_id = load_id
        self.kind = kind
        self.number = number
        self.did = did
        self.sent_at = 0.0
        self.ok = False
        self.reason = ""


async def originate(ami: SandboxAmi, caller: Caller, patience_s: int) -> None:
    caller.sent_at = time.perf_counter()
    try:
        resp = await ami.action(
            "Originate",
            {
                "Channel": f"Local/{caller.did}@from-customers",
                "Context": "load-generator",
                "Exten": str(patience_s),  # the caller hangs up this long after the inbound side answered
                "Priority": "1",
                "CallerID": f'"Load {caller.index}" <{caller.number}>',
                "Timeout": "30000",
                "Async": "true",
            },
            variables={"__CTI_CALLID": caller.load_id},
            timeout=10,
        )
    except (TimeoutError, ConnectionError) as exc:
        caller.reason = f"{type(exc).__name__}"
        return
    caller.ok = resp.get("Response") == "Success"
    caller.reason = resp.get("Message", "")


async def place_calls(ami: SandboxAmi, callers: Sequence[Caller], rate: float, patience_s: int) -> float:
    """Originate ``callers`` at ``rate`` per second on a fixed schedule (a late send does not shift the
    later ones); returns the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[None]] = []
    for i, caller in enumerate(callers):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(originate(ami, caller, patience_s)))
        if (i + 1) % max(1, round(rate * 10)) == 0:
            common.log(f"  {i + 1}/{len(callers)} calls placed")
    await asyncio.gather(*tasks)
    return loop.time() - start


# ------------------------------------------------------------------------------ audit
async def audit(sessions: Sessions, pbx: str, callers: Sequence[Caller]) -> dict[str, Any]:
    """Each originated call exactly once in the calls table, ended, with its caller ID."""
    async with sessions() as session:
        rows = (
            await session.execute(
                text("SELECT linkedid, state, cti_call_id, caller_raw, outcome, member_id FROM calls WHERE pbx = :p"),
                {"p": pbx},
            )
        ).all()
    by_id: dict[str, list[Any]] = {}
    unexpected = []
    for row in rows:
        if row.cti_call_id is None:
            unexpected.append(row.linkedid)
        else:
            by_id.setdefault(row.cti_call_id, []).append(row)
    placed = [c for c in callers if c.ok]
    lost, duplicated, not_ended, wrong_caller = [], [], [], []
    outcomes: Counter[str] = Counter()
    matched_members = 0
    for caller in placed:
        found = by_id.pop(caller.load_id, [])
        if not found:
            lost.append(caller.load_id)
            continue
        if len(found) > 1:
            duplicated.append(f"{caller.load_id}: {[r.linkedid for r in found]}")
        row = found[0]
        if row.state != "ended":
            not_ended.append(f"{caller.load_id} ({row.linkedid}, {row.state})")
        if row.caller_raw != caller.number:
            wrong_caller.append(f"{caller.load_id}: {row.caller_raw} != {caller.number}")
        outcomes[str(row.outcome)] += 1
        matched_members += row.member_id is not None
    unexpected += [f"{k} ({len(v)} rows)" for k, v in by_id.items()]
    return {
        "placed": len(placed),
        "rows": len(rows),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "not_ended": len(not_ended),
        "wrong_caller": len(wrong_caller),
        "unexpected": len(unexpected),
        "ok": not (lost or duplicated or not_ended or wrong_caller),
        "outcomes": dict(outcomes.most_common()),
        "calls_filed_under_a_member": matched_members,
        "lost_ids": lost,
        "duplicated_ids": duplicated,
        "not_ended_ids": not_ended,
        "wrong_caller_ids": wrong_caller[:50],
        "unexpected_ids": unexpected[:50],
    }


# ------------------------------------------------------------------------------ the run
async def wait_until(predicate: Callable[[], bool], limit_s: float, step: float = 0.2) -> bool:
    """Poll ``predicate`` until it holds or ``limit_s`` passed; returns its last value."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


def bus_pending(engine: CtiEngine) -> int:
    return sum(s.queued + s.backlog for s in engine.bus.stats())


async def run_load(sb: Sandbox, args: argparse.Namespace, url: str, pbx: str) -> dict[str, Any]:
    db = make_engine(url)
    sessions = make_sessionmaker(db)
    endpoints = [agent_interface(i) for i in range(args.agents)]
    total = round(args.rate * args.duration)
    rng = random.Random(args.seed)
    pairs = await draw_caller_numbers(sessions, total, args.unknown_share, args.seed)
    callers = [
        Caller(
            i,
            f"load-{os.getpid()}-{i}",
            kind,
            number,
            DIDS["vip" if rng.random() < args.vip_share else "member-service"],
        )
        for i, (kind, number) in enumerate(pairs)
    ]
    ami_state = sb.state["ami"]
    settings = Settings(
        database_url=url,
        ami_host=ami_state["host"],
        ami_port=ami_state["port"],
        ami_user=ami_state["user"],
        ami_secret=ami_state["secret"],
        pbx_name=pbx,
        queues={q: QueuePolicy(wrapup_seconds=args.wrapup) for q in DIDS},
    )
    if args.engine_nice:
        set_engine_nice(args.engine_nice)
    ami = await sb.ami(events="off")  # the load generator's own session: actions only, no events
    engine = CtiEngine(settings, sessions)
    clock = PopClock(engine)
    sampler_task: asyncio.Task[None] | None = None
    profile: dict[str, Any] | None = None
    stopped = False
    try:
        await engine.start(wait=20)
        settle_heap()  # as `cti serve` does once started
        resp = await ami.action("Setvar", {"Variable": "CTI_LOAD_TALK", "Value": str(args.talk)})
        if resp.get("Response") != "Success":
            raise SandboxError(f"Setvar CTI_LOAD_TALK: {resp}")
        for i, interface in enumerate(endpoints):
            for queue in DIDS:
                resp = await ami.action(
                    "QueueAdd", {"Queue": queue, "Interface": interface, "MemberName": f"Load {AGENT_BASE + i}"}
                )
                if resp.get("Response") != "Success":
                    raise SandboxError(f"QueueAdd {interface} to {queue}: {resp.get('Message')}")
        ready = await wait_until(
            lambda: sum(1 for e in endpoints if engine.agents.is_logged_in(e)) == len(endpoints), 15
        )
        common.log(f"{len(endpoints)} load agents in both queues (engine sees them all: {ready})")
        await wait_until(lambda: bus_pending(engine) == 0, 30)

        sampler = Sampler(engine, ami, int(sb.state["asterisk"]["pid"]))
        sampler_task = asyncio.create_task(sampler.run())
        cpu0 = (proc_cpu_s(sb.state["asterisk"]["pid"]), self_cpu_s(), pg_backends_cpu(), loop_thread_waited_s())
        load_started = time.perf_counter()
        common.log(f"placing {total} calls at {args.rate}/s for {args.duration} s (talk {args.talk} s)")
        patience = int(args.talk + args.max_wait + 15)
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        placing_s = await place_calls(ami, callers, args.rate, patience)
        load_window = time.perf_counter() - load_started
        cpu1 = (
            proc_cpu_s(sb.state["asterisk"]["pid"]),
            self_cpu_s(),
            pg_cpu_since(cpu0[2]),
            loop_thread_waited_s(),
        )
        failed = [c for c in callers if not c.ok]
        common.log(f"placed {total - len(failed)} calls in {placing_s:.1f} s ({len(failed)} refused by AMI)")

        settle_limit = args.talk + args.max_wait + 30
        ended = await wait_until(lambda: engine.tracker.live_calls == 0, settle_limit)
        calls_done_at = time.perf_counter()
        await asyncio.sleep(1.0)  # trailing events of the last calls (Cdr, wrap-up QueueMemberStatus)
        subscriptions = engine.bus.subscriptions
        by_name = {s.name: s for s in subscriptions}
        # The call log first (the audit needs it), then the others, all within --drain-limit.
        call_log_sub = by_name["call-log"]
        log_drained = await wait_until(
            lambda: call_log_sub.stats.queued + call_log_sub.stats.backlog == 0, args.drain_limit
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                engine.call_log.drain(), max(1.0, args.drain_limit - (time.perf_counter() - calls_done_at))
            )
        left = max(0.0, args.drain_limit - (time.perf_counter() - calls_done_at))
        drained = await wait_until(lambda: bus_pending(engine) == 0, left)
        drain_s = time.perf_counter() - calls_done_at
        behind = {s.name: s.stats.queued + s.stats.backlog for s in subscriptions}
        if profiler is not None:
            profiler.disable()
            profile = profile_report(profiler)
        common.log(
            f"all calls ended: {ended} (live {engine.tracker.live_calls}); call log caught up: {log_drained}; "
            f"all subscribers caught up: {drained} ({drain_s:.1f} s after the last call; still behind: {behind})"
        )
        sampler_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler_task
        stopped = True
        await engine.stop()  # the bus gives busy subscribers 10 s more, then cancels them
        bus = {
            s.name: {
                "handled": s.stats.handled,
                "failed": s.stats.failed,
                "dropped": s.stats.dropped,
                "behind_at_stop": behind[s.name],
            }
            for s in subscriptions
        }
        call_log = await audit(sessions, pbx, callers)
    finally:
        if sampler_task is not None and not sampler_task.done():
            sampler_task.cancel()
        if not stopped:
            with contextlib.suppress(Exception):
                await engine.stop()
        with contextlib.suppress(Exception):
            await ami.close()
        await db.dispose()

    settle_at = load_started + args.settle
    steady = [s[1] for s in clock.samples if s[0] >= settle_at]
    lookup_ms = engine.screen_pops.latencies_ms
    window = load_window
    return {
        "calls": {
            "planned": total,
            "originated": total - len(failed),
            "refused": len(failed),
            "refused_reasons": dict(Counter(c.reason for c in failed)),
            "placing_s": round(placing_s, 2),
            "achieved_rate_per_s": round((total - len(failed)) / placing_s, 2),
            "peak_concurrent_calls": sampler.peak_calls,
            "peak_at_s": round(sampler.peak_calls_at, 1),
            "peak_channels": sampler.peak_channels,
            "all_ended": ended,
        },
        "screen_pop": {
            "rings": clock.rings,
            "pops": clock.pops,
            "pops_with_member_360": clock.pops_with_member,
            "pops_with_candidates": clock.pops_with_candidates,
            "early_pops": clock.early_pops,
            "unmatched": clock.unmatched,
            "lookup_ms": {
                "all": ms_summary([v / 1000 for v in lookup_ms]),
                "principal_part": ms_summary(clock.principal_s),
                "field_policy_part": ms_summary(clock.pop_view_s),
                "rings_that_waited": clock.rings_that_waited,
                "caller_read_at_offer": ms_summary(clock.caller_read_s),
            },
            **clock.summary(settle_at),
            "goal_p99_ms": GOAL_POP_P99_MS,
            "goal_met_steady": bool(steady) and common.percentile(steady, 99) * 1000 < GOAL_POP_P99_MS,
        },
        "call_log": call_log,
        "cpu": {
            "window_s": round(window, 1),
            "asterisk_s": round(cpu1[0] - cpu0[0], 2),
            "asterisk_share": round((cpu1[0] - cpu0[0]) / window, 2),
            "engine_process_s": round(cpu1[1] - cpu0[1], 2),
            "engine_process_share": round((cpu1[1] - cpu0[1]) / window, 2),
            "postgres_backends_s": cpu1[2],
            "postgres_backends_share": round(cpu1[2] / window, 2),
            # Runnable but not running: the loop's thread waiting for a core (starved by Asterisk).
            "engine_loop_waited_for_cpu_s": round(cpu1[3] - cpu0[3], 2),
        },
        "event_loop_lag_ms": ms_summary(sampler.loop_lag_s),
        "bus": bus,
        "drain_s": round(drain_s, 1),
        "drained": drained,
        "ami_events_fed": engine.events_fed,
        "call_log_writer": {
            "batches": engine.call_log.batches,
            "written": engine.call_log.written,
            "stale": engine.call_log.stale,
            "failures": engine.call_log.failures,
        },
        "timeline": sampler.timeline,
    } | ({"profile": profile} if profile is not None else {})


# ------------------------------------------------------------------------------ main
def config_with_strategy(strategy: str) -> Path:
    """A copy of asterisk-config whose queues use ``strategy`` (the product's files are not touched)."""
    target = Path(tempfile.mkdtemp(prefix="cti-load-config-"))
    shutil.copytree(CONFIG_DIR, target, dirs_exist_ok=True)
    queues = target / "queues.conf"
    queues.write_text(re.sub(r"(?m)^strategy\s*=\s*\S+", f"strategy = {strategy}", queues.read_text()))
    return target


def stop_stale(instance: str) -> None:
    """A sandbox of this bench's own name left running by a killed run is stopped first."""
    with contextlib.suppress(SandboxError):
        old = Sandbox.attach(instance)
        if old.is_running():
            common.log(f"stopping a stale sandbox {instance!r} left by an earlier run")
            old.down(purge=True)


async def prepare(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    url, database = await common.cached_demo_database(args.members, args.seed_db)
    db = make_engine(url)
    try:
        created = await ensure_agent_users(make_sessionmaker(db), [agent_interface(i) for i in range(args.agents)])
    finally:
        await db.dispose()
    common.log(f"CRM users for {args.agents} load agents ({created} created)")
    return url, database


async def cleanup(url: str, pbx: str, agents: int) -> None:
    db = make_engine(url)
    try:
        await purge_bench_rows(
            make_sessionmaker(db), [pbx], [agent_interface(i) for i in range(agents)], drop_users=True
        )
    finally:
        await db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of new calls")
    parser.add_argument("--rate", type=float, default=10.0, help="new calls per second")
    parser.add_argument(
        "--concurrency", type=int, default=60, help="target concurrent calls: sets --talk to concurrency/rate"
    )
    parser.add_argument("--talk", type=float, help="seconds each agent talks (default concurrency/rate)")
    parser.add_argument("--agents", type=int, help="answering load agents (default: enough for rate x (talk+wrapup))")
    parser.add_argument("--wrapup", type=int, default=1, help="queue wrap-up seconds")
    parser.add_argument("--max-wait", type=int, default=20, help="queue max wait before the timeout branch")
    parser.add_argument("--strategy", help="render the queues with this strategy instead of the product's")
    parser.add_argument("--vip-share", type=float, default=0.2, help="calls to the VIP line 4008001235")
    parser.add_argument("--unknown-share", type=float, default=0.2, help="callers that are no member")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of load before 'steady' pops")
    parser.add_argument(
        "--drain-limit", type=float, default=60.0, help="seconds the subscribers get to catch up after the last call"
    )
    parser.add_argument(
        "--engine-nice",
        type=int,
        default=0,
        help="nice value for this process (e.g. -10: the engine is not starved by Asterisk's many threads)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile this process from the first call to the drain")
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--seed-db", type=int, default=20261124, help="seed of the cached demo database")
    parser.add_argument("--seed", type=int, default=1, help="seed of the caller numbers and DIDs")
    parser.add_argument("--instance", default="bench-cti-load", help="sandbox instance name")
    args = parser.parse_args()
    if args.talk is None:
        args.talk = max(1.0, args.concurrency / args.rate)
    if args.agents is None:
        args.agents = math.ceil(args.rate * (args.talk + args.wrapup + 1) * 1.2)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("cti.bus").setLevel(logging.ERROR)  # ScreenPops published during stop()

    url, database = asyncio.run(prepare(args))
    pbx = f"bench-load-{os.getpid()}"
    config_dir = config_with_strategy(args.strategy) if args.strategy else None
    stop_stale(args.instance)
    common.log(f"starting sandbox {args.instance!r} (no phones, wrap-up {args.wrapup} s, max wait {args.max_wait} s)")
    sb = Sandbox.up(
        agents=0,
        customers=0,
        instance=args.instance,
        wrapup_seconds=args.wrapup,
        queue_max_wait=args.max_wait,
        config_dir=config_dir,
        timeout=90,
    )
    try:
        strategy = args.strategy or _product_strategies()
        version = sb.cli("core show version").strip()
        result = asyncio.run(run_load(sb, args, url, pbx))
    finally:
        with contextlib.suppress(Exception):
            sb.down(purge=True)
        asyncio.run(cleanup(url, pbx, args.agents))
        if config_dir is not None:
            shutil.rmtree(config_dir, ignore_errors=True)
    calls = result["calls"]
    output = {
        "bench": "cti_load",
        "scenario": {
            "duration_s": args.duration,
            "rate_per_s": args.rate,
            "target_concurrency": args.concurrency,
            "talk_s": args.talk,
            "agents": args.agents,
            "wrapup_s": args.wrapup,
            "queue_max_wait_s": args.max_wait,
            "queue_strategy": strategy,
            "engine_nice": args.engine_nice,
            "vip_share": args.vip_share,
            "unknown_caller_share": args.unknown_share,
        },
        "goals": {
            "concurrent_calls": GOAL_CONCURRENT,
            "new_calls_per_s": GOAL_RATE,
            "screen_pop_p99_ms": GOAL_POP_P99_MS,
        },
        "goals_met": {
            "concurrent_calls": calls["peak_concurrent_calls"] >= GOAL_CONCURRENT,
            "new_calls_per_s": calls["achieved_rate_per_s"] >= GOAL_RATE * 0.98,
            "screen_pop_p99_ms_steady": result["screen_pop"]["goal_met_steady"],
            "call_log_exact": result["call_log"]["ok"],
        },
        **result,
        "database": {"engine": "postgresql", "members": args.members, **database},
        "asterisk": version,
        "peak_rss_mib": common.peak_rss_mib(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": common.machine(),
    }
    common.emit(output)
    return 0 if result["call_log"]["ok"] else 1


def _product_strategies() -> dict[str, str]:
    """Each queue's strategy in the product's queues.conf (what the run used without --strategy)."""
    found: dict[str, str] = {}
    queue = ""
    for line in (CONFIG_DIR / "queues.conf").read_text().splitlines():
        m = re.match(r"^\[([^\]]+)\]", line)
        if m:
            queue = m.group(1)
        m = re.match(r"^strategy\s*=\s*(\S+)", line)
        if m and queue in DIDS:
            found[queue] = m.group(1)
    return found


if __name__ == "__main__":
    sys.exit(main())
