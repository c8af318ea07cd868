"""Typed helpers for the AMI actions the product uses, so field names and value formats live in one place.

Each helper takes anything with ``send_action``/``send_action_list`` (an :class:`~cti.ami.client.AmiClient`
or a test double) and returns the Response (or an :class:`~cti.ami.client.AmiEventList` for list
actions). ``Response: Error`` raises :class:`~cti.ami.errors.AmiActionError`. Field names follow the
Asterisk 22 AMI documentation; the captures in /work/shared/fixtures/ami show the replies.
"""

# ASYNC109: per-call `timeout=` is part of the AMI contract (AmiTimeout names the action and ActionID,
# the pending entry is dropped, the counter bumped); asyncio.timeout() around a call would lose that.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from cti.ami.errors import AmiTimeout
from cti.ami.protocol import AmiMessage, FieldValue

if TYPE_CHECKING:
    from cti.ami.client import ActionFields, AmiClient, AmiEventList

__all__ = [
    "AmiActionSender",
    "OriginateResult",
    "atxfer",
    "blind_transfer",
    "command",
    "core_show_channels",
    "hangup",
    "logoff",
    "mixmonitor_mute",
    "originate",
    "originate_and_wait",
    "ping",
    "queue_add",
    "queue_pause",
    "queue_remove",
    "queue_status",
    "queue_summary",
    "redirect",
    "user_event",
]


class AmiActionSender(Protocol):
    """What the helpers need from a client."""

    def new_action_id(self) -> str: ...

    async def send_action(
        self,
        action: str,
        fields: ActionFields = None,
        *,
        timeout: float | None = None,
        action_id: str | None = None,
        check: bool = True,
    ) -> AmiMessage: ...

    async def send_action_list(
        self,
        action: str,
        fields: ActionFields = None,
        *,
        timeout: float | None = None,
        action_id: str | None = None,
        check: bool = True,
    ) -> AmiEventList: ...


@dataclass(frozen=True, slots=True)
class OriginateResult:
    """The Originate Response plus the ActionID that its later ``OriginateResponse`` event will carry."""

    action_id: str
    response: AmiMessage


def _originate_fields(
    *,
    channel: str,
    context: str | None,
    exten: str | None,
    priority: int | str | None,
    application: str | None,
    data: str | None,
    caller_id: str | None,
    variables: Mapping[str, str] | None,
    channel_id: str | None,
    other_channel_id: str | None,
    timeout_ms: int | None,
    account: str | None,
    codecs: Collection[str] | None,
    early_media: bool | None,
    run_async: bool,
) -> dict[str, FieldValue]:
    if application is None and exten is None:
        raise ValueError("Originate needs either exten (+context) or application")
    if application is not None and exten is not None:
        raise ValueError("Originate takes exten (+context) or application, not both")
    if exten is not None and priority is None:
        priority = 1
    return {
        "Channel": channel,
        "Context": context,
        "Exten": exten,
        "Priority": priority,
        "Application": application,
        "Data": data,
        "Timeout": timeout_ms,
        "CallerID": caller_id,
        "Account": account,
        "EarlyMedia": early_media,
        "Codecs": ",".join(codecs) if codecs else None,
        "ChannelId": channel_id,
        "OtherChannelId": other_channel_id,
        "Async": run_async,
        # One "Variable: name=value" line per variable (several lines are accepted by Asterisk).
        "Variable": dict(variables) if variables else None,
    }


