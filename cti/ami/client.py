"""Asyncio AMI client: one supervised connection with login, keep-alive, reconnect and ActionID correlation.

Lifecycle: ``start()`` launches a supervisor task that connects (TCP, banner, Login), runs the
``on_connected`` hooks (resync after every (re)connect), then waits for the connection to end and reconnects
with capped exponential backoff and jitter. ``close()`` logs off and stops it. Use it as
``async with AmiClient(...) as ami:`` or ``ami.start(); await ami.wait_connected()``.

Asterisk quirks handled here (evidence: /work/shared/fixtures/ami and ASTERISK-SANDBOX.md "Pitfalls"):

* events caused by an action may arrive *before* that action's Response (QueueMemberAdded before the
  QueueAdd Response; list items before the list's Response): pending actions are registered before the
  action is written and list items are collected by ActionID whenever they come;
* ``core restart now`` closes the socket without Response or Shutdown, and the first reconnect may be
  accepted by the dying listener and get 0 bytes: no banner within the timeout is a failed connect;
* a half-dead peer (TCP open, nobody answering) is only noticed by the keep-alive Ping timing out;
* OriginateResponse carries the Originate's ActionID *and* ``Response:`` but it is an event: it reaches
  subscribers (the dialer correlates it), it does not answer a pending action.
"""

# ASYNC109: per-call `timeout=` is part of the AMI contract (AmiTimeout names the action and ActionID,
# the pending entry is dropped, the counter bumped); asyncio.timeout() around a call would lose that.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self

from cti.ami.errors import (
    AmiActionError,
    AmiAuthError,
    AmiConnectError,
    AmiDisconnected,
    AmiError,
    AmiTimeout,
)
from cti.ami.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    AmiMessage,
    AmiParser,
    AmiParserStats,
    FieldValue,
    encode_action,
)

__all__ = [
    "ActionFields",
    "AmiClient",
    "AmiClientStats",
    "AmiEventList",
    "AmiEventStream",
    "ConnectedHook",
    "DisconnectedHook",
    "EventCallback",
]

log = logging.getLogger(__name__)

ActionFields = Mapping[str, FieldValue] | Iterable[tuple[str, FieldValue]] | None
EventCallback = Callable[[AmiMessage], object]
"""Called inline by the reader for each event, in stream order. Keep it fast; a returned awaitable is
scheduled as a task (ordering between such tasks is then not guaranteed)."""
ConnectedHook = Callable[["AmiClient"], Awaitable[None]]
DisconnectedHook = Callable[["AmiClient", BaseException | None], object]

_READ_SIZE: Final = 64 * 1024
_ERROR_RESPONSES: Final = frozenset({"Error", "Failure", "Fail"})
_MAX_BACKOFF_EXPONENT: Final = 30


@dataclass(slots=True)
class AmiEventList:
    """Result of a list action (CoreShowChannels, QueueStatus, QueueSummary...)."""

    response: AmiMessage
    events: list[AmiMessage]
    """The list items, without the closing ``...Complete`` event."""
    complete: AmiMessage | None
    """The ``...Complete`` event (``EventList: Complete``, ``ListItems: n``), None if the action had no list."""


@dataclass(slots=True)
class AmiClientStats:
    """Counters for /metrics and /healthz."""

    connect_attempts: int = 0
    connects: int = 0
    connect_failures: int = 0
    auth_failures: int = 0
    disconnects: int = 0
    actions_sent: int = 0
    action_timeouts: int = 0
    ping_failures: int = 0
    events: int = 0
    events_dropped: int = 0
    callback_errors: int = 0
    parser: AmiParserStats = field(default_factory=AmiParserStats)


def _starts_list(response: AmiMessage) -> bool:
    # Asterisk 22 says "EventList: start"; older versions only said "... will follow" in Message.
    event_list = response.get("EventList")
    if event_list is not None:
        return event_list.lower() == "start"
    return "will follow" in response.get("Message", "")


def _ends_list(event: AmiMessage) -> bool:
    event_list = event.get("EventList")
    if event_list is not None:
        return event_list.lower() == "complete"
    return event.name.endswith("Complete")


