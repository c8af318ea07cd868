"""Merge fields in the seeds' form, `{!Object.Field}` (e.g. {!Member.Name}, {!Request.DueAt}).

Written here rather than with Jinja2: templates are typed by CRM staff, and the seeds' syntax plus
"report what is missing" is a regular expression and a dictionary lookup, with nothing a template
could execute. A field that is unknown, empty, or that the sender may not see in full (hidden or
masked by their field permissions) is reported as missing, and a template with missing fields is
never sent: no member gets "尊敬的 ，您好".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FIELD = re.compile(r"\{!\s*([A-Za-z]+)\.([A-Za-z]+)\s*\}")
# The seeds also print "(!Name)" (e-mail template 006): the same as {!Member.Name}.
SEED_NAME = re.compile(r"\(!Name\)")


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    body: str
    missing: tuple[str, ...]


def fields_in(text: str) -> list[str]:
    return [f"{a}.{b}" for a, b in FIELD.findall(SEED_NAME.sub("{!Member.Name}", text))]


def render(subject: str, body: str, values: dict[str, str | None]) -> Rendered:
    missing: dict[str, None] = {}

    def fill(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            key = f"{match.group(1)}.{match.group(2)}"
            value = values.get(key)
            if value is None or value == "":
                missing.setdefault(key, None)
                return match.group(0)
            return value

        return FIELD.sub(one, SEED_NAME.sub("{!Member.Name}", text))

    return Rendered(fill(subject), fill(body), tuple(missing))
