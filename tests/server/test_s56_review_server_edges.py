"""Review of the multipart preamble (`multipart_bound.Preamble`): what it does to bodies clients send.

* python-multipart skips line breaks (CR, LF) before a body's first boundary line, so a body beginning with a
  bare LF (or `CRLF LF`) was read whole before `Preamble` came. `Preamble` looks for the first `CRLF--boundary`:
  `\\n--XX` at the start is no such line, so the first part was taken for a preamble and silently dropped, and
  the second read as the first (a search lost its `top_k`, a UI upload of two files stored the second only, each
  answered 200).
* A Content-Type naming an empty boundary (`boundary=`) was answered "expected a line break (CRLF) right after
  the boundary line '--' that begins part 1", which blames the body for what its header got wrong; one of over
  256 characters (python-multipart's bound) was still "Invalid multipart data." on the REST routes.
* python-multipart's "Did not find CRLF after boundary padding" is raised at a boundary line after a part's data,
  the line that begins the next part; the refusal named the part before it.
* `Preamble` fed in any chunking gives what it gives for the whole body, and what a model of its rules gives.
"""

from __future__ import annotations

import random

import pytest

from clipforge.server.multipart_bound import MAX_PREAMBLE_BYTES, MultipartRefused, Preamble

CT = "multipart/form-data; boundary=XX"
_TOP_K = b'--XX\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n1\r\n'
_TEXT = b'--XX\r\nContent-Disposition: form-data; name="text"\r\n\r\na red photo\r\n'
_CLOSE = b"--XX--\r\n"


def _file_part(name: bytes, data: bytes) -> bytes:
    return (b'--XX\r\nContent-Disposition: form-data; name="files"; filename="%s"\r\nContent-Type: image/png\r\n\r\n'
            % name) + data + b"\r\n"


@pytest.mark.parametrize("before", [b"\n", b"\n\n", b"\r\n\n", b"\r\r\n", b"\n\r\n"])
def test_a_body_that_begins_with_line_breaks_keeps_its_first_part(make_client, before):
    """Before: `\\n`, `\\n\\n` and `\\r\\n\\n` first lost the `top_k` part (8 results, 200), as python-multipart
    alone never did."""
    client = make_client()
    body = _TOP_K + _TEXT + _CLOSE
    plain = client.post("/api/search", content=body, headers={"content-type": CT})
    answer = client.post("/api/search", content=before + body, headers={"content-type": CT})
    assert plain.status_code == answer.status_code == 200, answer.text
    assert len(plain.json()["results"]) == 1
    assert answer.json()["results"] == plain.json()["results"]


def test_a_ui_upload_that_begins_with_a_line_break_hands_gradio_every_file():
    """What gradio's upload route is handed (`UploadForm.feed`) of a body opening with LF: both file parts. Before:
    the body from the second part on (gradio stored `second.png` alone and answered 200 with its one path)."""
    from clipforge.server.upload_form import UploadForm

    parts = _file_part(b"first.png", b"\x89PNG first") + _file_part(b"second.png", b"\x89PNG second") + _CLOSE
    body = b"\n" + parts
    for size in (1, 7, len(body)):
        form = UploadForm(CT)
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        handed = b"".join(form.feed(c, last=i == len(chunks) - 1) for i, c in enumerate(chunks))
        assert (handed, form.files, form.ended) == (parts, 2, True), size


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=", 'multipart/form-data; boundary=""'])
def test_an_empty_boundary_is_named_as_the_fault(make_client, content_type):
    """Before: "expected a line break (CRLF) right after the boundary line '--' that begins part 1"."""
    answer = make_client().post("/api/search", content=_TEXT + _CLOSE, headers={"content-type": content_type})
    assert (answer.status_code, answer.json()) == (400, {
        "error": "bad_request",
        "detail": "the request body: expected a multipart boundary in its Content-Type (boundary=...), not an "
                  "empty one",
    })


def test_a_padded_boundary_line_gone_wrong_names_the_part_it_begins(make_client):
    """python-multipart's "Did not find CRLF after boundary padding" comes from a boundary line after a part's
    data: the line that begins the next part. Before: "... that begins part 1" for the second part's line."""
    padded = _TOP_K.replace(b"--XX\r\n", b"--XX  junk\r\n", 1)
    answer = make_client().post("/api/search", content=_TEXT + padded + _CLOSE, headers={"content-type": CT})
    assert (answer.status_code, answer.json()) == (400, {
        "error": "bad_request",
        "detail": "the request body: expected a line break (CRLF) right after the boundary line '--XX' that begins "
                  "part 2",
    })
    from clipforge.server.upload_form import UploadForm, UploadRefused

    second = _file_part(b"b.png", b"\x89PNG").replace(b"--XX\r\n", b"--XX \t junk\r\n", 1)
    with pytest.raises(UploadRefused) as refused:
        UploadForm(CT).feed(_file_part(b"a.png", b"\x89PNG") + second + _CLOSE, last=True)
    assert (refused.value.status, refused.value.detail) == (
        400, "the upload: expected a line break (CRLF) right after the boundary line '--XX' that begins part 2")


