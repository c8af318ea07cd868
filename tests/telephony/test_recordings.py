"""A real recorded call through the sandbox: MixMonitor's file is queued on CallEnded, transcoded by the
engine's worker into the dated layout, and the stored audio is the call — audible and as long as it.

Runs on PostgreSQL like tests/telephony/test_cti_engine.py; the sandbox phones play tones (agents a
sweep, customers a chord), so both sides of the call carry audio.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from asterisk_sandbox import BaresipPhone, Sandbox
from sqlalchemy import select

from crm_core.calllog.models import CallLeg
from crm_core.calllog.recording_models import Recording
from crm_core.settings import QueuePolicy
from cti.engine import CtiEngine
from tests.telephony.support import (
    MEMBER_SERVICE,
    Sessions,
    call_row,
    engine_settings,
    ready,
    ring,
    running_engine,
    wrapup_of,
)

pytestmark = pytest.mark.telephony

TALK_SECONDS = 3.0


@pytest.fixture(scope="module")
async def rec_engine(
    sandbox: Sandbox, pg_sessions: Sessions, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[CtiEngine]:
    settings = engine_settings(
        sandbox,
        queues={
            "member-service": QueuePolicy(wrapup_seconds=wrapup_of(sandbox), retention_days=30),
            "vip": QueuePolicy(),
        },
        recordings_dir=str(tmp_path_factory.mktemp("recordings")),
        # MixMonitor names the file inside the chroot; the engine reads it on the host.
        recordings_source_map={sandbox.state["recordings_dir_chroot"]: sandbox.state["recordings_dir"]},
    )
    async with running_engine(settings, pg_sessions) as cti:
        yield cti


async def wait_recording(sessions: Sessions, linkedid: str, timeout: float = 30.0) -> Recording:
    deadline = time.monotonic() + timeout
    rec = None
    while time.monotonic() < deadline:
        async with sessions() as session:
            rec = (await session.execute(select(Recording).where(Recording.linkedid == linkedid))).scalar_one_or_none()
        if rec is not None and rec.state not in ("pending",):
            return rec
        await asyncio.sleep(0.1)
    raise AssertionError(f"recording of {linkedid} not processed: {rec and (rec.state, rec.error)}")


def decode(path: Path) -> np.ndarray:
    """The stored file as ffmpeg decodes it, 8 kHz mono floats in -1..1."""
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "8000", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float64) / 32768


async def test_a_real_recorded_call_is_stored_audible_and_as_long_as_the_call(
    rec_engine: CtiEngine, pg_sessions: Sessions, phones: dict[str, BaresipPhone], sandbox: Sandbox
) -> None:
    """What the duration is compared with: MixMonitor starts right after Answer() in the inbound
    dialplan — before the caller waits in the queue — and stops at hangup. So the file spans from the
    PBX's answer of the customer channel (the customer leg's ``answered_at`` in the call log) to the
    call's ``ended_at``: that interval, not the agent's talk time (which starts later, when the agent
    picks up), is what the stored duration must match within 0.5 s. The talk time is inside it."""
    await ready(rec_engine, "agent1001", "agent1002")
    await ring(phones["cust1"], MEMBER_SERVICE, phones["agent1001"])
    await phones["agent1001"].accept()
    await asyncio.sleep(TALK_SECONDS)
    await phones["cust1"].hangup()
    linkedid = (await ended_linkedid(rec_engine)).linkedid
    call = await call_row(pg_sessions, linkedid)
    rec = await wait_recording(pg_sessions, linkedid)
    assert rec.state == "ready", rec.error
    async with pg_sessions() as session:
        customer_answered = await session.scalar(
            select(CallLeg.answered_at).where(CallLeg.call_id == call.id, CallLeg.role == "customer")
        )
    assert customer_answered is not None and call.ended_at is not None and call.talk_s is not None

    # Stored in the dated layout by the call's local (Shanghai) day, linked, kept the queue's 30 days.
    local_day = call.started_at.astimezone(dt.timezone(dt.timedelta(hours=8)))
    assert rec.storage_path == f"{local_day:%Y/%m/%d}/{linkedid}.mp3"
    assert rec.call_id == call.id and rec.queue == "member-service"
    assert rec.retain_until == rec.recorded_at + dt.timedelta(days=30)
    stored = Path(rec_engine.settings.recordings_dir) / rec.storage_path
    assert stored.stat().st_size == rec.size_bytes
    assert not sandbox.host_path(call.recording_file or "/missing").exists()  # spool file removed

    recorded_span = (call.ended_at - customer_answered).total_seconds()
    assert rec.duration_s is not None and abs(rec.duration_s - recorded_span) < 0.5, (rec.duration_s, recorded_span)
    assert rec.duration_s >= call.talk_s - 0.5 and call.talk_s >= TALK_SECONDS - 0.5

    # Audible: the talk part (the last talk_s seconds) carries both phones' tones.
    audio = decode(stored)
    assert abs(len(audio) / 8000 - rec.duration_s) < 0.1
    talk = audio[-int((call.talk_s - 0.5) * 8000) :]
    rms = float(np.sqrt(np.mean(talk**2)))
    assert rms > 0.02 and float(np.abs(talk).max()) > 0.1, (rms, float(np.abs(talk).max()))
    assert rec.peaks is not None and max(rec.peaks) > 0.1


async def ended_linkedid(engine: CtiEngine, timeout: float = 15.0) -> Recording:
    """The recording row the CallEnded of the call just made created (the newest)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with engine.sessions() as session:
            rec = (await session.execute(select(Recording).order_by(Recording.id.desc()).limit(1))).scalar_one_or_none()
        if rec is not None:
            return rec
        await asyncio.sleep(0.05)
    raise AssertionError("no recording row after the call ended")
