"""Three edges of the HTTP server: a client gone mid-request, a multipart preamble, and `Vary` on the UI's page.

* A client that closed its connection before its answer (mid-body: an aborted upload, a client's timeout) left no
  access-log line at all under `serve` (uvicorn drops what is sent to a gone client, and writes its line only when
  it sends), while the app handed it a 400 (starlette's `ClientDisconnect` handler), which any server that does
  not drop it would send and log as an answer. Now nothing is sent and one access-log line says 499 (nginx's
  "Client Closed Request"), whatever the route.
* A multipart body with a preamble (bytes before the first boundary line: RFC 2046 5.1.1, "to be ignored") or
  transport padding after its first boundary line was answered "Invalid multipart data." (REST) or in gradio's
  words (the UI's upload); a body that is not multipart said only that. Now the preamble (up to 8 KiB) and the
  padding are dropped, and a bad body's one line says what was expected where.
* `/` and `/config` depend on `Host`, `X-Forwarded-Host`, `X-Forwarded-Proto`, ... (gradio builds its root URL
  from them, and the page cache keys on them) but named none in `Vary`: a shared cache in front of the server
  could give one host's page to another.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipforge.server import ServerLimits, create_app

CT = "multipart/form-data; boundary=XX"
_TEXT = b'--XX\r\nContent-Disposition: form-data; name="text"\r\n\r\na red photo\r\n'
_CLOSE = b"--XX--\r\n"
MAX_PREAMBLE_BYTES = 8 * 1024  # `multipart_bound.MAX_PREAMBLE_BYTES` (imported in the tests that need the module)


def _file_part(name: bytes, data: bytes, field: bytes = b"file") -> bytes:
    return (b'--XX\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\nContent-Type: image/png\r\n\r\n'
            % (field, name)) + data + b"\r\n"


# -- 1. a client gone before its answer ------------------------------------------------------------------------


@contextlib.contextmanager
def _access_log():
    """What the access log's handler (the one `build_server` configured) writes."""
    handlers = logging.getLogger("uvicorn.access").handlers
    assert handlers, "uvicorn configured no access-log handler"
    written = io.StringIO()
    previous = [handler.setStream(written) for handler in handlers]
    try:
        yield written
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)


def _recorded(app, ended: list[str], done: threading.Event, expected: int):
    """`app`, noting each HTTP request as it ends (an order of events, not a time)."""

    async def wrapper(scope, receive, send):
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                ended.append(scope["path"])
                if len(ended) >= expected:
                    done.set()

    return wrapper


def _half_sent(url: str, path: str, content_type: str, body: bytes) -> bytes:
    """Headers promising 1,000 bytes more than `body`, `body`, then the client closes its side: what came back."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body) + 1000}\r\n\r\n").encode()
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_a_client_gone_mid_body_is_one_499_access_line_and_is_sent_nothing(
    library, live_server, caplog, tmp_path, monkeypatch, photos
):
    """Before: no access-log line for any of these (uvicorn writes one only when it sends an answer; the app's 400
    went nowhere), so an aborted upload was invisible in the log, or a 400 under a server that logs what it is
    handed."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    caplog.set_level(logging.INFO)
    limits = ServerLimits()
    image = photos[0].read_bytes()
    cut = [
        ("/api/search", CT, _TEXT[:40]),
        ("/api/search", "application/json", b'{"text": "a photo of a c'),
        ("/api/images", CT, _file_part(b"a.png", image)[:200]),
        ("/gradio_api/upload", CT, _file_part(b"a.png", image, b"files")[:200]),
    ]
    ended: list[str] = []
    done = threading.Event()
    app = _recorded(create_app(library, ui=True, limits=limits), ended, done, len(cut) + 1)
    with live_server(app, limits, log_level="info") as url, _access_log() as written:
        answers = [_half_sent(url, path, content_type, body) for path, content_type, body in cut]
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as sock:  # an answered request, for contrast
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
        assert done.wait(30), ended
        lines = written.getvalue().splitlines()
    assert answers == [b""] * len(cut)  # nothing was sent to a client that had gone
    gone = sorted(line.split(" - ", 1)[1] for line in lines if " 499 " in line)
    assert gone == sorted(f'"POST {path} HTTP/1.1" 499 Client Closed Request' for path, _, _ in cut), lines
    assert len(lines) == len(cut) + 1 and sum('"GET /healthz HTTP/1.1" 200 OK' in line for line in lines) == 1, lines
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not noisy, [r.getMessage() for r in noisy]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _scope(path: str, content_type: str, length: int) -> dict:
    headers = [(b"host", b"127.0.0.1:7860"), (b"content-type", content_type.encode()),
               (b"content-length", str(length).encode())]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
            "client": ("192.0.2.7", 5555), "server": ("127.0.0.1", 7860)}


