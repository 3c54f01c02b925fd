"""Live subscriptions over websockets (protocol.md §7): ``/sub/<DSID>/job`` and
``/sub/<DSID>/jobs``.

A subscription's life:

1. Handshake, before the upgrade: the auth middleware has verified the token (401/403); here
   ``?after=`` is checked (400), the role and datasource (403/404, via the service), and the
   connection limits (503 process-wide, 429 per client). A resume from below the store's
   ``purged_through`` (retention deleted events after it) is refused with 400: ``after=0``
   replays everything still kept, ``after=<purged_through>`` resumes with nothing lost since.
2. The socket subscribes to its hub channel *first*, then (with ``?after=``) replays the log from
   the store in pages, then sends the buffered live events whose ``seq`` is above the last one
   sent: no gap and no duplicate even when writes land during the replay.
3. Live: a sender task per socket takes events from its bounded subscription and sends each with
   a timeout. The hub never awaits a socket. A subscription that overflows, or a send that times
   out, closes the socket with 4008 and a reason naming the last ``seq`` sent, so the client can
   resume with ``?after=`` and lose nothing.
4. The token's ``time <`` caveat closes the socket with 4001; shutdown closes every socket with
   1001; the peer closing (or missing heartbeats) ends both tasks.

The handler's own task reads incoming frames (which also answers pings and takes pongs); the
sender task is the only other task of a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from typing import Final

from aiohttp import WSCloseCode, WSMsgType, web

from jobqueue_store import codec, validation
from jobqueue_store.auth import Principal
from jobqueue_store.config import Limits
from jobqueue_store.errors import BadRequest, StoreError, TooMany, Unavailable
from jobqueue_store.hub import (
    Channel,
    Hub,
    Subscription,
    client_channel,
    datasource_channel,
    stream_channel,
)
from jobqueue_store.models import Event
from jobqueue_store.schedules import ScheduleEvent
from jobqueue_store.storage.base import Store
from jobqueue_store.web.keys import HUB, SERVICE, SETTINGS, STORE, SUBSCRIBERS, principal_of

__all__ = [
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOKEN_EXPIRED",
    "REPLAY_PAGE",
    "Subscribers",
    "client_subscription",
    "driver_subscription",
]

log = logging.getLogger("jobqueue_store.web.ws")

CLOSE_TOKEN_EXPIRED: Final = 4001
"""Close code sent when the token's ``time <`` caveat passes."""
CLOSE_SLOW_CONSUMER: Final = 4008
"""Close code sent to a subscriber that does not keep up; the reason names the last ``seq``."""
REPLAY_PAGE: Final = 500
"""Events read from the store per page of an ``?after=`` replay."""
MAX_AFTER: Final = 2**62
SHUTDOWN_REASON: Final = "server shutting down"
FRAME_HEADER_MAX: Final = 14
"""Bytes a websocket frame's header adds to its payload, at most."""


class _SlowConsumer(Exception):
    """The subscriber's queue overflowed or a send timed out."""


