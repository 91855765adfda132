"""How many of gradio's long-lived streams one address, and the whole server, may hold open.

A gradio page keeps a heartbeat stream open for as long as its tab is open
(`/gradio_api/heartbeat/<session>`) and a `queue/data` stream while its events run; each is an
open socket and a task on the event loop for as long as the client keeps it, and a client may
name any session it likes. Nothing else a client sends lives that long (headers, bodies and
idle connections are timed out by `runner` and `middleware`), so these streams were the way to
hold the server's file descriptors: one address opening them by the thousand would leave nobody
able to connect. A browser tab needs two; an address may hold `per_host`, the server `total`,
and one more is answered 429 at once. A stream gives its place back when it ends or its client
goes away (starlette ends a streaming answer on the client's disconnect).
"""

from __future__ import annotations

from collections import Counter

from starlette.routing import get_route_path

from clipforge.server.middleware import ASGIApp, Receive, Scope, Send, client_host, send_json

__all__ = ["STREAM_ROUTES", "OpenStreams", "StreamLimitMiddleware"]

STREAM_ROUTES = ("/gradio_api/heartbeat/", "/gradio_api/queue/data")
"""Routes whose answers stay open until the client leaves (or its events end)."""


class OpenStreams:
    """The open `STREAM_ROUTES` answers, per client address, against two caps.

    Changed only on the event loop, between awaits, so it needs no lock.
    """

    def __init__(self, per_host: int, total: int) -> None:
        self.per_host = per_host
        self.total = total
        self._open: Counter[str] = Counter()

    def count(self) -> int:
        """Streams open now, all addresses together."""
        return sum(self._open.values())

    def refusal(self, host: str) -> str | None:
        """Why `host` may not open one more stream now, or None (then `opened` must follow)."""
        if self._open[host] >= self.per_host:
            return (f"your address has {self.per_host} open streams of this page already "
                    f"(each open tab holds one or two); close some tabs")
        if self.count() >= self.total:
            return f"this server has {self.total} open streams already; try again later"
        return None

    def opened(self, host: str) -> None:
        self._open[host] += 1

    def closed(self, host: str) -> None:
        self._open[host] -= 1
        if self._open[host] <= 0:
            del self._open[host]


class StreamLimitMiddleware:
    """Answers 429 to a stream `streams` refuses; counts the others while they are open."""

    def __init__(self, app: ASGIApp, streams: OpenStreams) -> None:
        self.app = app
        self.streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not get_route_path(scope).startswith(STREAM_ROUTES):
            await self.app(scope, receive, send)
            return
        host = client_host(scope)
        refusal = self.streams.refusal(host)
        if refusal is not None:
            await send_json(send, 429, "too_many_requests", refusal)
            return
        self.streams.opened(host)
        try:
            await self.app(scope, receive, send)
        finally:
            self.streams.closed(host)
