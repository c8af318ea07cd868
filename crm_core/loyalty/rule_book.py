"""Earning rules kept in the database (`loyalty_earning_rules`), composed into the pure `rules.EarningRules`
for any moment.

Each rule has a validity window ``[starts_at, ends_at)`` (either end may be open) and the seeds' 停用标志
(`disabled`). What applies at a moment (a sale's time, not the import's):

* **rate** (订单金额积分规则): the points per spend and the band table. Of the active rate rules the one that
  started last wins, so a dated promotion (TurboCRM's 家用电器促销 with its bands, 2009-05-01..05-07)
  replaces the standing rate for its window only. No active rate rule: Sifan's 100 元 → 2 points.
* **category** (订单明细积分规则) and **tier**: a multiplier per product category / card level; for one
  category or tier the rule that started last wins.
* **campaign**: a multiplier for its window; of overlapping campaigns the highest applies (rules.py).
* **event** (其他积分规则): points for joining (optionally by customer type), a birthday or a referral,
  with their own expiry (the seeds' 注册赠送 expires at the end of its year, 推荐客户赠送 at the end of
  the next); the rule that started last wins. Event points are redeemable, never qualifying.

Rules are not edited once they may have applied: staff end a rule's window or disable it and add a new
one, so the points of any past sale can be recomputed from the rules of its time.

Composition is cached per window segment: all window boundaries are sorted once, a moment is placed by
bisection, and each segment's `EarningRules` is built on first use. An import of a year of sales with a
dozen rules builds a handful of them.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.loyalty.errors import LoyaltyError
from crm_core.loyalty.models import EarningRule, RuleKind
from crm_core.loyalty.rules import SHANGHAI, Campaign, EarningRules, SpendBand, sifan_expiry
from crm_core.security.policy import Principal


class InvalidRule(LoyaltyError):
    """A rule's parameters or window are not usable; the message says which and why."""


class RuleNotFound(LoyaltyError):
    pass


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Band(_Params):
    from_fen: int = Field(ge=0)
    offset_points: Decimal = Field(default=Decimal(0), ge=0, max_digits=12, decimal_places=2)
    multiplier: Decimal = Field(default=Decimal(1), ge=0, max_digits=8, decimal_places=4)


class RateParams(_Params):
    kind: Literal["rate"] = "rate"
    points_per_unit: int = Field(ge=0, le=1_000_000)
    unit_fen: int = Field(gt=0, le=100_000_000)
    bands: tuple[Band, ...] = ()


class CategoryParams(_Params):
    kind: Literal["category"] = "category"
    category: str = Field(min_length=1, max_length=64)
    multiplier: Decimal = Field(ge=0, max_digits=8, decimal_places=4)


class TierParams(_Params):
    kind: Literal["tier"] = "tier"
    tier: str = Field(min_length=1, max_length=32)
    multiplier: Decimal = Field(ge=0, max_digits=8, decimal_places=4)


class CampaignParams(_Params):
    kind: Literal["campaign"] = "campaign"
    multiplier: Decimal = Field(gt=0, max_digits=8, decimal_places=4)


EventName = Literal["join", "birthday", "referral"]
ExpiryMode = Literal["clearing", "year_end", "days", "never"]


class EventParams(_Params):
    kind: Literal["event"] = "event"
    event: EventName
    points: int = Field(gt=0, le=10_000_000)
    customer_type: str | None = Field(default=None, max_length=16)  # join only: 新增个人客户 / 团体客户 …
    # clearing: Sifan's annual clearing; year_end: 12-31 24:00 of the award's year + `years`; days: `days`
    # after the award; never.
    expiry: ExpiryMode = "clearing"
    years: int = Field(default=0, ge=0, le=10)
    days: int = Field(default=365, gt=0, le=3650)


Params = Annotated[RateParams | CategoryParams | TierParams | CampaignParams | EventParams, Field(discriminator="kind")]
_PARAMS: TypeAdapter[Params] = TypeAdapter(Params)


def parse_params(kind: str, params: dict[str, Any]) -> Params:
    """The rule's parameters validated for its kind; `InvalidRule` with every problem otherwise."""
    try:
        RuleKind(kind)
    except ValueError:
        raise InvalidRule(f"unknown rule kind {kind!r}; one of {', '.join(RuleKind)}") from None
    try:
        return _PARAMS.validate_python({**params, "kind": kind})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'][1:]) or kind}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidRule(problems) from None


def in_window(starts_at: dt.datetime | None, ends_at: dt.datetime | None, moment: dt.datetime) -> bool:
    """Whether `moment` is in ``[starts_at, ends_at)``; a missing end is open."""
    return (starts_at is None or starts_at <= moment) and (ends_at is None or moment < ends_at)


@dataclass(frozen=True, slots=True)
class Rule:
    id: int
    name: str
    params: Params
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None

    def active_at(self, moment: dt.datetime) -> bool:
        return in_window(self.starts_at, self.ends_at, moment)

    @property
    def order(self) -> tuple[dt.datetime, int]:
        """Later start wins; at equal starts the newer rule."""
        return (self.starts_at or dt.datetime.min.replace(tzinfo=dt.UTC), self.id)


@dataclass(frozen=True, slots=True)
class EventGrant:
    rule_id: int
    name: str
    points: int
    expires_at: dt.datetime | None


