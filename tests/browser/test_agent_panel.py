"""The agent panel end to end, in real Chromium against the real Asterisk sandbox and the server.

An agent signs in, the softphone registers, a customer phone calls the 400 number, the pop shows the
right member before the answer, the agent answers in the browser and audio flows both ways, hangs up,
saves the wrap-up and the communication record exists. Click-to-dial from a member page rings the
browser, then the customer. A missed call becomes a callback that only one of two agents can claim.
Screenshots of each key screen go to var/test-artefacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from asterisk_sandbox import BaresipPhone
from playwright.async_api import Page, expect
from sqlalchemy import select

from crm_core.callbacks.models import Callback
from crm_core.calllog.models import Call
from crm_core.calllog.recording_models import Recording, RecordingAccess
from crm_core.comms.models import CommunicationRecord
from crm_core.db import read_session, transaction
from crm_core.security.models import User
from crm_core.security.policy import DataScope, Principal, Role
from tests.browser.chromium import launch
from tests.browser.conftest import Stack
from tests.db import factories
from tests.panel.conftest import login as api_login

pytestmark = pytest.mark.e2e
MEMBER_NUMBER = "13800138001"  # cust1's caller ID
UNKNOWN_NUMBER = "13800138002"  # cust2's


async def sign_in(stack: Stack, page: Page, username: str) -> None:
    await page.goto(f"{stack.base_url}/login")
    await page.fill("#username", username)
    await page.fill("#password", factories.PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{stack.base_url}/")
    await expect(page.locator("#sip-status")).to_have_attribute("data-status", "registered", timeout=15_000)


async def make_ready(page: Page) -> None:
    await page.click("#btn-login")
    await page.click("#btn-ready")
    await expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready", timeout=10_000)


@pytest.fixture(scope="module")
async def member_id(stack: Stack) -> int:
    joined = await factories.member(stack.sessions, stack.settings, name="王芳", mobile=MEMBER_NUMBER)
    return joined.member_id


@pytest.fixture(scope="module")
async def agent(stack: Stack, member_id: int) -> AsyncIterator[Page]:
    page = await stack.chromium.context.new_page()
    page.on("console", lambda msg: print("console:", msg.type, msg.text) if msg.type == "error" else None)
    await sign_in(stack, page, "agent1")
    await make_ready(page)
    yield page
    await page.close()


@pytest.fixture
async def customer(stack: Stack) -> AsyncIterator[BaresipPhone]:
    phone = await stack.sandbox.phone("cust1").connect()
    yield phone
    with contextlib.suppress(Exception):
        await phone.command("hangupall", "all")
    await phone.close()


async def test_inbound_call_pops_answers_talks_and_wraps_up(
    stack: Stack, agent: Page, customer: BaresipPhone, member_id: int
) -> None:
    page = agent
    await customer.dial("4008001234")
    pop = page.locator("#pop")
    # The card is there while the phone still rings: the member's name, the line and the queue.
    await expect(pop.locator(".member-card h2")).to_contain_text("王芳", timeout=10_000)
    await expect(page.locator("#btn-answer")).to_be_enabled(timeout=5_000)
    await expect(pop).to_contain_text("4008001234")
    await expect(pop).to_contain_text("会员服务")  # the member-service queue, in the default language
    await page.screenshot(path=stack.screenshot_path("1-screen-pop-ringing"), full_page=True)

    await page.click("#btn-answer")
    await customer.wait_for_event("CALL_ESTABLISHED", timeout=10)
    await expect(page.locator("#agent-state")).to_have_attribute("data-state", "on_call", timeout=10_000)
    await asyncio.sleep(2.5)
    stats = await page.evaluate("window.panel.phone.stats()")
    assert stats["sent"] > 1000 and stats["received"] > 1000, stats
    await page.screenshot(path=stack.screenshot_path("2-in-call"), full_page=True)

    await page.click("#btn-hangup")
    wrapup = page.locator("#wrapup")
    await expect(wrapup).to_be_visible(timeout=10_000)
    # member-service requires wrap-up: the agent is held (no new call offered) until it is saved,
    # well past the queue's own 2 s wrap-up time.
    await asyncio.sleep(3)
    await expect(page.locator("#agent-state")).to_have_attribute("data-state", "wrap_up")
    linkedid = await wrapup.locator("input[name=linkedid]").input_value()
    assert linkedid
    await wrapup.locator("select[name=disposition]").select_option("resolved")
    await wrapup.locator("select[name=category]").select_option("complaint")
    await wrapup.locator("textarea[name=summary]").fill("会员投诉积分未到账，已核实并补录")
    await page.screenshot(path=stack.screenshot_path("3-wrap-up"), full_page=True)
    await page.click("#btn-wrapup")
    await expect(wrapup).to_be_hidden(timeout=5_000)
    await expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready", timeout=10_000)

    async with read_session(stack.sessions) as session:
        record = (
            await session.execute(select(CommunicationRecord).where(CommunicationRecord.call_id == linkedid))
        ).scalar_one()
        call = (await session.execute(select(Call).where(Call.linkedid == linkedid))).scalar_one()
    assert record.member_id == member_id and record.category == "complaint" and record.direction == "in"
    assert "补录" in record.summary
    assert call.disposition == "resolved" and call.outcome == "answered" and call.member_id == member_id
    assert call.agent_endpoint == "webrtc2001"


async def test_click_to_dial_from_member_page_rings_browser_then_customer(
    stack: Stack, agent: Page, customer: BaresipPhone, member_id: int
) -> None:
    page = agent
    await expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready", timeout=10_000)
    member_page = await stack.chromium.context.new_page()
    try:
        await member_page.goto(f"{stack.base_url}/members/{member_id}")
        await expect(member_page.locator(".member-card h2")).to_contain_text("王芳")
        await member_page.screenshot(path=stack.screenshot_path("4-member-360"), full_page=True)
        mark = customer.mark()
        await member_page.locator(".phones button.dial").first.click()
        # The agent's own softphone rings first (the workspace tab), then the customer.
        await expect(page.locator("#btn-answer")).to_be_enabled(timeout=10_000)
        await page.click("#btn-answer")
        await customer.wait_for_event("CALL_INCOMING", since=mark, timeout=10)
        await customer.accept()
        await customer.wait_for_event("CALL_ESTABLISHED", since=mark, timeout=10)
        await expect(page.locator("#agent-state")).to_have_attribute("data-state", "on_call", timeout=10_000)
        await asyncio.sleep(1.5)
        stats = await page.evaluate("window.panel.phone.stats()")
        assert stats["received"] > 0 and stats["sent"] > 0, stats
        await customer.hangup()
        await expect(page.locator("#wrapup")).to_be_visible(timeout=10_000)
        linkedid = await page.locator("#wrapup input[name=linkedid]").input_value()
        call = await _ended_call(stack, linkedid)
        assert call.direction == "outbound" and call.outcome == "answered"
        assert call.callee_e164 == "+86" + MEMBER_NUMBER
        await page.locator("#wrapup textarea[name=summary]").fill("回访完成")
        await page.click("#btn-wrapup")
        await expect(page.locator("#wrapup")).to_be_hidden(timeout=5_000)
    finally:
        await member_page.close()


async def test_missed_call_becomes_a_callback_claimed_once(stack: Stack, agent: Page) -> None:
    page = agent
    await page.select_option("#pause-reason", "break")
    await page.click("#btn-pause")
    await expect(page.locator("#agent-state")).to_have_attribute("data-state", "paused", timeout=10_000)
    caller = await stack.sandbox.phone("cust2").connect()
    try:
        await caller.dial("4008001234")
        await asyncio.sleep(3)
        await caller.hangup()  # abandoned in the queue: nobody was ready
    finally:
        await caller.close()
    item = page.locator("#team-callbacks li.callback").first
    await expect(item).to_be_visible(timeout=10_000)
    await page.screenshot(path=stack.screenshot_path("5-callback-queue"), full_page=True)
    callback_id = int(await item.get_attribute("data-callback-id") or "0")

    # agent2 claims through the API at the same moment agent1 clicks Claim in the browser.
    async with aiohttp.ClientSession(base_url=stack.base_url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        csrf = await api_login(other, "agent2")
        button = await item.locator("button.cb-claim").element_handle()
        assert button is not None
        # Both claims leave at once: agent1's click in the page (not waiting for the list to settle).
        results = await asyncio.gather(
            button.evaluate("b => b.click()"),
            other.post(f"/api/v1/callbacks/{callback_id}/claim", headers={"X-CSRF-Token": csrf}),
        )
        other_status = results[1].status
    await asyncio.sleep(1)
    async with read_session(stack.sessions) as session:
        callback = await session.get(Callback, callback_id)
        users = dict((await session.execute(select(User.id, User.username))).all())
    assert callback is not None and callback.status == "claimed"
    winner = users[callback.claimed_by_user_id]
    assert (winner == "agent2") == (other_status == 200)
    assert other_status in (200, 409)
    if winner == "agent1":
        await expect(page.locator("#my-callbacks li.callback")).to_have_count(1, timeout=5_000)
    await page.click("#btn-ready")
    await expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready", timeout=10_000)


@pytest.fixture(scope="module")
async def agent2(stack: Stack, member_id: int, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Page]:
    """A second agent in a browser of its own (its own cookies), registered but not in any queue, so
    it rings only for transfers."""
    chromium = await launch(tmp_path_factory.mktemp("chromium-agent2"))
    page = await chromium.context.new_page()
    await sign_in(stack, page, "agent2")
    yield page
    await chromium.close()


async def _answered_call(stack: Stack, page: Page, customer: BaresipPhone) -> str:
    await expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready", timeout=15_000)
    head = page.locator("#pop .pop-head")
    previous = await head.get_attribute("data-linkedid") if await head.count() else None
    mark = customer.mark()
    await customer.dial("4008001234")
    await expect(page.locator("#btn-answer")).to_be_enabled(timeout=10_000)
    # The phone can ring before the pop frame arrives: until then the pop still shows the previous
    # call, whose id read here made the blind-transfer test check the wrong call now and then.
    if previous is not None:
        await expect(head).not_to_have_attribute("data-linkedid", previous, timeout=10_000)
    await expect(head).to_have_count(1, timeout=10_000)
    linkedid = await head.get_attribute("data-linkedid")
    await page.click("#btn-answer")
    await customer.wait_for_event("CALL_ESTABLISHED", since=mark, timeout=10)
    assert linkedid
    return linkedid


async def _ended_call(stack: Stack, linkedid: str) -> Call:
    for _ in range(100):
        async with read_session(stack.sessions) as session:
            call = (await session.execute(select(Call).where(Call.linkedid == linkedid))).scalar_one_or_none()
        if call is not None and call.state == "ended":
            return call
        await asyncio.sleep(0.1)
    raise AssertionError(f"call {linkedid} not ended in the call log")


async def _save_wrapup(page: Page) -> None:
    await expect(page.locator("#wrapup")).to_be_visible(timeout=10_000)
    await page.locator("#wrapup textarea[name=summary]").fill("已转接")
    await page.click("#btn-wrapup")
    await expect(page.locator("#wrapup")).to_be_hidden(timeout=5_000)


async def test_hold_mute_and_blind_transfer_to_another_agent(
    stack: Stack, agent: Page, agent2: Page, customer: BaresipPhone
) -> None:
    linkedid = await _answered_call(stack, agent, customer)
    ami = await stack.sandbox.ami(raw=True)
    try:
        mark = len(ami.events)
        await agent.click("#keypad button[data-dtmf='5']")
        digit = await ami.wait_for_event(
            "DTMFEnd", since=mark, timeout=10, predicate=lambda m: m.get("Channel", "").startswith("PJSIP/webrtc2001")
        )
        assert digit["Digit"] == "5" and digit["Direction"] == "Received"  # Asterisk got it from the browser
    finally:
        await ami.close()
    await agent.click("#btn-mute")
    assert await agent.evaluate("window.panel.phone.muted") is True
    await agent.click("#btn-mute")
    await agent.click("#btn-hold")
    await expect(agent.locator("#btn-hold")).to_have_class(re.compile(r"\bon\b"), timeout=5_000)
    await agent.click("#btn-hold")
    await expect(agent.locator("#btn-hold")).not_to_have_class(re.compile(r"\bon\b"), timeout=5_000)
    await agent.fill("#transfer-target", "webrtc2002")
    await agent.click("#btn-blind")
    # agent2's browser rings, with the caller's card, and takes the call over.
    await expect(agent2.locator("#btn-answer")).to_be_enabled(timeout=10_000)
    await expect(agent2.locator("#pop .member-card h2")).to_contain_text("王芳", timeout=5_000)
    await agent2.click("#btn-answer")
    await expect(agent2.locator("#call-info")).to_have_text(re.compile("通话中|In call"), timeout=10_000)
    await asyncio.sleep(1.5)
    stats = await agent2.evaluate("window.panel.phone.stats()")
    assert stats["received"] > 0 and stats["sent"] > 0, stats
    await agent2.screenshot(path=stack.screenshot_path("6-after-blind-transfer"), full_page=True)
    await expect(agent.locator("#btn-hangup")).to_be_disabled(timeout=10_000)  # agent1 is free again
    await customer.hangup()
    call = await _ended_call(stack, linkedid)
    assert call.outcome == "answered" and call.transfers >= 1
    async with read_session(stack.sessions) as session:
        rows = (await session.execute(select(Call.id).where(Call.linkedid == linkedid))).all()
    assert len(rows) == 1  # one call, not two
    await _save_wrapup(agent)
    await _save_wrapup(agent2)


async def test_attended_transfer_consults_then_hands_over(
    stack: Stack, agent: Page, agent2: Page, customer: BaresipPhone
) -> None:
    linkedid = await _answered_call(stack, agent, customer)
    await agent.fill("#transfer-target", "webrtc2002")
    await agent.click("#btn-attended")
    await expect(agent2.locator("#btn-answer")).to_be_enabled(timeout=10_000)
    await agent2.click("#btn-answer")
    await expect(agent.locator("#btn-complete")).to_be_visible(timeout=10_000)
    await agent.click("#btn-complete")
    # agent1 leaves; the customer now talks to agent2.
    await expect(agent.locator("#btn-hangup")).to_be_disabled(timeout=10_000)
    await asyncio.sleep(1.5)
    stats = await agent2.evaluate("window.panel.phone.stats()")
    assert stats["received"] > 0 and stats["sent"] > 0, stats
    assert not [e for e in customer.events if e.get("type") == "CALL_CLOSED" and e.get("id")], "customer was cut off"
    await customer.hangup()
    call = await _ended_call(stack, linkedid)
    assert call.outcome == "answered"
    await _save_wrapup(agent)
    await _save_wrapup(agent2)


async def test_unknown_caller_becomes_a_member_and_matches_next_time(stack: Stack, agent: Page) -> None:
    page = agent
    await expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready", timeout=15_000)
    caller = await stack.sandbox.phone("cust2").connect()
    try:
        mark = caller.mark()
        await caller.dial("4008001234")
        form = page.locator("#new-member-form")
        await expect(form).to_be_visible(timeout=10_000)
        assert await form.locator("input[name=mobile]").input_value() == UNKNOWN_NUMBER
        await page.screenshot(path=stack.screenshot_path("7-unknown-caller"), full_page=True)
        await form.locator("input[name=name]").fill("李新客")
        await form.locator("button[type=submit]").click()
        await expect(page.locator("#pop .member-card h2")).to_contain_text("李新客", timeout=5_000)
        await caller.hangup()
        await caller.wait_for_event("CALL_CLOSED", since=mark, timeout=10)
        await asyncio.sleep(1)
        # The same number again: now it pops the new member's card.
        await caller.dial("4008001234")
        await expect(page.locator("#pop .member-card h2")).to_contain_text("李新客", timeout=10_000)
        await caller.hangup()
    finally:
        await caller.close()


async def test_blind_transfer_to_a_queue_reaches_an_agent_of_that_queue(
    stack: Stack, agent: Page, agent2: Page, customer: BaresipPhone
) -> None:
    await agent2.click("#btn-login")
    await agent2.click("#btn-ready")
    await expect(agent2.locator("#agent-state")).to_have_attribute("data-state", "ready", timeout=10_000)
    try:
        # agent2 is in the queues now too: the caller may ring either; whoever answers transfers to vip.
        await expect(agent.locator("#agent-state")).to_have_attribute("data-state", "ready", timeout=15_000)
        mark = customer.mark()
        await customer.dial("4008001234")
        await expect(agent.locator("#btn-answer")).to_be_enabled(timeout=10_000)
        await agent.click("#btn-answer")
        await customer.wait_for_event("CALL_ESTABLISHED", since=mark, timeout=10)
        await agent.fill("#transfer-target", "vip")
        await agent.click("#btn-blind")
        await expect(agent2.locator("#btn-answer")).to_be_enabled(timeout=15_000)
        await expect(agent2.locator("#pop")).to_contain_text("贵宾", timeout=5_000)  # offered by the vip queue
        await agent2.click("#btn-answer")
        await expect(agent2.locator("#call-info")).to_have_text(re.compile("通话中|In call"), timeout=10_000)
        await customer.hangup()
        await _save_wrapup(agent)
        await _save_wrapup(agent2)
    finally:
        await agent2.click("#btn-logout-queues")
        await expect(agent2.locator("#agent-state")).to_have_attribute("data-state", "logged_out", timeout=10_000)


@pytest.fixture(scope="module")
async def supervisor(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Page]:
    chromium = await launch(tmp_path_factory.mktemp("chromium-sup1"))
    page = await chromium.context.new_page()
    await sign_in(stack, page, "sup1")
    yield page
    await chromium.close()


async def test_supervisor_listens_to_a_live_call_and_sets_agent_states(
    stack: Stack, agent: Page, supervisor: Page, customer: BaresipPhone
) -> None:
    await _answered_call(stack, agent, customer)
    row = supervisor.locator("#team-states li[data-agent='webrtc2001']")
    await expect(row).to_have_class(re.compile(r"\bon_call\b"), timeout=10_000)
    await row.locator("button[data-action='listen']").click()
    # The supervisor's own softphone rings; answering joins the call silently and hears it.
    await expect(supervisor.locator("#btn-answer")).to_be_enabled(timeout=10_000)
    await expect(supervisor.locator("#pop h2.supervising")).to_contain_text("监听: webrtc2001")  # not a caller card
    assert await supervisor.locator("#team-states li[data-agent='webrtc2003']").count() == 0  # not itself
    await supervisor.click("#btn-answer")
    await asyncio.sleep(2.0)
    stats = await supervisor.evaluate("window.panel.phone.stats()")
    assert stats is not None and stats["received"] > 1000, stats
    await supervisor.screenshot(path=stack.screenshot_path("8-supervisor-listening"), full_page=True)
    await supervisor.click("#btn-hangup")
    await customer.hangup()
    await _save_wrapup(agent)
    # Force the agent paused, then ready again, from the team list.
    await row.locator("button[data-action='pause']").click()
    await expect(agent.locator("#agent-state")).to_have_attribute("data-state", "paused", timeout=10_000)
    await row.locator("button[data-action='ready']").click()
    await expect(agent.locator("#agent-state")).to_have_attribute("data-state", "ready", timeout=10_000)


async def _ready_recording(stack: Stack, call_id: int) -> Recording:
    for _ in range(300):
        async with read_session(stack.sessions) as session:
            rec = (await session.execute(select(Recording).where(Recording.call_id == call_id))).scalar_one_or_none()
        if rec is not None and rec.state not in ("pending",):
            return rec
        await asyncio.sleep(0.1)
    raise AssertionError(f"the recording of call {call_id} was not processed")


async def test_pci_pause_is_silent_in_the_recording_and_the_supervisor_plays_it(
    stack: Stack, agent: Page, supervisor: Page, customer: BaresipPhone
) -> None:
    """The agent pauses the recording for card data; the stored file is silent there and loud around
    it; the supervisor's player shows that span, plays the call in Chromium and the play is audited."""
    linkedid = await _answered_call(stack, agent, customer)
    await asyncio.sleep(2.0)
    await agent.click("#btn-pci")
    await expect(agent.locator("#btn-pci")).to_have_class(re.compile(r"\bon\b"), timeout=5_000)
    await expect(agent.locator("#btn-pci")).to_have_text("恢复录音")
    await asyncio.sleep(3.0)
    await agent.click("#btn-pci")
    await expect(agent.locator("#btn-pci")).not_to_have_class(re.compile(r"\bon\b"), timeout=5_000)
    await asyncio.sleep(2.0)
    await customer.hangup()
    await _save_wrapup(agent)
    call = await _ended_call(stack, linkedid)
    rec = await _ready_recording(stack, call.id)
    assert rec.state == "ready", rec.error
    assert rec.pci_spans is not None and len(rec.pci_spans) == 1, rec.pci_spans
    start, end = rec.pci_spans[0]
    assert 2.2 <= end - start <= 3.8, rec.pci_spans
    # Waveform peaks: silence inside the paused span (trimmed 0.3 s at each edge for timing), sound
    # outside it.
    assert rec.peaks and rec.duration_s
    per_bucket = rec.duration_s / len(rec.peaks)
    inside = [p for i, p in enumerate(rec.peaks) if start + 0.3 < i * per_bucket < end - 0.3]
    outside = [p for i, p in enumerate(rec.peaks) if i * per_bucket < start - 0.3 or i * per_bucket > end + 0.3]
    assert inside and max(inside) < 0.02, max(inside)
    assert outside and max(outside) > 0.1, max(outside)

    await supervisor.goto(f"{stack.base_url}/calls/{call.id}")
    player = supervisor.locator(".recording-player")
    await expect(player).to_have_attribute("data-mounted", "1", timeout=10_000)
    await expect(player.locator(".waveform")).to_be_visible()
    assert await supervisor.evaluate("document.querySelector('.recording-player').wavesurfer.getDuration()") > 5
    regions = await supervisor.evaluate(
        "document.querySelector('.recording-player .waveform div').shadowRoot"
        "?.querySelectorAll('[part~=region]').length ?? -1"
    )
    assert regions == 1, regions  # the PCI span, drawn by the regions plugin
    await player.locator("button.play").click()
    await expect(player).to_have_attribute("data-playing", "1", timeout=10_000)
    await asyncio.sleep(1.5)
    position = await supervisor.evaluate("document.querySelector('.recording-player audio').currentTime")
    assert position > 0.5, position
    await supervisor.screenshot(path=stack.screenshot_path("9-recording-player"), full_page=True)
    await player.locator("button.play").click()
    async with read_session(stack.sessions) as session:
        rows = (
            (await session.execute(select(RecordingAccess).where(RecordingAccess.recording_id == rec.id)))
            .scalars()
            .all()
        )
        sup = (await session.execute(select(User).where(User.username == "sup1"))).scalar_one()
    assert [(r.action, r.user_id) for r in rows] == [("play", sup.id)]


