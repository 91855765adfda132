"""review58 (of commit 388b79d) findings 1 and 2: what `eval suite` reuses and what it shows as current.

1. A suite cell was reused when its dataset's root and counts matched: swapping two class folders (a relabel of the
   same size) was served from the cell as "cached", the old number, for zero-shot and probe cells alike. A cell now
   records `feature_cache.dataset_digest` of the split(s) it read and is reused only when they match.
2. Cells written by an earlier clipforge stayed in ``cells/`` and in the table with their old meaning: a Flickr8k of
   every image as ``flickr8k`` test beside the new ``flickr8k_all`` row, VOC's single-label ``acc1``. They are moved to
   ``cells/stale/<model>/`` (out of ``cells/*/*.json``, what ``clip_benchmark build`` reads) with one notice a run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clipforge.evaluate.suite import run_suite
from tests.evaluate.dataset_builders import flickr8k_folder

MODEL = "test-vit-tiny"
MOVED = "written by an earlier clipforge moved to cells/stale/: their metrics may mean something else; rerun them"


pytestmark = pytest.mark.usefixtures("quiet_suite")  # own caches, no heat map, one torch thread


def _sst2(root: Path, per_class: int = 3) -> Path:
    """Rendered SST2 with train/ and test/; each file named after the class it was made for (as the review's copy
    of CIFAR pictures was), so swapping the folders keeps every count and the root but moves the files."""
    for split in ("train", "test"):
        for name, colour in (("negative", (220, 20, 20)), ("positive", (20, 20, 220))):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (10, 10), (colour[0] - 9 * i, 40 + 9 * i, colour[2])).save(
                    root / split / name / f"{name}_{i}.png")
    return root


def _swap(folder: Path) -> None:
    (folder / "negative").rename(folder / "tmp")
    (folder / "positive").rename(folder / "negative")
    (folder / "tmp").rename(folder / "positive")


def _suite(tmp_path: Path, datasets, said: list[str] | None = None, out: str = "out", **kw) -> dict:
    return run_suite([MODEL], datasets, None, tmp_path / out, workers=0, device="cpu", progress=False,
                     echo=(said.append if said is not None else lambda text: None),
                     feature_cache_dir=tmp_path / "features", **kw)


def _statuses(summary: dict) -> list[tuple[str, str]]:
    return [(r["task"], r["status"]) for r in summary["cells"]]


def test_relabelled_class_folders_recompute_zero_shot_and_probe_cells(tmp_path):
    data = _sst2(tmp_path / "data")
    tasks = ("zeroshot", "linear-probe")
    first = _suite(tmp_path, [f"rendered_sst2={data}"], tasks=tasks)
    assert _statuses(first) == [("zeroshot", "computed"), ("linear-probe", "computed")]
    said: list[str] = []
    assert _statuses(_suite(tmp_path, [f"rendered_sst2={data}"], said, tasks=tasks)) == [
        ("zeroshot", "cached"), ("linear-probe", "cached")] and said == []  # unchanged: reused, nothing said
    for split in ("train", "test"):
        _swap(data / split)  # same root, same counts: every image now carries the other label
    said.clear()
    second = _suite(tmp_path, [f"rendered_sst2={data}"], said, tasks=tasks)
    assert _statuses(second) == [("zeroshot", "computed"), ("linear-probe", "computed")]  # both were "cached"
    again = [line for line in said if line.endswith("computed again")]
    assert again == [f"cell {Path(r['cell_file']).stem}: dataset changed (labels or files): computed again"
                     for r in second["cells"]]
    fresh = _suite(tmp_path, [f"rendered_sst2={data}"], out="fresh", tasks=tasks)
    assert [r["value"] for r in second["cells"]] == [r["value"] for r in fresh["cells"]]
    for path in (tmp_path / "out" / "cells").glob("*/*.json"):
        cf = json.loads(path.read_text())["clipforge"]
        assert cf["cell_format"] == 3 and len(cf["dataset_digest"]) == 32
        assert (len(cf.get("train_digest") or "") == 32) == (cf["task"] == "linear-probe")


def test_only_the_probes_training_split_changed_recomputes_the_probe_alone(tmp_path):
    data = _sst2(tmp_path / "data")
    tasks = ("zeroshot", "linear-probe")
    _suite(tmp_path, [f"rendered_sst2={data}"], tasks=tasks)
    _swap(data / "train")  # the zero-shot cell reads test/ only
    said: list[str] = []
    summary = _suite(tmp_path, [f"rendered_sst2={data}"], said, tasks=tasks)
    assert _statuses(summary) == [("zeroshot", "cached"), ("linear-probe", "computed")]
    assert [line for line in said if "computed again" in line] == [
        f"cell {Path(summary['cells'][1]['cell_file']).stem}: dataset changed (labels or files): computed again"]


def _flickr8k(root: Path) -> Path:
    """Kaggle's layout: captions.txt + Images/, no split list (so the cell is `flickr8k_all`, split `all`)."""
    return flickr8k_folder(root)


def test_edited_captions_recompute_a_retrieval_cell(tmp_path):
    data = _flickr8k(tmp_path / "flickr8k")
    assert _statuses(_suite(tmp_path, [f"flickr8k={data}"])) == [("retrieval", "computed")]
    assert _statuses(_suite(tmp_path, [f"flickr8k={data}"])) == [("retrieval", "cached")]
    text = (data / "captions.txt").read_text().replace("0.jpg,a picture", "1.jpg,a picture")  # captions moved
    (data / "captions.txt").write_text(text)
    said: list[str] = []
    summary = _suite(tmp_path, [f"flickr8k={data}"], said)
    assert _statuses(summary) == [("retrieval", "computed")]  # was "cached": same images, same root
    assert f"cell {Path(summary['cells'][0]['cell_file']).stem}: dataset changed (labels or files): " \
           "computed again" in said


