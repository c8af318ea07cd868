"""Benchmark: the whole CTI pipeline in one process (one core) on PostgreSQL with 1,000,000 members.

AMI bytes → ``AmiParser`` → ``CtiEngine.feed`` (call tracker) → event bus → call-log writer (batched
upserts), screen pop (caller lookup + member 360 against the 1M-member database), callback feeder and
agent-state log — the exact wiring of ``cti serve`` (``CtiEngine.subscribe_all``), without a PBX.

Input: the real burst capture (``shared/fixtures/ami/10-burst-20-calls.ami``: 20 queue calls, 2,868
events without FullyBooted, recorded *unfiltered*: ``read=all`` with no event filter) replayed
``--replays`` times as one AMI session read in 64 KiB chunks. Each replay gets its own
Uniqueids/Linkedids (``tracker.shifted``), channel names, bridge ids and ActionIDs, so every replay's
20 calls are new calls; the callers' numbers (13900000001…20 in the capture) are replaced by the
mobiles of real demo members (``--unknown-share`` of them by valid numbers that no member has), one
distinct number per call, so the lookups hit the index. CRM users whose ``agent_endpoint`` is
``agent1001``/``agent1002`` (the capture's agents) are created, so every AgentCalled → AgentRinging
gets a full screen pop (principal, lookup, member 360).

Two inputs are measured, alternating inside each run:

* ``unfiltered``: the capture as recorded (what a ``read=all`` AMI user without filter receives:
  VarSet, Newexten, TestEvent, DeviceStateChange...: 2,868 events per replay);
* ``filtered``: the same stream with the ``eventfilter`` include list of the CTI user in
  ``asterisk-config/manager.conf`` applied (parsed from that file; 876 events per replay): **what
  production receives**.
  Fewer events for the same calls and the same database work, so its events/s is lower while its
  calls/s is higher: compare calls/s between the two, and events/s against the goal.

Figures per run (the JSON reports the median of ``--runs`` runs per input, and every run):

* ``events_per_s``: AMI events fed to the engine / wall seconds, from the first byte parsed until the
  call log holds every call (bus closed and drained, call-log writer drained). Goal ≥ 20,000.
* ``calls_per_s``: distinct calls (Linkedids of the input) / the same wall seconds;
  ``cpu_ms_per_call``: CPU of this process per call (the pipeline is database-bound: per call it scales).
* ``sql.per_call`` / ``sql.top_per_call``: SQL statements sent per call, and the most frequent ones.
* ``feed_s`` / ``drain_s``: time spent until the last chunk was fed / after it, draining subscribers.
* ``call_log``: rows written for the run's ``pbx`` name; ``expected`` = distinct Linkedids in the input;
  ``lost`` / ``duplicated`` / ``not_ended`` / ``unexpected`` must all be 0 (up to 20 ids are listed
  otherwise, and the exit status is 1).
* ``screen_pop``: p50/p99/max of ``ScreenPopper.latencies_ms`` (``lookup_ms`` of each ScreenPop: principal
  + caller lookup + member 360, measured inside the subscriber, including its waits for the shared
  event loop; excludes the time the AgentRinging was queued on the bus).
* ``cpu_s`` / ``cpu_share``: CPU time of this process (user+sys) and its share of the wall time (1.0 =
  one core saturated); ``pg_cpu_s``: CPU time of the PostgreSQL backends serving this process.
* ``bus``: per subscriber handled / failed / dropped events (failed and dropped must be 0).
* ``ablation`` (``--ablation``): both inputs with no subscriber (AMI parse + tracker + bus only), then
  the filtered input with each subscriber alone: what each part costs per call (CPU ms, SQL statements).
* ``peak_rss_mib``: peak resident memory of this process (the replayed streams are held in memory).

``--profile`` adds a cProfile of one more run per input: the top functions by own time on stderr and,
in the JSON, own time grouped by area (AMI parsing, tracker, SQLAlchemy, asyncpg, asyncio...).

The run's rows (calls, callbacks, agent states) are deleted afterwards; the bench users at the end.

    .venv/bin/python scripts/bench/cti_pipeline.py [--replays 20] [--runs 3] [--profile] [--ablation]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import logging
import os
import pstats
import random
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tracker import BANNER, CAPTURE, body_of, chunked, shifted

from crm_core.db import make_engine, make_sessionmaker, transaction
from crm_core.security.models import User
from crm_core.settings import QueuePolicy, Settings
from cti.ami.protocol import AmiParser
from cti.bus import Subscription
from cti.calls.events import (
    AgentRinging,
    AgentStateChanged,
    CallAbandoned,
    CallAnswered,
    CallArrived,
    CallEnded,
    CallMissed,
    CallOffered,
    DomainEvent,
)
from cti.calls.progress import CallProgress
from cti.engine import CtiEngine
from cti.heap import settle_heap
from cti.screenpop import ScreenPop

Sessions = async_sessionmaker[AsyncSession]

GOAL_EVENTS_PER_S = 20_000.0
MANAGER_CONF = common.REPO / "asterisk-config" / "manager.conf"
CAPTURE_AGENTS = ("agent1001", "agent1002")
BENCH_USER_PREFIX = "bench_"
READ_SIZE = 64 * 1024  # what cti.ami.client reads per call

_CALLER = re.compile(rb"139000000(\d\d)")  # the capture's callers: 13900000001 ... 13900000020
# Channel names: "Local/4008001234@from-customers-0000000a;1", "PJSIP/agent1001-0000000d".
_CHANNEL_SEQ = re.compile(rb"((?:Local|PJSIP)/[^\s;,]+?)-([0-9a-f]{8})(?![0-9a-f])")
_UUID_TAIL = re.compile(rb"(\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-)([0-9a-f]{12})\b")
_ACTION_ID = re.compile(rb"^(ActionID: [^\r\n]+)", re.M)
_FILTER_LINE = re.compile(
    r"^eventfilter\(action\(include\),name\((?P<name>[^)]+)\)"
    r"(?:,header\((?P<header>[^)]+)\),method\((?P<method>regex|exact)\))?\)\s*=\s*(?P<value>.*)$"
)


# ------------------------------------------------------------------------------ the AMI event filter
def product_event_filter(conf: Path = MANAGER_CONF, user: str = "{{AMI_USER}}") -> Callable[[Mapping[str, str]], bool]:
    """The CTI user's ``eventfilter`` include list of manager.conf as a predicate on one event.

    Asterisk 22 semantics for include-only filters: an event passes if it matches any filter; a
    ``regex`` header filter is a search (POSIX ``regexec``), ``exact`` an equality on the header value.
    """
    names: set[str] = set()
    by_header: dict[str, list[tuple[str, Callable[[str], bool]]]] = {}
    section = ""
    for raw in conf.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line[1 : line.index("]")]
            continue
        if section != user:
            continue
        m = _FILTER_LINE.match(line)
        if m is None:
            continue
        name, header, method, value = m["name"], m["header"], m["method"], m["value"].strip()
        if header is None:
            names.add(name)
        elif method == "regex":
            by_header.setdefault(name, []).append((header, re.compile(value).search))  # type: ignore[arg-type]
        else:
            by_header.setdefault(name, []).append((header, value.__eq__))
    if not names:
        raise SystemExit(f"no eventfilter lines for [{user}] in {conf}")

    def allowed(event: Mapping[str, str]) -> bool:
        name = event.get("Event", "")
        if name in names:
            return True
        return any(test(event.get(header, "")) for header, test in by_header.get(name, ()))

    return allowed


def filtered_body(body: bytes, allowed: Callable[[Mapping[str, str]], bool]) -> bytes:
    """``body`` without the events the filter drops (Responses are not subject to event filters)."""
    kept: list[bytes] = []
    for block in body.split(b"\r\n\r\n"):
        if not block.strip():
            continue
        headers: dict[str, str] = {}
        for line in block.decode("utf-8", "replace").split("\r\n"):
            key, sep, value = line.partition(": ")
            if sep and key not in headers:
                headers[key] = value
        if "Event" not in headers or allowed(headers):
            kept.append(block + b"\r\n\r\n")
    return b"".join(kept)


# ------------------------------------------------------------------------------ the replayed stream
def replay(body: bytes, index: int, numbers: Sequence[str]) -> bytes:
    """Replay ``index`` of the capture: its own Uniqueids/Linkedids/Timestamps (shifted by 1000 s per
    replay), channel sequence numbers, bridge ids and ActionIDs; caller 139000000NN → ``numbers[NN-1]``."""
    out = shifted(body, index)
    step = index * 0x1000  # 55 channels per replay: 4096 apart never collide

    def channel(m: re.Match[bytes]) -> bytes:
        return b"%s-%08x" % (m.group(1), (int(m.group(2), 16) + step) & 0xFFFFFFFF)

    def bridge(m: re.Match[bytes]) -> bytes:
        return b"%s%012x" % (m.group(1), (int(m.group(2), 16) + index * 0x1_0000_0000) % (1 << 48))

    out = _CHANNEL_SEQ.sub(channel, out)
    out = _UUID_TAIL.sub(bridge, out)
    out = _ACTION_ID.sub(lambda m: m.group(1) + b"-r%d" % index, out)
    return _CALLER.sub(lambda m: numbers[int(m.group(1)) - 1].encode(), out)


def capture_callers(body: bytes) -> int:
    return len({int(m.group(1)) for m in _CALLER.finditer(body)})


def linkedids(stream: bytes) -> set[str]:
    """Distinct Linkedids of the events in ``stream``: the calls the call log must hold."""
    parser = AmiParser()
    found: set[str] = set()
    for chunk in chunked(stream, READ_SIZE):
        for msg in parser.feed(chunk):
            lid = msg.get("Linkedid")
            if lid and "Event" in msg:
                found.add(lid)
    return found


# ------------------------------------------------------------------------------ database helpers
async def caller_numbers(sessions: Sessions, count: int, unknown_share: float, seed: int) -> list[tuple[str, str]]:
    """``count`` distinct (kind, number) pairs, kind ``member`` (a random demo member's own mobile) or
    ``unknown`` (a valid mobile no member or contact has), as a PSTN presents them: 11 national digits."""
    rng = random.Random(seed)
    unknown = round(count * unknown_share)
    wanted = count - unknown
    async with sessions() as session:
        low, high = (await session.execute(text("SELECT min(id), max(id) FROM members"))).one()
        mobiles: set[str] = set()
        while len(mobiles) < wanted + unknown:
            ids = [rng.randint(low, high) for _ in range(2 * (wanted + unknown))]
            rows = await session.execute(
                text("SELECT mobile_e164 FROM members WHERE id = ANY(:ids) AND mobile_e164 LIKE '+861%'"), {"ids": ids}
            )
            mobiles.update(rows.scalars())
        ordered = sorted(mobiles)
        rng.shuffle(ordered)
        members = ordered[:wanted]
        # Unknown: a member's mobile with the last digit changed, checked to be nobody's number.
        neighbours = sorted({m[:-1] + str((int(m[-1]) + 3) % 10) for m in ordered[wanted:]} - set(members))
        taken = set(
            (
                await session.execute(
                    text(
                        "SELECT phone_e164 FROM member_contacts WHERE phone_e164 = ANY(:p) "
                        "UNION SELECT mobile_e164 FROM members WHERE mobile_e164 = ANY(:p)"
                    ),
                    {"p": neighbours},
                )
            ).scalars()
        )
    strangers = [n for n in neighbours if n not in taken][:unknown]
    if len(strangers) < unknown:
        raise SystemExit("could not find enough unknown numbers")
    pairs = [("member", m[3:]) for m in members] + [("unknown", n[3:]) for n in strangers]
    rng.shuffle(pairs)
    return pairs


def bench_username(endpoint: str) -> str:
    """``agent1001`` → ``bench_agent1001``; ``Local/7001@load-agent-n/n`` → ``bench_local_7001_load_agent_n``."""
    slug = re.sub(r"[^a-z0-9]+", "_", endpoint.lower().removesuffix("/n")).strip("_")
    return (BENCH_USER_PREFIX + slug)[:64]


async def ensure_agent_users(sessions: Sessions, endpoints: Iterable[str], template: str = "agent1") -> int:
    """CRM users for ``endpoints`` (role, org unit and data scope copied from the demo user
    ``template``), so a screen pop for them is a real one; returns how many were created. The
    password hash is unusable on purpose: nobody logs in as a bench user."""
    wanted = list(endpoints)
    async with transaction(sessions) as session:
        tmpl = (await session.execute(select(User).where(User.username == template))).scalar_one()
        present = set(
            (await session.execute(select(User.agent_endpoint).where(User.agent_endpoint.in_(wanted)))).scalars()
        )
        missing = [e for e in wanted if e not in present]
        for endpoint in missing:
            session.add(
                User(
                    username=bench_username(endpoint),
                    display_name=f"Bench {endpoint}"[:100],
                    password_hash="!bench-user-no-login",
                    role=tmpl.role,
                    org_unit_id=tmpl.org_unit_id,
                    data_scope=tmpl.data_scope,
                    agent_endpoint=endpoint,
                    active=True,
                )
            )
    return len(missing)


async def purge_bench_rows(
    sessions: Sessions, pbx_names: Sequence[str], endpoints: Sequence[str], *, drop_users: bool = False
) -> None:
    """Delete what a run wrote into the cached database: its calls (legs and agents cascade), the
    callbacks of its missed calls, the agent-state history of its agents; optionally the bench users."""
    async with transaction(sessions) as session:
        params = {"p": list(pbx_names), "e": list(endpoints)}
        await session.execute(
            text("DELETE FROM callbacks WHERE id IN (SELECT callback_id FROM callback_misses WHERE pbx = ANY(:p))"),
            params,
        )
        await session.execute(text("DELETE FROM calls WHERE pbx = ANY(:p)"), params)
        await session.execute(text("DELETE FROM agent_state_log WHERE agent_endpoint = ANY(:e)"), params)
        if drop_users:
            await session.execute(
                text("DELETE FROM users WHERE agent_endpoint = ANY(:e) AND username LIKE :prefix"),
                {**params, "prefix": BENCH_USER_PREFIX.replace("_", r"\_") + "%"},
            )


async def audit_call_log(sessions: Sessions, pbx: str, expected: set[str]) -> dict[str, Any]:
    """Rows of ``pbx`` against the expected Linkedids: lost, duplicated, not ended, unexpected."""
    async with sessions() as session:
        rows = (await session.execute(text("SELECT linkedid, state FROM calls WHERE pbx = :p"), {"p": pbx})).all()
    seen: dict[str, int] = {}
    not_ended: list[str] = []
    for linkedid, state in rows:
        seen[linkedid] = seen.get(linkedid, 0) + 1
        if state != "ended":
            not_ended.append(linkedid)
    lost = sorted(expected - seen.keys())
    duplicated = sorted(lid for lid, n in seen.items() if n > 1)
    unexpected = sorted(seen.keys() - expected)
    return {
        "expected": len(expected),
        "rows": len(rows),
        "distinct": len(seen),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "not_ended": len(not_ended),
        "unexpected": len(unexpected),
        "ok": not (lost or duplicated or not_ended or unexpected),
        "lost_ids": lost[:20],
        "duplicated_ids": duplicated[:20],
        "not_ended_ids": sorted(not_ended)[:20],
        "unexpected_ids": unexpected[:20],
    }


class SqlCounter:
    """Counts the SQL statements a database engine sends (SQLAlchemy ``before_cursor_execute``): the
    number of round trips per call is what the pipeline's cost follows."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.counts: dict[str, int] = {}
        event.listen(engine.sync_engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.counts[statement] = self.counts.get(statement, 0) + 1

    def take(self) -> dict[str, int]:
        counts, self.counts = self.counts, {}
        return counts


def sql_summary(counts: Mapping[str, int], calls: int, top: int = 12) -> dict[str, Any]:
    """Statements per call, and the most frequent statements (first 90 characters) per call."""
    total = sum(counts.values())
    merged: dict[str, int] = {}
    for statement, n in counts.items():
        short = " ".join(statement.split())[:90]
        merged[short] = merged.get(short, 0) + n
    ranked = sorted(merged.items(), key=lambda kv: -kv[1])[:top]
    return {
        "statements": total,
        "per_call": round(total / max(1, calls), 1),
        "top_per_call": {k: round(v / max(1, calls), 2) for k, v in ranked},
    }


# ------------------------------------------------------------------------------ CPU accounting
def proc_cpu_s(pid: int | str) -> float:
    """user+sys CPU seconds of a process from /proc (0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# The last set of socket inodes and the ports found for it: the kernel walks its whole connection
# table to print /proc/self/net/tcp (~9 ms here), and the sockets rarely change between samples.
_ports_of_sockets: list[Any] = [None, set()]


def _own_pg_ports(pg_port: int = 5432) -> set[int]:
    """Local ports of this process's TCP connections to PostgreSQL."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    if inodes == _ports_of_sockets[0]:
        return _ports_of_sockets[1]
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, remote, inode = parts[1], parts[2], parts[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == pg_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    _ports_of_sockets[:] = [inodes, ports]
    return ports


# Backend pid of each client port seen: a full scan of /proc costs ~20 ms, which cti_load's sampler
# would spend on the engine's event loop every 5 s; the pool's connections rarely change.
_backend_of_port: dict[int, int] = {}


def _still_serves(port: int) -> bool:
    """The backend remembered for ``port`` is alive and still serves it (ports are reused)."""
    pid = _backend_of_port.get(port)
    try:
        return pid is not None and f"({port})".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def pg_backends_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving this process (matched by client port)."""
    ports = _own_pg_ports()
    if not ports:
        return {}
    unknown = {f"({port})".encode(): port for port in ports if not _still_serves(port)}
    if unknown:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"postgres: "):
                for mark, port in unknown.items():
                    if mark in cmdline:
                        _backend_of_port[port] = int(entry)
    return {pid: proc_cpu_s(pid) for port in ports if (pid := _backend_of_port.get(port)) is not None}


def pg_cpu_since(before: Mapping[int, float]) -> float:
    """CPU seconds the backends serving this process used since ``before`` (new backends from 0)."""
    now = pg_backends_cpu()
    return round(sum(cpu - before.get(pid, 0.0) for pid, cpu in now.items()), 3)


# ------------------------------------------------------------------------------ one run
def _pending(subscriptions: Sequence[Subscription]) -> int:
    total = 0
    for s in subscriptions:
        stats = s.stats
        total += stats.queued + stats.backlog
    return total


async def feed_stream(engine: CtiEngine, chunks: Sequence[bytes], max_backlog: int) -> None:
    """Parse and feed ``chunks`` as the AMI reader does; yield after each read, and wait while the
    subscribers are more than ``max_backlog`` events behind (so none of them overflows)."""
    parser = AmiParser()
    feed = engine.feed
    subscriptions = engine.bus.subscriptions
    for chunk in chunks:
        for msg in parser.feed(chunk):
            if "Event" in msg:
                feed(msg)
        await asyncio.sleep(0)
        if max_backlog and _pending(subscriptions) > max_backlog:
            # The bus offers no "caught up" event to wait on: poll it every millisecond.
            while _pending(subscriptions) > max_backlog // 2:  # noqa: ASYNC110
                await asyncio.sleep(0.001)


# The subscribers of CtiEngine.subscribe_all, one by one, for the ablation runs (same arguments).
SUBSCRIBERS: dict[str, Callable[[CtiEngine], Subscription]] = {
    "call-log": lambda e: e.bus.subscribe(e.call_log, (CallProgress, CallEnded), name="call-log", overflow="block"),
    "callbacks": lambda e: e.bus.subscribe(
        e.callbacks, (CallAbandoned, CallMissed, CallEnded), name="callbacks", overflow="block"
    ),
    "agents": lambda e: e.bus.subscribe(e.agents, (AgentStateChanged, CallEnded), name="agents", overflow="block"),
    "screen-pop": lambda e: e.bus.subscribe(
        e.screen_pops,
        (CallArrived, CallOffered, AgentRinging, CallAnswered, CallEnded),
        name="screen-pop",
        inline=True,
    ),
}


def time_ring_to_pop(engine: CtiEngine) -> list[float]:
    """Milliseconds from each AgentRinging's publish to its ScreenPop's publish (the panel's view of
    the pop latency, bus queueing included), by wrapping the bus's publish; no engine change."""
    rang: dict[tuple[str, str, float], float] = {}
    latencies: list[float] = []
    publish = engine.bus.publish

    def timed_publish(event: DomainEvent) -> None:
        if isinstance(event, AgentRinging):
            rang[(event.linkedid, event.agent, event.at)] = time.perf_counter()
        elif isinstance(event, ScreenPop):
            started = rang.pop((event.linkedid, event.agent, event.at), None)
            if started is not None:
                latencies.append((time.perf_counter() - started) * 1000)
        publish(event)

    setattr(engine.bus, "publish", timed_publish)  # noqa: B010 (an instance attribute shadows the method)
    return latencies


def ms_summary(values_ms: Sequence[float]) -> dict[str, float]:
    if not values_ms:
        return {"samples": 0}
    return common.latency_summary([v / 1000 for v in values_ms])


async def one_run(
    sessions: Sessions,
    database_url: str,
    chunks: Sequence[bytes],
    expected: set[str],
    pbx: str,
    *,
    max_backlog: int,
    sql: SqlCounter,
    profiler: cProfile.Profile | None = None,
    subscribers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One replay of ``chunks`` through a fresh CtiEngine; ``subscribers`` None = subscribe_all()."""
    settings = Settings(
        database_url=database_url,
        pbx_name=pbx,
        queues={"member-service": QueuePolicy(), "vip": QueuePolicy()},
    )
    engine = CtiEngine(settings, sessions)
    if subscribers is None:
        engine.subscribe_all()
    else:
        for name in subscribers:
            SUBSCRIBERS[name](engine)
    subscriptions = engine.bus.subscriptions
    ring_to_pop_ms = time_ring_to_pop(engine)
    gc.collect()
    sql.take()
    pg_before = pg_backends_cpu()
    cpu_before = self_cpu_s()
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    await feed_stream(engine, chunks, max_backlog)
    fed = time.perf_counter()
    await engine.bus.close(grace=None)
    await engine.call_log.drain()
    ended = time.perf_counter()
    if profiler is not None:
        profiler.disable()
    cpu = self_cpu_s() - cpu_before
    pg_cpu = pg_cpu_since(pg_before)
    statements = sql.take()
    wall = ended - started
    await engine.screen_pops.close()  # caller reads of calls that never ended (none in the captures)
    await engine.crm.close()
    audit = await audit_call_log(sessions, pbx, expected if subscribers is None or "call-log" in subscribers else set())
    events = engine.events_fed
    pops = engine.screen_pops.latencies_ms
    writer = engine.call_log
    return {
        "events_fed": events,
        "calls": len(expected),
        "wall_s": round(wall, 3),
        "feed_s": round(fed - started, 3),
        "drain_s": round(ended - fed, 3),
        "events_per_s": round(events / wall),
        "calls_per_s": round(len(expected) / wall, 1),
        "cpu_s": round(cpu, 3),
        "cpu_share": round(cpu / wall, 2),
        "cpu_ms_per_call": round(1000 * cpu / len(expected), 2),
        "pg_cpu_s": pg_cpu,
        "sql": sql_summary(statements, len(expected)),
        "call_log": audit,
        "writer": {
            "batches": writer.batches,
            "written": writer.written,
            "stale": writer.stale,
            "failures": writer.failures,
        },
        "screen_pop": {"pops": len(pops), **ms_summary(pops)},
        "ring_to_pop": ms_summary(ring_to_pop_ms),
        "bus": {
            s.name: {"handled": s.stats.handled, "failed": s.stats.failed, "dropped": s.stats.dropped}
            for s in subscriptions
        },
        "load_1min": round(os.getloadavg()[0], 2),
    }


# ------------------------------------------------------------------------------ profile
_AREAS = (
    ("/cti/ami/", "cti.ami (AMI parsing)"),
    ("/cti/calls/", "cti.calls (tracker)"),
    ("/cti/bus.py", "cti.bus"),
    ("/cti/", "cti (engine, subscribers)"),
    ("/crm_core/", "crm_core (lookup, 360, call log, callbacks)"),
    ("/sqlalchemy/", "sqlalchemy"),
    ("/asyncpg/", "asyncpg"),
    ("/pydantic", "pydantic"),
    ("/phonenumbers/", "phonenumbers"),
    ("/asyncio/", "asyncio"),
    ("/logging/", "logging"),
)


def _area(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C calls)"
    for needle, area in _AREAS:
        if needle in filename:
            return area
    return "other python"


def profile_report(profiler: cProfile.Profile, top: int = 25) -> dict[str, Any]:
    """Own time grouped by area, and the top functions by own time (also printed to stderr)."""
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1.0
    areas: dict[str, float] = {}
    rows = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        areas[_area(filename)] = areas.get(_area(filename), 0.0) + tottime
        rows.append((tottime, cumtime, ncalls, f"{Path(filename).name}:{line}({func})"))
    rows.sort(reverse=True)
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)
    common.log("profile (by own time):\n" + out.getvalue())
    return {
        "total_own_s": round(total, 3),
        "own_time_by_area_pct": {k: round(100 * v / total, 1) for k, v in sorted(areas.items(), key=lambda kv: -kv[1])},
        "top_own_time": [
            {"function": name, "own_s": round(t, 3), "cum_s": round(c, 3), "calls": n} for t, c, n, name in rows[:top]
        ],
    }


# ------------------------------------------------------------------------------ main
def _median(runs: Sequence[dict[str, Any]], key: str) -> float:
    return round(statistics.median(float(r[key]) for r in runs), 3)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20261124, help="seed of the cached demo database")
    parser.add_argument("--replays", type=int, default=20, help="copies of the 20-call burst per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--unknown-share", type=float, default=0.2, help="callers that are no member")
    parser.add_argument("--max-backlog", type=int, default=5_000, help="wait while subscribers lag this much")
    parser.add_argument("--inputs", default="unfiltered,filtered", help="which inputs to run")
    parser.add_argument("--profile", action="store_true", help="one more cProfiled run per input")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also run both inputs with no subscriber, then the filtered one with each subscriber alone",
    )
    parser.add_argument("--capture", type=Path, default=CAPTURE)
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached demo database")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # ScreenPops published while the bus drains at the end would each log "bus closed"; drops are
    # counted in the JSON instead.
    logging.getLogger("cti.bus").setLevel(logging.ERROR)

    url, database = await common.cached_demo_database(args.members, args.seed, fresh=args.fresh)
    db = make_engine(url)
    sessions = make_sessionmaker(db)
    sql = SqlCounter(db)
    raw_body = body_of(args.capture)
    per_replay = capture_callers(raw_body)
    inputs = {"unfiltered": raw_body, "filtered": filtered_body(raw_body, product_event_filter())}
    wanted_inputs = [name for name in args.inputs.split(",") if name]
    warm_replays = min(5, args.replays)
    # (label, input, replays, subscribers): warm-up first, then the runs alternating the inputs' order.
    plan: list[tuple[str, str, int, list[str] | None]] = [("warm-up", n, warm_replays, None) for n in wanted_inputs]
    for run in range(args.runs):
        order = wanted_inputs if run % 2 == 0 else wanted_inputs[::-1]
        plan += [("run", n, args.replays, None) for n in order]
    if args.profile:
        plan += [("profile", n, args.replays, None) for n in wanted_inputs]
    if args.ablation:
        plan += [("ablation", "unfiltered", args.replays, [])]
        plan += [("ablation", "filtered", args.replays, subset) for subset in ([], *([k] for k in SUBSCRIBERS))]
    numbers = []
    pbx_names: list[str] = []
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in wanted_inputs}
    profiles: dict[str, Any] = {}
    ablation: dict[str, Any] = {}
    shapes: dict[str, dict[str, Any]] = {}
    try:
        created = await ensure_agent_users(sessions, CAPTURE_AGENTS)
        common.log(f"bench users for {', '.join(CAPTURE_AGENTS)}: {created} created")
        needed = per_replay * sum(p[2] for p in plan)
        numbers = [n for _, n in await caller_numbers(sessions, needed, args.unknown_share, args.seed)]
        common.log(f"{len(numbers):,} distinct caller numbers ({args.unknown_share:.0%} unknown), one per call")
        settle_heap()  # as `cti serve` does once started
        next_replay = 1
        for index, (label, name, replays, subset) in enumerate(plan):
            parts = []
            for _ in range(replays):
                offset = (next_replay - 1) * per_replay
                parts.append(replay(inputs[name], next_replay, numbers[offset : offset + per_replay]))
                next_replay += 1
            stream = BANNER + b"".join(parts)
            chunks, expected = chunked(stream, READ_SIZE), linkedids(stream)
            pbx = f"bench-pl-{os.getpid()}-{index}"
            pbx_names.append(pbx)
            profiler = cProfile.Profile() if label == "profile" else None
            result = await one_run(
                sessions,
                url,
                chunks,
                expected,
                pbx,
                max_backlog=args.max_backlog,
                sql=sql,
                profiler=profiler,
                subscribers=subset,
            )
            await purge_bench_rows(sessions, [pbx], CAPTURE_AGENTS)
            what = name if subset is None else f"{name} with subscribers {subset or 'none'}"
            common.log(
                f"{label} {what}: {result['events_fed']:,} events, {result['calls']} calls in {result['wall_s']} s "
                f"= {result['events_per_s']:,} events/s, {result['calls_per_s']} calls/s; cpu "
                f"{result['cpu_ms_per_call']} ms/call (share {result['cpu_share']}), pg {result['pg_cpu_s']} s; "
                f"{result['sql']['per_call']} SQL/call; pops p99 {result['screen_pop'].get('p99_ms')} ms; "
                f"call log ok={result['call_log']['ok']}"
            )
            if label == "run":
                runs[name].append(result)
                shapes[name] = {"bytes_per_run": len(stream), "events_per_run": result["events_fed"]}
            elif label == "profile" and profiler is not None:
                profiles[name] = profile_report(profiler)
            elif label == "ablation":
                key = f"{name}: " + "+".join(subset or ["none (parse + tracker + bus only)"])
                ablation[key] = {
                    k: result[k] for k in ("events_per_s", "calls_per_s", "wall_s", "cpu_ms_per_call", "pg_cpu_s")
                } | {"sql_per_call": result["sql"]["per_call"]}
    finally:
        await purge_bench_rows(sessions, pbx_names, CAPTURE_AGENTS, drop_users=True)
        await db.dispose()

    all_ok = True
    results: dict[str, Any] = {}
    for name in wanted_inputs:
        each = runs[name]
        ok = all(r["call_log"]["ok"] for r in each) and all(
            s["failed"] == 0 and s["dropped"] == 0 for r in each for s in r["bus"].values()
        )
        all_ok = all_ok and ok
        events_per_s = _median(each, "events_per_s")
        results[name] = {
            "what": (
                "capture as recorded (read=all, no event filter)"
                if name == "unfiltered"
                else "manager.conf eventfilter of the CTI user applied: what production receives"
            ),
            **shapes[name],
            "calls_per_run": each[0]["calls"],
            "median": {
                "events_per_s": round(events_per_s),
                "calls_per_s": _median(each, "calls_per_s"),
                "wall_s": _median(each, "wall_s"),
                "feed_s": _median(each, "feed_s"),
                "drain_s": _median(each, "drain_s"),
                "cpu_ms_per_call": _median(each, "cpu_ms_per_call"),
                "cpu_share": _median(each, "cpu_share"),
                "pg_cpu_s": _median(each, "pg_cpu_s"),
                "sql_per_call": round(statistics.median(r["sql"]["per_call"] for r in each), 1),
                "screen_pop_p50_ms": round(statistics.median(r["screen_pop"]["p50_ms"] for r in each), 3),
                "screen_pop_p99_ms": round(statistics.median(r["screen_pop"]["p99_ms"] for r in each), 3),
                "ring_to_pop_p50_ms": round(statistics.median(r["ring_to_pop"].get("p50_ms", 0) for r in each), 3),
                "ring_to_pop_p99_ms": round(statistics.median(r["ring_to_pop"].get("p99_ms", 0) for r in each), 3),
            },
            "ratio_to_goal": round(events_per_s / GOAL_EVENTS_PER_S, 3),
            "goal_met": events_per_s >= GOAL_EVENTS_PER_S,
            "zero_lost_or_duplicated": ok,
            "each_run": each,
        }
        if name in profiles:
            results[name]["profile"] = profiles[name]
    output: dict[str, Any] = {
        "bench": "cti_pipeline",
        "database": {"engine": "postgresql", "members": args.members, **database},
        "capture": args.capture.name,
        "replays_per_run": args.replays,
        "calls_per_replay": per_replay,
        "unknown_caller_share": args.unknown_share,
        "runs": args.runs,
        "goal_events_per_s": GOAL_EVENTS_PER_S,
        "inputs": results,
    }
    if ablation:
        output["ablation"] = ablation
    output |= {
        "peak_rss_mib": common.peak_rss_mib(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": common.machine(),
    }
    common.emit(output)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
