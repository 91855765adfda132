"""REST uploads keep the client's file name (issue 20.5), and that name is attacker input.

A photo added with `POST /api/images` shows under the name it was sent with (`cat photo.jpg`), as
one added through the web page does, instead of as its sha256. The name is never a path: only a
cleaned last component becomes the stem of a file inside the library's uploads folder
(``uploads/<sha[:2]>/<sha>/<stem><ext>``, the extension from the decoded bytes), so traversal,
absolute paths, control characters, NUL, overlong and empty names cannot place, name or hide a
file anywhere else, and two different photos sent under one name are both kept.
The multipart bodies are written by hand so the server sees the bytes exactly as an attacker
sends them (an HTTP client library would escape some of them).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

BOUNDARY = "cfNameBoundary"


def _post(client, filename: bytes | None, data: bytes, token: str = "tok"):
    disposition = b'form-data; name="file"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    body = (f"--{BOUNDARY}\r\n".encode() + b"Content-Disposition: " + disposition + b"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + data + f"\r\n--{BOUNDARY}--\r\n".encode())
    return client.post("/api/images", content=body, headers={
        "content-type": f"multipart/form-data; boundary={BOUNDARY}", "authorization": f"Bearer {token}"})


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _shown_name_is_safe(name: str) -> None:
    assert "/" not in name and "\\" not in name and "\0" not in name, name
    assert all(ch.isprintable() for ch in name), repr(name)
    assert not name.startswith(".") and name not in ("", ".", ".."), name
    assert unicodedata.is_normalized("NFC", name), name
    assert len(name.encode("utf-8")) <= 130, len(name.encode("utf-8"))  # 120-byte stem + extension


@pytest.fixture()
def upload_client(make_client):
    return make_client(token="tok")


def test_a_rest_upload_keeps_its_file_name_and_search_shows_it(upload_client, library, kit):
    data = kit.encode(kit.picture((120, 80, 40), seed=101), "JPEG")
    added = _post(upload_client, b"cat photo.jpg", data)
    assert added.status_code == 201, added.text
    assert added.json()["image"]["filename"] == "cat photo.jpg"
    found = upload_client.post("/api/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"top_k": 1})
    assert found.status_code == 200, found.text
    assert found.json()["results"][0]["filename"] == "cat photo.jpg"
    by_text = upload_client.post("/api/search", json={"text": "a photo", "top_k": 20}).json()["results"]
    assert "cat photo.jpg" in {hit["filename"] for hit in by_text}
    record = library.get_image(added.json()["image"]["id"])
    assert Path(record.path).parent.parent.parent == library.paths.uploads_dir.resolve()
    # httpx's own multipart encoding (what most clients send) gives the same name
    other = kit.encode(kit.picture((40, 80, 120), seed=102), "JPEG")
    sent = upload_client.post("/api/images", files={"file": ("dog photo.jpg", other, "image/jpeg")},
                              headers={"authorization": "Bearer tok"})
    assert sent.status_code == 201 and sent.json()["image"]["filename"] == "dog photo.jpg"


# (what the client sends as its file name, the name the library shows; None: the sha256 stands in)
ATTACKS = {
    "traversal": (b"../../../../escaped.png", "escaped.png"),
    "traversal_backslash": (b"..\\..\\..\\escaped.png", "escaped.png"),
    "traversal_mixed": (b"a/..\\../b/../../escaped.png", "escaped.png"),
    "absolute": (b"/etc/cron.d/evil.png", "evil.png"),
    "absolute_windows": (b"C:\\Windows\\System32\\evil.png", "evil.png"),
    "dot_dot": (b"..", None),
    "dot": (b".", None),
    "dots_and_spaces": (b" . .. ... ", None),
    "empty": (b"", None),
    "blank": (b"   ", None),
    "hidden": (b".bashrc", "bashrc.png"),
    "control_chars": (b"evil\x1b[31mred\x07\x08\x7f.png", "evil__31mred.png"),
    "nul": (b"a\x00b.png", "a_b.png"),
    "newline_escape": (b"x%0d%0aSet-Cookie: a=b.png", "x_0d_0aSet-Cookie_ a_b.png"),
    "bidi_override": ("photo\u202egnp.exe".encode(), "photo_gnp.png"),
    "nfd": ("cafe\u0301.png".encode(), "caf\u00e9.png"),
    "fullwidth_slash": ("a\uff0fb\u2215c.png".encode(), "a_b_c.png"),
    "lone_utf8_continuation": (b"bad\x80\xffname.png", "bad_\u00ffname.png"),  # not UTF-8: read as Latin-1, then cleaned
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_an_attacker_file_name_is_only_ever_a_clean_stem_inside_the_uploads_folder(upload_client, library, kit,
                                                                                  tmp_path, name):
    raw, expected = ATTACKS[name]
    before = _files(tmp_path)
    data = kit.encode(kit.picture((30, 200, 90), seed=200 + sorted(ATTACKS).index(name)))
    added = _post(upload_client, raw, data)
    assert added.status_code == 201, added.text
    shown = added.json()["image"]["filename"]
    record = library.get_image(added.json()["image"]["id"])
    stored = Path(record.path)
    uploads = library.paths.uploads_dir.resolve()
    # the one new file is a regular file inside the uploads folder, holding the uploaded bytes
    new = _files(tmp_path) - before
    outside = [p for p in new if not p.resolve().is_relative_to(library.paths.root.resolve())]
    assert not outside, outside
    assert stored.resolve().is_relative_to(uploads) and stored.is_file() and not stored.is_symlink()
    assert stored.read_bytes() == data and stored in new
    assert os.path.realpath(stored) == str(stored)  # no component of the stored path is a link or `..`
    _shown_name_is_safe(shown)
    assert shown == stored.name
    assert shown == (expected or f"{record.sha256}.png")


def test_an_overlong_file_name_is_cut_before_any_work_on_it(upload_client, library, kit, monkeypatch):
    """Cleaning a name character by character costs time that grows with the square of its length (seconds
    per 100,000 characters, holding the GIL). The multipart parser caps a part's header at about 4 KB today;
    the server does not rely on it: it keeps at most 255 characters of the last path component before the
    library sees the name, and the stored name is at most 120 bytes plus the extension."""
    seen: list[int] = []
    original = type(library).add_bytes

    def spy(self, data, filename=None):
        seen.append(len(filename or ""))
        return original(self, data, filename=filename)

    monkeypatch.setattr(type(library), "add_bytes", spy)
    data = kit.encode(kit.picture((200, 200, 30), seed=300))
    added = _post(upload_client, ("\u00e9" * 1900 + ".png").encode(), data)
    assert added.status_code == 201, added.text
    assert seen == [255], seen
    shown = added.json()["image"]["filename"]
    _shown_name_is_safe(shown)
    assert shown == "\u00e9" * 60 + ".png"  # 120 bytes of a two-byte letter
    # a long path: only its last component counts
    other = kit.encode(kit.picture((200, 30, 200), seed=301))
    added = _post(upload_client, b"d/" * 1800 + b"short.png", other)
    assert added.status_code == 201 and added.json()["image"]["filename"] == "short.png"
    assert seen[-1] == len("short.png")
    # a 2 MB name: refused by the form parser, readably, and nothing is stored
    before = _files(library.paths.uploads_dir)
    refused = _post(upload_client, b"x" * 2_000_000 + b".png", kit.encode(kit.picture((1, 2, 3), seed=302)))
    assert refused.status_code == 400 and refused.json()["error"] == "bad_request", refused.text
    assert _files(library.paths.uploads_dir) == before and len(seen) == 2


def test_two_photos_sent_under_one_name_are_both_kept(upload_client, library, kit):
    first = kit.encode(kit.picture((10, 10, 200), seed=400), "JPEG")
    second = kit.encode(kit.picture((200, 10, 10), seed=401), "JPEG")
    a = _post(upload_client, b"same.jpg", first)
    b = _post(upload_client, b"same.jpg", second)
    assert a.status_code == b.status_code == 201
    ra, rb = (library.get_image(r.json()["image"]["id"]) for r in (a, b))
    assert ra.id != rb.id and ra.path != rb.path
    assert Path(ra.path).name == Path(rb.path).name == "same.jpg"
    assert Path(ra.path).read_bytes() == first and Path(rb.path).read_bytes() == second
    # the same bytes again under another name: the image already there, under its first name
    again = _post(upload_client, b"renamed.jpg", first)
    assert again.status_code == 200 and again.json()["image"] == a.json()["image"]
    assert sorted(p.name for p in library.paths.uploads_dir.rglob("*") if p.is_file()) == ["same.jpg", "same.jpg"]


def test_a_file_part_without_a_name_is_stored_under_its_hash(upload_client, library, kit):
    """No filename parameter at all: starlette reads the part as a plain field, which the upload refuses."""
    data = kit.encode(kit.picture((90, 90, 90), seed=500))
    refused = _post(upload_client, None, data)
    assert refused.status_code == 422 and "file part" in refused.json()["detail"], refused.text
