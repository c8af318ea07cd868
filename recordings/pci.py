"""PCI pauses (wall-clock) → muted spans in seconds from the start of the recording file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable


def pci_spans(
    pauses: Iterable[tuple[dt.datetime, dt.datetime | None]], file_start: dt.datetime, duration_s: float
) -> list[list[float]]:
    """Clip each pause to the file, merge overlaps, round to 10 ms.

    ``file_start`` is the wall-clock time of the file's first sample. MixMonitor writes until the call
    hangs up, so the pipeline takes it as the call's end minus the file's duration (the end is the
    one instant both the CTI clock and the file agree on; the start of MixMonitor is not reported).
    A pause never resumed lasts to the end of the file.
    """
    spans: list[tuple[float, float]] = []
    for paused_at, resumed_at in pauses:
        start = max(0.0, (paused_at - file_start).total_seconds())
        end = duration_s if resumed_at is None else min(duration_s, (resumed_at - file_start).total_seconds())
        if end > start:
            spans.append((start, end))
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [[round(s, 2), round(e, 2)] for s, e in merged]
