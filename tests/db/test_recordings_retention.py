"""Retention on both engines: the dry run reports exactly what the purge then removes; legal hold wins
over retention; every purge, hold and release leaves an audit row."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core import migrate
from crm_core.calllog.recording_models import Recording, RecordingAccess
from crm_core.db import make_engine, make_sessionmaker, transaction
from crm_core.security.policy import Role
from crm_core.settings import Settings
from recordings.retention import (
    RecordingNotFound,
    RecordingPurged,
    next_purge_at,
    purge,
    scheduled_purge,
    set_legal_hold,
)
from tests.db.factories import principal

Sessions = async_sessionmaker[AsyncSession]
REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def rec_settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        recordings_dir=str(tmp_path / "store"),
        recordings_source_map={"/pbx": str(tmp_path / "spool")},
    )


async def stored(
    sessions: Sessions, settings: Settings, linkedid: str, *, retain_days: float, queue: str | None, size: int = 1000
) -> tuple[int, Path]:
    """A processed recording whose retention ends ``retain_days`` from NOW, with its file on disk."""
    relpath = f"2026/01/01/{linkedid}.mp3"
    path = Path(settings.recordings_dir) / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff" * size)
    async with transaction(sessions) as session:
        rec = Recording(
            linkedid=linkedid,
            source_path=f"/pbx/{linkedid}.wav",
            storage_path=relpath,
            format="mp3",
            state="ready",
            size_bytes=size,
            queue=queue,
            recorded_at=NOW - dt.timedelta(days=400),
            retain_until=NOW + dt.timedelta(days=retain_days),
        )
        session.add(rec)
        await session.flush()
        return rec.id, path


async def audit(sessions: Sessions) -> list[tuple[int | None, str, int | None, str | None]]:
    async with sessions() as session:
        rows = await session.execute(
            select(
                RecordingAccess.recording_id, RecordingAccess.action, RecordingAccess.user_id, RecordingAccess.detail
            ).order_by(RecordingAccess.id)
        )
        return [(a, b, c, d) for a, b, c, d in rows]


async def test_the_dry_run_reports_what_the_purge_then_removes_and_holds_are_kept(
    sessions: Sessions, rec_settings: Settings
) -> None:
    admin = await principal(sessions, "admin1", Role.ADMIN)
    expired_ms, expired_ms_file = await stored(sessions, rec_settings, "1.1", retain_days=-1, queue="member-service")
    expired_vip, expired_vip_file = await stored(sessions, rec_settings, "1.2", retain_days=-30, queue="vip", size=500)
    held, held_file = await stored(sessions, rec_settings, "1.3", retain_days=-5, queue="vip")
    kept, kept_file = await stored(sessions, rec_settings, "1.4", retain_days=+1, queue="vip")
    # A failed job's recording past retention: its spool file goes too.
    spool = Path(rec_settings.recordings_source_map["/pbx"]) / "1.5.wav"
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_bytes(b"RIFF")
    async with transaction(sessions) as session:
        failed = Recording(
            linkedid="1.5", source_path="/pbx/1.5.wav", state="failed", retain_until=NOW - dt.timedelta(days=1)
        )
        session.add(failed)
    await set_legal_hold(sessions, held, True, reason="dispute #42", user_id=admin.user_id)

    report = await purge(sessions, rec_settings, dry_run=True, now=NOW)
    assert report.as_dict() | {"now": None} == {
        "dry_run": True,
        "now": None,
        "count": 3,
        "bytes": 1500,
        "ids": [expired_ms, expired_vip, failed.id],
        "held_back": 1,
        "by_queue": {
            "-": {"count": 1, "bytes": 0},
            "member-service": {"count": 1, "bytes": 1000},
            "vip": {"count": 1, "bytes": 500},
        },
    }
    # Nothing touched by the dry run.
    assert all(p.exists() for p in (expired_ms_file, expired_vip_file, held_file, kept_file, spool))
    async with sessions() as session:
        assert "purged" not in set((await session.execute(select(Recording.state))).scalars())

    real = await purge(sessions, rec_settings, dry_run=False, now=NOW, user_id=admin.user_id)
    assert (real.count, real.bytes, real.ids) == (report.count, report.bytes, report.ids)
    assert not expired_ms_file.exists() and not expired_vip_file.exists() and not spool.exists()
    assert held_file.exists() and kept_file.exists()
    async with sessions() as session:
        states = dict((await session.execute(select(Recording.id, Recording.state))).all())
        purged_at = await session.scalar(select(Recording.purged_at).where(Recording.id == expired_ms))
    assert states == {expired_ms: "purged", expired_vip: "purged", held: "ready", kept: "ready", failed.id: "purged"}
    assert purged_at == NOW
    log = await audit(sessions)
    assert log[0] == (held, "hold", admin.user_id, "dispute #42")
    assert sorted((r, a, u) for r, a, u, _ in log[1:]) == [
        (
            expired_ms,
            "purge",
            admin.user_id,
        ),
        (expired_vip, "purge", admin.user_id),
        (failed.id, "purge", admin.user_id),
    ]
    # Purging again finds nothing; releasing the hold lets the next purge take it.
    assert (await purge(sessions, rec_settings, dry_run=False, now=NOW)).count == 0
    await set_legal_hold(sessions, held, False, reason=None, user_id=admin.user_id)
    after = await purge(sessions, rec_settings, dry_run=False, now=NOW)
    assert after.ids == [held] and not held_file.exists()
    assert [(r, a) for r, a, _, _ in (await audit(sessions))[-2:]] == [(held, "release"), (held, "purge")]


async def test_a_legal_hold_needs_a_reason_and_an_existing_recording(
    sessions: Sessions, rec_settings: Settings
) -> None:
    rec_id, _ = await stored(sessions, rec_settings, "2.1", retain_days=-1, queue=None)
    with pytest.raises(ValueError, match="reason"):
        await set_legal_hold(sessions, rec_id, True, reason="  ", user_id=None)
    with pytest.raises(RecordingNotFound):
        await set_legal_hold(sessions, 999_999, True, reason="x", user_id=None)
    await purge(sessions, rec_settings, dry_run=False, now=NOW)
    with pytest.raises(RecordingPurged):
        await set_legal_hold(sessions, rec_id, True, reason="too late", user_id=None)
    assert [a for _, a, _, _ in await audit(sessions)] == ["purge"]


async def test_the_cli_reports_holds_releases_and_purges(tmp_path: Path) -> None:
    """`cti recordings …` as an operator runs it, on its own SQLite file (one engine is enough here:
    the commands only call the services tested above on both)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    await migrate.upgrade(url)
    settings = Settings(database_url=url, recordings_dir=str(tmp_path / "store"))
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        await principal(sessions, "admin1", Role.ADMIN)
        old, old_file = await stored(sessions, settings, "3.1", retain_days=-400, queue="vip")
    finally:
        await engine.dispose()
    env = {**os.environ, "CTI_DATABASE_URL": url, "CTI_RECORDINGS_DIR": settings.recordings_dir}

    async def cti(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            str(REPO / ".venv/bin/cti"), "recordings", *args, env=env, stdout=PIPE, stderr=STDOUT
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    assert await cti("hold", str(old), "--reason", "court order 7", "--as", "admin1") == (
        0,
        f"recording {old}: legal hold on\n",
    )
    code, out = await cti("purge", "--dry-run")
    assert code == 0 and json.loads(out)["count"] == 0 and json.loads(out)["held_back"] == 1
    assert (await cti("release", str(old)))[0] == 0
    code, out = await cti("purge")
    assert code == 0 and json.loads(out)["ids"] == [old] and not old_file.exists()
    code, out = await cti("status")
    assert code == 0 and json.loads(out) == {"jobs": {}, "recordings": {"purged": 1}}


def test_the_nightly_purge_runs_at_the_local_hour() -> None:
    shanghai_0259 = dt.datetime(2026, 11, 23, 18, 59, tzinfo=dt.UTC)  # 02:59 on the 24th in Shanghai
    assert next_purge_at(shanghai_0259, 3, "Asia/Shanghai") == dt.datetime(2026, 11, 23, 19, 0, tzinfo=dt.UTC)
    assert next_purge_at(dt.datetime(2026, 11, 23, 19, 0, tzinfo=dt.UTC), 3, "Asia/Shanghai") == dt.datetime(
        2026, 11, 24, 19, 0, tzinfo=dt.UTC
    )
    # Across a DST change the local hour holds (Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET).
    assert next_purge_at(dt.datetime(2026, 10, 24, 12, 0, tzinfo=dt.UTC), 4, "Europe/Berlin") == dt.datetime(
        2026, 10, 25, 3, 0, tzinfo=dt.UTC
    )


async def test_the_scheduled_purge_reports_then_purges_the_same_set(
    sessions: Sessions, rec_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    expired, expired_file = await stored(sessions, rec_settings, "2.1", retain_days=-1, queue="vip")
    _kept, kept_file = await stored(sessions, rec_settings, "2.2", retain_days=10, queue="vip")
    held, held_file = await stored(sessions, rec_settings, "2.3", retain_days=-3, queue="vip")
    await set_legal_hold(sessions, held, True, reason="dispute", user_id=None)
    with caplog.at_level("INFO", logger="recordings.retention"):
        report = await scheduled_purge(sessions, rec_settings, now=NOW)
    assert not report.dry_run and report.ids == [expired] and report.held_back == 1
    assert "due for purge" in caplog.text and "'count': 1" in caplog.text
    assert not expired_file.exists() and kept_file.exists() and held_file.exists()
    again = await scheduled_purge(sessions, rec_settings, now=NOW)
    assert again.dry_run and again.count == 0  # nothing left: the second night only reports
