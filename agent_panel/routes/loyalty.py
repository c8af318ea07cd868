"""Loyalty JSON API: a member's points and tier, redemption requests with maker-checker, voucher checks.

Agents ask for redemptions on behalf of the caller; CRM staff and administrators approve or reject
(never their own request: the service enforces maker-checker). The member must be inside the caller's
data scope (404 otherwise, as everywhere). Errors are RFC 9457 problem+json.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any, Literal

from aiohttp import web
from pydantic import Field, ValidationError

from agent_panel.auth import ALL_ROLES, allow, session_of
from agent_panel.keys import REDEMPTIONS, SESSIONS, SETTINGS
from agent_panel.payloads import Strict, parse_body
from agent_panel.problems import problem
from agent_panel.render import render
from crm_core.db import read_session, transaction, utcnow
from crm_core.loyalty import adjustments as adjustments_service
from crm_core.loyalty import fraud, history, ledger, liability, redemption, tiers, vouchers
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
from crm_core.member360 import member_360
from crm_core.members.errors import MemberNotFound
from crm_core.members.service import load_member
from crm_core.security.policy import Principal, Role, apply_field_policy

REQUESTERS = (Role.AGENT, Role.SUPERVISOR, Role.CRM_STAFF, Role.ADMIN)
APPROVERS = (Role.CRM_STAFF, Role.ADMIN)
EXPIRING_DAYS = (30, 90)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/members/{member_id:\\d+}/points", points)
    r.add_post("/api/v1/members/{member_id:\\d+}/redemptions", redemption_request)
    r.add_get("/api/v1/redemptions", redemption_queue)
    r.add_post("/api/v1/redemptions/{redemption_id:\\d+}/{action:approve|reject|cancel}", redemption_decide)
    r.add_post("/api/v1/vouchers/{action:verify|redeem}", voucher_check)
    # suspicious-activity flags, points liability, and the panel pages (history, redemption, approvals)
    r.add_get("/api/v1/loyalty/flags", flags_api)
    r.add_post("/api/v1/loyalty/flags/run", flags_run_api)
    r.add_get("/api/v1/loyalty/liability", liability_api)
    r.add_get("/api/v1/loyalty/liability.csv", liability_csv)
    r.add_get("/members/{member_id:\\d+}/points", points_page)
    r.add_post("/members/{member_id:\\d+}/points/redeem", redeem_form)
    r.add_get("/loyalty/approvals", approvals_page)
    r.add_post("/loyalty/approvals/{redemption_id:\\d+}/{action:approve|reject}", approval_form)
    r.add_get("/loyalty/flags", flags_page)
    r.add_post("/loyalty/flags/run", flags_run_form)
    r.add_get("/loyalty/liability", liability_page)
    # manual grants and deductions: booked at once up to the threshold, above it by a second person
    r.add_post("/api/v1/members/{member_id:\\d+}/points/adjustments", adjustment_request)
    r.add_get("/api/v1/loyalty/adjustments", adjustment_queue)
    r.add_post("/api/v1/loyalty/adjustments/{adjustment_id:\\d+}/{action:approve|reject}", adjustment_decide)
    r.add_post("/loyalty/adjustments/{adjustment_id:\\d+}/{action:approve|reject}", adjustment_form)


class RedemptionIn(Strict):
    item_code: str = Field(min_length=1, max_length=32)
    quantity: int = Field(default=1, ge=1, le=100)


class DecisionIn(Strict):
    note: str | None = Field(default=None, max_length=200)


class AdjustmentIn(Strict):
    kind: Literal["grant", "deduct"]
    points: int = Field(gt=0, le=10_000_000)
    reason: str = Field(min_length=1, max_length=200)
    expires_at: dt.datetime | None = None  # grants: required unless never_expires
    never_expires: bool = False


class VoucherIn(Strict):
    code: str = Field(min_length=1, max_length=40)
    merchant: str = Field(min_length=1, max_length=32)


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
        case RedemptionAlreadyDecided() | adjustments_service.AdjustmentDecided():
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
async def _redeem(request: web.Request, member_id: int, item_code: str, quantity: int) -> RedemptionResult:
    """The member must be in the caller's scope; the redemption itself goes through the app's batcher,
    which books requests that arrive together in one transaction (redemption_batch.py)."""
    principal = session_of(request).principal
    async with read_session(request.app[SESSIONS]) as session:
        await load_member(session, principal, member_id)
    return await request.app[REDEMPTIONS].redeem(
        member_id, item_code, quantity, who=principal, now=utcnow(), policy=_policy(request)
    )


@allow(*REQUESTERS)
async def redemption_request(request: web.Request) -> web.Response:
    """An agent (for the caller) or staff asks for a gift or voucher; small ones complete at once."""
    member_id = int(request.match_info["member_id"])
    data = await parse_body(request, RedemptionIn)
    if isinstance(data, web.Response):
        return data
    try:
        result = await _redeem(request, member_id, data.item_code, data.quantity)
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
    data = await parse_body(request, DecisionIn)
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
    data = await parse_body(request, VoucherIn)
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


# ------------------------------------------------------------------------------- flags and liability
def _thresholds(request: web.Request) -> fraud.Thresholds:
    return fraud.thresholds_from(request.app[SETTINGS])


def _flag_rows(principal: Principal, rows: list[fraud.ReportRow]) -> list[dict[str, Any]]:
    return [
        apply_field_policy(
            principal,
            "loyalty_flag",
            {
                "member_id": row.member_id,
                "rule": row.rule,
                "evidence": row.evidence,
                "first_seen": _iso(row.first_seen),
                "flagged_at": _iso(row.flagged_at),
                "flag_reason": row.flag_reason,
            },
        )
        for row in rows
    ]


@allow(*APPROVERS)
async def flags_api(request: web.Request) -> web.Response:
    """What the rules find now, beside each member's approval-list entry (if a run put one there)."""
    principal = session_of(request).principal
    async with read_session(request.app[SESSIONS]) as session:
        rows = await fraud.report(session, _thresholds(request))
    return web.json_response({"items": _flag_rows(principal, rows)})


