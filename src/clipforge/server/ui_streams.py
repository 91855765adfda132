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

The server holds `total`. When they are all taken, a newcomer is not refused while another address holds at
least two more than it: that address's oldest stream is closed (its heartbeat ends, as when the server
restarts; a page's gradio client opens it again) and the newcomer takes the place. A fixed server-wide cap let 63
addresses (an IPv6 customer's /56 holds 256 of the /64s counted as addresses) of 32 idle heartbeats each take
all 2,000 places for as long as they kept the sockets, and every other browser's heartbeat and `queue/data` got
429: its searches never returned. Now such a crowd keeps at most an even share; a newcomer is refused only when
no address holds two more than it (every address near the same count: thousands of them).
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.routing import get_route_path

from clipforge.server.middleware import ASGIApp, Message, Receive, Scope, Send, client_host, send_json

__all__ = ["STREAM_ROUTES", "OpenStreams", "StreamLimitMiddleware"]

STREAM_ROUTES = ("/gradio_api/heartbeat/", "/gradio_api/queue/data")
"""Routes whose answers stay open until the client leaves (or its events end)."""


class _Stream:
    """One open stream: its address, and the event that closes it to make room (`OpenStreams.admit`)."""

    __slots__ = ("host", "evicted")

    def __init__(self, host: str) -> None:
        self.host = host
        self.evicted = asyncio.Event()


class OpenStreams:
    """The open `STREAM_ROUTES` answers, per client address, oldest first, against two caps (module docstring).

    Changed only on the event loop, between awaits, so it needs no lock.
    """

    def __init__(self, per_host: int, total: int) -> None:
        self.per_host = per_host
        self.total = total
        self._open: dict[str, list[_Stream]] = {}

    def count(self) -> int:
        """Streams open now, all addresses together."""
        return sum(len(streams) for streams in self._open.values())

    def admit(self, host: str) -> _Stream | str:
        """A place for one more stream of `host` (the `_Stream` to give back with `closed`), or why not: its
        address holds `per_host` already, or the server is full and no address holds two more than `host`. A full
        server closes the oldest stream of the address holding the most to make the place."""
        mine = len(self._open.get(host, ()))
        if mine >= self.per_host:
            return (f"your address has {self.per_host} open streams of this page already "
                    f"(each open tab holds one or two); close some tabs")
        if self.count() >= self.total:
            most = max(self._open, key=lambda address: len(self._open[address]))
            if len(self._open[most]) < mine + 2:
                return f"this server has {self.total} open streams already; try again later"
            self._drop(self._open[most][0]).evicted.set()
        return self.opened(host)

    def opened(self, host: str) -> _Stream:
        """Count one more stream of `host` (`admit` checks the caps first)."""
        stream = _Stream(host)
        self._open.setdefault(host, []).append(stream)
        return stream

    def closed(self, stream: _Stream) -> None:
        """Give `stream`'s place back (nothing when it was closed to make room: its place is taken already)."""
        if stream in self._open.get(stream.host, ()):
            self._drop(stream)

    def _drop(self, stream: _Stream) -> _Stream:
        streams = self._open[stream.host]
        streams.remove(stream)
        if not streams:
            del self._open[stream.host]
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
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                ended = True
            await send(message)

        answer = asyncio.ensure_future(self.app(scope, receive, tracking_send))
        evicted = asyncio.ensure_future(stream.evicted.wait())
        try:
            await asyncio.wait({answer, evicted}, return_when=asyncio.FIRST_COMPLETED)
            if not answer.done():  # closed to make room: the stream's task stops, its answer ends
                answer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answer
                if started and not ended:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                elif not started:
                    await send_json(send, 503, "server_busy", "this stream was closed to make room; open it again")
                return
            answer.result()
        finally:
            evicted.cancel()
            if not answer.done():  # this request itself was cancelled (the server stopping)
                answer.cancel()
            self.streams.closed(stream)
