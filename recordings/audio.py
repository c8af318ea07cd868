"""The CPU and file work on one recording: decode, transcode, measure, waveform peaks.

Plain synchronous functions, run in the worker's executor (never on the event loop). The heavy step,
encoding, happens in an ffmpeg child process driven by pydub; decoding MixMonitor's WAV is pydub's own
header parse plus one bytes copy, and the peaks are numpy — both release the GIL for the bulk of
their time, so a thread pool uses the cores (scripts/bench/recording_transcode.py measures it).
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydub import AudioSegment
from pydub.audio_segment import fix_wav_headers

from recordings.storage import fsync_dir

PEAK_BUCKETS = 1000


@dataclass(frozen=True, slots=True)
class Measured:
    """What the pipeline stores about a transcoded file."""

    duration_s: float
    size_bytes: int
    sha256: str
    peaks: list[float]


def wav_is_complete(path: Path) -> bool:
    """True when the WAV's header accounts for the whole file.

    Asterisk's wav format writes the RIFF and data sizes only when it closes the file (format_wav.c
    update_header), so while MixMonitor is still writing the data size is 0; once the sizes match the
    file's length, the recording is closed.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4096)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False
    if struct.unpack_from("<I", head, 4)[0] != size - 8:
        return False
    pos = 12
    while pos + 8 <= len(head):
        chunk_id = head[pos : pos + 4]
        chunk_size = struct.unpack_from("<I", head, pos + 4)[0]
        if chunk_id == b"data":
            return pos + 8 + chunk_size in (size, size - 1)  # a pad byte may follow an odd chunk
        pos += 8 + chunk_size + (chunk_size & 1)
    return False


def load_wav(path: Path) -> AudioSegment:
    """Decode a WAV; one left unclosed (Asterisk killed mid-call) has its sizes taken from its length
    instead of being read as empty, as pydub would."""
    raw = bytearray(path.read_bytes())
    fix_wav_headers(raw)
    return AudioSegment(data=bytes(raw))


def peaks_of(segment: AudioSegment, buckets: int = PEAK_BUCKETS) -> list[float]:
    """Max |amplitude| per bucket, 0..1, of the first channel: what a waveform display draws."""
    samples = np.frombuffer(segment.raw_data, dtype=f"<i{segment.sample_width}")
    if segment.channels > 1:
        samples = samples[:: segment.channels]
    if samples.size == 0:
        return []
    full_scale = float(1 << (8 * segment.sample_width - 1))
    n = min(buckets, samples.size)
    edges = np.linspace(0, samples.size, n + 1).astype(np.int64)
    # maximum.reduceat over bucket starts: one pass, no Python loop (abs in int32 so -32768 fits).
    peaks = np.maximum.reduceat(np.abs(samples.astype(np.int32)), edges[:-1]) / full_scale
    return [round(float(p), 3) for p in np.minimum(peaks, 1.0)]


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of the stored file (what an auditor re-computes to show it was not altered)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def write_durably(segment: AudioSegment, target: Path, fmt: str, bitrate: str) -> None:
    """Encode into ``target`` so that it is either absent, the old file, or the complete new one.

    The encoder writes a fixed side name (a re-run after a crash overwrites the stale part), which is
    fsynced, renamed over the target, and the directory fsynced: only then may the source go.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    with part.open("wb") as out:
        segment.export(out, format=fmt, bitrate=bitrate)
        out.flush()
        os.fsync(out.fileno())
    os.replace(part, target)
    fsync_dir(target.parent)


def transcode(source: Path, target: Path, fmt: str, bitrate: str) -> Measured:
    """MixMonitor's WAV → the stored file, measured. Duration is the PCM's (exact, sample count); the
    encoded file holds the same audio plus the encoder's few ms of padding."""
    segment = load_wav(source)
    write_durably(segment, target, fmt, bitrate)
    size, sha = file_digest(target)
    return Measured(duration_s=round(segment.duration_seconds, 3), size_bytes=size, sha256=sha, peaks=peaks_of(segment))


def measure_stored(target: Path, fmt: str) -> Measured:
    """Measure a stored file whose source is gone (re-processing): decoded by ffmpeg through pydub."""
    segment = AudioSegment.from_file(target, format=fmt)
    size, sha = file_digest(target)
    return Measured(duration_s=round(segment.duration_seconds, 3), size_bytes=size, sha256=sha, peaks=peaks_of(segment))
