"""Membership review deadlines (seed 001, the exchange's rules): an opinion within 30 working days
of complete materials, and the applicant's own 30 working days after the 入会通知书. Working days
are the product's business calendar (Chinese holidays, 调休 and the administrator's overrides)."""

from __future__ import annotations

import datetime as dt

from crm_core.business_calendar import BusinessCalendar

REVIEW_WORKING_DAYS = 30  # 审查意见: within 30 working days of complete materials
ADMISSION_WORKING_DAYS = 30  # after the 入会通知书: fees, clearing account, traders, seals


def review_due(calendar: BusinessCalendar, materials_complete_on: dt.date) -> dt.date:
    return calendar.add_working_days(materials_complete_on, REVIEW_WORKING_DAYS)


def admission_due(calendar: BusinessCalendar, notice_on: dt.date) -> dt.date:
    return calendar.add_working_days(notice_on, ADMISSION_WORKING_DAYS)
