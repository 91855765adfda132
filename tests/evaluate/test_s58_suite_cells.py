"""audit58 findings 3, 6, 8 and 9: what a suite cell claims to be.

3. A cell computed on a 190-image copy was reported "cached" for the 10,000-image test set: the name has no root.
6. A Flickr8k with no split list (Kaggle's captions.txt: every image) claimed CLIP_benchmark's Karpathy ``flickr8k``
   test split.
8. ``cell s`` was documented to include loading the model, which happens once per model before the cells.
9. ``--tasks zeroshot,linear-probe`` on test-only copies (the shared mini CUB, imagenet_sample) failed the run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.evaluate import suite as suite_module
from clipforge.evaluate.suite import run_suite
from tests.evaluate.dataset_builders import flickr8k_folder

MODEL = "test-vit-tiny"


pytestmark = pytest.mark.usefixtures("isolated_cache")  # tests/evaluate/conftest.py


def _sst2(folder: Path, per_class: int, splits=("test",)) -> Path:
    for split in splits:
        for name, colour in (("negative", (200, 10, 10)), ("positive", (10, 200, 10))):
            (folder / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (colour[0] - i, colour[1], 10)).save(folder / split / name / f"{i}.png")
    return folder


def _suite(tmp_path: Path, datasets, root=None, said=None, **kw) -> dict:
    return run_suite([MODEL], datasets, root, tmp_path / "out", workers=0, device="cpu", progress=False,
                     echo=(said.append if said is not None else lambda text: None), **kw)


def _only_cell(tmp_path: Path) -> tuple[Path, dict]:
    (path,) = (tmp_path / "out" / "cells").glob("*/*.json")
    return path, json.loads(path.read_text())


def test_a_cell_of_another_copy_or_size_of_the_dataset_is_computed_again(tmp_path):
    small, full = _sst2(tmp_path / "small", 2), _sst2(tmp_path / "full", 5)
    first = _suite(tmp_path, [f"rendered_sst2={small}"])
    assert first["cells"][0]["status"] == "computed"
    path, cell = _only_cell(tmp_path)
    said: list[str] = []
    second = _suite(tmp_path, [f"rendered_sst2={full}"], said=said)
    assert second["cells"][0]["status"] == "computed"  # was "cached": the 4-image copy's number
    assert second["cells"][0]["images_evaluated"] == 10
    cf = cell["clipforge"]
    assert (cf["data_root"], cf["dataset_images"], cf["files_missing"]) == (str(small.resolve()), 4, 0)
    assert said[0] == f"cell {path.stem}: dataset changed (4 -> 10 images, {small.resolve()} -> {full.resolve()}): " \
                      "computed again"
    said.clear()
    assert _suite(tmp_path, [f"rendered_sst2={full}"], said=said)["cells"][0]["status"] == "cached"
    assert said == []
    (full / "test" / "positive" / "4.png").unlink()  # a file removed from the same copy
    again = _suite(tmp_path, [f"rendered_sst2={full}"], said=said)
    assert again["cells"][0]["status"] == "computed" and said[0].endswith(": dataset changed (10 -> 9 images): "
                                                                          "computed again")


def test_a_cell_without_its_dataset_fields_is_moved_aside_and_computed_again_saying_so(tmp_path):
    """(review58 finding 2 changed this: such a cell is moved to cells/stale/, not read, see test_s58_review_suite.)"""
    data = _sst2(tmp_path / "data", 2)
    _suite(tmp_path, [f"rendered_sst2={data}"])
    path, cell = _only_cell(tmp_path)
    for key in ("data_root", "dataset_images"):  # as an earlier clipforge wrote it
        del cell["clipforge"][key]
    path.write_text(json.dumps(cell))
    said: list[str] = []
    assert _suite(tmp_path, [f"rendered_sst2={data}"], said=said)["cells"][0]["status"] == "computed"
    assert said[0] == "1 cell written by an earlier clipforge moved to cells/stale/: their metrics may mean " \
                      "something else; rerun them" and len(said) == 2  # and the cell's own line
    assert json.loads((tmp_path / "out" / "cells" / "stale" / path.parent.name / path.name).read_text()) == cell
    said.clear()
    assert _suite(tmp_path, [f"rendered_sst2={data}"], said=said)["cells"][0]["status"] == "cached" and said == []


def _flickr8k(root: Path, test_list: list[str] | None) -> Path:
    return flickr8k_folder(root, test_list)


def test_flickr8k_without_a_split_list_is_flickr8k_all_not_the_karpathy_test_split(tmp_path):
    whole = _flickr8k(tmp_path / "kaggle", None)
    split = _flickr8k(tmp_path / "original", ["0.jpg", "2.jpg"])
    _suite(tmp_path, [f"flickr8k={whole}"])
    _, cell = _only_cell(tmp_path)
    assert cell["dataset"] == "flickr8k_all" and cell["clipforge"]["split"] == "all"
    assert cell["clipforge"]["images_evaluated"] == 3 and "__all__retrieval__" in cell["clipforge"]["cell"]
    for p in (tmp_path / "out" / "cells").glob("*/*.json"):
        p.unlink()
    _suite(tmp_path, [f"flickr8k={split}"])
    _, cell = _only_cell(tmp_path)
    assert cell["dataset"] == "flickr8k" and cell["clipforge"]["split"] == "test"  # the 1k list: Karpathy's test
    assert cell["clipforge"]["images_evaluated"] == 2
    from clipforge.data.retrieval_sets import open_retrieval_dataset

    assert open_retrieval_dataset("flickr8k", whole, "test").split == "all"  # whatever split was asked for


class _Clock:
    """`time` for the suite module whose perf_counter jumps 1000 s while a model loads."""

    def __init__(self) -> None:
        self.offset = 0.0

    def perf_counter(self) -> float:
        return time.perf_counter() + self.offset


def test_model_load_is_reported_per_model_and_not_in_the_cells_seconds(tmp_path, monkeypatch):
    import clipforge.evaluate.common as common

    clock = _Clock()
    real = common.resolve_model

    def slow_load(*args, **kwargs):
        clock.offset += 1000.0  # a load that "takes" 1000 s
        return real(*args, **kwargs)

    monkeypatch.setattr(suite_module, "time", clock)
    monkeypatch.setattr(common, "resolve_model", slow_load)
    summary = _suite(tmp_path, [f"rendered_sst2={_sst2(tmp_path / 'data', 2)}"])
    (load,) = summary["models"]
    assert load["model"] == MODEL and load["load_seconds"] >= 1000
    row = summary["cells"][0]
    assert row["wall_seconds"] < 1000  # the cell's own seconds: the load is listed apart, once per model
    _, cell = _only_cell(tmp_path)
    assert cell["clipforge"]["model_load_seconds"] == load["load_seconds"]
    table = (tmp_path / "out" / "table.md").read_text()
    assert f"Model load (once per model, not in `cell s`): {MODEL} {load['load_seconds']:.1f} s" in table
    assert json.loads((tmp_path / "out" / "table.json").read_text())["models"] == summary["models"]


def test_a_probe_of_a_dataset_without_a_train_split_is_skipped_not_failed(tmp_path, capsys):
    root = tmp_path / "data"
    _sst2(root / "rendered-sst2", 2)  # test/ only, like the shared mini CUB and imagenet_sample
    rc = main(["eval", "suite", "--models", MODEL, "--datasets", "rendered_sst2", "--root", str(root), "--tasks",
               "zeroshot,linear-probe", "--out", str(tmp_path / "out"), "--device", "cpu", "--workers", "0"])
    out, err = capsys.readouterr()
    assert rc == 0  # was 1, with the probe cell "failed"
    notices = [line for line in err.splitlines() if "linear probe skipped" in line]
    assert len(notices) == 1 and notices[0] == (f"[2/2] {MODEL} x rendered_sst2: no train split: linear "
                                                       f"probe skipped (missing {root / 'rendered-sst2' / 'rendered-sst2' / 'train'} (nor "
                                                       f"{root / 'rendered-sst2' / 'train'}))")
    assert "2 cells: 1 computed, 1 skipped" in out
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    assert [r["status"] for r in table["rows"]] == ["computed", "skipped"] and table["passed"] is True


def test_a_catalogue_dataset_without_a_train_split_lists_its_probe_as_skipped(tmp_path):
    from clipforge.data.catalog import dataset_info
    from clipforge.evaluate.suite import _cells

    cells = _cells(MODEL, [(dataset_info("imagenetv2"), tmp_path)], ("zeroshot", "linear-probe"), None)
    assert [(c.task, c.skip) for c in cells] == [
        ("zeroshot", ""), ("linear-probe", "no train split: linear probe skipped (imagenetv2 has none)")]