async def test_during_a_call_the_agent_opens_a_service_request_and_searches_the_knowledge_base(
    stack: Stack, agent: Page, customer: BaresipPhone, member_id: int
) -> None:
    """One click from the pop: the request carries the call, the caller's number and the member; the
    workspace's knowledge-base search finds a published article by a Chinese word while on the call."""
    from crm_core.kb import service as kb
    from crm_core.service.models import ServiceRequest

    editor = Principal(user_id=0, username="kb-editor", role=Role.ADMIN, scope=DataScope.ALL)
    async with transaction(stack.sessions) as session:
        category = await kb.add_category(session, editor, "积分规则")
        article = await kb.create_article(
            session, editor, category_id=category.id, title="积分有效期", body="会员积分有效期为一年，年底清零。"
        )
        await kb.submit(session, editor, article.id)
        await kb.review(session, editor, article.id, approve=True)  # user 0: no author recorded to clash with

    linkedid = await _answered_call(stack, agent, customer)
    await expect(agent.locator("#pop .member-card h2")).to_contain_text("王芳")
    form = agent.locator("#pop-service-form")
    await form.locator("select[name=type]").select_option("complaint")
    await form.locator("input[name=subject]").fill("积分未到账")
    await form.locator("button[type=submit]").click()
    await expect(form).to_have_attribute("data-created", re.compile(r"^SR\d+"), timeout=5_000)

    await agent.fill("#kb-search", "会员积分")
    await expect(agent.locator("#kb-results")).to_contain_text("积分有效期", timeout=5_000)
    await agent.locator("#kb-results a").first.click()
    await expect(agent.locator("#kb-article")).to_contain_text("年底清零", timeout=5_000)
    await agent.screenshot(path=stack.screenshot_path("9-service-request-and-kb"), full_page=True)
    await customer.hangup()
    await _save_wrapup(agent)

    async with read_session(stack.sessions) as session:
        request = (await session.execute(select(ServiceRequest).where(ServiceRequest.call_id == linkedid))).scalar_one()
    assert request.member_id == member_id and request.phone_e164 == "+86" + MEMBER_NUMBER
    assert request.type == "complaint" and request.priority in ("high", "urgent") and request.subject == "积分未到账"
