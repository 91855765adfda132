"""GET /api/images/{id}/thumb answers what GET /api/images/{id} answers for a photo whose file is gone or is
no longer a regular file (audit61 attacker2 #2: the cached thumbnail, up to 1024 px, was still served 200)."""

from __future__ import annotations

import os

import pytest


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_the_thumbnail_route_refuses_what_the_original_route_refuses(tmp_path, tiny_encoder, kit):
    from fastapi.testclient import TestClient

    from clipforge.library import Library
    from clipforge.server import create_app

    photos = kit.write_photos(tmp_path / "photos")[:4]  # this test's own copies: it deletes and swaps them
    library = Library(tmp_path / "lib", tiny_encoder)
    library.add(photos, workers=0, progress=False)
    gone, fifo, linked, intact = (library.store.image_by_path(str(p)).id for p in photos)
    with TestClient(create_app(library, ui=False)) as client:
        for image_id in (gone, fifo, linked, intact):
            assert client.get(f"/api/images/{image_id}/thumb", params={"size": 1024}).status_code == 200  # cached
        photos[0].unlink()
        photos[1].unlink()
        os.mkfifo(photos[1])
        photos[2].unlink()
        (tmp_path / "other.txt").write_text("not the photo\n")
        photos[2].symlink_to(tmp_path / "other.txt")
        for image_id, reason in ((gone, "No such file or directory"), (fifo, "not a regular file (a FIFO)"),
                                 (linked, "changed since it was indexed")):
            original = client.get(f"/api/images/{image_id}")
            thumb = client.get(f"/api/images/{image_id}/thumb", params={"size": 1024})
            assert (original.status_code, thumb.status_code) == (404, 404), (original.text, thumb.text)
            assert thumb.json() == original.json()
            assert original.json() == {"error": "file_unavailable",
                                       "detail": original.json()["detail"]}, original.json()
            assert original.json()["detail"].startswith(f"image {image_id}'s file cannot be read now: {reason}")
        answer = client.get(f"/api/images/{intact}/thumb", params={"size": 1024})
        assert answer.status_code == 200 and answer.content[:3] == b"\xff\xd8\xff"
    library.close()
