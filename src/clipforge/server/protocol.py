"""The HTTP/1.1 protocol `serve` runs: uvicorn's h11 protocol with the timeouts and caps uvicorn lacks.

uvicorn keeps a connection that never finishes its request headers open for ever; with no cap on connections
(see `runner`), each connection must instead complete its headers within `seconds`. Two more ways one client
held what every client shares are closed here too: a body sent in a great many tiny chunks (the event loop
parsed each one), and an answer the client stops taking (its socket and the unsent bytes kept for as long as
the client liked).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["protocol_with_timeouts"]

_FREE_PIECES = 4096
_MIN_PIECE = 1024


def protocol_with_timeouts(seconds: float) -> type:
    """uvicorn's h11 protocol, closing connections that take longer than `seconds` to send request headers."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(H11Protocol):
        _header_timer: Any = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # headers never completed: drop the connection

        # A body sent in tiny chunks (`1\r\nX\r\n` a byte at a time): h11 parses each chunk in Python and
        # uvicorn copies its body buffer for each, on the event loop every client shares. 200,000 one-byte
        # chunks (1.2 MB on the wire) cost 1.4 s of that loop; a 20 MB body sent so, minutes. Past
        # `_FREE_PIECES` pieces a request's body must average `_MIN_PIECE` bytes a piece, or the connection closes.
        _pieces = 0
        _piece_bytes = 0
        _too_fragmented = False

        def _counted_next_event(self) -> Any:
            if self._too_fragmented:
                return h11.NEED_DATA
            event = self._next_event()
            if type(event) is h11.Data:
                self._pieces += 1
                self._piece_bytes += len(event.data)
                if self._pieces > _FREE_PIECES and self._pieces * _MIN_PIECE > self._piece_bytes:
                    self._too_fragmented = True
                    self.logger.warning("Request body sent in too many small pieces; connection closed.")
                    self.transport.close()
                    return h11.NEED_DATA
            elif type(event) is h11.Request:
                self._pieces = self._piece_bytes = 0
            return event

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._next_event = self.conn.next_event
            self.conn.next_event = self._counted_next_event  # type: ignore[method-assign]
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def send_400_response(self, msg: str) -> None:
            """uvicorn's answer to a request it cannot parse (a repeated or signed Content-Length, an unknown
            Transfer-Encoding), in the server's one error shape instead of text/plain: no app sees it."""
            detail = "malformed HTTP request: its request line or headers could not be parsed (HTTP/1.1 framing)"
            body = json.dumps({"error": "bad_request", "detail": detail}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                          h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        # A client that stops taking its answer: while the send buffer stays over its high-water mark, the
        # connection is dropped once `seconds` pass in which the client took nothing. Without this a client
        # that never read kept the unsent piece of an original (and its socket) for as long as it liked,
        # even after the request's time ran out.
        _send_timer: Any = None

        def _watch_sending(self, before: int | None) -> None:
            self._send_timer = None
            left = self.transport.get_write_buffer_size()
            if before is not None and left >= before:
                self.transport.abort()  # nothing taken for `seconds`: drop the connection and what it holds
                return
            self._send_timer = self.loop.call_later(seconds, self._watch_sending, left)

        def _stop_watching(self) -> None:
            if self._send_timer is not None:
                self._send_timer.cancel()
                self._send_timer = None

        def pause_writing(self) -> None:
            super().pause_writing()
            self._stop_watching()
            self._watch_sending(None)

        def resume_writing(self) -> None:
            self._stop_watching()
            super().resume_writing()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._stop_watching()
            super().connection_lost(exc)

    return HeaderTimeoutH11Protocol
