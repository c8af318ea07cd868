"""`cti recordings …`: status, purge (dry run first), legal hold / release, reprocess."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import make_engine, make_sessionmaker
from crm_core.security.models import User
from crm_core.settings import Settings
from recordings.jobs import request_reprocess, status_counts
from recordings.retention import RecordingNotFound, RecordingPurged, purge, set_legal_hold

T = TypeVar("T")
Sessions = async_sessionmaker[AsyncSession]


def _with_db(settings: Settings, work: Callable[[Sessions], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = make_engine(settings.database_url)
        try:
            return await work(make_sessionmaker(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


async def _user_id(sessions: Sessions, username: str | None) -> int | None:
    if username is None:
        return None
    async with sessions() as session:
        user_id = await session.scalar(select(User.id).where(User.username == username))
    if user_id is None:
        raise click.ClickException(f"no user {username!r}")
    return int(user_id)


@click.group("recordings")
def recordings() -> None:
    """Call recordings: pipeline status, retention purge, legal hold, reprocessing."""


@recordings.command("status")
@click.pass_obj
def status(settings: Settings) -> None:
    """Recordings and jobs by state."""
    click.echo(json.dumps(_with_db(settings, status_counts), indent=2, sort_keys=True))


@recordings.command("purge")
@click.option("--dry-run", is_flag=True, help="only report what would be removed")
@click.option("--as", "username", default=None, help="the user the audit names (default: the system)")
@click.pass_obj
def purge_cmd(settings: Settings, dry_run: bool, username: str | None) -> None:
    """Delete recordings past their retention (never those on legal hold); prints the report as JSON."""

    async def work(sessions: Sessions) -> dict[str, object]:
        user_id = await _user_id(sessions, username)
        return (await purge(sessions, settings, dry_run=dry_run, user_id=user_id)).as_dict()

    click.echo(json.dumps(_with_db(settings, work), indent=2))


def _hold(settings: Settings, recording_id: int, on: bool, reason: str | None, username: str | None) -> None:
    async def work(sessions: Sessions) -> None:
        user_id = await _user_id(sessions, username)
        await set_legal_hold(sessions, recording_id, on, reason=reason, user_id=user_id)

    try:
        _with_db(settings, work)
    except (RecordingNotFound, RecordingPurged, ValueError) as exc:
        raise click.ClickException(f"recording {recording_id}: {type(exc).__name__} {exc}") from exc
    click.echo(f"recording {recording_id}: legal hold {'on' if on else 'released'}")


@recordings.command("hold")
@click.argument("recording_id", type=int)
@click.option("--reason", required=True, help="why (case number, dispute): kept in the audit")
@click.option("--as", "username", default=None, help="the user the audit names")
@click.pass_obj
def hold(settings: Settings, recording_id: int, reason: str, username: str | None) -> None:
    """Put a recording on legal hold: no purge removes it until released."""
    _hold(settings, recording_id, True, reason, username)


@recordings.command("release")
@click.argument("recording_id", type=int)
@click.option("--as", "username", default=None, help="the user the audit names")
@click.pass_obj
def release(settings: Settings, recording_id: int, username: str | None) -> None:
    """Release a legal hold; retention applies again."""
    _hold(settings, recording_id, False, None, username)


@recordings.command("reprocess")
@click.argument("recording_id", type=int)
@click.option("--now", "run_now", is_flag=True, help="process here and now instead of leaving it to the server")
@click.pass_obj
def reprocess(settings: Settings, recording_id: int, run_now: bool) -> None:
    """Queue a recording again (transcode from the spool file if still there, else re-measure)."""

    async def work(sessions: Sessions) -> bool:
        if not await request_reprocess(sessions, recording_id):
            return False
        if run_now:
            from recordings.worker import RecordingWorker  # pydub and numpy: only when transcoding here

            await RecordingWorker(settings, sessions, name="cli").run_until_idle()
        return True

    if not _with_db(settings, work):
        raise click.ClickException(f"recording {recording_id}: unknown or purged")
    click.echo(f"recording {recording_id}: queued{' and processed' if run_now else ''}")
