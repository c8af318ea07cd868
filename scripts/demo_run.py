"""The demo: a real Asterisk sandbox, the panel server with its CTI engine on the seeded CRM,
simulated callers and a simulated colleague.

Started by scripts/demo after the database is migrated and seeded. Open the printed address, sign in
as agent1 (or agent2) and press "Log in to queues" and "Ready": the browser softphone registers and
every few seconds a caller (a demo member's mobile, or now and then an unknown number) rings the 400
lines; the card pops while the phone rings. A simulated colleague on a SIP phone answers calls the
humans leave ringing for a while (so the queue keeps moving). The terminal shows each pop and outcome.
Ctrl-C (or --duration) stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
from pathlib import Path

from rich.console import Console
from sqlalchemy import select, update

sys.path.insert(0, str(Path(__file__).resolve().parent))

from asterisk_sandbox import BaresipPhone, Sandbox

from agent_panel.server import start_panel
from crm_core.db import make_engine, make_sessionmaker, transaction
from crm_core.demo import ensure_demo_users
from crm_core.demo_loyalty import seed_loyalty
from crm_core.demo_service import seed_service_desk
from crm_core.members.models import Member
from crm_core.security.models import User
from crm_core.settings import Settings
from cti.calls.events import CallEnded, DomainEvent
from cti.engine import CtiEngine
from cti.screenpop import ScreenPop

console = Console()
DIDS = ("4008001234", "4008001235")
BROWSER_SEATS = {"agent1": "webrtc2001", "agent2": "webrtc2002"}
ROBOT_SEATS = ("agent1001",)


def show(event: DomainEvent) -> None:
    if isinstance(event, ScreenPop) and not event.partial:
        member = event.member["profile"] if event.member else None
        who = (
            "[dim]a simulated seat with no CRM user: the number only[/]"
            if event.user_id is None
            else f"[bold]{member['name']}[/] {member['member_no']} ({member['member_type']})"
            if member
            else f"{len(event.candidates)} candidates"
            if event.candidates
            else "[yellow]unknown caller[/]"
        )
        console.print(
            f"[cyan]ringing[/] {event.agent} ← {event.caller_number} via {event.dnis}/{event.queue}: {who} "
            f"[dim]({event.lookup_ms:.1f} ms)[/]"
        )
    elif isinstance(event, CallEnded):
        colour = {"answered": "green", "abandoned": "red"}.get(event.outcome, "yellow")
        console.print(
            f"[{colour}]{event.outcome}[/] {event.caller_number} → {event.answered_by or '-'} "
            f"wait {event.wait_seconds:.0f}s talk {event.talk_seconds:.0f}s"
        )


async def agent_loop(phone: BaresipPhone, rng: random.Random, ring_seconds: tuple[float, float]) -> None:
    """Answer about four calls in five after `ring_seconds` of ringing (a human in the browser is
    offered the same calls and usually answers first); talk 5–12 s."""
    while True:
        mark = phone.mark()
        await phone.wait_for_event("CALL_INCOMING", since=mark, timeout=3600)
        if rng.random() < 0.2:
            continue  # let this one ring out: the caller abandons and a callback appears
        await asyncio.sleep(rng.uniform(*ring_seconds))
        with contextlib.suppress(Exception):
            await phone.accept()
            await asyncio.sleep(rng.uniform(5, 12))
            await phone.hangup()


async def caller_loop(engine: CtiEngine, numbers: list[str], rng: random.Random, interval: float) -> None:
    seq = 0
    while True:
        seq += 1
        number = rng.choice(numbers) if rng.random() < 0.85 else f"1390000{rng.randint(0, 9999):04d}"
        await engine.ami.send_action(
            "Originate",
            {
                "Channel": f"Local/{rng.choice(DIDS)}@from-customers",
                "Context": "load-generator",
                "Exten": str(rng.randint(15, 40)),
                "Priority": "1",
                "CallerID": f"<{number}>",
                "Async": "true",
            },
        )
        await asyncio.sleep(rng.expovariate(1 / interval))


async def main(duration: float | None, interval: float, robots: int, port: int) -> None:
    settings = Settings()
    await ensure_demo_users(settings)
    db = make_engine(settings.database_url)
    sessions = make_sessionmaker(db)
    await seed_service_desk(sessions)  # knowledge base, message templates, a few service requests
    await seed_loyalty(sessions)  # tiers, catalogue, earning rules, some purchases
    async with transaction(sessions) as session:
        for username, endpoint in BROWSER_SEATS.items():
            await session.execute(update(User).where(User.username == username).values(agent_endpoint=endpoint))
        numbers = list(
            (
                await session.execute(select(Member.mobile_e164).where(Member.mobile_e164.is_not(None)).limit(200))
            ).scalars()
        )
    numbers = [n.removeprefix("+86") for n in numbers if n]
    console.print("[bold]member-cti demo[/]: starting the Asterisk sandbox …")
    sandbox = Sandbox.up(agents=len(ROBOT_SEATS), customers=1, instance="demo", wrapup_seconds=5)
    engine = None
    runner = None
    try:
        st = sandbox.state
        ami = st["ami"]
        settings = settings.model_copy(
            update={
                "ami_host": ami["host"],
                "ami_port": ami["port"],
                "ami_user": ami["user"],
                "ami_secret": ami["secret"],
                "http_port": port,
                "sip_ws_url": st["http"]["ws_url"],
                "sip_domain": st["http"]["host"],
                "sip_secrets": {e: st["endpoints"][e]["secret"] for e in BROWSER_SEATS.values()},
                # MixMonitor names its files inside the sandbox's chroot; the recording worker reads them here.
                "recordings_source_map": {st["recordings_dir_chroot"]: st["recordings_dir"]},
            }
        )
        engine = CtiEngine(settings, sessions)
        engine.bus.subscribe(show, (ScreenPop, CallEnded), name="demo-console")
        runner = await start_panel(settings, engine)
        await engine.ami.wait_connected(20)
        rng = random.Random(7)
        phones = [await sandbox.phone(name).connect() for name in ROBOT_SEATS[:robots]]
        for seat in ROBOT_SEATS[:robots]:
            await engine.agents.login(seat, name=f"模拟坐席 {seat[-4:]}")
        password = os.environ.get("CTI_DEMO_PASSWORD", "cti-demo-only")
        console.print(
            f"\n[bold green]Open http://127.0.0.1:{port}/[/] and sign in as [bold]agent1[/] (or agent2), "
            f"password [bold]{password}[/].\nPress 'Log in to queues', then 'Ready': calls start ringing in the "
            "browser within seconds.\nOther users: supervisor1, staff1, admin (same password). "
            f"AMI {ami['host']}:{ami['port']}, database {settings.database_url}. Ctrl-C stops.\n"
        )
        tasks = [asyncio.create_task(agent_loop(p, rng, (8.0, 14.0))) for p in phones]
        tasks.append(asyncio.create_task(caller_loop(engine, numbers, rng, interval)))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration)
        for task in tasks:
            task.cancel()
        for phone in phones:
            await phone.close()
    finally:
        if runner is not None:
            await runner.cleanup()  # stops the engine too
        elif engine is not None:
            await engine.stop()
        sandbox.down(purge=True)
        await db.dispose()
    console.print("demo stopped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--interval", type=float, default=12.0, help="mean seconds between new callers")
    parser.add_argument("--robots", type=int, default=1, choices=range(len(ROBOT_SEATS) + 1), help="simulated agents")
    parser.add_argument("--port", type=int, default=int(os.environ.get("CTI_HTTP_PORT", "8080")), help="panel port")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args.duration, args.interval, args.robots, args.port))
