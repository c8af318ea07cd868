"""One recording job, end to end: wait for the file, transcode into the dated layout, measure, link the
call, mark PCI spans, commit — and only then remove MixMonitor's source file.

Crash windows and what a re-run does (every step is safe to repeat):

* killed mid-transcode: the source is intact, at most a stale ``.part`` exists → transcoded again;
* target renamed into place but the row not committed → transcoded again over it (atomic replace);
* row committed ``ready`` but the source not yet removed → the re-run only removes the source, after
  checking the stored file is there with the committed size;
* source removed, job not yet marked done → the re-run sees ``ready`` and closes the job.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.models import Call
from crm_core.calllog.recording_models import Recording, RecordingJob, RecordingPause
from crm_core.db import transaction, utcnow
from crm_core.settings import Settings
from recordings.audio import Measured, measure_stored, transcode, wav_is_complete
from recordings.jobs import ClaimedJob, mark_done, retention_days
from recordings.pci import pci_spans
from recordings.storage import fsync_dir, host_source_path, storage_abspath, storage_relpath

log = logging.getLogger(__name__)

Sessions = async_sessionmaker[AsyncSession]
RunBlocking = Callable[..., Awaitable[Any]]

WAIT_FOR_FILE_SECONDS = 1.0
MAX_MISSING_FILE_WAIT_SECONDS = 15.0


def missing_file_wait(since_end: float, grace: float) -> float:
    """How long to wait before looking again for a file that is not there, `since_end` seconds after
    the call ended: as long again (doubling, 2 s to 15 s), and not past the grace period's end.

    Why: a file that is not there at the end of the call is either late (a remote spool being copied)
    or never coming (a path not mapped), and every look costs a claim, three reads and a deferral.
    Looking every 2 s was 30 looks a call over the default 60 s grace, and 1,800 over a grace of an
    hour; doubling makes it 7 and 243."""
    wait = min(max(WAIT_FOR_FILE_SECONDS * 2, since_end), MAX_MISSING_FILE_WAIT_SECONDS)
    return min(wait, max(grace - since_end, 0.0) + WAIT_FOR_FILE_SECONDS)


@dataclass(frozen=True, slots=True)
class Deferred:
    """The job cannot run yet (the file is still open or not there yet); try again after ``seconds``."""

    seconds: float


class LeaseLost(RuntimeError):
    """Another worker took the job over (our lease expired): leave the files to it."""


def _remove_source(source: Path, target: Path, size_bytes: int | None) -> bool:
    """Remove MixMonitor's file, but only while the stored copy is there with its committed size."""
    if not source.exists():
        return False
    if size_bytes is None or not target.exists() or target.stat().st_size != size_bytes:
        raise RuntimeError(f"stored file {target} missing or not {size_bytes} bytes: keeping source {source}")
    source.unlink()
    fsync_dir(source.parent)
    return True


def _source_state(source: Path) -> tuple[bool, bool, float | None]:
    """(exists, closed by Asterisk, mtime) in one executor hop."""
    if not source.exists():
        return False, False, None
    return True, wav_is_complete(source), source.stat().st_mtime


async def _still_ours(session: AsyncSession, job: ClaimedJob, worker: str) -> None:
    owner = (
        await session.execute(
            select(RecordingJob.worker, RecordingJob.state).where(RecordingJob.id == job.id).with_for_update()
        )
    ).one_or_none()
    if owner is None or owner[0] != worker or owner[1] != "running":
        raise LeaseLost(f"recording job {job.id} is no longer held by {worker}")


