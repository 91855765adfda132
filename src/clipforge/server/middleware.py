"""ASGI middleware for the limits that must hold before any endpoint code runs.

`BodyLimitMiddleware` counts request bytes as they arrive: a declared Content-Length over the
limit is refused without passing anything on, and a chunked body is cut off the moment it
passes the limit - the multipart parser never spools more than the limit to disk. Before any
early answer (its own 413, or an endpoint that answers before reading the whole body) the rest
of the body is read and discarded, up to a bound: a server that closes the socket while the
client is still sending makes ordinary clients (urllib, requests) report "broken pipe" instead
of the 413. A body that stops arriving for `idle_timeout` seconds is answered 408, and so is one that
has not arrived whole within `body_timeout` seconds (a byte every few seconds never trips the idle
timeout: gradio's event routes, which `TimeoutMiddleware` leaves alone, stayed open for as long as
one came).
A client that closes its connection before its answer began (ASGI's `http.disconnect`: an aborted upload, a
client's timeout, a client gone while its search ran) is sent nothing, whatever the app makes of it (starlette's
`ClientDisconnect` handler answered 400 to nobody), and leaves one access-log line with status 499
(`access_log.log_client_gone`); uvicorn writes none for it.
With `receiving`, the bytes of bodies in flight are counted per address and in all as they arrive
(`receiving.ReceivingBytes`): a body that passes a share is answered 429/503, the rest of its bytes dropped.
The time a body has is `body_time.body_deadline`'s; `request_time.TimeoutMiddleware` bounds the wall time of REST
calls (a slow upload included), leaving gradio's long-lived event streams alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.routing import get_route_path

from clipforge.server.access_log import log_client_gone
from clipforge.server.body_time import body_deadline, too_slow
from clipforge.server.errors import APIError, error_body, retry_after_seconds, shown, with_retry_after
from clipforge.server.fair import address_key
from clipforge.server.sending import ByteShares

__all__ = ["UI_UPLOAD_PATH", "BodyLimitMiddleware", "body_headers", "client_host", "send_json"]

UI_UPLOAD_PATH = "/gradio_api/upload"
"""The web UI's upload route (gradio's): one body holds every file a page chose at once."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def client_host(scope: Scope) -> str:
    """The client's address as the per-address caps count it (`fair.address_key`: an IPv6 address's /64): the
    peer's, or the proxy-named one where the operator trusts a proxy."""
    client = scope.get("client")
    return address_key(client[0] if client else None)


