"""Benchmark: AMI parse throughput of cti.ami.protocol.AmiParser vs panoramisk, on the real captures.

Both parsers get the same byte stream (every capture's messages, concatenated behind one banner, as one
long AMI session) cut into the same chunks, as TCP reads would deliver them. panoramisk runs its real
per-chunk path, ``AMIProtocol.data_received`` (decode the chunk, split, ``Message.from_line``,
``handle_message``, ``Manager.dispatch``-like callback); ours runs ``AmiParser.feed`` plus the same minimal
routing (ActionID lookup, event callback). Runs alternate between the two in one process; medians are
reported. Prints JSON.

    .venv/bin/python scripts/bench/ami_parse.py [--runs 15] [--chunk-sizes 512,4096,65536]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from panoramisk.ami_protocol import AMIProtocol

from cti.ami.protocol import AmiParser

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CAPTURES = REPO.parent / "shared" / "fixtures" / "ami"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def load_stream(captures: Path) -> bytes:
    """One session's worth of bytes: a single banner, then every capture's messages."""
    bodies = []
    for path in sorted(captures.glob("*.ami")):
        data = path.read_bytes()
        bodies.append(data[data.index(b"\n") + 1 :] if data.startswith(b"Asterisk Call Manager/") else data)
    if not bodies:
        raise SystemExit(f"no *.ami captures under {captures}")
    return BANNER + b"".join(bodies)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


class _DummyTransport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _CountingFactory:
    """Stands in for panoramisk's Manager: the protocol calls ``dispatch`` for each event."""

    save_stream = None
    forgetable_actions = ("ping", "login")

    def __init__(self) -> None:
        self.events = 0

    def dispatch(self, message: Any) -> None:
        self.events += 1

    def connection_lost(self, exc: Any) -> None:
        pass


def run_panoramisk(chunks: list[bytes]) -> int:
    protocol = AMIProtocol()
    protocol.connection_made(_DummyTransport())
    factory = _CountingFactory()
    protocol.factory = factory
    protocol.encoding = "utf8"  # Manager's default; ascii would drop every non-ASCII byte
    for chunk in chunks:
        protocol.data_received(chunk)
    return factory.events


def run_ours(chunks: list[bytes]) -> int:
    parser = AmiParser()
    pending: dict[str, object] = {}  # the client's ActionID -> pending action table (empty here)
    events = 0

    def dispatch(message: object) -> None:
        nonlocal events
        events += 1

    for chunk in chunks:
        for message in parser.feed(chunk):
            action_id = message.get("ActionID")
            if action_id is not None and action_id in pending:
                continue
            if "Event" in message:
                dispatch(message)
    return events


def measure(function: Callable[[list[bytes]], int], chunks: list[bytes]) -> tuple[float, int]:
    # CPU time of this process: on a shared machine, wall-clock time would also count other processes.
    gc.collect()
    start = time.process_time()
    events = function(chunks)
    return time.process_time() - start, events


def bench(data: bytes, chunk_size: int, runs: int, messages: int) -> dict[str, Any]:
    chunks = chunked(data, chunk_size)
    times: dict[str, list[float]] = {"ours": [], "panoramisk": []}
    counts: dict[str, int] = {}
    runners = {"ours": run_ours, "panoramisk": run_panoramisk}
    for runner in runners.values():  # warm-up (imports, caches)
        measure(runner, chunks)
    for _ in range(runs):
        for name, runner in runners.items():  # interleaved: both see the same machine state
            elapsed, counts[name] = measure(runner, chunks)
            times[name].append(elapsed)
    result: dict[str, Any] = {"chunk_size": chunk_size, "chunks": len(chunks)}
    for name in runners:
        median = statistics.median(times[name])
        result[name] = {
            "median_s": round(median, 5),
            "mb_per_s": round(len(data) / median / 1e6, 2),
            "messages_per_s": round(messages / median),
            "events": counts[name],
        }
    result["ratio"] = round(result["ours"]["mb_per_s"] / result["panoramisk"]["mb_per_s"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captures", type=Path, default=DEFAULT_CAPTURES)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--chunk-sizes", default="512,4096,65536", help="bytes per simulated TCP read")
    args = parser.parse_args(argv)
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    logging.disable(logging.WARNING)  # neither parser may spend time logging during the timing
    data = load_stream(args.captures)
    all_messages = AmiParser().feed(data)
    ours_events = sum(message.is_event for message in all_messages)
    results = [bench(data, int(size), args.runs, len(all_messages)) for size in args.chunk_sizes.split(",")]
    for result in results:
        # Same input, same events: otherwise the comparison would be meaningless.
        assert result["ours"]["events"] == result["panoramisk"]["events"] == ours_events, result
    report = {
        "input": {
            "captures": str(args.captures),
            "bytes": len(data),
            "messages": len(all_messages),
            "events": ours_events,
        },
        "runs": args.runs,
        "timer": "time.process_time (CPU seconds), median of runs",
        "python": platform.python_version(),
        "results": results,
        "min_ratio": min(r["ratio"] for r in results),
        "goal_ratio": 2.0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
