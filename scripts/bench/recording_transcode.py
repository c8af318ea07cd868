"""Benchmark: transcode + waveform peaks of one 5-minute call, on one core (goal < 1.5 s).

Input: a generated 8 kHz mono 16-bit WAV as MixMonitor writes it — speech-like: a voiced tone with
harmonics and noise, chopped into syllables and pauses (the same input for every run and variant).

Variants, each the whole job (decode, encode to mp3 32 kbit/s, fsync + rename, SHA-256, 1,000 peaks):

* ``pydub``: the pipeline's own path, ``recordings.audio.transcode`` (pydub parses the WAV in Python,
  hands the PCM to an ffmpeg child through a temp file, copies the result into place);
* ``ffmpeg_direct``: ffmpeg reads the WAV and writes the mp3 itself; peaks and SHA-256 the same way.
  The difference between the two is pydub's overhead (its temp-file round trips).

The process is pinned to one CPU with ``os.sched_setaffinity`` before anything runs; ffmpeg inherits
the pin. Median of ``--runs`` runs per variant; peak RSS of this process and of the largest child.

    .venv/bin/python scripts/bench/recording_transcode.py [--seconds 300] [--runs 7]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, machine, peak_rss_mib

from recordings.audio import file_digest, load_wav, peaks_of, transcode
from recordings.storage import fsync_dir

RATE = 8000
GOAL_SECONDS = 1.5


def speech_like_wav(path: Path, seconds: float, seed: int = 5) -> None:
    """Voiced syllables with pauses and a noise floor: an encoder works on it as on a real call.
    Made ten seconds at a time, so the bench's own peak RSS is not the generator's."""
    rng = np.random.default_rng(seed)
    total = int(seconds * RATE)
    phase0 = 0.0
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        for first in range(0, total, 10 * RATE):
            t = np.arange(first, min(total, first + 10 * RATE)) / RATE
            pitch = 140 + 40 * np.sin(2 * np.pi * 0.3 * t)  # an intonation contour
            phase = phase0 + 2 * np.pi * np.cumsum(pitch) / RATE
            phase0 = float(phase[-1])
            voice = sum(np.sin(k * phase) / k for k in range(1, 6)) + rng.normal(0, 0.05, t.size)
            syllables = (np.sin(2 * np.pi * 3.1 * t) + 0.6 * np.sin(2 * np.pi * 0.23 * t)) > 0
            signal = (voice * syllables + rng.normal(0, 0.01, t.size)) / 2.5 * 0.7
            w.writeframes((np.clip(signal, -1, 1) * 32767).astype(np.int16).tobytes())


def via_pydub(source: Path, target: Path) -> None:
    transcode(source, target, "mp3", "32k")


def via_ffmpeg_direct(source: Path, target: Path) -> None:
    part = target.with_name(f".{target.name}.part")
    argv = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-b:a", "32k", "-f", "mp3", str(part)]
    pid = os.posix_spawn("/usr/bin/ffmpeg", argv, os.environ)
    # A child's ru_maxrss starts from its parent's (the mm it was cloned from), so ffmpeg's own peak
    # is read from its /proc VmHWM while it runs.
    hwm_kib = 0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm_kib = max(hwm_kib, int(line.split()[1]))
        time.sleep(0.005)
    if status != 0:
        raise RuntimeError(f"ffmpeg failed: {status}")
    FFMPEG_RSS.append(hwm_kib / 1024)
    with part.open("rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, target)
    fsync_dir(target.parent)
    file_digest(target)
    peaks_of(load_wav(source))


FFMPEG_RSS: list[float] = []


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: on a pinned core under other load, the
    figure that does not count the time other processes had the core."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn: Callable[[Path, Path], None], source: Path, target: Path, runs: int) -> dict[str, object]:
    times, cpu = [], []
    for _ in range(runs):
        target.unlink(missing_ok=True)
        start, start_cpu = time.perf_counter(), cpu_seconds()
        fn(source, target)
        times.append(time.perf_counter() - start)
        cpu.append(cpu_seconds() - start_cpu)
    return {
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "median_cpu_s": round(statistics.median(cpu), 3),
        "runs": runs,
        "output_bytes": target.stat().st_size,
        "goal_met": statistics.median(times) < GOAL_SECONDS,
    }


def steps(source: Path, target: Path, runs: int) -> dict[str, float]:
    """Where the pydub path's time goes (median seconds per step)."""
    decode, encode, digest, peaks = [], [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        segment = load_wav(source)
        t1 = time.perf_counter()
        segment.export(str(target), format="mp3", bitrate="32k")
        t2 = time.perf_counter()
        file_digest(target)
        t3 = time.perf_counter()
        peaks_of(segment)
        t4 = time.perf_counter()
        decode.append(t1 - t0)
        encode.append(t2 - t1)
        digest.append(t3 - t2)
        peaks.append(t4 - t3)
    return {
        name: round(statistics.median(v), 4)
        for name, v in (("decode_s", decode), ("encode_s", encode), ("sha256_s", digest), ("peaks_s", peaks))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the call")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last allowed)")
    args = parser.parse_args()
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as tmp:
        source = Path(tmp) / "call.wav"
        log(f"generating a {args.seconds:.0f} s speech-like WAV")
        speech_like_wav(source, args.seconds)
        target = Path(tmp) / "store" / "call.mp3"
        target.parent.mkdir()
        via_pydub(source, target)  # warm the page cache and the imports once
        log("pydub path")
        pydub = timed(via_pydub, source, target, args.runs)
        log("ffmpeg direct")
        direct = timed(via_ffmpeg_direct, source, target, args.runs)
        breakdown = steps(source, target, args.runs)
        emit(
            {
                "bench": "recording_transcode",
                "machine": machine(),
                "pinned_cpu": cpu,
                "call_seconds": args.seconds,
                "input_bytes": source.stat().st_size,
                "format": "mp3 32 kbit/s, 8 kHz mono",
                "goal_s": GOAL_SECONDS,
                "pydub": pydub,
                "ffmpeg_direct": direct,
                "pydub_steps": breakdown,
                "peak_rss_mib": {"bench_process": peak_rss_mib(), "ffmpeg": round(max(FFMPEG_RSS), 1)},
            }
        )


if __name__ == "__main__":
    main()
