"""review58 (of commit 388b79d) findings 4 and 5.

4. ``sea_ship/`` and ``sea ship/`` both display as "sea ship": the probe was refused with "have different classes:
   only in train: none; only in test: none", naming neither folder nor the repeated name.
5. ``eval zeroshot --dataset voc2007 --plot`` wrote no PNG and said nothing on stdout, and the stdout line had the
   paper's mAP11 but not CLIP_benchmark's ``mean_average_precision``, the number the suite cell exports.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.cli.main import main
from tests.evaluate.dataset_builders import voc2007_folder

MODEL = "test-vit-tiny"


pytestmark = pytest.mark.usefixtures("isolated_cache")  # tests/evaluate/conftest.py


def _folders(root: Path, split: str, names: dict[str, tuple[int, int, int]], per_class: int = 2) -> None:
    for name, colour in names.items():
        (root / split / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (10, 10), (colour[0], colour[1] - 10 * i, colour[2])).save(root / split / name / f"{i}.png")


def test_a_name_shown_twice_is_refused_naming_it_its_folders_and_the_split(tmp_path, capsys):
    root = tmp_path / "data"
    _folders(root, "train", {"cat": (200, 100, 20), "sea_ship": (20, 100, 200), "sea ship": (20, 150, 200)})
    _folders(root, "test", {"cat": (200, 100, 20), "sea_ship": (20, 100, 200)})
    rc = main(["eval", "linear-probe", "--model", MODEL, "--dataset", "folder", "--root", str(root), "--device", "cpu",
               "--workers", "0", "--quiet", "--out", str(tmp_path / "out"), "--feature-cache", str(tmp_path / "f")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [
        f"error: the train split ({root / 'train'}) of folder has two classes named 'sea ship' (folders 'sea ship/', "
        "'sea_ship/'): the train and test class lists differ, and a repeated name cannot be matched to the other "
        "split's class: rename or merge those folders"]  # was: "only in train: none; only in test: none"


def test_a_repeated_name_without_folders_is_named_by_its_class_indices():
    from clipforge.evaluate.linear_probe_eval import class_map

    train = SimpleNamespace(classnames=["crane", "dog", "crane"], root="/data/train")
    test = SimpleNamespace(classnames=["dog", "crane"], root="/data/test")
    with pytest.raises(ValueError) as caught:
        class_map(train, test, "birds")
    assert str(caught.value).startswith("the train split (/data/train) of birds has two classes named 'crane' "
                                        "(classes 0, 2): ")
    with pytest.raises(ValueError, match=r"^the test split \(/data/test\) of birds has two classes named 'crane' "):
        class_map(SimpleNamespace(classnames=["dog", "crane"], root="/a"),
                  SimpleNamespace(classnames=["crane", "dog", "crane"], root="/data/test"), "birds")
    same = SimpleNamespace(classnames=["crane", "dog", "crane"], root="/x")  # ImageNet's repeated names, same lists
    assert class_map(same, same, "imagenet") is None


def _voc(root: Path) -> Path:
    """A VOC 2007 test set of 6 images: dog/cat/person marks, a difficult (0) chair, 16 classes never present."""
    return voc2007_folder(root, {1: ["dog"], 2: ["cat", "person"], 3: ["dog", "person"], 4: ["cat"],
                                 5: ["dog", "chair"], 6: ["person"]})


def test_voc_plot_writes_per_class_ap_and_the_line_shows_clip_benchmarks_map(tmp_path, capsys):
    root = _voc(tmp_path / "data")
    out = tmp_path / "out"
    rc = main(["eval", "zeroshot", "--model", MODEL, "--dataset", "voc2007", "--root", str(root), "--out", str(out),
               "--workers", "0", "--device", "cpu", "--quiet", "--plot"])
    lines = capsys.readouterr().out.splitlines()
    (report_path,) = out.glob("zeroshot_*.json")
    report = json.loads(report_path.read_text())
    m = report["metrics"]
    assert rc == 0 and lines[0] == (
        f"{MODEL} on voc2007: mAP11 {100 * m['mAP11']:.2f}%  mean_average_precision "
        f"{100 * m['mean_average_precision']:.2f}%  (the CLIP paper reports mAP11 for this dataset; "
        "mean_average_precision is CLIP_benchmark's, what a suite cell exports)")
    (png,) = out.glob("*.png")  # was none, and no word of it on stdout
    assert png.name == f"{report_path.stem}_per_class_ap.png" and report["files"]["plots"] == [str(png)]
    assert lines[2] == f"plots written to {png}" and "plot_error" not in report
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 100


def test_the_per_class_ap_chart_draws_classes_with_an_image_and_titles_the_exported_mean(tmp_path, monkeypatch):
    import clipforge.evaluate.plots as plots
    from clipforge.evaluate.metrics import average_precision_per_class, mean_average_precision
    from clipforge.evaluate.zeroshot_eval import _ap_plot

    seen = {}
    monkeypatch.setattr(plots, "plot_per_class_accuracy",
                        lambda values, names, path, **kw: seen.update(values=values, path=path, **kw) or path)
    marks = np.array([[1, -1, -1], [0, 1, -1], [-1, 1, -1], [1, -1, -1]])
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.5, 0.4, 0.9], [0.1, 0.2, 0.7]])
    metrics = {"mean_average_precision": mean_average_precision(scores, marks)}
    path = _ap_plot(scores, marks, metrics, ["a", "b", "c"], tmp_path, "run", "m on voc2007")
    ap = average_precision_per_class(scores, marks >= 0)
    assert path == str(tmp_path / "run_per_class_ap.png")
    assert seen["values"] == [pytest.approx(ap[0]), pytest.approx(ap[1]), None]  # c: no image holds it
    assert seen["mean"] == metrics["mean_average_precision"] == pytest.approx(ap.mean())  # c counted 0, as CB
    assert seen["value_name"] == "average precision"
    assert seen["title"] == ("m on voc2007: zero-shot per-class AP (CLIP_benchmark's; 1 class without an image not "
                             "drawn, counted 0)")
