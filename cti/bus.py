"""In-process async event bus: the tracker publishes domain events, subscribers consume them at their pace.

Why not call subscribers directly: the tracker runs inline on the AMI reader, so any subscriber that
waits (a DB write, a WebSocket send, a CRM lookup for the screen pop) would stall the reading of
AMI events and with it every agent's screen. Each subscriber therefore gets its own bounded
``asyncio.Queue`` and worker task; :meth:`EventBus.publish` only enqueues and never waits.

What happens when a subscriber's queue is full is its own choice (``overflow``):

* ``"drop_new"`` (default) / ``"drop_old"``: the newest / oldest queued event is dropped, counted and
  logged (first drop, then every power of two). Right for views that are refreshed anyway (panel
  push, wallboard).
* ``"block"``: nothing is ever dropped. ``publish`` still does not wait (the tracker must not stall);
  the event goes to the subscriber's backlog, in order, and the worker drains it as it catches up.
  Producers that can afford to wait use ``await publish_wait(event)``, which returns only when every
  ``block`` subscriber has room: real back-pressure. Right for the call-log writer and callbacks,
  where a lost CallEnded is a lost call record.

The exception: a synchronous handler that never waits and costs a fraction of a millisecond may be
subscribed ``inline`` (`InlineSubscription`): it runs inside ``publish``. The screen pop is one, so a
ring pops before the rest of its AMI read is handled rather than after.

A handler's exception is logged with the event and counted; the worker carries on with the next
event. :meth:`EventBus.close` stops accepting events and lets every worker drain what it has.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

from cti.calls.events import DomainEvent

__all__ = ["EventBus", "InlineSubscription", "Overflow", "Subscription", "SubscriptionStats"]

log = logging.getLogger(__name__)

E = TypeVar("E", bound=DomainEvent)
Overflow = Literal["drop_new", "drop_old", "block"]

_DEFAULT_MAXSIZE: Final = 1000


class _Stop:
    """Queue sentinel: the worker ends after everything queued before it."""


_STOP: Final = _Stop()


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    name: str
    queued: int
    backlog: int
    handled: int
    failed: int
    dropped: int


class Subscription:
    """One subscriber: its queue, worker task and counters. Created by :meth:`EventBus.subscribe`."""

    def __init__(
        self,
        name: str,
        handler: Callable[[DomainEvent], Awaitable[object] | object],
        event_types: tuple[type[DomainEvent], ...] | None,
        maxsize: int,
        overflow: Overflow,
    ) -> None:
        self.name = name
        self.event_types = event_types
        self.overflow: Overflow = overflow
        self._handler = handler
        self._queue: asyncio.Queue[DomainEvent | _Stop] = asyncio.Queue(maxsize)
        self._backlog: deque[DomainEvent | _Stop] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self.handled = 0
        self.failed = 0
        self.dropped = 0
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"bus:{name}")

    @property
    def stats(self) -> SubscriptionStats:
        return SubscriptionStats(
            name=self.name,
            queued=self._queue.qsize(),
            backlog=len(self._backlog),
            handled=self.handled,
            failed=self.failed,
            dropped=self.dropped,
        )

    @property
    def done(self) -> bool:
        return self._task.done()

    def wants(self, event_type: type[DomainEvent]) -> bool:
        return self.event_types is None or issubclass(event_type, self.event_types)

    def offer(self, event: DomainEvent) -> None:
        """Enqueue without waiting, applying the overflow policy."""
        if self._stopping:
            return
        queue = self._queue
        if self.overflow == "block":
            if self._backlog or queue.full():
                self._backlog.append(event)  # order is kept: the backlog empties before new events
                self._room.clear()
            else:
                queue.put_nowait(event)
            return
        if not queue.full():
            queue.put_nowait(event)
            return
        if self.overflow == "drop_old":
            dropped = queue.get_nowait()
            queue.put_nowait(event)
        else:
            dropped = event
        self.dropped += 1
        if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8...: a flood does not flood the log
            log.warning(
                "event bus: subscriber %s is %d events behind; dropped %d so far (last: %r)",
                self.name,
                queue.qsize(),
                self.dropped,
                dropped,
            )

    async def wait_for_room(self) -> None:
        """Until a ``block`` subscriber can take an event without a backlog."""
        while (self._backlog or self._queue.full()) and not self._task.done():
            self._room.clear()
            await self._room.wait()

    async def stop(self, grace: float | None) -> None:
        """Handle everything queued so far, then end the worker; after ``grace`` seconds (None: no
        limit) a worker still busy is cancelled and what it had left is logged as lost."""
        if not self._stopping:
            self._stopping = True
            if self._backlog or self._queue.full():
                self._backlog.append(_STOP)
            else:
                self._queue.put_nowait(_STOP)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            log.warning(
                "event bus: subscriber %s did not drain within %ss; %d events left unhandled",
                self.name,
                grace,
                self._queue.qsize() + len(self._backlog),
            )
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        queue = self._queue
        backlog = self._backlog
        while True:
            item = await queue.get()
            while backlog and not queue.full():
                queue.put_nowait(backlog.popleft())
            if not backlog and not queue.full():
                self._room.set()
            if isinstance(item, _Stop):
                return
            try:
                result = self._handler(item)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failed += 1
                log.exception("event bus: subscriber %s failed on %r", self.name, item)
            else:
                self.handled += 1


class InlineSubscription(Subscription):
    """A subscriber called inside ``publish``, for a synchronous handler that never waits and takes a
    fraction of a millisecond: the screen pop, whose ring must not queue behind the rest of an AMI
    read and the other subscribers' turns (under cti_load a queued pop came 7 ms after its ring at
    the median, an inline one 0.1 ms). A handler
    that would have to wait starts a task of its own. Its exceptions are logged and counted as a
    worker's are; events it publishes reach the subscribers after it in the route before the event
    it handles does. No queue and no worker task, so the queue-related parts of the base stay unused.
    """

    def __init__(
        self,
        name: str,
        handler: Callable[[DomainEvent], object],
        event_types: tuple[type[DomainEvent], ...] | None,
    ) -> None:
        self.name = name
        self.event_types = event_types
        self.overflow = "drop_new"  # never applies: nothing is queued
        self._handler = handler
        self.handled = 0
        self.failed = 0
        self.dropped = 0
        self._stopping = False

    @property
    def stats(self) -> SubscriptionStats:
        return SubscriptionStats(self.name, 0, 0, self.handled, self.failed, self.dropped)

    @property
    def done(self) -> bool:
        return self._stopping

    def offer(self, event: DomainEvent) -> None:
        if self._stopping:
            return
        try:
            self._handler(event)
        except Exception:
            self.failed += 1
            log.exception("event bus: subscriber %s failed on %r", self.name, event)
        else:
            self.handled += 1

    async def wait_for_room(self) -> None:
        return

    async def stop(self, grace: float | None) -> None:
        self._stopping = True


class EventBus:
    """Fan-out of domain events to subscribers, each with its own bounded queue and worker task.

    Create it and subscribe inside a running event loop (workers are tasks). ``publish`` is safe to
    call from synchronous code on the loop's thread, such as the AMI reader's callback.
    """

    def __init__(self, *, default_maxsize: int = _DEFAULT_MAXSIZE) -> None:
        self._default_maxsize = default_maxsize
        self._subscriptions: list[Subscription] = []
        self._routes: dict[type[DomainEvent], tuple[Subscription, ...]] = {}
        self._closed = False

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions)

    def subscribe(
        self,
        handler: Callable[[E], Awaitable[object] | object],
        event_types: Iterable[type[E]] | None = None,
        *,
        name: str | None = None,
        maxsize: int | None = None,
        overflow: Overflow = "drop_new",
        inline: bool = False,
    ) -> Subscription:
        """Call ``handler(event)`` (sync or async) for each published event of ``event_types`` (and
        their subclasses; all events when None), in publish order, from a dedicated worker task; with
        ``inline``, a synchronous handler, inside ``publish`` (see `InlineSubscription`)."""
        if self._closed:
            raise RuntimeError("event bus is closed")
        types = tuple(event_types) if event_types is not None else None
        label = name or getattr(handler, "__qualname__", None) or repr(handler)
        subscription: Subscription
        if inline:
            if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__):
                raise ValueError(f"{label}: an inline subscriber must be synchronous")
            # The handler only ever receives events of ``types`` (checked in ``wants``), so widening
            # its parameter type to DomainEvent here is sound (also below).
            subscription = InlineSubscription(label, handler, types)  # type: ignore[arg-type]
        else:
            size = self._default_maxsize if maxsize is None else maxsize
            if size <= 0:
                raise ValueError("maxsize must be positive: an unbounded queue hides a stuck subscriber")
            subscription = Subscription(label, handler, types, size, overflow)  # type: ignore[arg-type]
        self._subscriptions.append(subscription)
        self._routes.clear()
        return subscription

    async def unsubscribe(self, subscription: Subscription, *, grace: float | None = 10.0) -> None:
        """Stop delivering to ``subscription`` and let it finish what it has queued."""
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            self._routes.clear()
        await subscription.stop(grace)

    def publish(self, event: DomainEvent) -> None:
        """Hand ``event`` to every interested subscriber without waiting (see the module docstring)."""
        if self._closed:
            log.warning("event bus closed: %r not delivered", event)
            return
        event_type = type(event)
        route = self._routes.get(event_type)
        if route is None:
            route = self._routes[event_type] = tuple(s for s in self._subscriptions if s.wants(event_type))
        for subscription in route:
            subscription.offer(event)

    def publish_all(self, events: Iterable[DomainEvent]) -> None:
        """``publish`` each event in order (the tracker returns a list per AMI event)."""
        for event in events:
            self.publish(event)

    async def publish_wait(self, event: DomainEvent) -> None:
        """``publish``, first waiting until every ``block`` subscriber of this event has room."""
        for subscription in self._subscriptions:
            if subscription.overflow == "block" and subscription.wants(type(event)):
                await subscription.wait_for_room()
        self.publish(event)

    def stats(self) -> list[SubscriptionStats]:
        return [s.stats for s in self._subscriptions]

    async def close(self, *, grace: float | None = 10.0) -> None:
        """Refuse new events, let every subscriber drain its queue and backlog, end the workers
        (each is cancelled if still busy after ``grace`` seconds)."""
        self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, []
        self._routes.clear()
        await asyncio.gather(*(s.stop(grace) for s in subscriptions))
