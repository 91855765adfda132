"""A Milvus library remembers `clipforge tag`'s labels, as the embedded store does: photos added later
(`index add`, an upload, a changed file, `search --in`) are tagged with them, so `search --tag` and
`tag --list` count them. Before, only the embedded store tagged them; on Milvus they had no tags, and
every tag filter silently skipped them. Each test runs both stores side by side on the same photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.cli.main import main  # noqa: E402
from clipforge.library import Library  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402

MODEL = "test-vit-tiny"
LABELS = "fish,bird,shark,tree,car"


def _stores(tmp_path: Path) -> dict[str, list[str]]:
    """The `--library`/`--store` arguments of an embedded library and a milvus-lite one."""
    return {"embedded": ["--library", str(tmp_path / "lib")],
            "milvus": ["--store", f"milvus-lite:{tmp_path}/m.db", "--library", str(tmp_path / "mlib")]}


def _open(tmp_path: Path, kind: str) -> Library | MilvusLibrary:
    return (Library(tmp_path / "lib") if kind == "embedded"
            else MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib"))


def _tags(tmp_path: Path, kind: str, folder: Path) -> dict[str, list[tuple[str, float]]]:
    """file name -> its stored (label, score) tags, for the photos under `folder`."""
    with _open(tmp_path, kind) as library:
        return {Path(r.path).name: library.tags(r.id) for r in library.list_images(limit=1000)
                if Path(r.path).parent == folder}


def _release(tmp_path: Path) -> None:
    """Let go of the milvus-lite folder, so the next open really reads it again (as another process would)."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(f"{tmp_path}/m.db")


def _same_tags(milvus: dict[str, list[tuple[str, float]]], embedded: dict[str, list[tuple[str, float]]]) -> None:
    assert milvus.keys() == embedded.keys()
    for name, tags in embedded.items():
        assert [label for label, _ in milvus[name]] == [label for label, _ in tags], name
        assert [score for _, score in milvus[name]] == pytest.approx([score for _, score in tags], abs=1e-5), name


def test_index_add_tags_new_and_changed_photos_as_the_embedded_store_does(tmp_path, images_factory, capsys) -> None:
    images_factory(tmp_path / "old", 3, seed=1)
    images_factory(tmp_path / "new", 3, seed=2)
    replacement = images_factory(tmp_path / "other", 1, seed=3)[0]
    out: dict[str, str] = {}
    for kind, base in _stores(tmp_path).items():
        assert main(["index", "add", str(tmp_path / "old"), *base, "--model", MODEL, "--workers", "0", "-q"]) == 0
        assert main(["tag", "--labels", LABELS, "--templates", "simple", "--top-k", "3", *base]) == 0
        _release(tmp_path)  # the vocabulary is read back from the store, not from this process's memory
        capsys.readouterr()
        assert main(["index", "add", str(tmp_path / "new"), *base, "--workers", "0"]) == 0
        out[kind] = capsys.readouterr().out
    for kind, text in out.items():
        assert "tagged 3 new images with the library's labels" in text, (kind, text)
    new = _tags(tmp_path, "embedded", tmp_path / "new")
    assert all(len(tags) == 3 for tags in new.values())
    _same_tags(_tags(tmp_path, "milvus", tmp_path / "new"), new)

    # A changed file is embedded again and tagged again; the unchanged ones keep their tags.
    changed = tmp_path / "old" / "img000.png"
    assert replacement.suffix == changed.suffix
    shutil.copyfile(replacement, changed)
    for kind, base in _stores(tmp_path).items():
        capsys.readouterr()
        assert main(["index", "add", str(tmp_path / "old"), *base, "--workers", "0"]) == 0
        assert "tagged 1 new image with the library's labels" in capsys.readouterr().out, kind
    _same_tags(_tags(tmp_path, "milvus", tmp_path / "old"), _tags(tmp_path, "embedded", tmp_path / "old"))

    # `search --tag` finds the new photos under their top tag, and `tag --list` counts them.
    counts: dict[str, dict[str, int]] = {}
    for kind, base in _stores(tmp_path).items():
        for name, tags in new.items():
            assert main(["search", "a photo", "--tag", tags[0][0], "--top-k", "50", "--json", *base]) == 0
            found = {Path(hit["path"]).name for hit in json.loads(capsys.readouterr().out)["results"]}
            assert name in found, (kind, name, tags[0][0])
        assert main(["tag", "--list", "--json", *base]) == 0
        counts[kind] = json.loads(capsys.readouterr().out)["tags"]
    assert counts["milvus"] == counts["embedded"]
    assert sum(counts["milvus"].values()) == 6
    assert set(counts["milvus"]) == set(LABELS.split(","))  # the vocabulary's labels no photo has show 0


