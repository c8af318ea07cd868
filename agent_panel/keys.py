"""Typed application keys: what the handlers share, set once by `create_app`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.settings import Settings

if TYPE_CHECKING:
    from agent_panel.auth import SessionCache
    from agent_panel.i18n import Catalogues
    from agent_panel.ws import Hub
    from crm_core.loyalty.redemption_batch import RedemptionBatcher
    from cti.engine import CtiEngine

SETTINGS = web.AppKey("settings", Settings)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
ENGINE: web.AppKey[CtiEngine] = web.AppKey("engine")
HUB: web.AppKey[Hub] = web.AppKey("hub")
AUTH: web.AppKey[SessionCache] = web.AppKey("auth")
I18N: web.AppKey[Catalogues] = web.AppKey("i18n")
REDEMPTIONS: web.AppKey[RedemptionBatcher] = web.AppKey("redemptions")
