"""`clipforge index copy`: an embedded library moved into Milvus (milvus-lite here) and back, no model run, no
image read, answering every command as the source does; resumable after a crash; refusals write nothing."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.cli.main import main  # noqa: E402
from clipforge.library import Library  # noqa: E402
from clipforge.library import indexer as indexer_module  # noqa: E402
from clipforge.library.backend import parse_store  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402
from clipforge.library.milvus_store import MilvusSpace, MilvusStore, image_id  # noqa: E402
from clipforge.library.milvus_tags import Vocabularies  # noqa: E402
from clipforge.library.milvus_writer import RECORD_FIELDS  # noqa: E402
from clipforge.library.tagging import tag_vocabulary  # noqa: E402
from clipforge.library.transfer import copy_library  # noqa: E402

LABELS = "red, green, blue, grey"
SECOND = "test-worldwide-tiny"  # a second model space of the source


@pytest.fixture()
def source(tmp_path, tiny_encoder, images_factory, bad_files_factory) -> tuple[Path, Path]:
    """(photos, library): 14 photos, one more path of the same bytes, a name with quotes, four files that fail
    (truncated, empty, not an image, a bomb), tagged with four labels, top 3 kept."""
    photos = images_factory(tmp_path / "photos", 14, formats=("png", "jpg", "webp"))
    bad_files_factory(tmp_path / "photos" / "bad", photos[1])
    shutil.copyfile(photos[0], tmp_path / "photos" / "copy_of_first.png")
    photos[5].rename(tmp_path / "photos" / "potter's \"wheel\" 5.webp")
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        library.classify(LABELS, top_k=3, progress=False)
    return tmp_path / "photos", tmp_path / "lib"


def _hits(hits) -> list[tuple[str, list[str], list[str]]]:
    return [(h.path, h.duplicates, [t for t, _ in h.tags]) for h in hits]


def _same_search(got, want) -> None:
    assert _hits(got) == _hits(want)
    assert np.allclose([h.score for h in got], [h.score for h in want], rtol=0, atol=1e-5)
    for a, b in zip(got, want, strict=True):
        assert np.allclose([s for _, s in a.tags], [s for _, s in b.tags], rtol=0, atol=1e-6)


def _stats(capsys, argv: list[str]) -> dict:
    assert main(["index", "stats", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def _rows(store: str) -> dict[str, dict]:
    """Every row of the store's default space, every field (the vector as a list)."""
    milvus = MilvusStore(parse_store(store), create=False)
    try:
        space = milvus.space(milvus.spaces()[0].fingerprint)
        return {r["path"]: {**r, "vector": [float(v) for v in r["vector"]]}
                for r in space.iter_rows(fields=[*RECORD_FIELDS, "vector"])}
    finally:
        milvus.close()


def test_a_copy_into_milvus_answers_as_the_library(tmp_path, tiny_encoder, source, monkeypatch, capsys) -> None:
    photos, lib = source
    store = f"milvus-lite:{tmp_path}/m.db#photos"
    assert main(["index", "copy", "--library", str(lib), "--to", store, "-q"]) == 0
    assert capsys.readouterr().out.startswith(
        "copied 1 model space (19 files, 4 failed records, 1 tag vocabulary) from library ")
    embedded = Library(lib, tiny_encoder)
    milvus = MilvusLibrary(store, tmp_path / "mlib", tiny_encoder)
    # every record, field by field (ids: Milvus's id of the path, as `index add` gives a new file)
    want = {r.path: r for r in embedded.store.list_images()}
    got = {r.path: r for r in milvus.list_images(limit=100, status=None)}
    assert len(want) == 19 and set(got) == set(want)
    for path, record in want.items():
        assert got[path] == replace(record, id=image_id(path)), path
        assert [t for t, _ in milvus.tags(image_id(path))] == [t for t, _ in embedded.tags(record.id)], path
        assert np.allclose([s for _, s in milvus.tags(image_id(path))], [s for _, s in embedded.tags(record.id)],
                           rtol=0, atol=1e-6)
    for query in ("a photo of a cat", "red - blue", "green"):
        _same_search(milvus.search(query, top_k=10), embedded.search(query, top_k=10))
    _same_search(milvus.search(image=photos / "img003.png", top_k=5),
                 embedded.search(image=photos / "img003.png", top_k=5))
    _same_search(milvus.search("photo", top_k=10, filter_tags="green", tag_rank=1),
                 embedded.search("photo", top_k=10, filter_tags="green", tag_rank=1))
    assert milvus.tag_counts() == embedded.tag_counts() and sum(embedded.tag_counts().values()) == 15
    fingerprint = tiny_encoder.fingerprint
    assert tag_vocabulary(Vocabularies(milvus.milvus), fingerprint) == tag_vocabulary(embedded.store, fingerprint)
    # `index stats`, as the CLI prints it
    a = _stats(capsys, ["--library", str(lib)])
    b = _stats(capsys, ["--store", store, "--library", str(tmp_path / "mlib")])
    assert b["images"] == a["images"] == {"ok": 15, "failed": 4}
    assert (b["distinct_contents"], b["tags"], b["model"]["fingerprint"]) == (
        a["distinct_contents"], a["tags"], a["model"]["fingerprint"])
    assert sorted(map(str, b["failures"])) == sorted(map(str, a["failures"]))
    # a space's count: the embedded store's counts vectors (distinct contents, 14), Milvus's rows (15 photos)
    assert [(s["fingerprint"], s["embed_dim"], s["default"]) for s in b["spaces"]] == [
        (s["fingerprint"], s["embed_dim"], s["default"]) for s in a["spaces"]]

    class Forbidden:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the copied files are unchanged: an add must skip them without reading")

    monkeypatch.setattr(indexer_module, "ImageFileReader", Forbidden)
    again = milvus.add(photos, workers=0, progress=False)
    assert (again.unchanged, again.added, again.updated, again.embedded, again.failed) == (19, 0, 0, 0, 0)
    embedded.close()
    milvus.close()