async def originate(
    ami: AmiActionSender,
    *,
    channel: str,
    context: str | None = None,
    exten: str | None = None,
    priority: int | str | None = None,
    application: str | None = None,
    data: str | None = None,
    caller_id: str | None = None,
    variables: Mapping[str, str] | None = None,
    channel_id: str | None = None,
    other_channel_id: str | None = None,
    timeout_ms: int | None = 30_000,
    account: str | None = None,
    codecs: Collection[str] | None = None,
    early_media: bool | None = None,
    run_async: bool = True,
    action_id: str | None = None,
    action_timeout: float | None = None,
) -> OriginateResult:
    """Originate a call: ``channel`` is dialled first, then connected to ``context,exten,priority`` or
    ``application(data)``.

    With ``run_async`` (the default) Asterisk answers "Originate successfully queued" at once and reports the
    outcome later in an ``OriginateResponse`` event carrying the same ActionID (``Reason: 4`` = answered).
    ``channel_id``/``other_channel_id`` set the Uniqueids of the two legs, so the call can be tracked before
    any event names it. ``caller_id`` is the full ``"Name" <number>`` string.
    """
    fields = _originate_fields(
        channel=channel,
        context=context,
        exten=exten,
        priority=priority,
        application=application,
        data=data,
        caller_id=caller_id,
        variables=variables,
        channel_id=channel_id,
        other_channel_id=other_channel_id,
        timeout_ms=timeout_ms,
        account=account,
        codecs=codecs,
        early_media=early_media,
        run_async=run_async,
    )
    action_id = action_id or ami.new_action_id()
    # A synchronous Originate answers only when the call ends ringing: allow for the ring timeout.
    if action_timeout is None and not run_async and timeout_ms is not None:
        action_timeout = timeout_ms / 1000 + 5
    response = await ami.send_action("Originate", fields, timeout=action_timeout, action_id=action_id)
    return OriginateResult(action_id, response)


async def originate_and_wait(
    ami: AmiClient,
    *,
    channel: str,
    result_timeout: float = 60.0,
    context: str | None = None,
    exten: str | None = None,
    priority: int | str | None = None,
    application: str | None = None,
    data: str | None = None,
    caller_id: str | None = None,
    variables: Mapping[str, str] | None = None,
    channel_id: str | None = None,
    other_channel_id: str | None = None,
    timeout_ms: int | None = 30_000,
    account: str | None = None,
    codecs: Collection[str] | None = None,
    early_media: bool | None = None,
) -> AmiMessage:
    """Async Originate, then wait for its ``OriginateResponse`` event (``Response: Success|Failure``,
    ``Reason``, ``Uniqueid``). The waiter is registered before the action is sent because the event may
    precede the Response."""
    action_id = ami.new_action_id()
    outcome = ami.expect_event(lambda event: event.get("ActionID") == action_id, names=("OriginateResponse",))
    try:
        await originate(
            ami,
            channel=channel,
            context=context,
            exten=exten,
            priority=priority,
            application=application,
            data=data,
            caller_id=caller_id,
            variables=variables,
            channel_id=channel_id,
            other_channel_id=other_channel_id,
            timeout_ms=timeout_ms,
            account=account,
            codecs=codecs,
            early_media=early_media,
            action_id=action_id,
        )
        async with asyncio.timeout(result_timeout):
            return await outcome
    except TimeoutError:
        raise AmiTimeout(f"no OriginateResponse for ActionID {action_id} within {result_timeout}s") from None
    finally:
        outcome.cancel()


async def queue_add(
    ami: AmiActionSender,
    *,
    queue: str,
    interface: str,
    member_name: str | None = None,
    state_interface: str | None = None,
    penalty: int | None = None,
    paused: bool | None = None,
    reason: str | None = None,
) -> AmiMessage:
    """Log an agent's device into a queue as a dynamic member (a static member cannot be added again)."""
    return await ami.send_action(
        "QueueAdd",
        {
            "Queue": queue,
            "Interface": interface,
            "Penalty": penalty,
            "Paused": paused,
            "Reason": reason,
            "MemberName": member_name,
            "StateInterface": state_interface,
        },
    )


async def queue_remove(ami: AmiActionSender, *, queue: str, interface: str) -> AmiMessage:
    """Remove a dynamic member from a queue."""
    return await ami.send_action("QueueRemove", {"Queue": queue, "Interface": interface})


async def queue_pause(
    ami: AmiActionSender,
    *,
    interface: str,
    paused: bool,
    queue: str | None = None,
    reason: str | None = None,
) -> AmiMessage:
    """Pause or unpause a member in one queue, or in all its queues when ``queue`` is None.

    ``reason`` is the pause code shown as ``PausedReason`` in QueueMemberPause events.
    """
    return await ami.send_action(
        "QueuePause", {"Interface": interface, "Paused": paused, "Queue": queue, "Reason": reason}
    )


async def queue_status(
    ami: AmiActionSender, *, queue: str | None = None, member: str | None = None, timeout: float | None = None
) -> AmiEventList:
    """QueueParams + QueueMember + QueueEntry events for one or all queues (used by resync)."""
    return await ami.send_action_list("QueueStatus", {"Queue": queue, "Member": member}, timeout=timeout)


