"""UI languages: Simplified Chinese by default, English on request, from Babel .po catalogues.

Templates use English msgids (`_("Ready")`); `translations/zh_CN/LC_MESSAGES/messages.po` holds the
Chinese. The .po files are compiled in memory at start-up, so no build step or .mo file is needed.
One Jinja environment per language keeps rendering free of per-request gettext switching.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from agent_panel import filters

TRANSLATIONS = Path(__file__).parent / "translations"
TEMPLATES = Path(__file__).parent / "templates"
LANGUAGES = {"zh_CN": "中文", "en": "English"}
LANG_COOKIE = "cti_lang"


def catalogue_files(language: str) -> list[Path]:
    """messages.po, then one catalogue per feature (wallboard.po, …), so features can be translated
    without every change touching one file; a later file wins for a msgid both translate."""
    directory = TRANSLATIONS / language / "LC_MESSAGES"
    main = directory / "messages.po"
    extra = sorted(p for p in directory.glob("*.po") if p != main)
    return ([main] if main.exists() else []) + extra


def _compile(po: Path, language: str) -> Translations:
    with po.open("rb") as fh:
        catalog = read_po(fh, locale=language)
    buf = io.BytesIO()
    write_mo(buf, catalog)  # leaves out untranslated and fuzzy messages
    buf.seek(0)
    return Translations(buf)


def load_translations(language: str) -> NullTranslations:
    files = catalogue_files(language)
    if not files:
        return NullTranslations()
    merged = _compile(files[0], language)
    for po in files[1:]:
        merged.merge(_compile(po, language))
    return merged


@dataclass
class Catalogues:
    default: str
    timezone: str
    envs: dict[str, jinja2.Environment] = field(default_factory=dict)
    translations: dict[str, NullTranslations] = field(default_factory=dict)

    def env(self, language: str) -> jinja2.Environment:
        return self.envs.get(language) or self.envs[self.default]

    def gettext(self, language: str, message: str) -> str:
        t = self.translations.get(language) or self.translations[self.default]
        return t.gettext(message)

    def pick(self, cookie: str | None, accept_language: str | None) -> str:
        """The user's choice (cookie) wins; otherwise the site default (the product is Chinese-first)."""
        if cookie in self.envs:
            return cookie
        return self.default


def build_catalogues(default: str, timezone: str) -> Catalogues:
    cats = Catalogues(default=default if default in LANGUAGES else "zh_CN", timezone=timezone)
    loader = jinja2.FileSystemLoader(TEMPLATES)
    for language in LANGUAGES:
        env = jinja2.Environment(
            loader=loader,
            autoescape=jinja2.select_autoescape(["html"]),
            extensions=["jinja2.ext.i18n"],
            enable_async=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        translations = load_translations(language)
        env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
        filters.install(env, timezone)
        env.globals["LANGUAGE"] = language
        env.globals["LANGUAGES"] = LANGUAGES
        cats.envs[language] = env
        cats.translations[language] = translations
    return cats
