"""What `ErrorShapeMiddleware` must pass on untouched, and what it reshapes, checked by review 3 of session 53.

Only a complete, small, unencoded error body is sent again in the one shape; a file sent by path, a
compressed body, a 304, a WebSocket, a large error and every answer under 400 leave as the app sent them, an
exception after a 200 has started still reaches the server, and an error start followed by an exception is
one shaped 500.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from clipforge.server.error_shape import _MAX_ERROR_BYTES, ErrorShapeMiddleware
from clipforge.server.errors import INTERNAL_DETAIL

Message = dict[str, Any]


def _start(status: int, *headers: tuple[bytes, bytes]) -> Message:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def _body(data: bytes, more: bool = False) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


def _through(messages: list[Message], raises: bool = False, kind: str = "http") -> list[Message]:
    """What the middleware sends for an app that sends `messages` (then raises, with `raises`)."""
    sent: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)
        if raises:
            raise RuntimeError("s53-review3 canary")

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": kind, "method": "GET", "path": "/x", "headers": []}
    asyncio.run(ErrorShapeMiddleware(app)(scope, receive, send))
    return sent


def _wire(messages: list[Message]) -> list[Message]:
    """`messages` as the client gets them: a body's `more_body: False` is its default."""
    return [{k: v for k, v in m.items() if (k, v) != ("more_body", False)} for m in messages]


def test_answers_it_must_not_touch_pass_as_sent():
    png = (b"content-type", b"image/png")
    untouched = [
        [_start(404, png, (b"content-length", b"9")), {"type": "http.response.pathsend", "path": "/tmp/x"}],
        [
            _start(404, (b"content-type", b"application/json"), (b"content-encoding", b"br")),
            _body(b"\x1b\x00"),
        ],
        [_start(304, (b"etag", b'"a"')), _body(b"")],
        [_start(200, (b"content-type", b"text/event-stream")), _body(b"data: 1\n\n", True), _body(b"")],
        [
            _start(403, (b"content-type", b"application/json")),
            _body(b'{"error": "forbidden", "detail": "no"}'),
        ],
    ]
    for messages in untouched:
        assert _wire(_through(messages)) == _wire(messages)
    socket = [{"type": "websocket.accept"}, {"type": "websocket.close", "code": 1000}]
    assert _through(socket, kind="websocket") == socket
    large = [_start(404, (b"content-type", b"text/plain")), _body(b"x" * _MAX_ERROR_BYTES, True), _body(b"y")]
    out = _through(large)
    assert (
        out[0] == large[0] and b"".join(m.get("body", b"") for m in out[1:]) == b"x" * _MAX_ERROR_BYTES + b"y"
    )


def test_an_error_in_pieces_is_one_shaped_answer_with_its_other_headers():
    pieces = [
        _start(404, (b"content-type", b"text/plain"), (b"x-kept", b"1")),
        _body(b"no such ", True),
        _body(b"page"),
    ]
    start, body = _through(pieces)
    assert start["status"] == 404 and (b"x-kept", b"1") in start["headers"]
    assert body["body"] == b'{"error": "not_found", "detail": "no such page"}'
    assert (b"content-length", str(len(body["body"])).encode()) in start["headers"]


def test_exceptions_after_a_200_reach_the_server_and_after_an_error_start_are_one_500(caplog):
    with pytest.raises(RuntimeError, match="s53-review3 canary"):
        _through([_start(200), _body(b"partial", True)], raises=True)
    with caplog.at_level(logging.INFO):
        start, body = _through(
            [_start(404, (b"content-type", b"text/plain")), _body(b"half", True)], raises=True
        )
    assert start["status"] == 500 and b"s53-review3" not in body["body"]
    assert body["body"] == b'{"error": "internal_error", "detail": "%s"}' % INTERNAL_DETAIL.encode()
    assert len([r for r in caplog.records if r.exc_info]) == 1


def test_gradios_queue_stopped_503_keeps_its_words():
    """At shutdown gradio answers 503 "Queue is stopped.": it was shaped as {"error": "timeout", "detail": "an
    internal error ... the server log has the details"}, with nothing in the log."""
    from clipforge.server.error_shape import shaped_error

    assert shaped_error(503, "text/plain; charset=utf-8", b"Queue is stopped.") == {
        "error": "unavailable",
        "detail": "Queue is stopped.",
    }
    assert shaped_error(500, "text/plain", b"Internal Server Error")["error"] == "internal_error"
