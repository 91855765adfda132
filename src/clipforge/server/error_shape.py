"""Every error answer in the server's one shape, gradio's and Starlette's own included.

The REST routes answer `{"error": code, "detail": message}` (`errors`), but the mounted gradio app and the
middleware around it answered in theirs: `{"detail": "Not Found"}` and `{"detail": "Method Not Allowed"}` for
gradio's paths and methods, a 422 whose `detail` list echoed the client's whole value back (`input`),
a text/plain `Disallowed CORS origin` for a preflight, and a text/plain `Internal Server Error` when gradio
raised (its app sends that 500, then raises again, and uvicorn logged the traceback a second time).

`ErrorShapeMiddleware` wraps the whole app. An answer of status 400 or more that is not already in the shape
(small: at most `_MAX_ERROR_BYTES`) is held until its body is complete and sent again as
`{"error": code, "detail": one line}`, with the answer's other headers (`Allow`, `WWW-Authenticate`, ...);
every 405 with an `Allow` header (ours too) is worded by `not_here.not_allowed_detail`, the REST API's one rule;
a validation list becomes `field: message; ...` without the echoed values; a 500 becomes `internal_error`
with the generic sentence, and an exception raised after such an answer was started is logged once, by
`errors.api_error`, and goes no further. Anything else passes through untouched.
"""

from __future__ import annotations

import json
from typing import Any

from clipforge.server.errors import INTERNAL_DETAIL, api_error, status_code_name, validation_text
from clipforge.server.middleware import ASGIApp, Message, Receive, Scope, Send
from clipforge.server.not_here import not_allowed_detail

__all__ = ["ErrorShapeMiddleware", "shaped_error"]

_MAX_ERROR_BYTES = 64 * 1024
"""An error answer longer than this is passed on as it is (none of gradio's or Starlette's is near it)."""
_DETAIL_CHARS = 300
_REPLACED = frozenset({b"content-length", b"content-type", b"content-encoding"})
_REASONS = {
    400: "bad request",
    404: "not found",
    405: "method not allowed",
    413: "request too large",
    422: "invalid request",
    429: "too many requests",
}


def _ours(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), str) and "detail" in body


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _DETAIL_CHARS else line[:_DETAIL_CHARS] + "..."


def shaped_error(status: int, content_type: str, body: bytes) -> dict[str, str] | None:
    """The `{"error", "detail"}` body for an error answer of `status`, or None when `body` already is one."""
    decoded: Any = None
    if "json" in content_type:
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            decoded = None
        if _ours(decoded):
            return None
    code = status_code_name(status)
    if (
        status == 503
    ):  # gradio's "Queue is stopped." at shutdown: a state, not a fault with a logged traceback
        text = (
            body.decode("utf-8", "replace")
            if decoded is None and content_type.startswith("text/plain")
            else ""
        )
        return {
            "error": "unavailable",
            "detail": _one_line(text) or "the server cannot take this request now",
        }
    if status >= 500:
        return {"error": code, "detail": INTERNAL_DETAIL}
    if isinstance(decoded, dict) and isinstance(decoded.get("detail"), list):
        detail = validation_text(decoded["detail"])
    elif isinstance(decoded, dict) and isinstance(decoded.get("detail"), str):
        detail = decoded["detail"]
    elif decoded is None and content_type.startswith("text/plain"):
        detail = body.decode("utf-8", "replace")
    else:
        detail = ""
    return {"error": code, "detail": _one_line(detail) or _REASONS.get(status, f"HTTP {status}")}


class ErrorShapeMiddleware:
    """Answer every error in `{"error", "detail"}` (module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None  # the start of an error answer, until its body is complete
        chunks: list[bytes] = []
        size = 0
        passing = False  # the answer goes out as the app sends it

        async def shaping_send(message: Message) -> None:
            nonlocal held, size, passing
            kind = message["type"]
            if passing or (held is None and kind != "http.response.start"):
                await send(message)
                return
            if kind == "http.response.start":
                if int(message.get("status", 200)) < 400:
                    passing = True
                    await send(message)
                else:
                    held = message
                return
            if kind != "http.response.body":  # pathsend and the like: not an error's
                passing = True
                await send(held)
                await send(message)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > _MAX_ERROR_BYTES:
                passing = True
                await send(held)
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"".join(chunks),
                        "more_body": message.get("more_body", False),
                    }
                )
                return
            if not message.get("more_body", False):
                passing = True
                await self._send_shaped(send, held, b"".join(chunks), scope)

        try:
            await self.app(scope, receive, shaping_send)
        except Exception as exc:
            if held is None:
                raise  # no error answer was started: the app's own error handling answers it
            # gradio's app sent its text/plain 500 and raised again: answer once, log once, stop here
            api_error(exc, f"{str(scope.get('method', ''))[:20]} {str(scope.get('path', ''))[:80]}")
            if not passing:
                passing = True
                await self._send_shaped(send, {**held, "status": 500}, b"", scope)

    @staticmethod
    async def _send_shaped(send: Send, start: Message, body: bytes, scope: Scope) -> None:
        headers = list(start.get("headers", ()))
        content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"").decode("latin-1")
        encoded = any(k.lower() == b"content-encoding" for k, _ in headers)
        shaped = None if encoded else shaped_error(int(start["status"]), content_type.lower(), body)
        allow = next((v for k, v in headers if k.lower() == b"allow"), None)
        if not encoded and start["status"] == 405 and allow is not None:
            # one rule for every 405 (`not_here.not_allowed_detail`), an answer already in our shape included: the
            # app's own routes said "Method Not Allowed", and gradio's echoed the method and decoded path as sent
            shaped = shaped or json.loads(body)
            shaped["detail"] = not_allowed_detail(
                str(scope.get("method", "")), str(scope.get("path", "")), allow.decode("latin-1").split(",")
            )
        if shaped is None:
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        out = json.dumps(shaped).encode()
        kept = [(k, v) for k, v in headers if k.lower() not in _REPLACED]
        kept += [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
        await send({**start, "headers": kept})
        await send({"type": "http.response.body", "body": out})
