"""The recording job table: enqueue on call end, claim with a lease, finish, defer, retry or fail.

A claim sets ``state=running``, a ``lease_until`` and the worker's name; a worker that dies leaves the
lease to expire, and the next claim takes the job again. Attempts are counted at the claim, so a job
that kills its worker every time still ends ``failed`` after ``recordings_max_attempts``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.models import Call
from crm_core.calllog.recording_models import Recording, RecordingJob
from crm_core.db import insert_for, transaction, utcnow
from crm_core.settings import Settings

Sessions = async_sessionmaker[AsyncSession]

BACKOFF_BASE_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 900.0


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: int
    recording_id: int
    kind: str
    attempts: int


def retention_days(settings: Settings, queue: str | None) -> int:
    """The queue's own retention, else the site default."""
    policy = settings.queues.get(queue) if queue else None
    if policy is not None and policy.retention_days is not None:
        return policy.retention_days
    return settings.recordings_retention_days


def backoff_seconds(attempts: int) -> float:
    """10 s, 20 s, 40 s … capped at 15 min: a full disk or a busy ffmpeg gets time to recover."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** max(0, attempts - 1))


async def enqueue_recording(
    sessions: Sessions,
    settings: Settings,
    *,
    linkedid: str,
    source_path: str,
    queue: str | None,
    started_at: dt.datetime,
    pbx: str | None = None,
) -> int | None:
    """Create the recording row and its job in one transaction; the id, or None when the file is known
    already (a replayed CallEnded, a restart), so replays never queue the same file twice."""
    days = retention_days(settings, queue)
    async with transaction(sessions) as session:
        stmt = (
            insert_for(session, Recording.__table__)
            .values(
                pbx=pbx or settings.pbx_name,
                linkedid=linkedid,
                source_path=source_path,
                state="pending",
                queue=queue,
                recorded_at=started_at,
                retain_until=started_at + dt.timedelta(days=days),
                legal_hold=False,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["source_path"])
            .returning(Recording.__table__.c.id)
        )
        recording_id = (await session.execute(stmt)).scalar_one_or_none()
        if recording_id is None:
            return None
        session.add(RecordingJob(recording_id=recording_id, kind="process", state="queued", run_after=utcnow()))
    return int(recording_id)


async def claim(
    sessions: Sessions, worker: str, *, limit: int, lease_seconds: float, now: dt.datetime | None = None
) -> list[ClaimedJob]:
    """Take up to ``limit`` due jobs: queued ones whose time has come and running ones whose lease
    expired (their worker died). PostgreSQL skips rows another worker is claiming; SQLite's writers
    are serialised by BEGIN IMMEDIATE, so both engines hand each job to one worker."""
    now = now or utcnow()
    job = RecordingJob
    async with transaction(sessions) as session:
        due = (
            select(job.id)
            .where(
                or_(
                    (job.state == "queued") & (job.run_after <= now),
                    (job.state == "running") & (job.lease_until < now),
                )
            )
            .order_by(job.run_after, job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list((await session.execute(due)).scalars())
        if not ids:
            return []
        rows = await session.execute(
            update(job)
            .where(job.id.in_(ids))
            .values(
                state="running",
                lease_until=now + dt.timedelta(seconds=lease_seconds),
                worker=worker,
                attempts=job.attempts + 1,
                updated_at=now,
            )
            .returning(job.id, job.recording_id, job.kind, job.attempts)
        )
        claimed = [ClaimedJob(id=r[0], recording_id=r[1], kind=r[2], attempts=r[3]) for r in rows]
    return sorted(claimed, key=lambda c: c.id)


async def renew_lease(sessions: Sessions, job_id: int, worker: str, lease_seconds: float) -> bool:
    """Extend a running job's lease (the worker's heartbeat); False when it is no longer ours."""
    now = utcnow()
    async with transaction(sessions) as session:
        result = await session.execute(
            update(RecordingJob)
            .where(RecordingJob.id == job_id, RecordingJob.worker == worker, RecordingJob.state == "running")
            .values(lease_until=now + dt.timedelta(seconds=lease_seconds), updated_at=now)
        )
    return bool(getattr(result, "rowcount", 0))


async def mark_done(session: AsyncSession, job_id: int, worker: str) -> None:
    """Done, but only by the worker holding the lease (a slow worker whose lease was taken over must
    not close the job the new owner is running)."""
    await session.execute(
        update(RecordingJob)
        .where(RecordingJob.id == job_id, RecordingJob.worker == worker, RecordingJob.state == "running")
        .values(state="done", lease_until=None, last_error=None, updated_at=utcnow())
    )


async def defer(sessions: Sessions, job: ClaimedJob, worker: str, seconds: float) -> None:
    """Not ready yet (the file is still being written): try again soon, without spending an attempt."""
    now = utcnow()
    async with transaction(sessions) as session:
        await session.execute(
            update(RecordingJob)
            .where(RecordingJob.id == job.id, RecordingJob.worker == worker)
            .values(
                state="queued",
                lease_until=None,
                attempts=RecordingJob.attempts - 1,
                run_after=now + dt.timedelta(seconds=seconds),
                updated_at=now,
            )
        )


async def record_failure(sessions: Sessions, job: ClaimedJob, worker: str, error: str, settings: Settings) -> bool:
    """Retry later with backoff, or — after the last attempt — end the job and its recording
    ``failed`` with the error kept. True when it was the last attempt."""
    now = utcnow()
    error = error[:500]
    final = job.attempts >= settings.recordings_max_attempts
    async with transaction(sessions) as session:
        values: dict[str, object] = {"lease_until": None, "last_error": error, "updated_at": now}
        if final:
            values["state"] = "failed"
        else:
            values["state"] = "queued"
            values["run_after"] = now + dt.timedelta(seconds=backoff_seconds(job.attempts))
        await session.execute(
            update(RecordingJob).where(RecordingJob.id == job.id, RecordingJob.worker == worker).values(**values)
        )
        recording_values: dict[str, object] = {"error": error}
        if final:
            recording_values["state"] = "failed"
        await session.execute(
            update(Recording)
            .where(Recording.id == job.recording_id, Recording.state.not_in(("ready", "purged")))
            .values(**recording_values)
        )
    return final


async def request_reprocess(sessions: Sessions, recording_id: int) -> bool:
    """Queue a recording again (after a fix, or to re-measure); False if unknown or purged."""
    async with transaction(sessions) as session:
        recording = await session.get(Recording, recording_id, with_for_update=True)
        if recording is None or recording.state == "purged":
            return False
        recording.state = "pending"
        recording.error = None
        session.add(RecordingJob(recording_id=recording_id, kind="reprocess", state="queued", run_after=utcnow()))
    return True


async def status_counts(sessions: Sessions) -> dict[str, dict[str, int]]:
    """Recordings and jobs by state, for `cti recordings status` and the health page."""
    async with sessions() as session:
        recordings = await session.execute(select(Recording.state, func.count()).group_by(Recording.state))
        jobs = await session.execute(select(RecordingJob.state, func.count()).group_by(RecordingJob.state))
        return {
            "recordings": {state: int(n) for state, n in recordings},
            "jobs": {state: int(n) for state, n in jobs},
        }


async def open_jobs(sessions: Sessions) -> int:
    """Jobs not finished yet (queued, deferred or running)."""
    async with sessions() as session:
        n = await session.scalar(
            select(func.count()).select_from(RecordingJob).where(RecordingJob.state.in_(("queued", "running")))
        )
        return int(n or 0)


async def backfill_from_call_log(sessions: Sessions, settings: Settings, *, since: dt.datetime) -> int:
    """Queue recordings of calls since ``since`` that the call log names but no recording row knows (a
    CallEnded handled while the database was away, a server stopped before its bus drained)."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Call.pbx, Call.linkedid, Call.recording_file, Call.queue, Call.started_at).where(
                    Call.started_at >= since,
                    Call.state == "ended",
                    Call.recording_file.is_not(None),
                    ~select(Recording.id).where(Recording.source_path == Call.recording_file).exists(),
                )
            )
        ).all()
    queued = 0
    for pbx, linkedid, source_path, queue, started_at in rows:
        if source_path and await enqueue_recording(
            sessions, settings, linkedid=linkedid, source_path=source_path, queue=queue, started_at=started_at, pbx=pbx
        ):
            queued += 1
    return queued
