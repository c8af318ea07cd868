"""WebSocket hub under load: N authenticated panel clients on one server process.

Figure (issue: agent panel): 2,000 authenticated WebSocket clients on one server process, event
delivery p99 < 100 ms, and the server's memory.

The server is the real panel application (agent_panel.app.create_app, auth middleware, hub) in a
child process of its own, on a throw-away PostgreSQL database with N agent users and a signed-in
session each (inserted directly: N argon2 logins would only measure argon2). The CTI engine is built
but not connected to a PBX: the child publishes the domain events itself, on the engine's bus, at a
fixed rate: targeted agent-state events (each to one agent) and banners (to every client). Each event
carries its publish time; the clients (this process, asyncio) record receive time - publish time.
That includes the client's own scheduling, so the figures are an upper bound of the hub's delay.

Usage: .venv/bin/python scripts/bench/ws_fanout.py [--clients 2000] [--seconds 20] [--rate 500]
       [--banners 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import create_pg_database, drop_pg_database, emit, latency_summary, log, machine, median_of

DB_NAME = "cti_bench_ws_fanout"


# ---------------------------------------------------------------------------- server (child process)
async def serve(db_url: str, port: int, clients: int, seconds: float, rate: float, banners: float) -> None:
    from aiohttp import web

    from agent_panel.app import create_app
    from agent_panel.keys import HUB
    from crm_core.db import make_engine, make_sessionmaker
    from crm_core.settings import Settings
    from cti.calls.events import AgentStateChanged
    from cti.engine import CtiEngine

    settings = Settings(database_url=db_url, http_port=port)
    db = make_engine(db_url)
    engine = CtiEngine(settings, make_sessionmaker(db))
    app = create_app(settings, engine.sessions, engine, start_engine=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    hub = app[HUB]
    written = instrument_writes(hub)
    me = psutil.Process()
    print(json.dumps({"ready": True, "rss_mib": me.memory_info().rss / 2**20}), flush=True)
    # Wait for "go" on stdin: every client is connected then.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    connected_rss = me.memory_info().rss / 2**20
    rng = random.Random(1)
    endpoints = [f"bench{i:05d}" for i in range(clients)]
    started = time.monotonic()
    sent_targeted = sent_banners = 0
    next_banner = started
    peak = connected_rss
    while (now := time.monotonic()) - started < seconds:
        due = int((now - started) * rate) - sent_targeted
        for _ in range(max(0, due)):
            endpoint = rng.choice(endpoints)
            engine.bus.publish(
                AgentStateChanged(
                    at=time.time(),
                    agent=endpoint,
                    interface=f"PJSIP/{endpoint}",
                    name=endpoint,
                    state=rng.choice(("ready", "paused", "on_call")),
                    previous_state=None,
                    paused=False,
                    pause_reason=None,
                    queues=("member-service",),
                    paused_queues=(),
                    available=True,
                    linkedid=None,
                )
            )
            sent_targeted += 1
        if banners > 0 and now >= next_banner:
            hub.post_banner(f"bench {sent_banners}", "bench")
            sent_banners += 1
            next_banner += 1 / banners
        peak = max(peak, me.memory_info().rss / 2**20)
        await asyncio.sleep(0.005)
    await asyncio.sleep(1.0)
    peak = max(peak, me.memory_info().rss / 2**20)
    print(
        json.dumps(
            {
                "done": True,
                "sent_targeted": sent_targeted,
                "sent_banners": sent_banners,
                "rss_connected_mib": round(connected_rss, 1),
                "rss_peak_mib": round(peak, 1),
                "hub": hub.stats(),
                "server_write_latency_ms": server_latency(written),
            }
        ),
        flush=True,
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await runner.cleanup()
    await db.dispose()


def instrument_writes(hub: Any) -> list[float]:
    """Server side of the figure: publish time → the frame written to the client's socket (every 8th
    frame is parsed for its publish time, to keep the probe's own cost small)."""
    from agent_panel import ws as hub_module

    samples: list[float] = []
    offer = hub_module.Connection.offer
    counter = 0

    def timed_offer(conn: Any, text: str) -> bool:
        nonlocal counter
        ok = offer(conn, text)
        counter += 1
        if ok and counter % 8 == 0 and '"at":' in text:
            at = json.loads(text)["data"].get("at")
            if isinstance(at, float):
                samples.append(time.time() - at)
        return ok

    hub_module.Connection.offer = timed_offer  # type: ignore[method-assign]
    return samples


