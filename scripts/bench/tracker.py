"""Benchmark: AMI parse + call tracker throughput, and the tracker's per-event cost against live calls.

Input: the real burst capture (shared/fixtures/ami/10-burst-20-calls.ami: 20 queue calls, 2,890 AMI
messages, unfiltered: VarSet, Newexten, TestEvent...) replayed ``--replays`` times as one long AMI
session. Each replay's Uniqueids/Linkedids (and Timestamps) are shifted by 1000 s per replay, so
every replay's 20 calls are new calls to the tracker, not duplicates it would ignore.

Figures (median of ``--runs`` runs, each with a fresh parser and tracker):

* ``parse``: ``AmiParser.feed`` over the stream cut in ``--chunk``-byte reads;
* ``track``: ``CallTracker.feed`` over the already parsed messages;
* ``parse_and_track``: both, per chunk, as the AMI reader runs them.

Scaling: with 1x/10x/100x (``--live``) the burst's peak of live calls already in the tracker (copies
of the burst stopped at its busiest moment, with their own agents), one more replay is timed; its cost
per AMI message should not grow with the live calls (every lookup is by Uniqueid/Linkedid).

The clock handed to the tracker is the (shifted) Timestamp header, read here by the harness only.
Prints JSON on stdout, progress on stderr.

    .venv/bin/python scripts/bench/tracker.py [--replays 50] [--runs 5] [--chunk 65536] [--live 1,10,100]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as `python scripts/bench/tracker.py` from anywhere
    sys.path.insert(0, str(REPO))

from cti.ami.protocol import AmiMessage, AmiParser  # noqa: E402
from cti.calls.events import CallEnded  # noqa: E402
from cti.calls.tracker import CallTracker  # noqa: E402

CAPTURE = REPO.parent / "shared" / "fixtures" / "ami" / "10-burst-20-calls.ami"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
_EPOCH_ID = re.compile(rb"\b(17\d{8})\.(\d+)\b")  # Uniqueid, Linkedid, Timestamp: <epoch>.<n>
_AGENT = re.compile(rb"agent100([12])")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


_FULLY_BOOTED = re.compile(rb"Event: FullyBooted\r\n.*?\r\n\r\n", re.S)


def body_of(path: Path) -> bytes:
    """The capture without its banner and without FullyBooted: a shifted copy of it would look like
    an Asterisk restart to the tracker (boot time = now - Uptime moved on) and end every live call."""
    data = path.read_bytes()
    data = data[data.index(b"\n") + 1 :] if data.startswith(b"Asterisk Call Manager/") else data
    return _FULLY_BOOTED.sub(b"", data)


def shifted(body: bytes, replay: int, rename_agents: bool = False) -> bytes:
    """The capture with every <epoch>.<n> id moved by ``replay`` x 1000 s (distinct calls, same
    order of age); optionally with agents of its own (agent00071001...) for background traffic."""
    offset = replay * 1000

    def move(m: re.Match[bytes]) -> bytes:
        return b"%d.%s" % (int(m.group(1)) + offset, m.group(2))

    out = _EPOCH_ID.sub(move, body)
    if rename_agents:
        out = _AGENT.sub(lambda m: b"agent%04d100%s" % (replay, m.group(1)), out)
    return out


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def clocked(messages: Sequence[Mapping[str, str]]) -> list[tuple[float, Mapping[str, str]]]:
    now = next((float(m["Timestamp"]) for m in messages if m.get("Timestamp")), 0.0)
    out = []
    for msg in messages:
        stamp = msg.get("Timestamp")
        if stamp:
            now = float(stamp)
        out.append((now, msg))
    return out


def run_once(chunks: list[bytes]) -> dict[str, Any]:
    """One timed run of each figure, fresh parser and tracker each."""
    gc.collect()
    started = time.perf_counter()
    messages: list[AmiMessage] = []
    parser = AmiParser()
    for chunk in chunks:
        messages.extend(parser.feed(chunk))
    parse_s = time.perf_counter() - started

    timeline = clocked(messages)
    gc.collect()
    tracker = CallTracker()
    feed = tracker.feed
    domain = 0
    ended = 0
    started = time.perf_counter()
    for now, msg in timeline:
        out = feed(msg, now)
        if out:
            domain += len(out)
            ended += sum(1 for e in out if isinstance(e, CallEnded))
    track_s = time.perf_counter() - started

    gc.collect()
    parser = AmiParser()
    tracker = CallTracker()
    feed = tracker.feed
    now = timeline[0][0]
    started = time.perf_counter()
    for chunk in chunks:
        for msg in parser.feed(chunk):
            stamp = msg.get("Timestamp")
            if stamp:
                now = float(stamp)
            feed(msg, now)
    both_s = time.perf_counter() - started
    n = len(messages)
    return {
        "messages": n,
        "domain_events": domain,
        "calls_ended": ended,
        "parse_s": parse_s,
        "track_s": track_s,
        "parse_and_track_s": both_s,
        "parse_msgs_per_s": n / parse_s,
        "track_msgs_per_s": n / track_s,
        "parse_and_track_msgs_per_s": n / both_s,
    }


def busiest_cut(messages: Sequence[Mapping[str, str]]) -> tuple[int, int]:
    """Index after which the burst has the most live calls, and that number."""
    tracker = CallTracker()
    best = (0, 0)
    for index, (now, msg) in enumerate(clocked(messages)):
        tracker.feed(msg, now)
        if tracker.live_calls > best[1]:
            best = (index + 1, tracker.live_calls)
    return best


def scaling(body: bytes, factors: Sequence[int], measured_replays: int, runs: int) -> list[dict[str, Any]]:
    """ns per AMI message of ``measured_replays`` fresh replays fed to a tracker already holding
    ``factor`` x the burst's peak of live calls. The factors alternate inside each run (in a rotating
    order) so that load from elsewhere on the machine affects them alike."""
    parsed = AmiParser(expect_banner=False).feed(body)
    cut, peak = busiest_cut(parsed)
    log(f"scaling: the burst peaks at {peak} live calls after message {cut}")
    measured = [
        clocked(AmiParser(expect_banner=False).feed(shifted(body, 10_000 + r))) for r in range(measured_replays)
    ]
    count = sum(len(t) for t in measured)
    backgrounds = [
        clocked(AmiParser(expect_banner=False).feed(shifted(body, 1 + copy, rename_agents=True))[:cut])
        for copy in range(max(factors))
    ]
    samples: dict[int, list[float]] = {f: [] for f in factors}
    live: dict[int, int] = {}
    for run in range(runs):
        shift = run % len(factors)
        for factor in [*factors[shift:], *factors[:shift]]:
            tracker = CallTracker(recent_limit=1_000_000)
            for background in backgrounds[:factor]:  # copies stopped at the busiest moment
                for now, msg in background:
                    tracker.feed(msg, now)
            live[factor] = tracker.live_calls
            feed = tracker.feed
            gc.collect()
            started = time.perf_counter()
            for timeline in measured:
                for now, msg in timeline:
                    feed(msg, now)
            samples[factor].append((time.perf_counter() - started) / count * 1e9)
    base = statistics.median(samples[factors[0]])
    results: list[dict[str, Any]] = []
    for factor in factors:
        median = statistics.median(samples[factor])
        results.append(
            {
                "factor": factor,
                "live_calls_before": live[factor],
                "messages_timed": count,
                "ns_per_message_median": round(median, 1),
                "ns_per_message_runs": [round(x, 1) for x in samples[factor]],
                "relative_to_1x": round(median / base, 2),
            }
        )
        log(f"scaling x{factor}: {live[factor]} live calls, {median:.0f} ns/message")
    return results


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def main() -> int:
    args = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    args.add_argument("--replays", type=int, default=50)
    args.add_argument("--runs", type=int, default=5)
    args.add_argument("--chunk", type=int, default=65536)
    args.add_argument("--live", default="1,10,100", help="background live calls as multiples of the burst's peak")
    args.add_argument("--capture", type=Path, default=CAPTURE)
    opts = args.parse_args()

    body = body_of(opts.capture)
    stream = BANNER + b"".join(shifted(body, r) for r in range(opts.replays))
    chunks = chunked(stream, opts.chunk)
    log(f"{opts.capture.name} x {opts.replays}: {len(stream):,} bytes in {len(chunks)} reads of {opts.chunk}")
    runs = []
    for i in range(opts.runs):
        runs.append(run_once(chunks))
        log(f"run {i + 1}: {runs[-1]['parse_and_track_msgs_per_s']:,.0f} messages/s parse+track")

    def med(key: str) -> float:
        return round(float(statistics.median(float(r[key]) for r in runs)), 4)

    factors = [int(x) for x in opts.live.split(",") if x]
    result = {
        "bench": "tracker",
        "capture": opts.capture.name,
        "replays": opts.replays,
        "chunk_bytes": opts.chunk,
        "runs": opts.runs,
        "messages": runs[0]["messages"],
        "calls_ended": runs[0]["calls_ended"],
        "domain_events": runs[0]["domain_events"],
        "median": {
            "parse_msgs_per_s": round(med("parse_msgs_per_s")),
            "track_msgs_per_s": round(med("track_msgs_per_s")),
            "parse_and_track_msgs_per_s": round(med("parse_and_track_msgs_per_s")),
            "parse_s": med("parse_s"),
            "track_s": med("track_s"),
            "parse_and_track_s": med("parse_and_track_s"),
            "track_us_per_call": round(med("track_s") / runs[0]["calls_ended"] * 1e6, 1),
        },
        "per_run_parse_and_track_msgs_per_s": [round(r["parse_and_track_msgs_per_s"]) for r in runs],
        "scaling": scaling(body, factors, measured_replays=5, runs=opts.runs),
        "peak_rss_mib": peak_rss_mib(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        },
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
