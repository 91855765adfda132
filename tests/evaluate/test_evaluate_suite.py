"""`eval suite` on native-layout fixtures with a tiny random model: cells, CLIP_benchmark format,
predictions, resume, missing/failed datasets, golden checks, linear probe, prompt-name mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.evaluate import suite as suite_module
from clipforge.evaluate.suite import run_suite


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    import scipy.optimize  # noqa: F401 - threadpoolctl only limits libraries already loaded
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _img(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "datasets"
    for split in ("train", "test"):
        for i in range(3):
            _img(root / "rendered-sst2" / split / "negative" / f"n{i}.png", (20 + i, 0, 0))
            _img(root / "rendered-sst2" / split / "positive" / f"p{i}.png", (0, 200 - i, 0))
    from clipforge.data.imagenet_variants import VOC_CLASSES

    main_dir = root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    main_dir.mkdir(parents=True)
    marks = {"000001": "dog", "000002": "cat", "000003": "dog"}
    for cls in VOC_CLASSES:
        (main_dir / f"{cls}_test.txt").write_text("".join(f"{i} {1 if c == cls else -1}\n" for i, c in marks.items()))
    for i, image_id in enumerate(marks):
        _img(root / "VOCdevkit" / "VOC2007" / "JPEGImages" / f"{image_id}.jpg", (40 * i, 50, 60))
    (root / "dtd" / "images" / "banded").mkdir(parents=True)  # present but broken: no labels/test1.txt
    (root / "dtd" / "labels").mkdir()
    return root


def _run(tmp_path, **kw):
    return run_suite(["test-vit-tiny"], ["rendered_sst2", "voc2007", "dtd", "food101", "ucf101"], _root(tmp_path)
                     if not (tmp_path / "datasets").exists() else tmp_path / "datasets", tmp_path / "out",
                     workers=0, device="cpu", progress=False, echo=lambda text: None, **kw)


def test_suite_cells_missing_failed_and_resume(tmp_path, monkeypatch):
    summary = _run(tmp_path)
    status = {(r["dataset"], r["task"]): r["status"] for r in summary["cells"]}
    assert status == {("rendered_sst2", "zeroshot"): "computed", ("voc2007", "zeroshot"): "computed",
                      ("dtd", "zeroshot"): "failed"}
    assert {m["dataset"]: m["reason"].split()[0] for m in summary["missing"]} == {"food101": "not",
                                                                                  "ucf101": "not"}
    assert "frames" in next(m["get"] for m in summary["missing"] if m["dataset"] == "ucf101")
    assert summary["failed"] == 1 and summary["passed"] is False
    cells = {json.loads(p.read_text())["clipforge"]["dataset"]: json.loads(p.read_text())
             for p in (tmp_path / "out" / "cells").glob("*/*.json")}  # "dataset": CLIP_benchmark's name
    sst, voc = cells["rendered_sst2"], cells["voc2007"]
    assert {k for k in sst} >= {"dataset", "model", "pretrained", "task", "metrics", "language"}
    assert sst["task"] == "zeroshot_classification" and set(sst["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    cf = sst["clipforge"]
    assert cf["prompt_set"] == "SST2" and cf["images_evaluated"] == 6 and cf["images_skipped"] == 0
    assert cf["paper_metric"] == "top1" and cf["split"] == "test" and cf["precision"] == "fp32"
    assert voc["clipforge"]["paper_metric"] == "mAP11" and voc["dataset"] == "voc2007_multilabel"
    # CLIP_benchmark's name holds CLIP_benchmark's mAP (all 20 classes, non-interpolated), not the devkit's 11-point
    assert set(voc["metrics"]) == {"mean_average_precision"}
    assert voc["metrics"]["mean_average_precision"] != voc["clipforge"]["paper_value"]
    import pyarrow.parquet as pq

    preds = pq.read_table(cf["predictions"]).to_pydict()
    assert len(preds["label"]) == 6 and all(len(ids) == 2 for ids in preds["topk_ids"])  # k capped at 2 classes
    table = (tmp_path / "out" / "table.md").read_text()
    assert "rendered_sst2" in table and "food101" in table and "failed" in table
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 0

    calls = []
    real = suite_module._run_cell
    monkeypatch.setattr(suite_module, "_run_cell", lambda cell, *a, **k: calls.append(cell.dataset) or real(cell, *a, **k))
    again = _run(tmp_path)
    assert {r["dataset"]: r["status"] for r in again["cells"]}["rendered_sst2"] == "cached"
    assert calls == ["dtd"]  # only the cell that never finished is tried again
    next((tmp_path / "out" / "cells").glob("*/voc2007__*.json")).unlink()
    calls.clear()
    _run(tmp_path)
    assert sorted(calls) == ["dtd", "voc2007"]
    calls.clear()
    _run(tmp_path, exact_decode=True)  # decode mode (like precision) is part of a cell's identity
    assert sorted(calls) == ["dtd", "rendered_sst2", "voc2007"]


def test_suite_cli_expect_fails_loudly_and_linear_probe(tmp_path, capsys):
    root = _root(tmp_path)
    args = ["eval", "suite", "--models", "test-vit-tiny", "--datasets", "rendered_sst2", "--root", str(root),
            "--out", str(tmp_path / "out"), "--device", "cpu", "--workers", "0", "--quiet",
            "--tasks", "zeroshot,linear-probe"]
    assert main(args + ["--expect", "rendered_sst2=100", "--tolerance", "0"]) == 1
    err = capsys.readouterr().err
    assert "MISSED" in err and "rendered_sst2" in err
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    tasks = {r["task"]: r for r in table["rows"]}
    assert set(tasks) == {"zeroshot", "linear-probe"} and table["passed"] is False
    lp = json.loads(next((tmp_path / "out" / "cells").glob("*/*linear-probe*.json")).read_text())
    assert lp["task"] == "linear_probe" and set(lp["metrics"]) == {"lp_acc1", "lp_acc5", "lp_mean_per_class_recall"}
    import pyarrow.parquet as pq

    preds = pq.read_table(lp["clipforge"]["predictions"]).to_pydict()
    top1 = sum(ids[0] == y for ids, y in zip(preds["topk_ids"], preds["label"], strict=True)) / len(preds["label"])
    assert len(preds["label"]) == 6 and top1 == pytest.approx(lp["metrics"]["lp_acc1"])
    measured = tasks["zeroshot"]["ours"]
    assert main(args + ["--expect", f"test-vit-tiny@rendered_sst2:top1={measured}", "--tolerance", "0.01"]) == 0
    assert main(args + ["--expect", "mnist=50"]) == 1  # a check on a cell that was never run fails too
    assert "no such cell" in capsys.readouterr().err
    bad_root = [a if a != str(root) else str(tmp_path / "typo") for a in args]
    assert main(bad_root) == 2 and "no such file or folder" in capsys.readouterr().err


def test_prompt_names_follow_the_labels():
    from types import SimpleNamespace

    from clipforge.evaluate.common import dataset_classnames, default_templates
    from clipforge.zeroshot import get_classnames

    def names(key, own):
        return dataset_classnames(key, SimpleNamespace(classnames=own))

    assert names("food101", ["baklava", "apple_pie"]) == ["baklava", "apple pie"]  # matched by spelling
    pets = names("pets", [f"c{i}" for i in range(37)])
    assert pets[:3] == ["Abyssinian", "American Bulldog", "American Pit Bull Terrier"]  # torchvision's label order
    assert names("eurosat", ["AnnualCrop"] + [f"c{i}" for i in range(9)])[0] == "annual crop land"
    assert names("caltech101", [f"c{i}" for i in range(102)])[:2] == ["background", "off-center face"]
    assert names("fer2013", ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]) == \
        ["angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral"]
    assert names("clevr_counts", [str(n) for n in range(3, 11)]) == [str(n) for n in range(3, 11)]
    assert names("country211", [f"c{i}" for i in range(211)]) == get_classnames("country211")
    assert default_templates("voc2007") == "PascalVOC2007" and default_templates("imagenet_a") == "imagenet"


def test_suite_reads_torchvision_roots_with_the_right_labels(tmp_path):
    """A --root laid out as torchvision's `root` arguments are: each cell's predictions name every
    image with the label its native annotations give."""
    import pyarrow.parquet as pq

    root = tmp_path / "tv"
    expected: dict[str, dict[str, int]] = {}
    # DTD: root/dtd/dtd/{images,labels}
    for cls in ("banded", "zigzagged"):
        _img(root / "dtd" / "dtd" / "images" / cls / f"{cls}_1.jpg", (10, 10, 10))
    (root / "dtd" / "dtd" / "labels").mkdir()
    (root / "dtd" / "dtd" / "labels" / "test1.txt").write_text("zigzagged/zigzagged_1.jpg\nbanded/banded_1.jpg\n")
    expected["dtd"] = {"zigzagged_1.jpg": 1, "banded_1.jpg": 0}
    # CLEVR: root/clevr/CLEVR_v1.0
    clevr = root / "clevr" / "CLEVR_v1.0"
    scenes = [{"image_filename": "a.png", "objects": [{}] * 5}, {"image_filename": "b.png", "objects": [{}] * 9}]
    (clevr / "scenes").mkdir(parents=True)
    (clevr / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"scenes": scenes}))
    for s in scenes:
        _img(clevr / "images" / "val" / s["image_filename"], (1, 2, 3))
    expected["clevr_counts"] = {"a.png": 2, "b.png": 6}
    # GTSRB: root/gtsrb/GTSRB/Final_Test/Images + root/gtsrb/GT-final_test.csv
    for name in ("00000.ppm", "00001.ppm"):
        _img(root / "gtsrb" / "GTSRB" / "Final_Test" / "Images" / name, (200, 0, 0))
    (root / "gtsrb" / "GT-final_test.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
                                                      "00000.ppm;8;8;0;0;7;7;42\n00001.ppm;8;8;0;0;7;7;3\n")
    expected["gtsrb"] = {"00000.ppm": 42, "00001.ppm": 3}
    # Flowers: root/flowers-102
    import numpy as np
    import scipy.io

    (root / "flowers-102").mkdir(parents=True)
    scipy.io.savemat(root / "flowers-102" / "imagelabels.mat", {"labels": np.array([[5, 102]])})
    scipy.io.savemat(root / "flowers-102" / "setid.mat", {"trnid": np.array([[1]]), "valid": np.array([[1]]),
                                                          "tstid": np.array([[2, 1]])})
    for i in (1, 2):
        _img(root / "flowers-102" / "jpg" / f"image_{i:05d}.jpg", (0, 90, 0))
    expected["flowers102"] = {"image_00002.jpg": 101, "image_00001.jpg": 4}

    summary = run_suite(["test-vit-tiny"], list(expected), root, tmp_path / "out", workers=0, device="cpu",
                        progress=False, echo=lambda text: None)
    assert summary["passed"] and {r["dataset"] for r in summary["cells"]} == set(expected)
    for path in (tmp_path / "out" / "cells").glob("*/*.json"):
        cell = json.loads(path.read_text())
        preds = pq.read_table(cell["clipforge"]["predictions"]).to_pydict()
        got = {Path(s.split("::")[-1]).name: label for s, label in zip(preds["source"], preds["label"], strict=True)}
        assert got == expected[cell["clipforge"]["dataset"]], cell["dataset"]  # "dataset": CLIP_benchmark's name
    flowers = next(r for r in summary["cells"] if r["dataset"] == "flowers102")
    assert flowers["metric"] == "mean_per_class_recall"


def test_expect_published_checks_every_cell_with_a_published_number():
    from clipforge.evaluate.suite import parse_suite_expect
    from clipforge.evaluate.suite_table import check_suite_expectations, published_number

    assert published_number("ViT-B/32", "imagenet") == 63.32 and published_number("ViT-B-32", "cifar10") == 89.83
    assert published_number("ViT-B-32:laion2b_s34b_b79k", "imagenet") is not None
    assert published_number("clipforge-tiny", "imagenet") is None

    def row(model, dataset, value):
        return {"model": model, "dataset": dataset, "task": "zeroshot", "metric": "top1", "value": value,
                "metrics": {"acc1": value}, "status": "computed"}

    rows = [row("ViT-B/32", "imagenet", 0.6330), row("clipforge-tiny", "cifar10", 0.8), row("ViT-B/32", "cifar10", 0.85)]
    checks = check_suite_expectations(rows, parse_suite_expect(["published"]), 0.3)
    assert [(c["dataset"], c["ok"]) for c in checks] == [("imagenet", True), ("cifar10", False)]
    none = check_suite_expectations(rows[1:2], parse_suite_expect(["published"]), 0.3)
    assert len(none) == 1 and not none[0]["ok"] and "no cell" in none[0]["why"]
    with pytest.raises(ValueError, match="DATASET"):
        parse_suite_expect(["imagenet"])


def test_a_suite_that_found_no_dataset_is_not_a_success(tmp_path, capsys):
    """`eval suite --datasets cifar10` without --root printed an empty table and exited 0: nothing was measured.
    The table and the list of skipped datasets are still written; the exit status is 2 with one line."""
    args = ["eval", "suite", "--models", "test-vit-tiny", "--datasets", "cifar10", "--out", str(tmp_path / "out"),
            "--device", "cpu", "--workers", "0", "--quiet"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "- cifar10: not found at --root" in captured.out
    assert captured.err.strip().splitlines()[-1] == (
        "error: no dataset of the suite was found without --root (where the datasets are): 1 skipped, listed "
        "above; --download fetches those that can be downloaded")
    assert json.loads((tmp_path / "out" / "table.json").read_text())["missing"]
