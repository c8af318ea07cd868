"""Benchmark: what manager.conf's event filter saves the CTI server, measured on a real Asterisk.

Two AMI sessions watch the same scripted calls at the same time: the CTI user (with the
``eventfilter`` include list of asterisk-config/manager.conf) and the unfiltered diagnostic user
(``read = all``, no filter). Watching one set of calls from both sessions compares like with like:
running the calls twice would not give identical event streams anyway (RTCP timing, Uniqueids).

Scripted call (repeated ``--calls`` times): a customer phone dials 4008001234, the member-service
queue rings both agents (ringall), one accepts, they talk ``--talk`` seconds (long enough for RTCP
reports), the customer hangs up; then the bench waits until AMI is quiet. With ``--after-hours`` each
round also places one call into the after-hours branch (answered by Asterisk, prompt, hang-up).

Prints JSON (events and bytes per call for each session, per-type counts, reduction ratios); progress
goes to stderr.

    .venv/bin/python scripts/bench/ami_event_filter.py [--calls 3] [--talk 6] [--instance NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parents[1]
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from asterisk_sandbox import AmiClient, BaresipPhone, Sandbox, gather_closing  # noqa: E402

DID = "4008001234"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def wait_quiet(ami: AmiClient, quiet: float = 1.0, limit: float = 15.0) -> None:
    """Until no event arrived for ``quiet`` seconds: the trailing events of a call (Cdr, wrap-up
    QueueMemberStatus, late Hangups) belong to it."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        mark = ami.mark()
        try:
            await ami.wait_for_event(since=mark, timeout=quiet)
        except TimeoutError:
            return


async def answered_call(raw: AmiClient, customer: BaresipPhone, agents: list[BaresipPhone], talk: float) -> None:
    """One queue call: dial, first agent accepts, talk, customer hangs up."""
    since, cust_mark = raw.mark(), customer.mark()
    agent_marks = [a.mark() for a in agents]
    await customer.dial(DID)
    join = await raw.wait_for_event("QueueCallerJoin", since=since, timeout=10)
    agent = agents[0]
    await agent.wait_for_event("CALL_INCOMING", since=agent_marks[0], timeout=10)
    await agent.accept()
    await customer.wait_for_event("CALL_ESTABLISHED", since=cust_mark, timeout=10)
    await asyncio.sleep(talk)
    await customer.hangup()
    await raw.wait_for_event("Hangup", since=since, Uniqueid=join["Uniqueid"], timeout=10)


async def after_hours_call(raw: AmiClient, customer: BaresipPhone) -> None:
    """One call into the after-hours branch (switched on with the global CTI_FORCE_AFTER_HOURS)."""
    await raw.action("Setvar", {"Variable": "CTI_FORCE_AFTER_HOURS", "Value": "1"})
    try:
        since = raw.mark()
        await customer.dial(DID)
        await raw.wait_for_event("UserEvent", since=since, UserEvent="CtiAfterHours", timeout=10)
        await asyncio.sleep(1.0)
        await customer.hangup()
        await raw.wait_for_event("Hangup", since=since, timeout=10)
    finally:
        await raw.action("Setvar", {"Variable": "CTI_FORCE_AFTER_HOURS", "Value": "0"})


def summary(ami: AmiClient, since: int, bytes_before: int, calls: int) -> dict[str, Any]:
    events = ami.events[since:]
    nbytes = ami.event_bytes - bytes_before
    return {
        "events": len(events),
        "bytes": nbytes,
        "events_per_call": round(len(events) / calls, 1),
        "bytes_per_call": round(nbytes / calls),
        "event_types": dict(Counter(e.get("Event", "?") for e in events).most_common()),
    }


async def measure(sb: Sandbox, calls: int, talk: float, after_hours: bool) -> dict[str, Any]:
    filtered = await sb.ami()
    raw = await sb.ami(raw=True)
    customer = await sb.phone(sb.phones("customer")[0]).connect()
    agents = [await sb.phone(name).connect() for name in sb.phones("agent")]
    try:
        await wait_quiet(raw)
        start_f, start_r = filtered.mark(), raw.mark()
        bytes_f, bytes_r = filtered.event_bytes, raw.event_bytes
        placed = 0
        for i in range(calls):
            log(f"call {i + 1}/{calls}: queue call, {talk:g} s talk")
            await answered_call(raw, customer, agents, talk)
            placed += 1
            if after_hours:
                log(f"call {i + 1}/{calls}: after-hours call")
                await after_hours_call(raw, customer)
                placed += 1
            await wait_quiet(raw)
        # Setvar responses are not events; the raw session's own actions add no events to either side.
        f = summary(filtered, start_f, bytes_f, placed)
        r = summary(raw, start_r, bytes_r, placed)
        return {
            "scenario": {
                "calls": placed,
                "queue_calls": calls,
                "after_hours_calls": calls if after_hours else 0,
                "talk_seconds": talk,
                "agents_ringing": len(agents),
                "did": DID,
            },
            "filtered": f,
            "unfiltered": r,
            "reduction": {
                "events_ratio": round(r["events"] / max(1, f["events"]), 2),
                "bytes_ratio": round(r["bytes"] / max(1, f["bytes"]), 2),
                "events_saved_pct": round(100 * (1 - f["events"] / max(1, r["events"])), 1),
                "bytes_saved_pct": round(100 * (1 - f["bytes"] / max(1, r["bytes"])), 1),
            },
            "dropped_event_types": sorted(set(r["event_types"]) - set(f["event_types"])),
        }
    finally:
        await gather_closing(filtered, raw, customer, *agents)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--talk", type=float, default=6.0, help="seconds of conversation per call")
    parser.add_argument("--after-hours", action="store_true", help="also place after-hours calls")
    parser.add_argument("--instance", help="use this running sandbox instead of starting one")
    args = parser.parse_args()
    if args.instance:
        sb = Sandbox.attach(args.instance)
        owned = False
    else:
        log("starting a sandbox (2 agents, 1 customer, wrap-up 0 s)")
        sb = Sandbox.up(agents=2, customers=1, wrapup_seconds=0, instance="bench-filter")
        owned = True
    try:
        result = asyncio.run(measure(sb, args.calls, args.talk, args.after_hours))
        result["asterisk"] = sb.cli("core show version").strip()
    finally:
        if owned:
            sb.down(purge=True)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
