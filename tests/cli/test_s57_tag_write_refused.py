"""Embedded `tag` whose write is refused (full disk, `ulimit -f`) says what is true where it stopped (audit 57,
finding 9): before the new tags are switched in, the old answer and the store's "run the command again" error
stands (status 2); after, the new tags answer searches, so it was wrong to say the run failed: a warning, status 0
(`tagging.old_tags_kept`, in the report's notices: the Python API says it too).
The refusal is made by the write itself failing as SQLite's does (`LibraryWriteError`), at the point named."""

from __future__ import annotations

import errno

import numpy as np
import pytest
from PIL import Image

import clipforge.library.tagging as tagging
from clipforge.cli.main import main
from clipforge.library.dbfile import LibraryWriteError

TINY = ["--model", "test-vit-tiny", "--device", "cpu", "-q"]


@pytest.fixture()
def library(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    lib = tmp_path / "lib"
    assert main(["index", "add", str(photos), "--library", str(lib), *TINY]) == 0
    assert main(["tag", "--labels", "old1,old2", "--library", str(lib), *TINY]) == 0
    capsys.readouterr()
    return lib


def _refuse_purge(monkeypatch, call: int) -> None:
    """Make `tagging._purge`'s `call`-th call (1: the leftovers before the run, 2: the old tags after the switch)
    fail as a refused write does."""
    real, calls = tagging._purge, []
    db = "library.sqlite3"

    def purge(store, keys):
        calls.append(keys)
        if len(calls) == call:
            raise LibraryWriteError(errno.EIO, f"could not write library database {db}: the disk refused a write "
                                               "(disk I/O error); everything saved before is kept and the library "
                                               "can still be read: free some space (or raise the limit) and run "
                                               "the command again")
        return real(store, keys)

    monkeypatch.setattr(tagging, "_purge", purge)


def _tags(lib, capsys) -> dict[str, int]:
    assert main(["tag", "--list", "--library", str(lib), "--json", "-q"]) == 0
    import json

    return json.loads(capsys.readouterr().out)["tags"]


def test_refused_after_the_switch_is_a_warning_and_status_0(library, monkeypatch, capsys) -> None:
    _refuse_purge(monkeypatch, 2)
    assert main(["tag", "--labels", "new1,new2,new3", "--library", str(library), *TINY]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("tagged 4 images with 3 labels in ")
    assert captured.err == (
        "warning: the new tags are saved and answer searches; removing the old tags' rows after them was "
        "refused: could not write library database library.sqlite3: the disk refused a write (disk I/O error). "
        "The old rows take space until the next `clipforge tag` removes them: free some space (or raise the "
        "limit) first\n")
    monkeypatch.undo()
    tags = _tags(library, capsys)
    assert set(tags) <= {"new1", "new2", "new3"} and sum(tags.values()) == 4


def test_refused_before_the_switch_keeps_the_error_and_the_old_tags(library, monkeypatch, capsys) -> None:
    _refuse_purge(monkeypatch, 1)
    assert main(["tag", "--labels", "new1,new2,new3", "--library", str(library), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not write library database library.sqlite3") and "run the command again" in err
    monkeypatch.undo()
    tags = _tags(library, capsys)
    assert set(tags) <= {"old1", "old2"} and sum(tags.values()) == 4
