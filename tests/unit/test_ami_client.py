"""AmiClient against a scripted AMI peer.

The peer is a small asyncio TCP server in this file. It exists for the failure modes a real Asterisk cannot
be made to produce on demand (no banner, silence, garbage, a drop in the middle of an action); the happy
paths are also run against the real Asterisk in tests/telephony. Where it can, the peer replays real
Asterisk 22 replies from the captures in shared/fixtures/ami.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from cti.ami import actions
from cti.ami.client import AmiClient
from cti.ami.errors import (
    AmiActionError,
    AmiAuthError,
    AmiConnectError,
    AmiDisconnected,
    AmiError,
    AmiTimeout,
)
from cti.ami.protocol import AmiMessage

CAPTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "ami"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
USER, SECRET = "cti", "s3cret"

Action = dict[str, list[str]]
Handler = Callable[["Peer", Action], Coroutine[Any, Any, None]]


def first(action: Action, key: str) -> str:
    return action.get(key, [""])[0]


def parse_actions(buffer: bytearray) -> list[Action]:
    """Actions are only ever produced by our encoder: a plain split is enough on the peer side."""
    found: list[Action] = []
    while (end := buffer.find(b"\r\n\r\n")) >= 0:
        block = bytes(buffer[:end]).decode()
        del buffer[: end + 4]
        action: Action = {}
        for line in block.split("\r\n"):
            key, _, value = line.partition(": ")
            action.setdefault(key, []).append(value)
        found.append(action)
    return found


def block(**fields: str) -> bytes:
    return "".join(f"{key}: {value}\r\n" for key, value in fields.items()).encode() + b"\r\n"


class Peer:
    """One accepted connection of the fake Asterisk."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def respond(self, action: Action, response: str = "Success", **fields: str) -> None:
        self.send(block(Response=response, ActionID=first(action, "ActionID"), **fields))

    def event(self, name: str, **fields: str) -> None:
        self.send(block(Event=name, **fields))

    def close(self) -> None:
        self.writer.close()


class FakeAsterisk:
    """Scripted AMI peer: banner, Login, Ping, Logoff by default; tests add handlers per action."""

    def __init__(self) -> None:
        self.banner: bytes | None = BANNER
        self.close_without_banner = False
        self.answer_pings = True
        self.connect_times: list[float] = []
        self.received: list[Action] = []
        self.handlers: dict[str, Handler] = {}
        self.peers: list[Peer] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def connections(self) -> int:
        return len(self.connect_times)

    def actions_named(self, name: str) -> list[Action]:
        return [a for a in self.received if first(a, "Action") == name]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for peer in self.peers:
            peer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    def drop_all(self) -> None:
        for peer in self.peers:
            peer.writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connect_times.append(asyncio.get_running_loop().time())
        peer = Peer(writer)
        self.peers.append(peer)
        if self.close_without_banner:
            # What a dying Asterisk does during "core restart now": accept, send nothing, close.
            writer.close()
            return
        if self.banner is not None:
            writer.write(self.banner)
        buffer = bytearray()
        try:
            while data := await reader.read(65536):
                buffer += data
                for action in parse_actions(buffer):
                    self.received.append(action)
                    await self._handle(peer, action)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, peer: Peer, action: Action) -> None:
        name = first(action, "Action")
        handler = self.handlers.get(name)
        if handler is not None:
            task = asyncio.get_running_loop().create_task(handler(peer, action))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif name == "Login":
            if first(action, "Username") == USER and first(action, "Secret") == SECRET:
                peer.respond(action, Message="Authentication accepted")
                peer.event("FullyBooted", Privilege="system,all", Status="Fully Booted")
            else:
                peer.respond(action, "Error", Message="Authentication failed")
                peer.close()
        elif name == "Ping":
            if self.answer_pings:
                peer.respond(action, Ping="Pong", Timestamp="1795528219.000000")
        elif name == "Logoff":
            peer.respond(action, "Goodbye", Message="Thanks for all the fish.")
            peer.close()
        else:
            peer.respond(action, "Error", Message="Invalid/unknown command")


@pytest.fixture
async def asterisk() -> AsyncIterator[FakeAsterisk]:
    server = FakeAsterisk()
    await server.start()
    yield server
    await server.stop()


ClientFactory = Callable[..., AmiClient]


