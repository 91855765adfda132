"""REST search results say how many other names of the very same file the library holds (`same_file`), apart
from real copies (`duplicates`), as `clipforge search --json` does: a client listing "identical copies" to
delete had no way to tell a hard link (deleting it deletes the photo's last name) from a copy."""

from __future__ import annotations

import base64
import os
import shutil

from fastapi.testclient import TestClient

from clipforge.cli.main import main


def test_a_hard_link_is_same_file_and_a_copy_is_a_duplicate(tmp_path, kit):
    from clipforge.server.app import create_app
    from clipforge.server.runner import open_server_library

    photos = kit.write_photos(tmp_path / "photos")
    photo, other = photos[0], photos[1]
    os.link(photo, tmp_path / "photos" / "zz_hard_link.png")
    shutil.copyfile(other, tmp_path / "photos" / f"zz_copy{other.suffix}")
    lib = ["--library", str(tmp_path / "lib")]
    assert main(["index", "add", str(photo.parent), *lib, "--model", "test-vit-tiny", "--workers", "0", "-q"]) == 0
    library = open_server_library(tmp_path / "lib", "test-vit-tiny")
    try:
        with TestClient(create_app(library, ui=False)) as client:
            def best(path):
                image = base64.b64encode(path.read_bytes()).decode()
                answer = client.post("/api/search", json={"image": image, "top_k": 1})
                assert answer.status_code == 200, answer.text
                return answer.json()["results"][0]

            linked, copied = best(photo), best(other)
            assert (linked["filename"], linked["duplicates"], linked["same_file"]) == (photo.name, 0, 1), linked
            assert (copied["filename"], copied["duplicates"], copied["same_file"]) == (other.name, 1, 0), copied
            schema = client.get("/openapi.json").json()["components"]["schemas"]["SearchHitOut"]
            assert "same_file" in schema["properties"]
    finally:
        library.close()
