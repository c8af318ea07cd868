"""Retention: purge recordings past ``retain_until`` (never under legal hold), and the legal hold itself.

Both write ``recording_access_log`` rows (purge / hold / release), so the audit shows who removed or
froze what. The purge reports first (``dry_run=True``) and deletes the same set when run for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.recording_models import Recording, RecordingAccess
from crm_core.db import transaction, utcnow
from crm_core.settings import Settings
from recordings.storage import host_source_path, storage_abspath

log = logging.getLogger(__name__)

Sessions = async_sessionmaker[AsyncSession]


class RecordingNotFound(LookupError):
    """No recording with that id."""


class RecordingPurged(ValueError):
    """The recording is gone already: nothing left to hold."""


@dataclass
class QueuePurge:
    count: int = 0
    bytes: int = 0


@dataclass
class PurgeReport:
    """What a purge removes (dry run) or removed."""

    dry_run: bool
    now: dt.datetime
    count: int = 0
    bytes: int = 0
    ids: list[int] = field(default_factory=list)
    by_queue: dict[str, QueuePurge] = field(default_factory=dict)
    held_back: int = 0  # past retention but under legal hold

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "count": self.count,
            "bytes": self.bytes,
            "ids": self.ids,
            "held_back": self.held_back,
            "by_queue": {q: {"count": p.count, "bytes": p.bytes} for q, p in sorted(self.by_queue.items())},
        }


def _delete_files(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def purge(
    sessions: Sessions,
    settings: Settings,
    *,
    dry_run: bool = True,
    now: dt.datetime | None = None,
    user_id: int | None = None,
    batch: int = 500,
) -> PurgeReport:
    """Remove recordings whose ``retain_until`` has passed and that are not on legal hold.

    Each batch is locked, re-checked (a hold set meanwhile wins), its files deleted, then its rows
    marked ``purged`` with an audit row each, in one transaction: a crash between the delete and the
    commit leaves rows whose files are gone, which the next purge finds and completes.
    """
    now = now or utcnow()
    report = PurgeReport(dry_run=dry_run, now=now)
    due = (Recording.state != "purged") & (Recording.retain_until < now)
    async with sessions() as session:
        held = await session.execute(select(Recording.id).where(due, Recording.legal_hold.is_(True)))
        report.held_back = len(held.all())
    last_id = 0
    while True:
        # A dry run only reads (no locks, nothing written); the real run locks each batch it removes.
        unit = sessions() if dry_run else transaction(sessions)
        async with unit as session:
            query = (
                select(Recording)
                .where(due, Recording.legal_hold.is_(False), Recording.id > last_id)
                .order_by(Recording.id)
                .limit(batch)
            )
            if not dry_run:
                query = query.with_for_update(skip_locked=True)
            rows = list((await session.execute(query)).scalars())
            if not rows:
                break
            last_id = rows[-1].id
            files: list[Path] = []
            for rec in rows:
                size = rec.size_bytes or 0
                report.count += 1
                report.bytes += size
                report.ids.append(rec.id)
                per_queue = report.by_queue.setdefault(rec.queue or "-", QueuePurge())
                per_queue.count += 1
                per_queue.bytes += size
                if rec.storage_path:
                    files.append(storage_abspath(settings, rec.storage_path))
                files.append(host_source_path(settings, rec.source_path))  # a failed job's spool file
            if dry_run:
                continue
            await asyncio.get_running_loop().run_in_executor(None, _delete_files, files)
            await session.execute(
                update(Recording)
                .where(Recording.id.in_([r.id for r in rows]))
                .values(state="purged", purged_at=now, peaks=None)
            )
            session.add_all(
                RecordingAccess(
                    recording_id=r.id,
                    call_id=r.call_id,
                    user_id=user_id,
                    action="purge",
                    at=now,
                    detail=f"retain_until {r.retain_until:%Y-%m-%d}, {r.size_bytes or 0} bytes",
                )
                for r in rows
            )
    if not dry_run and report.count:
        log.info("purged %d recordings (%d bytes)", report.count, report.bytes)
    return report


async def set_legal_hold(
    sessions: Sessions,
    recording_id: int,
    on: bool,
    *,
    reason: str | None,
    user_id: int | None,
    remote: str | None = None,
) -> Recording:
    """Put a recording on legal hold (purge skips it whatever its retention) or release it; audited as
    ``hold`` / ``release`` with the reason. Raises RecordingNotFound / RecordingPurged."""
    if on and not (reason or "").strip():
        raise ValueError("a legal hold needs a reason")
    async with transaction(sessions) as session:
        recording = await session.get(Recording, recording_id, with_for_update=True)
        if recording is None:
            raise RecordingNotFound(recording_id)
        if recording.state == "purged":
            raise RecordingPurged(recording_id)
        now = utcnow()
        recording.legal_hold = on
        recording.hold_reason = reason if on else None
        recording.hold_by_user_id = user_id if on else None
        recording.hold_at = now if on else None
        session.add(
            RecordingAccess(
                recording_id=recording.id,
                call_id=recording.call_id,
                user_id=user_id,
                action="hold" if on else "release",
                at=now,
                remote=remote,
                detail=(reason or "")[:255] or None,
            )
        )
    return recording


def next_purge_at(now: dt.datetime, hour: int, timezone: str) -> dt.datetime:
    """The next `hour`:00 local time after `now` (UTC in, UTC out)."""
    local = now.astimezone(ZoneInfo(timezone))
    target = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if target <= local:
        target = (local + dt.timedelta(days=1)).replace(hour=hour, minute=0, second=0, microsecond=0)
    return target.astimezone(dt.UTC)


async def scheduled_purge(sessions: Sessions, settings: Settings, *, now: dt.datetime | None = None) -> PurgeReport:
    """The nightly run: the dry-run report goes to the log first, then the same cut-off purges (so the
    log says what was about to go even if the real run fails half-way)."""
    now = now or utcnow()
    report = await purge(sessions, settings, dry_run=True, now=now)
    summary = {k: v for k, v in report.as_dict().items() if k != "ids"}
    log.info("retention: due for purge %s", summary)
    if report.count == 0:
        return report
    return await purge(sessions, settings, dry_run=False, now=now)


class RetentionSchedule:
    """Runs `scheduled_purge` daily at `settings.recordings_purge_hour` (local); None disables it.
    Several servers may run it: the real purge locks its batches with SKIP LOCKED."""

    def __init__(self, settings: Settings, sessions: Sessions) -> None:
        self.settings = settings
        self.sessions = sessions
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.settings.recordings_purge_hour is not None and self._task is None:
            self._task = asyncio.create_task(self._loop(self.settings.recordings_purge_hour), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self, hour: int) -> None:
        while True:
            now = utcnow()
            await asyncio.sleep((next_purge_at(now, hour, self.settings.timezone) - now).total_seconds())
            try:
                await scheduled_purge(self.sessions, self.settings)
            except Exception:  # the database is away: tomorrow's run (or the CLI) catches up
                log.exception("scheduled recordings purge failed")