class _PendingAction:
    """An action awaiting its Response (and, for list actions, its items and ``...Complete`` event)."""

    __slots__ = ("collect", "complete", "events", "future", "response")

    def __init__(self, future: asyncio.Future[None], collect: bool) -> None:
        self.future = future
        self.collect = collect
        self.response: AmiMessage | None = None
        self.events: list[AmiMessage] = []
        self.complete: AmiMessage | None = None

    def on_response(self, response: AmiMessage) -> None:
        self.response = response
        if not self.collect or self.complete is not None or not _starts_list(response):
            self._resolve()

    def on_event(self, event: AmiMessage) -> bool:
        """Take a list item; False lets the event go to subscribers (e.g. OriginateResponse)."""
        if not self.collect:
            return False
        if _ends_list(event):
            self.complete = event
            if self.response is not None:
                self._resolve()
        else:
            self.events.append(event)
        return True

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class _Session:
    """Everything that lives and dies with one TCP connection."""

    __slots__ = (
        "closed",
        "keepalive_task",
        "logged_in",
        "logged_in_at",
        "lost",
        "parser",
        "pending",
        "read_task",
        "reader",
        "writer",
    )

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: AmiParser) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = parser
        self.pending: dict[str, _PendingAction] = {}
        self.closed = asyncio.Event()
        self.logged_in = False
        self.logged_in_at = 0.0
        self.lost = False
        self.read_task: asyncio.Task[None] | None = None
        self.keepalive_task: asyncio.Task[None] | None = None


class _Subscriber:
    __slots__ = ("callback", "names")

    def __init__(self, callback: EventCallback, names: frozenset[str] | None) -> None:
        self.callback = callback
        self.names = names


