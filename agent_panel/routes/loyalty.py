"""Loyalty JSON API: a member's points and tier, redemption requests with maker-checker, voucher checks.

Agents ask for redemptions on behalf of the caller; CRM staff and administrators approve or reject
(never their own request: the service enforces maker-checker). The member must be inside the caller's
data scope (404 otherwise, as everywhere). Errors are RFC 9457 problem+json.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_panel.auth import ALL_ROLES, allow, session_of
from agent_panel.keys import SESSIONS, SETTINGS
from agent_panel.problems import problem
from crm_core.db import read_session, transaction, utcnow
from crm_core.loyalty import ledger, redemption, tiers, vouchers
from crm_core.loyalty.errors import (
    InsufficientPoints,
    ItemNotAvailable,
    LoyaltyError,
    NotAnApprover,
    OutOfStock,
    RedemptionAlreadyDecided,
    RedemptionNotFound,
    SameApprover,
)
from crm_core.loyalty.models import Redemption
from crm_core.loyalty.redemption import RedemptionPolicy, RedemptionResult
from crm_core.loyalty.voucher_codes import display
from crm_core.members.errors import MemberNotFound
from crm_core.members.service import load_member
from crm_core.security.policy import Principal, Role, apply_field_policy

REQUESTERS = (Role.AGENT, Role.SUPERVISOR, Role.CRM_STAFF, Role.ADMIN)
APPROVERS = (Role.CRM_STAFF, Role.ADMIN)
EXPIRING_DAYS = (30, 90)
M = TypeVar("M", bound=BaseModel)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/members/{member_id:\\d+}/points", points)
    r.add_post("/api/v1/members/{member_id:\\d+}/redemptions", redemption_request)
    r.add_get("/api/v1/redemptions", redemption_queue)
    r.add_post("/api/v1/redemptions/{redemption_id:\\d+}/{action:approve|reject|cancel}", redemption_decide)
    r.add_post("/api/v1/vouchers/{action:verify|redeem}", voucher_check)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class RedemptionIn(Strict):
    item_code: str = Field(min_length=1, max_length=32)
    quantity: int = Field(default=1, ge=1, le=100)


class DecisionIn(Strict):
    note: str | None = Field(default=None, max_length=200)


class VoucherIn(Strict):
    code: str = Field(min_length=1, max_length=40)
    merchant: str = Field(min_length=1, max_length=32)


async def _parse(request: web.Request, model: type[M]) -> M | web.Response:
    try:
        payload = await request.json() if request.can_read_body else {}
    except ValueError:
        return problem(400, "invalid request", "the body must be JSON")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        return problem(400, "invalid request", errors=exc.errors(include_url=False, include_input=False))


def _refusal(exc: LoyaltyError | MemberNotFound) -> web.Response:
    """Domain refusals mapped once."""
    match exc:
        case MemberNotFound() | RedemptionNotFound():
            return problem(404, "not found")
        case ItemNotAvailable():
            return problem(404, "catalogue item not available", str(exc))
        case InsufficientPoints():
            return problem(409, "insufficient points", str(exc))
        case OutOfStock():
            return problem(409, "out of stock", str(exc))
        case RedemptionAlreadyDecided():
            return problem(409, "already decided", str(exc))
        case SameApprover():
            return problem(403, "a second person must approve", str(exc))
        case NotAnApprover():
            return problem(403, "not allowed", str(exc))
    return problem(409, "refused", str(exc))


def _result(result: RedemptionResult) -> dict[str, Any]:
    return {
        "redemption_id": result.redemption_id,
        "state": result.state.value,
        "points": result.points,
        "approval_reason": result.approval_reason,
        "voucher_codes": [display(code) for code in result.voucher_codes],
        "shipment_id": result.shipment_id,
    }


def _policy(request: web.Request) -> RedemptionPolicy:
    return RedemptionPolicy(approval_threshold=request.app[SETTINGS].loyalty_redemption_approval_points)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# ---------------------------------------------------------------------------------------------- points
@allow(*ALL_ROLES)
async def points(request: web.Request) -> web.Response:
    """Valid / pending / held / expiring points, tier and progress to the next tier (the 360's numbers)."""
    principal = session_of(request).principal
    member_id = int(request.match_info["member_id"])
    now = utcnow()
    try:
        async with read_session(request.app[SESSIONS]) as session:
            await load_member(session, principal, member_id)
            balances = await ledger.balances(session, member_id)
            expiring = {f"expiring_{d}_days": await ledger.expiring(session, member_id, now, d) for d in EXPIRING_DAYS}
            status = await tiers.tier_status(session, member_id, now)
    except MemberNotFound as exc:
        return _refusal(exc)
    row = {
        "member_id": member_id,
        "valid": balances.valid,
        "pending": balances.pending,
        "held": balances.held,
        "debt": balances.debt,
        "lifetime": balances.lifetime,
        "qualifying": balances.qualifying,
        **expiring,
        "member_type": status.tier,
        "tier_held_until": _iso(status.held_until),
        "period_qualifying": status.period_points,
        "next_tier": status.next_tier,
        "points_to_next_tier": status.points_to_next,
    }
    return web.json_response(apply_field_policy(principal, "points", row) | {"member_id": member_id})


# ------------------------------------------------------------------------------------------ redemption
@allow(*REQUESTERS)
async def redemption_request(request: web.Request) -> web.Response:
    """An agent (for the caller) or staff asks for a gift or voucher; small ones complete at once."""
    principal = session_of(request).principal
    member_id = int(request.match_info["member_id"])
    data = await _parse(request, RedemptionIn)
    if isinstance(data, web.Response):
        return data
    try:
        async with transaction(request.app[SESSIONS]) as session:
            await load_member(session, principal, member_id)
            result = await redemption.request_redemption(
                session,
                member_id,
                data.item_code,
                data.quantity,
                who=principal,
                now=utcnow(),
                policy=_policy(request),
            )
    except (LoyaltyError, MemberNotFound) as exc:
        return _refusal(exc)
    return web.json_response(_result(result), status=201 if result.state == "completed" else 202)


@allow(*APPROVERS)
async def redemption_queue(request: web.Request) -> web.Response:
    """Requests awaiting a second person, oldest first."""
    principal = session_of(request).principal
    async with read_session(request.app[SESSIONS]) as session:
        waiting = await redemption.awaiting_approval(session)
    return web.json_response({"items": [_queued(principal, row) for row in waiting]})


def _queued(principal: Principal, row: Redemption) -> dict[str, Any]:
    return {
        "redemption_id": row.id,
        "member_id": row.member_id,
        "item_id": row.item_id,
        "quantity": row.quantity,
        "points": row.points,
        "approval_reason": row.approval_reason,
        "requested_by": row.requested_by,
        "requested_at": row.requested_at.isoformat(),
        "yours": row.requested_by == principal.user_id,
    }


@allow(*REQUESTERS)
async def redemption_decide(request: web.Request) -> web.Response:
    """approve / reject (CRM staff, admin; not the requester for approve) or cancel (requester, staff)."""
    principal = session_of(request).principal
    redemption_id = int(request.match_info["redemption_id"])
    action: Literal["approve", "reject", "cancel"] = request.match_info["action"]  # type: ignore[assignment]
    data = await _parse(request, DecisionIn)
    if isinstance(data, web.Response):
        return data
    now = utcnow()
    try:
        async with transaction(request.app[SESSIONS]) as session:
            member_id = (await session.get(Redemption, redemption_id) or _missing(redemption_id)).member_id
            await load_member(session, principal, member_id)
            if action == "approve":
                return web.json_response(
                    _result(await redemption.approve(session, redemption_id, who=principal, now=now, note=data.note))
                )
            decide = redemption.reject if action == "reject" else redemption.cancel
            released = await decide(session, redemption_id, who=principal, now=now, note=data.note)
    except (LoyaltyError, MemberNotFound) as exc:
        return _refusal(exc)
    return web.json_response(
        {
            "redemption_id": redemption_id,
            "state": "rejected" if action == "reject" else "cancelled",
            "points_returned": released.returned,
            "points_expired_at_release": released.expired_at_release,
        }
    )


def _missing(redemption_id: int) -> Redemption:
    raise RedemptionNotFound(redemption_id)


# -------------------------------------------------------------------------------------------- vouchers
@allow(*APPROVERS)
async def voucher_check(request: web.Request) -> web.Response:
    """Merchant desk: verify a voucher, or redeem it exactly once; every attempt is logged."""
    data = await _parse(request, VoucherIn)
    if isinstance(data, web.Response):
        return data
    act = vouchers.verify if request.match_info["action"] == "verify" else vouchers.redeem
    async with transaction(request.app[SESSIONS]) as session:
        result = await act(session, data.code, data.merchant, utcnow())
    body = {
        "ok": result.ok,
        "outcome": result.outcome.value,
        "item": result.item_name,
        "face_value_fen": result.face_value_fen,
        "expires_at": _iso(result.expires_at),
        "redeemed_at": _iso(result.redeemed_at),
    }
    if result.ok:
        return web.json_response(body)
    status = 422 if result.outcome in ("malformed", "unknown") else 409
    return problem(status, f"voucher {result.outcome.value}", errors=body)