def server_latency(samples: list[float]) -> dict[str, float] | None:
    return latency_summary(samples) if samples else None


# ---------------------------------------------------------------------------- set-up
async def prepare(clients: int) -> tuple[str, list[str]]:
    from sqlalchemy import insert

    from crm_core.db import make_engine, make_sessionmaker, transaction
    from crm_core.security.models import User, WebSession
    from crm_core.security.passwords import hash_password_sync
    from crm_core.security.web_sessions import token_hash

    url = await create_pg_database(DB_NAME)
    db = make_engine(url)
    tokens = [os.urandom(24).hex() for _ in range(clients)]
    password = hash_password_sync("bench-only")
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    async with transaction(make_sessionmaker(db)) as session:
        await session.execute(
            insert(User),
            [
                {
                    "id": i + 1,
                    "username": f"bench{i:05d}",
                    "display_name": f"bench {i}",
                    "password_hash": password,
                    "role": "agent",
                    "agent_endpoint": f"bench{i:05d}",
                    "active": True,
                    "failed_logins": 0,
                    "created_at": dt.datetime.now(dt.UTC),
                }
                for i in range(clients)
            ],
        )
        await session.execute(
            insert(WebSession),
            [
                {
                    "token_hash": token_hash(token),
                    "user_id": i + 1,
                    "csrf_token": "x",
                    "created_at": dt.datetime.now(dt.UTC),
                    "expires_at": expires,
                }
                for i, token in enumerate(tokens)
            ],
        )
    await db.dispose()
    return url, tokens


# ---------------------------------------------------------------------------- clients
class Recorder:
    def __init__(self) -> None:
        self.targeted: list[float] = []
        self.banner: list[float] = []
        self.gaps = 0
        self.closed_by_server = 0


async def client(base: str, token: str, rec: Recorder, stop: asyncio.Event, ready: asyncio.Event) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    jar.update_cookies({"cti_session": token})
    async with aiohttp.ClientSession(cookie_jar=jar) as http, http.ws_connect(f"{base}/ws", heartbeat=None) as ws:
        last = None
        first = True
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if first:
                first = False
                ready.set()
                last = frame.get("seq")
                continue
            seq = frame.get("seq")
            if last is not None and seq is not None and seq != last + 1:
                rec.gaps += 1
            last = seq
            now = time.time()
            if frame["type"] == "agent_state":
                rec.targeted.append(now - frame["data"]["at"])
            elif frame["type"] == "banner":
                rec.banner.append(now - frame["data"]["at"])
            if stop.is_set():
                break
        if ws.close_code and ws.close_code >= 4000:
            rec.closed_by_server += 1


