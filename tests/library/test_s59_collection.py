"""A real photo collection moved from rclip / clip-retrieval (audit 59, the collector's findings).

3. A Synology share's `@eaDir` (two thumbnails of every photo) was indexed as photos: five photos were "added 15
   files" and every image search returned the photo with its thumbnails. NAS, drive and tool folders are skipped
   in folder walks as hidden ones are (`scan.SKIPPED_FOLDERS`); a folder named on the command line is walked.
8. A rerun over the same bad files printed "failed 0" (`"failed": 0, "failures": []`) while `index stats` still
   counted them failed: they were "unchanged". They are still skipped unread, and counted apart (`known_failed`).
"""

from __future__ import annotations

import json

import pytest

from clipforge.cli.main import main

QUIET = ["--workers", "0", "-q"]


def _listed(capsys, lib) -> list[str]:
    capsys.readouterr()
    assert main(["index", "list", "--json", "--library", str(lib)]) == 0
    return sorted(json.loads(line)["path"] for line in capsys.readouterr().out.splitlines())


def test_nas_and_drive_folders_are_not_walked(tmp_path, images_factory, capsys) -> None:
    photos = tmp_path / "photos"
    images_factory(photos, 2, formats=("jpg",))
    for i, folder in enumerate(["@eaDir/img000.jpg", "@EADIR", "#recycle", "$RECYCLE.BIN", "2024/node_modules",
                                "System Volume Information", "@Recycle", "#snapshot/daily"]):
        images_factory(photos / folder, 1, seed=10 + i, prefix=f"extra{i}", formats=("png",))
    images_factory(photos / "2024", 1, seed=99, prefix="kept", formats=("png",))
    lib = tmp_path / "lib"
    assert main(["index", "add", str(photos), "--library", str(lib), *QUIET]) == 0
    assert _listed(capsys, lib) == sorted(str(p) for p in [photos / "2024" / "kept000.png",
                                                           photos / "img000.jpg", photos / "img001.jpg"])
    named = photos / "#recycle"  # named outright: the user means it
    assert main(["index", "add", str(named), "--library", str(lib), *QUIET]) == 0
    assert str(named / "extra2000.png") in _listed(capsys, lib)


@pytest.mark.parametrize("store", ["embedded", "milvus-lite"])
def test_a_rerun_says_how_many_skipped_files_failed_before(tmp_path, images_factory, bad_files_factory,
                                                          capsys, store) -> None:
    if store == "milvus-lite":
        pytest.importorskip("milvus_lite")
    photos = tmp_path / "photos"
    good = images_factory(photos, 2, formats=("jpg",))
    bad_files_factory(photos / "bad", good[0])
    lib = ["--library", str(tmp_path / "lib"), "--workers", "0"]
    if store == "milvus-lite":
        lib += ["--store", f"milvus-lite:{tmp_path / 'm.db'}"]
    assert main(["index", "add", str(photos), *lib, "-q"]) == 0
    capsys.readouterr()
    assert main(["index", "add", str(photos), *lib]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("added 0 files, updated 0, relinked 0, skipped 6 unchanged (4 of them failed before: "
                           "`clipforge index list --failed`; --retry-failed reads them again), failed 0; "), line
    assert main(["index", "add", str(photos), *lib, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["unchanged"], report["known_failed"], report["failed"]) == (6, 4, 0)
    assert main(["index", "add", str(photos), *lib, "--json", "--retry-failed"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["unchanged"], report["known_failed"], report["failed"]) == (2, 0, 4)
