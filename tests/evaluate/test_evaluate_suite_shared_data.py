"""`eval suite` on the real data in ../shared/data with the shipped clipforge-tiny: every cell equals
the single command's number, a rerun recomputes nothing, and CLIP_benchmark's own `build` (its
function, run unmodified from the installed package) merges our cell files."""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import pytest
import torch

from clipforge.cli.main import main

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

pytestmark = [pytest.mark.data, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _need(*names: str) -> None:
    for name in names:
        if not (SHARED / name).exists():
            pytest.skip(f"real data {SHARED / name} is absent (tests using ../shared/data skip without it)")


_COMMON = ["--device", "cpu", "--workers", "0", "--quiet", "--batch-size", "32"]


def _single(tmp_path, name, *args) -> dict:
    out = tmp_path / f"single-{name}"
    assert main([*args, "--model", "clipforge-tiny", "--out", str(out), *_COMMON]) == 0
    (report,) = out.glob("*.json")
    return json.loads(report.read_text())


def _cells(out: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["clipforge"]["dataset"]: json.loads(p.read_text())  # ours; "dataset": CB's
            for p in out.glob("cells/*/*.json")}


def test_suite_cells_equal_single_commands_and_resume(tmp_path, monkeypatch):
    _need("cifar10_jpeg", "cub200_2011_mini", "flickr8k_1k", "imagenet_sample")
    out = tmp_path / "suite"
    suite = ["eval", "suite", "--models", "clipforge-tiny", "--root", str(SHARED), "--out", str(out), *_COMMON]
    assert main([*suite, "--datasets", "cifar10,cub,flickr8k", "food101", "--limit", "60"]) == 0
    # ImageNet's 80 templates x 1000 classes are slow on a shared CPU: the same check with one template
    assert main([*suite, "--datasets", "imagenet", "food101", "--limit", "40", "--templates", "simple"]) == 0
    cells = _cells(out)
    assert set(cells) == {"cifar10", "cub", "flickr8k", "imagenet"}

    c10 = _single(tmp_path, "c10", "eval", "zeroshot", "--dataset", "cifar10", "--root",
                  str(SHARED / "cifar10_jpeg"), "--limit", "60")
    cub = _single(tmp_path, "cub", "eval", "zeroshot", "--dataset", "cub", "--root",
                  str(SHARED / "cub200_2011_mini"), "--limit", "60")
    inet = _single(tmp_path, "inet", "eval", "zeroshot", "--dataset", "imagenet", "--root",
                   str(SHARED / "imagenet_sample"), "--limit", "40", "--templates", "simple")
    f8k = _single(tmp_path, "f8k", "eval", "retrieval", "--captions", str(SHARED / "flickr8k_1k" / "captions.txt"),
                  "--limit", "60")
    for key, single in (("cifar10", c10), ("cub", cub), ("imagenet", inet)):
        m, cell = single["metrics"], cells[key]
        assert cell["task"] == "zeroshot_classification" and cell["model"] == "clipforge-tiny"
        assert cell["metrics"] == {"acc1": m["top1"], "acc5": m["top5"],
                                   "mean_per_class_recall": m["mean_per_class_recall"]}
        cf = cell["clipforge"]
        assert cf["images_evaluated"] == m["num_samples"] and cf["fingerprint"] == single["model"]["fingerprint"]
        assert cf["prompt_set"] == single["templates"]["spec"] and cf["precision"] == "fp32" and cf["decode"] == "draft"
        assert cf["seconds_per_image"] > 0 and cf["images_skipped"] == single["bad_images"]["skipped"]
    m = f8k["metrics"]
    assert cells["flickr8k"]["metrics"]["text_retrieval_recall@1"] == m["image_to_text_R@1"]
    assert cells["flickr8k"]["metrics"]["image_retrieval_recall@5"] == m["text_to_image_R@5"]

    # per-sample predictions: one row per evaluated image, top-5 ids and scores, best first
    import pyarrow.parquet as pq

    preds = pq.read_table(cells["cifar10"]["clipforge"]["predictions"]).to_pydict()
    assert len(preds["index"]) == 60 and all(len(ids) == 5 for ids in preds["topk_ids"])
    top1 = sum(ids[0] == label for ids, label in zip(preds["topk_ids"], preds["label"], strict=True)) / 60
    assert top1 == pytest.approx(c10["metrics"]["top1"])
    assert all(s[0] >= s[-1] for s in preds["topk_scores"])

    table = json.loads((out / "table.json").read_text())
    assert {r["dataset"] for r in table["rows"]} == {"cifar10", "cub", "flickr8k", "imagenet"}
    assert any(m["dataset"] == "food101" for m in table["missing"]) and (out / "heatmap.png").is_file()

    # a rerun computes no cell
    import clipforge.evaluate.suite as suite_module

    def refuse(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(suite_module, "_run_cell", refuse)
    assert main([*suite, "--datasets", "cifar10,cub,flickr8k", "--limit", "60", "--json"]) == 0
    _clip_benchmark_build(out, tmp_path)


def _clip_benchmark_build(out: Path, tmp_path: Path) -> None:
    """Run CLIP_benchmark's own `main_build` over our cell files. Its cli module imports torchvision
    at the top (absent here), so the function is taken from the installed source as it is and run."""
    cb = pytest.importorskip("clip_benchmark")
    source = (Path(cb.__file__).parent / "cli.py").read_text()
    (fn,) = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "main_build"]
    namespace: dict = {"json": json, "os": __import__("os"), "csv": csv}
    exec(compile(ast.Module([fn], type_ignores=[]), "clip_benchmark/cli.py", "exec"), namespace)
    import argparse

    files = [str(p) for p in out.glob("cells/*/*.json")]
    namespace["main_build"](argparse.Namespace(files=files, output=str(tmp_path / "benchmark.csv")))
    with open(tmp_path / "benchmark.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # CLIP_benchmark's names; the shared Flickr8k has no split list, so it is every image: not CB's Karpathy `flickr8k`
    assert {r["dataset"] for r in rows} == {"cifar10", "cub", "flickr8k_all", "imagenet1k"}
    by = {r["dataset"]: r for r in rows}
    assert by["cifar10"]["model_fullname"] == "clipforge-tiny " + by["cifar10"]["pretrained"]
    assert float(by["cifar10"]["acc1"]) == json.loads(next(out.glob("cells/*/cifar10__*.json")).read_text())[
        "metrics"]["acc1"]
