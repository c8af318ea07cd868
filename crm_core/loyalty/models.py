"""Points ledger tables: lots (what was earned, when it expires, what is left), an append-only journal of
entries, allocations (which lots an entry consumed) and one balance row per member kept in step.

Invariants the ledger keeps and `ledger.reconcile` checks:

* ``lot.remaining == lot.amount − Σ allocations.amount`` for that lot;
* ``account.valid == Σ remaining of valid lots == Σ entries.valid_change``;
* ``account.pending == Σ remaining of pending lots == Σ entries.pending_change``;
* ``account.debt == Σ entries.debt_change``;
* ``account.held == Σ entries.held_change`` (points in escrow for open redemption requests);
* ``account.lifetime`` (累计积分) == Σ amount of lots that became valid and were not clawed back
  (states valid and expired; lots that merely give escrowed points back are not earnings and are left
  out); ``account.qualifying`` is the same over qualifying lots.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class LotState(enum.StrEnum):
    PENDING = "pending"  # waits for confirmation (Mingyuan 购房类); not spendable
    VALID = "valid"
    EXPIRED = "expired"
    CLAWED_BACK = "clawed_back"  # the purchase that earned it was returned


class LotSource(enum.StrEnum):
    PURCHASE = "purchase"
    MANUAL_GRANT = "manual_grant"
    # Points an escrow hold took from lots and a rejected/cancelled redemption gives back (see redemption.py).
    ESCROW_RELEASE = "escrow_release"
    # Event points (join, birthday, referral) from an earning rule of kind "event" (rule_book.py).
    EVENT = "event"


class EntryKind(enum.StrEnum):
    EARN = "earn"
    VERIFY = "verify"
    SPEND = "spend"
    REFUND_CLAWBACK = "refund_clawback"
    EXPIRE = "expire"
    MANUAL_GRANT = "manual_grant"
    MANUAL_DEDUCT = "manual_deduct"
    DEBT_SETTLED = "debt_settled"
    ESCROW_HOLD = "escrow_hold"  # valid → held: a redemption request waits for approval
    ESCROW_SPEND = "escrow_spend"  # held → gone: the redemption was approved (积分消费)
    ESCROW_RELEASE = "escrow_release"  # held → valid: the redemption was rejected or cancelled


class PointsAccount(Base):
    """The member's balances, updated only with ``UPDATE … SET x = x + :n`` in the same transaction as the
    entry that changes them; the row is also the per-member lock for spends (SELECT … FOR UPDATE)."""

    __tablename__ = "points_accounts"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    valid: Mapped[int] = mapped_column(BigInteger, default=0)  # 有效积分
    pending: Mapped[int] = mapped_column(BigInteger, default=0)
    lifetime: Mapped[int] = mapped_column(BigInteger, default=0)  # 累计积分
    qualifying: Mapped[int] = mapped_column(BigInteger, default=0)  # 升级积分
    # Points a return clawed back that the member had already spent and no other lot could cover:
    # owed back as the gift or its cash value (Sifan).
    debt: Mapped[int] = mapped_column(BigInteger, default=0)
    # Points taken out of the lots for redemption requests awaiting approval: neither spendable nor expiring.
    held: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        CheckConstraint("valid >= 0", name="valid_not_negative"),
        CheckConstraint("pending >= 0", name="pending_not_negative"),
        CheckConstraint("debt >= 0", name="debt_not_negative"),
        CheckConstraint("held >= 0", name="held_not_negative"),
    )


class PointsLot(Base):
    """Points earned or granted together, expiring together; spends and clawbacks draw `remaining` down."""

    __tablename__ = "points_lots"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))  # LotSource
    state: Mapped[str] = mapped_column(String(16))  # LotState
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    # Points of `amount` reversed by partial returns (ledger.refund with `points`); what the lot still
    # counts towards lifetime and qualifying points is amount − clawed_back.
    clawed_back: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    qualifying: Mapped[bool] = mapped_column(default=True)
    earned_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None]
    transaction_ref: Mapped[str | None] = mapped_column(String(64))  # 单据号 of the sale
    name: Mapped[str | None] = mapped_column(String(100))  # e.g. 注册赠送

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_in_range"),
        CheckConstraint("clawed_back >= 0 AND clawed_back <= amount", name="clawed_back_in_range"),
        # Spends read a member's valid lots in expiry order; the expiry job reads by state and expiry.
        Index("ix_points_lots_member_state_expires", "member_id", "state", "expires_at"),
        Index("ix_points_lots_state_expires", "state", "expires_at"),
        Index("ix_points_lots_member_transaction_ref", "member_id", "transaction_ref"),
    )


class PointsEntry(Base):
    """Append-only journal: one row per operation, never updated or deleted. The signed changes let the
    balances be recomputed from the journal alone."""

    __tablename__ = "points_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # EntryKind
    valid_change: Mapped[int] = mapped_column(BigInteger, default=0)
    pending_change: Mapped[int] = mapped_column(BigInteger, default=0)
    debt_change: Mapped[int] = mapped_column(BigInteger, default=0)
    held_change: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("points_lots.id"), index=True)
    ref: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PointsAllocation(Base):
    """How much of which lot an entry (spend, deduct, clawback, expiry) consumed."""

    __tablename__ = "points_allocations"

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("points_entries.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("points_lots.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)


# ------------------------------------------------------------------------------------------------ tiers


class TierPeriod(enum.StrEnum):
    QUARTER = "quarter"  # 任一自然季度 (pharmacy seed)
    YEAR = "year"


class TierDefinition(Base):
    """A card tier and the qualifying points one calendar period must reach for it (普通 0, 金卡 1,200,
    钻石卡 5,000 per quarter in the pharmacy seed). `code` is the member's `member_type`."""

    __tablename__ = "loyalty_tiers"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    rank: Mapped[int] = mapped_column(Integer, unique=True)  # higher rank = higher tier
    threshold: Mapped[int] = mapped_column(BigInteger)  # qualifying points within one period
    period: Mapped[str] = mapped_column(String(16), default=TierPeriod.QUARTER)

    __table_args__ = (CheckConstraint("threshold >= 0", name="threshold_not_negative"),)


