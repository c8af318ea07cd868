"""Member and card numbers: preset prefix + N-digit serial (seed 004 会员卡号生成模式), unique under concurrency."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def allocate_serials(session: AsyncSession, sequence: str, count: int = 1) -> range:
    """Reserve `count` consecutive serials in one atomic UPDATE … RETURNING.

    The row lock taken by the UPDATE (PostgreSQL) or the write lock (SQLite, BEGIN IMMEDIATE) makes
    concurrent callers queue, so no two transactions ever get overlapping ranges. The counter is part
    of the caller's transaction: a rolled-back import gives its numbers back.
    """
    if count < 1:
        raise ValueError("count must be positive")
    insert = "INSERT INTO number_sequences (name, next_value) VALUES (:name, 1) ON CONFLICT (name) DO NOTHING"
    await session.execute(text(insert), {"name": sequence})
    row = (
        await session.execute(
            text("UPDATE number_sequences SET next_value = next_value + :n WHERE name = :name RETURNING next_value"),
            {"n": count, "name": sequence},
        )
    ).one()
    end = int(row[0])
    return range(end - count, end)


def format_number(prefix: str, digits: int, serial: int) -> str:
    if serial >= 10**digits:
        raise OverflowError(f"serial {serial} does not fit {digits} digits; widen the number format")
    return f"{prefix}{serial:0{digits}d}"


async def next_numbers(session: AsyncSession, prefix: str, digits: int, count: int = 1) -> list[str]:
    """Numbers for one series; the sequence is keyed by its prefix so series never collide."""
    serials = await allocate_serials(session, f"no:{prefix}", count)
    return [format_number(prefix, digits, s) for s in serials]
