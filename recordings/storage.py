"""Where recording files live: the PBX's spool seen from this host, and the dated storage layout."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo

from crm_core.settings import Settings


def host_source_path(settings: Settings, pbx_path: str) -> Path:
    """The host path of a file MixMonitor named (``recordings_source_map``: longest matching prefix wins;
    an unmapped path is taken as is, for a PBX on this host)."""
    for prefix in sorted(settings.recordings_source_map, key=len, reverse=True):
        stripped = prefix.rstrip("/")
        if pbx_path == stripped or pbx_path.startswith(stripped + "/"):
            return Path(settings.recordings_source_map[prefix]) / pbx_path[len(stripped) :].lstrip("/")
    return Path(pbx_path)


def storage_relpath(settings: Settings, linkedid: str, started_at: dt.datetime, fmt: str) -> str:
    """``YYYY/MM/DD/<linkedid>.<fmt>``, dated by the call's start in the site's timezone (what people
    mean by "the calls of the 3rd"), relative to ``recordings_dir`` so the tree can move."""
    local = started_at.astimezone(ZoneInfo(settings.timezone))
    safe_id = linkedid.replace("/", "_")  # a Linkedid is "1700000000.42"; never let it climb out
    return str(PurePosixPath(f"{local:%Y}", f"{local:%m}", f"{local:%d}", f"{safe_id}.{fmt}"))


def storage_abspath(settings: Settings, relpath: str) -> Path:
    return Path(settings.recordings_dir) / relpath


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (the file's own fsync does not cover its name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
