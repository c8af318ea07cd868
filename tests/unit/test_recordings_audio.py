"""The pure parts of the recording pipeline: paths, PCI spans, WAV completeness, peaks, transcoding."""

from __future__ import annotations

import datetime as dt
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from crm_core.settings import QueuePolicy, Settings
from recordings.audio import file_digest, load_wav, peaks_of, transcode, wav_is_complete
from recordings.jobs import backoff_seconds, retention_days
from recordings.pci import pci_spans
from recordings.processing import MAX_MISSING_FILE_WAIT_SECONDS, WAIT_FOR_FILE_SECONDS, missing_file_wait
from recordings.storage import host_source_path, storage_relpath

RATE = 8000
UTC = dt.UTC


def speech_like(seconds: float, *, amplitude: float = 0.5, seed: int = 1) -> np.ndarray:
    """8 kHz mono int16: a voiced tone bursting like syllables with gaps, as a call sounds."""
    rng = np.random.default_rng(seed)
    total = int(seconds * RATE)
    if seconds > 10:  # a long call: ten seconds of it repeated (cheap to make, same sound)
        return np.tile(speech_like(10, amplitude=amplitude, seed=seed), total // (10 * RATE) + 1)[:total]
    t = np.arange(total) / RATE
    voice = np.sin(2 * np.pi * 180 * t) * 0.6 + np.sin(2 * np.pi * 720 * t) * 0.3 + rng.normal(0, 0.1, t.size)
    envelope = (np.sin(2 * np.pi * 2.5 * t) > -0.3).astype(np.float64)  # syllables and short gaps
    signal = voice * envelope
    signal = signal / max(1e-9, float(np.abs(signal).max())) * amplitude
    return (signal * 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, *, closed: bool = True) -> Path:
    """A WAV as Asterisk's MixMonitor writes it (16-bit 8 kHz mono, 44-byte header). ``closed=False``
    leaves the sizes 0, as Asterisk does until it closes the file at hangup."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())
    if not closed:
        raw = bytearray(path.read_bytes())
        raw[4:8] = b"\0\0\0\0"
        raw[40:44] = b"\0\0\0\0"
        path.write_bytes(bytes(raw))
    return path


def decoded_seconds(path: Path) -> float:
    """Length of the audio ffmpeg decodes from a file (gapless: the encoder's padding is dropped)."""
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(RATE), "-"],
        capture_output=True,
        check=True,
    ).stdout
    return len(pcm) / 2 / RATE


def test_storage_layout_is_dated_by_the_call_start_in_the_site_timezone() -> None:
    settings = Settings(timezone="Asia/Shanghai")
    # 17:30 UTC on the 2nd is 01:30 on the 3rd in Shanghai: the call belongs to the 3rd.
    started = dt.datetime(2026, 3, 2, 17, 30, tzinfo=UTC)
    assert storage_relpath(settings, "1772472600.42", started, "mp3") == "2026/03/03/1772472600.42.mp3"
    assert storage_relpath(settings, "../../etc/x", started, "mp3") == "2026/03/03/.._.._etc_x.mp3"


def test_pbx_paths_map_to_host_paths_by_the_longest_prefix() -> None:
    settings = Settings(recordings_source_map={"/var/spool": "/mnt/a", "/var/spool/asterisk/monitor": "/mnt/rec/"})
    assert host_source_path(settings, "/var/spool/asterisk/monitor/1.2.wav") == Path("/mnt/rec/1.2.wav")
    assert host_source_path(settings, "/var/spool/other/1.wav") == Path("/mnt/a/other/1.wav")
    assert host_source_path(settings, "/var/spoolx/1.wav") == Path("/var/spoolx/1.wav")  # not a path prefix


def test_pci_pauses_become_merged_spans_clipped_to_the_file() -> None:
    start = dt.datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
    at = lambda s: start + dt.timedelta(seconds=s)  # noqa: E731
    pauses = [(at(5), at(9.5)), (at(9), at(12)), (at(-3), at(1)), (at(30), None), (at(50), at(60))]
    assert pci_spans(pauses, start, 40.0) == [[0.0, 1.0], [5.0, 12.0], [30.0, 40.0]]
    assert pci_spans([], start, 40.0) == []


