"""Error answers of the JSON API as RFC 9457 problem details, one shape for every route."""

from __future__ import annotations

from typing import Any

from aiohttp import web

PROBLEM = "application/problem+json"


def problem(
    status: int, title: str, detail: str | None = None, errors: Any = None, *, instance: str | None = None
) -> web.Response:
    """`error` repeats the detail (or title) for the panel's fetch helper, which shows `error`."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "error": detail or title}
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = errors
    if instance:
        body["instance"] = instance
    return web.json_response(body, status=status, content_type=PROBLEM)


# Titles of the domain refusals (the detail says which rule refused).
REFUSAL_TITLES = {400: "invalid request", 403: "not allowed", 404: "not found", 409: "conflict"}


def refused(status: int, detail: str) -> web.Response:
    """A domain refusal (an error class's `status` and message) as problem+json."""
    return problem(status, REFUSAL_TITLES.get(status, "refused"), detail)
