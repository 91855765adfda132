"""How `/gradio_api/file=` answers (behind `ui_guard.UIGuardMiddleware`, which lets only a browser's own uploads
through): the whole file as stored, never a range nor compressed, with the headers of a private file."""

from __future__ import annotations

from clipforge.server.middleware import Message, Scope, Send

__all__ = ["whole_send", "without_ranges"]

_DROPPED_HEADERS = frozenset({b"range", b"if-range", b"accept-encoding"})


def without_ranges(scope: Scope) -> Scope:
    """A `file=` request without its Range: gradio answered one by copying every request header into its answer
    (the HttpOnly uploader cookie, any header a client sent, `Set-Cookie` and `Cache-Control` included, for a
    cache in front to keep), served `bytes=5-1` as byte 1, and failed with a 500 and an 8 kB traceback in the log
    on `bytes=0-0,2-2`. Uploads are photos of at most `max_upload_bytes`: the whole file is the answer (HTTP lets
    a server ignore Range). Without its Accept-Encoding too: gradio compressed an answer whose path ends in a text
    extension on the event loop, and a 19 MB upload named `big.txt` cost 0.27 s (brotli) to 0.7 s (gzip) of the
    loop's CPU for each GET of it; photos do not compress, and anything else is refused by the handlers."""
    return {
        **scope,
        "headers": [(k, v) for k, v in scope.get("headers", ()) if k.lower() not in _DROPPED_HEADERS],
    }


_FILE_HEADERS = ((b"cache-control", b"private, no-cache"), (b"x-content-type-options", b"nosniff"))
_REPLACED = frozenset({b"accept-ranges", *(name for name, _ in _FILE_HEADERS)})


def whole_send(send: Send) -> Send:
    """`send` without `Accept-Ranges` in the answer (ranges are not served: `without_ranges`), and with the
    headers of a private file: gradio sent an upload (one browser's own, `ledger.owns`) with a Last-Modified and
    no Cache-Control, which a shared cache in front may keep and hand to anyone by heuristic freshness, and
    typed by its name's extension without `nosniff` (the REST originals have carried both since they were found)."""

    async def whole(message: Message) -> None:
        if message["type"] == "http.response.start":
            kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() not in _REPLACED]
            message = {**message, "headers": [*kept, *_FILE_HEADERS]}
        await send(message)

    return whole
