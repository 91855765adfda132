"""Review of attack session 54's UTF-8 rule for multipart text fields: the rule is about the request's fields.

`body_parsing._Utf8Fields` checked every plain part, so a part the request has no field for, whose bytes were
not UTF-8, was reported as a bad encoding ("bogus: expected UTF-8 text"): the client fixed its bytes and only
then learnt the field does not exist. A part of an unknown name is refused by its name, whatever its bytes.
"""

from __future__ import annotations

import pytest

_FIELDS = "its fields are text, image, top_k, tags"


def _multipart(name: bytes, value: bytes) -> dict:
    body = b'--XX\r\nContent-Disposition: form-data; name="' + name + b'"\r\n\r\n' + value + b"\r\n--XX--\r\n"
    return {"content": body, "headers": {"content-type": "multipart/form-data; boundary=XX"}}


@pytest.mark.parametrize("value", [b"x", b"caf\xe9"])
def test_a_part_the_request_has_no_field_for_is_refused_by_its_name(make_client, value):
    answer = make_client().post("/api/search", **_multipart(b"bogus", value))
    assert answer.status_code == 422
    assert (
        answer.json()["detail"] == f"bogus: not a field of this request; {_FIELDS}"
    )  # before: expected UTF-8


def test_a_field_of_the_request_must_still_be_utf8(make_client):
    client = make_client()
    for name in (b"text", b"top_k"):
        answer = client.post("/api/search", **_multipart(name, b"caf\xe9"))
        assert (
            answer.status_code == 422 and answer.json()["detail"] == f"{name.decode()}: expected UTF-8 text"
        )
    image = client.post(
        "/api/search", **_multipart(b"image", b"caf\xe9")
    )  # a file field: a plain part is refused
    assert image.status_code == 422 and image.json()["detail"] == (
        "image: must be a file part: its Content-Disposition has no filename= parameter"), image.text