@pytest.mark.parametrize(
    ("path", "content_type", "body", "whole"),
    [
        ("/api/search", CT, _TEXT[:40], False),
        ("/api/search", "application/x-www-form-urlencoded", b"text=a+ph", False),
        ("/api/images", CT, _file_part(b"a.png", b"\x89PNG" * 50)[:150], False),
        ("/api/classify", "application/json", b'{"image": "iVBO', False),
        # the body arrived whole; the client left while its search waited for its turn or ran (`fair.ClientGone`)
        ("/api/search", "application/json", b'{"text": "a red photo"}', True),
    ],
)
def test_the_app_hands_a_gone_client_no_answer(library, path, content_type, body, whole):
    """What the app hands the server for a client gone before its answer: nothing (before: starlette's
    `ClientDisconnect` handler's 400, or the 499 of a search whose client left), and one access-log line."""
    app = create_app(library, ui=False)
    messages = [{"type": "http.request", "body": body, "more_body": not whole}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    access, records = logging.getLogger("uvicorn.access"), _Records()
    level = access.level  # a live server of an earlier test may have left it at WARNING
    access.addHandler(records)
    access.setLevel(logging.INFO)
    try:
        asyncio.run(app(_scope(path, content_type, len(body) + (0 if whole else 500)), receive, send))
    finally:
        access.removeHandler(records)
        access.setLevel(level)
    assert sent == []
    assert records.lines == [f'192.0.2.7:5555 - "POST {path} HTTP/1.1" 499'], records.lines


# -- 2. multipart: a preamble is ignored, a bad body says what was expected --------------------------------------


def _search(client, body: bytes) -> tuple[int, object]:
    answer = client.post("/api/search", content=body, headers={"content-type": CT})
    return answer.status_code, answer.json()


@pytest.mark.parametrize(
    "before",
    [
        b"This is a multi-part message in MIME format.\r\n",
        b"\r\n",
        b"two lines\r\nof preamble, --XX-ish but not a boundary line\r\n",
        b"p" * (MAX_PREAMBLE_BYTES - 2) + b"\r\n",  # the longest preamble taken
    ],
)
def test_a_preamble_is_ignored_as_rfc_2046_says(make_client, before):
    """Before: 400 "Invalid multipart data." for each of these."""
    client = make_client()
    plain = _search(client, _TEXT + _CLOSE)
    assert plain[0] == 200
    status, found = _search(client, before + _TEXT + _CLOSE + b"an epilogue, ignored too")
    assert status == 200, found
    assert [r["id"] for r in found["results"]] == [r["id"] for r in plain[1]["results"]] and found["results"]


def test_a_preamble_and_padding_before_a_file_part_are_ignored(make_client, photos):
    """A classify with its image part after a preamble, its first boundary line padded with blanks (RFC 2046:
    transport padding receivers must handle): the same probabilities as the plain body."""
    client = make_client()
    image = _file_part(b"a.png", photos[0].read_bytes(), b"image")
    labels = b'--XX\r\nContent-Disposition: form-data; name="labels"\r\n\r\nred, blue\r\n'
    plain = client.post("/api/classify", content=image + labels + _CLOSE, headers={"content-type": CT})
    padded = b"preamble\r\n" + image.replace(b"--XX\r\n", b"--XX \t \r\n", 1) + labels + _CLOSE
    answer = client.post("/api/classify", content=padded, headers={"content-type": CT})
    assert plain.status_code == answer.status_code == 200, answer.text
    assert answer.json()["labels"] == plain.json()["labels"]


def test_a_ui_upload_with_a_preamble_is_stored(library, tmp_path, monkeypatch, photos):
    """Before: gradio's parser refused the preamble (after ours let it through); now the file is stored whole."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    data = photos[0].read_bytes()
    body = b"a preamble\r\n" + _file_part(b"sent.png", data, b"files") + _CLOSE
    with TestClient(create_app(library, ui=True), raise_server_exceptions=False) as client:
        answer = client.post("/gradio_api/upload", content=body, headers={"content-type": CT})
        assert answer.status_code == 200, answer.text
        (stored,) = answer.json()
        assert stored.endswith("sent.png") and Path(stored).read_bytes() == data
        refused = client.post("/gradio_api/upload", content=body.replace(b"--XX", b"--YY"),
                              headers={"content-type": CT})
    assert (refused.status_code, refused.json()) == (400, {
        "error": "bad_upload",
        "detail": "the upload: expected a part starting with the line '--XX' (the boundary its Content-Type "
                  f"names); its {len(body):,} bytes hold no such line",
    })


_BAD = [
    (b"", "the request body is empty: expected a part starting with the line '--XX' (the boundary its Content-Type "
          "names), then the closing multipart delimiter '--XX--'"),
    (_TEXT.replace(b"XX", b"YY") + b"--YY--\r\n",
     "the request body: expected a part starting with the line '--XX' (the boundary its Content-Type names); its "
     "74 bytes hold no such line"),
    (b"x" * (MAX_PREAMBLE_BYTES + 1) + b"\r\n" + _TEXT + _CLOSE,
     "the request body: expected a part starting with the line '--XX' (the boundary its Content-Type names) within "
     "its first 8,192 bytes, the most a preamble before it may be"),
    (_TEXT, "the request body: expected the closing line '--XX--' after part 1; the body ended inside it"),
    (_TEXT + _file_part(b"a.png", b"\x89PNG"), "the request body: expected the closing line '--XX--' after part 2; "
                                               "the body ended inside it"),
    (b"junk" + _TEXT + _CLOSE,
     "the request body: expected a part starting with the line '--XX' before the closing line '--XX--'; it holds "
     "no part (its 68 bytes before that line are a preamble: a boundary line begins a line)"),
    (b"--XXjunk\r\n" + _TEXT[6:] + _CLOSE,
     "the request body: expected a line break (CRLF) right after the boundary line '--XX' that begins part 1"),
    (_TEXT + b"--XX\r\nContent Disposition form-data\r\n\r\nx\r\n" + _CLOSE,
     "the request body: expected part 2's headers as lines 'Name: value' ending in CRLF, then an empty line"),
]


@pytest.mark.parametrize(("body", "detail"), _BAD)
def test_a_body_that_is_not_multipart_says_what_was_expected(make_client, body, detail):
    """Before: "Invalid multipart data." for the malformed ones; a body cut before its closing line was read as
    if whole (a search whose image part was cut searched by its text alone: 200), an empty one was a 422."""
    status, answer = _search(make_client(), body)
    assert (status, answer) == (400, {"error": "bad_request", "detail": detail})


def test_the_preamble_is_bounded_and_found_across_chunks():
    """A preamble is dropped wherever the chunks split its boundary line, and a body is refused at the chunk that
    passes the bound, before the rest of it is read."""
    from clipforge.server import multipart_bound
    from clipforge.server.multipart_bound import MultipartRefused, Preamble

    assert multipart_bound.MAX_PREAMBLE_BYTES == MAX_PREAMBLE_BYTES
    body = b"pre\r\namble\r\n" + _TEXT.replace(b"--XX\r\n", b"--XX  \r\n", 1) + _CLOSE
    expected = _TEXT + _CLOSE
    for size in (1, 2, 3, 5, 7, 64):
        framing = Preamble(b"XX", "the body")
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        passed = b"".join(framing.feed(c, last=i == len(chunks) - 1) for i, c in enumerate(chunks))
        assert passed == expected, size
        assert framing.skipped == len(b"pre\r\namble")
    framing = Preamble(b"XX", "the body")
    assert framing.feed(b"x" * MAX_PREAMBLE_BYTES) == b""
    with pytest.raises(MultipartRefused, match="within its first 8,192 bytes"):
        framing.feed(b"x" * 8)  # no boundary line can begin within the bound any more: refused now


def test_the_bound_on_delimiter_lines_holds_after_a_preamble(make_client):
    """The preamble's line is the one extra delimiter line the count always allowed: a part's data repeating
    `CRLF--XX-x` (stepped through byte by byte by python-multipart) is refused as it was without a preamble."""
    client = make_client()
    stepped = _TEXT[:-2] + b"\r\n--XX-x" * 200 + b"\r\n" + _CLOSE
    detail = ("the request body holds more than 6 multipart delimiter lines (one for each part and one to close it; "
              "a part's data may not contain '--XX')")
    for body in (stepped, b"preamble\r\n" + stepped):
        assert _search(client, body) == (400, {"error": "bad_request", "detail": detail})


# -- 3. Vary on the UI's page and config ------------------------------------------------------------------------

_VARY = {"host", "x-forwarded-host", "x-forwarded-proto", "x-gradio-server", "origin"}


def _vary(answer) -> set[str]:
    values = answer.headers.get_list("vary")
    assert len(values) == 1, values
    return {v.strip().lower() for v in values[0].split(",")}


def test_the_page_and_config_name_the_headers_they_depend_on_in_vary(ui_client):
    """Before: no `Vary` on either answer, built or kept."""
    cache = ui_client.app.state.ui_page_cache
    for path in ("/", "/config"):
        built, kept = ui_client.get(path), ui_client.get(path)
        head = ui_client.head(path)
        assert built.status_code == kept.status_code == head.status_code == 200
        assert _vary(built) == _vary(kept) == _vary(head) == _VARY, path
    assert len(cache.answers) == 2
    forwarded = ui_client.get("/config", headers={"X-Forwarded-Host": "photos.example"})
    assert _vary(forwarded) == _VARY and forwarded.json()["root"] == "http://photos.example"
    assert ui_client.get("/config").json()["root"] == "http://testserver"  # what Vary tells a cache in front


def test_forwarded_headers_are_trusted_as_before(library):
    """`Vary` changes no trust: uvicorn reads forwarded headers only from the proxies it is told of."""
    from clipforge.server.runner import build_server

    limits = ServerLimits()
    app = create_app(library, ui=False, limits=limits)
    plain = build_server(app, limits, forwarded_allow_ips="").config
    proxied = build_server(app, limits, forwarded_allow_ips="10.0.0.1").config
    assert (plain.proxy_headers, proxied.proxy_headers, proxied.forwarded_allow_ips) == (False, True, "10.0.0.1")