class MemberTier(Base):
    """How long the member's current tier holds and any manual floor; the tier itself is
    `members.member_type`, which the rest of the CRM already reads."""

    __tablename__ = "loyalty_member_tiers"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    # The period review may lower the tier from this instant on (当年: the end of the qualifying year).
    held_until: Mapped[dt.datetime | None]
    floor_tier: Mapped[str | None] = mapped_column(String(16))
    floor_until: Mapped[dt.datetime | None]
    floor_reason: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_loyalty_member_tiers_held_until", "held_until"),)


class TierChange(Base):
    """Audit of every tier change (字段名/原值/新值/修改人/修改时间, TurboCRM) with its reason."""

    __tablename__ = "loyalty_tier_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    from_tier: Mapped[str] = mapped_column(String(16))
    to_tier: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))  # TierChangeReason
    note: Mapped[str | None] = mapped_column(String(200))
    changed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# ------------------------------------------------------------------------------- catalogue & redemption


class MerchantStatus(enum.StrEnum):
    """联盟商家 status (seed 004): 申请中 / 正式合作 / 终止合作; only active merchants accept vouchers."""

    APPLYING = "applying"
    ACTIVE = "active"
    TERMINATED = "terminated"


class Merchant(Base):
    __tablename__ = "loyalty_merchants"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default=MerchantStatus.APPLYING)
    offer_terms: Mapped[str | None] = mapped_column(String(500))  # 优惠条款


class ItemKind(enum.StrEnum):
    GIFT = "gift"  # 实物奖励: shipped
    VOUCHER = "voucher"  # 礼品现金兑换券: a code a merchant checks


class CatalogueItem(Base):
    """A gift or voucher members can redeem points for; its stock is in `CatalogueStock`."""

    __tablename__ = "loyalty_catalogue_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # ItemKind
    points: Mapped[int] = mapped_column(BigInteger)  # cost of one
    # Vouchers: redeemable at this merchant only, or at every active alliance merchant when empty.
    merchant_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_merchants.id"))
    voucher_valid_days: Mapped[int | None] = mapped_column(Integer)
    face_value_fen: Mapped[int | None] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(default=True)

    __table_args__ = (CheckConstraint("points > 0", name="points_positive"),)


class CatalogueStock(Base):
    """An item's stock, split over a few rows (shards) so concurrent redemptions of one popular item do
    not all queue on one row lock; each shard only changes by ``UPDATE … WHERE stock >= :n``."""

    __tablename__ = "loyalty_catalogue_stock"

    item_id: Mapped[int] = mapped_column(ForeignKey("loyalty_catalogue_items.id", ondelete="CASCADE"), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    stock: Mapped[int] = mapped_column(Integer)

    __table_args__ = (CheckConstraint("stock >= 0", name="stock_not_negative"),)


class RedemptionState(enum.StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"  # points held in escrow
    COMPLETED = "completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class Redemption(Base):
    """A member's request to turn points into a catalogue item (积分兑换记录); state changes only by
    conditional UPDATE from awaiting_approval, so it is decided exactly once."""

    __tablename__ = "loyalty_redemptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("loyalty_catalogue_items.id"), index=True)
    quantity: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(20))  # RedemptionState
    needs_approval: Mapped[bool]
    approval_reason: Mapped[str | None] = mapped_column(String(100))  # why it waits: amount, flagged member
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[dt.datetime | None]
    decision_note: Mapped[str | None] = mapped_column(String(200))
    # The ESCROW_HOLD entry whose allocations a rejection gives back.
    hold_entry_id: Mapped[int | None] = mapped_column(ForeignKey("points_entries.id"))

    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("points > 0", name="points_positive"),
        Index("ix_loyalty_redemptions_state_requested_at", "state", "requested_at"),
    )


