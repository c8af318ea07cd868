"""The knowledge base on both engines: workflow with versions and a second-person review, team
limits, Chinese search (会员积分 / 积分, mixed Latin and digits, hostile queries), view counts."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.kb import service as kb
from crm_core.kb.search import snippet
from crm_core.security import service as security
from crm_core.security.policy import Principal, Role
from tests.db import factories

pytestmark = pytest.mark.db
Sessions = async_sessionmaker[AsyncSession]

POINTS = ("积分规则", "会员每消费100元累积2积分，积分有效期为一年，每年12月31日清零11月30日前的积分。")
REGISTER = ("会员注册", "新会员注册需要填写手机号码和姓名，注册成功后发放会员卡。")
POS = ("POS机 E203 错误", "收银台POS机提示E203错误时，请重启设备并检查网络连接。")


class Kb:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def setup(self) -> Kb:
        await factories.org_tree(self.sessions)
        self.author = await factories.principal(self.sessions, "author", Role.CRM_STAFF, "300")
        self.reviewer = await factories.principal(self.sessions, "reviewer", Role.SUPERVISOR, "300")
        self.agent = await factories.principal(self.sessions, "agent", Role.AGENT, "310")
        self.other = await factories.principal(self.sessions, "other", Role.AGENT, "320")
        async with transaction(self.sessions) as session:
            self.category = (await kb.add_category(session, self.author, "产品相关知识")).id
            self.sub = (await kb.add_category(session, self.author, "积分", self.category)).id
            self.team_b = (await security.org_unit_by_code(session, "320")).id
        return self

    async def publish(self, title: str, body: str, *, category: int | None = None, team_id: int | None = None) -> int:
        async with transaction(self.sessions) as session:
            article = await kb.create_article(
                session, self.author, category_id=category or self.category, title=title, body=body, team_id=team_id
            )
            await kb.submit(session, self.author, article.id)
            await kb.review(session, self.reviewer, article.id, approve=True)
            return article.id

    async def search(self, who: Principal, query: str, **kw: object) -> list[dict[str, object]]:
        async with transaction(self.sessions) as session:
            return await kb.search_articles(session, who, query, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def base(sessions: Sessions) -> Kb:
    return await Kb(sessions).setup()


async def test_chinese_search_finds_points_articles(base: Kb) -> None:
    points = await base.publish(*POINTS, category=base.sub)
    register = await base.publish(*REGISTER)
    pos = await base.publish(*POS)
    # 积分 alone finds the article that speaks of 会员 and 积分 together (segmented: 会员 / 积分).
    assert [r["id"] for r in await base.search(base.agent, "积分")] == [points]
    # 会员积分 = 会员 AND 积分: only the points article has both.
    hits = await base.search(base.agent, "会员积分")
    assert [r["id"] for r in hits] == [points]
    assert "<mark>积分</mark>" in str(hits[0]["snippet"]) and "<mark>会员</mark>" in str(hits[0]["snippet"])
    assert [r["id"] for r in await base.search(base.agent, "积分有效期")] == [points]
    assert [r["id"] for r in await base.search(base.agent, "pos机 e203")] == [pos]
    assert [r["id"] for r in await base.search(base.agent, "注册")] == [register]
    assert await base.search(base.agent, "退货") == []
    assert [r["id"] for r in await base.search(base.agent, "会员", category_id=base.sub)] == [points]


async def test_any_term_when_no_article_has_all(base: Kb) -> None:
    points = await base.publish("积分有效期", "积分自获得之日起一年内有效。")
    # No article has both 会员 and 积分: the points article is still found (any term, best first).
    assert [r["id"] for r in await base.search(base.agent, "会员积分")] == [points]


@pytest.mark.parametrize(
    "query",
    ['"', '积分"', "*", "-积分", "积分 NEAR 会员", "(积分", "积分) OR (", "' OR 1=1 --", "", "   ", "的", "😀"],
)
async def test_hostile_or_empty_queries_are_harmless(base: Kb, query: str) -> None:
    points = await base.publish(*POINTS)
    found = await base.search(base.agent, query)
    assert found == [] or [r["id"] for r in found] == [points]
    with pytest.raises(kb.KbError):
        await base.search(base.agent, "积" * 201)


async def test_versions_review_and_visibility(base: Kb) -> None:
    article = await base.publish(*POINTS)
    async with transaction(base.sessions) as session:
        await kb.edit(session, base.author, article, title="积分规则（2026版）", body="每消费100元累积3积分。")
        # The draft is not searchable; agents still read the approved version.
        assert (await kb.read(session, base.agent, article))["approved"]["title"] == "积分规则"  # type: ignore[index]
    assert await base.search(base.agent, "2026版") == []
    async with transaction(base.sessions) as session:
        await kb.submit(session, base.author, article)
        with pytest.raises(kb.Conflict):
            await kb.edit(session, base.author, article, title="x", body="y")
        with pytest.raises(kb.NotAllowed):
            await kb.review(session, base.agent, article, approve=True)
    author_reviewer = await factories.principal(base.sessions, "selfish", Role.SUPERVISOR, "300")
    async with transaction(base.sessions) as session:
        with pytest.raises(kb.Conflict):
            await kb.submit(session, author_reviewer, article)  # already in review
        decided = await kb.review(session, base.reviewer, article, approve=True, note="ok")
    assert decided.number == 2 and decided.state == "approved"
    async with transaction(base.sessions) as session:
        view = await kb.read(session, base.author, article)
    assert view["approved"]["title"] == "积分规则（2026版）"  # type: ignore[index]
    assert [v["state"] for v in view["versions"]] == ["superseded", "approved"]  # type: ignore[union-attr]
    assert view["views"] == 2  # the agent read it once above, the author now
    assert [r["id"] for r in await base.search(base.agent, "2026版")] == [article]
    assert await base.search(base.agent, "一年") == []  # the old text left the index

    async with transaction(base.sessions) as session:
        await kb.archive(session, base.reviewer, article)
    assert await base.search(base.agent, "积分") == []
    async with transaction(base.sessions) as session:
        with pytest.raises(kb.NotFound):
            await kb.read(session, base.agent, article)


async def test_reviewer_must_not_be_the_author(base: Kb) -> None:
    async with transaction(base.sessions) as session:
        article = await kb.create_article(
            session, base.reviewer, category_id=base.category, title="服务规范", body="接听电话三声之内"
        )
        await kb.submit(session, base.reviewer, article.id)
        with pytest.raises(kb.NotAllowed, match="second person"):
            await kb.review(session, base.reviewer, article.id, approve=True)
        with pytest.raises(kb.NotAllowed):
            await kb.create_article(session, base.agent, category_id=base.category, title="x", body="y")


async def test_team_articles_are_read_by_that_team_only(base: Kb) -> None:
    secret = await base.publish("二组内部流程", "二组专用的积分补录流程。", team_id=base.team_b)
    assert [r["id"] for r in await base.search(base.other, "补录")] == [secret]
    assert await base.search(base.agent, "补录") == []
    assert [r["id"] for r in await base.search(base.reviewer, "补录")] == [secret]  # the centre above the team
    async with transaction(base.sessions) as session:
        with pytest.raises(kb.NotFound):
            await kb.read(session, base.agent, secret)


def test_snippet_escapes_and_marks() -> None:
    text = "<b>积分</b>规则" + "很长" * 40
    marked = snippet(text, ["积分"])
    assert marked.startswith("&lt;b&gt;<mark>积分</mark>&lt;/b&gt;") and marked.endswith("…")
