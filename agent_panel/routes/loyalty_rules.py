"""Earning rules (rate and bands, category, tier, campaign, event points) and referrals: API and page.

CRM staff and administrators configure rules; a rule that may have applied is never edited, only ended
or disabled (rule_book.py), so every sale's points can be replayed. `preview` shows how a purchase would
earn at a moment, step by step, before a rule goes live.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from aiohttp import web
from pydantic import Field

from agent_panel.auth import allow, session_of
from agent_panel.keys import SESSIONS
from agent_panel.payloads import Strict, parse_body
from agent_panel.problems import problem
from agent_panel.render import render
from crm_core.db import read_session, transaction, utcnow
from crm_core.loyalty import events, rule_book
from crm_core.loyalty.models import EarningRule, RuleKind
from crm_core.loyalty.rules import Purchase, PurchaseLine, earn_points
from crm_core.members.errors import MemberNotFound
from crm_core.members.service import load_member
from crm_core.security.policy import Role

CONFIGURERS = (Role.CRM_STAFF, Role.ADMIN)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/loyalty/rules", rules_api)
    r.add_post("/api/v1/loyalty/rules", rule_create)
    r.add_post("/api/v1/loyalty/rules/preview", rule_preview)
    r.add_post("/api/v1/loyalty/rules/{rule_id:\\d+}/end", rule_end)
    r.add_get("/loyalty/rules", rules_page)
    r.add_post("/api/v1/members/{member_id:\\d+}/points/referrals", referral)


class RuleIn(Strict):
    name: str = Field(min_length=1, max_length=100)
    kind: RuleKind
    params: dict[str, Any]
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None


class EndIn(Strict):
    ends_at: dt.datetime | None = None
    disable: bool = False


class PreviewIn(Strict):
    amount_fen: int = Field(ge=0, le=10_000_000_000)
    at: dt.datetime | None = None
    category: str = Field(default="", max_length=64)
    tier: str | None = Field(default=None, max_length=32)
    paid_with_points_fen: int = Field(default=0, ge=0)
    paid_with_vouchers_fen: int = Field(default=0, ge=0)


class ReferralIn(Strict):
    referred_member_id: int = Field(gt=0)


def rule_json(row: EarningRule, now: dt.datetime) -> dict[str, Any]:
    active = not row.disabled and rule_book.in_window(row.starts_at, row.ends_at, now)
    return {
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "params": row.params,
        "starts_at": row.starts_at.isoformat() if row.starts_at else None,
        "ends_at": row.ends_at.isoformat() if row.ends_at else None,
        "disabled": row.disabled,
        "active_now": active,
    }


def _aware(*moments: dt.datetime | None) -> web.Response | None:
    if any(moment is not None and moment.tzinfo is None for moment in moments):
        return problem(400, "invalid request", "times need a time zone offset, e.g. 2026-05-01T00:00+08:00")
    return None


@allow(*CONFIGURERS)
async def rules_api(request: web.Request) -> web.Response:
    async with read_session(request.app[SESSIONS]) as session:
        rows = await rule_book.list_rules(session)
    now = utcnow()
    return web.json_response({"rules": [rule_json(row, now) for row in rows]})


@allow(*CONFIGURERS)
async def rule_create(request: web.Request) -> web.Response:
    data = await parse_body(request, RuleIn)
    if isinstance(data, web.Response):
        return data
    if (refused := _aware(data.starts_at, data.ends_at)) is not None:
        return refused
    try:
        async with transaction(request.app[SESSIONS]) as session:
            row = await rule_book.create_rule(
                session,
                name=data.name,
                kind=data.kind,
                params=data.params,
                starts_at=data.starts_at,
                ends_at=data.ends_at,
                who=session_of(request).principal,
            )
            body = rule_json(row, utcnow())
    except rule_book.InvalidRule as exc:
        return problem(400, "invalid rule", str(exc))
    return web.json_response(body, status=201)


@allow(*CONFIGURERS)
async def rule_end(request: web.Request) -> web.Response:
    data = await parse_body(request, EndIn)
    if isinstance(data, web.Response):
        return data
    if (refused := _aware(data.ends_at)) is not None:
        return refused
    if data.ends_at is None and not data.disable:
        return problem(400, "invalid request", "give ends_at, disable: true, or both")
    try:
        async with transaction(request.app[SESSIONS]) as session:
            row = await rule_book.end_rule(
                session, int(request.match_info["rule_id"]), ends_at=data.ends_at, disable=data.disable
            )
            body = rule_json(row, utcnow())
    except rule_book.RuleNotFound:
        return problem(404, "not found")
    except rule_book.InvalidRule as exc:
        return problem(409, "refused", str(exc))
    return web.json_response(body)


def _fraction(value: Any) -> str:
    return f"{Decimal(value.numerator) / Decimal(value.denominator):.4f}"


@allow(*CONFIGURERS)
async def rule_preview(request: web.Request) -> web.Response:
    """How the enabled rules would treat a purchase at `at` (default now): each step of the stacking order."""
    data = await parse_body(request, PreviewIn)
    if isinstance(data, web.Response):
        return data
    if (refused := _aware(data.at)) is not None:
        return refused
    at = data.at or utcnow()
    async with read_session(request.app[SESSIONS]) as session:
        book = await rule_book.load(session)
    purchase = Purchase(
        (PurchaseLine(data.category, data.amount_fen),),
        at,
        paid_with_points_fen=data.paid_with_points_fen,
        paid_with_vouchers_fen=data.paid_with_vouchers_fen,
        tier=data.tier,
    )
    try:
        breakdown = earn_points(purchase, book.earning_rules_at(at))
    except ValueError as exc:
        return problem(400, "invalid request", str(exc))
    return web.json_response(
        {
            "at": at.isoformat(),
            "eligible_fen": breakdown.eligible_fen,
            "base": _fraction(breakdown.base),
            "band_from_fen": breakdown.band.from_fen if breakdown.band else None,
            "after_band": _fraction(breakdown.after_band),
            "tier_multiplier": _fraction(breakdown.tier_multiplier),
            "campaign": breakdown.campaign.name if breakdown.campaign else None,
            "exact": _fraction(breakdown.exact),
            "points": breakdown.points,
        }
    )


@allow(*CONFIGURERS)
async def rules_page(request: web.Request) -> web.Response:
    async with read_session(request.app[SESSIONS]) as session:
        rows = await rule_book.list_rules(session)
    now = utcnow()
    return render(
        request, "loyalty_rules.html", {"rules": [rule_json(row, now) for row in rows], "kinds": list(RuleKind)}
    )


@allow(*CONFIGURERS)
async def referral(request: web.Request) -> web.Response:
    """推荐客户赠送 to the member in the path for bringing in `referred_member_id`, once per referred member."""
    data = await parse_body(request, ReferralIn)
    if isinstance(data, web.Response):
        return data
    principal = session_of(request).principal
    member_id = int(request.match_info["member_id"])
    try:
        async with transaction(request.app[SESSIONS]) as session:
            await load_member(session, principal, member_id)
            await load_member(session, principal, data.referred_member_id)
            award = await events.award_referral(session, member_id, data.referred_member_id, utcnow(), who=principal)
    except MemberNotFound:
        return problem(404, "not found")
    except ValueError as exc:
        return problem(409, "refused", str(exc))
    if award is None:
        reason = "already awarded for this member, or no referral rule is in force"
        return web.json_response({"awarded": False, "points": 0, "reason": reason})
    return web.json_response(
        {
            "awarded": True,
            "points": award.points,
            "lot_id": award.lot_id,
            "expires_at": award.expires_at.isoformat() if award.expires_at else None,
        },
        status=201,
    )
