"""Reports on both engines against a hand-built data set with hand-computed figures: agent
performance (AHT, occupancy with a pause clipped at the period's start and an open pause clipped at
its end), callback SLA (reached within / after the due time), the heat map (buckets at a local-day
boundary, a DST change), the reader's scope, and the exported files."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.callbacks.models import Callback
from crm_core.calllog.models import AgentStateLog, Call, CallAgent
from crm_core.db import read_session, transaction
from crm_core.reports import export
from crm_core.reports.buckets import offset_segments
from crm_core.reports.period import InvalidPeriod, make_period, parse_period
from crm_core.reports.run import export_report_file, run_report
from crm_core.security.policy import SYSTEM, PermissionDenied, Principal, Role
from crm_core.settings import QueuePolicy, Settings
from tests.db import factories

Sessions = async_sessionmaker[AsyncSession]
SH = ZoneInfo("Asia/Shanghai")
UTC = dt.UTC
# The period: Monday 2026-11-02 and Tuesday 2026-11-03, local (UTC 2026-11-01 16:00 .. 2026-11-03 16:00).
FROM, TO = dt.date(2026, 11, 2), dt.date(2026, 11, 4)
AFTER = dt.datetime(2026, 11, 5, 12, 0, tzinfo=SH)  # "now" for the agent report: after the period


def local(day: int, hour: int, minute: int = 0, second: float = 0.0, month: int = 11) -> dt.datetime:
    whole = int(second)
    micro = round((second - whole) * 1_000_000)
    return dt.datetime(2026, month, day, hour, minute, whole, micro, tzinfo=SH).astimezone(UTC)


@dataclass
class DataSet:
    admin: Principal
    sup_a: Principal  # supervisor of team 310 (agent a1 and queue member-service)
    sup_b: Principal  # supervisor of team 320 (agent a2 and queue vip)
    settings: Settings


def team_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"queues": {"member-service": QueuePolicy(team="310"), "vip": QueuePolicy(team="320")}}
    )


def call(
    linkedid: str,
    started: dt.datetime,
    outcome: str,
    *,
    direction: str = "inbound",
    queue: str | None = "member-service",
    agent: int | None = None,
    wait: float = 0.0,
    talk: float | None = None,
    wrapup: float | None = None,
) -> Call:
    return Call(
        linkedid=linkedid,
        state="ended",
        direction=direction,
        queue=queue,
        agent_user_id=agent,
        started_at=started,
        answered_at=started + dt.timedelta(seconds=wait) if outcome == "answered" else None,
        ended_at=started + dt.timedelta(seconds=wait + (talk or 0)),
        wait_s=wait,
        talk_s=talk,
        wrapup_s=wrapup,
        outcome=outcome,
    )


def state(
    endpoint: str, name: str, begins: dt.datetime, ends: dt.datetime | None, reason: str | None = None
) -> AgentStateLog:
    return AgentStateLog(
        agent_endpoint=endpoint,
        state=name,
        reason=reason,
        started_at=begins,
        ended_at=ends,
        duration_s=None if ends is None else (ends - begins).total_seconds(),
    )


def callback(
    phone: str,
    created: dt.datetime,
    due: dt.datetime,
    *,
    queue: str = "member-service",
    closed: dt.datetime | None = None,
    reason: str | None = None,
    attempts: int = 0,
) -> Callback:
    return Callback(
        phone_e164=phone,
        phone_raw=phone,
        status="closed" if closed else "open",
        close_reason=reason,
        source="abandoned",
        queue=queue,
        first_missed_at=created,
        last_missed_at=created,
        due_at=due,
        attempts=attempts,
        closed_at=closed,
        created_at=created,
    )


async def build(sessions: Sessions, settings: Settings) -> DataSet:
    """The hand-built data set; the expected figures in the tests below are computed from it by hand."""
    await factories.org_tree(sessions)
    a1 = await factories.principal(sessions, "a1", Role.AGENT, "310", "ep-a1")
    a2 = await factories.principal(sessions, "a2", Role.AGENT, "320", "ep-a2")
    sup_a = await factories.principal(sessions, "sup_a", Role.SUPERVISOR, "310")
    sup_b = await factories.principal(sessions, "sup_b", Role.SUPERVISOR, "320")
    admin = await factories.principal(sessions, "boss", Role.ADMIN)
    async with transaction(sessions) as session:
        calls = {
            # a1: two answered inbound calls, one outbound, one abandoned call that rang a1 twice
            "c1": call("c1", local(2, 9, 0), "answered", agent=a1.user_id, wait=10, talk=100, wrapup=20),
            "c2": call("c2", local(2, 9, 30), "answered", agent=a1.user_id, wait=30, talk=200, wrapup=40),
            "c3": call("c3", local(2, 10, 0), "answered", direction="outbound", queue=None, agent=a1.user_id, talk=60),
            "c4": call("c4", local(2, 10, 15), "abandoned", wait=45),
            # the second before the period: not counted anywhere
            "c5": call("c5", local(1, 23, 59, 59), "answered", agent=a1.user_id, talk=500, wrapup=5),
            # a2 on vip
            "c6": call("c6", local(3, 14, 0), "answered", queue="vip", agent=a2.user_id, wait=5, talk=50, wrapup=10),
            # the local-day boundary: 23:59:59.5 Monday and 00:00:00 Tuesday; 00:00 Wednesday is outside
            "c8": call("c8", local(2, 23, 59, 59.5), "no_answer", wait=60),
            "c7": call("c7", local(3, 0, 0), "abandoned", queue="vip", wait=20),
            "c9": call("c9", local(4, 0, 0), "abandoned", wait=20),
        }
        session.add_all(calls.values())
        await session.flush()
        rang = [
            ("c1", 1, "ep-a2", a2.user_id, False),
            ("c1", 2, "ep-a1", a1.user_id, True),
            ("c2", 1, "ep-a1", a1.user_id, True),
            ("c4", 1, "ep-a1", a1.user_id, False),
            ("c4", 2, "ep-a1", a1.user_id, False),
            ("c5", 1, "ep-a1", a1.user_id, True),
            ("c6", 1, "ep-a2", a2.user_id, True),
        ]
        session.add_all(
            CallAgent(call_id=calls[c].id, seq=seq, agent_endpoint=ep, agent_user_id=uid, answered=answered)
            for c, seq, ep, uid, answered in rang
        )
        session.add_all(
            [
                # a1: ready before the period (not carried in: not the last interval before it)
                state("ep-a1", "ready", local(1, 22, 0), local(1, 23, 30)),
                # a break across the period's start: 30 of its 60 minutes count
                state("ep-a1", "paused", local(1, 23, 30), local(2, 0, 30), "break"),
                state("ep-a1", "ready", local(2, 0, 30), local(2, 1, 0)),  # 1800 s
                state("ep-a1", "on_call", local(2, 1, 0), local(2, 1, 10)),  # 600 s
                state("ep-a1", "wrap_up", local(2, 1, 10), local(2, 1, 12)),  # 120 s
                state("ep-a1", "ready", local(2, 1, 12), local(2, 1, 30)),  # 1080 s
                state("ep-a1", "logged_out", local(2, 1, 30), local(3, 23, 0)),
                # still open at "now" (after the period): clipped at the period's end, 3600 s
                state("ep-a1", "paused", local(3, 23, 0), None, "lunch"),
                # a2: an hour ready, then logged out
                state("ep-a2", "ready", local(3, 8, 0), local(3, 9, 0)),
                state("ep-a2", "logged_out", local(3, 9, 0), None),
            ]
        )
        session.add_all(
            [
                # Monday, member-service: reached in time, reached late, unreachable
                callback(
                    "+8613800000001", local(2, 10), local(2, 12), closed=local(2, 11), reason="reached", attempts=1
                ),
                callback(
                    "+8613800000002", local(2, 11), local(2, 13), closed=local(2, 14), reason="reached", attempts=2
                ),
                callback(
                    "+8613800000003", local(2, 12), local(2, 14), closed=local(2, 16), reason="unreachable", attempts=3
                ),
                # Tuesday, vip: open and overdue, rang back by the caller in time, open and not yet due
                callback("+8613800000004", local(3, 9), local(3, 11), queue="vip"),
                callback(
                    "+8613800000005",
                    local(3, 10),
                    local(3, 12),
                    queue="vip",
                    closed=local(3, 10, 30),
                    reason="answered_inbound",
                ),
                callback("+8613800000006", local(3, 23, 30), local(4, 9), queue="vip"),
                # the minute before the period
                callback(
                    "+8613800000007", local(1, 23, 59), local(2, 9), closed=local(2, 9), reason="reached", attempts=1
                ),
            ]
        )
    return DataSet(admin, sup_a, sup_b, team_settings(settings))


async def report(sessions: Sessions, data: DataSet, who: Principal, name: str, **filters: object) -> dict[str, object]:
    period = make_period(FROM, TO, data.settings.timezone)
    now = filters.pop("now", AFTER)
    async with read_session(sessions) as session:
        table = await run_report(session, who, data.settings, name, period, now=now, **filters)  # type: ignore[arg-type]
    return table.as_json()


def by(rows: object, key: str) -> dict[str, dict[str, object]]:
    assert isinstance(rows, list)
    return {str(row[key]): row for row in rows}


async def test_agent_performance_figures_with_pauses_clipped_at_both_ends(
    sessions: Sessions, settings: Settings
) -> None:
    data = await build(sessions, settings)
    result = await report(sessions, data, data.admin, "agent-performance")
    rows = by(result["rows"], "agent")
    assert set(rows) == {"a1", "a2"}
    a1 = rows["a1"]
    assert (a1["offered"], a1["answered"], a1["outbound"]) == (3, 2, 1)
    assert a1["aht_s"] == 180.0  # ((100 + 20) + (200 + 40)) / 2
    assert a1["mean_talk_s"] == 150.0
    assert a1["talk_s"] == 360.0  # 100 + 200 + the outbound 60
    assert a1["wrapup_s"] == 60.0
    assert a1["pause:break"] == 1800.0  # 00:00-00:30 of a 23:30-00:30 break
    assert a1["pause:lunch"] == 3600.0  # 23:00-24:00 of a pause still open
    assert a1["pause_s"] == 5400.0
    assert a1["logged_in_s"] == 9000.0  # 1800 + 1800 + 600 + 120 + 1080 + 3600
    assert a1["occupancy_pct"] == 20.0  # (600 + 120) / (9000 - 5400)
    a2 = rows["a2"]
    assert (a2["offered"], a2["answered"], a2["outbound"], a2["aht_s"]) == (2, 1, 0, 60.0)
    assert (a2["logged_in_s"], a2["occupancy_pct"], a2["pause:break"]) == (3600.0, 0.0, 0.0)
    labels = [c["key"] for c in result["columns"]]  # type: ignore[attr-defined]
    assert labels.index("pause:break") < labels.index("pause:lunch") < labels.index("occupancy_pct")


async def test_agent_performance_while_a_pause_is_still_open(sessions: Sessions, settings: Settings) -> None:
    """ "Now" inside the period: the open lunch pause counts until now, not until the period's end."""
    data = await build(sessions, settings)
    result = await report(sessions, data, data.admin, "agent-performance", now=local(3, 23, 15))
    a1 = by(result["rows"], "agent")["a1"]
    assert (a1["pause:lunch"], a1["logged_in_s"]) == (900.0, 6300.0)


