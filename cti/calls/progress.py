"""CallProgress: the engine's snapshot of a live call after each event that changed it.

The tracker's events say what happened; the call log also needs the call as it stands (to write a
live row that survives a crash), and subscribers must not reach back into the tracker for it.
"""

from __future__ import annotations

import dataclasses

from cti.calls.events import DomainEvent
from cti.calls.tracker import CallSnapshot


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallProgress(DomainEvent):
    snapshot: CallSnapshot
