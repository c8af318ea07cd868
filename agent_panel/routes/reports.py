"""Reports for supervisors and administrators: the `/reports` page with its htmx table, the JSON API
`/api/v1/reports/{name}` and the CSV / XLSX export.

Every request names a report and a period of local dates [from, to) (default: the last 7 days);
a bad period or filter is a 400 problem+json (RFC 9457), an unknown report 404, a queue outside the
reader's teams 403. The reports hold aggregates and agent names, no member data.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agent_panel.auth import SUPERVISORS, allow, session_of
from agent_panel.keys import I18N, SESSIONS, SETTINGS
from agent_panel.problems import problem
from agent_panel.render import language_of, render
from crm_core.db import read_session
from crm_core.reports import export
from crm_core.reports.heatmap import Shape
from crm_core.reports.period import InvalidPeriod, Period, parse_period
from crm_core.reports.run import REPORT_NAMES, UnknownReport, run_report
from crm_core.reports.scope import visible_queues
from crm_core.reports.table import ReportTable
from crm_core.security.policy import PermissionDenied

SHAPES: tuple[Shape, ...] = ("weekday", "date")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/reports", reports_page)
    r.add_get("/partials/reports", report_fragment)
    r.add_get("/api/v1/reports/{name}", report_json)
    r.add_get("/api/v1/reports/{name}/export", report_export)


class Problem(Exception):
    """A refusal answered as problem+json (API) or as an error panel (page fragment)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail

    def response(self, request: web.Request) -> web.Response:
        return problem(self.status, self.title, self.detail, instance=request.path)


@dataclass(frozen=True, slots=True)
class ReportQuery:
    name: str
    period: Period
    queue: str | None
    shape: Shape

    def params(self) -> dict[str, str]:
        """The query string that asks for this report again (export links, the form)."""
        params = {"from": self.period.start.isoformat(), "to": self.period.end.isoformat(), "shape": self.shape}
        return params | ({"queue": self.queue} if self.queue else {})


def _query(request: web.Request, name: str) -> ReportQuery:
    settings = request.app[SETTINGS]
    if name not in REPORT_NAMES:
        raise Problem(404, "Unknown report", f"unknown report {name!r}; expected one of {', '.join(REPORT_NAMES)}")
    try:
        period = parse_period(request.query.get("from") or None, request.query.get("to") or None, settings.timezone)
    except InvalidPeriod as exc:
        raise Problem(400, "Invalid period", str(exc)) from exc
    queue = request.query.get("queue") or None
    if queue is not None and queue not in settings.queues:
        raise Problem(400, "Unknown queue", f"unknown queue {queue!r}")
    shape = request.query.get("shape") or "weekday"
    if shape not in SHAPES:
        raise Problem(400, "Invalid shape", f"shape must be one of {', '.join(SHAPES)}")
    return ReportQuery(name, period, queue, shape)


async def _run(request: web.Request, query: ReportQuery) -> ReportTable:
    async with read_session(request.app[SESSIONS]) as session:
        try:
            return await run_report(
                session,
                session_of(request).principal,
                request.app[SETTINGS],
                query.name,
                query.period,
                queue=query.queue,
                shape=query.shape,
            )
        except PermissionDenied as exc:
            raise Problem(403, "Outside your teams", str(exc)) from exc
        except UnknownReport as exc:
            raise Problem(404, "Unknown report", str(exc)) from exc


# ---------------------------------------------------------------------------- JSON API and export
@allow(*SUPERVISORS)
async def report_json(request: web.Request) -> web.Response:
    try:
        table = await _run(request, _query(request, request.match_info["name"]))
    except Problem as problem:
        return problem.response(request)
    return web.json_response(table.as_json())


@allow(*SUPERVISORS)
async def report_export(request: web.Request) -> web.Response:
    fmt = request.query.get("format", "csv")
    try:
        if fmt not in export.FORMATS:
            raise Problem(400, "Invalid format", f"format must be one of {', '.join(export.FORMATS)}")
        table = await _run(request, _query(request, request.match_info["name"]))
    except Problem as problem:
        return problem.response(request)
    file_format = fmt
    language = language_of(request)
    catalogues = request.app[I18N]
    body = await asyncio.to_thread(export.render, table, file_format, lambda s: catalogues.gettext(language, s))
    return web.Response(
        body=body,
        content_type=export.CONTENT_TYPES[file_format].split(";")[0],
        charset="utf-8" if file_format == "csv" else None,
        headers={
            "Content-Disposition": f'attachment; filename="{export.filename(table, file_format)}"',
            "Cache-Control": "no-store",
        },
    )


# ---------------------------------------------------------------------------- page and fragment
async def _form(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    async with read_session(request.app[SESSIONS]) as session:
        visible = await visible_queues(session, session_of(request).principal, settings)
    return {
        "report_names": REPORT_NAMES,
        "shapes": SHAPES,
        "queues": visible if visible is not None else list(settings.queues),
    }


@allow(*SUPERVISORS)
async def reports_page(request: web.Request) -> web.Response:
    name = request.query.get("name") or REPORT_NAMES[0]
    context = await _form(request)
    try:
        query = _query(request, name)
        table: ReportTable | None = await _run(request, query)
        error = None
    except Problem as problem:
        query = ReportQuery(REPORT_NAMES[0], parse_period(None, None, request.app[SETTINGS].timezone), None, "weekday")
        table, error = None, problem
    return render(request, "reports.html", context | {"query": query, "table": table, "error": error})


@allow(*SUPERVISORS)
async def report_fragment(request: web.Request) -> web.Response:
    try:
        query = _query(request, request.query.get("name") or REPORT_NAMES[0])
        table = await _run(request, query)
    except Problem as problem:
        return render(request, "partials/report_error.html", {"error": problem}, status=problem.status)
    return render(request, "partials/report_table.html", {"query": query, "table": table})