async def _run_flags(request: web.Request) -> fraud.RunResult:
    async with transaction(request.app[SESSIONS]) as session:
        return await fraud.run_rules(session, _thresholds(request), utcnow())


@allow(*APPROVERS)
async def flags_run_api(request: web.Request) -> web.Response:
    """Run the rules now (as `cti loyalty-flags` does); flagged members' redemptions need approval."""
    result = await _run_flags(request)
    return web.json_response(
        {"flags": len(result.flags), "members": result.members, "newly_flagged": result.newly_flagged}
    )


def _liability_body(totals: liability.Outstanding, months: list[liability.Month]) -> dict[str, Any]:
    return {"outstanding": asdict(totals), "months": [asdict(m) for m in months]}


async def _liability(request: web.Request) -> tuple[liability.Outstanding, list[liability.Month]]:
    async with read_session(request.app[SESSIONS]) as session:
        totals = await liability.outstanding(session, utcnow())
        months = await liability.by_month(session, request.app[SETTINGS].timezone)
    return totals, months


@allow(*APPROVERS)
async def liability_api(request: web.Request) -> web.Response:
    """Outstanding points, expiring in 30 / 90 days, earn and burn by month."""
    return web.json_response(_liability_body(*await _liability(request)))


@allow(*APPROVERS)
async def liability_csv(request: web.Request) -> web.Response:
    text = liability.to_csv(*await _liability(request))
    return web.Response(
        text=text,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": 'attachment; filename="points-liability.csv"'},
    )


# ---------------------------------------------------------------------------------------------- pages
async def _points_context(request: web.Request, member_id: int) -> dict[str, Any]:
    """The member's 360 (profile and points through the field policy), journal and redemptions."""
    principal = session_of(request).principal
    async with read_session(request.app[SESSIONS]) as session:
        try:
            member = await member_360(session, principal, member_id)
        except MemberNotFound as exc:
            raise web.HTTPNotFound(text="member not found") from exc
        entries = await history.entries(session, member_id)
        items = await history.catalogue(session)
        requests = await history.redemptions(session, member_id)
    return {
        "member": member,
        "entries": [apply_field_policy(principal, "points_entry", e) for e in entries],
        "items": items,
        "redemptions": requests,
    }


@allow(*ALL_ROLES)
async def points_page(request: web.Request) -> web.Response:
    member_id = int(request.match_info["member_id"])
    context = await _points_context(request, member_id)
    context["done"] = request.query.get("done")
    return render(request, "loyalty_points.html", context)


@allow(*REQUESTERS)
async def redeem_form(request: web.Request) -> web.Response:
    """The panel's redemption form: on success back to the history (PRG), else the page with the reason."""
    member_id = int(request.match_info["member_id"])
    form = await request.post()
    try:
        data = RedemptionIn(item_code=str(form.get("item_code", "")), quantity=int(str(form.get("quantity", "1"))))
    except (ValueError, ValidationError):
        return await _points_error(request, member_id, "invalid request", 400)
    try:
        result = await _redeem(request, member_id, data.item_code, data.quantity)
    except MemberNotFound as exc:
        raise web.HTTPNotFound(text="member not found") from exc
    except LoyaltyError as exc:
        refused = _refusal(exc)
        return await _points_error(request, member_id, _REFUSALS.get(type(exc), "refused"), refused.status)
    raise web.HTTPSeeOther(f"/members/{member_id}/points?done={result.state.value}")


_REFUSALS: dict[type[Exception], str] = {
    InsufficientPoints: "Not enough valid points.",
    ItemNotAvailable: "That item is not available.",
    OutOfStock: "Out of stock.",
}


async def _points_error(request: web.Request, member_id: int, message: str, status: int) -> web.Response:
    context = await _points_context(request, member_id)
    context["error"] = message
    return render(request, "loyalty_points.html", context, status=status)


