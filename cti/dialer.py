"""Click-to-dial: the agent's phone rings first (showing who will be called), then the customer.

The call is tied to our own id through the channel variable __CTI_CALLID (inherited by every leg), so
the tracker's CallEnded and the call log carry it whatever Asterisk names the channels.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import phonenumbers

from crm_core.members.dialing import NothingToDial, dial_target
from crm_core.phones import InvalidPhone, PhoneKind, mask_phone, parse_phone
from crm_core.security.policy import Principal
from cti.agents import AgentManager, interface_of
from cti.ami.actions import AmiActionSender, originate
from cti.ami.errors import AmiError
from cti.crm import CrmGateway

log = logging.getLogger(__name__)

DIALLABLE = frozenset({PhoneKind.MOBILE, PhoneKind.LANDLINE, PhoneKind.TOLL_FREE, PhoneKind.SHARED_COST})


class DialRefused(Exception):
    """Click-to-dial refused before anything rang, with a reason for the agent."""


@dataclass(frozen=True, slots=True)
class DialStarted:
    call_id: str
    action_id: str
    agent: str
    number_masked: str | None


def dial_digits(number: str) -> str:
    """What the dialplan expects: national digits with the trunk 0 for landlines (010…, 0755…)."""
    try:
        phone = parse_phone(number)
    except InvalidPhone as exc:
        raise DialRefused(str(exc)) from exc
    if phone.kind not in DIALLABLE:
        raise DialRefused(f"cannot dial {mask_phone(phone.e164)}: not a callable number")
    if phone.region != "CN":
        raise DialRefused("international numbers are not enabled for click-to-dial")
    parsed = phonenumbers.parse(phone.e164)
    national = str(parsed.national_number)
    return national if phone.kind != PhoneKind.LANDLINE else "0" + national


class Dialer:
    def __init__(
        self,
        ami: AmiActionSender,
        agents: AgentManager,
        crm: CrmGateway,
        *,
        context: str = "click-to-dial",
        ring_agent_seconds: int = 30,
    ) -> None:
        self.ami = ami
        self.agents = agents
        self.crm = crm
        self.context = context
        self.ring_agent_ms = ring_agent_seconds * 1000

    async def dial(
        self,
        principal: Principal,
        agent: str,
        *,
        number: str | None = None,
        member_id: int | None = None,
        contact_id: int | None = None,
        reference: str | None = None,
    ) -> DialStarted:
        """Ring `agent`, then `number` (or the member's / contact's number, resolved server-side).

        Refused when the agent is not logged in or already ringing / on a call. The outcome (answered,
        no answer, busy) reaches the call log through the tracker.
        """
        if not self.agents.is_logged_in(agent):
            raise DialRefused(f"{agent} is not logged in")
        if self.agents.is_busy(agent):
            raise DialRefused(f"{agent} is already on a call")
        display_name = None
        if number is None:
            if member_id is None:
                raise DialRefused("give a number or a member")
            async with self.crm.sessions() as session:
                try:
                    number, display_name = await dial_target(
                        session, principal, member_id=member_id, contact_id=contact_id
                    )
                except NothingToDial as exc:
                    raise DialRefused(str(exc)) from exc
        digits = dial_digits(number)
        call_id = uuid.uuid4().hex
        variables = {"__CTI_CALLID": call_id, "__CTI_AGENT": agent}
        if member_id is not None:
            variables["__CTI_MEMBER_ID"] = str(member_id)
        if reference:
            variables["__CTI_REFERENCE"] = reference
        # The agent's phone shows who it is about to call: the member's name and the number.
        caller_id = f'"{_clean(display_name or digits)}" <{digits}>'
        try:
            result = await originate(
                self.ami,
                channel=interface_of(agent),
                context=self.context,
                exten=digits,
                priority=1,
                caller_id=caller_id,
                variables=variables,
                timeout_ms=self.ring_agent_ms,
            )
        except AmiError as exc:
            raise DialRefused(f"the PBX refused the call: {exc}") from exc
        log.info("click-to-dial %s: %s -> %s", call_id, agent, mask_phone(number))
        return DialStarted(call_id=call_id, action_id=result.action_id, agent=agent, number_masked=mask_phone(number))


def _clean(name: str) -> str:
    """Caller ID names must not break the "name" <number> syntax."""
    return name.replace('"', "").replace("<", "").replace(">", "").replace("\r", "").replace("\n", "")[:40]
