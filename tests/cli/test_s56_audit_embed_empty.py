"""`clipforge embed` of PATHs with no image file is one line, exit status 2, and writes nothing (audit, stop 47).

It exited 0 ("wrote 0 of 0 partitions") and left ``job.json`` (a job of 0 files) and ``manifest.json`` in --out,
so the next `embed PHOTOS --out DIR` was refused: "holds another embed job ... use --overwrite".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from clipforge.cli.main import main

TINY = ["--model", "test-vit-tiny", "--device", "cpu", "-q"]


def _photos(folder: Path, count: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"p{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_an_empty_folder_is_an_error_and_leaves_no_job(tmp_path, capsys) -> None:
    empty, photos, out = tmp_path / "empty", tmp_path / "photos", tmp_path / "e3"
    empty.mkdir()
    _photos(photos)
    assert main(["embed", str(empty), "--out", str(out), *TINY]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"error: no image files in {empty} (looked for files with image extensions): nothing to "
                            f"embed, nothing written to {out}\n")
    assert not out.exists()
    # the folder is free for the export the user meant
    assert main(["embed", str(photos), "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == 2 and manifest["job"]["files"] == 2


def test_folders_of_other_files_and_no_recursive(tmp_path, capsys) -> None:
    """Only files without an image extension, and photos only in a sub-folder under --no-recursive: nothing."""
    notes, nested, out = tmp_path / "notes", tmp_path / "nested", tmp_path / "out"
    notes.mkdir()
    (notes / "readme.txt").write_text("not a photo\n")
    _photos(nested / "sub")
    assert main(["embed", str(notes), str(nested), "--out", str(out), "--no-recursive", *TINY]) == 2
    assert capsys.readouterr().err == (
        f"error: no image files in {notes}, {nested} (looked for top-level files with image extensions): nothing "
        f"to embed, nothing written to {out}\n")
    assert not out.exists()
    # one empty folder among photos is no error: the photos are embedded
    assert main(["embed", str(notes), str(nested), "--out", str(out), *TINY]) == 0
    assert json.loads((out / "manifest.json").read_text())["files"] == 2


def test_an_empty_folder_never_touches_a_finished_export(tmp_path, capsys) -> None:
    """Not even with --overwrite, which clears the old job before writing the new one."""
    photos, empty, out = tmp_path / "photos", tmp_path / "empty", tmp_path / "emb"
    _photos(photos, 3)
    empty.mkdir()
    assert main(["embed", str(photos), "--out", str(out), *TINY]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):
        assert main(["embed", str(empty), "--out", str(out), *TINY, *extra]) == 2
        assert capsys.readouterr().err.startswith(f"error: no image files in {empty} ")
        assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_folder_it_cannot_read_is_said_once(tmp_path, capsys, monkeypatch) -> None:
    """The check walks the PATHs before the export walks them again: an unreadable folder is one warning, not two;
    with nothing else to embed, the warning comes before the error it may explain."""
    import os

    real_walk = os.walk

    def walk(root, onerror=None, **kwargs):  # a sub-folder `locked` this user cannot list (tests run as root)
        for current, dirs, files in real_walk(root, onerror=onerror, **kwargs):
            if "locked" in dirs:
                dirs.remove("locked")
                onerror(PermissionError(13, "Permission denied", os.path.join(current, "locked")))
            yield current, dirs, files

    monkeypatch.setattr(os, "walk", walk)
    photos, only = tmp_path / "photos", tmp_path / "only"
    _photos(photos, 1)
    (photos / "locked").mkdir()
    (only / "locked").mkdir(parents=True)
    assert main(["embed", str(photos), "--out", str(tmp_path / "a"), *TINY]) == 0
    warning = "warning: skipped 1 folder(s) that could not be read, with whatever photos they hold: {} (permission " \
              "denied)\n"
    assert capsys.readouterr().err == warning.format(photos / "locked")
    assert main(["embed", str(only), "--out", str(tmp_path / "b"), *TINY]) == 2
    assert capsys.readouterr().err == warning.format(only / "locked") + (
        f"error: no image files in {only} (looked for files with image extensions): nothing to embed, nothing "
        f"written to {tmp_path / 'b'}\n")
