"""Local-time buckets and interval arithmetic in SQL that runs on SQLite and PostgreSQL alike.

Timestamps are stored in UTC. A local hour or day is `(epoch + utc_offset) // width`, where the
offset is constant between two time-zone transitions: Python finds the transitions inside the period
(zoneinfo; none for Asia/Shanghai, two a year where there is DST) and the SQL picks the offset with
a small CASE on the epoch. Nothing assumes +08:00, and no database time-zone support is needed
(SQLite has none).

Epochs: PostgreSQL `date_part('epoch', ts)` (double precision; `extract` returns numeric since
PostgreSQL 14, which made the agent report ~10x slower); SQLite `strftime('%s', ts)` (whole seconds, exact,
so a call at 16:00:00.000 UTC never lands in the hour before through a rounding error) and
`julianday` for fractional durations (precision ~50 µs, plenty for summed seconds).
"""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Float, case, literal_column
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

HOUR = 3600
DAY = 86400


class epoch_int(FunctionElement[int]):
    """Whole seconds since 1970-01-01 UTC of a stored (UTC) timestamp."""

    type = BigInteger()
    inherit_cache = True
    name = "epoch_int"


class epoch_float(FunctionElement[float]):
    """Seconds since 1970-01-01 UTC, with fractions, of a stored (UTC) timestamp."""

    type = Float()
    inherit_cache = True
    name = "epoch_float"


@compiles(epoch_int, "postgresql")
def _epoch_int_pg(element: epoch_int, compiler: Any, **kw: Any) -> str:
    return f"CAST(floor(date_part('epoch', {compiler.process(element.clauses, **kw)})) AS BIGINT)"


@compiles(epoch_int, "sqlite")
def _epoch_int_sqlite(element: epoch_int, compiler: Any, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(epoch_float, "postgresql")
def _epoch_float_pg(element: epoch_float, compiler: Any, **kw: Any) -> str:
    return f"date_part('epoch', {compiler.process(element.clauses, **kw)})"


@compiles(epoch_float, "sqlite")
def _epoch_float_sqlite(element: epoch_float, compiler: Any, **kw: Any) -> str:
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


class greatest(FunctionElement[float]):
    """The larger of two numbers: GREATEST on PostgreSQL, the two-argument scalar max() on SQLite."""

    type = Float()
    inherit_cache = True
    name = "greatest"


class least(FunctionElement[float]):
    """The smaller of two numbers: LEAST on PostgreSQL, the two-argument scalar min() on SQLite."""

    type = Float()
    inherit_cache = True
    name = "least"


@compiles(greatest)
def _greatest(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"greatest({compiler.process(element.clauses, **kw)})"


@compiles(least)
def _least(element: least, compiler: Any, **kw: Any) -> str:
    return f"least({compiler.process(element.clauses, **kw)})"


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


@compiles(least, "sqlite")
def _least_sqlite(element: least, compiler: Any, **kw: Any) -> str:
    return f"min({compiler.process(element.clauses, **kw)})"


def to_epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())


@dataclass(frozen=True, slots=True)
class OffsetSegment:
    """From `starts` (UTC epoch seconds) on, local time is UTC + `offset` seconds."""

    starts: int
    offset: int


def offset_segments(utc_start: dt.datetime, utc_end: dt.datetime, timezone: str) -> list[OffsetSegment]:
    """The zone's UTC offsets over [utc_start, utc_end): one segment unless a transition falls inside."""
    zone = zoneinfo.ZoneInfo(timezone)

    def offset_at(epoch: int) -> int:
        moment = dt.datetime.fromtimestamp(epoch, dt.UTC).astimezone(zone)
        delta = moment.utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    start, end = to_epoch(utc_start), to_epoch(utc_end)
    segments = [OffsetSegment(start, offset_at(start))]
    probe = start
    while probe < end:
        step = min(probe + HOUR, end)
        if offset_at(step) != segments[-1].offset and step <= end:
            low, high = probe, step  # offset_at(low) is the old one, offset_at(high) the new one
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset_at(middle) == segments[-1].offset else (low, middle)
            if high < end:
                segments.append(OffsetSegment(high, offset_at(high)))
        probe = step
    return segments


def _int(value: int) -> ColumnElement[int]:
    """An integer inlined into the SQL (never user input), so the same expression in SELECT and
    GROUP BY renders identically on PostgreSQL."""
    return literal_column(str(int(value)), BigInteger())


def local_bucket(column: Any, segments: list[OffsetSegment], width: int) -> ColumnElement[int]:
    """`(epoch + local offset) // width`: the local hour (width 3600) or day (86400) number."""
    epoch: ColumnElement[int] = epoch_int(column)
    if len(segments) == 1:
        offset: ColumnElement[int] = _int(segments[0].offset)
    else:
        offset = case(
            *[(epoch < _int(later.starts), _int(earlier.offset)) for earlier, later in itertools.pairwise(segments)],
            else_=_int(segments[-1].offset),
        )
    return (epoch + offset) // _int(width)


def bucket_start(bucket: int, width: int) -> dt.datetime:
    """The local wall-clock time (naive) at which bucket number `bucket` begins."""
    return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=bucket * width)
