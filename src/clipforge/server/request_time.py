"""The wall-time limits of a request: `TimeoutMiddleware` (REST calls and the UI's uploads, their body's time as
`body_time` gives it) and `StoppingMiddleware` (what a request cut by the server's stop is told).

Work already handed to a thread (model inference, an upload's write) goes on after its answer is abandoned: an
upload cut so is told it may still be added.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.routing import get_route_path

from clipforge.server.body_time import body_deadline, too_slow
from clipforge.server.middleware import ASGIApp, Message, Receive, Scope, Send, body_headers, send_json

__all__ = ["StoppingMiddleware", "TimeoutMiddleware", "cut_by_stop"]

_log = logging.getLogger(__name__)


class TimeoutMiddleware:
    """Cancel REST requests under `prefixes` that take longer than `seconds` and answer 503.

    The time a body takes to arrive is given back as `body_deadline` gives it (one second per `min_rate` bytes, as
    long as they come that fast): a 4 MB photo over a slow link was cut at 60 s and told to "try a smaller image or
    fewer labels". A request cut while its body is still arriving is a 408 saying so."""

    def __init__(self, app: ASGIApp, seconds: float, prefixes: tuple[str, ...] = ("/api/",),
                 min_rate: float | None = None) -> None:
        self.app = app
        self.seconds = float(seconds)
        self.prefixes = prefixes
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not get_route_path(scope).startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        started = False
        received = 0
        try:
            declared, chunked, _ = body_headers(scope)
        except ValueError:
            declared, chunked = None, False
        body_done = not chunked and not declared  # no body to wait for: the time is all the work's
        loop = asyncio.get_running_loop()
        begun = loop.time()
        body_time = 0.0  # seconds the body took to arrive (once it is whole)

        async def counting_receive() -> Message:
            nonlocal received, body_done, body_time
            message = await receive()
            if message["type"] == "http.request" and not body_done:
                received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    body_done, body_time = True, loop.time() - begun
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        def deadline() -> float:
            end = body_deadline(begun, self.seconds, received, self.min_rate)
            # a body that came fast does not lend its allowance to the work after it
            return min(end, begun + self.seconds + body_time) if body_done else end

        task = asyncio.ensure_future(self.app(scope, counting_receive, tracking_send))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline() - loop.time()))
                if done:
                    task.result()
                    return
                if loop.time() >= deadline():
                    break
        except BaseException:
            task.cancel()
            raise
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        # Work already handed to a thread (model inference) finishes in the background;
        # the client is told now instead of waiting on it.
        if started:
            return
        if not body_done:
            await send_json(send, 408, "request_timeout",
                            too_slow(received, loop.time() - begun, self.seconds, self.min_rate))
            return
        if _is_upload(scope):
            # the write goes on in its thread: a retry must not be told the first one was lost
            await send_json(send, 503, "timeout", (
                f"the upload took longer than {self.seconds:g} s (waiting for its turn included) and its answer was "
                "abandoned, but the image may still be added: look for it (GET /api/images) or send it again (an "
                "identical file is answered created: false)"))
            return
        await send_json(
            send,
            503,
            "timeout",
            f"the request took longer than {self.seconds:g} s (waiting for its turn "
            f"included) and was abandoned; try a smaller image or fewer labels, or again later",
        )


class StoppingMiddleware:
    """Answer a request that the server's stop cancels (uvicorn cancels what is still running 5 s after SIGTERM or
    SIGINT) with a 503 in the REST shape and one log line, where uvicorn answered `500 text/plain "Internal Server
    Error"` and logged a full traceback for every request in flight (141 lines for 8 classify calls)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # requests that do work (POST: search, classify, uploads, UI events); a GET is a read or one of gradio's
        # streams, whose cancellation is theirs to finish (an async generator must see it)
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError as exc:
            if started or not cut_by_stop(exc):
                raise
            _log.warning("%s %s: cut off by the server's stop", scope.get("method"), get_route_path(scope))
            detail = ("the server is stopping and did not answer this upload, but the image may still be added: once "
                      "it is back, look for it (GET /api/images) or send it again (an identical file is answered "
                      "created: false)") if _is_upload(scope) else (
                      "the server is stopping and did not finish this request; send it again once it is back")
            with contextlib.suppress(Exception):
                await send_json(send, 503, "server_stopping", detail, retry_after=5)


def cut_by_stop(exc: BaseException) -> bool:
    """Whether a cancellation is uvicorn's at the end of a stop (the requests still running 5 s after SIGTERM or
    SIGINT), as its message says; any other (a test client's teardown, anyio's task groups, a client gone) is
    not ours to answer or swallow: an async generator must see it."""
    return isinstance(exc, asyncio.CancelledError) and any("graceful shutdown" in str(a) for a in exc.args)


def _is_upload(scope: Scope) -> bool:
    """A REST upload (`POST /api/images`), whose write goes on in its thread after its answer is abandoned."""
    return scope.get("method") == "POST" and get_route_path(scope).rstrip("/") == "/api/images"