@allow(*APPROVERS)
async def approvals_page(request: web.Request) -> web.Response:
    """The approval queue for CRM staff: oldest first, the member's name as the field policy shows it."""
    principal = session_of(request).principal
    async with read_session(request.app[SESSIONS]) as session:
        waiting = await history.queue(session)
        rows = [
            {**_queued(principal, row), "item": item, "member": apply_field_policy(principal, "member", {"name": name})}
            for row, item, name in waiting
        ]
        adjustments = await adjustments_service.awaiting(session)
    for row in adjustments:
        row["yours"] = row["requested_by"] == principal.user_id
    return render(
        request,
        "loyalty_approvals.html",
        {"rows": rows, "adjustments": adjustments, "error": request.query.get("error")},
    )


@allow(*APPROVERS)
async def approval_form(request: web.Request) -> web.Response:
    principal = session_of(request).principal
    redemption_id = int(request.match_info["redemption_id"])
    now = utcnow()
    try:
        async with transaction(request.app[SESSIONS]) as session:
            member_id = (await session.get(Redemption, redemption_id) or _missing(redemption_id)).member_id
            await load_member(session, principal, member_id)
            if request.match_info["action"] == "approve":
                await redemption.approve(session, redemption_id, who=principal, now=now)
            else:
                await redemption.reject(session, redemption_id, who=principal, now=now)
    except (LoyaltyError, MemberNotFound) as exc:
        error = "same" if isinstance(exc, SameApprover) else "refused"
        raise web.HTTPSeeOther(f"/loyalty/approvals?error={error}") from exc
    raise web.HTTPSeeOther("/loyalty/approvals")


# -------------------------------------------------------------------------------- manual adjustments
@allow(*APPROVERS)
async def adjustment_request(request: web.Request) -> web.Response:
    """A grant needs an expiry (or never_expires); above the threshold it waits for a second person."""
    principal = session_of(request).principal
    member_id = int(request.match_info["member_id"])
    data = await parse_body(request, AdjustmentIn)
    if isinstance(data, web.Response):
        return data
    if data.kind == "grant" and data.expires_at is None and not data.never_expires:
        return problem(400, "invalid request", "a grant needs expires_at (or never_expires: true)")
    if data.expires_at is not None and data.expires_at.tzinfo is None:
        return problem(400, "invalid request", "expires_at needs a time zone offset")
    try:
        async with transaction(request.app[SESSIONS]) as session:
            await load_member(session, principal, member_id)
            made = await adjustments_service.request_adjustment(
                session,
                principal,
                member_id,
                kind=data.kind,
                points=data.points,
                reason=data.reason,
                expires_at=data.expires_at,
                threshold=request.app[SETTINGS].loyalty_manual_approval_points,
            )
            body = {"id": made.id, "state": made.state, "kind": made.kind, "points": made.points}
    except (LoyaltyError, MemberNotFound) as exc:
        return _refusal(exc)
    return web.json_response(body, status=201 if body["state"] == "booked" else 202)


@allow(*APPROVERS)
async def adjustment_queue(request: web.Request) -> web.Response:
    async with read_session(request.app[SESSIONS]) as session:
        return web.json_response({"adjustments": await adjustments_service.awaiting(session)})


async def _decide_adjustment(request: web.Request) -> None:
    principal = session_of(request).principal
    adjustment_id = int(request.match_info["adjustment_id"])
    async with transaction(request.app[SESSIONS]) as session:
        found = await session.get(adjustments_service.Adjustment, adjustment_id)
        if found is None:
            raise adjustments_service.AdjustmentDecided(f"no adjustment {adjustment_id}")
        await load_member(session, principal, found.member_id)
        await adjustments_service.decide(
            session, principal, adjustment_id, approve=request.match_info["action"] == "approve"
        )


@allow(*APPROVERS)
async def adjustment_decide(request: web.Request) -> web.Response:
    try:
        await _decide_adjustment(request)
    except (LoyaltyError, MemberNotFound) as exc:
        return _refusal(exc)
    return web.json_response({"id": int(request.match_info["adjustment_id"]), "decided": request.match_info["action"]})


@allow(*APPROVERS)
async def adjustment_form(request: web.Request) -> web.Response:
    try:
        await _decide_adjustment(request)
    except (LoyaltyError, MemberNotFound) as exc:
        error = "same" if isinstance(exc, SameApprover) else "refused"
        raise web.HTTPSeeOther(f"/loyalty/approvals?error={error}") from exc
    raise web.HTTPSeeOther("/loyalty/approvals")


@allow(*APPROVERS)
async def flags_page(request: web.Request) -> web.Response:
    principal = session_of(request).principal
    async with read_session(request.app[SESSIONS]) as session:
        rows = await fraud.report(session, _thresholds(request))
    return render(
        request,
        "loyalty_flags.html",
        {"rows": _flag_rows(principal, rows), "thresholds": _thresholds(request), "ran": request.query.get("ran")},
    )


@allow(*APPROVERS)
async def flags_run_form(request: web.Request) -> web.Response:
    result = await _run_flags(request)
    raise web.HTTPSeeOther(f"/loyalty/flags?ran={result.newly_flagged}")


@allow(*APPROVERS)
async def liability_page(request: web.Request) -> web.Response:
    totals, months = await _liability(request)
    return render(request, "loyalty_liability.html", {"totals": asdict(totals), "months": months})
