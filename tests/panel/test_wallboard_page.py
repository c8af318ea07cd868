"""The wallboard page in Debian's Chromium: the tiles, agent table and chart fill from the board, and
follow a live event within about a second, with no script error (CSP: scripts only from the server)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser.chromium import chromium_context
from tests.db import factories
from tests.panel.conftest import Panel
from tests.panel.test_wallboard import Q, answered, offered
from tests.unit.test_wallboard import agent_state

pytestmark = pytest.mark.e2e

ARTEFACTS = Path(os.environ.get("CTI_TEST_ARTEFACTS", "var/test-artefacts"))


async def test_the_wallboard_page_shows_the_board_and_follows_events(panel: Panel, tmp_path: Path) -> None:
    engine = panel.engine
    engine.publish([agent_state("webrtc2001", time.time() - 65, "ready")])
    engine.publish([agent_state("webrtc2002", time.time() - 200, "paused", reason="lunch")])
    for i, wait in enumerate((5.0, 15.0, 35.0)):  # two within the 20 s target, one outside
        engine.publish([offered(f"c{i}")])
        engine.publish([answered(f"c{i}", wait)])
    base = str(panel.server.make_url("/"))
    errors: list[str] = []
    async with chromium_context(tmp_path / "profile") as context:
        page = await context.new_page()
        await page.set_viewport_size({"width": 1600, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(base + "login")
        await page.fill("input[name=username]", "admin1")  # an admin sees every team's agents
        await page.fill("input[name=password]", factories.PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_load_state("load")
        await page.goto(base + "wallboard")
        card = page.locator(f'.wb-queue[data-queue="{Q}"]')
        # Locator assertions, not wait_for_function: the page's CSP (no unsafe-eval) refuses string predicates.
        await expect(page.locator("#wb-live")).to_have_attribute("data-state", "open")
        assert await card.locator('[data-kpi="offered"]').inner_text() == "3"
        assert await card.locator('[data-kpi="service_level"]').inner_text() == "66.7%"
        assert await card.locator('[data-kpi="asa"]').inner_text() == "0:18"  # (5 + 15 + 35) / 3 = 18.3 s
        assert await card.locator('[data-agents="paused"]').inner_text() == "1"
        rows = await page.locator("#wb-agent-rows tr").all_inner_texts()
        assert len(rows) == 2 and any("webrtc2002" in r and "午餐" in r for r in rows)
        assert await page.evaluate("Chart.getChart(document.getElementById('wb-chart')).data.datasets.length") == 4

        engine.publish([offered("late")])
        sent = time.monotonic()
        await expect(card.locator('[data-kpi="waiting"]')).to_have_text("1", timeout=2000)
        assert time.monotonic() - sent < 1.5
        assert await card.locator('[data-kpi="offered"]').inner_text() == "4"
        # An agent's change reaches the table through the hub's team_state frame.
        engine.publish([agent_state("webrtc2001", time.time(), "on_call")])
        await expect(page.locator("#wb-agent-rows tr", has_text="webrtc2001")).to_contain_text("通话中")
        await asyncio.to_thread(ARTEFACTS.mkdir, parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTEFACTS / "wallboard.png"), full_page=True)
    assert errors == []
