"""The recording worker: a bounded pool that claims due jobs with a lease and runs them off the loop.

``recordings_workers`` jobs run at once; their blocking work (WAV decode, numpy peaks, SHA-256, the
ffmpeg child that encodes) goes to a thread pool of the same size — the bulk of it releases the GIL
or runs in ffmpeg, so threads use the cores without a process pool's start-up and pickling.
The loop wakes on :meth:`wake` (a call just ended) or every ``poll_seconds`` (retries, leases that
expired because another server died).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import is_disconnect, utcnow
from crm_core.settings import Settings
from recordings.jobs import (
    ClaimedJob,
    backfill_from_call_log,
    claim,
    defer,
    open_jobs,
    record_failure,
    renew_lease,
)
from recordings.processing import Deferred, LeaseLost, default_worker_name, process_job

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKFILL_DAYS = 2  # on start: calls of the last days whose CallEnded was never queued (DB was down)


class RecordingWorker:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        name: str | None = None,
        lease_seconds: float = 600.0,
        poll_seconds: float = 5.0,
        gather_seconds: float = 0.25,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.name = name or default_worker_name()
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        # After a call ends, wait this long before claiming: the calls that end meanwhile are claimed
        # in the same query. Claiming on every call end was the engine's most frequent statement under
        # cti_load (1,688 claims in a 30 s run of 300 calls). A freed slot claims at once (a backlog
        # is worked through without pauses).
        self.gather_seconds = gather_seconds
        self._slot_freed = False
        self.slots = settings.recordings_workers
        self.processed = 0
        self.failed = 0
        self._executor: ThreadPoolExecutor | None = None
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.slots, thread_name_prefix="recordings")
        self._loop_task = asyncio.create_task(self._loop(), name="recordings-worker")

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish (their lease would hand them over anyway)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def run_until_idle(self) -> None:
        """Process until no job is open (tests, the CLI's one-shot run); bound it with asyncio.timeout.
        A dead worker's job is waited for until its lease runs out."""
        owns_executor = self._executor is None
        if owns_executor:
            self._executor = ThreadPoolExecutor(self.slots, thread_name_prefix="recordings")
        try:
            while True:
                jobs = await claim(self.sessions, self.name, limit=self.slots, lease_seconds=self.lease_seconds)
                if not jobs:
                    if not await open_jobs(self.sessions):
                        return
                    await asyncio.sleep(0.2)  # deferred ones, or a dead worker's lease running out
                    continue
                await asyncio.gather(*(self.run_job(job) for job in jobs))
        finally:
            if owns_executor and self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    async def _loop(self) -> None:
        try:
            since = utcnow() - dt.timedelta(days=BACKFILL_DAYS)
            if queued := await backfill_from_call_log(self.sessions, self.settings, since=since):
                log.warning("queued %d recordings the call log names but no job had", queued)
        except Exception:
            log.warning("recording backfill from the call log failed; next start tries again", exc_info=True)
        while True:
            free = self.slots - len(self._running)
            if free > 0:
                try:
                    jobs = await claim(self.sessions, self.name, limit=free, lease_seconds=self.lease_seconds)
                except Exception as exc:
                    level = logging.WARNING if is_disconnect(exc) else logging.ERROR
                    log.log(level, "claiming recording jobs failed; retrying", exc_info=True)
                    jobs = []
                for job in jobs:
                    task = asyncio.create_task(self._run_logged(job), name=f"recording-job-{job.id}")
                    self._running.add(task)
                    task.add_done_callback(self._finished)
                if jobs and len(jobs) == free:
                    continue  # maybe more are due: fill the free slots before sleeping
            self._wake.clear()
            self._slot_freed = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
                    if not self._slot_freed:
                        await asyncio.sleep(self.gather_seconds)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slot_freed = True
        self._wake.set()  # a slot is free

    async def _run_logged(self, job: ClaimedJob) -> None:
        deferred = await self.run_job(job)
        if deferred is not None:
            # Re-check when the file may be complete; the loop's poll would do it later anyway.
            asyncio.get_running_loop().call_later(deferred, self._wake.set)

    async def run_job(self, job: ClaimedJob) -> float | None:
        """Run one job; returns the seconds after which a deferred job is due again."""
        heartbeat = asyncio.create_task(self._heartbeat(job), name=f"recording-lease-{job.id}")
        try:
            outcome = await process_job(self.sessions, self.settings, job, self.name, self._blocking)
        except LeaseLost:
            log.warning("recording job %s: lease lost to another worker", job.id)
            return None
        except Exception as exc:
            self.failed += 1
            error = f"{type(exc).__name__}: {exc}"
            log.warning("recording job %s (recording %s) failed: %s", job.id, job.recording_id, error, exc_info=True)
            try:
                final = await record_failure(self.sessions, job, self.name, error, self.settings)
            except Exception:
                log.exception("recording job %s: storing the failure failed (the lease will expire)", job.id)
                return None
            if final:
                log.error("recording %s failed for good after %d attempts: %s", job.recording_id, job.attempts, error)
            return None
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if isinstance(outcome, Deferred):
            try:
                await defer(self.sessions, job, self.name, outcome.seconds)
            except Exception:
                log.warning("recording job %s: deferring failed (the lease will expire)", job.id, exc_info=True)
                return None
            return outcome.seconds
        self.processed += 1
        return None

    async def _heartbeat(self, job: ClaimedJob) -> None:
        """Renew the lease every third of it while the job runs, so a long recording is never taken
        over by a second worker while this one is alive; a dead worker stops renewing."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                if not await renew_lease(self.sessions, job.id, self.name, self.lease_seconds):
                    return
            except Exception:
                log.warning("recording job %s: renewing the lease failed", job.id, exc_info=True)

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
