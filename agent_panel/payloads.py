"""Request bodies of the JSON API: one strict base model and one parser answering problem+json."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from agent_panel.problems import problem

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Unknown fields are refused and text is stripped: a typo in a field name is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


async def parse_body(request: web.Request, model: type[M]) -> M | web.Response:
    """The body as `model`, or the 400 problem to return (not JSON, or invalid with each error)."""
    try:
        payload = await request.json() if request.can_read_body else {}
    except ValueError:
        return problem(400, "invalid request", "the body must be JSON")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        return problem(400, "invalid request", errors=exc.errors(include_url=False, include_input=False))
