"""Recording playback through the panel: Range streaming, signed grants, the access matrix and the audit.

The stored file here is a known byte pattern (what is checked is which bytes come back); the
telephony tests prove a real recorded call is processed into a playable file.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_panel.keys import SETTINGS
from agent_panel.routes.recordings import GRANT_KEY
from crm_core.calllog.recording_models import Recording, RecordingAccess
from crm_core.db import transaction
from crm_core.settings import Settings
from recordings import signing
from tests.db import call_factory
from tests.panel.conftest import Panel, login

BODY = bytes(range(256)) * 160  # 40,960 bytes
SIZE = len(BODY)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, recordings_dir=str(tmp_path / "recordings"))


async def _recorded_call(
    panel: Panel, sessions: async_sessionmaker[AsyncSession], agent: str, *, linked: bool = True
) -> tuple[int, int]:
    """A call answered by `agent` with a ready recording on disk; returns (call_id, recording_id).
    `linked=False`: the recording row names the call only by its Linkedid, as when the worker processed
    the file before the batched call-log write existed."""
    new = call_factory.call(agent=panel.principals[agent])
    (call_id,) = await call_factory.add_calls(sessions, new)
    relative = f"2026/03/10/{call_id}.mp3"
    path = Path(panel.app[SETTINGS].recordings_dir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BODY)
    async with transaction(sessions) as session:
        rec = Recording(
            call_id=call_id if linked else None,
            linkedid=new.row.linkedid,
            source_path=f"/spool/{call_id}.wav",
            storage_path=relative,
            format="mp3",
            state="ready",
            duration_s=128.0,
            size_bytes=SIZE,
            peaks=[0.1, 0.5, 0.9, 0.2],
            pci_spans=[[30.0, 42.5]],
            retain_until=dt.datetime(2027, 3, 10, tzinfo=dt.UTC),
        )
        session.add(rec)
        await session.flush()
        return call_id, rec.id


async def _audit(sessions: async_sessionmaker[AsyncSession]) -> list[RecordingAccess]:
    async with sessions() as session:
        return list((await session.execute(select(RecordingAccess).order_by(RecordingAccess.id))).scalars())


async def test_range_requests_start_middle_suffix_and_invalid(panel: Panel, sessions) -> None:  # type: ignore[no-untyped-def]
    call_id, _ = await _recorded_call(panel, sessions, "agent1")
    async with panel.client() as client:
        await login(client, "agent1")
        view = await (await client.get(f"/api/v1/calls/{call_id}/recording")).json()
        url = view["url"]

        whole = await client.get(url)
        assert whole.status == 200
        assert await whole.read() == BODY
        assert whole.headers["Accept-Ranges"] == "bytes"
        assert whole.headers["Content-Type"] == "audio/mpeg"
        assert whole.headers["Cache-Control"] == "private, no-store"

        cases = {
            "bytes=0-99": (0, 99),  # start
            "bytes=20000-20999": (20000, 20999),  # middle
            "bytes=-500": (SIZE - 500, SIZE - 1),  # suffix
            "bytes=40000-": (40000, SIZE - 1),  # open end
            "bytes=40900-99999": (40900, SIZE - 1),  # end past the file is clipped
        }
        for header, (first, last) in cases.items():
            part = await client.get(url, headers={"Range": header})
            assert part.status == 206, header
            assert part.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}", header
            assert await part.read() == BODY[first : last + 1], header

        for bad in ("bytes=abc", "bytes=500-100", f"bytes={SIZE}-", "bytes=-0", "bytes=0-1,5-9"):
            refused = await client.get(url, headers={"Range": bad})
            assert refused.status == 416, bad
            assert refused.headers["Content-Range"] == f"bytes */{SIZE}", bad


async def test_one_audit_row_per_play_and_per_download(panel: Panel, sessions) -> None:  # type: ignore[no-untyped-def]
    call_id, rec_id = await _recorded_call(panel, sessions, "agent1")
    async with panel.client() as client:
        await login(client, "agent1")
        view = await (await client.get(f"/api/v1/calls/{call_id}/recording")).json()
        for start in range(0, SIZE, 8192):  # the audio element streams one play as many Range requests
            assert (await client.get(view["url"], headers={"Range": f"bytes={start}-"})).status == 206
        download = await client.get(view["download_url"])
        assert download.status == 200
        assert download.headers["Content-Disposition"] == f'attachment; filename="call-{call_id}.mp3"'
        second_play = await (await client.get(f"/api/v1/calls/{call_id}/recording")).json()
        assert (await client.get(second_play["url"])).status == 200

    rows = await _audit(sessions)
    assert [(r.action, r.recording_id, r.call_id) for r in rows] == [
        ("play", rec_id, call_id),
        ("download", rec_id, call_id),
        ("play", rec_id, call_id),
    ]
    agent = panel.principals["agent1"].user_id
    assert {r.user_id for r in rows} == {agent}
    assert all(r.remote and r.at for r in rows)
    assert rows[0].detail == "bytes=0-"


@pytest.mark.parametrize(
    ("viewer", "owner", "allowed"),
    [
        ("agent1", "agent1", True),  # an agent: own calls
        ("agent1", "agent2", False),
        ("sup1", "agent1", True),  # a supervisor of 310: team 310's calls
        ("sup1", "agent2", False),  # not team 320's
        ("admin1", "agent2", True),  # an administrator: all
    ],
)
async def test_access_matrix_with_audit(panel: Panel, sessions, viewer: str, owner: str, allowed: bool) -> None:  # type: ignore[no-untyped-def]
    call_id, rec_id = await _recorded_call(panel, sessions, owner)
    async with panel.client() as client:
        await login(client, viewer)
        answer = await client.get(f"/api/v1/calls/{call_id}/recording")
        fragment = await client.get(f"/calls/{call_id}/recording")
        if allowed:
            assert answer.status == 200
            view = await answer.json()
            assert view["state"] == "ready" and view["pci_spans"] == [[30.0, 42.5]]
            assert (await client.get(view["url"], headers={"Range": "bytes=0-9"})).status == 206
            assert 'class="recording-player"' in await fragment.text()
        else:
            assert answer.status == 404 and fragment.status == 404
    rows = await _audit(sessions)
    who = panel.principals[viewer].user_id
    if allowed:
        assert [(r.action, r.user_id, r.call_id, r.recording_id) for r in rows] == [("play", who, call_id, rec_id)]
    else:
        assert [(r.action, r.user_id, r.call_id) for r in rows] == [("denied", who, call_id)] * 2


async def test_crm_staff_cannot_reach_recordings(panel: Panel, sessions) -> None:  # type: ignore[no-untyped-def]
    call_id, rec_id = await _recorded_call(panel, sessions, "agent1")
    async with panel.client() as client:
        await login(client, "staff1")
        assert (await client.get(f"/api/v1/calls/{call_id}/recording")).status == 403
        assert (await client.get(f"/recordings/{rec_id}/audio?grant=x")).status == 403


async def test_grants_are_bound_to_user_recording_and_time(panel: Panel, sessions) -> None:  # type: ignore[no-untyped-def]
    call_id, rec_id = await _recorded_call(panel, sessions, "agent1")
    key = panel.app[GRANT_KEY]
    agent1 = panel.principals["agent1"].user_id
    async with panel.client() as owner, panel.client() as other:
        await login(owner, "agent1")
        await login(other, "admin1")  # may see the call, but not with agent1's URL
        url = (await (await owner.get(f"/api/v1/calls/{call_id}/recording")).json())["url"]
        assert (await other.get(url)).status == 403

        token = url.split("grant=")[1]
        tampered = re.sub(r"\.(\d+)\.", lambda m: f".{int(m.group(1)) + 1}.", token, count=1)
        assert (await owner.get(f"/recordings/{rec_id}/audio?grant={tampered}")).status == 403
        expired = signing.sign(key, rec_id, agent1, "play", ttl_s=60, now=1_000_000.0)
        assert (await owner.get(f"/recordings/{rec_id}/audio?grant={expired}")).status == 403
        assert (await owner.get(f"/recordings/{rec_id}/audio")).status == 403
        assert (await owner.get(f"/recordings/{rec_id + 1}/audio?grant={token}")).status == 403

    rows = await _audit(sessions)
    assert [r.action for r in rows] == ["denied"] * 5
    details = " | ".join(r.detail or "" for r in rows)
    for reason in ("grant is for another recording or user", "grant expired", "bad signature", "malformed grant"):
        assert reason in details


async def test_player_states_and_path_confinement(panel: Panel, sessions) -> None:  # type: ignore[no-untyped-def]
    call_id, rec_id = await _recorded_call(panel, sessions, "agent1")
    async with panel.client() as client:
        await login(client, "agent1")
        page = await (await client.get(f"/calls/{call_id}/recording")).text()
        assert "录音" in page and "data-recording=" in page and "保存至" in page

        async with transaction(sessions) as session:
            rec = await session.get(Recording, rec_id)
            assert rec is not None
            rec.state = "pending"
        assert "录音正在处理中" in await (await client.get(f"/calls/{call_id}/recording")).text()

        async with transaction(sessions) as session:
            rec = await session.get(Recording, rec_id)
            assert rec is not None
            rec.state, rec.storage_path = "ready", "../../etc/passwd"
        url = (await (await client.get(f"/api/v1/calls/{call_id}/recording")).json())["url"]
        assert (await client.get(url)).status == 404

        (unrecorded,) = await call_factory.add_calls(sessions, call_factory.call(agent=panel.principals["agent1"]))
        assert (await (await client.get(f"/api/v1/calls/{unrecorded}/recording")).json()) == {"state": "none"}
        assert "此通话没有录音" in await (await client.get(f"/calls/{unrecorded}/recording")).text()


async def test_legal_hold_by_supervisors_of_the_team_only(panel: Panel, sessions) -> None:  # type: ignore[no-untyped-def]
    _, rec_id = await _recorded_call(panel, sessions, "agent1")
    _, other_team = await _recorded_call(panel, sessions, "agent2")
    async with panel.client() as agent, panel.client() as sup:
        agent_csrf = await login(agent, "agent1")
        sup_csrf = await login(sup, "sup1")
        hold = f"/api/v1/recordings/{rec_id}/hold"
        assert (await agent.post(hold, json={"reason": "x"}, headers={"X-CSRF-Token": agent_csrf})).status == 403
        assert (await sup.post(hold, json={"reason": ""}, headers={"X-CSRF-Token": sup_csrf})).status == 400
        assert (await sup.post(hold, json={"reason": "x"})).status == 403  # no CSRF token
        foreign = f"/api/v1/recordings/{other_team}/hold"
        assert (await sup.post(foreign, json={"reason": "x"}, headers={"X-CSRF-Token": sup_csrf})).status == 404
        ok = await sup.post(hold, json={"reason": "complaint 2026-118"}, headers={"X-CSRF-Token": sup_csrf})
        assert ok.status == 200 and (await ok.json())["legal_hold"] is True
        fragment = await (await sup.get(f"/calls/{(await _call_of(sessions, rec_id))}/recording")).text()
        assert "法律保全" in fragment and "complaint 2026-118" in fragment and "解除保全" in fragment
        released = await sup.post(f"/api/v1/recordings/{rec_id}/release", headers={"X-CSRF-Token": sup_csrf})
        assert released.status == 200 and (await released.json())["legal_hold"] is False
    async with sessions() as session:
        rec = await session.get(Recording, rec_id)
        assert rec is not None and rec.legal_hold is False
    rows = await _audit(sessions)
    sup1 = panel.principals["sup1"].user_id
    assert [(r.action, r.user_id, r.recording_id) for r in rows] == [("hold", sup1, rec_id), ("release", sup1, rec_id)]


async def _call_of(sessions: async_sessionmaker[AsyncSession], rec_id: int) -> int:
    async with sessions() as session:
        rec = await session.get(Recording, rec_id)
        assert rec is not None and rec.call_id is not None
        return rec.call_id


async def test_a_recording_found_by_linkedid_plays_and_is_audited_with_its_call(panel: Panel, sessions) -> None:  # type: ignore[no-untyped-def]
    call_id, rec_id = await _recorded_call(panel, sessions, "agent1", linked=False)
    async with panel.client() as owner, panel.client() as other:
        await login(owner, "agent1")
        await login(other, "agent2")
        view = await (await owner.get(f"/api/v1/calls/{call_id}/recording")).json()
        assert view["id"] == rec_id
        assert (await owner.get(view["url"], headers={"Range": "bytes=0-9"})).status == 206
        assert (await other.get(f"/api/v1/calls/{call_id}/recording")).status == 404
    rows = await _audit(sessions)
    assert [(r.action, r.call_id, r.recording_id) for r in rows] == [
        ("play", call_id, rec_id),
        ("denied", call_id, None),
    ]