async def process_job(
    sessions: Sessions, settings: Settings, job: ClaimedJob, worker: str, run_blocking: RunBlocking
) -> Deferred | None:
    """Run one claimed job; None when it is finished (done, or the recording marked missing)."""
    async with sessions() as session:
        recording = await session.get(Recording, job.recording_id)
        if recording is None:  # deleted meanwhile
            async with session.begin():
                await mark_done(session, job.id, worker)
            return None
        call = (
            await session.execute(select(Call).where(Call.pbx == recording.pbx, Call.linkedid == recording.linkedid))
        ).scalar_one_or_none()
        pauses = [
            (p.paused_at, p.resumed_at)
            for p in (
                await session.execute(
                    select(RecordingPause).where(
                        RecordingPause.pbx == recording.pbx, RecordingPause.linkedid == recording.linkedid
                    )
                )
            ).scalars()
        ]
    source = host_source_path(settings, recording.source_path)

    if recording.state in ("ready", "purged"):
        if recording.state == "ready" and recording.storage_path:
            target = storage_abspath(settings, recording.storage_path)
            await run_blocking(_remove_source, source, target, recording.size_bytes)
        async with transaction(sessions) as session:
            await mark_done(session, job.id, worker)
        return None

    call_ended = call.ended_at if call is not None else None
    since_end = (utcnow() - (call_ended or recording.created_at)).total_seconds()
    in_grace = since_end < settings.recordings_missing_grace_seconds
    exists, complete, mtime = await run_blocking(_source_state, source)

    measured: Measured
    if exists:
        if not complete and in_grace:
            return Deferred(WAIT_FOR_FILE_SECONDS)
        fmt = settings.recordings_format
        relpath = storage_relpath(settings, recording.linkedid, recording.recorded_at, fmt)
        target = storage_abspath(settings, relpath)
        measured = await run_blocking(transcode, source, target, fmt, settings.recordings_bitrate)
        # The file ends when the call does; the call log's end is on the CTI clock, like the pauses.
        file_end = call_ended or (dt.datetime.fromtimestamp(mtime, dt.UTC) if mtime is not None else None)
    elif recording.storage_path and await run_blocking(storage_abspath(settings, recording.storage_path).exists):
        relpath, fmt = recording.storage_path, recording.format or settings.recordings_format
        target = storage_abspath(settings, relpath)
        measured = await run_blocking(measure_stored, target, fmt)
        file_end = call_ended
    elif in_grace:
        return Deferred(missing_file_wait(since_end, settings.recordings_missing_grace_seconds))
    else:
        async with transaction(sessions) as session:
            await _still_ours(session, job, worker)
            await session.execute(
                update(Recording)
                .where(Recording.id == recording.id)
                .values(state="missing", error=f"no file at {source}", processed_at=utcnow())
            )
            await mark_done(session, job.id, worker)
        log.warning("recording %s of call %s: no file at %s", recording.id, recording.linkedid, source)
        return None

    spans: list[list[float]] = []
    if file_end is not None:
        spans = pci_spans(pauses, file_end - dt.timedelta(seconds=measured.duration_s), measured.duration_s)
    queue = recording.queue or (call.queue if call is not None else None)
    async with transaction(sessions) as session:
        await _still_ours(session, job, worker)
        await session.execute(
            update(Recording)
            .where(Recording.id == recording.id)
            .values(
                state="ready",
                storage_path=relpath,
                format=fmt,
                duration_s=measured.duration_s,
                size_bytes=measured.size_bytes,
                sha256=measured.sha256,
                peaks=measured.peaks,
                pci_spans=spans,
                queue=queue,
                call_id=call.id if call is not None else recording.call_id,
                retain_until=recording.recorded_at + dt.timedelta(days=retention_days(settings, queue)),
                processed_at=utcnow(),
                error=None,
            )
        )
    # Committed: the stored file is durable and described, so MixMonitor's copy may go now.
    if exists:
        await run_blocking(_remove_source, source, target, measured.size_bytes)
    async with transaction(sessions) as session:
        await mark_done(session, job.id, worker)
    log.info(
        "recording %s of call %s stored as %s (%.1f s, %d bytes)",
        recording.id,
        recording.linkedid,
        relpath,
        measured.duration_s,
        measured.size_bytes,
    )
    return None


def default_worker_name() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"
