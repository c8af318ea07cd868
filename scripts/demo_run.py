"""The demo: a real Asterisk sandbox, the CTI engine on the seeded CRM, simulated callers and agents.

Started by scripts/demo after the database is migrated and seeded. Every few seconds a caller (a demo
member's mobile, or now and then an unknown number) rings the 400 lines; the simulated agents' phones
answer most calls after a short ring. The terminal shows what an agent's panel would: the screen pop
before answering, then the call-log outcome. Ctrl-C (or --duration) stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import sys
from pathlib import Path

from rich.console import Console
from sqlalchemy import select, update

sys.path.insert(0, str(Path(__file__).resolve().parent))

from asterisk_sandbox import BaresipPhone, Sandbox

from crm_core.db import make_engine, make_sessionmaker, transaction
from crm_core.demo import ensure_demo_users
from crm_core.members.models import Member
from crm_core.security.models import User
from crm_core.settings import Settings
from cti.calls.events import CallEnded, DomainEvent
from cti.engine import CtiEngine
from cti.screenpop import ScreenPop

console = Console()
DIDS = ("4008001234", "4008001235")
AGENT_SEATS = {"agent1": "agent1001", "agent2": "agent1002"}


def show(event: DomainEvent) -> None:
    if isinstance(event, ScreenPop):
        member = event.member["profile"] if event.member else None
        who = (
            f"[bold]{member['name']}[/] {member['member_no']} ({member['member_type']})"
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


async def agent_loop(phone: BaresipPhone, rng: random.Random) -> None:
    """Answer about four calls in five after 1–4 s of ringing; talk 5–12 s."""
    while True:
        mark = phone.mark()
        await phone.wait_for_event("CALL_INCOMING", since=mark, timeout=3600)
        if rng.random() < 0.2:
            continue  # let this one ring out: the caller abandons and a callback appears
        await asyncio.sleep(rng.uniform(1, 4))
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


async def main(duration: float | None, interval: float) -> None:
    settings = Settings()
    await ensure_demo_users(settings)
    db = make_engine(settings.database_url)
    sessions = make_sessionmaker(db)
    async with transaction(sessions) as session:
        for username, endpoint in AGENT_SEATS.items():
            await session.execute(update(User).where(User.username == username).values(agent_endpoint=endpoint))
        numbers = list(
            (
                await session.execute(select(Member.mobile_e164).where(Member.mobile_e164.is_not(None)).limit(200))
            ).scalars()
        )
    numbers = [n.removeprefix("+86") for n in numbers if n]
    console.print("[bold]member-cti demo[/]: starting the Asterisk sandbox …")
    sandbox = Sandbox.up(agents=2, customers=1, instance="demo", wrapup_seconds=3)
    engine = None
    try:
        ami = sandbox.state["ami"]
        engine = CtiEngine(
            settings.model_copy(
                update={
                    "ami_host": ami["host"],
                    "ami_port": ami["port"],
                    "ami_user": ami["user"],
                    "ami_secret": ami["secret"],
                }
            ),
            sessions,
        )
        engine.bus.subscribe(show, (ScreenPop, CallEnded), name="demo-console")
        await engine.start(wait=20)
        rng = random.Random(7)
        phones = [await sandbox.phone(name).connect() for name in ("agent1001", "agent1002")]
        console.print(
            f"AMI {ami['host']}:{ami['port']}, database {settings.database_url}. "
            "Simulated callers ring 4008001234 / 4008001235; Ctrl-C stops."
        )
        tasks = [asyncio.create_task(agent_loop(p, rng)) for p in phones]
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
        if engine is not None:
            await engine.stop()
        sandbox.down(purge=True)
        await db.dispose()
    console.print("demo stopped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--interval", type=float, default=6.0, help="mean seconds between new callers")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args.duration, args.interval))