async def one_run(args: argparse.Namespace, url: str, tokens: list[str]) -> dict[str, Any]:
    port = 18000 + random.randint(0, 999)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        url,
        str(port),
        str(args.clients),
        str(args.seconds),
        str(args.rate),
        str(args.banners),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    hello = json.loads(await proc.stdout.readline())
    # The clients run in --client-procs processes of their own: one Python process reading 2,000
    # sockets is itself slower than the server's fan-out and would be what the figure measured.
    procs = []
    t0 = time.monotonic()
    share = -(-len(tokens) // args.client_procs)
    for i in range(args.client_procs):
        part = tokens[i * share : (i + 1) * share]
        client_proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--clients-of", str(port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=256 * 1024 * 1024,
        )  # fmt: skip
        assert client_proc.stdin is not None and client_proc.stdout is not None
        client_proc.stdin.write(("\n".join(part) + "\n\n").encode())
        await client_proc.stdin.drain()
        procs.append(client_proc)
    for client_proc in procs:
        assert client_proc.stdout is not None
        await asyncio.wait_for(client_proc.stdout.readline(), timeout=120)  # "connected"
    connect_s = time.monotonic() - t0
    log(f"{len(tokens)} clients connected in {connect_s:.1f} s; publishing for {args.seconds} s")
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    done = json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout=args.seconds + 60))
    rec = Recorder()
    for client_proc in procs:
        assert client_proc.stdin is not None and client_proc.stdout is not None
        client_proc.stdin.write(b"stop\n")
        await client_proc.stdin.drain()
        part_result = json.loads(await asyncio.wait_for(client_proc.stdout.readline(), timeout=60))
        rec.targeted += part_result["targeted"]
        rec.banner += part_result["banner"]
        rec.gaps += part_result["gaps"]
        rec.closed_by_server += part_result["closed_by_server"]
        await client_proc.wait()
    proc.stdin.write(b"stop\n")
    await proc.stdin.drain()
    await proc.wait()
    result: dict[str, Any] = {
        "clients": len(tokens),
        "connect_all_s": round(connect_s, 2),
        "targeted": latency_summary(rec.targeted) if rec.targeted else None,
        "banner": latency_summary(rec.banner) if rec.banner else None,
        "received_targeted": len(rec.targeted),
        "received_banner_frames": len(rec.banner),
        "sent_targeted": done["sent_targeted"],
        "sent_banners": done["sent_banners"],
        "sequence_gaps": rec.gaps,
        "cut_off_by_server": rec.closed_by_server,
        "server_rss_idle_mib": round(hello["rss_mib"], 1),
        "server_rss_connected_mib": done["rss_connected_mib"],
        "server_rss_peak_mib": done["rss_peak_mib"],
        "hub": done["hub"],
        "server_write_latency_ms": done["server_write_latency_ms"],
    }
    all_latencies = rec.targeted + rec.banner
    result["all_p99_ms"] = latency_summary(all_latencies)["p99_ms"] if all_latencies else None
    return result


async def clients_of(port: int) -> None:
    """Child process: connect the tokens read from stdin, say "connected", record until "stop"."""
    loop = asyncio.get_running_loop()
    tokens = []
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        tokens.append(line)
    base = f"http://127.0.0.1:{port}"
    rec = Recorder()
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in tokens]
    tasks = []
    for token, ready in zip(tokens, readies, strict=True):
        tasks.append(asyncio.create_task(client(base, token, rec, stop, ready)))
        if len(tasks) % 100 == 0:
            await asyncio.sleep(0.05)  # a login storm, but not a SYN flood
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), timeout=120)
    print("connected", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(
        json.dumps(
            {"targeted": rec.targeted, "banner": rec.banner, "gaps": rec.gaps, "closed_by_server": rec.closed_by_server}
        ),
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    log(f"preparing {args.clients} users and sessions in {DB_NAME}")
    url, tokens = await prepare(args.clients)
    try:
        runs = []
        for i in range(args.runs):
            log(f"run {i + 1}/{args.runs}")
            runs.append(await one_run(args, url, tokens))
        emit(
            {
                "bench": "ws_fanout",
                "goal": "p99 delivery < 100 ms with 2,000 clients",
                "clients": args.clients,
                "rate_targeted_per_s": args.rate,
                "banners_per_s": args.banners,
                "client_processes": args.client_procs,
                "seconds": args.seconds,
                "median_all_p99_ms": median_of(runs, "all_p99_ms"),
                "median_server_rss_peak_mib": median_of(runs, "server_rss_peak_mib"),
                "median_connect_all_s": median_of(runs, "connect_all_s"),
                "runs": runs,
                "machine": machine(),
                "load_avg": os.getloadavg(),
                "note": "client latencies include the client process's own scheduling (upper bound)",
            }
        )
    finally:
        await drop_pg_database(DB_NAME)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--clients-of":
        asyncio.run(clients_of(int(sys.argv[2])))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        _, _, db_url, port, n, seconds, rate, banners = sys.argv
        asyncio.run(serve(db_url, int(port), int(n), float(seconds), float(rate), float(banners)))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=500.0, help="targeted events per second")
    parser.add_argument("--banners", type=float, default=2.0, help="broadcasts to every client per second")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--client-procs", type=int, default=2, help="processes the clients are spread over")
    asyncio.run(main(parser.parse_args()))