class _Socket:
    """One open subscription socket: its channel, what it was sent, and its sender task."""

    __slots__ = (
        "after",
        "channel",
        "client",
        "closing",
        "deadline",
        "driver",
        "dsid",
        "expiry",
        "hub",
        "last_sent",
        "limits",
        "sender",
        "store",
        "sub",
        "transport",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        hub: Hub,
        store: Store,
        limits: Limits,
        dsid: str,
        client: str | None,
        driver: bool,
        after: int | None,
        expires_at: float | None,
    ) -> None:
        self.ws = ws
        self.hub = hub
        self.store = store
        self.limits = limits
        self.dsid = dsid
        self.client = client
        self.driver = driver
        self.after = after
        self.channel: Channel
        if driver:
            self.channel = stream_channel(dsid)
        elif client is None:  # an admin: every client's notifications
            self.channel = datasource_channel(dsid)
        else:
            self.channel = client_channel(dsid, client)
        self.sub: Subscription | None = None
        self.sender: asyncio.Task[None] | None = None
        self.closing = False
        self.last_sent = 0
        """The ``seq`` of the last event written to the socket (or the start of the stream)."""
        self.deadline: float | None = None
        if expires_at is not None:
            loop = asyncio.get_running_loop()
            self.deadline = loop.time() + (expires_at - time.time())
        self.expiry: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        """The connection's transport once upgraded (its write buffer decides whether a send
        needs a timeout)."""

    # set-up -------------------------------------------------------------------------------------
    def subscribe(self) -> None:
        """Subscribe to the live channel; call before the upgrade and before any replay."""
        # Events up to hub.last_seq were published before this subscription: a client that
        # resumes from there (no ?after=) loses nothing the live stream would have carried.
        self.last_sent = self.after if self.after is not None else self.hub.last_seq
        self.sub = self.hub.subscribe(self.channel, maxsize=self.limits.ws_send_queue)

    def unsubscribe(self) -> None:
        """Stop receiving events."""
        if self.sub is not None:
            self.sub.close()

    # tasks --------------------------------------------------------------------------------------
    async def serve(self) -> None:
        """Run the sender task and read incoming frames until the socket closes."""
        self.sender = asyncio.create_task(self._send_loop())
        try:
            await self._read_loop()
        finally:
            sender = self.sender
            if not sender.done():
                if not self.closing:
                    sender.cancel()  # the peer went away: nothing left to send
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    async def _read_loop(self) -> None:
        ws = self.ws
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                try:
                    codec.loads(msg.data)
                except codec.JSONDecodeError:
                    await self._reply_error("A frame sent to the store must be JSON; it was not.")
            elif msg.type is WSMsgType.BINARY:
                await self._reply_error("The store accepts only text frames.")
            else:  # CLOSE, CLOSING, CLOSED, ERROR (1009 for a frame over the size limit)
                return

    async def _reply_error(self, message: str) -> None:
        # Incoming frames carry nothing the store acts on; a malformed one is answered, not fatal.
        frame = codec.dumps({"error": message, "code": "bad_request"})
        try:
            async with asyncio.timeout(self.limits.ws_send_timeout):
                await self.ws.send_frame(frame, WSMsgType.TEXT)
        except (TimeoutError, ConnectionError):
            pass

    async def _send_loop(self) -> None:
        try:
            code, reason = await self._pump()
        except _SlowConsumer:
            code = CLOSE_SLOW_CONSUMER
            reason = f"slow consumer; resume with after={self.last_sent}"
        except ConnectionError:
            return  # the peer is gone; the reader sees it too
        except StoreError as exc:
            log.warning("websocket replay on %s failed: %s", self.dsid, exc.message)
            code = WSCloseCode.TRY_AGAIN_LATER
            reason = f"store unavailable; resume with after={self.last_sent}"
        except Exception:
            log.exception("websocket sender on %s failed", self.dsid)
            code = WSCloseCode.INTERNAL_ERROR
            reason = f"internal error; resume with after={self.last_sent}"
        await self.close(code, reason)

    async def _pump(self) -> tuple[int, str]:
        """Replay then live; return the close code and reason when the socket must close."""
        # One timer for the token's expiry wakes the sender; a timeout around each wait would
        # start and cancel a timer for every event sent.
        if self.deadline is not None:
            self._arm_expiry()
        try:
            if self.after is not None:
                await self._replay()
            while True:
                if self.expired:
                    return CLOSE_TOKEN_EXPIRED, "token expired"
                sub = self.sub
                assert sub is not None
                await sub.wait()
                if sub.overflowed:
                    raise _SlowConsumer
                for event in sub.drain():
                    if event.seq > self.last_sent:
                        await self._send(event)
        finally:
            if self.expiry is not None:
                self.expiry.cancel()
                self.expiry = None

    @property
    def expired(self) -> bool:
        """The token's deadline has passed."""
        deadline = self.deadline
        return deadline is not None and asyncio.get_running_loop().time() >= deadline

    def _arm_expiry(self) -> None:
        assert self.deadline is not None
        self.expiry = asyncio.get_running_loop().call_at(self.deadline, self._on_expiry)

    def _on_expiry(self) -> None:
        self.expiry = None
        if not self.expired:
            self._arm_expiry()  # a timer may fire up to the clock's resolution early
        elif self.sub is not None:
            self.sub.wake()

    async def _replay(self) -> None:
        while True:
            # Everything up to the hub's last seq is committed: read before the log, it bounds
            # the schedule events merged into a short page (later ones arrive live).
            published = self.hub.last_seq
            if self.driver:
                # The request stream's entries as the store holds them: nothing is decoded.
                entries = await self.store.entries_since_wire(
                    self.dsid, 0, after_seq=self.last_sent, limit=REPLAY_PAGE
                )
                for seq, text in entries:
                    await self._send_frame(seq, text)
                count = len(entries)
            else:
                page: list[Event | ScheduleEvent] = list(
                    await self.store.events_after(
                        self.dsid, self.last_sent, client=self.client, limit=REPLAY_PAGE
                    )
                )
                page = await self._with_schedule_events(page, published)
                for event in page:
                    await self._send(event)
                count = len(page)
            if count >= REPLAY_PAGE:
                continue
            sub = self.sub
            assert sub is not None
            if not sub.overflowed:
                return
            # Live events piled up during a long replay: not the client's fault. Subscribe
            # afresh, then read the log again from the last event sent.
            sub.close()
            self.sub = self.hub.subscribe(self.channel, maxsize=self.limits.ws_send_queue)

    async def _with_schedule_events(
        self, page: list[Event | ScheduleEvent], published: int
    ) -> list[Event | ScheduleEvent]:
        """Merge the client's schedule events into a replay page, by ``seq``: those up to the
        page's last event (a full page), or up to the last published seq (a short one)."""
        full = len(page) == REPLAY_PAGE
        upto = page[-1].seq if full else max(published, page[-1].seq if page else 0)
        extra = await self.store.schedule_events_after(
            self.dsid, self.client, self.last_sent, upto, limit=REPLAY_PAGE
        )
        if not extra:
            return page
        if len(extra) == REPLAY_PAGE:
            # Too many to merge at once: stop this page at the last schedule event read.
            upto = extra[-1].seq
            page = [e for e in page if e.seq <= upto]
        merged = sorted([*page, *extra], key=lambda e: e.seq)
        return merged[:REPLAY_PAGE] if not full else merged

    async def _send(self, event: Event | ScheduleEvent) -> None:
        if isinstance(event, ScheduleEvent):
            frame = codec.dumps(event.notification())
        else:
            frame = codec.dumps(event.stream_entry()) if self.driver else event.notification_bytes()
        await self._send_frame(event.seq, frame)

    async def _send_frame(self, seq: int, frame: bytes) -> None:
        if self._sends_at_once(len(frame)):
            await self.ws.send_frame(frame, WSMsgType.TEXT)  # no timer: it cannot wait
        else:
            try:
                async with asyncio.timeout(self.limits.ws_send_timeout):
                    await self.ws.send_frame(frame, WSMsgType.TEXT)
            except TimeoutError:
                # Without compression aiohttp writes the frame to the transport before waiting
                # for it to drain, so a frame whose send timed out is still delivered first.
                self.last_sent = seq
                raise _SlowConsumer from None
        self.last_sent = seq

    def _sends_at_once(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes goes out without waiting for the peer: nothing is
        waiting to be written and the frame is under the transport's high-water mark, so
        writing it cannot pause the connection (the usual case, once per event)."""
        transport = self.transport
        return (
            transport is not None
            and not transport.get_write_buffer_size()
            and size < transport.get_write_buffer_limits()[1] - FRAME_HEADER_MAX
        )

    # closing ------------------------------------------------------------------------------------
    async def close(self, code: int, reason: str) -> None:
        """Close the socket with ``code`` and ``reason`` (under 123 bytes), at most once."""
        if self.closing:
            return
        self.closing = True
        try:
            async with asyncio.timeout(self.limits.ws_send_timeout):
                await self.ws.close(code=code, message=reason.encode())
        except TimeoutError:
            # aiohttp closes the transport, which still flushes the close frame to a peer that
            # reads later (a slow consumer sees 4008 after the frames it was sent).
            pass

    async def shutdown(self, code: int, reason: str) -> None:
        """Stop sending and close the socket (from another task)."""
        sender = self.sender
        if sender is not None and not sender.done() and not self.closing:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        await self.close(code, reason)


class Subscribers:
    """The registry of open subscription sockets of this process, and its connection limits."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._sockets: set[_Socket] = set()
        self._per_client: Counter[str] = Counter()
        self.closing = False

    def __len__(self) -> int:
        return len(self._sockets)

    def admit(self, sock: _Socket) -> None:
        """Register ``sock``, or raise ``Unavailable`` / ``TooMany`` over a limit."""
        if self.closing:
            raise Unavailable("The store is shutting down; reconnect to another instance.")
        if len(self._sockets) >= self.limits.max_connections:
            raise Unavailable(
                f"This store process has {len(self._sockets)} open websockets, its limit; "
                "retry later."
            )
        per_client = self.limits.max_ws_per_client
        if sock.client is not None and per_client and self._per_client[sock.client] >= per_client:
            raise TooMany(
                f"Client '{sock.client}' already has {per_client} open websockets, the limit "
                "per client; close one first."
            )
        self._sockets.add(sock)
        if sock.client is not None:
            self._per_client[sock.client] += 1

    def discard(self, sock: _Socket) -> None:
        """Forget ``sock`` (closed)."""
        if sock not in self._sockets:
            return
        self._sockets.discard(sock)
        if sock.client is not None:
            self._per_client[sock.client] -= 1
            if self._per_client[sock.client] <= 0:
                del self._per_client[sock.client]

    async def close_all(
        self, code: int = WSCloseCode.GOING_AWAY, reason: str = SHUTDOWN_REASON
    ) -> None:
        """Refuse new sockets and close every open one (shutdown: 1001)."""
        self.closing = True
        socks = [s for s in self._sockets if s.ws.prepared]
        if socks:
            await asyncio.gather(*(s.shutdown(code, reason) for s in socks))


def _after(request: web.Request) -> int | None:
    raw = request.query.get("after")
    if raw is None:
        return None
    return validation.integer(raw, "after", default=0, minimum=0, maximum=MAX_AFTER)


async def _check_not_purged(app: web.Application, after: int) -> None:
    """Refuse (400) a resume after ``after`` if retention deleted events with a larger ``seq``."""
    purged = await app[STORE].purged_through()
    if after >= purged:
        return
    days = app[SETTINGS].retention_days
    older = f"older than {days:g} days" if days > 0 else "past the retention period"
    raise BadRequest(
        f"Events up to seq {purged} were purged by retention (terminal jobs {older}); resume "
        f"with after={purged} or later, or after=0 to replay everything still kept."
    )


async def _subscription(request: web.Request, *, driver: bool) -> web.StreamResponse:
    app = request.app
    principal: Principal = principal_of(request)
    dsid = request.match_info["dsid"]
    await app[SERVICE].authorize_subscription(principal, dsid, driver=driver)
    after = _after(request)
    if after:
        await _check_not_purged(app, after)
    limits = app[SETTINGS].limits
    ws = web.WebSocketResponse(
        # Each socket's own interval (+-20%): sockets opened together would otherwise ping
        # together, every interval, in one burst on the loop.
        heartbeat=limits.ws_heartbeat * random.uniform(0.8, 1.2),
        max_msg_size=limits.max_ws_message,
        timeout=limits.ws_send_timeout,
        # Notifications are small; a deflate context per socket would cost far more memory.
        compress=False,
    )
    if not ws.can_prepare(request).ok:
        raise BadRequest("This endpoint is a websocket: connect with 'Upgrade: websocket'.")
    sock = _Socket(
        ws,
        hub=app[HUB],
        store=app[STORE],
        limits=limits,
        dsid=dsid,
        client=principal.client if not driver else None,
        driver=driver,
        after=after,
        expires_at=principal.expires_at,
    )
    subscribers = app[SUBSCRIBERS]
    subscribers.admit(sock)
    try:
        sock.subscribe()
        await ws.prepare(request)
        sock.transport = request.transport
        if subscribers.closing:  # shutdown began during the upgrade
            await sock.close(WSCloseCode.GOING_AWAY, SHUTDOWN_REASON)
        else:
            await sock.serve()
    finally:
        sock.unsubscribe()
        subscribers.discard(sock)
    return ws


async def client_subscription(request: web.Request) -> web.StreamResponse:
    """``GET /sub/<DSID>/job``: the caller's own jobs' notifications, live (protocol.md §5)."""
    return await _subscription(request, driver=False)


async def driver_subscription(request: web.Request) -> web.StreamResponse:
    """``GET /sub/<DSID>/jobs``: the datasource's request stream, live (protocol.md §6)."""
    return await _subscription(request, driver=True)
