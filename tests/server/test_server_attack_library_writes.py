"""Another process writes the library while the server reads it (issue 9, item 2).

`clipforge index add` and `clipforge tag` run as separate processes on the library the server
has open, while clients search, list, fetch thumbnails and read stats without pause. No answer
may be a 500 (once: "database disk image is malformed" until restart), and afterwards the
server sees the other process's images and tags.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "clipforge", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_the_server_keeps_answering_while_the_cli_writes_the_library(make_client, library, tmp_path, kit):
    client = make_client()
    more = tmp_path / "more"
    more.mkdir()
    for i in range(24):
        kit.picture((10 * i % 255, 255 - 10 * i % 255, 90), seed=100 + i).save(more / f"extra{i:02d}.png")
    root = str(library.paths.root)
    statuses: list[tuple[str, int]] = []

    def poll_once() -> None:
        for method, path, kwargs in (("POST", "/api/search", {"data": {"text": "a green picture", "top_k": 5}}),
                                     ("GET", "/api/images?limit=50", {}), ("GET", "/api/stats", {}),
                                     ("GET", "/api/images/1/thumb?size=32", {})):
            response = client.request(method, path, **kwargs)
            statuses.append((path, response.status_code))
            assert response.status_code == 200, (path, response.status_code, response.text[:300])

    writer = _cli("index", "add", str(more), "--library", root, "--workers", "0", "--batch-size", "4", "--quiet")
    deadline = time.monotonic() + 240
    while writer.poll() is None and time.monotonic() < deadline:
        poll_once()
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err.decode()[-2000:]
    tagger = _cli("tag", "--library", root, "--labels", "red,green,blue", "--templates", "simple", "--top-k", "1")
    while tagger.poll() is None and time.monotonic() < deadline:
        poll_once()
    out, err = tagger.communicate(timeout=60)
    assert tagger.returncode == 0, err.decode()[-2000:]
    poll_once()
    assert len(statuses) >= 8  # the server was really asked while the writers ran
    listed = client.get("/api/images", params={"limit": 100}).json()["images"]
    assert len(listed) == 8 + 24
    found = client.post("/api/search", data={"text": "a picture", "top_k": 100}).json()["results"]
    assert len(found) == 32  # the index the server searches includes the other process's images
    tagged = client.post("/api/search", data={"text": "a picture", "top_k": 100, "tags": "red,green,blue"})
    assert tagged.status_code == 200 and len(tagged.json()["results"]) == 32