def test_a_copy_killed_after_its_first_batch_is_finished_by_running_it_again(tmp_path, source, monkeypatch) -> None:
    _, lib = source
    store, clean = f"milvus-lite:{tmp_path}/m.db#resumed", f"milvus-lite:{tmp_path}/m.db#clean"
    real = MilvusSpace.upsert
    written: list[int] = []

    def dies_after_one_batch(self, rows):
        if written:
            raise RuntimeError("killed")
        real(self, rows)
        written.append(len(rows))

    monkeypatch.setattr(MilvusSpace, "upsert", dies_after_one_batch)
    with pytest.raises(RuntimeError, match="killed"):
        copy_library(library=lib, to=store, batch_size=4, progress=False)
    assert written == [4] and len(_rows(store)) == 4
    monkeypatch.undo()
    resumed = copy_library(library=lib, to=store, batch_size=4, progress=False)
    assert (resumed.files, resumed.failed) == (19, 4)
    copy_library(library=lib, to=clean, progress=False)  # one uninterrupted copy, for comparison
    assert _rows(store) == _rows(clean) and len(_rows(store)) == 19


def test_refusals_are_one_line_and_write_nothing(tmp_path, source, images_factory, capfd) -> None:
    photos, lib = source
    other = f"milvus-lite:{tmp_path}/other.db"
    with MilvusLibrary(other, tmp_path / "olib", SECOND) as milvus:  # another library: another default model
        milvus.add(photos / "img000.png", workers=0, progress=False)
    before = _rows(other)
    cases = {
        ("--library", str(lib), "--to", other): "holds another library: its default model is test-worldwide-tiny",
        ("--library", str(lib), "--to-library", str(lib)): "is both the source and the destination",
        ("--library", str(tmp_path / "nolib"), "--to", f"milvus-lite:{tmp_path}/new.db"): "no library database at",
        ("--library", str(lib), "--to", f"milvus-lite:{tmp_path}/new.db", "--space", "nope"):
            "has no single model space 'nope'",
    }
    for argv, words in cases.items():
        assert main(["index", "copy", *argv]) == 2, argv
        err = capfd.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err, (argv, err)
    assert _rows(other) == before
    assert not (tmp_path / "new.db").exists() and not (tmp_path / "nolib").exists()


def test_two_spaces_go_to_milvus_and_back(tmp_path, tiny_encoder, source, capsys) -> None:
    photos, lib = source
    assert main(["index", "add", "--model", SECOND, "--library", str(lib), "--workers", "0", "-q"]) == 0
    store = f"milvus-lite:{tmp_path}/m.db"
    assert copy_library(library=lib, to=store, progress=False).files == 38
    assert main(["index", "copy", "--store", store, "--to-library", str(tmp_path / "back"), "-q"]) == 0
    assert "copied 2 model spaces (19 + 19 files, 8 failed records, 1 tag vocabulary)" in capsys.readouterr().out
    for model in (tiny_encoder, SECOND):
        with (Library(lib, model) as a, MilvusLibrary(store, tmp_path / "mlib", model) as b,
              Library(tmp_path / "back", model) as c):
            spaces = [[(s["fingerprint"], s["embed_dim"], s["default"]) for s in x.spaces()] for x in (a, b, c)]
            assert spaces[0] == spaces[1] == spaces[2] and spaces[0][0][2] and len(spaces[0]) == 2
            want = a.search(image=photos / "img004.jpg", top_k=8)
            _same_search(b.search(image=photos / "img004.jpg", top_k=8), want)
            _same_search(c.search(image=photos / "img004.jpg", top_k=8), want)
            assert c.stats()["images"] == a.stats()["images"] and c.tag_counts() == a.tag_counts()
            assert {r.path: replace(r, id=0) for r in c.store.list_images()} == {
                r.path: replace(r, id=0) for r in a.store.list_images()}