def test_an_open_mixmonitor_file_is_not_complete_until_its_header_is_written(tmp_path: Path) -> None:
    samples = speech_like(2.0)
    closed = write_wav(tmp_path / "closed.wav", samples)
    still_open = write_wav(tmp_path / "open.wav", samples, closed=False)
    assert wav_is_complete(closed)
    assert not wav_is_complete(still_open)
    (tmp_path / "junk.wav").write_bytes(b"not a wav at all")
    assert not wav_is_complete(tmp_path / "junk.wav")
    # A file left open (Asterisk killed) still decodes to its whole length, not to nothing.
    assert load_wav(still_open).duration_seconds == pytest.approx(2.0, abs=0.001)


def test_peaks_follow_the_loudness_of_each_part_of_the_call(tmp_path: Path) -> None:
    loud = speech_like(5.0, amplitude=0.8)
    silence = np.zeros(5 * RATE, dtype=np.int16)
    segment = load_wav(write_wav(tmp_path / "a.wav", np.concatenate([loud, silence])))
    peaks = peaks_of(segment)
    assert len(peaks) == 1000
    assert max(peaks[:480]) == pytest.approx(0.8, abs=0.01) and sum(peaks[:480]) / 480 > 0.3
    assert max(peaks[520:]) == 0.0
    assert peaks_of(load_wav(write_wav(tmp_path / "short.wav", loud[:10]))) == [
        round(abs(int(s)) / 32768, 3) for s in loud[:10]
    ]


def test_transcode_writes_the_stored_file_and_measures_it(tmp_path: Path) -> None:
    source = write_wav(tmp_path / "spool" / "1.wav", speech_like(12.5))
    target = tmp_path / "store" / "2026" / "01" / "01" / "1.mp3"
    measured = transcode(source, target, "mp3", "32k")
    assert target.exists() and not target.with_name(".1.mp3.part").exists()
    assert measured.duration_s == 12.5
    assert decoded_seconds(target) == pytest.approx(12.5, abs=0.02)  # the mp3 itself holds the whole call
    assert (measured.size_bytes, measured.sha256) == file_digest(target)
    assert 12.5 * 32000 / 8 * 0.8 < measured.size_bytes < 12.5 * 32000 / 8 * 1.3  # 32 kbit/s
    assert len(measured.peaks) == 1000 and max(measured.peaks) == pytest.approx(0.5, abs=0.01)


def test_retention_is_the_queues_own_or_the_site_default() -> None:
    settings = Settings(
        recordings_retention_days=365, queues={"vip": QueuePolicy(retention_days=30), "member-service": QueuePolicy()}
    )
    assert retention_days(settings, "vip") == 30
    assert retention_days(settings, "member-service") == 365
    assert retention_days(settings, None) == 365


def test_retries_back_off_exponentially_up_to_a_cap() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert backoff_seconds(30) == 900


def test_a_missing_file_is_looked_for_with_doubling_waits_until_the_grace_ends() -> None:
    grace = 60.0
    since_end, looks = 0.0, 0
    while since_end < grace:  # what the worker does: look, defer by the wait, look again
        wait = missing_file_wait(since_end, grace)
        assert WAIT_FOR_FILE_SECONDS <= wait <= MAX_MISSING_FILE_WAIT_SECONDS
        since_end += wait
        looks += 1
    assert looks == 7  # every 2 s it was 30
    assert since_end <= grace + WAIT_FOR_FILE_SECONDS  # the recording is marked missing soon after the grace
    assert missing_file_wait(0.5, grace) == 2 * WAIT_FOR_FILE_SECONDS  # a late file is still looked for soon
    assert missing_file_wait(40.0, grace) == MAX_MISSING_FILE_WAIT_SECONDS
    assert missing_file_wait(59.5, grace) == 0.5 + WAIT_FOR_FILE_SECONDS
