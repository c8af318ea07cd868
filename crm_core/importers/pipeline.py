"""The import loop both file importers share: read and check the next batch in a thread while earlier
batches are written, and settle the written ones in file order (so error reports stay sorted)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

B = TypeVar("B")
R = TypeVar("R")


async def run_pipelined(
    first: B,
    *,
    read_next: Callable[[], B],
    has_rows: Callable[[B], bool],
    write: Callable[[B], Coroutine[Any, Any, R]],
    settle: Callable[[B, R], Awaitable[None]],
    depth: int,
) -> None:
    """`read_next` runs in a thread; at most `depth` writes are in flight (1 for SQLite's single writer).

    On an error the writes still in flight are cancelled and awaited, and a read still running in its
    thread is awaited too, so the caller may close the file as soon as this returns or raises."""
    in_flight: deque[tuple[B, asyncio.Task[R]]] = deque()
    pending: asyncio.Future[B] | None = None
    batch: B | None = first
    try:
        while batch is not None and has_rows(batch):
            pending = asyncio.ensure_future(asyncio.to_thread(read_next))
            in_flight.append((batch, asyncio.create_task(write(batch))))
            if len(in_flight) >= depth:
                done, task = in_flight.popleft()
                await settle(done, await task)
            batch = await pending
            pending = None
        while in_flight:
            done, task = in_flight.popleft()
            await settle(done, await task)
    finally:
        for _, task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.wait([task for _, task in in_flight])
        if pending is not None:
            await asyncio.wait([pending])