@dataclass(slots=True)
class RuleBook:
    """The enabled rules of a site, composed per moment (see the module docstring)."""

    rules: tuple[Rule, ...]
    _bounds: list[dt.datetime] = field(init=False)
    _segments: dict[int, EarningRules] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        edges = {moment for rule in self.rules for moment in (rule.starts_at, rule.ends_at) if moment is not None}
        self._bounds = sorted(edges)

    def earning_rules_at(self, moment: dt.datetime) -> EarningRules:
        segment = bisect.bisect_right(self._bounds, moment)
        composed = self._segments.get(segment)
        if composed is None:
            composed = self._segments[segment] = self._compose(moment)
        return composed

    def _active(self, moment: dt.datetime) -> list[Rule]:
        return sorted((rule for rule in self.rules if rule.active_at(moment)), key=lambda rule: rule.order)

    def _compose(self, moment: dt.datetime) -> EarningRules:
        composed = EarningRules()
        categories: dict[str, Decimal] = {}
        tiers: dict[str, Decimal] = {}
        campaigns: list[Campaign] = []
        for rule in self._active(moment):  # later rules overwrite earlier ones
            params = rule.params
            if isinstance(params, RateParams):
                composed = EarningRules(
                    points_per_unit=params.points_per_unit,
                    unit_fen=params.unit_fen,
                    bands=tuple(SpendBand(b.from_fen, b.offset_points, b.multiplier) for b in params.bands),
                )
            elif isinstance(params, CategoryParams):
                categories[params.category] = params.multiplier
            elif isinstance(params, TierParams):
                tiers[params.tier] = params.multiplier
            elif isinstance(params, CampaignParams):
                campaigns.append(
                    Campaign(
                        rule.name,
                        rule.starts_at or dt.datetime.min.replace(tzinfo=dt.UTC),
                        rule.ends_at or dt.datetime.max.replace(tzinfo=dt.UTC),
                        params.multiplier,
                    )
                )
        return EarningRules(
            points_per_unit=composed.points_per_unit,
            unit_fen=composed.unit_fen,
            bands=composed.bands,
            category_multipliers=categories,
            tier_multipliers=tiers,
            campaigns=tuple(campaigns),
        )

    def event_grant(
        self,
        event: str,
        moment: dt.datetime,
        *,
        customer_type: str | None = None,
        joined_on: dt.date | None = None,
    ) -> EventGrant | None:
        """The points an event earns at `moment` and when they expire, or None when no rule gives any."""
        chosen: Rule | None = None
        for rule in self._active(moment):
            params = rule.params
            if not isinstance(params, EventParams) or params.event != event:
                continue
            if params.customer_type is not None and params.customer_type != customer_type:
                continue
            chosen = rule
        if chosen is None:
            return None
        params = chosen.params
        assert isinstance(params, EventParams)
        return EventGrant(chosen.id, chosen.name, params.points, event_expiry(params, moment, joined_on))


def event_expiry(params: EventParams, moment: dt.datetime, joined_on: dt.date | None) -> dt.datetime | None:
    if params.expiry == "never":
        return None
    if params.expiry == "days":
        return moment + dt.timedelta(days=params.days)
    if params.expiry == "year_end":
        year = moment.astimezone(SHANGHAI).year + params.years
        return dt.datetime(year + 1, 1, 1, tzinfo=SHANGHAI).astimezone(dt.UTC)
    return sifan_expiry(moment, joined_on)


def _rule(row: EarningRule) -> Rule:
    return Rule(row.id, row.name, parse_params(row.kind, row.params), row.starts_at, row.ends_at)


async def load(session: AsyncSession) -> RuleBook:
    """The enabled rules (a site has tens of them: read in one query, composed lazily)."""
    rows = (await session.execute(select(EarningRule).where(EarningRule.disabled.is_(False)))).scalars()
    return RuleBook(tuple(_rule(row) for row in rows))


def _window(starts_at: dt.datetime | None, ends_at: dt.datetime | None) -> None:
    for moment in (starts_at, ends_at):
        if moment is not None and moment.tzinfo is None:
            raise InvalidRule("rule windows need a time zone")
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise InvalidRule("a rule's window must end after it starts")


async def create_rule(
    session: AsyncSession,
    *,
    name: str,
    kind: str,
    params: dict[str, Any],
    starts_at: dt.datetime | None,
    ends_at: dt.datetime | None,
    who: Principal | None,
) -> EarningRule:
    parsed = parse_params(kind, params)
    if not name.strip():
        raise InvalidRule("a rule needs a name")
    _window(starts_at, ends_at)
    if isinstance(parsed, CampaignParams) and (starts_at is None or ends_at is None):
        raise InvalidRule("a campaign needs both a start and an end")
    row = EarningRule(
        name=name.strip(),
        kind=kind,
        params=parsed.model_dump(mode="json", exclude={"kind"}),
        starts_at=starts_at,
        ends_at=ends_at,
        created_by=who.user_id if who is not None and who.user_id else None,
    )
    session.add(row)
    await session.flush()
    return row


async def end_rule(
    session: AsyncSession, rule_id: int, *, ends_at: dt.datetime | None = None, disable: bool = False
) -> EarningRule:
    """Close a rule's window at `ends_at` (never before it started), or disable it altogether."""
    row = (await session.execute(select(EarningRule).where(EarningRule.id == rule_id))).scalar_one_or_none()
    if row is None:
        raise RuleNotFound(f"earning rule {rule_id} not found")
    if ends_at is not None:
        _window(row.starts_at, ends_at)
        if row.ends_at is not None and ends_at > row.ends_at:
            raise InvalidRule("a rule's window can be shortened, not extended: add a new rule instead")
    values: dict[str, Any] = {}
    if ends_at is not None:
        values["ends_at"] = ends_at
    if disable:
        values["disabled"] = True
    if values:
        await session.execute(update(EarningRule).where(EarningRule.id == rule_id).values(**values))
        await session.refresh(row)
    return row


async def list_rules(session: AsyncSession) -> list[EarningRule]:
    return list(
        (await session.execute(select(EarningRule).order_by(EarningRule.kind, EarningRule.starts_at, EarningRule.id)))
        .scalars()
        .all()
    )