async def test_supervisor_sees_only_the_agents_of_their_team(sessions: Sessions, settings: Settings) -> None:
    data = await build(sessions, settings)
    team_a = await report(sessions, data, data.sup_a, "agent-performance")
    team_b = await report(sessions, data, data.sup_b, "agent-performance")
    assert [r["agent"] for r in team_a["rows"]] == ["a1"]  # type: ignore[attr-defined]
    assert [r["agent"] for r in team_b["rows"]] == ["a2"]  # type: ignore[attr-defined]


async def test_queue_filter_narrows_the_call_figures(sessions: Sessions, settings: Settings) -> None:
    data = await build(sessions, settings)
    result = await report(sessions, data, data.admin, "agent-performance", queue="vip")
    rows = by(result["rows"], "agent")
    assert (rows["a1"]["offered"], rows["a1"]["answered"], rows["a1"]["outbound"]) == (0, 0, 0)
    assert (rows["a2"]["offered"], rows["a2"]["answered"]) == (1, 1)
    assert rows["a1"]["logged_in_s"] == 9000.0  # state times are per agent, not per queue


async def test_callback_sla_reached_within_and_after_due(sessions: Sessions, settings: Settings) -> None:
    data = await build(sessions, settings)
    result = await report(sessions, data, data.admin, "callback-sla", now=local(4, 8))
    rows = result["rows"]
    assert isinstance(rows, list)
    assert [(r["day"], r["queue"]) for r in rows] == [("2026-11-02", "member-service"), ("2026-11-03", "vip")]
    monday, tuesday = rows
    assert (monday["created"], monday["reached"], monday["reached_in_time"]) == (3, 2, 1)
    assert (monday["sla_pct"], monday["mean_attempts"], monday["unreachable"]) == (33.3, 1.5, 1)
    assert (monday["open"], monday["overdue"]) == (0, 0)
    assert (tuesday["created"], tuesday["reached"], tuesday["reached_in_time"]) == (3, 1, 1)
    assert (tuesday["sla_pct"], tuesday["mean_attempts"]) == (33.3, 0.0)
    assert (tuesday["open"], tuesday["overdue"]) == (2, 1)  # 09:00's is overdue, 23:30's is not yet due
    totals = result["totals"]
    assert isinstance(totals, dict)
    assert (totals["created"], totals["reached_in_time"], totals["sla_pct"]) == (6, 2, 33.3)


