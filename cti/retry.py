"""Retry database work that a dropped connection interrupted, so bus subscribers lose no event.

The bus worker awaits its handler, and critical subscribers use the "block" overflow policy: while a
handler retries, later events wait in order in its backlog instead of being dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from crm_core.db import is_disconnect

log = logging.getLogger(__name__)
T = TypeVar("T")


async def with_db_retry(
    work: Callable[[], Awaitable[T]],
    *,
    what: str,
    first_delay: float = 0.1,
    max_delay: float = 10.0,
    attempts: int | None = None,
) -> T:
    """Run `work()`; on a disconnect, back off (doubling up to `max_delay`) and run it again.

    `attempts=None` retries until it succeeds: right for facts that must not be lost (a missed call).
    Other errors propagate at once: retrying a bug or a constraint violation cannot help.
    """
    delay = first_delay
    tried = 0
    while True:
        tried += 1
        try:
            return await work()
        except Exception as exc:
            if not is_disconnect(exc) or (attempts is not None and tried >= attempts):
                raise
            log.warning("%s: database unavailable (%s), retry %d in %.1fs", what, exc.__class__.__name__, tried, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
