"""Counting multipart delimiter lines across chunk edges (`multipart_bound`), checked by review 3 of session 53.

However a body is cut into chunks (a delimiter or its CRLF split at any byte), the count is that of the whole
body, and the delimiter past the bound never reaches the parser whole; a page's own upload of 1,000 files (the
most gradio's client sends in one request) passes in any chunking.
"""

from __future__ import annotations

from clipforge.server.multipart_bound import DelimiterCount
from clipforge.server.upload_form import MAX_FILES, UploadForm

BOUNDARY = b"----WebKitFormBoundaryAbAb"  # a page's kind of boundary, with a repeated tail
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY.decode()}"
DELIMITER = b"\r\n--" + BOUNDARY


def _body(parts: int, data: bytes = b"d") -> bytes:
    part = b'--%s\r\nContent-Disposition: form-data; name="files"; filename="p.png"\r\n\r\n%s\r\n'
    return b"".join(part % (BOUNDARY, data) for _ in range(parts)) + b"--%s--\r\n" % BOUNDARY


def _fed(chunks: list[bytes], max_parts: int) -> tuple[int, bytes]:
    """(delimiters counted, bytes let through) for `chunks` fed in turn until one is cut short."""
    count, passed = DelimiterCount(CONTENT_TYPE, max_parts), b""
    for chunk in chunks:
        allowed = count.feed(chunk)
        passed += chunk[:allowed]
        if allowed < len(chunk):
            break
    return count.seen, passed


def test_delimiters_are_counted_once_whatever_the_chunk_edges():
    # data that repeats the boundary's own tail and a CRLF: no false or double count
    body = _body(3, data=b"\r\n-" + BOUNDARY[-4:] * 3 + b"\r\n--" + BOUNDARY[:-1])
    assert body.count(DELIMITER) == 3
    halves = [[body[:i], body[i:]] for i in range(len(body) + 1)]
    for chunks in [*halves, [body[i : i + 1] for i in range(len(body))]]:
        assert _fed(chunks, max_parts=2) == (3, body)  # 3 lines: at the bound (parts + 1) all of it passes
        seen, passed = _fed(chunks, max_parts=1)
        # the third line never reaches the parser whole
        assert seen == 3 and passed.count(DELIMITER) == 2, chunks
        assert body.startswith(passed) and len(passed) >= body.rfind(DELIMITER)


def test_an_upload_of_a_thousand_files_passes_in_any_chunking():
    body = _body(MAX_FILES, data=b"\x89PNG" + bytes(range(40)))
    for size in (7, 4093, 65536):
        form = UploadForm(CONTENT_TYPE)
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        for i, chunk in enumerate(chunks):
            form.feed(chunk, last=i == len(chunks) - 1)
        assert (form.files, form.ended) == (MAX_FILES, True)
