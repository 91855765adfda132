"""A form body that costs seconds to split, an original's file that names the server's folders, a big original.

Found by a review against a live `clipforge serve`: 20 MB of `&` posted to `/api/search` as
`application/x-www-form-urlencoded` took 5.3 s of CPU on the event loop (python-multipart splits such a body
a byte at a time, and empty fields never reached its field limit) before its 422, and an indexed photo
swapped for a FIFO answered `... /tmp/review_sec/hostile/good1.jpg is not a regular file (a FIFO)`. Both
tests failed on the code before the fix.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("fastapi")


def test_a_form_body_is_split_in_c_and_bounded(make_client, library):
    client = make_client()
    answer = client.post("/api/search", content=b"&" * 2_000_000,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413, answer.text
    assert "application/x-www-form-urlencoded" in answer.json()["detail"]
    under_cap = client.post("/api/search", content=b"&" * 200_000,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert under_cap.status_code == 422 and "at most" in under_cap.text and "fields" in under_cap.text
    found = client.post("/api/search", data={"text": "a red picture", "top_k": "3"})
    assert found.status_code == 200, found.text
    assert len(found.json()["results"]) == 3
    twice = client.post("/api/search", content=b"text=red&text=blue",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert twice.status_code == 422 and "given more than once" in twice.text
    spaced = client.post("/api/search", content=b"text=%E7%8C%AB+and+dog",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert spaced.status_code == 200
    assert spaced.json()["text"] == "猫 and dog"
    bad = client.post("/api/search", content=b"text=%FF", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert bad.status_code == 422
    image = client.post("/api/search", content=b"image=abc", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert image.status_code == 422 and "file part" in image.text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_an_unreadable_original_is_explained_without_the_servers_folders(make_client, library, photos, tmp_path):
    client = make_client()
    record = library.store.image_by_path(str(photos[1]))
    copy = tmp_path / "moved" / "deep" / "folder" / "photo.png"
    copy.parent.mkdir(parents=True)
    library.store.conn().execute("UPDATE images SET path = ? WHERE id = ?", (str(copy), record.id))  # autocommit
    os.mkfifo(copy)
    for route in (f"/api/images/{record.id}", f"/api/images/{record.id}/thumb"):
        answer = client.get(route)
        assert answer.status_code == 404, answer.text
        detail = answer.json()["detail"]
        assert "is not a regular file (a FIFO)" in detail or "not a regular file (a FIFO)" in detail
        assert str(tmp_path) not in detail and "/moved/" not in detail, detail


def test_a_big_original_is_sent_whole_in_pieces(make_client, library, tmp_path, kit):
    """Originals over a megabyte go out a megabyte at a time (a 2 GB original held the event loop 2.9 s)."""
    from PIL import Image

    big = tmp_path / "big" / "noise.png"
    big.parent.mkdir()
    Image.effect_noise((1400, 1000), 90).convert("RGB").save(big)
    data = big.read_bytes()
    assert len(data) > 3 << 20
    library.add(big.parent, workers=0, progress=False)
    record = library.store.image_by_path(str(big))
    answer = make_client().get(f"/api/images/{record.id}")
    assert answer.status_code == 200
    assert answer.headers["content-length"] == str(len(data)) and answer.headers["content-type"] == "image/png"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.content == data
