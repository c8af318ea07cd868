"""Chinese word segmentation for search, with jieba (dictionary loaded once, off the event loop).

Articles are indexed with `cut_for_search` (a compound and its parts: 有效期 → 有效, 效期, 有效期), so a
search for a part finds the compound. Queries use the precise cut (会员积分 → 会员, 积分) without
stop words. Text is lower-cased before segmenting (the user dictionary is too) and tokens are
stripped of punctuation: what reaches a full-text query is only letters, digits and CJK, so no FTS
syntax can come from a user.
"""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import jieba

_READY = threading.Lock()
_loaded = False
_WORD = re.compile(r"[\w\u3400-\u9fff]", re.UNICODE)
_STRIP = re.compile(r"[^\w\u3400-\u9fff]+", re.UNICODE)
STOP_WORDS = frozenset(
    {"的", "了", "和", "是", "在", "为", "与", "及", "吗", "呢", "吧", "啊", "我", "你", "他", "她", "它", "能", "会"}
    | {"怎么", "如何", "什么", "请问", "一下", "我们", "可以"}
)
USER_DICT = Path(__file__).with_name("userdict.txt")


def _load() -> None:
    global _loaded
    with _READY:
        if not _loaded:
            jieba.setLogLevel(60)  # its start-up banner is not our log
            jieba.initialize()
            jieba.load_userdict(str(USER_DICT))
            _loaded = True


async def ready() -> None:
    """Load the dictionary (about 0.5 s of CPU) in a thread; call at start-up."""
    if not _loaded:
        await asyncio.get_running_loop().run_in_executor(None, _load)


def _clean(tokens: list[str]) -> list[str]:
    out = []
    for token in tokens:
        token = _STRIP.sub("", token).lower()
        if token and _WORD.search(token):
            out.append(token)
    return out


def index_tokens(text: str) -> list[str]:
    """Every searchable token of a text (search mode: compounds and their parts)."""
    _load()
    return _clean(list(jieba.cut_for_search(text.lower())))


def query_terms(text: str) -> list[list[str]]:
    """The distinct terms of a query, in order, without stop words (at most 12), each with its
    parts: [["会员积分", "会员", "积分"], ["兑换"]]. A term matches a text that has the compound
    itself or all of its parts, so a compound in the dictionary does not hide texts that only
    have its words side by side."""
    _load()
    seen: dict[str, None] = {}
    for token in _clean(list(jieba.cut(text.lower()))):
        if token not in STOP_WORDS:
            seen.setdefault(token, None)
    terms = []
    for term in list(seen)[:12]:
        parts = [p for p in dict.fromkeys(_clean(list(jieba.cut_for_search(term)))) if p != term and len(p) < len(term)]
        # only the parts that cover the term (e.g. 会员 + 积分), not overlapping fragments
        covering = [p for p in parts if not any(p != q and p in q for q in parts)]
        terms.append([term, *covering] if "".join(covering) == term else [term])
    return terms


async def index_tokens_async(text: str) -> list[str]:
    """`index_tokens` in a thread: a long article takes milliseconds of CPU."""
    return await asyncio.get_running_loop().run_in_executor(None, index_tokens, text)
