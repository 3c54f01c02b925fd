"""In-process pub/sub: committed events fanned out to subscribers' bounded queues.

The store hands every committed event to :meth:`Hub.publish`, in ``seq`` order. Each event goes
to the job's channel (``?wait=`` long-polls), its client's on its datasource (client
subscriptions), the datasource's (an admin's client subscription) and, for request-stream
entries, the datasource's stream (driver subscriptions).
Publishing never awaits: each subscriber has its own bounded queue; one that is full is marked
overflowed and receives nothing more, so a slow subscriber cannot stall the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Sequence

from jobqueue_store.models import Event
from jobqueue_store.schedules import ScheduleEvent

Channel = tuple[str, ...]


def job_channel(dsid: str, job: str) -> Channel:
    """Changes of one job."""
    return ("job", dsid, job)


def client_channel(dsid: str, client: str) -> Channel:
    """Changes of one client's jobs on one datasource."""
    return ("client", dsid, client)


def datasource_channel(dsid: str) -> Channel:
    """Changes of every client's jobs on one datasource (an admin's view)."""
    return ("datasource", dsid)


def stream_channel(dsid: str) -> Channel:
    """The request stream of one datasource."""
    return ("stream", dsid)


class Subscription:
    """A subscriber's bounded queue of events on one channel."""

    __slots__ = ("_hub", "_items", "_maxsize", "_waiter", "channel", "last_seq", "overflowed")

    def __init__(self, hub: Hub, channel: Channel, maxsize: int) -> None:
        self._hub = hub
        self.channel = channel
        self._maxsize = maxsize
        self._items: deque[Event | ScheduleEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.last_seq = 0
        """The ``seq`` of the last event taken with :meth:`get` or :meth:`drain`."""

    def offer(self, event: Event | ScheduleEvent) -> None:
        """Queue ``event``; mark the subscription overflowed when the queue is full."""
        if self.overflowed:
            return
        if len(self._items) >= self._maxsize:
            self.overflowed = True
            self._items.clear()
        else:
            self._items.append(event)
        self.wake()

    def wake(self) -> None:
        """End a :meth:`wait` now (an event came, or its caller has something else to check)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def drain(self) -> list[Event | ScheduleEvent]:
        """Take every queued event now."""
        items = list(self._items)
        self._items.clear()
        if items:
            self.last_seq = items[-1].seq
        return items

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until an event is queued or the subscription overflowed; False on timeout."""
        if self._items or self.overflowed:
            return True
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:  # no timer to start and cancel on every wait
                await self._waiter
                return True
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(timeout):
                await self._waiter
        except TimeoutError:
            return False
        finally:
            self._waiter = None
        return True

    def close(self) -> None:
        """Stop receiving events."""
        self._hub._remove(self)
        self.wake()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hub:
    """Routes committed events to subscriptions, by channel."""

    def __init__(self) -> None:
        self._channels: dict[Channel, set[Subscription]] = {}
        self.last_seq = 0
        """The largest ``seq`` published so far."""
        self.published = 0

    def subscribe(self, channel: Channel, maxsize: int = 1024) -> Subscription:
        """Subscribe to ``channel``; events published from now on are queued."""
        sub = Subscription(self, channel, maxsize)
        self._channels.setdefault(channel, set()).add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        subs = self._channels.get(sub.channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._channels[sub.channel]

    @property
    def subscriber_count(self) -> int:
        """Open subscriptions, all channels."""
        return sum(len(s) for s in self._channels.values())

    def publish(self, events: Sequence[Event | ScheduleEvent]) -> None:
        """Fan committed ``events`` (in ``seq`` order) out to their channels' subscribers."""
        channels = self._channels
        for event in events:
            if event.seq <= self.last_seq:
                continue  # already published (a store may hand over an event twice)
            self.last_seq = event.seq
            self.published += 1
            if not channels:
                continue
            for channel in _channels_of(event):
                subs = channels.get(channel)
                if subs:
                    for sub in tuple(subs):
                        sub.offer(event)


def _channels_of(event: Event | ScheduleEvent) -> Iterable[Channel]:
    if isinstance(event, Event):  # a schedule event goes to its client's channels only
        yield job_channel(event.datasource_id, event.job)
    yield client_channel(event.datasource_id, event.client)
    yield datasource_channel(event.datasource_id)
    if event.in_request_stream:
        yield stream_channel(event.datasource_id)
