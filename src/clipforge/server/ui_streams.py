"""How many of gradio's long-lived streams one address, and the whole server, may hold open.

A gradio page keeps a heartbeat stream open for as long as its tab is open
(`/gradio_api/heartbeat/<session>`) and a `queue/data` stream while its events run; each is an
open socket and a task on the event loop for as long as the client keeps it, and a client may
name any session it likes. Nothing else a client sends lives that long (headers, bodies and
idle connections are timed out by `runner` and `middleware`), so these streams were the way to
hold the server's file descriptors: one address opening them by the thousand would leave nobody
able to connect. A browser tab needs two; an address may hold `per_host`, and one more is answered 429 at once.
A stream gives its place back when it ends or its client goes away (starlette ends a streaming answer on the
client's disconnect).

The server holds `total`. When they are all taken, a newcomer is not refused while another holder holds at
least two more than it (a tab holds two: a crowd of three a holder gives a newcomer both): the oldest stream of the holder
with the most (the newest such holder among equals) is closed once the newcomer's stream is answered 200 (a
request the guard then refuses closes nothing), and ends as a finished stream. A holder is an address, an IPv6
one by its /48 (a customer's allocation: its 65,536 /64s are each an address to the per-address cap). A fixed
server-wide cap let 63 addresses of 32 idle heartbeats each (an IPv6 customer's /56 holds 256 /64s) take all
2,000 places for as long as they kept the sockets, and every other browser's heartbeat and `queue/data` got 429:
its searches never returned. A crowd of addresses each holding as much as a newcomer needs (thousands of distinct
IPv4 addresses) is volume, which no cap here answers (docs/security.md, "Not covered"). gradio takes a closed
heartbeat for a closed tab (its session's pending events end); the page's client opens it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools

from starlette.routing import get_route_path

from clipforge.server.middleware import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    client_host,
    send_json,
)
from clipforge.server.request_time import cut_by_stop

__all__ = ["STREAM_ROUTES", "OpenStreams", "StreamLimitMiddleware", "holder_of"]

STREAM_ROUTES = ("/gradio_api/heartbeat/", "/gradio_api/queue/data")
"""Routes whose answers stay open until the client leaves (or its events end)."""


def holder_of(host: str) -> str:
    """Who a stream belongs to for the server's fair share: the address (`fair.address_key`), an IPv6 /64 widened
    to its /48."""
    if ":" in host and host.endswith("/64"):
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_network(host).supernet(new_prefix=48))
    return host


class _Stream:
    """One open stream: its address and holder, when it was admitted, whether its answer must make room (the
    server was full when it came), and the event that closes it to make room for another."""

    __slots__ = ("evicted", "holder", "host", "order", "room")

    def __init__(self, host: str, order: int) -> None:
        self.host, self.holder, self.order = host, holder_of(host), order
        self.room = False
        self.evicted = asyncio.Event()


class OpenStreams:
    """The open `STREAM_ROUTES` answers, per client address and per holder, oldest first, against two caps (module
    docstring). Changed only on the event loop, between awaits, so it needs no lock."""

    def __init__(self, per_host: int, total: int) -> None:
        self.per_host = per_host
        self.total = total
        self._open: dict[str, list[_Stream]] = {}  # address -> its streams
        self._held: dict[str, list[_Stream]] = {}  # holder -> its streams
        self._order = itertools.count()

    def count(self) -> int:
        """Streams open now, all addresses together."""
        return sum(len(streams) for streams in self._open.values())

    def admit(self, host: str) -> _Stream | str:
        """A place for one more stream of `host` (the `_Stream` to give back with `closed`; when the server is full
        it is marked to make room once answered: `make_room`), or why not: its address holds `per_host` already,
        or the server is full and no holder may give a place to it (module docstring)."""
        if len(self._open.get(host, ())) >= self.per_host:
            return (f"your address has {self.per_host} open streams of this page already "
                    f"(each open tab holds one or two); close some tabs")
        full = self.count() >= self.total
        if full and self._victim(holder_of(host), len(self._held.get(holder_of(host), ()))) is None:
            return f"this server has {self.total} open streams already; try again later"
        stream = self.opened(host)
        stream.room = full
        return stream

    def make_room(self, stream: _Stream) -> None:
        """Close the oldest stream of the holder with the most, for `stream`, answered now on a full server."""
        stream.room = False
        if self.count() > self.total:
            victim = self._victim(stream.holder, len(self._held[stream.holder]) - 1)
            if victim is not None:
                self._drop(self._held[victim][0]).evicted.set()

    def _victim(self, holder: str, mine: int) -> str | None:
        """The holder a newcomer of `holder` (holding `mine`) takes a place from, or None."""
        others = [(len(streams), streams[-1].order, name) for name, streams in self._held.items() if name != holder]
        if not others:
            return None
        most, _, name = max(others)  # the most streams; among equals the newest holder
        return name if most >= mine + 2 else None

    def opened(self, host: str) -> _Stream:
        """Count one more stream of `host` (`admit` checks the caps first)."""
        stream = _Stream(host, next(self._order))
        self._open.setdefault(host, []).append(stream)
        self._held.setdefault(stream.holder, []).append(stream)
        return stream

    def closed(self, stream: _Stream) -> None:
        """Give `stream`'s place back (nothing when it was closed to make room: its place is taken already)."""
        if stream in self._open.get(stream.host, ()):
            self._drop(stream)

    def _drop(self, stream: _Stream) -> _Stream:
        for table, key in ((self._open, stream.host), (self._held, stream.holder)):
            table[key].remove(stream)
            if not table[key]:
                del table[key]
        return stream