async def queue_summary(
    ami: AmiActionSender, *, queue: str | None = None, timeout: float | None = None
) -> AmiEventList:
    """One QueueSummary event per queue (LoggedIn, Available, Callers, HoldTime, LongestHoldTime)."""
    return await ami.send_action_list("QueueSummary", {"Queue": queue}, timeout=timeout)


async def core_show_channels(ami: AmiActionSender, *, timeout: float | None = None) -> AmiEventList:
    """One CoreShowChannel event per live channel (Uniqueid, Linkedid, BridgeId...): the resync source."""
    return await ami.send_action_list("CoreShowChannels", None, timeout=timeout)


async def hangup(ami: AmiActionSender, *, channel: str, cause: int | None = None) -> AmiMessage:
    """Hang up a channel (``channel`` may also be a ``/regex/``); ``cause`` is a Q.850 cause code."""
    return await ami.send_action("Hangup", {"Channel": channel, "Cause": cause})


async def redirect(
    ami: AmiActionSender,
    *,
    channel: str,
    context: str,
    exten: str,
    priority: int = 1,
    extra_channel: str | None = None,
    extra_context: str | None = None,
    extra_exten: str | None = None,
    extra_priority: int | None = None,
) -> AmiMessage:
    """Send a channel (and optionally its peer) to another dialplan location."""
    return await ami.send_action(
        "Redirect",
        {
            "Channel": channel,
            "Context": context,
            "Exten": exten,
            "Priority": priority,
            "ExtraChannel": extra_channel,
            "ExtraContext": extra_context,
            "ExtraExten": extra_exten,
            "ExtraPriority": extra_priority,
        },
    )


async def blind_transfer(ami: AmiActionSender, *, channel: str, context: str, exten: str) -> AmiMessage:
    """Blind-transfer ``channel``'s peer to ``exten@context`` (Response "Transfer succeeded"); the
    resulting BlindTransfer event looks the same as a phone's SIP REFER."""
    return await ami.send_action("BlindTransfer", {"Channel": channel, "Context": context, "Exten": exten})


async def atxfer(ami: AmiActionSender, *, channel: str, exten: str, context: str | None = None) -> AmiMessage:
    """Start an attended transfer from ``channel``.

    Asterisk quirk: needs the ``atxfer`` feature code in features.conf (and Queue option ``t`` for queue
    calls); Asterisk sends the code as DTMF and waits for the digit timeout before dialling.
    """
    return await ami.send_action("Atxfer", {"Channel": channel, "Exten": exten, "Context": context})


async def mixmonitor_mute(
    ami: AmiActionSender,
    *,
    channel: str,
    muted: bool = True,
    direction: Literal["read", "write", "both"] = "both",
) -> AmiMessage:
    """Mute (or unmute) a running MixMonitor recording, e.g. while the customer reads out card data."""
    return await ami.send_action(
        "MixMonitorMute", {"Channel": channel, "Direction": direction, "State": "1" if muted else "0"}
    )


async def command(ami: AmiActionSender, cli_command: str, *, timeout: float | None = None) -> list[str]:
    """Run a CLI command and return its output lines (``Output:`` lines or old ``Response: Follows``)."""
    response = await ami.send_action("Command", {"Command": cli_command}, timeout=timeout)
    return response.output


async def user_event(ami: AmiActionSender, name: str, headers: Mapping[str, str] | None = None) -> AmiMessage:
    """Emit ``Event: UserEvent`` with ``UserEvent: name`` to every AMI listener (e.g. other CTI nodes)."""
    fields: dict[str, FieldValue] = {"UserEvent": name}
    for key, value in (headers or {}).items():
        if key in fields:
            raise ValueError(f"header {key!r} clashes with the UserEvent field")
        fields[key] = value
    return await ami.send_action("UserEvent", fields)


async def ping(ami: AmiActionSender, *, timeout: float | None = None) -> AmiMessage:
    """Round trip to Asterisk (``Ping: Pong``); /healthz uses it."""
    return await ami.send_action("Ping", None, timeout=timeout)


async def logoff(ami: AmiActionSender) -> AmiMessage:
    """End the AMI session (``Response: Goodbye``); Asterisk then closes the socket.

    Prefer ``AmiClient.close()``, which also stops the reconnect loop.
    """
    return await ami.send_action("Logoff", None, check=False)