class MemberFlag(Base):
    """A member whose redemptions always need a second person (suspicious activity, staff decision)."""

    __tablename__ = "loyalty_member_flags"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    reason: Mapped[str] = mapped_column(String(200))
    flagged_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    flagged_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Shipment(Base):
    """A gift to send for a completed redemption."""

    __tablename__ = "loyalty_shipments"

    id: Mapped[int] = mapped_column(primary_key=True)
    redemption_id: Mapped[int] = mapped_column(ForeignKey("loyalty_redemptions.id"), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("loyalty_catalogue_items.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="to_ship")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VoucherState(enum.StrEnum):
    ISSUED = "issued"
    REDEEMED = "redeemed"


class Voucher(Base):
    """One single-use voucher code; redeemed by one conditional UPDATE from issued."""

    __tablename__ = "loyalty_vouchers"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)  # normalised, without separators
    redemption_id: Mapped[int] = mapped_column(ForeignKey("loyalty_redemptions.id"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("loyalty_catalogue_items.id"))
    merchant_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_merchants.id"))
    state: Mapped[str] = mapped_column(String(16), default=VoucherState.ISSUED)
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None]
    redeemed_at: Mapped[dt.datetime | None]
    redeemed_merchant_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_merchants.id"))


class VoucherCheck(Base):
    """Verification log: every verify or redeem attempt by a merchant, successful or not."""

    __tablename__ = "loyalty_voucher_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    code_given: Mapped[str] = mapped_column(String(40))
    voucher_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_vouchers.id"), index=True)
    merchant_id: Mapped[int | None] = mapped_column(ForeignKey("loyalty_merchants.id"), index=True)
    action: Mapped[str] = mapped_column(String(8))  # verify | redeem
    outcome: Mapped[str] = mapped_column(String(20))  # VoucherOutcome
    checked_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# ------------------------------------------------------------------------------------------- POS import


class PosTransaction(Base):
    """One imported POS transaction (sale or return), keyed by the POS's own id: the import's idempotence.
    `content_hash` tells a repeat of the same row (skipped) from a different row reusing the id (refused)."""

    __tablename__ = "loyalty_pos_transactions"

    transaction_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # sale | return
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    occurred_at: Mapped[dt.datetime]
    store: Mapped[str | None] = mapped_column(String(64))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    original_id: Mapped[str | None] = mapped_column(String(64), index=True)  # returns: the sale returned
    points: Mapped[int] = mapped_column(BigInteger)  # earned (sale) or clawed back (return)
    content_hash: Mapped[str] = mapped_column(String(64))
    imported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# -------------------------------------------------------------------------------------- earning rules


class RuleKind(enum.StrEnum):
    RATE = "rate"  # 订单金额积分规则: points per spend, with the band table
    CATEGORY = "category"  # 订单明细积分规则: a product category's multiplier
    TIER = "tier"  # a card level's multiplier
    CAMPAIGN = "campaign"  # a campaign period's multiplier (the highest active one applies)
    EVENT = "event"  # 其他积分规则: points for joining, a birthday, a referral


class EarningRule(Base):
    """One earning rule with its validity window ``[starts_at, ends_at)`` (open ends allowed) and the
    seeds' 停用标志. Rules are never edited in place once they may have applied: staff disable one or end
    its window and add a new one, so a points dispute can always be replayed (see rule_book.py)."""

    __tablename__ = "loyalty_earning_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(12))  # RuleKind
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    starts_at: Mapped[dt.datetime | None]
    ends_at: Mapped[dt.datetime | None]
    disabled: Mapped[bool] = mapped_column(default=False)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (CheckConstraint("ends_at IS NULL OR starts_at IS NULL OR ends_at > starts_at", name="window"),)


class EventAward(Base):
    """Event points given once per occasion: (member, event, occasion) is unique, so a re-run birthday job
    or a repeated referral cannot grant twice. occasion: ``join``, the birthday's year, ``referral:<id>``."""

    __tablename__ = "loyalty_event_awards"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(16))
    occasion: Mapped[str] = mapped_column(String(40))
    rule_id: Mapped[int] = mapped_column(ForeignKey("loyalty_earning_rules.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("points_lots.id"))
    awarded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ux_loyalty_event_awards_occasion", "member_id", "event", "occasion", unique=True),)
