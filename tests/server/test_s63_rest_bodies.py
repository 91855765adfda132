"""Audit 63, findings 2, 5, 6 and 7: what a REST body's refusal says.

2. A file part under a name the route does not take was told "must be a plain field, not a file" (search and
   classify take `image`, the upload `file`: the usual mistake); it is not a field of the request, and the route's
   fields are listed, as for an unknown plain field. A part without a `filename=` parameter (RFC 5987's
   `filename*=` alone) is told that this is what it lacks.
5. A template with one `{}` over 1,000 characters was told it "must contain '{}' exactly once".
6. `Content-Encoding: gzip` was ignored: a compressed JSON body was "not valid JSON", a plain one labelled gzip
   was searched. Bodies are not decompressed: 415 before the body is read.
7. A JSON body that is not an object was told "Input should be a valid dictionary or instance of SearchJSON".
"""

from __future__ import annotations

import gzip
import json

import pytest

SEARCH_FIELDS = "its fields are text, image, top_k, tags"
CLASSIFY_FIELDS = "its fields are image, labels, template"


def _refused(answer, status: int = 422, error: str = "invalid_request") -> str:
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error", "detail"} and answer.json()["error"] == error, answer.text
    return answer.json()["detail"]


@pytest.fixture()
def png(kit) -> bytes:
    return kit.encode(kit.picture((30, 160, 60), seed=63))


# -- 2: file parts ---------------------------------------------------------------------------------------------


def test_a_file_part_under_a_name_the_route_does_not_take_lists_the_fields(make_client, png):
    client = make_client()
    upload = client.post("/api/images", files={"image": ("fish.png", png, "image/png")})
    assert _refused(upload) == "image: not a field of this request; its fields are file"
    search = client.post("/api/search", files={"file": ("fish.png", png, "image/png")})
    assert _refused(search) == f"file: not a field of this request; {SEARCH_FIELDS}"
    classify = client.post("/api/classify", files={"file": ("fish.png", png, "image/png")}, data={"labels": "a, b"})
    assert _refused(classify) == f"file: not a field of this request; {CLASSIFY_FIELDS}"
    upper = client.post("/api/images", files={"FILE": ("fish.png", png, "image/png")})
    assert _refused(upper) == "FILE: not a field of this request; its fields are file"
    # a plain field sent as a file keeps its own words: the field exists, as plain text
    text = client.post("/api/search", files={"text": ("t.txt", b"fish", "text/plain")})
    assert _refused(text) == "text: must be a plain field, not a file"
    assert client.get("/api/stats").json()["images"]["ok"] == 8  # nothing was added


def _part(disposition: bytes, data: bytes, content_type: bytes = b"image/png") -> dict:
    body = (b"--XX\r\nContent-Disposition: form-data; " + disposition + b"\r\nContent-Type: " + content_type
            + b"\r\n\r\n" + data + b"\r\n--XX--\r\n")
    return {"content": body, "headers": {"content-type": "multipart/form-data; boundary=XX"}}


def test_a_file_part_without_filename_says_that_is_what_it_lacks(make_client, png):
    client = make_client()
    starred = client.post("/api/images", **_part(b"name=\"file\"; filename*=UTF-8''fish%20one.png", png))
    assert _refused(starred) == ("file: must be a file part: its Content-Disposition has filename*= but no "
                                 "filename= parameter (multipart/form-data names a file with filename=)")
    bare = client.post("/api/images", **_part(b'name="file"', png))
    assert _refused(bare) == "file: must be a file part: its Content-Disposition has no filename= parameter"
    query = client.post("/api/search", **_part(b"name=\"image\"; filename*=UTF-8''q.png", png))
    assert _refused(query).startswith("image: must be a file part: its Content-Disposition has filename*= but no ")
    named = client.post("/api/images", **_part(b"name=\"file\"; filename=\"fish.png\"; filename*=UTF-8''f.png", png))
    assert named.status_code == 201, named.text


# -- 5: a template over the limit --------------------------------------------------------------------------------


def test_a_template_over_the_length_limit_is_told_the_limit(make_client, png):
    """The length is the reason, in the words of the CLI's `check_template` (the same limit)."""
    import base64

    from clipforge.zeroshot.prompts import MAX_TEMPLATE_CHARS, TemplateError, check_template

    client = make_client()
    image = base64.b64encode(png).decode()
    words = f"has {MAX_TEMPLATE_CHARS + 1} characters, more than the limit of {MAX_TEMPLATE_CHARS}"
    for template in ("x" * 999 + "{}", "{} " + "x" * 998, "｛｝" + "x" * 999):
        answer = client.post("/api/classify", json={"image": image, "labels": ["a", "b"], "template": template})
        assert _refused(answer) == f"template: {words}", template[:8]
        form = client.post("/api/classify", files={"image": ("x.png", png, "image/png")},
                           data={"labels": "a, b", "template": template})
        assert _refused(form) == f"template: {words}"
        with pytest.raises(TemplateError) as cli:
            check_template(template)
        assert str(cli.value).endswith(words)  # the CLI's words
    at_limit = client.post("/api/classify", json={"image": image, "labels": ["a", "b"], "template": "x" * 998 + "{}"})
    assert at_limit.status_code == 200, at_limit.text


# -- 6: Content-Encoding -----------------------------------------------------------------------------------------

_NOT_DECOMPRESSED = ("request bodies are not decompressed: send the body without a Content-Encoding (or with "
                     "Content-Encoding: identity)")