def _old_cell(cells: Path, folder: str, name: str, dataset: str, split: str, task: str, metrics: dict,
              paper_metric: str, paper_value: float, prompts: str = "-") -> Path:
    """A cell as the writer before 388b79d wrote it (`git show 388b79d^:src/clipforge/evaluate/suite.py`: `_details`
    and `result`): no data_root, dataset_images, digest or cell_format."""
    path = cells / folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "dataset": dataset, "model": folder, "pretrained": "x", "task": task, "metrics": metrics, "language": "en",
        "clipforge": {"model_spec": folder, "cell": name, "dataset": name.split("__")[0], "split": split,
                      "task": name.split("__")[2], "prompt_set": prompts, "fingerprint": "0123456789abcdef" * 4,
                      "weights": "x", "precision": "fp32", "decode": "draft", "images_evaluated": 3,
                      "images_skipped": 0, "skip_reasons": [], "files_missing": 0, "seconds_per_image": 0.01,
                      "wall_seconds": 1.0, "paper_metric": paper_metric, "paper_value": paper_value,
                      "report": "/gone/report.json", "predictions": None, "limit": None, "top_k": 5,
                      "date": "2026-12-01T00:00:00"}}))
    return path


def test_cells_of_an_earlier_clipforge_are_moved_aside_and_never_tabled_or_exported(tmp_path):
    data = _flickr8k(tmp_path / "flickr8k")
    cells = tmp_path / "out" / "cells"
    fp = run_suite([MODEL], [f"flickr8k={data}"], None, tmp_path / "probe", workers=0, device="cpu",
                   progress=False, echo=lambda text: None)["cells"][0]["fingerprint"]
    flickr = _old_cell(cells, MODEL, f"flickr8k__test__retrieval__x__{fp[:16]}__fp32-draft", "flickr8k", "test",
                       "zeroshot_retrieval", {"image_retrieval_recall@1": 0.5, "text_retrieval_recall@1": 0.5},
                       "image_to_text_R@1", 0.5)
    voc = _old_cell(cells, "ViT-B-32-openai", "voc2007__test__zeroshot__voc2007__aaaaaaaaaaaaaaaa__fp32-draft",
                    "voc2007", "test", "zeroshot_classification",
                    {"acc1": 0.7, "acc5": 0.9, "mean_per_class_recall": 0.6, "mean_average_precision": 0.8},
                    "mAP11", 0.8, "voc2007")
    sst = _old_cell(cells, "ViT-B-32-openai", "rendered-sst2__test__zeroshot__SST2__aaaaaaaaaaaaaaaa__fp32-draft",
                    "renderedsst2", "test", "zeroshot_classification",
                    {"acc1": 0.6, "acc5": 1.0, "mean_per_class_recall": 0.6}, "top1", 0.6, "SST2")
    said: list[str] = []
    summary = _suite(tmp_path, [f"flickr8k={data}"], said)
    assert said[0] == f"3 cells {MOVED}"
    assert [(r["dataset"], r["split"], r["status"]) for r in summary["cells"]] == [("flickr8k", "all", "computed")]
    for old in (flickr, voc, sst):
        assert not old.exists() and (cells / "stale" / old.parent.name / old.name).is_file()
    exported = sorted(json.loads(p.read_text())["dataset"] for p in cells.glob("*/*.json"))
    assert exported == ["flickr8k_all"]  # `clip_benchmark build cells/*/*.json`: no `flickr8k` test, no acc1 of VOC
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    assert [(r["dataset"], r["status"]) for r in table["rows"]] == [("flickr8k", "computed")]
    markdown = (tmp_path / "out" / "table.md").read_text()
    assert "earlier run" not in markdown and "voc2007" not in markdown and "rendered_sst2" not in markdown
    said.clear()
    assert _statuses(_suite(tmp_path, [f"flickr8k={data}"], said)) == [("retrieval", "cached")] and said == []


def test_a_cell_of_388b79d_without_a_digest_is_moved_aside_too(tmp_path):
    data = _sst2(tmp_path / "data", 2)
    _suite(tmp_path, [f"rendered_sst2={data}"])
    (path,) = (tmp_path / "out" / "cells").glob("*/*.json")
    cell = json.loads(path.read_text())
    for key in ("cell_format", "dataset_digest"):  # root and counts, as 388b79d wrote them
        cell["clipforge"].pop(key, None)
    path.write_text(json.dumps(cell))
    said: list[str] = []
    summary = _suite(tmp_path, [f"rendered_sst2={data}"], said)
    assert said[:1] == [f"1 cell {MOVED}"] and _statuses(summary) == [("zeroshot", "computed")]
    assert json.loads((tmp_path / "out" / "cells" / "stale" / path.parent.name / path.name).read_text()) == cell
    assert json.loads(path.read_text())["clipforge"]["cell_format"] == 3  # the new cell in its place


def test_the_same_files_through_a_symlinked_root_stay_cached(tmp_path):
    """The digest names samples relative to the dataset's root: a symlinked --root is the same dataset (a guard on
    this fix: digests of full paths recomputed every cell of a folder dataset reached through a link)."""
    data = _flickr8k(tmp_path / "flickr8k")
    (tmp_path / "link").symlink_to(data)
    assert _statuses(_suite(tmp_path, [f"flickr8k={data}"])) == [("retrieval", "computed")]
    said: list[str] = []
    assert _statuses(_suite(tmp_path, [f"flickr8k={tmp_path / 'link'}"], said)) == [("retrieval", "cached")]
    assert said == []
