"""`clipforge serve --model M` on a library with several model spaces, on both stores, as `serve` runs it.

`/api/stats` describes the space the server searches in (M's), on SQLite and on Milvus alike: on a
Milvus store it did, on the SQLite library it described the library's default space (another model,
another width, another index, other tags) beside `server.model` naming M. The start-up line names
where the records are: a Milvus store's, not the `--library` folder (there only thumbnails live).
"""

from __future__ import annotations

import importlib.util

import pytest
from fastapi.testclient import TestClient

from clipforge.cli.main import main

STORES = [
    "sqlite",
    pytest.param(
        "milvus-lite",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("milvus_lite") is None, reason="needs the milvus extra (milvus-lite)"
        ),
    ),
]


@pytest.fixture()
def served(monkeypatch):
    """What a `serve` run answered while serving: uvicorn's loop replaced by one GET /api/stats."""
    import uvicorn

    seen: dict = {}

    def fake_run(self, sockets=None):
        with TestClient(self.config.app) as client:
            seen["stats"] = client.get("/api/stats").json()
        for sock in sockets or []:
            sock.close()

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    return seen


def _two_spaces(tmp_path, kit, kind: str) -> list[str]:
    """`--library`/`--store` arguments of a library of 8 photos in test-vit-tiny's space (its default) and
    test-rn-tiny's, only the second one tagged."""
    photos = kit.write_photos(tmp_path / "photos")
    where = ["--library", str(tmp_path / "lib")] + (
        ["--store", f"milvus-lite:{tmp_path}/m.db"] if kind != "sqlite" else []
    )
    quiet = ["--workers", "0", "-q"]
    assert main(["index", "add", str(photos[0].parent), "--model", "test-vit-tiny", *where, *quiet]) == 0
    assert main(["index", "add", "--model", "test-rn-tiny", *where, *quiet]) == 0
    assert (
        main(
            ["tag", "--labels", "red,blue", "--templates", "simple", "--model", "test-rn-tiny", *where, "-q"]
        )
        == 0
    )
    return where


@pytest.mark.parametrize("kind", STORES)
def test_stats_and_the_start_up_line_describe_what_the_server_searches(kind, tmp_path, kit, served, capsys):
    where = _two_spaces(tmp_path, kit, kind)
    capsys.readouterr()
    assert main(["serve", *where, "--model", "test-rn-tiny", "--port", "0", "--no-ui"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("clipforge serving"))
    if kind == "sqlite":
        assert line.startswith(
            f"clipforge serving library {tmp_path / 'lib'} with model test-rn-tiny at http://"
        )
    else:  # it named the `--library` folder (thumbnails and uploads) as the library served
        assert line.startswith(
            f"clipforge serving milvus-lite:{tmp_path}/m.db (collection clipforge) with model "
            f"test-rn-tiny at http://"
        ), line
        assert line.endswith(f"/docs); thumbnails and uploads in {tmp_path / 'lib'}"), line
    stats = served["stats"]
    spaces = {s["name"]: s for s in stats["spaces"]}
    assert [(s["name"], s["images"], s["default"]) for s in stats["spaces"]] == [
        ("test-vit-tiny", 8, True),
        ("test-rn-tiny", 8, False),
    ]
    assert stats["server"]["model"] == "test-rn-tiny"
    model = stats["model"]
    assert (model["name"], model["fingerprint"], model["embed_dim"]) == (
        "test-rn-tiny",
        spaces["test-rn-tiny"]["fingerprint"],
        spaces["test-rn-tiny"]["embed_dim"],
    )
    assert stats["images"] == {"ok": 8, "failed": 0} and stats["distinct_contents"] == 8
    tags = stats["tags"]  # only the served space is tagged: the default space's are none
    assert set(tags) <= {"red", "blue"} and sum(tags.values()) == 8 and all(tags.values()), tags
    if kind == "sqlite":  # the served space's own FAISS index, by the served model's fingerprint
        assert stats["index"]["vectors_in_db"] == 8
        assert model["fingerprint"][:12] in stats["index"]["path"], stats["index"]


def test_the_ui_library_summary_lists_the_served_spaces_tags(tmp_path, kit):
    """The web UI's Library tab read the library's default space's stats: under `serve --model test-rn-tiny` it
    listed no tags (only test-rn-tiny's space is tagged) while /api/stats listed that space's."""
    pytest.importorskip("gradio")
    from clipforge.server.runner import open_server_library
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    _two_spaces(tmp_path, kit, "sqlite")
    library = open_server_library(tmp_path / "lib", "test-rn-tiny")
    try:
        service = LibraryService(library)
        _, summary, _, _ = _Handlers(service, str(tmp_path)).browse(0)
        tags = library.store.tag_counts(
            library.encoder.fingerprint
        )  # the served space's, as the store counts them
        assert set(tags) <= {"red", "blue"} and sum(tags.values()) == 8, tags
        assert (
            summary.split("\n\n")[0]  # then the originals' links (stop 50)
            == "**8 images** in the library (0 files could not be read) · showing 1-8 · tags: "
            + ", ".join(f"{name} ({count})" for name, count in tags.items())
        ), summary
        assert service.stats()["tags"] == tags  # what /api/stats answers
    finally:
        library.close()