async def send_json(send: Send, status: int, code: str, detail: str, retry_after: float | None = None) -> None:
    """The raw-ASGI layers' one way an error becomes an answer, in the REST routes' shape. `retry_after`: seconds
    until the client may try again, sent as `Retry-After` (`errors.retry_after_seconds`); a 429 without one gets
    `errors.RETRY_SOON_S` (`errors.with_retry_after`)."""
    body = json.dumps(error_body(code, detail)).encode()
    extra = {} if retry_after is None else {"Retry-After": str(retry_after_seconds(retry_after))}
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in (with_retry_after(status, extra) or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class _BodyStalled(Exception):
    pass


class _BodyRefused(Exception):
    """Past the address's or the server's share of bytes in flight (`receiving`)."""


def body_headers(scope: Scope) -> tuple[int | None, bool, bool]:
    """(declared Content-Length or None, chunked, Expect: 100-continue); ValueError on a bad length."""
    declared, chunked, expects = None, False, False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            declared = int(value)
            if declared < 0:
                raise ValueError(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"expect":
            expects = value.lower().startswith(b"100")
    return declared, chunked, expects


class BodyLimitMiddleware:
    """Answer 413 to any request whose body exceeds `max_bytes` (declared or actual), readably."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        file_limit: int | None = None,
        drain_bytes: int | None = None,
        idle_timeout: float | None = None,
        body_timeout: float | None = None,
        receiving: ByteShares | None = None,
        min_rate: float | None = None,
        upload_route: tuple[str, int] | None = None,
    ) -> None:
        self.app = app
        self.receiving = receiving  # bytes of bodies in flight, per address and in all (`receiving.ReceivingBytes`)
        self.max_bytes = int(max_bytes)
        self.file_limit = int(file_limit or max_bytes)
        # (path prefix, its body limit): the web UI's upload route, whose one body holds every file a page chose
        self.upload_route = upload_route
        self.drain_bytes = int(drain_bytes if drain_bytes is not None else 4 * self.max_bytes)
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.min_rate = min_rate  # a body keeping this average rate has longer than `body_timeout` (`body_deadline`)

    def _limit(self, scope: Scope) -> tuple[int, bool]:
        """(the body limit of this request's route, whether it is the UI's upload route)."""
        if self.upload_route is not None and get_route_path(scope).startswith(self.upload_route[0]):
            return max(self.max_bytes, int(self.upload_route[1])), True
        return self.max_bytes, False

    def _detail(self, size: str, limit: int, upload: bool) -> str:
        if upload:
            return (
                f"the files chosen at once make a request {size} bytes, over the limit of {limit:,} bytes for one "
                f"upload from this page; add them in smaller groups (each file up to {self.file_limit:,} bytes)"
            )
        return (
            f"request body {size} bytes exceeds the limit of {limit:,} bytes "
            f"(files up to {self.file_limit:,} bytes are accepted)"
        )

    async def _drain(self, receive: Receive, already: int) -> None:
        """Read and discard what is left of the body, at most `drain_bytes` in all, each piece within the idle
        timeout and the whole within `body_timeout` (a piece every few seconds held a drain without end)."""
        total = already
        loop = asyncio.get_running_loop()
        end = None if self.body_timeout is None else loop.time() + self.body_timeout
        while total <= self.drain_bytes:
            waits = [t for t in (self.idle_timeout, None if end is None else end - loop.time()) if t is not None]
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, min(waits)) if waits else None)
            except TimeoutError:
                return
            if message["type"] != "http.request":
                return
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            declared, chunked, expects_continue = body_headers(scope)
        except ValueError:
            await send_json(send, 400, "bad_request", "Content-Length is not a number")
            return
        gone = started = False  # the client left before its answer began; the answer began

        async def noting_receive() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and not started:
                gone = True
            return message

        async def gone_send(message: Message) -> None:
            """`send`, unless the client has gone: nobody reads the answer (module docstring)."""
            nonlocal started
            if gone:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._limited(scope, noting_receive, gone_send, declared, chunked, expects_continue, *self._limit(scope))
        finally:
            if gone and not started:
                log_client_gone(scope)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, declared: int | None, chunked: bool,
                       expects_continue: bool, limit: int, upload: bool) -> None:
        """The request, its body limited to `limit` (module docstring); `receive` and `send` are the connection's."""
        if declared is not None and declared > limit:
            if not expects_continue and declared <= self.drain_bytes:
                await self._drain(receive, 0)
            await send_json(
                send, 413, "payload_too_large", self._detail(f"of {shown(f'{declared:,}')}", limit, upload)
            )
            return
        has_body = chunked or bool(declared)
        await self._received(scope, receive, send, has_body, limit, upload)

    async def _received(self, scope: Scope, receive: Receive, send: Send, has_body: bool, limit: int,
                        upload: bool) -> None:
        """The request, its body counted as it arrives: 413 past the limit, 408 when it stops arriving, 429/503
        past the address's or the server's share of bytes in flight (`receiving`)."""
        shares, host = self.receiving, client_host(scope)
        held = 0  # this body's bytes counted in `shares` (a request alone may hold any size: `ByteShares.take`)
        refused: APIError | None = None

        def give_back() -> None:
            """The body's bytes are dropped: an answer before them, a refusal, or the request done."""
            nonlocal held
            if shares is not None and held:
                shares.give(host, held)
            held = 0

        received = 0
        exceeded = stalled = late = False
        body_done = not has_body
        started = False
        begun = asyncio.get_running_loop().time()

        async def counting_receive() -> Message:
            nonlocal received, exceeded, stalled, late, body_done, held, refused
            if exceeded:
                raise _BodyTooLarge
            if refused is not None:
                raise _BodyRefused
            waits = [] if body_done else [t for t in (self.idle_timeout,) if t is not None]
            deadline = body_deadline(begun, self.body_timeout, received, self.min_rate)
            if not body_done and deadline is not None:
                waits.append(max(0.0, deadline - asyncio.get_running_loop().time()))
            if not waits:
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), timeout=min(waits))
                except TimeoutError:
                    stalled = True
                    late = deadline is not None and asyncio.get_running_loop().time() >= deadline
                    raise _BodyStalled from None
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                received += size
                body_done = not message.get("more_body", False)
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
                if shares is not None and size:
                    try:
                        shares.take(host, size, own=held)
                    except APIError as refusal:
                        refused = refusal
                        raise _BodyRefused from None
                    held += size
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded or stalled or refused is not None:  # the aborted body's answer is 413/408/429/503
                return
            if message["type"] == "http.response.start":
                if not body_done:  # answering early (e.g. gradio's own 413): let the client finish sending
                    give_back()  # what is drained is dropped, not held
                    await self._drain(receive, received)
                started = True
            await send(message)

        try:
            with contextlib.suppress(_BodyTooLarge, _BodyStalled, _BodyRefused):
                await self.app(scope, counting_receive, guarded_send)
        finally:
            give_back()  # before any drain below: the bytes dropped are not held
        if started:
            return
        if refused is not None:
            if not body_done:
                await self._drain(receive, received)
            await send_json(send, refused.status, refused.code, refused.detail, retry_after=refused.retry_after)
            return
        if exceeded:
            if not body_done:
                await self._drain(receive, received)
            await send_json(
                send, 413, "payload_too_large", self._detail(f"of more than {limit:,}", limit, upload)
            )
        elif stalled:
            await send_json(
                send,
                408,
                "request_timeout",
                too_slow(received, asyncio.get_running_loop().time() - begun, self.body_timeout, self.min_rate)
                if late
                else f"the request body stopped arriving for {self.idle_timeout:g} s",
            )
