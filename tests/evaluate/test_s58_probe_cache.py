"""audit58 findings 1, 2 and 7: the linear probe's feature cache and class lists.

1. The cache key had no file list: after the training class folders were swapped (same root, same counts) the next
   run read the old features with their OLD labels and printed the old result with exit status 0.
2. train/ and test/ with the same number of classes but other names were fit on one mapping and scored on another.
7. A cache hit reported the extracting run's throughput and batch size as this run's.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from clipforge.cli.main import main
from clipforge.evaluate import evaluate_linear_probe
from clipforge.evaluate.feature_cache import cached_features

MODEL = "test-vit-tiny"


pytestmark = pytest.mark.usefixtures("isolated_cache")  # tests/evaluate/conftest.py


def _colours(tmp_path: Path, colour_classes, names=("red", "green", "blue")) -> Path:
    root = tmp_path / "data"
    colour_classes(root / "train", per_class=5, seed=0, side=12)
    colour_classes(root / "test", per_class=3, seed=1, side=12)
    for split in ("train", "test"):
        for old, new in zip(("red", "green", "blue"), names, strict=True):
            if old != new:
                (root / split / old).rename(root / split / new)
    return root


def _probe(root: Path, tmp_path: Path, **kw) -> dict:
    return evaluate_linear_probe(MODEL, "folder", root, out_dir=tmp_path / "out", device="cpu", progress=False,
                                 feature_cache_dir=tmp_path / "features", **kw)


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name("swap-tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def test_relabelled_training_folders_are_a_cache_miss_and_score_the_new_labels(tmp_path, colour_classes):
    root = _colours(tmp_path, colour_classes)
    first = _probe(root, tmp_path)
    assert first["metrics"]["top1"] == 1.0 and not first["timing"]["train"]["cached"]
    _swap(root / "train" / "red", root / "train" / "green")  # every red training image is now labelled green
    second = _probe(root, tmp_path)
    assert second["timing"]["train"]["cached"] is False  # it was a hit: the old features with their old labels
    assert second["timing"]["test"]["cached"] is True  # the test folders did not change
    # fit on the swapped labels, scored on the true ones: red and green test images are called each other
    assert second["metrics"]["top1"] == pytest.approx(1 / 3)
    fresh = _probe(root, tmp_path, use_feature_cache=False)
    assert second["metrics"] == fresh["metrics"]


def test_an_edited_file_is_a_miss_and_a_hit_is_checked_against_the_labels(tmp_path, colour_classes):
    from clipforge.data import open_dataset
    from clipforge.evaluate.common import resolve_model

    root = _colours(tmp_path, colour_classes)
    ev = resolve_model(MODEL, "cpu")
    opened = lambda: open_dataset("folder", root, "test", ev.preprocess)  # noqa: E731
    kw = {"fingerprint": "fp", "split": "test", "indices": None, "cache_dir": tmp_path / "features",
          "batch_size": 4, "workers": 0, "device": torch.device("cpu"), "progress": False}
    ds = opened()
    _, hit = cached_features(ev.model, ds, **kw)
    assert hit is False and cached_features(ev.model, ds, **kw)[1] is True
    edited = root / "test" / "blue" / "0.png"
    stat = edited.stat()
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size and name, touched
    result, hit = cached_features(ev.model, opened(), **kw)
    assert hit is False
    # an entry whose labels are not the dataset's (written by hand, another version, a collision) is never used
    entry = next((tmp_path / "features").glob("*.safetensors"))
    for other in (tmp_path / "features").glob("*.safetensors"):
        entry = other if other.stat().st_mtime_ns > entry.stat().st_mtime_ns else entry
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(entry), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    tensors["labels"] = (tensors["labels"] + 1) % 3
    save_file(tensors, str(entry), metadata=meta)
    again, hit = cached_features(ev.model, opened(), **kw)
    assert hit is False and again.labels.tolist() == result.labels.tolist()
    assert again.labels.tolist() == [label for _, label in opened().samples]
    from clipforge.evaluate.feature_cache import dataset_digest

    digest = dataset_digest(opened(), None)
    edited.write_bytes(edited.read_bytes() + b"\0")  # another size
    assert dataset_digest(opened(), None) != digest


def test_a_cache_hit_reports_this_runs_timing_and_batch_size(tmp_path, colour_classes):
    root = _colours(tmp_path, colour_classes)
    first = _probe(root, tmp_path, batch_size=16)
    second = _probe(root, tmp_path, batch_size=2)
    t1, t2 = first["timing"]["test"], second["timing"]["test"]
    assert t1["batch_size"] == 16 and t1["images_per_s"] > 0 and not t1.get("features_cached")
    assert t2["cached"] is True and t2["features_cached"] is True
    assert t2["batch_size"] == 2 and t2["images_per_s"] is None and t2["model_s"] == 0.0  # this run's, not run 1's
    assert t2["total_s"] == t2["cache_read_s"]
    assert t2["extracted_by_an_earlier_run"] == {k: v for k, v in t1.items() if k != "cached"}  # kept apart
    assert json.loads(Path(second["files"]["report"]).read_text())["timing"]["test"] == t2


def test_train_and_test_with_other_class_names_are_refused_in_one_line(tmp_path, colour_classes, capsys):
    root = tmp_path / "data"
    colour_classes(root / "train", per_class=3, side=12)
    colour_classes(root / "test", per_class=2, seed=1, side=12)
    (root / "test" / "green").rename(root / "test" / "yellow")  # 3 classes each, one name differs
    rc = main(["eval", "linear-probe", "--model", MODEL, "--dataset", "folder", "--root", str(root), "--device",
               "cpu", "--workers", "0", "--quiet", "--out", str(tmp_path / "out"),
               "--feature-cache", str(tmp_path / "features")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err == (f"error: the train ({root / 'train'}) and test ({root / 'test'}) splits of folder have different "
                   "classes: only in train: green; only in test: yellow (a probe fit on one class list and scored on "
                   "another measures nothing: give both splits the same classes)")
    assert not list((tmp_path / "features").glob("*"))  # refused before any feature was extracted


def test_the_same_classes_in_another_order_are_mapped_by_name(tmp_path, colour_classes):
    from clipforge.data.folder import ImageFolder
    from clipforge.evaluate.common import resolve_model

    root = _colours(tmp_path, colour_classes)
    ev = resolve_model(MODEL, "cpu")
    test = ImageFolder(root, "test", ev.preprocess, class_order=["red", "green", "blue"])
    same = ImageFolder(root, "train", ev.preprocess, class_order=["red", "green", "blue"])
    other = ImageFolder(root, "train", ev.preprocess, class_order=["blue", "red", "green"])
    kw = {"out_dir": tmp_path / "out", "device": "cpu", "progress": False, "use_feature_cache": False}
    expected = evaluate_linear_probe(ev, (same, test), **kw)
    mapped = evaluate_linear_probe(ev, (other, test), **kw)
    assert expected["metrics"]["top1"] == 1.0 and mapped["metrics"] == expected["metrics"]  # was 0.0: label 0 was
    assert mapped["dataset"]["train_classes_mapped_by_name"] is True  # blue to the fit and red to the score
    assert mapped["classnames"] == ["red", "green", "blue"]
    from clipforge.evaluate.linear_probe_eval import class_map

    assert class_map(same, test, "folder") is None
    assert class_map(other, test, "folder").tolist() == [2, 0, 1]


def test_the_digest_covers_in_memory_pixels_and_archive_containers(tmp_path):
    from clipforge.data.inmemory import ArrayDataset
    from clipforge.evaluate.feature_cache import dataset_digest

    pixels = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    a = ArrayDataset(pixels, [0, 1, 0, 1], ["a", "b"], root=tmp_path)
    edited = pixels.copy()
    edited[2, 0, 0, 0] = 1
    assert dataset_digest(a, None) == dataset_digest(ArrayDataset(pixels.copy(), [0, 1, 0, 1], ["a", "b"],
                                                                  root=tmp_path), None)
    assert dataset_digest(a, None) != dataset_digest(ArrayDataset(edited, [0, 1, 0, 1], ["a", "b"], root=tmp_path),
                                                     None)
    assert dataset_digest(a, [0, 1]) == dataset_digest(ArrayDataset(edited, [0, 1, 0, 1], ["a", "b"], root=tmp_path),
                                                       [0, 1])  # the subset's pixels did not change
    assert dataset_digest(object(), None) is None  # a dataset that does not list its samples is not cached


def test_a_suite_probe_cell_on_cached_features_says_so_instead_of_an_earlier_speed(tmp_path, colour_classes):
    from clipforge.evaluate.suite import run_suite

    root = tmp_path / "data"
    for split, n in (("train", 3), ("test", 2)):
        colour_classes(root / "rendered-sst2" / split, per_class=n, seed=n, side=12)
        (root / "rendered-sst2" / split / "red").rename(root / "rendered-sst2" / split / "negative")
        (root / "rendered-sst2" / split / "green").rename(root / "rendered-sst2" / split / "positive")
        shutil.rmtree(root / "rendered-sst2" / split / "blue")
    kw = {"tasks": ("linear-probe",), "workers": 0, "device": "cpu", "progress": False,
          "feature_cache_dir": tmp_path / "features", "echo": lambda text: None}
    first = run_suite([MODEL], [f"rendered_sst2={root / 'rendered-sst2'}"], None, tmp_path / "one", **kw)
    second = run_suite([MODEL], [f"rendered_sst2={root / 'rendered-sst2'}"], None, tmp_path / "two", **kw)
    (a,), (b,) = first["cells"], second["cells"]
    assert a["status"] == b["status"] == "computed"  # a fresh --out: computed, on the features cached by run one
    assert a["seconds_per_image"] > 0 and not a["features_cached"]
    assert b["seconds_per_image"] is None and b["features_cached"] is True  # it was run one's s/image
    table = (tmp_path / "two" / "table.md").read_text()
    assert "| features cached |" in table