class StreamLimitMiddleware:
    """Answers 429 to a stream `streams` refuses; counts the others while they are open, and ends one that
    `streams` closes to make room (its answer ends as a finished stream: the socket serves the next request)."""

    def __init__(self, app: ASGIApp, streams: OpenStreams) -> None:
        self.app = app
        self.streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not get_route_path(scope).startswith(STREAM_ROUTES):
            await self.app(scope, receive, send)
            return
        stream = self.streams.admit(client_host(scope))
        if isinstance(stream, str):
            await send_json(send, 429, "too_many_requests", stream)
            return
        started = ended = False

        async def tracking_send(message: Message) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = True
                if stream.room and message.get("status") == 200:  # a stream indeed: its place is made now
                    self.streams.make_room(stream)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                ended = True
            await send(message)

        answer = asyncio.ensure_future(self.app(scope, receive, tracking_send))
        evicted = asyncio.ensure_future(stream.evicted.wait())
        try:
            await asyncio.wait({answer, evicted}, return_when=asyncio.FIRST_COMPLETED)
            if not answer.done():  # closed to make room: the stream's task stops, its answer ends
                answer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):  # how it ended is nobody's now
                    await answer
                if started and not ended:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                elif not started:
                    await send_json(send, 503, "server_busy", "this stream was closed to make room; open it again")
                return
            answer.result()
        except asyncio.CancelledError as exc:
            # the server stopping (uvicorn cancels what runs 5 s after SIGTERM/SIGINT): uvicorn logged "Exception in
            # ASGI application" and a 40-line traceback for every open tab at every stop. The stream itself runs in
            # `answer`, its own task, cancelled below. Any other cancellation goes on (`cut_by_stop`).
            if not cut_by_stop(exc):
                raise
            return
        finally:
            evicted.cancel()
            if not answer.done():  # this request itself was cancelled (its client gone, the server stopping)
                answer.cancel()  # what the stream's task raises then (a send to a closed client) is retrieved:
                answer.add_done_callback(_retrieved)  # asyncio logged "Task exception was never retrieved"
            self.streams.closed(stream)


def _retrieved(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