async def test_callback_sla_for_a_supervisor_covers_their_queues_only(sessions: Sessions, settings: Settings) -> None:
    data = await build(sessions, settings)
    result = await report(sessions, data, data.sup_b, "callback-sla", now=local(4, 8))
    assert [r["queue"] for r in result["rows"]] == ["vip"]  # type: ignore[attr-defined]
    with pytest.raises(PermissionDenied):
        await report(sessions, data, data.sup_b, "callback-sla", queue="member-service")


async def test_heatmap_buckets_by_local_weekday_and_hour(sessions: Sessions, settings: Settings) -> None:
    data = await build(sessions, settings)
    result = await report(sessions, data, data.admin, "heatmap")
    cells = {(r["day"], r["hour"]): r for r in result["rows"] if r["offered"]}  # type: ignore[attr-defined]
    expected = {
        ("Mon", 9): (2, 2, 0, 0),
        ("Mon", 10): (1, 0, 1, 0),
        ("Mon", 23): (1, 0, 0, 1),  # 23:59:59.5 Monday
        ("Tue", 0): (1, 0, 1, 0),  # 00:00:00 Tuesday (16:00 UTC Monday)
        ("Tue", 14): (1, 1, 0, 0),
    }
    assert {k: (c["offered"], c["answered"], c["abandoned"], c["missed"]) for k, c in cells.items()} == expected
    assert cells[("Mon", 10)]["abandon_pct"] == 100.0
    totals = result["totals"]
    assert isinstance(totals, dict)
    assert (totals["offered"], totals["abandoned"], totals["abandon_pct"]) == (6, 2, 33.3)
    grid = result["grid"]
    assert isinstance(grid, list)
    assert [line["label"] for line in grid] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert grid[0]["cells"][9]["offered"] == 2 and result["peak_offered"] == 2


