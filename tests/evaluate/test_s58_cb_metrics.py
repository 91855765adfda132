"""audit58 findings 4 and 5: numbers under CLIP_benchmark's names must mean what CLIP_benchmark means.

4. VOC 2007: the cell was named ``voc2007`` (CLIP_benchmark's cropped single-label task), carried acc1/acc5 of
   "the first class present", and put the devkit's 11-point mAP under ``mean_average_precision``.
5. top-5 with fewer than 5 classes was 100% (k > C counted as C); CLIP_benchmark writes NaN.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.cli.main import main
from clipforge.evaluate.suite import parse_suite_expect, run_suite
from tests.evaluate.dataset_builders import voc2007_folder

MODEL = "test-vit-tiny"


pytestmark = pytest.mark.usefixtures("isolated_cache")  # tests/evaluate/conftest.py


def _cb_average_precision():
    cb = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
    return cb.average_precision_per_class


def _voc(root: Path) -> Path:
    """A VOC 2007 test set of 8 images: dog/cat/person marks, one difficult (0) chair, 16 classes never present."""
    return voc2007_folder(root, {1: ["dog"], 2: ["cat", "person"], 3: ["dog", "person"], 4: ["bird"], 5: ["cat"],
                                 6: ["dog", "chair"], 7: ["person"], 8: ["bird", "cat"]})


def test_voc_mean_average_precision_is_clip_benchmarks_and_the_11_point_one_keeps_its_own_name(tmp_path):
    import pyarrow.parquet as pq

    from clipforge.evaluate import evaluate_zeroshot

    root = _voc(tmp_path / "data")
    report = evaluate_zeroshot(MODEL, "voc2007", root, "test", out_dir=tmp_path / "out", device="cpu",
                               progress=False, predictions=tmp_path / "p.parquet", top_k=20)
    metrics = report["metrics"]
    # no single-label accuracy of "the first class present": neither the paper nor CLIP_benchmark defines one
    assert set(metrics) == {"mAP11", "mean_average_precision", "num_samples", "num_classes"}
    preds = pq.read_table(tmp_path / "p.parquet").to_pydict()
    scores = np.zeros((8, 20), dtype=np.float32)
    for row, (ids, values) in enumerate(zip(preds["topk_ids"], preds["topk_scores"], strict=True)):
        scores[row, ids] = values
    from clipforge.data import open_dataset

    marks = open_dataset("voc2007", root, "test").multilabels[preds["index"]]
    assert preds["labels"][5] == [8, 11]  # image 6: chair (difficult) and dog, every class in it
    ap = _cb_average_precision()(torch.tensor(scores), torch.tensor(marks >= 0, dtype=torch.float))  # CB: any object
    assert metrics["mean_average_precision"] == pytest.approx(ap.mean().item(), abs=1e-6)  # all 20 classes
    from clipforge.evaluate.metrics import mean_average_precision_11pt

    assert metrics["mAP11"] == pytest.approx(mean_average_precision_11pt(scores, marks), abs=1e-6)


def test_mean_average_precision_equals_clip_benchmarks_function_on_random_scores():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(60, 20)).astype(np.float32)
    marks = rng.choice([-1, -1, -1, 0, 1], size=(60, 20))
    marks[:, 3] = -1  # a class with no positive: AP 0, still in the mean
    from clipforge.evaluate.metrics import average_precision_per_class, mean_average_precision

    cb = _cb_average_precision()(torch.tensor(scores), torch.tensor(marks >= 0, dtype=torch.float))
    assert average_precision_per_class(scores, marks >= 0) == pytest.approx(cb.numpy(), abs=1e-6)
    assert mean_average_precision(scores, marks) == pytest.approx(cb.mean().item(), abs=1e-6)


def test_a_voc_cell_is_voc2007_multilabel_with_clip_benchmarks_map_only(tmp_path):
    root = _voc(tmp_path / "data")
    summary = run_suite([MODEL], ["voc2007"], root, tmp_path / "out", tasks=("zeroshot", "linear-probe"), workers=0,
                        device="cpu", progress=False, echo=lambda text: None)
    cell = json.loads(next((tmp_path / "out" / "cells").glob("*/voc2007__*zeroshot*.json")).read_text())
    assert cell["dataset"] == "voc2007_multilabel" and set(cell["metrics"]) == {"mean_average_precision"}
    report = json.loads(Path(cell["clipforge"]["report"]).read_text())
    assert cell["metrics"]["mean_average_precision"] == report["metrics"]["mean_average_precision"]
    assert cell["clipforge"]["paper_metric"] == "mAP11" and cell["clipforge"]["paper_value"] == report["metrics"][
        "mAP11"]
    probe = next(r for r in summary["cells"] if r["task"] == "linear-probe")  # no single-label probe of it
    assert probe["status"] == "skipped" and probe["error"].startswith("multi-label: linear probe skipped")
    assert summary["passed"] is True


def test_voc_refuses_single_label_expectations_and_probes(tmp_path):
    from clipforge.data import open_dataset
    from clipforge.evaluate import evaluate_linear_probe
    from clipforge.evaluate.report import parse_expect

    with pytest.raises(ValueError, match=r"--expect top1: zeroshot has no such metric \(known: mAP11, "
                                         r"mean_average_precision\)"):
        parse_expect(["top1=50"], "zeroshot", "voc2007")
    assert parse_expect(["mean_average_precision=50"], "zeroshot", "voc2007") == {"mean_average_precision": 50.0}
    voc = open_dataset("voc2007", _voc(tmp_path / "data"), "test")
    with pytest.raises(ValueError, match=r"^voc2007 is multi-label \(an image may hold several of its 20 classes\): "
                                         r"a single-label probe would be fit and scored on each image's first class"):
        evaluate_linear_probe(MODEL, (voc, voc), out_dir=tmp_path / "out", device="cpu", progress=False)


def _two_classes(root: Path) -> Path:
    for split, n in (("train", 4), ("test", 3)):
        for name, colour in (("negative", (200, 10, 10)), ("positive", (10, 200, 10))):
            (root / "rendered-sst2" / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (colour[0] + i, colour[1], 10)).save(
                    root / "rendered-sst2" / split / name / f"{i}.png")
    return root


def test_top5_of_fewer_than_5_classes_is_null_everywhere(tmp_path):
    from clipforge.evaluate import evaluate_linear_probe, evaluate_zeroshot
    from clipforge.evaluate.metrics import topk_accuracy

    assert np.isnan(topk_accuracy(np.eye(3), [0, 1, 2], ks=(5,))[5])  # was 1.0 ("k > C counts as C")
    root = _two_classes(tmp_path / "data")
    kw = {"out_dir": tmp_path / "out", "device": "cpu", "progress": False}
    zs = evaluate_zeroshot(MODEL, "rendered_sst2", root / "rendered-sst2", "test", **kw)
    lp = evaluate_linear_probe(MODEL, "rendered_sst2", root / "rendered-sst2", use_feature_cache=False, **kw)
    for report in (zs, lp):
        assert report["metrics"]["top5"] is None and report["metrics"]["top1"] is not None
        assert json.loads(Path(report["files"]["report"]).read_text())["metrics"]["top5"] is None  # JSON null
    assert "top5 n/a" in Path(zs["files"]["log"]).read_text()

    summary = run_suite([MODEL], ["rendered_sst2"], root, tmp_path / "suite", tasks=("zeroshot", "linear-probe"),
                        workers=0, device="cpu", progress=False, echo=lambda text: None,
                        expect=parse_suite_expect(["rendered_sst2:top5=100"]))
    cells = {json.loads(p.read_text())["task"]: json.loads(p.read_text())
             for p in (tmp_path / "suite" / "cells").glob("*/*.json")}
    assert cells["zeroshot_classification"]["metrics"]["acc5"] is None
    assert cells["linear_probe"]["metrics"]["lp_acc5"] is None
    (check,) = summary["expectations"]
    assert check["ok"] is False and check["measured"] is None
    assert check["why"] == "the cell's top5 is n/a (undefined for it: top-5 of fewer than 5 classes)"


def test_expect_top5_of_fewer_than_5_classes_is_refused_before_any_image_is_read(tmp_path, capsys, monkeypatch):
    import clipforge.evaluate.zeroshot_eval as zs

    root = _two_classes(tmp_path / "data")
    monkeypatch.setattr(zs, "extract_image_features", lambda *a, **k: pytest.fail("images were read"))
    rc = main(["eval", "zeroshot", "--model", MODEL, "--dataset", "rendered_sst2", "--root",
               str(root / "rendered-sst2"), "--device", "cpu", "--quiet", "--out", str(tmp_path / "out"),
               "--expect", "top5=100"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == ("error: --expect top5: top-5 accuracy is undefined for the 2 classes of rendered_sst2 "
                               "(fewer than 5; the report writes null, as CLIP_benchmark writes NaN)")


def test_the_eval_command_prints_an_undefined_top5_as_n_a(tmp_path, capsys):
    """Before: the stdout line left top5 out once it was null (and said 100.00% before that)."""
    from clipforge.cli.main import main

    root = _two_classes(tmp_path / "data")
    code = main(["eval", "zeroshot", "--model", MODEL, "--dataset", "rendered_sst2", "--root",
                 str(root / "rendered-sst2"), "--out", str(tmp_path / "out"), "--workers", "0", "--quiet"])
    line = capsys.readouterr().out.splitlines()[0]
    assert code == 0 and "top5 n/a" in line and "top1 " in line, line