@pytest.fixture
async def make_client(asterisk: FakeAsterisk) -> AsyncIterator[ClientFactory]:
    """Clients with test-sized timeouts; all closed after the test."""
    clients: list[AmiClient] = []

    def factory(**overrides: Any) -> AmiClient:
        options: dict[str, Any] = {
            "username": USER,
            "secret": SECRET,
            "connect_timeout": 1.0,
            "banner_timeout": 0.3,
            "action_timeout": 1.0,
            "ping_interval": None,
            "reconnect_initial_delay": 0.05,
            "reconnect_max_delay": 0.4,
            "reconnect_jitter": 0.2,
        }
        options.update(overrides)
        client = AmiClient("127.0.0.1", asterisk.port, **options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


async def eventually(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Poll a condition spread over two independent tasks (client and fake peer): no single event to await."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


def capture_reply(capture: str, capture_action_id: str, action_id: str) -> tuple[bytes, list[bytes]]:
    """The real Response and event blocks Asterisk sent for one action, re-addressed to ``action_id``."""
    data = (CAPTURES / capture).read_bytes()
    marker = f"ActionID: {capture_action_id}\r\n".encode()
    response = b""
    events: list[bytes] = []
    for raw in data.split(b"\r\n\r\n"):
        if marker in raw + b"\r\n":
            readdressed = raw.replace(capture_action_id.encode(), action_id.encode()) + b"\r\n\r\n"
            if raw.startswith(b"Response:"):
                response = readdressed
            else:
                events.append(readdressed)
    assert response and events, f"{capture_action_id} not found in {capture}"
    return response, events


# --------------------------------------------------------------------------------------------- login


async def test_login_sends_credentials_and_events_mask(asterisk: FakeAsterisk, make_client: ClientFactory) -> None:
    client = make_client(events=("call", "agent"))
    booted: list[AmiMessage] = []
    client.on_event(booted.append, names={"FullyBooted"})
    await client.connect(timeout=2)
    assert client.connected
    assert client.banner == "Asterisk Call Manager/11.0.0"
    (login,) = asterisk.actions_named("Login")
    assert (first(login, "Username"), first(login, "Secret"), first(login, "Events")) == (USER, SECRET, "call,agent")
    pong = await actions.ping(client)
    assert pong["Ping"] == "Pong"
    await eventually(lambda: len(booted) == 1)
    assert client.stats.connects == 1


async def test_async_context_manager_logs_off(asterisk: FakeAsterisk, make_client: ClientFactory) -> None:
    client = make_client()
    async with client:
        assert client.connected
    assert not client.connected
    assert len(asterisk.actions_named("Logoff")) == 1


async def test_action_ids_are_unique_across_clients_and_name_the_process(make_client: ClientFactory) -> None:
    one, two = make_client(), make_client()
    ids = {one.new_action_id(), one.new_action_id(), two.new_action_id()}
    assert len(ids) == 3
    assert all(f"{socket.gethostname()}-{os.getpid()}-" in action_id for action_id in ids)


async def test_bad_credentials_raise_auth_error_and_stop(asterisk: FakeAsterisk, make_client: ClientFactory) -> None:
    client = make_client(secret="wrong", stop_on_auth_error=True)
    client.start()
    with pytest.raises(AmiAuthError, match="refused user 'cti'"):
        await client.wait_connected(timeout=2)
    await asyncio.sleep(0.3)
    assert asterisk.connections == 1
    assert client.stats.auth_failures == 1


async def test_bad_credentials_never_cause_a_tight_reconnect_loop(
    asterisk: FakeAsterisk, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Backoff would allow ~9 attempts in a second at these settings; bad credentials must wait the max delay.
    client = make_client(secret="wrong", reconnect_initial_delay=0.01, reconnect_max_delay=0.4)
    with caplog.at_level(logging.ERROR, logger="cti.ami.client"):
        client.start()
        await asyncio.sleep(1.0)
    assert 2 <= asterisk.connections <= 4
    gaps = [b - a for a, b in zip(asterisk.connect_times, asterisk.connect_times[1:], strict=False)]
    assert min(gaps) >= 0.4 * 0.8 - 0.02
    assert "login refused for user 'cti'" in caplog.text
    assert isinstance(client.last_error, AmiAuthError)
    with pytest.raises(AmiTimeout, match="Authentication failed"):
        await client.wait_connected(timeout=0.05)


# ---------------------------------------------------------------------------------------- actions


async def test_action_timeout_then_the_connection_still_works(
    asterisk: FakeAsterisk, make_client: ClientFactory
) -> None:
    async def silent(peer: Peer, action: Action) -> None:
        await asyncio.sleep(0.4)
        peer.respond(action, Message="too late")  # arrives after the timeout: must be dropped quietly

    asterisk.handlers["Status"] = silent
    client = make_client()
    await client.connect(timeout=2)
    with pytest.raises(AmiTimeout, match="Status"):
        await client.send_action("Status", timeout=0.15)
    assert client.stats.action_timeouts == 1
    await asyncio.sleep(0.35)
    assert (await actions.ping(client))["Ping"] == "Pong"
    assert client.connected and asterisk.connections == 1


async def test_error_response_raises_action_error(make_client: ClientFactory) -> None:
    client = make_client()
    await client.connect(timeout=2)
    with pytest.raises(AmiActionError, match="Invalid/unknown command") as caught:
        await client.send_action("NoSuchAction")
    assert caught.value.response["Response"] == "Error"
    unchecked = await client.send_action("NoSuchAction", check=False)
    assert unchecked["Response"] == "Error"


async def test_send_action_when_not_connected_fails_at_once(make_client: ClientFactory) -> None:
    client = make_client()
    with pytest.raises(AmiDisconnected):
        await client.send_action("Ping")


async def test_injection_is_refused_before_anything_is_sent(asterisk: FakeAsterisk, make_client: ClientFactory) -> None:
    client = make_client()
    await client.connect(timeout=2)
    with pytest.raises(ValueError, match="CR or LF"):
        await client.send_action("Hangup", {"Channel": "PJSIP/x\r\nAction: Originate"})
    await actions.ping(client)
    assert [first(a, "Action") for a in asterisk.received] == ["Login", "Ping"]


async def test_events_before_their_response_reach_subscribers_first(
    asterisk: FakeAsterisk, make_client: ClientFactory
) -> None:
    # Asterisk 22 sends QueueMemberAdded before the QueueAdd Response (capture 08).
    async def queue_add(peer: Peer, action: Action) -> None:
        peer.event("QueueMemberAdded", Queue=first(action, "Queue"), Interface=first(action, "Interface"))
        peer.respond(action, Message="Added interface to queue")

    asterisk.handlers["QueueAdd"] = queue_add
    client = make_client()
    seen: list[str] = []
    client.on_event(lambda event: seen.append(event.name))
    await client.connect(timeout=2)
    response = await actions.queue_add(client, queue="billing", interface="PJSIP/agent1002", member_name="Agent 1002")
    seen.append("response returned")
    assert response["Message"] == "Added interface to queue"
    assert seen[-2:] == ["QueueMemberAdded", "response returned"]
    (sent,) = asterisk.actions_named("QueueAdd")
    assert first(sent, "MemberName") == "Agent 1002"


@pytest.mark.parametrize("items_first", [False, True], ids=["response-first", "items-first"])
async def test_queue_status_list_collects_real_asterisk_reply(
    asterisk: FakeAsterisk, make_client: ClientFactory, items_first: bool
) -> None:
    async def queue_status(peer: Peer, action: Action) -> None:
        response, events = capture_reply(
            "08-queue-pause-add-remove.ami", "cap24644-1795528349-2", first(action, "ActionID")
        )
        # An unrelated live event interleaved with the list must still reach subscribers.
        live = block(Event="Newchannel", Channel="PJSIP/cust-00000016", Uniqueid="1.16")
        parts = [*events[:1], live, *events[1:]]
        for part in [*parts, response] if items_first else [response, *parts]:
            peer.send(part)
            await asyncio.sleep(0)

    asterisk.handlers["QueueStatus"] = queue_status
    client = make_client()
    live_events: list[str] = []
    client.on_event(lambda event: live_events.append(event.name))
    await client.connect(timeout=2)
    result = await actions.queue_status(client, queue="billing")
    assert result.response["EventList"] == "start"
    assert [e.name for e in result.events] == ["QueueParams", "QueueMember"]
    assert result.events[1]["Name"] == "Agent 1001"
    assert result.complete is not None and result.complete.name == "QueueStatusComplete"
    assert "Newchannel" in live_events and "QueueMember" not in live_events


async def test_queue_summary_and_core_show_channels(asterisk: FakeAsterisk, make_client: ClientFactory) -> None:
    async def queue_summary(peer: Peer, action: Action) -> None:
        response, events = capture_reply(
            "08-queue-pause-add-remove.ami", "cap24644-1795528349-7", first(action, "ActionID")
        )
        peer.send(response + b"".join(events))

    async def core_show_channels(peer: Peer, action: Action) -> None:
        action_id = first(action, "ActionID")
        peer.respond(action, EventList="start", Message="Channels will follow")
        for n in range(3):
            peer.event("CoreShowChannel", ActionID=action_id, Channel=f"PJSIP/a-{n}", Uniqueid=f"1.{n}")
        peer.event("CoreShowChannelsComplete", ActionID=action_id, EventList="Complete", ListItems="3")

    asterisk.handlers["QueueSummary"] = queue_summary
    asterisk.handlers["CoreShowChannels"] = core_show_channels
    client = make_client()
    await client.connect(timeout=2)
    summary = await actions.queue_summary(client, queue="billing")
    assert [(e.name, e["Queue"], e["LoggedIn"]) for e in summary.events] == [("QueueSummary", "billing", "1")]
    channels = await actions.core_show_channels(client)
    assert [e["Uniqueid"] for e in channels.events] == ["1.0", "1.1", "1.2"]
    assert channels.complete is not None and channels.complete["ListItems"] == "3"


async def test_originate_and_wait_when_the_event_beats_the_response(
    asterisk: FakeAsterisk, make_client: ClientFactory
) -> None:
    async def originate(peer: Peer, action: Action) -> None:
        peer.event(
            "OriginateResponse",
            ActionID=first(action, "ActionID"),
            Response="Success",
            Channel="PJSIP/agent1001-00000004",
            Reason="4",
            Uniqueid=first(action, "ChannelId"),
        )
        peer.respond(action, Message="Originate successfully queued")

    asterisk.handlers["Originate"] = originate
    client = make_client()
    await client.connect(timeout=2)
    outcome = await actions.originate_and_wait(
        client,
        channel="PJSIP/agent1001",
        context="click-to-dial",
        exten="13800138000",
        caller_id='"张伟" <13800138000>',
        variables={"CTI_CALL": "c-42"},
        channel_id="cti-c-42-agent",
        result_timeout=2,
    )
    assert (outcome["Reason"], outcome["Uniqueid"]) == ("4", "cti-c-42-agent")
    (sent,) = asterisk.actions_named("Originate")
    assert sent["Variable"] == ["CTI_CALL=c-42"]
    assert first(sent, "CallerID") == '"张伟" <13800138000>'
    assert (first(sent, "Async"), first(sent, "Priority"), first(sent, "Timeout")) == ("true", "1", "30000")


# ------------------------------------------------------------------------------- failure modes


async def test_drop_mid_action_fails_it_then_reconnects_with_backoff(
    asterisk: FakeAsterisk, make_client: ClientFactory
) -> None:
    async def drop(peer: Peer, action: Action) -> None:
        peer.writer.transport.abort()

    asterisk.handlers["Hangup"] = drop
    client = make_client(reconnect_initial_delay=0.2, reconnect_jitter=0.1)
    connected: list[int] = []
    lost: list[BaseException | None] = []

    async def resync(ami: AmiClient) -> None:
        connected.append(asterisk.connections)

    client.on_connected(resync)
    client.on_disconnected(lambda ami, exc: lost.append(exc))
    await client.connect(timeout=2)
    with pytest.raises(AmiDisconnected):
        await actions.hangup(client, channel="PJSIP/cust-00000000")
    dropped_at = asyncio.get_running_loop().time()
    assert not client.connected
    with pytest.raises(AmiDisconnected):
        await client.send_action("Ping")
    await client.wait_connected(timeout=2)
    assert asterisk.connections == 2
    assert asterisk.connect_times[1] - dropped_at >= 0.2 * 0.9 - 0.02
    assert connected == [1, 2]  # the resync hook ran after each login
    assert len(lost) == 1
    assert (await actions.ping(client))["Ping"] == "Pong"


async def test_backoff_grows_while_asterisk_keeps_failing(asterisk: FakeAsterisk, make_client: ClientFactory) -> None:
    asterisk.close_without_banner = True
    client = make_client(reconnect_initial_delay=0.05, reconnect_max_delay=0.2, reconnect_jitter=0.0)
    client.start()
    await eventually(lambda: asterisk.connections >= 5)
    gaps = [b - a for a, b in zip(asterisk.connect_times, asterisk.connect_times[1:], strict=False)][:4]
    for gap, expected in zip(gaps, [0.05, 0.1, 0.2, 0.2], strict=True):
        assert expected <= gap < expected + 0.1
    assert isinstance(client.last_error, AmiConnectError)


async def test_connect_refused_is_retried(make_client: ClientFactory) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client()
    client.port = port
    client.start()
    await eventually(lambda: client.stats.connect_failures >= 2)
    assert isinstance(client.last_error, AmiConnectError)
    assert "cannot connect" in str(client.last_error)


@pytest.mark.parametrize("mode", ["silent", "closes"])
async def test_no_banner_is_a_failed_connect(asterisk: FakeAsterisk, make_client: ClientFactory, mode: str) -> None:
    asterisk.banner = None
    asterisk.close_without_banner = mode == "closes"
    client = make_client(banner_timeout=0.2)
    client.start()
    await eventually(lambda: client.stats.connect_failures >= 1)
    assert not client.connected
    assert isinstance(client.last_error, AmiConnectError)
    assert "banner" in str(client.last_error)
    assert asterisk.actions_named("Login") == []  # never logs in on a connection without banner
    asterisk.banner = BANNER
    asterisk.close_without_banner = False
    await client.wait_connected(timeout=3)
    assert client.connected


async def test_not_an_ami_server(asterisk: FakeAsterisk, make_client: ClientFactory) -> None:
    asterisk.banner = b"SSH-2.0-OpenSSH_9.2\r\n"
    client = make_client()
    client.start()
    await eventually(lambda: client.stats.connect_failures >= 1)
    assert "not an AMI server" in str(client.last_error)


async def test_garbage_and_oversized_data_are_skipped_and_the_connection_survives(
    asterisk: FakeAsterisk, make_client: ClientFactory
) -> None:
    async def noise(peer: Peer, action: Action) -> None:
        peer.send(b"Event: Broken\r\nno colon here\r\nUniqueid: 1.1\r\n\r\n")
        peer.send(b"complete nonsense\r\n\r\n")
        peer.send(b"Event: Newchannel\r\nCallerIDName: \xff\xfe\r\nUniqueid: 1.2\r\n\r\n")
        peer.send(b"Event: Huge\r\n" + b"Pad: " + b"x" * 10_000 + b"\r\n\r\n")
        peer.send(b"Event: Huge2\r\nPad: " + b"y" * 5000)  # no terminator yet: discarded while it grows
        peer.send(b"y" * 5000 + b"\r\n\r\n")
        peer.event("Hangup", Uniqueid="1.3")
        peer.respond(action, Message="noise sent")

    asterisk.handlers["UserEvent"] = noise
    client = make_client(max_message_size=4096)
    events: list[AmiMessage] = []
    client.on_event(events.append, names={"Broken", "Newchannel", "Hangup", "Huge", "Huge2"})
    await client.connect(timeout=2)
    await actions.user_event(client, "MakeNoise")
    assert [(e.name, e["Uniqueid"]) for e in events] == [("Broken", "1.1"), ("Newchannel", "1.2"), ("Hangup", "1.3")]
    assert events[1]["CallerIDName"] == "\ufffd\ufffd"
    parser_stats = client.stats.parser
    assert (parser_stats.malformed_lines, parser_stats.malformed_messages) == (2, 1)
    assert (parser_stats.invalid_utf8, parser_stats.oversized) == (1, 2)
    assert (await actions.ping(client))["Ping"] == "Pong"
    assert client.connected and asterisk.connections == 1


async def test_keepalive_detects_a_dead_peer_and_reconnects(
    asterisk: FakeAsterisk, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(ping_interval=0.1, ping_timeout=0.2)
    await client.connect(timeout=2)
    await asyncio.sleep(0.35)
    assert len(asterisk.actions_named("Ping")) >= 2 and asterisk.connections == 1
    asterisk.answer_pings = False  # TCP stays open, nobody answers: a hung Asterisk
    with caplog.at_level(logging.WARNING, logger="cti.ami.client"):
        await eventually(lambda: client.stats.ping_failures >= 1, within=2)
        await eventually(lambda: asterisk.connections >= 2, within=2)
    assert "keep-alive Ping" in caplog.text
    asterisk.answer_pings = True
    await client.wait_connected(timeout=2)


async def test_async_event_callbacks_and_failing_callbacks(asterisk: FakeAsterisk, make_client: ClientFactory) -> None:
    async def two_events(peer: Peer, action: Action) -> None:
        peer.event("Newchannel", Uniqueid="1.1")
        peer.event("Hangup", Uniqueid="1.1")
        peer.respond(action)

    asterisk.handlers["UserEvent"] = two_events
    client = make_client()
    got: list[str] = []

    def broken(event: AmiMessage) -> None:
        raise RuntimeError("subscriber bug")

    async def slow(event: AmiMessage) -> None:
        await asyncio.sleep(0)
        got.append(event.name)

    client.on_event(broken)
    unsubscribe = client.on_event(slow)
    await client.connect(timeout=2)
    await actions.user_event(client, "Go")
    await eventually(lambda: len(got) >= 3)
    assert sorted(got) == sorted(["FullyBooted", "Newchannel", "Hangup"])
    assert client.stats.callback_errors >= 3
    unsubscribe()
    await actions.user_event(client, "Go")
    await asyncio.sleep(0.05)
    assert len(got) == 3


async def test_event_stream_iterates_until_closed(asterisk: FakeAsterisk, make_client: ClientFactory) -> None:
    async def burst(peer: Peer, action: Action) -> None:
        for n in range(5):
            peer.event("VarSet", Variable="N", Value=str(n))
        peer.event("Hangup", Uniqueid="9.9")
        peer.respond(action)

    asterisk.handlers["UserEvent"] = burst
    client = make_client()
    await client.connect(timeout=2)
    received: list[str] = []
    async with client.events(names={"VarSet", "Hangup"}, maxsize=3) as stream:
        await actions.user_event(client, "Burst")
        async for event in stream:
            received.append(event.name)
            if event.name == "VarSet" and len(received) == 3:
                break
        assert stream.dropped == 3  # 6 events into a 3-slot stream: the newest 3 were dropped
    assert received == ["VarSet", "VarSet", "VarSet"]
    closing = client.events()
    await client.close()
    assert [event async for event in closing] == []


async def test_close_wakes_tasks_waiting_for_a_connection(asterisk: FakeAsterisk, make_client: ClientFactory) -> None:
    asterisk.banner = None  # never connects
    client = make_client(banner_timeout=0.1)
    client.start()
    waiter = asyncio.ensure_future(client.wait_connected(timeout=5))
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(AmiDisconnected, match="closed"):
        await waiter
    asterisk.banner = BANNER
    await client.connect(timeout=2)  # a closed client can be started again
    assert client.connected


async def test_close_fails_pending_actions(asterisk: FakeAsterisk, make_client: ClientFactory) -> None:
    async def never(peer: Peer, action: Action) -> None:
        await asyncio.sleep(10)

    asterisk.handlers["Status"] = never
    client = make_client()
    await client.connect(timeout=2)
    pending = asyncio.ensure_future(client.send_action("Status", timeout=5))
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(AmiError):
        await pending
    assert not client.connected


async def test_action_helpers_field_names(asterisk: FakeAsterisk, make_client: ClientFactory) -> None:
    async def ok(peer: Peer, action: Action) -> None:
        peer.respond(action, Output="line 1")

    for name in ("QueueRemove", "QueuePause", "Redirect", "BlindTransfer", "Atxfer", "MixMonitorMute", "Command"):
        asterisk.handlers[name] = ok
    client = make_client()
    await client.connect(timeout=2)
    await actions.queue_remove(client, queue="billing", interface="PJSIP/agent1002")
    await actions.queue_pause(client, interface="PJSIP/agent1001", paused=True, queue="billing", reason="Lunch break")
    await actions.redirect(client, channel="PJSIP/cust-1", context="agents", exten="1002")
    await actions.blind_transfer(client, channel="PJSIP/agent1001-1", context="agents", exten="1002")
    await actions.atxfer(client, channel="PJSIP/agent1001-1", exten="1002", context="agents")
    await actions.mixmonitor_mute(client, channel="PJSIP/cust-1", muted=True)
    assert await actions.command(client, "core show uptime") == ["line 1"]
    sent = {first(a, "Action"): a for a in asterisk.received}
    pause = sent["QueuePause"]
    assert (first(pause, "Paused"), first(pause, "Reason"), first(pause, "Queue")) == ("true", "Lunch break", "billing")
    assert (first(sent["Redirect"], "Priority"), "ExtraChannel" in sent["Redirect"]) == ("1", False)
    assert (first(sent["MixMonitorMute"], "Direction"), first(sent["MixMonitorMute"], "State")) == ("both", "1")
    assert first(sent["BlindTransfer"], "Exten") == "1002"
    with pytest.raises(ValueError, match="exten"):
        await actions.originate(client, channel="PJSIP/agent1001")
