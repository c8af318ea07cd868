"""Recording tables: the file of each call, the jobs that process it, PCI pauses and the access audit.

The recording row is keyed by the file Asterisk wrote (MixMonitor names it by Linkedid/Uniqueid), so a
job replayed after a crash finds the same row; the call row is linked by (pbx, linkedid).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class Recording(Base):
    """One recorded call: where the file lives, what it measures, how long it is kept."""

    __tablename__ = "recordings"
    __table_args__ = (
        UniqueConstraint("source_path"),
        Index("ix_recordings_call", "pbx", "linkedid"),
        Index("ix_recordings_retention", "state", "retain_until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"), index=True)
    pbx: Mapped[str] = mapped_column(String(32), default="default")
    linkedid: Mapped[str] = mapped_column(String(64))
    source_path: Mapped[str] = mapped_column(String(255))  # as MixMonitor wrote it
    storage_path: Mapped[str | None] = mapped_column(String(255))  # relative to recordings_dir
    format: Mapped[str | None] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|ready|failed|missing|purged
    duration_s: Mapped[float | None] = mapped_column(Float)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    peaks: Mapped[list[float] | None] = mapped_column(JSON)  # waveform, max |amplitude| per bucket, 0..1
    pci_spans: Mapped[list[list[float]] | None] = mapped_column(JSON)  # [[start_s, end_s], ...] muted
    queue: Mapped[str | None] = mapped_column(String(64))
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    retain_until: Mapped[dt.datetime | None]
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    hold_reason: Mapped[str | None] = mapped_column(String(255))
    hold_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    hold_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[dt.datetime | None]
    purged_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(String(500))


class RecordingJob(Base):
    """Work still to do on a recording. A crash leaves the row `running` with an expired lease, and the
    next worker takes it again, so nothing is lost and nothing is done twice at once."""

    __tablename__ = "recording_jobs"
    __table_args__ = (Index("ix_recording_jobs_due", "state", "run_after"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="process")
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|done|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[dt.datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[dt.datetime | None]
    worker: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RecordingPause(Base):
    """A PCI pause (MixMonitorMute) in wall-clock time; the pipeline turns it into offsets in the file."""

    __tablename__ = "recording_pauses"
    __table_args__ = (Index("ix_recording_pauses_call", "pbx", "linkedid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pbx: Mapped[str] = mapped_column(String(32), default="default")
    linkedid: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(128))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    paused_at: Mapped[dt.datetime]
    resumed_at: Mapped[dt.datetime | None]


class RecordingAccess(Base):
    """Audit of every play, download or refused attempt: who, when, which call, from where."""

    __tablename__ = "recording_access_log"
    __table_args__ = (Index("ix_recording_access_call", "call_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_id: Mapped[int | None] = mapped_column(ForeignKey("recordings.id", ondelete="SET NULL"))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))  # play | download | denied | hold | release | purge
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    remote: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str | None] = mapped_column(String(255))  # e.g. the byte range asked for
