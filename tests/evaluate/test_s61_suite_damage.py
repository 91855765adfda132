"""`eval suite` resume with a damaged predictions file (audit 61 chaos, finding 4).

A cell's predictions parquet emptied or cut short (a copy stopped midway, a disk problem) stayed "1 cell: 1 cached"
with the broken file kept, which then failed to open (`ArrowInvalid: Parquet file size is 0 bytes`). A cell now
records its predictions' size and rows; a rerun reuses it only when the file ends in a readable footer with those
rows and that size, and otherwise computes it again and says why. A cell written before the sizes were recorded is
checked by its footer alone: kept when whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from clipforge.evaluate.suite import run_suite
from tests.evaluate.test_s57_suite_cells import _root  # the same tiny Rendered SST-2 folder

ROWS = 8  # 4 test images a class, 2 classes


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))


def _suite(tmp_path: Path, said: list[str] | None = None, out: Path | None = None) -> dict:
    root = tmp_path / "datasets" if (tmp_path / "datasets").exists() else _root(tmp_path)
    return run_suite(["test-vit-tiny"], ["rendered_sst2"], root, out or tmp_path / "out", tasks=("zeroshot",),
                     workers=0, device="cpu", progress=False, echo=(said if said is not None else []).append)


def _row(summary: dict) -> dict:
    (row,) = [r for r in summary["cells"] if r["status"] != "earlier run"]
    return row


def _first(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A computed cell: (its file, its predictions file, its clipforge section)."""
    row = _row(_suite(tmp_path))
    assert row["status"] == "computed"
    cell = Path(row["cell_file"])
    cf = json.loads(cell.read_text(encoding="utf-8"))["clipforge"]
    return cell, tmp_path / "out" / "predictions" / Path(cf["predictions"]).name, cf


def _again(tmp_path: Path, cell: Path, problem: str) -> None:
    """The rerun computes the cell again, says why in one line, and leaves a whole predictions file."""
    said: list[str] = []
    row = _row(_suite(tmp_path, said))
    assert row["status"] == "computed"  # was "cached"
    assert [line for line in said if "computed again" in line] == [f"cell {cell.stem}: {problem}: computed again"]
    cf = json.loads(cell.read_text(encoding="utf-8"))["clipforge"]
    preds = tmp_path / "out" / "predictions" / Path(cf["predictions"]).name
    assert pq.read_table(preds).num_rows == ROWS  # opens again
    assert (cf["predictions_rows"], cf["predictions_bytes"]) == (ROWS, preds.stat().st_size)
    assert _row(_suite(tmp_path))["status"] == "cached"


def test_a_cell_records_its_predictions_size_and_rows(tmp_path) -> None:
    cell, preds, cf = _first(tmp_path)
    assert (cf["predictions_rows"], cf["predictions_bytes"]) == (ROWS, preds.stat().st_size)
    assert _row(_suite(tmp_path))["status"] == "cached"


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda p: os.truncate(p, 0), "is empty"),
    (lambda p: os.truncate(p, p.stat().st_size // 2),
     "has no parquet footer at its end (cut short, or not a parquet file)"),
    (lambda p: p.unlink(), "is missing"),
    (lambda p: pq.write_table(pq.read_table(p).slice(0, 3), p), "holds 3 rows, where it held 8 when written"),
], ids=["emptied", "cut-in-half", "deleted", "fewer-rows"])
def test_a_damaged_predictions_file_has_its_cell_computed_again(tmp_path, damage, problem) -> None:
    cell, preds, _ = _first(tmp_path)
    damage(preds)
    _again(tmp_path, cell, f"its predictions file predictions/{preds.name} {problem}")


def test_predictions_of_another_size_have_their_cell_computed_again(tmp_path) -> None:
    """Same rows, readable footer, other bytes (rewritten uncompressed): only the recorded size shows it."""
    cell, preds, cf = _first(tmp_path)
    pq.write_table(pq.read_table(preds), preds, compression="none")
    size = preds.stat().st_size
    assert size != cf["predictions_bytes"]
    _again(tmp_path, cell, f"its predictions file predictions/{preds.name} is {size} bytes, where it was "
                           f"{cf['predictions_bytes']} when written")


def _as_previous_release(cell: Path) -> None:
    """The cell as the release before this one wrote it: no predictions size or rows."""
    data = json.loads(cell.read_text(encoding="utf-8"))
    del data["clipforge"]["predictions_bytes"], data["clipforge"]["predictions_rows"]
    cell.write_text(json.dumps(data, indent=2), encoding="utf-8")


def test_a_cell_of_the_previous_release_is_kept_when_its_predictions_are_whole(tmp_path) -> None:
    cell, preds, _ = _first(tmp_path)
    _as_previous_release(cell)
    kept = cell.read_bytes()
    assert _row(_suite(tmp_path))["status"] == "cached"  # checked by its footer, not computed again
    assert cell.read_bytes() == kept
    os.truncate(preds, 0)
    _again(tmp_path, cell, f"its predictions file predictions/{preds.name} is empty")


def test_predictions_are_found_in_the_out_folder_whatever_the_working_folder(tmp_path, monkeypatch) -> None:
    """The cell records its predictions' path as given (relative to where the run started); a rerun from another
    folder finds them in its --out's predictions/ and reuses the cell, not "missing"."""
    _root(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert _row(_suite(tmp_path, out=Path("out")))["status"] == "computed"
    monkeypatch.chdir(tmp_path / "datasets")
    said: list[str] = []
    assert _row(_suite(tmp_path, said, out=tmp_path / "out"))["status"] == "cached"
    assert not [line for line in said if "computed again" in line]