async def test_heatmap_by_date_and_for_a_team(sessions: Sessions, settings: Settings) -> None:
    data = await build(sessions, settings)
    result = await report(sessions, data, data.admin, "heatmap", shape="date")
    grid = result["grid"]
    assert isinstance(grid, list)
    assert [line["label"] for line in grid] == ["2026-11-02", "2026-11-03"]
    assert grid[0]["cells"][23]["missed"] == 1 and grid[1]["cells"][0]["abandoned"] == 1
    team_a = await report(sessions, data, data.sup_a, "heatmap")
    assert team_a["totals"]["offered"] == 4  # type: ignore[index]  # member-service only: c1 c2 c4 c8


async def test_heatmap_abandon_rate_leaves_short_abandons_out_as_the_wallboard(
    sessions: Sessions, settings: Settings
) -> None:
    """vip's short-abandon threshold 30 s makes c7 (waited 20 s) a short abandon: offered and abandoned
    still count it, the abandon rate (over the calls that left the queue) does not."""
    data = await build(sessions, settings)
    queues = {"member-service": QueuePolicy(team="310"), "vip": QueuePolicy(team="320", short_abandon_seconds=30)}
    data.settings = data.settings.model_copy(update={"queues": queues})
    result = await report(sessions, data, data.admin, "heatmap", shape="date")
    tuesday_midnight = result["grid"][1]["cells"][0]  # type: ignore[index]
    assert (tuesday_midnight["offered"], tuesday_midnight["abandoned"], tuesday_midnight["short_abandoned"]) == (
        1,
        1,
        1,
    )
    assert tuesday_midnight["abandon_pct"] is None  # nothing counted left the queue in that hour
    totals = result["totals"]
    assert isinstance(totals, dict)
    assert (totals["offered"], totals["abandoned"], totals["short_abandoned"]) == (6, 2, 1)
    assert totals["abandon_pct"] == 20.0  # 1 counted abandon ÷ (3 answered + 1 abandon + 1 missed)


