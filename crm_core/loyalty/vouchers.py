"""Merchant voucher verification (seed 000: merchants check vouchers in real time; 联盟商家 of seed 004).

`verify` answers "is this code good here, now, and for what" without changing it; `redeem` uses it up
with one conditional ``UPDATE … WHERE state = 'issued' AND <good here and now>``, so of any number of
concurrent redeems of one code exactly one succeeds. A voucher is good at its item's merchant, or at every
alliance merchant when the item names none; only merchants in 正式合作 (active) accept vouchers. Every
attempt, good or bad, is written to the verification log in the caller's transaction, so callers commit
even when the outcome is a refusal (outcomes are results, not exceptions).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.loyalty.models import CatalogueItem, Merchant, MerchantStatus, Voucher, VoucherCheck, VoucherState
from crm_core.loyalty.voucher_codes import normalise


class VoucherOutcome(enum.StrEnum):
    VALID = "valid"  # verify: good here and now
    REDEEMED = "redeemed"  # redeem: used up by this call
    MALFORMED = "malformed"  # a typo: the check symbol does not match
    UNKNOWN = "unknown"  # well-formed but never issued
    ALREADY_REDEEMED = "already_redeemed"
    EXPIRED = "expired"
    WRONG_MERCHANT = "wrong_merchant"
    MERCHANT_NOT_ACTIVE = "merchant_not_active"  # unknown merchant, 申请中 or 终止合作


class CheckAction(enum.StrEnum):
    VERIFY = "verify"
    REDEEM = "redeem"


@dataclass(frozen=True, slots=True)
class VoucherCheckResult:
    outcome: VoucherOutcome
    voucher_id: int | None = None
    item_name: str | None = None
    face_value_fen: int | None = None
    expires_at: dt.datetime | None = None
    redeemed_at: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in (VoucherOutcome.VALID, VoucherOutcome.REDEEMED)


async def _merchant(session: AsyncSession, merchant_code: str) -> tuple[int | None, bool]:
    row = (
        await session.execute(select(Merchant.id, Merchant.status).where(Merchant.code == merchant_code))
    ).one_or_none()
    if row is None:
        return None, False
    return row.id, row.status == MerchantStatus.ACTIVE


async def _examine(
    session: AsyncSession, code: str | None, merchant_id: int | None, merchant_active: bool, now: dt.datetime
) -> VoucherCheckResult:
    if code is None:
        return VoucherCheckResult(VoucherOutcome.MALFORMED)
    row = (
        await session.execute(
            select(Voucher, CatalogueItem.name, CatalogueItem.face_value_fen)
            .join(CatalogueItem, CatalogueItem.id == Voucher.item_id)
            .where(Voucher.code == code)
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if row is None:
        return VoucherCheckResult(VoucherOutcome.UNKNOWN)
    voucher: Voucher = row[0]

    def result(outcome: VoucherOutcome) -> VoucherCheckResult:
        return VoucherCheckResult(
            outcome, voucher.id, row.name, row.face_value_fen, voucher.expires_at, voucher.redeemed_at
        )

    if not merchant_active:
        return result(VoucherOutcome.MERCHANT_NOT_ACTIVE)
    if voucher.state == VoucherState.REDEEMED:
        return result(VoucherOutcome.ALREADY_REDEEMED)
    if voucher.expires_at is not None and voucher.expires_at <= now:
        return result(VoucherOutcome.EXPIRED)
    if voucher.merchant_id is not None and voucher.merchant_id != merchant_id:
        return result(VoucherOutcome.WRONG_MERCHANT)
    return result(VoucherOutcome.VALID)


def _log(
    session: AsyncSession,
    typed: str,
    result: VoucherCheckResult,
    merchant_id: int | None,
    action: CheckAction,
    now: dt.datetime,
) -> None:
    session.add(
        VoucherCheck(
            code_given=typed[:40],
            voucher_id=result.voucher_id,
            merchant_id=merchant_id,
            action=action,
            outcome=result.outcome,
            checked_at=now,
        )
    )


async def verify(session: AsyncSession, typed_code: str, merchant_code: str, now: dt.datetime) -> VoucherCheckResult:
    """Is the code good at this merchant now, and for which item and value? Changes nothing but the log."""
    merchant_id, active = await _merchant(session, merchant_code)
    result = await _examine(session, normalise(typed_code), merchant_id, active, now)
    _log(session, typed_code, result, merchant_id, CheckAction.VERIFY, now)
    await session.flush()
    return result


async def redeem(session: AsyncSession, typed_code: str, merchant_code: str, now: dt.datetime) -> VoucherCheckResult:
    """Use the voucher up at this merchant, exactly once; a refusal says why."""
    merchant_id, active = await _merchant(session, merchant_code)
    code = normalise(typed_code)
    result: VoucherCheckResult | None = None
    if code is not None and active:
        used = await session.execute(
            update(Voucher)
            .where(
                Voucher.code == code,
                Voucher.state == VoucherState.ISSUED,
                Voucher.expires_at.is_(None) | (Voucher.expires_at > now),
                Voucher.merchant_id.is_(None) | (Voucher.merchant_id == merchant_id),
            )
            .values(state=VoucherState.REDEEMED, redeemed_at=now, redeemed_merchant_id=merchant_id)
            .execution_options(synchronize_session=False)
        )
        if used.rowcount == 1:  # type: ignore[attr-defined]
            examined = await _examine(session, code, merchant_id, active, now)
            result = VoucherCheckResult(
                VoucherOutcome.REDEEMED,
                examined.voucher_id,
                examined.item_name,
                examined.face_value_fen,
                examined.expires_at,
                examined.redeemed_at,
            )
    if result is None:
        result = await _examine(session, code, merchant_id, active, now)
    _log(session, typed_code, result, merchant_id, CheckAction.REDEEM, now)
    await session.flush()
    return result