def test_a_boundary_python_multipart_refuses_is_named(make_client):
    """A boundary over python-multipart's 256 characters: the UI's upload route said so; the REST routes said
    "Invalid multipart data." (the words the worded refusals replaced)."""
    boundary = "b" * 300
    body = _TEXT.replace(b"XX", boundary.encode()) + _CLOSE.replace(b"XX", boundary.encode())
    answer = make_client().post("/api/search", content=body,
                                headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert (answer.status_code, answer.json()) == (400, {
        "error": "bad_request",
        "detail": "the request body: the multipart boundary its Content-Type names is refused (Boundary length 300 "
                  "exceeds maximum of 256)",
    })


def test_line_breaks_before_the_first_boundary_line_are_bounded_as_a_preamble():
    """Megabytes of line breaks are refused once they pass the bound, not read to their end."""
    framing = Preamble(b"XX", "the body")
    assert framing.feed(b"\r\n" * (MAX_PREAMBLE_BYTES // 2)) == b""
    with pytest.raises(MultipartRefused, match="within its first 8,192 bytes"):
        framing.feed(b"\n" * 16)
    framing = Preamble(b"XX", "the body")
    assert framing.feed(b"\n" * MAX_PREAMBLE_BYTES + b"--XX\r\n", last=False) == b"--XX\r\n"
    with pytest.raises(MultipartRefused, match="within its first 8,192 bytes"):  # one chunk, far past the bound
        Preamble(b"XX", "the body").feed(b"\n" * (MAX_PREAMBLE_BYTES + 20) + _TEXT + _CLOSE)


# -- Preamble against a model of its rules, in every chunking ----------------------------------------------------

_PIECES = [b"\r\n", b"\n", b"\r", b"--XX", b"--X", b"-", b"X", b" ", b"\t", b"a", b"--XX--", b"\r\n--XX", b"\xef\xbb\xbf"]


def _model(body: bytes, most: int) -> tuple[bytes, int] | None:
    """What `Preamble(b"XX", ..., most)` passes on of `body` and the bytes it skips (None: refused). Line breaks
    before the first boundary line are skipped (as python-multipart skipped them); the first `CRLF--XX` of the
    rest (or `--XX` at its start) begins the parts; at most `most` bytes before it; blanks after it dropped."""
    lead = len(body) - len(body.lstrip(b"\r\n"))
    data = b"\r\n" + body[lead:]
    at = data.find(b"\r\n--XX")
    skipped = lead + at - 2
    if at == -1 or skipped > most:
        return None
    rest = data[at + 6:]
    unpadded = rest.lstrip(b" \t")
    if len(rest) - len(unpadded) > most:
        return None
    return b"--XX" + unpadded, max(0, skipped)


def _fed(chunks: list[bytes], most: int) -> tuple[bytes, int] | None:
    framing = Preamble(b"XX", "the body", most)
    passed = []
    try:
        for i, chunk in enumerate(chunks):
            passed.append(framing.feed(chunk, last=i == len(chunks) - 1))
    except MultipartRefused:
        return None
    return b"".join(passed), framing.skipped


def test_the_preamble_gives_the_same_in_every_chunking_as_its_model():
    """5,000 random bodies of boundary-like pieces: whole, byte by byte and in random chunks (empty ones too)."""
    rng = random.Random(56)
    for _ in range(5000):
        body = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 20)))
        most = rng.choice([0, 1, 2, 5, 8, 100])
        expected = _model(body, most)
        cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randint(0, 6)))) if len(body) > 1 else []
        edges = [0, *cuts, len(body)]
        random_chunks = [body[a:b] for a, b in zip(edges, edges[1:], strict=False)]
        random_chunks.insert(rng.randint(0, len(random_chunks)), b"")
        for chunks in ([body], [body[i:i + 1] for i in range(len(body))] or [b""], random_chunks):
            assert _fed(chunks, most) == expected, (body, most, chunks)