async def test_heatmap_follows_a_daylight_saving_change(sessions: Sessions, settings: Settings) -> None:
    """Europe/Berlin springs forward at 01:00 UTC on 2026-03-29: 00:30 UTC is 01:30 local, 01:30 UTC is 03:30."""
    async with transaction(sessions) as session:
        session.add_all(
            [
                call("d1", dt.datetime(2026, 3, 29, 0, 30, tzinfo=UTC), "answered"),
                call("d2", dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "abandoned"),
                call("d3", dt.datetime(2026, 3, 28, 23, 30, tzinfo=UTC), "answered"),  # 00:30 local
                call("d4", dt.datetime(2026, 3, 28, 22, 59, tzinfo=UTC), "answered"),  # 23:59 local on the 28th
            ]
        )
    berlin = settings.model_copy(update={"timezone": "Europe/Berlin"})
    period = make_period(dt.date(2026, 3, 29), dt.date(2026, 3, 30), "Europe/Berlin")
    assert len(offset_segments(period.utc_start, period.utc_end, "Europe/Berlin")) == 2
    async with read_session(sessions) as session:
        table = await run_report(session, SYSTEM, berlin, "heatmap", period, shape="date")
    offered = {r["hour"]: r["offered"] for r in table.rows if r["offered"]}
    assert offered == {0: 1, 1: 1, 3: 1}


async def test_exports_carry_the_table_and_the_period_in_the_name(sessions: Sessions, settings: Settings) -> None:
    data = await build(sessions, settings)
    period = make_period(FROM, TO, data.settings.timezone)
    async with read_session(sessions) as session:
        table = await run_report(session, data.admin, data.settings, "agent-performance", period, now=AFTER)
    assert export.filename(table, "csv") == "agent-performance_2026-11-02_2026-11-03.csv"
    text = export.render(table, "csv").decode("utf-8-sig")
    lines = list(csv.reader(io.StringIO(text)))
    header = lines[0]
    assert header[:4] == ["Agent", "Seat", "Team", "Offered"] and header[-1] == "Occupancy (%)"
    a1 = dict(zip(header, next(line for line in lines if line[0] == "a1"), strict=True))
    assert (a1["AHT"], a1["Occupancy (%)"], a1["Pause: break"]) == ("180.0", "20.0", "1800.0")
    book = openpyxl.load_workbook(io.BytesIO(export.render(table, "xlsx")))
    sheet = book.active
    values = list(sheet.iter_rows(values_only=True))
    assert values[0][:4] == ("Agent", "Seat", "Team", "Offered")
    xa1 = dict(zip(values[0], next(v for v in values if v[0] == "a1"), strict=True))
    assert (xa1["Answered"], xa1["AHT"], xa1["Occupancy (%)"]) == (2, 180.0, 20.0)


def test_invalid_periods_are_refused() -> None:
    with pytest.raises(InvalidPeriod):
        parse_period("2026-11-04", "2026-11-02", "Asia/Shanghai")
    with pytest.raises(InvalidPeriod):
        parse_period("2026-11-04", "2026-11-04", "Asia/Shanghai")
    with pytest.raises(InvalidPeriod):
        parse_period("yesterday", None, "Asia/Shanghai")
    with pytest.raises(InvalidPeriod):
        parse_period("2024-01-01", "2026-01-01", "Asia/Shanghai")
    default = parse_period(None, None, "Asia/Shanghai", today=dt.date(2026, 11, 24))
    assert (default.start, default.end, default.days) == (dt.date(2026, 11, 18), dt.date(2026, 11, 25), 7)


async def test_cli_export_writes_the_file_a_user_may_see(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    """What `cti report heatmap --as sup_a --format xlsx` runs: its own engine, the user's scope."""
    data = await build(sessions, settings)
    period = make_period(FROM, TO, data.settings.timezone)
    written = await export_report_file(data.settings, "heatmap", period, "xlsx", username="sup_a", directory=tmp_path)
    assert written == tmp_path / "heatmap_2026-11-02_2026-11-03.xlsx"
    rows = list(openpyxl.load_workbook(written).active.iter_rows(values_only=True))
    assert rows[0][:3] == ("Day", "Hour", "Offered")
    assert rows[-1][0] == "Total" and rows[-1][2] == 4  # team A's queue only
    assert len(rows) == 1 + 7 * 24 + 1
