"""The recording job lifecycle on both engines: queue on call end, claim with a lease, process into the
dated layout, retry and fail, wait for an open file, and re-run every half-done state without loss."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.models import Call
from crm_core.calllog.recording_models import Recording, RecordingJob, RecordingPause
from crm_core.db import transaction, utcnow
from crm_core.settings import QueuePolicy, Settings
from recordings.audio import transcode
from recordings.jobs import (
    backfill_from_call_log,
    claim,
    enqueue_recording,
    mark_done,
    request_reprocess,
    status_counts,
)
from recordings.worker import RecordingWorker
from tests.unit.test_recordings_audio import decoded_seconds, speech_like, write_wav

Sessions = async_sessionmaker[AsyncSession]
PBX_SPOOL = "/var/spool/asterisk/monitor"
# 23:00 UTC is 07:00 the next day in Shanghai: the file goes under the 21st.
STARTED = dt.datetime(2026, 11, 20, 23, 0, tzinfo=dt.UTC)


@pytest.fixture
def rec_settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        recordings_dir=str(tmp_path / "store"),
        recordings_source_map={PBX_SPOOL: str(tmp_path / "spool")},
        recordings_workers=2,
        recordings_max_attempts=3,
        recordings_missing_grace_seconds=30 * 86400,  # the calls below ended days ago
        recordings_retention_days=365,
        queues={"member-service": QueuePolicy(retention_days=90), "vip": QueuePolicy()},
    )


async def drain(worker: RecordingWorker) -> None:
    async with asyncio.timeout(30):
        await worker.run_until_idle()


def spool(settings: Settings, linkedid: str) -> Path:
    return Path(settings.recordings_source_map[PBX_SPOOL]) / f"{linkedid}.wav"


async def call_ended(sessions: Sessions, settings: Settings, linkedid: str, *, seconds: float = 20.0) -> int | None:
    """What the engine does on CallEnded: the call log row (as the writer would) and the recording job."""
    ended = STARTED + dt.timedelta(seconds=seconds + 3)
    async with transaction(sessions) as session:
        session.add(
            Call(
                pbx="default",
                linkedid=linkedid,
                state="ended",
                direction="inbound",
                started_at=STARTED,
                answered_at=STARTED + dt.timedelta(seconds=3),
                ended_at=ended,
                queue="member-service",
                outcome="answered",
                recording_file=f"{PBX_SPOOL}/{linkedid}.wav",
            )
        )
    return await enqueue_recording(
        sessions,
        settings,
        linkedid=linkedid,
        source_path=f"{PBX_SPOOL}/{linkedid}.wav",
        queue="member-service",
        started_at=STARTED,
    )


async def recording_of(sessions: Sessions, linkedid: str) -> Recording:
    async with sessions() as session:
        return (await session.execute(select(Recording).where(Recording.linkedid == linkedid))).scalar_one()


async def jobs_of(sessions: Sessions, recording_id: int) -> list[RecordingJob]:
    async with sessions() as session:
        rows = await session.execute(
            select(RecordingJob).where(RecordingJob.recording_id == recording_id).order_by(RecordingJob.id)
        )
        return list(rows.scalars())


async def test_a_replayed_call_end_queues_its_recording_once(sessions: Sessions, rec_settings: Settings) -> None:
    first = await call_ended(sessions, rec_settings, "1764025200.1")
    again = await enqueue_recording(
        sessions,
        rec_settings,
        linkedid="1764025200.1",
        source_path=f"{PBX_SPOOL}/1764025200.1.wav",
        queue="member-service",
        started_at=STARTED,
    )
    assert first is not None and again is None
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Recording)) == 1
        assert await session.scalar(select(func.count()).select_from(RecordingJob)) == 1
    rec = await recording_of(sessions, "1764025200.1")
    assert rec.state == "pending" and rec.retain_until == STARTED + dt.timedelta(days=90)


async def test_a_job_is_claimed_once_and_taken_again_when_its_lease_expires(
    sessions: Sessions, rec_settings: Settings
) -> None:
    recording_id = await call_ended(sessions, rec_settings, "1764025200.2")
    assert recording_id is not None
    now = utcnow()
    [job] = await claim(sessions, "w1", limit=5, lease_seconds=30, now=now)
    assert job.recording_id == recording_id and job.attempts == 1
    assert await claim(sessions, "w2", limit=5, lease_seconds=30, now=now + dt.timedelta(seconds=29)) == []
    # w1 died: after its lease w2 takes the job, and w1 (back from a long pause) can no longer close it.
    [again] = await claim(sessions, "w2", limit=5, lease_seconds=30, now=now + dt.timedelta(seconds=31))
    assert again.id == job.id and again.attempts == 2
    async with transaction(sessions) as session:
        await mark_done(session, job.id, "w1")
    [row] = await jobs_of(sessions, recording_id)
    assert (row.state, row.worker, row.attempts) == ("running", "w2", 2)


async def test_a_call_is_stored_dated_measured_linked_and_its_pci_pause_marked(
    sessions: Sessions, rec_settings: Settings
) -> None:
    linkedid = "1764025200.3"
    source = write_wav(spool(rec_settings, linkedid), speech_like(20.0))
    async with transaction(sessions) as session:
        # Paused 5 s..8 s into the file: the file ends at the call's end (started + 23 s), 20 s long.
        file_start = STARTED + dt.timedelta(seconds=3)
        session.add(
            RecordingPause(
                linkedid=linkedid,
                paused_at=file_start + dt.timedelta(seconds=5),
                resumed_at=file_start + dt.timedelta(seconds=8),
            )
        )
    recording_id = await call_ended(sessions, rec_settings, linkedid)
    worker = RecordingWorker(rec_settings, sessions, name="t")
    await drain(worker)

    rec = await recording_of(sessions, linkedid)
    assert rec.id == recording_id and rec.state == "ready" and rec.error is None
    assert rec.storage_path == f"2026/11/21/{linkedid}.mp3" and rec.format == "mp3"
    stored = Path(rec_settings.recordings_dir) / rec.storage_path
    assert rec.size_bytes == stored.stat().st_size
    assert rec.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert rec.duration_s == 20.0 and decoded_seconds(stored) == pytest.approx(20.0, abs=0.02)
    assert rec.peaks is not None and len(rec.peaks) == 1000 and max(rec.peaks) == pytest.approx(0.5, abs=0.01)
    assert rec.pci_spans == [[5.0, 8.0]]
    async with sessions() as session:
        call_id = await session.scalar(select(Call.id).where(Call.linkedid == linkedid))
    assert rec.call_id == call_id and rec.retain_until == STARTED + dt.timedelta(days=90)
    assert not source.exists()  # removed only once the stored copy was committed
    assert [j.state for j in await jobs_of(sessions, rec.id)] == ["done"]
    assert (await status_counts(sessions))["recordings"] == {"ready": 1}


async def test_a_file_still_being_written_is_waited_for_and_a_missing_one_marked(
    sessions: Sessions, rec_settings: Settings
) -> None:
    samples = speech_like(3.0)
    source = write_wav(spool(rec_settings, "1764025200.4"), samples, closed=False)
    await call_ended(sessions, rec_settings, "1764025200.4")
    worker = RecordingWorker(rec_settings, sessions, name="t")
    [job] = await claim(sessions, "t", limit=5, lease_seconds=30)
    assert await worker.run_job(job) == 1.0  # deferred: MixMonitor has not closed it
    rec = await recording_of(sessions, "1764025200.4")
    [row] = await jobs_of(sessions, rec.id)
    assert rec.state == "pending" and row.state == "queued" and row.attempts == 0 and source.exists()
    write_wav(source, samples)  # hangup: Asterisk writes the sizes and closes it
    await drain(worker)
    assert (await recording_of(sessions, "1764025200.4")).duration_s == 3.0

    # No file at all and the grace period over: `missing`, job closed, nothing retried.
    no_grace = rec_settings.model_copy(update={"recordings_missing_grace_seconds": 0})
    await call_ended(sessions, no_grace, "1764025200.5")
    await drain(RecordingWorker(no_grace, sessions, name="t"))
    missing = await recording_of(sessions, "1764025200.5")
    assert missing.state == "missing" and "no file" in (missing.error or "")
    assert [j.state for j in await jobs_of(sessions, missing.id)] == ["done"]


async def test_a_broken_file_is_retried_with_backoff_then_failed_with_its_error(
    sessions: Sessions, rec_settings: Settings
) -> None:
    settings = rec_settings.model_copy(update={"recordings_missing_grace_seconds": 0})
    source = spool(settings, "1764025200.6")
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"RIFF garbage that no decoder accepts")
    recording_id = await call_ended(sessions, settings, "1764025200.6")
    assert recording_id is not None
    worker = RecordingWorker(settings, sessions, name="t")
    now = utcnow()
    for attempt in (1, 2, 3):
        [job] = await claim(sessions, "t", limit=1, lease_seconds=30, now=now + dt.timedelta(hours=attempt))
        assert job.attempts == attempt
        await worker.run_job(job)
        [row] = await jobs_of(sessions, recording_id)
        if attempt < 3:
            assert row.state == "queued" and row.run_after > utcnow() + dt.timedelta(seconds=5)
            assert (await recording_of(sessions, "1764025200.6")).state == "pending"
    rec = await recording_of(sessions, "1764025200.6")
    assert row.state == "failed" and rec.state == "failed" and row.last_error and rec.error == row.last_error
    assert source.exists()  # a failed job never loses the source
    assert await claim(sessions, "t", limit=1, lease_seconds=30, now=now + dt.timedelta(days=1)) == []


async def test_half_done_jobs_finish_without_losing_the_file(sessions: Sessions, rec_settings: Settings) -> None:
    # 1. The target was written and renamed into place, then the worker died before the commit.
    linkedid = "1764025200.7"
    source = write_wav(spool(rec_settings, linkedid), speech_like(4.0))
    await call_ended(sessions, rec_settings, linkedid)
    [job] = await claim(sessions, "dead", limit=1, lease_seconds=30)
    target = Path(rec_settings.recordings_dir) / f"2026/11/21/{linkedid}.mp3"
    transcode(source, target, "mp3", "32k")
    async with transaction(sessions) as session:  # its lease ran out
        await session.execute(update(RecordingJob).values(lease_until=utcnow() - dt.timedelta(seconds=1)))
    await drain(RecordingWorker(rec_settings, sessions, name="fresh"))
    rec = await recording_of(sessions, linkedid)
    assert rec.state == "ready" and decoded_seconds(target) == pytest.approx(4.0, abs=0.02)
    assert rec.sha256 == hashlib.sha256(target.read_bytes()).hexdigest() and not source.exists()

    # 2. The row was committed `ready`, then the worker died before removing the source.
    write_wav(source, speech_like(4.0))
    async with transaction(sessions) as session:
        await session.execute(
            update(RecordingJob)
            .where(RecordingJob.id == job.id)
            .values(state="running", worker="dead", lease_until=utcnow() - dt.timedelta(seconds=1))
        )
    await drain(RecordingWorker(rec_settings, sessions, name="fresh"))
    assert not source.exists() and target.exists()
    assert (await recording_of(sessions, linkedid)).sha256 == rec.sha256
    assert [j.state for j in await jobs_of(sessions, rec.id)] == ["done"]


async def test_reprocessing_after_the_source_is_gone_measures_the_stored_file(
    sessions: Sessions, rec_settings: Settings
) -> None:
    linkedid = "1764025200.8"
    write_wav(spool(rec_settings, linkedid), speech_like(6.0))
    recording_id = await call_ended(sessions, rec_settings, linkedid)
    assert recording_id is not None
    await drain(RecordingWorker(rec_settings, sessions, name="t"))
    before = await recording_of(sessions, linkedid)
    async with transaction(sessions) as session:
        await session.execute(update(Recording).values(peaks=None, duration_s=None))
    assert await request_reprocess(sessions, recording_id)
    assert (await recording_of(sessions, linkedid)).state == "pending"
    await drain(RecordingWorker(rec_settings, sessions, name="t"))
    after = await recording_of(sessions, linkedid)
    assert after.state == "ready" and after.storage_path == before.storage_path and after.sha256 == before.sha256
    assert after.duration_s == pytest.approx(6.0, abs=0.02) and after.peaks and len(after.peaks) == 1000
    assert not await request_reprocess(sessions, 999_999)


async def test_calls_whose_call_end_was_never_queued_are_backfilled_once(
    sessions: Sessions, rec_settings: Settings
) -> None:
    """The engine queues on CallEnded; if that was lost (database away, server killed with a backlog)
    the call log still names the file, and the worker's start-up backfill queues it."""
    async with transaction(sessions) as session:
        for n, recording_file in enumerate((f"{PBX_SPOOL}/9.1.wav", None, f"{PBX_SPOOL}/9.3.wav")):
            session.add(
                Call(
                    linkedid=f"9.{n + 1}",
                    state="ended",
                    direction="inbound",
                    started_at=STARTED,
                    ended_at=STARTED + dt.timedelta(seconds=30),
                    queue="vip",
                    recording_file=recording_file,
                )
            )
    await enqueue_recording(
        sessions, rec_settings, linkedid="9.3", source_path=f"{PBX_SPOOL}/9.3.wav", queue="vip", started_at=STARTED
    )
    since = STARTED - dt.timedelta(days=1)
    assert await backfill_from_call_log(sessions, rec_settings, since=since) == 1
    assert await backfill_from_call_log(sessions, rec_settings, since=since) == 0
    backfilled = await recording_of(sessions, "9.1")
    assert backfilled.state == "pending" and backfilled.queue == "vip"
    assert backfilled.retain_until == STARTED + dt.timedelta(days=365)
    assert [j.state for j in await jobs_of(sessions, backfilled.id)] == ["queued"]


async def test_a_live_worker_renews_its_lease_so_a_long_job_is_never_run_twice(
    sessions: Sessions, rec_settings: Settings
) -> None:
    linkedid = "1764025200.10"
    write_wav(spool(rec_settings, linkedid), speech_like(600))  # ~1 s or more to encode
    recording_id = await call_ended(sessions, rec_settings, linkedid)
    assert recording_id is not None
    worker = RecordingWorker(rec_settings, sessions, name="alive", lease_seconds=0.6)
    [job] = await claim(sessions, "alive", limit=1, lease_seconds=0.6)
    running = asyncio.create_task(worker.run_job(job))
    stolen = []
    while not running.done():
        stolen += await claim(sessions, "thief", limit=1, lease_seconds=30)
        await asyncio.sleep(0.1)
    await running
    assert stolen == []
    [row] = await jobs_of(sessions, recording_id)
    assert (row.state, row.worker, row.attempts) == ("done", "alive", 1)
    assert (await recording_of(sessions, linkedid)).duration_s == 600
