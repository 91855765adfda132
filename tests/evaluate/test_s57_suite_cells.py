"""`eval suite` cells: keyed by every setting that changes them, named as CLIP_benchmark names datasets, and
golden checks limited to this run.

- ``--limit-train`` and ``--top-k`` were no part of a cell's key: a probe trained on 2 images per class was
  returned "cached" for a run on all of them, and the cell did not say which it was.
- Cells named datasets as clipforge's catalogue does (``rendered_sst2``, ``imagenet``, ``flowers102``), so
  CLIP_benchmark's `build` put ours and theirs (``renderedsst2``, ``imagenet1k``, ``flowers``) in two columns.
- ``--expect cifar10=90`` checked the cells of every model earlier runs left in ``--out``; ``--expect published``
  with nothing to check wrote "- * * top1: expected None ±0.3, measured None MISSED" into table.md.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.evaluate.suite import run_suite


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    import scipy.optimize  # noqa: F401 - threadpoolctl only limits libraries already loaded
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "datasets"
    for split in ("train", "test"):
        for i in range(4):
            for cls, colour in (("negative", (20 + i, 0, 0)), ("positive", (0, 200 - i, 0))):
                path = root / "rendered-sst2" / split / cls / f"{cls[0]}{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), colour).save(path)
    return root


def _suite(tmp_path: Path, models=("test-vit-tiny",), **kw) -> dict:
    root = tmp_path / "datasets" if (tmp_path / "datasets").exists() else _root(tmp_path)
    return run_suite(list(models), ["rendered_sst2"], root, tmp_path / "out", workers=0, device="cpu",
                     progress=False, echo=lambda text: None, **kw)


def _status(summary: dict, task: str) -> str:
    (row,) = [r for r in summary["cells"] if r["task"] == task and r["status"] != "earlier run"]
    return row["status"]


def _cell(summary: dict, task: str) -> dict:
    (row,) = [r for r in summary["cells"] if r["task"] == task and r["status"] != "earlier run"]
    return json.loads(Path(row["cell_file"]).read_text())


def test_limit_train_is_part_of_a_probe_cell(tmp_path):
    probe = {"tasks": ("linear-probe",)}
    first = _suite(tmp_path, limit_train=4, **probe)
    assert _status(first, "linear-probe") == "computed"
    full = _suite(tmp_path, **probe)  # every training image: another cell, not the 4-image probe "cached"
    assert _status(full, "linear-probe") == "computed"
    cell = _cell(first, "linear-probe")
    assert cell["clipforge"]["limit_train"] == 4 and cell["clipforge"]["cell"].endswith("__train4")
    assert _cell(full, "linear-probe")["clipforge"]["limit_train"] is None
    assert _status(_suite(tmp_path, limit_train=4, **probe), "linear-probe") == "cached"
    assert _status(_suite(tmp_path, **probe), "linear-probe") == "cached"
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    assert sorted(str(r["limit_train"]) for r in table["rows"]) == ["4", "None"]  # the table tells them apart


def test_top_k_is_part_of_a_cell_that_writes_predictions(tmp_path):
    import pyarrow.parquet as pq

    one = _suite(tmp_path, top_k=1)
    default = _suite(tmp_path)
    assert _status(default, "zeroshot") == "computed"  # it was "cached", with the 1-prediction Parquet
    cell = _cell(one, "zeroshot")["clipforge"]
    assert cell["top_k"] == 1 and cell["cell"].endswith("__top1")
    assert all(len(ids) == 1 for ids in pq.read_table(cell["predictions"]).to_pydict()["topk_ids"])
    cell = _cell(default, "zeroshot")["clipforge"]
    assert cell["top_k"] == 5 and all(len(ids) == 2 for ids in pq.read_table(cell["predictions"]).to_pydict()[
        "topk_ids"])  # 5 asked, the 2 classes there are
    assert _status(_suite(tmp_path, top_k=1), "zeroshot") == "cached"


def test_cells_of_an_earlier_version_are_still_read_when_they_are_this_cell(tmp_path, monkeypatch):
    """A default-name probe cell without ``limit_train`` (what earlier versions wrote): cached when its report says
    it trained on every image, recomputed when the report says it trained on a subset."""
    first = _suite(tmp_path, tasks=("linear-probe",))
    path = Path(next(r["cell_file"] for r in first["cells"]))
    data = json.loads(path.read_text())
    del data["clipforge"]["limit_train"], data["clipforge"]["top_k"]
    path.write_text(json.dumps(data))
    assert _status(_suite(tmp_path, tasks=("linear-probe",)), "linear-probe") == "cached"

    report = Path(data["clipforge"]["report"])
    full = json.loads(report.read_text())
    full["dataset"]["limit_train"] = 4  # as a `--limit-train 4` run of an earlier version wrote it
    report.write_text(json.dumps(full))
    path.write_text(json.dumps(data))
    assert _status(_suite(tmp_path, tasks=("linear-probe",)), "linear-probe") == "computed"


def test_a_cell_names_its_dataset_as_clip_benchmark_does(tmp_path):
    summary = _suite(tmp_path, tasks=("zeroshot", "linear-probe"))
    cells = [json.loads(p.read_text()) for p in (tmp_path / "out" / "cells").glob("*/*.json")]
    assert len(cells) == 2
    assert {c["dataset"] for c in cells} == {"renderedsst2"}  # CLIP_benchmark's name
    assert {c["clipforge"]["dataset"] for c in cells} == {"rendered_sst2"}  # ours, kept
    assert {r["dataset"] for r in summary["cells"]} == {"rendered_sst2"}  # the table speaks clipforge
    again = _suite(tmp_path, tasks=("zeroshot", "linear-probe"), models=("test-rn-tiny",))
    earlier = [r for r in again["cells"] if r["status"] == "earlier run"]
    assert len(earlier) == 2 and {r["dataset"] for r in earlier} == {"rendered_sst2"}

    # CLIP_benchmark's own `build` (its function from the installed source) puts ours beside theirs in one column
    theirs = tmp_path / "theirs.json"
    theirs.write_text(json.dumps({"dataset": "renderedsst2", "model": "ViT-B-32", "pretrained": "openai",
                                  "task": "zeroshot_classification", "metrics": {"acc1": 0.58}, "language": "en"}))
    rows = _clip_benchmark_build([*map(str, (tmp_path / "out" / "cells").glob("*/*.json")), str(theirs)], tmp_path)
    assert len(rows) == 5 and {r["dataset"] for r in rows} == {"renderedsst2"}


def _clip_benchmark_build(files: list[str], tmp_path: Path) -> list[dict]:
    """CLIP_benchmark's `main_build`, taken from the installed cli.py and run as it is (the module imports
    torchvision at the top, which must never be installed beside our torch)."""
    cb = pytest.importorskip("clip_benchmark")
    source = (Path(cb.__file__).parent / "cli.py").read_text()
    (fn,) = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "main_build"]
    namespace: dict = {"json": json, "os": __import__("os"), "csv": csv}
    exec(compile(ast.Module([fn], type_ignores=[]), "clip_benchmark/cli.py", "exec"), namespace)
    namespace["main_build"](argparse.Namespace(files=files, output=str(tmp_path / "benchmark.csv")))
    with open(tmp_path / "benchmark.csv", newline="") as f:
        return list(csv.DictReader(f))


def _clip_benchmark_datasets() -> set[str]:
    """Every dataset name CLIP_benchmark's builder knows: `build_dataset`'s ``dataset_name == "..."`` branches
    and the names its collections list (``vtab/...``)."""
    cb = pytest.importorskip("clip_benchmark")
    source = (Path(cb.__file__).parent / "datasets" / "builder.py").read_text()
    tree = ast.parse(source)
    build = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build_dataset")
    names = {c.value for node in ast.walk(build) if isinstance(node, ast.Compare)
             for c in node.comparators if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    collection = next(n for n in tree.body if isinstance(n, ast.Assign)
                      and any(getattr(t, "id", None) == "dataset_collection" for t in n.targets))
    names |= {c.value for c in ast.walk(collection.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return names


def test_every_catalogue_dataset_has_clip_benchmarks_name_where_it_has_one():
    from clipforge.data.catalog import list_catalog
    from clipforge.evaluate.suite_files import clip_benchmark_name

    known = _clip_benchmark_datasets()
    theirs_lacks = {"cub", "birdsnap", "ucf101", "kinetics700", "hateful_memes"}
    for key in list_catalog():
        name = clip_benchmark_name(key)
        if key in theirs_lacks:
            assert name == key
        else:
            assert name in known, (key, name)
    assert [clip_benchmark_name(k) for k in ("imagenet", "imagenet_a", "flowers102", "mscoco", "resisc45")] == [
        "imagenet1k", "imagenet-a", "flowers", "mscoco_captions", "vtab/resisc45"]


def test_expect_checks_only_this_runs_models(tmp_path, capsys):
    root = _root(tmp_path)
    args = ["eval", "suite", "--datasets", "rendered_sst2", "--root", str(root), "--out", str(tmp_path / "out"),
            "--device", "cpu", "--workers", "0", "--quiet"]
    assert main([*args, "--models", "test-vit-tiny,test-rn-tiny"]) == 0
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    vit = next(r["ours"] for r in table["rows"] if r["model"] == "test-vit-tiny")
    capsys.readouterr()
    assert main([*args, "--models", "test-vit-tiny", "--expect", f"rendered_sst2={vit}", "--tolerance", "0.01"]) == 0
    checks = json.loads((tmp_path / "out" / "table.json").read_text())["expectations"]
    assert [(c["model"], c["ok"]) for c in checks] == [("test-vit-tiny", True)]  # test-rn-tiny's earlier cell: not
    assert "MISSED" not in capsys.readouterr().err


def test_expect_published_with_nothing_to_check_says_so(tmp_path, capsys):
    root = _root(tmp_path)
    args = ["eval", "suite", "--models", "test-vit-tiny", "--datasets", "rendered_sst2", "--root", str(root),
            "--out", str(tmp_path / "out"), "--device", "cpu", "--workers", "0", "--quiet", "--expect", "published"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "expect published: MISSED (no cell of this run has a published number to check)" in err
    table = (tmp_path / "out" / "table.md").read_text()
    golden = table.split("Golden checks:")[1].strip().splitlines()
    assert golden == ["- --expect published: MISSED: no cell of this run has a published number to check"]
    assert not re.search(r"expected None|measured None", table)