class AmiEventStream:
    """Async iterator over events, fed by the client without ever blocking its reader.

    Bounded: when the consumer falls ``maxsize`` events behind, new events are dropped, logged and counted
    (``dropped``) rather than stalling the AMI reader (which would also stall keep-alive and every other
    subscriber). Iteration ends when the stream or the client is closed.
    """

    def __init__(self, client: AmiClient, names: Collection[str] | None, maxsize: int) -> None:
        self._client = client
        self._queue: asyncio.Queue[AmiMessage | None] = asyncio.Queue()
        self._maxsize = maxsize
        self._closed = False
        self.dropped = 0
        self._unsubscribe = client.on_event(self._put, names)

    def _put(self, event: AmiMessage) -> None:
        if self._queue.qsize() >= self._maxsize:
            self.dropped += 1
            self._client.stats.events_dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("AMI event stream consumer is %d events behind: %d dropped", self._maxsize, self.dropped)
            return
        self._queue.put_nowait(event)

    def close(self) -> None:
        """Stop receiving; pending events are still delivered, then iteration ends."""
        if not self._closed:
            self._closed = True
            self._unsubscribe()
            self._client._streams.discard(self)
            self._queue.put_nowait(None)

    def __aiter__(self) -> AmiEventStream:
        return self

    async def __anext__(self) -> AmiMessage:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AmiClient:
    """Supervised AMI connection; see the module docstring for the lifecycle and the quirks it handles.

    ``events``: ``True``/``False`` for ``Events: on/off``, or an event-class mask such as
    ``("call", "agent")`` — a mask cuts the VarSet/Newexten flood at the source.
    ``stop_on_auth_error``: on refused credentials stop for good (``wait_connected`` raises
    :class:`AmiAuthError`) instead of retrying every ``reconnect_max_delay`` seconds.
    ``stable_after``: a connection that stayed up this long resets the backoff; shorter ones keep growing
    it, so a peer that accepts and drops at once cannot cause a tight loop either.
    """

    def __init__(
        self,
        host: str,
        port: int = 5038,
        username: str = "",
        secret: str = "",
        *,
        events: bool | str | Iterable[str] = True,
        connect_timeout: float = 5.0,
        banner_timeout: float | None = None,
        action_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 5.0,
        reconnect_initial_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
        reconnect_jitter: float = 0.2,
        stable_after: float = 10.0,
        stop_on_auth_error: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        event_stream_maxsize: int = 10_000,
        action_id_prefix: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= reconnect_jitter <= 1.0:
            raise ValueError("reconnect_jitter must be between 0 and 1")
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self._events_field = self._events_value(events)
        self.connect_timeout = connect_timeout
        self.banner_timeout = connect_timeout if banner_timeout is None else banner_timeout
        self.action_timeout = action_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.reconnect_initial_delay = reconnect_initial_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.reconnect_jitter = reconnect_jitter
        self.stable_after = stable_after
        self.stop_on_auth_error = stop_on_auth_error
        self.max_message_size = max_message_size
        self.event_stream_maxsize = event_stream_maxsize
        self.stats = AmiClientStats()
        self.banner: str | None = None
        self.last_error: BaseException | None = None
        """Why the last connect attempt or connection failed (for /healthz)."""
        self.next_retry_delay: float | None = None
        # Unique across hosts and processes: responses are only ever sent to the issuing session, but
        # ActionIDs end up in logs and in OriginateResponse correlation shared between cluster nodes.
        self._action_prefix = action_id_prefix or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._action_counter = itertools.count(1)
        self._rng = rng or random.Random()
        self._subscribers: tuple[_Subscriber, ...] = ()
        self._connected_hooks: list[ConnectedHook] = []
        self._disconnected_hooks: list[DisconnectedHook] = []
        self._streams: set[AmiEventStream] = set()
        self._background: set[asyncio.Future[object]] = set()
        self._session: _Session | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._fatal: AmiError | None = None
        self._closing = False

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<AmiClient {self.username}@{self.host}:{self.port} {state}>"

    @staticmethod
    def _events_value(events: bool | str | Iterable[str]) -> str:
        if isinstance(events, bool):
            return "on" if events else "off"
        if isinstance(events, str):
            return events
        return ",".join(events)

    # ----------------------------------------------------------------- state

    @property
    def connected(self) -> bool:
        """Logged in and usable right now."""
        session = self._session
        return session is not None and session.logged_in and not session.lost

    def new_action_id(self) -> str:
        """A fresh ActionID; pass it to ``send_action`` to correlate events that may precede the Response."""
        return f"{self._action_prefix}-{next(self._action_counter)}"

    # ----------------------------------------------------------- subscribers

    def on_event(self, callback: EventCallback, names: Collection[str] | None = None) -> Callable[[], None]:
        """Subscribe to events (all, or only those named); returns the function that unsubscribes."""
        subscriber = _Subscriber(callback, frozenset(names) if names is not None else None)
        self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

        return unsubscribe

    def events(self, names: Collection[str] | None = None, maxsize: int | None = None) -> AmiEventStream:
        """An async iterator of events (``async with ami.events() as stream: async for ev in stream``)."""
        stream = AmiEventStream(self, names, maxsize or self.event_stream_maxsize)
        self._streams.add(stream)
        return stream

    def expect_event(
        self, predicate: Callable[[AmiMessage], bool], names: Collection[str] | None = None
    ) -> asyncio.Future[AmiMessage]:
        """A future for the first matching event. Create it *before* sending the action that causes the
        event: Asterisk may deliver the event before the action's Response."""
        future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()

        def check(event: AmiMessage) -> None:
            if not future.done() and predicate(event):
                future.set_result(event)

        unsubscribe = self.on_event(check, names)
        future.add_done_callback(lambda _: unsubscribe())
        return future

    def on_connected(self, hook: ConnectedHook) -> None:
        """Run ``hook(client)`` after every successful login, before ``wait_connected`` returns (resync)."""
        self._connected_hooks.append(hook)

    def on_disconnected(self, hook: DisconnectedHook) -> None:
        """Call ``hook(client, exc)`` when an established connection is lost (``exc`` is None on close())."""
        self._disconnected_hooks.append(hook)

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start connecting in the background (idempotent); needs a running event loop."""
        if self._supervisor is not None and not self._supervisor.done():
            return
        self._closing = False
        self._fatal = None
        self._ready.clear()
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"ami-supervisor-{self.host}:{self.port}"
        )

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until logged in and the on_connected hooks ran.

        Raises :class:`AmiAuthError` if credentials were refused and ``stop_on_auth_error`` is set, and
        :class:`AmiTimeout` (mentioning the last error) when ``timeout`` expires.
        """
        if self._supervisor is None:
            raise AmiError("AmiClient.start() was not called")
        try:
            async with asyncio.timeout(timeout):
                # Invariant: _ready is set only while connected (hooks done) or once _fatal is set.
                while True:
                    if self._fatal is not None:
                        raise self._fatal
                    if self.connected and self._ready.is_set():
                        return
                    await self._ready.wait()
        except TimeoutError:
            raise AmiTimeout(
                f"not connected to AMI at {self.host}:{self.port} within {timeout}s (last error: {self.last_error!r})"
            ) from None

    async def connect(self, timeout: float | None = None) -> None:
        """``start()`` then ``wait_connected(timeout)``."""
        self.start()
        await self.wait_connected(timeout)

    async def close(self) -> None:
        """Log off, drop the connection, stop reconnecting and end all event streams.

        Tasks blocked in ``wait_connected`` get :class:`AmiDisconnected`; ``start()`` may be called again.
        """
        self._closing = True
        session = self._session
        if session is not None and session.logged_in and not session.lost:
            with contextlib.suppress(AmiError):
                await self._request(session, "Logoff", None, timeout=min(1.0, self.action_timeout))
        if session is not None:
            self._lose(session, None)
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        for stream in list(self._streams):
            stream.close()
        self._streams.clear()
        for task in list(self._background):
            task.cancel()
        self._fatal = AmiDisconnected(f"AmiClient for {self.host}:{self.port} was closed")
        self._ready.set()  # wake wait_connected() callers; they see _fatal

    async def __aenter__(self) -> Self:
        try:
            await self.connect(self.connect_timeout + self.action_timeout)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --------------------------------------------------------------- actions

    async def send_action(
        self,
        action: str,
        fields: ActionFields = None,
        *,
        timeout: float | None = None,
        action_id: str | None = None,
        check: bool = True,
    ) -> AmiMessage:
        """Send one action and return its Response.

        Raises :class:`AmiDisconnected` (not connected, or lost before the answer), :class:`AmiTimeout`,
        :class:`AmiActionError` for ``Response: Error`` unless ``check`` is False, ``ValueError`` for a
        field that would inject CR/LF. Actions answered by an event list (``EventList: start``) belong in
        :meth:`send_action_list`; here their items would reach the event subscribers.
        """
        session = self._usable_session()
        pending = await self._request(
            session, action, fields, timeout=timeout or self.action_timeout, action_id=action_id
        )
        response = pending.response
        assert response is not None
        if check and response.get("Response") in _ERROR_RESPONSES:
            raise AmiActionError(action, response)
        return response

    async def send_action_list(
        self,
        action: str,
        fields: ActionFields = None,
        *,
        timeout: float | None = None,
        action_id: str | None = None,
        check: bool = True,
    ) -> AmiEventList:
        """Send a list action and collect its events up to the ``...Complete`` event (``EventList: Complete``).

        The timeout covers the whole list. Items that arrive before the Response are kept.
        """
        session = self._usable_session()
        pending = await self._request(
            session, action, fields, timeout=timeout or self.action_timeout, action_id=action_id, collect=True
        )
        response = pending.response
        assert response is not None
        if check and response.get("Response") in _ERROR_RESPONSES:
            raise AmiActionError(action, response)
        return AmiEventList(response, pending.events, pending.complete)

    def _usable_session(self) -> _Session:
        session = self._session
        if session is None or not session.logged_in or session.lost:
            raise AmiDisconnected(f"not connected to AMI at {self.host}:{self.port}")
        return session

    async def _request(
        self,
        session: _Session,
        action: str,
        fields: ActionFields,
        *,
        timeout: float,
        action_id: str | None = None,
        collect: bool = False,
    ) -> _PendingAction:
        action_id = action_id or self.new_action_id()
        if action_id in session.pending:
            raise ValueError(f"ActionID {action_id!r} is already pending")
        payload = encode_action(action, fields, action_id)  # ValueError before anything is registered
        if session.lost:
            raise AmiDisconnected(f"AMI connection lost before {action} was sent")
        pending = _PendingAction(asyncio.get_running_loop().create_future(), collect)
        # Registered before writing: the answer (or its events) may come back before write() returns.
        session.pending[action_id] = pending
        self.stats.actions_sent += 1
        try:
            async with asyncio.timeout(timeout):
                session.writer.write(payload)
                await session.writer.drain()
                await pending.future
        except AmiError:
            raise
        except TimeoutError:
            self.stats.action_timeouts += 1
            raise AmiTimeout(f"no answer to {action} (ActionID {action_id}) within {timeout}s") from None
        except OSError as exc:
            raise AmiDisconnected(f"AMI connection lost while sending {action}: {exc!r}") from exc
        finally:
            session.pending.pop(action_id, None)
        return pending

    # ------------------------------------------------------------ connection

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self._closing:
            try:
                session = await self._connect_once()
            except AmiAuthError as exc:
                self.stats.auth_failures += 1
                self.last_error = exc
                if self.stop_on_auth_error:
                    log.error(
                        "AMI login refused for user %r at %s:%s: %s; giving up",
                        self.username,
                        self.host,
                        self.port,
                        exc,
                    )
                    self._fatal = exc
                    self._ready.set()
                    return
                # Credentials do not fix themselves: wait the longest delay, never loop quickly.
                delay = self._jittered(self.reconnect_max_delay)
                log.error(
                    "AMI login refused for user %r at %s:%s: %s; retrying in %.1fs",
                    self.username,
                    self.host,
                    self.port,
                    exc,
                    delay,
                )
            except AmiError as exc:
                self.stats.connect_failures += 1
                self.last_error = exc
                delay = self._backoff(attempt)
                attempt += 1
                log.warning("AMI connect failed: %s; retrying in %.1fs", exc, delay)
            except Exception as exc:  # e.g. ValueError: a CR/LF in the configured username
                self.stats.connect_failures += 1
                self.last_error = exc
                delay = self._backoff(attempt)
                attempt += 1
                log.exception(
                    "AMI connect to %s:%s failed unexpectedly; retrying in %.1fs", self.host, self.port, delay
                )
            else:
                await session.closed.wait()
                if self._closing:
                    return
                if loop.time() - session.logged_in_at >= self.stable_after:
                    attempt = 0
                delay = self._backoff(attempt)
                attempt += 1
                log.warning(
                    "AMI connection to %s:%s lost (%r); reconnecting in %.1fs",
                    self.host,
                    self.port,
                    self.last_error,
                    delay,
                )
            self.next_retry_delay = delay
            await asyncio.sleep(delay)
            self.next_retry_delay = None

    def _jittered(self, delay: float) -> float:
        return delay * (1.0 - self.reconnect_jitter * self._rng.random())

    def _backoff(self, attempt: int) -> float:
        exponent = min(attempt, _MAX_BACKOFF_EXPONENT)
        return self._jittered(min(self.reconnect_max_delay, self.reconnect_initial_delay * 2**exponent))

    async def _connect_once(self) -> _Session:
        """TCP connect, banner, Login, hooks. Returns the live session or raises AmiConnectError/AuthError."""
        self.stats.connect_attempts += 1
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise AmiConnectError(f"cannot connect to AMI at {where}: {exc!r}") from exc
        parser = AmiParser(max_message_size=self.max_message_size, stats=self.stats.parser)
        session = _Session(reader, writer, parser)
        try:
            early = await self._read_banner(session, where)
            self.banner = parser.banner
            session.read_task = asyncio.get_running_loop().create_task(
                self._read_loop(session, early), name=f"ami-reader-{where}"
            )
            try:
                response = (
                    await self._request(
                        session,
                        "Login",
                        {"Username": self.username, "Secret": self._secret, "Events": self._events_field},
                        timeout=self.action_timeout,
                    )
                ).response
            except AmiError as exc:
                raise AmiConnectError(f"AMI Login at {where} got no answer: {exc}") from exc
            assert response is not None
            if response.get("Response") != "Success":
                raise AmiAuthError(
                    f"AMI at {where} refused user {self.username!r}: {response.get('Message', response)}"
                )
        except BaseException as exc:
            self._lose(session, exc)
            raise
        loop = asyncio.get_running_loop()
        session.logged_in = True
        session.logged_in_at = loop.time()
        self._session = session
        self.last_error = None
        self.stats.connects += 1
        log.info("AMI connected to %s as %r (%s)", where, self.username, self.banner)
        if self.ping_interval:
            session.keepalive_task = loop.create_task(self._keepalive(session), name=f"ami-ping-{where}")
        for hook in self._connected_hooks:
            try:
                await hook(self)
            except AmiError as exc:
                log.warning("AMI on_connected hook %r failed: %s", hook, exc)
            except Exception:
                log.exception("AMI on_connected hook %r failed", hook)
        if not session.lost:
            self._ready.set()
        return session

    async def _read_banner(self, session: _Session, where: str) -> list[AmiMessage]:
        """Wait for ``Asterisk Call Manager/x.y.z``; return any messages that came in the same read."""
        early: list[AmiMessage] = []
        try:
            async with asyncio.timeout(self.banner_timeout):
                while session.parser.banner_pending:
                    data = await session.reader.read(_READ_SIZE)
                    if not data:
                        raise AmiConnectError(f"AMI at {where} closed the connection before its banner")
                    early += session.parser.feed(data)
        except TimeoutError:
            raise AmiConnectError(f"no AMI banner from {where} within {self.banner_timeout}s") from None
        except OSError as exc:
            raise AmiConnectError(f"AMI at {where} failed before its banner: {exc!r}") from exc
        if session.parser.banner is None:
            raise AmiConnectError(f"{where} is not an AMI server (no 'Asterisk Call Manager/' banner)")
        return early

    async def _read_loop(self, session: _Session, early: list[AmiMessage]) -> None:
        error: BaseException | None = None
        route = self._route
        try:
            for message in early:
                route(session, message)
            reader = session.reader
            feed = session.parser.feed
            while True:
                data = await reader.read(_READ_SIZE)
                if not data:
                    error = AmiDisconnected("AMI peer closed the connection")
                    break
                for message in feed(data):
                    route(session, message)
        except OSError as exc:
            error = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in routing must still fail pending actions and reconnect
            log.exception("AMI reader crashed")
            error = exc
        finally:
            self._lose(session, error)

    async def _keepalive(self, session: _Session) -> None:
        """Ping every ``ping_interval``: a peer that stops answering is dead even if TCP looks open."""
        assert self.ping_interval is not None
        while not session.lost:
            await asyncio.sleep(self.ping_interval)
            try:
                await self._request(session, "Ping", None, timeout=self.ping_timeout)
            except AmiTimeout as exc:
                self.stats.ping_failures += 1
                log.warning(
                    "AMI keep-alive Ping to %s:%s unanswered within %.1fs: dropping the connection",
                    self.host,
                    self.port,
                    self.ping_timeout,
                )
                self._lose(session, exc)
                return
            except AmiError:
                return

    def _lose(self, session: _Session, error: BaseException | None) -> None:
        """Tear a session down once: close the socket, fail its pending actions, notify."""
        if session.lost:
            return
        session.lost = True
        session.writer.transport.abort()
        current = asyncio.current_task()
        for task in (session.read_task, session.keepalive_task):
            if task is not None and task is not current:
                task.cancel()
        if session.pending:
            failure = AmiDisconnected(f"AMI connection to {self.host}:{self.port} lost: {error!r}")
            for pending in session.pending.values():
                if not pending.future.done():
                    pending.future.set_exception(failure)
        was_connected = session.logged_in
        if self._session is session:
            self._session = None
            self._ready.clear()
        session.closed.set()
        if not was_connected:
            return
        self.stats.disconnects += 1
        if error is not None and not self._closing:
            self.last_error = error
        for hook in self._disconnected_hooks:
            try:
                self._maybe_spawn(hook(self, error))
            except Exception:
                log.exception("AMI on_disconnected hook %r failed", hook)

    # -------------------------------------------------------------- dispatch

    def _route(self, session: _Session, message: AmiMessage) -> None:
        action_id = message.get("ActionID")
        if action_id is not None:
            pending = session.pending.get(action_id)
            if pending is not None:
                if "Event" not in message:
                    pending.on_response(message)
                    return
                if pending.on_event(message):
                    return
        if "Event" in message:
            self._dispatch(message)
        else:
            # A Response nobody waits for: its action timed out, or it was not ours.
            log.debug("AMI response without a pending action dropped: %r", message)

    def _dispatch(self, event: AmiMessage) -> None:
        self.stats.events += 1
        name = event["Event"]
        for subscriber in self._subscribers:
            names = subscriber.names
            if names is not None and name not in names:
                continue
            try:
                result = subscriber.callback(event)
            except Exception:
                self.stats.callback_errors += 1
                log.exception(
                    "AMI event callback %r failed on %s (Uniqueid %s)", subscriber.callback, name, event.get("Uniqueid")
                )
                continue
            if result is not None:
                self._maybe_spawn(result)

    def _maybe_spawn(self, result: object) -> None:
        if not inspect.isawaitable(result):
            return
        task = asyncio.ensure_future(result)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[object]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats.callback_errors += 1
            log.error("AMI async callback failed", exc_info=task.exception())
