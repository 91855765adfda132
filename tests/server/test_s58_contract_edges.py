"""Edges of the REST contract an integrator met: the token's alphabet, a BOM in --token-file, AVIF originals.

* A token of non-ASCII characters started fine and could never be presented (the ASGI server reads header bytes as
  Latin-1, curl sends UTF-8); a `--token-file` written with a UTF-8 byte order mark (PowerShell, Notepad) held a
  token no client could type. Now the first is refused at start in one line, the mark is dropped.
* An uploaded AVIF was served as `image/avif`, a type `GET /api/images/{id}` did not declare.
"""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image, features

from clipforge.server import create_app
from clipforge.server.runner import read_token_file
from clipforge.server.security import TokenChecker


def test_a_token_that_http_cannot_carry_is_refused_at_start():
    """Before: accepted, then every header was "the token is wrong"."""
    with pytest.raises(ValueError) as refused:
        TokenChecker("pässwörd-123")
    assert str(refused.value) == ("the server token must be printable ASCII, as HTTP headers carry it: its character "
                                  "2 is not (choose letters, digits and punctuation)")
    assert TokenChecker("a plain-token_with.punctuation!~ and spaces").enabled


def test_a_token_file_with_a_byte_order_mark_gives_the_token_without_it(tmp_path, library):
    """Before: the token was '\\ufefftok-bom' and `X-Token: tok-bom` got 401."""
    path = tmp_path / "token"
    path.write_bytes(b"\xef\xbb\xbftok-bom\r\n")
    token = read_token_file(path)
    assert token == "tok-bom"
    with TestClient(create_app(library, token=token)) as client:
        image = io.BytesIO()
        Image.new("RGB", (40, 30), (200, 30, 30)).save(image, "PNG")
        answer = client.post("/api/images", files={"file": ("r.png", image.getvalue(), "image/png")},
                             headers={"X-Token": "tok-bom"})
    assert answer.status_code == 201, answer.text


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow cannot write AVIF")
def test_an_avif_original_is_served_as_a_type_the_contract_declares(library):
    """Before: served as image/avif, absent from the route's declared content types."""
    data = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 120, 200)).save(data, "AVIF")
    with TestClient(create_app(library)) as client:
        added = client.post("/api/images", files={"file": ("a.avif", data.getvalue(), "image/avif")})
        assert added.status_code == 201, added.text
        original = client.get(f"/api/images/{added.json()['image']['id']}")
        declared = client.get("/openapi.json").json()["paths"]["/api/images/{image_id}"]["get"]["responses"]["200"]
    assert original.status_code == 200 and original.headers["content-type"] == "image/avif"
    assert "image/avif" in declared["content"] and "image/jpeg" in declared["content"]


def test_a_utf16_token_file_from_powershell_gives_its_token(tmp_path):
    """Review: Windows PowerShell 5.1's `>` writes UTF-16 with a BOM: a raw codec error, exit 2."""
    path = tmp_path / "token"
    path.write_bytes("tok-utf16\r\n".encode("utf-16"))
    assert read_token_file(path) == "tok-utf16"
    (tmp_path / "latin1").write_bytes(b"caf\xe9-token")
    from clipforge.server.runner import ServeError

    with pytest.raises(ServeError, match=r"it is not UTF-8 text \(save it as UTF-8\)"):
        read_token_file(tmp_path / "latin1")
