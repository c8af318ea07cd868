"""Priority from the request type and the member's tier (seed 003: "可根据会员级别定义处理优先级").

| type \\ tier rank | none / 0 (普通) | 1 (金卡) | 2+ (钻石卡) |
|---|---|---|---|
| complaint    | high   | high   | urgent |
| repair       | normal | high   | high   |
| enquiry      | normal | normal | high   |
| return_visit | low    | low    | normal |
| suggestion   | low    | low    | normal |

Repairs go up one level from 金卡; every other type (complaints to urgent) goes up one level from
钻石卡. Staff may still set another priority by hand (a `priority` event).
"""

from __future__ import annotations

from crm_core.service.models import Priority, RequestType

ORDER = (Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.URGENT)
BASE = {
    RequestType.COMPLAINT: Priority.HIGH,
    RequestType.REPAIR: Priority.NORMAL,
    RequestType.ENQUIRY: Priority.NORMAL,
    RequestType.RETURN_VISIT: Priority.LOW,
    RequestType.SUGGESTION: Priority.LOW,
}


def priority_for(kind: RequestType, tier_rank: int | None) -> Priority:
    rank = max(tier_rank or 0, 0)
    bump = 1 if rank >= (1 if kind == RequestType.REPAIR else 2) else 0
    return ORDER[min(ORDER.index(BASE[kind]) + bump, len(ORDER) - 1)]
