"""A photo whose file name is not valid UTF-8 is indexed (the library stores names losslessly); the
server must show it, escaped, in every JSON answer and the UI, never answer 500."""

from __future__ import annotations

import os
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses non-UTF-8 file names")


@pytest.fixture()
def odd_library(tmp_path, tiny_encoder, kit):
    from clipforge.library import Library

    folder = tmp_path / "photos"
    folder.mkdir()
    kit.picture((220, 30, 30), 1).save(folder / "red.png")
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    with open(odd, "wb") as handle:
        handle.write(kit.encode(kit.picture((30, 40, 220), 2)))
    lib = Library(tmp_path / "lib", tiny_encoder)
    assert lib.add(folder, workers=0, progress=False).added == 2
    yield lib
    lib.close()


def test_undecodable_names_are_served_escaped(odd_library):
    from fastapi.testclient import TestClient

    from clipforge.server import create_app

    with TestClient(create_app(odd_library, ui=False)) as client:
        listing = client.get("/api/images", params={"limit": 10})
        assert listing.status_code == 200, listing.text
        assert sorted(image["filename"] for image in listing.json()["images"]) == ["caf\\xe9.png", "red.png"]
        hits = client.post("/api/search", json={"text": "a blue square", "top_k": 2})
        assert hits.status_code == 200, hits.text
        assert {hit["filename"] for hit in hits.json()["results"]} == {"caf\\xe9.png", "red.png"}
        odd_id = next(i["id"] for i in listing.json()["images"] if i["filename"] != "red.png")
        assert client.get(f"/api/images/{odd_id}").status_code == 200
        assert client.get("/api/stats").status_code == 200