def test_an_upload_is_tagged_with_the_remembered_labels(tmp_path, images_factory) -> None:
    images_factory(tmp_path / "old", 2, seed=1)
    upload = images_factory(tmp_path / "up", 1, seed=4)[0].read_bytes()
    records = {}
    for kind, base in _stores(tmp_path).items():
        assert main(["index", "add", str(tmp_path / "old"), *base, "--model", MODEL, "--workers", "0", "-q"]) == 0
        assert main(["tag", "--labels", LABELS, "--templates", "simple", "--top-k", "2", *base]) == 0
        _release(tmp_path)
        with _open(tmp_path, kind) as library:  # as `clipforge serve` opens it (POST /api/images)
            record = library.add_bytes(upload, "beach.png")
            assert library.last_tagged == 1, kind
            records[kind] = library.tags(record.id)
            top = records[kind][0][0]
            assert record.path in [h.path for h in library.search("a photo", top_k=50, filter_tags=top)], kind
            assert library.tag_counts()[top] >= 1
    assert len(records["embedded"]) == 2
    _same_tags({"up": records["milvus"]}, {"up": records["embedded"]})


def test_search_in_indexes_and_tags_first(tmp_path, images_factory, capsys) -> None:
    """`search --in DIR` indexes DIR before searching: its new photos must answer a tag filter at once."""
    images_factory(tmp_path / "old", 2, seed=1)
    images_factory(tmp_path / "new", 2, seed=2)
    for base in _stores(tmp_path).values():
        assert main(["index", "add", str(tmp_path / "old"), *base, "--model", MODEL, "--workers", "0", "-q"]) == 0
        assert main(["tag", "--labels", LABELS, "--templates", "simple", *base]) == 0
    assert not _tags(tmp_path, "embedded", tmp_path / "new")  # not indexed yet
    for base in _stores(tmp_path).values():
        capsys.readouterr()
        assert main(["search", "a photo", "--in", str(tmp_path / "new"), "--json", *base]) == 0
        capsys.readouterr()
    new_tags = _tags(tmp_path, "embedded", tmp_path / "new")
    _same_tags(_tags(tmp_path, "milvus", tmp_path / "new"), new_tags)
    for name, tags in new_tags.items():
        assert main(["search", "a photo", "--tag", tags[0][0], "--json", *_stores(tmp_path)["milvus"]]) == 0
        assert name in {Path(h["path"]).name for h in json.loads(capsys.readouterr().out)["results"]}


def test_a_store_never_tagged_or_dropped_space_tags_nothing(tmp_path, images_factory, capsys) -> None:
    """No `tag` run: no vocabulary collection, nothing tagged, the add reads the image tower only as before;
    dropping a space forgets its vocabulary, as the embedded store's drop does."""
    images_factory(tmp_path / "old", 2, seed=1)
    images_factory(tmp_path / "new", 2, seed=2)
    base = _stores(tmp_path)["milvus"]
    assert main(["index", "add", str(tmp_path / "old"), *base, "--model", MODEL, "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    assert main(["index", "add", str(tmp_path / "new"), *base, "--workers", "0"]) == 0
    assert "tagged" not in capsys.readouterr().out
    with _open(tmp_path, "milvus") as library:
        assert not library.milvus.call(library.milvus.client.has_collection, library.milvus.tagsets)
        assert library.tag_counts() == {}
        library.classify(LABELS, templates="simple", progress=False)
        assert set(library.tag_counts()) == set(LABELS.split(","))
        fingerprint = library.space.fingerprint
        library.milvus.drop_space(fingerprint)
        assert library.milvus.tag_vocabulary(fingerprint) is None
