"""Multipart bodies whose data repeats the delimiter line, attacked through the REST API and the UI's upload route.

python-multipart steps byte by byte in Python through a `CRLF--boundary` that is followed by neither CRLF nor
`--`: a 19.5 MB file part of `CRLF--boundary-x` repeated cost 1.5 s of CPU on the event loop behind an anonymous
`POST /api/search` (a plain 19.5 MB part: 70 ms), 3.2 s behind `/gradio_api/upload` (parsed twice) and was
stored there; four at once held `/healthz` up to 0.6 s (median 182 ms). Found by review 53: both now refuse a
body once it holds more delimiter lines than its parts can, before the parser reads past that line.
"""

from __future__ import annotations

import pytest
from python_multipart.multipart import MultipartParser

BOUNDARY = b"XyZbOuNdArY"
HOSTILE = (b"\r\n--" + BOUNDARY + b"-x") * 2_000  # 34 kB: 2,000 delimiter lines that end nothing


def _multipart(*parts: tuple[bytes, bytes | None, bytes]) -> bytes:
    """(name, filename or None, data) parts as one body."""
    out = b""
    for name, filename, data in parts:
        disposition = b'form-data; name="%s"' % name + (b'; filename="%s"' % filename if filename else b"")
        out += b"--%s\r\nContent-Disposition: %s\r\n\r\n%s\r\n" % (BOUNDARY, disposition, data)
    return out + b"--%s--\r\n" % BOUNDARY


@pytest.fixture()
def parsed_bytes(monkeypatch) -> list[int]:
    """Bytes given to python-multipart's parser during the test, by any caller (starlette, gradio, the guard)."""
    seen: list[int] = []
    write = MultipartParser.write

    def counting(self, data: bytes) -> int:
        seen.append(len(data))
        return write(self, data)

    monkeypatch.setattr(MultipartParser, "write", counting)
    return seen


def _post(client, path: str, body: bytes):
    return client.post(
        path, content=body, headers={"content-type": f"multipart/form-data; boundary={BOUNDARY.decode()}"}
    )


def test_a_rest_body_repeating_its_delimiter_is_refused_before_it_is_parsed(ui_client, photos, parsed_bytes):
    body = _multipart((b"top_k", None, b"2"), (b"image", b"q.png", HOSTILE))
    answer = _post(ui_client, "/api/search", body)
    assert answer.status_code == 400, answer.text
    assert answer.json() == {
        "error": "bad_request",
        "detail": "the request body holds more than 6 multipart delimiter lines (one for each part and one to "
        "close it; a part's data may not contain '--XyZbOuNdArY')",
    }
    assert sum(parsed_bytes) < 1_000  # the parser read the first parts only, never the 34 kB of delimiters
    # a real form of the same route still works: the bound is its parts
    real = _multipart(
        (b"top_k", None, b"2"), (b"text", None, b"red"), (b"image", b"q.png", photos[0].read_bytes())
    )
    found = _post(ui_client, "/api/search", real)
    assert found.status_code == 200 and len(found.json()["results"]) == 2, found.text


def test_an_upload_repeating_its_delimiter_is_refused_before_gradio_reads_it(ui_client, parsed_bytes):
    answer = _post(ui_client, "/gradio_api/upload", _multipart((b"files", b"a.png", HOSTILE)))
    assert answer.status_code == 400, answer.text
    assert answer.json() == {
        "error": "bad_upload",
        "detail": "the upload holds more than 1,002 multipart delimiter lines (one for each part and one to "
        "close it; a part's data may not contain '--XyZbOuNdArY')",
    }
    assert sum(parsed_bytes) < 20_000  # 1,002 of the 2,000 lines, by the guard's parser alone; gradio's none
    many = _post(
        ui_client, "/gradio_api/upload", _multipart(*[(b"files", b"t%d.png" % i, b"x") for i in range(1001)])
    )
    assert (
        many.status_code == 413 and many.json()["error"] == "too_many_files"
    )  # still the parts' own refusal
