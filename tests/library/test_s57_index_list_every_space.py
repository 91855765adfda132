"""`index list` is one `iter_images` method of every library, and lists the same files on both stores.

On milvus-lite it listed the default model's space only: photos indexed by `index add --model M` (in M's space
alone) were missing, though `index remove` (whose ids `index list` shows) reaches them in every space. A page
removed meanwhile shifts no later row out of the listing, on either store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.cli.main import main  # noqa: E402
from clipforge.library import Library  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402

QUIET = ["--workers", "0", "-q"]
DEFAULT, SECOND = "test-worldwide-tiny", "test-vit-tiny"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _listed(capsys, base: list[str], *extra: str) -> dict[str, int]:
    code, out, err = _run(capsys, "index", "list", *base, *extra)
    assert code == 0 and err == "", err
    rows = [line.split(None, 1) for line in out.splitlines()]
    return {str(Path(path).resolve()): int(image_id) for image_id, path in rows}


@pytest.mark.parametrize("store", ["embedded", "milvus-lite"])
def test_index_list_shows_files_of_every_model_space_and_remove_takes_their_ids(tmp_path, images_factory, capsys,
                                                                                 store) -> None:
    first = images_factory(tmp_path / "p1", 2, seed=1)
    second = images_factory(tmp_path / "p2", 2, seed=2)
    base = ["--library", str(tmp_path / "lib")]
    if store == "milvus-lite":
        base += ["--store", f"milvus-lite:{tmp_path}/m.db"]
    assert _run(capsys, "index", "add", str(tmp_path / "p1"), *base, "--model", DEFAULT, *QUIET)[0] == 0
    assert _run(capsys, "index", "add", str(tmp_path / "p2"), *base, "--model", SECOND, *QUIET)[0] == 0
    listed = _listed(capsys, base)
    assert sorted(listed) == sorted(str(p.resolve()) for p in first + second)  # milvus-lite listed the two of p1 only
    assert _listed(capsys, base, "--failed") == {}
    code, out, err = _run(capsys, "index", "remove", str(listed[str(second[0].resolve())]), *base)
    assert (code, out, err) == (0, "removed 1 image\n", "")
    assert sorted(_listed(capsys, base)) == sorted(str(p.resolve()) for p in [*first, second[1]])


@pytest.mark.parametrize("store", ["embedded", "milvus-lite"])
def test_a_removal_between_two_pages_shifts_no_later_file_out(tmp_path, images_factory, store) -> None:
    photos = images_factory(tmp_path / "photos", 5)
    if store == "milvus-lite":
        def open_library():
            return MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "lib", SECOND)
    else:
        def open_library():
            return Library(tmp_path / "lib", SECOND, create=True)
    with open_library() as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
    with open_library() as reader, open_library() as other:
        listing = reader.iter_images(page=2)
        seen = [next(listing), next(listing)]
        other.remove([record.path for record in seen])  # `index remove` of two files already printed
        seen += list(listing)
    assert sorted(Path(record.path).name for record in seen) == sorted(p.name for p in photos)
    assert len({record.id for record in seen}) == 5


def test_a_milvus_add_of_an_empty_folder_does_not_choose_the_default_model(tmp_path, images_factory, capsys) -> None:
    """`index add EMPTY --model M` on a new milvus-lite store made M its default space (the embedded store no longer
    did); the next plain add then indexed into M instead of the shipped default."""
    (tmp_path / "empty").mkdir()
    images_factory(tmp_path / "photos", 2)
    base = ["--library", str(tmp_path / "lib"), "--store", f"milvus-lite:{tmp_path}/m.db"]
    assert _run(capsys, "index", "add", str(tmp_path / "empty"), "--model", SECOND, *base, *QUIET)[0] == 0
    assert _run(capsys, "index", "add", str(tmp_path / "photos"), "--model", DEFAULT, *base, *QUIET)[0] == 0
    code, out, err = _run(capsys, "index", "stats", "--json", *base)
    stats = json.loads(out)
    assert [(s["name"], s["images"], s["default"]) for s in stats["spaces"]] == [(DEFAULT, 2, True)]