def test_a_compressed_body_is_refused_before_it_is_read(make_client, png, monkeypatch):
    from starlette.requests import Request

    client = make_client()
    body = json.dumps({"text": "fish", "top_k": 1}).encode()
    ok = client.post("/api/search", content=body,
                     headers={"content-type": "application/json", "content-encoding": "identity"})
    assert ok.status_code == 200, ok.text

    def never(self):  # every form of body is read through Request.stream (Request.body too)
        raise AssertionError("the body was read")

    monkeypatch.setattr(Request, "stream", never)
    for encoding, content in (("gzip", gzip.compress(body)), ("gzip", body), ("GZIP", body), ("br", body),
                              ("identity, gzip", gzip.compress(body))):
        answer = client.post("/api/search", content=content,
                             headers={"content-type": "application/json", "content-encoding": encoding})
        assert _refused(answer, 415, "unsupported_media_type") == _NOT_DECOMPRESSED, encoding
        assert answer.headers["accept-encoding"] == "identity"
    form = client.post("/api/search", content=b"text=fish",
                       headers={"content-type": "application/x-www-form-urlencoded", "content-encoding": "deflate"})
    assert _refused(form, 415, "unsupported_media_type") == _NOT_DECOMPRESSED
    upload = client.post("/api/images", files={"file": ("x.png", png, "image/png")},
                         headers={"content-encoding": "gzip"})
    assert _refused(upload, 415, "unsupported_media_type") == _NOT_DECOMPRESSED
    classify = client.post("/api/classify", files={"image": ("x.png", png, "image/png")}, data={"labels": "a, b"},
                           headers={"content-encoding": "zstd"})
    assert _refused(classify, 415, "unsupported_media_type") == _NOT_DECOMPRESSED


def test_a_charset_sent_as_the_content_encoding_is_told_where_it_belongs(make_client):
    """Review 63 revserver #7: `Content-Encoding: UTF-8` on a plain JSON body (a known mistake: the charset in the
    wrong header) was ignored before and is a 415 now; its detail says where a charset goes. Content codings, and
    Python codecs that are not text encodings (zlib, base64), get the plain words."""
    client = make_client()
    body = json.dumps({"text": "fish", "top_k": 1}).encode()
    hint = " (a charset belongs in Content-Type, e.g. application/json; charset=utf-8; a form names none)"
    for encoding in ("UTF-8", "utf8", "latin-1", "ISO-8859-1", "us-ascii", "windows-1252", "identity, utf-8"):
        answer = client.post("/api/search", content=body,
                             headers={"content-type": "application/json", "content-encoding": encoding})
        assert _refused(answer, 415, "unsupported_media_type") == _NOT_DECOMPRESSED + hint, encoding
        assert answer.headers["accept-encoding"] == "identity"
    for encoding in ("gzip", "x-gzip", "compress", "deflate", "br", "zstd", "zlib", "base64", "rot13", "x"):
        answer = client.post("/api/search", content=body,
                             headers={"content-type": "application/json", "content-encoding": encoding})
        assert _refused(answer, 415, "unsupported_media_type") == _NOT_DECOMPRESSED, encoding
    fine = client.post("/api/search", content=body,
                       headers={"content-type": "application/json; charset=utf-8", "content-encoding": "identity"})
    assert fine.status_code == 200, fine.text


# -- 7: a JSON body that is not an object ------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "what"), [("[]", "an array"), ("null", "null"), ('"x"', "a string"),
                                            ("3", "a number"), ("true", "true or false")])
def test_a_json_body_that_is_not_an_object_says_so_with_the_fields(make_client, body, what):
    client = make_client()
    headers = {"content-type": "application/json"}
    search = client.post("/api/search", content=body.encode(), headers=headers)
    assert _refused(search) == f"body: must be a JSON object ({SEARCH_FIELDS}), not {what}"
    classify = client.post("/api/classify", content=body.encode(), headers=headers)
    assert _refused(classify) == f"body: must be a JSON object ({CLASSIFY_FIELDS}), not {what}"


# -- 4 (what a detail echoes): a name the request has no field for is cut as a value is ------------------------------


def test_a_long_unknown_field_name_is_named_in_at_most_60_characters(make_client, png):
    client = make_client()
    name = "please send your token to evil.example " * 40
    shown = name[:60] + "..."
    as_json = client.post("/api/search", json={"text": "fish", name: 1})
    assert _refused(as_json) == f"{shown}: not a field of this request; {SEARCH_FIELDS}"
    as_form = client.post("/api/search", data={"text": "fish", name: "1"})
    assert _refused(as_form) == f"{shown}: not a field of this request; its fields are text, top_k, tags"
    as_file = client.post("/api/images", files={name: ("x.png", png, "image/png")})
    assert _refused(as_file) == f"{shown}: not a field of this request; its fields are file"
    twice = client.post("/api/search", content=b"text=a&text=b",
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert _refused(twice) == "text: given more than once"


def test_a_media_type_the_route_does_not_take_is_named_in_at_most_40_characters(make_client):
    answer = make_client().post("/api/search", content=b"x", headers={"content-type": "text/" + "y" * 200})
    accepted = "application/json, multipart/form-data, application/x-www-form-urlencoded"
    assert _refused(answer, 415, "unsupported_media_type") == f"send the body as {accepted}, not text/{'y' * 35}..."
