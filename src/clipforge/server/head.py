"""HEAD answered as GET is, without the body: one rule for every route, ours and gradio's.

HTTP says a resource that answers GET answers HEAD with the same status and headers and no body (a monitor's
`curl -I /healthz`, a client learning a photo's size and type from `HEAD /api/images/{id}`). FastAPI's routes
answer HEAD with 405 unless each declares it, and gradio's declare it on a few paths only, so HEAD /healthz was
405 while HEAD / was 200.

`HeadAsGetMiddleware`, outermost, hands the app a HEAD request as a GET (a copy of its scope; the server still
knows it as HEAD) and passes the GET's answer on as the HEAD's: its status and headers unchanged (Content-Length,
Content-Type, ETag and Cache-Control included), the body replaced by nothing. So a HEAD is a GET in every check:
the Host and origin rules, the UI guard, the body and time limits and the per-client turns see a GET, and a HEAD
can never do more than the GET of the same URL does. Once the headers are sent, the app's body is dropped and the
app is told the client has gone (`http.disconnect`): a streamed answer (a large original, gradio's event streams)
stops there instead of being produced for nobody.

A 405 whose `Allow` lists GET lists HEAD too.
"""

from __future__ import annotations

import asyncio

from clipforge.server.middleware import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HeadAsGetMiddleware"]

_BODY = frozenset({"http.response.body", "http.response.pathsend", "http.response.zerocopysend"})


def _allow_head(message: Message) -> Message:
    """A 405's `Allow: GET, ...` with HEAD added (any other message as it is)."""
    if message.get("status") != 405:
        return message
    headers = list(message.get("headers", ()))
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"allow":
            methods = [m.strip() for m in value.decode("latin-1").split(",") if m.strip()]
            if "GET" in methods and "HEAD" not in methods:
                methods.insert(methods.index("GET") + 1, "HEAD")
                headers[index] = (name, ", ".join(methods).encode("latin-1"))
                return {**message, "headers": headers}
    return message


class HeadAsGetMiddleware:
    """Answer HEAD exactly as GET, with no body (module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("method") != "HEAD":
            async def allow_send(message: Message) -> None:
                await send(_allow_head(message) if message["type"] == "http.response.start" else message)

            await self.app(scope, receive, allow_send)
            return
        answered = asyncio.Event()

        async def head_send(message: Message) -> None:
            if answered.is_set():
                return  # the body of the GET: nobody reads it
            if message["type"] not in _BODY:  # the headers (and extensions' messages, e.g. the test client's)
                await send(_allow_head(message) if message["type"] == "http.response.start" else message)
                return
            # the first piece of the body: the HEAD's answer ends here, empty
            answered.set()
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def head_receive() -> Message:
            """The request as sent, until the answer is complete; then the client has gone, as far as the app
            can tell (a streamed answer stops)."""
            if answered.is_set():
                return {"type": "http.disconnect"}
            message = asyncio.ensure_future(receive())
            done = asyncio.ensure_future(answered.wait())
            try:
                await asyncio.wait((message, done), return_when=asyncio.FIRST_COMPLETED)
            finally:
                done.cancel()
                if not message.done():
                    message.cancel()
            if message.done() and not message.cancelled():
                return message.result()
            return {"type": "http.disconnect"}

        await self.app({**scope, "method": "GET"}, head_receive, head_send)
