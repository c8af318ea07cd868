"""Debian's Chromium driven by Playwright for Python, set up for WebRTC tests.

Playwright's own browser download is impossible here, so this always runs ``/usr/bin/chromium``
(scripts/install-system-deps installs it); never run ``playwright install``. Launch it inside
``tests.browser.netns.isolated_network()`` when the page does WebRTC: Chromium leaves loopback out of ICE.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import BrowserContext, Playwright, async_playwright

from tests.conftest import missing_part

CHROMIUM = "/usr/bin/chromium"

# From shared/design/ASTERISK-SANDBOX.md (verified): fake camera/microphone with the permission prompt
# auto-accepted, autoplay allowed, no background traffic, and real host IPs in ICE candidates instead of
# mDNS names (Asterisk cannot resolve `*.local`).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)


@dataclass
class Chromium:
    """A running Chromium: ``context`` to open pages in; ``close()`` ends the browser and Playwright's driver."""

    context: BrowserContext
    playwright: Playwright

    async def close(self) -> None:
        try:
            await self.context.close()
        finally:
            await self.playwright.stop()


async def launch(user_data_dir: Path, *, extra_args: Sequence[str] = ()) -> Chromium:
    """Start headless Chromium with a fresh profile in ``user_data_dir``; the caller must ``await close()``.

    A missing /usr/bin/chromium skips the test on a developer's machine and fails it with CI=true.
    """
    if not os.access(CHROMIUM, os.X_OK):
        missing_part(f"{CHROMIUM} not installed (scripts/install-system-deps installs Debian's chromium)")
    playwright = await async_playwright().start()
    try:
        context = await playwright.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_ARGS, *extra_args],
        )
    except BaseException:
        await playwright.stop()
        raise
    return Chromium(context=context, playwright=playwright)


@asynccontextmanager
async def chromium_context(user_data_dir: Path, *, extra_args: Sequence[str] = ()) -> AsyncIterator[BrowserContext]:
    """``launch()`` as ``async with``: yields the BrowserContext, closes browser and driver afterwards."""
    chromium = await launch(user_data_dir, extra_args=extra_args)
    try:
        yield chromium.context
    finally:
        await chromium.close()
