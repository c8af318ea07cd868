"""A worker killed in the middle of transcoding: the next worker finishes the job and no audio is lost.

The doomed worker is a real separate process (``cti``'s own worker code, not a stand-in) whose process
group — the Python worker and its ffmpeg child — is SIGKILLed while ffmpeg is encoding, as an OOM kill
or a power cut would. A fresh worker in this process then takes the job once the lease runs out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.recording_models import Recording, RecordingJob
from crm_core.settings import Settings
from recordings.jobs import enqueue_recording
from recordings.worker import RecordingWorker
from tests.unit.test_recordings_audio import decoded_seconds, speech_like, write_wav

Sessions = async_sessionmaker[AsyncSession]
REPO = Path(__file__).resolve().parents[2]
CALL_SECONDS = 10 * 60  # long enough that ffmpeg is still encoding when the kill comes (~1.5 s)
LEASE_SECONDS = 3.0

DOOMED_WORKER = f"""
import asyncio
from crm_core.db import make_engine, make_sessionmaker
from crm_core.settings import Settings
from recordings.worker import RecordingWorker

async def main() -> None:
    settings = Settings()
    engine = make_engine(settings.database_url)
    worker = RecordingWorker(settings, make_sessionmaker(engine), name="doomed", lease_seconds={LEASE_SECONDS})
    await worker.run_until_idle()

asyncio.run(main())
"""


def ffmpeg_child(parent: psutil.Process) -> psutil.Process | None:
    for child in parent.children(recursive=True):
        try:
            if child.name() == "ffmpeg":
                return child
        except psutil.NoSuchProcess:
            continue
    return None


async def test_a_worker_killed_mid_transcode_is_resumed_without_losing_the_file(
    sessions: Sessions, db_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=db_url,
        recordings_dir=str(tmp_path / "store"),
        recordings_source_map={"/pbx/monitor": str(tmp_path / "spool")},
        recordings_workers=1,
    )
    source = write_wav(tmp_path / "spool" / "1764000000.9.wav", speech_like(CALL_SECONDS, seed=9))
    source_sha = hashlib.sha256(source.read_bytes()).hexdigest()
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=CALL_SECONDS + 5)
    recording_id = await enqueue_recording(
        sessions,
        settings,
        linkedid="1764000000.9",
        source_path="/pbx/monitor/1764000000.9.wav",
        queue=None,
        started_at=started,
    )
    assert recording_id is not None

    env = {
        **os.environ,
        "CTI_DATABASE_URL": db_url,
        "CTI_RECORDINGS_DIR": settings.recordings_dir,
        "CTI_RECORDINGS_SOURCE_MAP": json.dumps(settings.recordings_source_map),
        "CTI_RECORDINGS_WORKERS": "1",
    }
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DOOMED_WORKER, cwd=REPO, env=env, start_new_session=True, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        encoder = None
        while encoder is None and time.monotonic() < deadline and doomed.returncode is None:
            encoder = ffmpeg_child(psutil.Process(doomed.pid))
            await asyncio.sleep(0.02)
        if encoder is None:  # say why: the worker's own error output and exit status
            if doomed.returncode is None:
                os.killpg(doomed.pid, signal.SIGKILL)
            _, err = await doomed.communicate()
            async with sessions() as session:
                rows = (await session.execute(select(RecordingJob))).scalars()
                jobs = [(j.state, j.worker, j.attempts) for j in rows]
            raise AssertionError(f"the worker never started ffmpeg (exit {doomed.returncode}, jobs {jobs}): {err!r}")
        await asyncio.sleep(0.2)  # well into the encoding (a 10-minute call takes over a second)
        assert encoder.is_running(), "ffmpeg finished before the kill: make the call longer"
        os.killpg(doomed.pid, signal.SIGKILL)
    finally:
        if doomed.returncode is None:
            os.killpg(doomed.pid, signal.SIGKILL)
        await doomed.wait()

    # The crash left: the job running under the dead worker's lease, the row pending, the source whole.
    async with sessions() as session:
        job = (
            await session.execute(select(RecordingJob).where(RecordingJob.recording_id == recording_id))
        ).scalar_one()
        rec = await session.get(Recording, recording_id)
    assert (job.state, job.worker, job.attempts) == ("running", "doomed", 1)
    assert rec is not None and rec.state == "pending" and rec.storage_path is None
    assert hashlib.sha256(source.read_bytes()).hexdigest() == source_sha
    shanghai_day = started.astimezone(ZoneInfo(settings.timezone))
    target = Path(settings.recordings_dir) / f"{shanghai_day:%Y/%m/%d}/1764000000.9.mp3"
    assert not target.exists()

    fresh = RecordingWorker(settings, sessions, name="fresh", lease_seconds=60)
    async with asyncio.timeout(LEASE_SECONDS + 30):
        await fresh.run_until_idle()  # waits out the dead worker's lease, then takes the job

    async with sessions() as session:
        job = (
            await session.execute(select(RecordingJob).where(RecordingJob.recording_id == recording_id))
        ).scalar_one()
        rec = await session.get(Recording, recording_id)
    assert (job.state, job.worker, job.attempts) == ("done", "fresh", 2)
    assert rec is not None and rec.state == "ready" and rec.duration_s == CALL_SECONDS
    stored = Path(settings.recordings_dir) / (rec.storage_path or "")
    assert stored == target and rec.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert abs(decoded_seconds(stored) - CALL_SECONDS) < 0.05  # every second of the call is in the file
    assert not source.exists() and not stored.with_name(f".{stored.name}.part").exists()
