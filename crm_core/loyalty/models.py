"""Points ledger tables: lots (what was earned, when it expires, what is left), an append-only journal of
entries, allocations (which lots an entry consumed) and one balance row per member kept in step.

Invariants the ledger keeps and `ledger.reconcile` checks:

* ``lot.remaining == lot.amount − Σ allocations.amount`` for that lot;
* ``account.valid == Σ remaining of valid lots == Σ entries.valid_change``;
* ``account.pending == Σ remaining of pending lots == Σ entries.pending_change``;
* ``account.debt == Σ entries.debt_change``;
* ``account.lifetime`` (累计积分) == Σ amount of lots that became valid and were not clawed back
  (states valid and expired); ``account.qualifying`` is the same over qualifying lots.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
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


class EntryKind(enum.StrEnum):
    EARN = "earn"
    VERIFY = "verify"
    SPEND = "spend"
    REFUND_CLAWBACK = "refund_clawback"
    EXPIRE = "expire"
    MANUAL_GRANT = "manual_grant"
    MANUAL_DEDUCT = "manual_deduct"
    DEBT_SETTLED = "debt_settled"


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
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        CheckConstraint("valid >= 0", name="valid_not_negative"),
        CheckConstraint("pending >= 0", name="pending_not_negative"),
        CheckConstraint("debt >= 0", name="debt_not_negative"),
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
    qualifying: Mapped[bool] = mapped_column(default=True)
    earned_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None]
    transaction_ref: Mapped[str | None] = mapped_column(String(64))  # 单据号 of the sale
    name: Mapped[str | None] = mapped_column(String(100))  # e.g. 注册赠送

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_in_range"),
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
