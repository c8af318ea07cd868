"""Jinja filters: times shown in the site's zone (stored in UTC), money in yuan from fen, durations."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import jinja2


def install(env: jinja2.Environment, timezone: str) -> None:
    zone = ZoneInfo(timezone)

    def local_time(value: str | dt.datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        if value is None or value == "":
            return ""
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(zone).strftime(fmt)

    def duration(seconds: float | None) -> str:
        if seconds is None:
            return ""
        total = round(seconds)
        return f"{total // 60}:{total % 60:02d}"

    def yuan(fen: int | None) -> str:
        return "" if fen is None else f"¥{fen / 100:,.2f}"

    env.filters["local_time"] = local_time
    env.filters["duration"] = duration
    env.filters["yuan"] = yuan
