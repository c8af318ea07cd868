"""UI translations: every extracted msgid has Chinese, and the catalogues render both languages.

No database: the extraction runs babel on the repository into a temporary directory and the pages are
rendered straight from the Jinja environments that `agent_panel.i18n.build_catalogues` builds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po

from agent_panel import i18n, vocabulary

REPO = Path(__file__).resolve().parents[2]
BABEL_CFG = REPO / "agent_panel" / "babel.cfg"
ZH_PO = i18n.TRANSLATIONS / "zh_CN" / "LC_MESSAGES" / "messages.po"
# Same options as scripts/i18n extract; babel.cfg paths are relative to the repository root.
IGNORE_DIRS = ".* _* node_modules var recordings asterisk-config *.egg-info"


def _read(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as fh:
        return read_po(fh, locale=locale)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    pot = tmp_path_factory.mktemp("i18n") / "messages.pot"
    CommandLineInterface().run(  # type: ignore[no-untyped-call]
        [
            "pybabel",
            "--quiet",
            "extract",
            "-F",
            str(BABEL_CFG),
            "--no-location",
            "-k",
            "_",
            "-k",
            "N_",
            f"--ignore-dirs={IGNORE_DIRS}",
            "-o",
            str(pot),
            str(REPO),
        ]
    )
    return _read(pot)


def test_extraction_finds_templates_and_vocabulary(extracted: Catalog) -> None:
    ids = {m.id for m in extracted if m.id}
    assert "Sign in" in ids  # a template string
    assert set(vocabulary.VALUES) <= ids  # the run-time values marked with N_


def test_every_extracted_msgid_has_chinese(extracted: Catalog) -> None:
    catalogues = [_read(po, "zh_CN") for po in i18n.catalogue_files("zh_CN")]
    problems = []
    for message in extracted:
        if not message.id:
            continue
        found = [m for m in (c.get(message.id) for c in catalogues) if m is not None and m.string]
        if not found:
            problems.append(f"untranslated: {message.id!r}")
        elif all(m.fuzzy for m in found):
            problems.append(f"fuzzy: {message.id!r}")
    assert not problems, "run scripts/i18n extract and translate in " + str(ZH_PO) + ":\n" + "\n".join(problems)


def test_run_time_values_are_chinese_at_run_time() -> None:
    cats = i18n.build_catalogues("zh_CN", "Asia/Shanghai")
    untranslated = [v for v in vocabulary.VALUES if cats.gettext("zh_CN", v) == v]
    assert not untranslated
    assert cats.gettext("zh_CN", "member-service") == "会员服务"
    assert cats.gettext("en", "member-service") == "member-service"


@pytest.mark.parametrize(("language", "expected", "absent"), [("zh_CN", "登录", "Sign in"), ("en", "Sign in", "登录")])
def test_login_page_renders_in_each_language(language: str, expected: str, absent: str) -> None:
    cats = i18n.build_catalogues("zh_CN", "Asia/Shanghai")
    html = (
        cats.env(language)
        .get_template("login.html")
        .render(
            error=None,
            login_csrf="x",
            next="/",
            me=None,
            csrf_token=None,
            role=None,
            settings=None,
            request=None,
        )
    )
    assert expected in html
    assert absent not in html


def test_chinese_is_the_default() -> None:
    cats = i18n.build_catalogues("zh_CN", "Asia/Shanghai")
    assert cats.pick(None, "en-US,en;q=0.9") == "zh_CN"
    assert cats.pick("en", None) == "en"
