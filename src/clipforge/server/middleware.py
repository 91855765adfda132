"""ASGI middleware for the limits that must hold before any endpoint code runs.

`BodyLimitMiddleware` counts request bytes as they arrive: a declared Content-Length over the
limit is refused without reading anything, and a chunked body is cut off the moment it passes
the limit - the multipart parser never spools more than the limit to disk. `TimeoutMiddleware`
bounds the wall time of REST calls (a slow upload included); gradio's long-lived event
streams are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from clipforge.server.errors import error_body

__all__ = ["BodyLimitMiddleware", "TimeoutMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_json(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps(error_body(code, detail)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Answer 413 to any request whose body exceeds `max_bytes` (declared or actual)."""

    def __init__(self, app: ASGIApp, max_bytes: int, file_limit: int | None = None) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)
        self.file_limit = int(file_limit or max_bytes)

    def _detail(self, size: str) -> str:
        return (f"request body {size} exceeds the limit of {self.max_bytes:,} bytes "
                f"(files up to {self.file_limit:,} bytes are accepted)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, "bad_request", "Content-Length is not a number")
                    return
                if declared > self.max_bytes:
                    await _send_json(send, 413, "payload_too_large", self._detail(f"of {declared:,} bytes"))
                    return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # whatever the app makes of the aborted body, the answer is 413
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if exceeded and not started:
            await _send_json(send, 413, "payload_too_large", self._detail(f"of more than {self.max_bytes:,} bytes"))


class TimeoutMiddleware:
    """Cancel REST requests under `prefixes` that take longer than `seconds` and answer 503."""

    def __init__(self, app: ASGIApp, seconds: float, prefixes: tuple[str, ...] = ("/api/",)) -> None:
        self.app = app
        self.seconds = float(seconds)
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, tracking_send), timeout=self.seconds)
        except asyncio.TimeoutError:
            # Work already handed to a thread (model inference) finishes in the background;
            # the client is told now instead of waiting on it.
            if not started:
                await _send_json(send, 503, "timeout",
                                 f"the request took longer than {self.seconds:g} s and was abandoned; "
                                 f"try a smaller image or fewer labels")
