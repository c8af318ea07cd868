"""Supervisors on live calls: listen, whisper (the agent hears the supervisor), barge (both do).

The supervisor's own phone (a WebRTC seat) is rung by AMI Originate into the `supervisor-<mode>`
dialplan context, which runs ChanSpy on the agent's channel (asterisk-config/extensions.conf). What
the supervisor may do to whom (the team) is checked by the caller (the panel's API).
"""

from __future__ import annotations

import logging
from typing import Literal

from cti.agents import AgentManager, interface_of
from cti.ami.actions import AmiActionSender, originate
from cti.ami.errors import AmiError

log = logging.getLogger(__name__)

SpyMode = Literal["listen", "whisper", "barge"]
_LABEL = {"listen": "监听", "whisper": "耳语", "barge": "强插"}


class SpyRefused(Exception):
    """Why a listen / whisper / barge could not start, in words the panel shows."""


async def spy(
    ami: AmiActionSender, agents: AgentManager, supervisor_endpoint: str, agent_endpoint: str, mode: SpyMode
) -> None:
    """Ring the supervisor's phone; when answered it joins the agent's live call in `mode`."""
    if supervisor_endpoint == agent_endpoint:
        raise SpyRefused("you cannot supervise your own calls")
    state = agents.state_of(agent_endpoint)
    if state is None or state.state != "on_call":
        raise SpyRefused(f"{agent_endpoint} is not on a call")
    if agents.is_busy(supervisor_endpoint):
        raise SpyRefused("your phone is busy")
    try:
        await originate(
            ami,
            channel=interface_of(supervisor_endpoint),
            context=f"supervisor-{mode}",
            exten=agent_endpoint,
            priority=1,
            # What the supervisor's phone shows, and a mark the call log can tell spy legs by.
            caller_id=f'"{_LABEL[mode]} {agent_endpoint}" <{agent_endpoint}>',
            variables={"CTI_SPY": mode, "CTI_SPY_AGENT": agent_endpoint},
            timeout_ms=30_000,
        )
    except AmiError as exc:
        raise SpyRefused(f"the PBX refused: {exc}") from exc
    log.info("%s: %s -> %s", mode, supervisor_endpoint, agent_endpoint)
