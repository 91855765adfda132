"""The runners on the real layouts in ../shared/data (skipped when absent), via the CLI.

Random `test-vit-tiny` weights: these check that every layout loads, every image is accounted
for, the report is complete, and an untrained model scores about chance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clipforge.cli.main import main
from clipforge.zeroshot import get_classnames

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

pytestmark = [pytest.mark.data, pytest.mark.slow]


def _need(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"real data {path} is absent (tests using ../shared/data skip without it)")
    return path


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    import scipy.optimize  # noqa: F401 - load every BLAS before limiting them: threadpoolctl
    import sklearn.linear_model  # noqa: F401   only limits libraries already loaded
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the suite shares 2 CPUs; spinning intra-op threads cost ~10x
    with threadpool_limits(1):  # the same for BLAS under scikit-learn's L-BFGS
        yield
    torch.set_num_threads(before)


def _run(tmp_path, *args) -> dict:
    out = tmp_path / "out"
    assert main([*args, "--model", "test-vit-tiny", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    (report,) = out.glob("*.json")
    data = json.loads(report.read_text())
    assert Path(data["files"]["log"]).is_file() and data["model"]["weights"] == "random (seed 0)"
    return data


def test_imagenet_sample_flat_layout(tmp_path):
    root = _need("imagenet_sample")
    r = _run(tmp_path, "eval", "zeroshot", "--dataset", "imagenet", "--root", str(root), "--templates", "simple",
             "--limit", "150", "--workers", "2")
    assert r["dataset"]["num_images"] == 1000 and r["dataset"]["num_classes"] == 1000
    assert r["classnames"] == get_classnames("imagenet")
    assert r["dataset"]["evaluated"] + r["bad_images"]["skipped"] == 150
    assert r["metrics"]["top1"] <= 0.03  # chance is 0.1%
    assert r["templates"]["templates"] == ["a photo of a {}."]


def test_cub_mini(tmp_path):
    root = _need("cub200_2011_mini")
    r = _run(tmp_path, "eval", "zeroshot", "--dataset", "cub", "--root", str(root), "--limit", "60",
             "--workers", "0")
    assert r["dataset"]["num_images"] == 250 and r["dataset"]["num_classes"] == 200
    assert r["classnames"][0] == "Black footed Albatross" and r["dataset"]["evaluated"] == 60
    assert r["templates"]["templates"] == ["a photo of a {}, a type of bird."]
    assert len(r["metrics"]["per_class_accuracy"]) == 200


def test_cifar10_zip_untrained_is_about_chance(tmp_path):
    root = _need("cifar10_jpeg")
    r = _run(tmp_path, "eval", "zeroshot", "--dataset", "cifar10", "--root", str(root), "--limit", "500",
             "--workers", "0", "--batch-size", "250")
    assert r["dataset"]["num_images"] == 10000 and r["dataset"]["evaluated"] == 500
    assert r["templates"]["count"] == 18 and r["classnames"] == get_classnames("cifar10")
    m = r["metrics"]
    assert 0.03 <= m["top1"] <= 0.2 and 0.03 <= m["mean_per_class_recall"] <= 0.2  # chance 10%
    assert 0.3 <= m["top5"] <= 0.7  # chance 50%


def test_flickr8k_retrieval(tmp_path):
    root = _need("flickr8k_1k")
    r = _run(tmp_path, "eval", "retrieval", "--captions", str(root / "captions.txt"), "--images",
             str(root / "images"), "--limit", "100", "--workers", "0")
    m = r["metrics"]
    assert (m["num_images"], m["num_texts"]) == (100, 500)
    assert r["dataset"]["num_images"] == 1000 and r["dataset"]["num_captions"] == 5000
    for d in ("image_to_text", "text_to_image"):
        assert 0 <= m[f"{d}_R@1"] <= m[f"{d}_R@5"] <= m[f"{d}_R@10"] <= 0.5  # chance R@10 is ~10%


def test_cifar10_linear_probe_and_fewshot(tmp_path):
    root = _need("cifar10_jpeg")
    r = _run(tmp_path, "eval", "linear-probe", "--dataset", "cifar10", "--root", str(root), "--limit-train", "400",
             "--limit", "200", "--fewshot-k", "1,4", "--seeds", "1", "--workers", "0")
    assert (r["dataset"]["train_examples"], r["dataset"]["test_examples"]) == (400, 200)
    m = r["metrics"]
    assert 0.0 <= m["top1"] <= 1.0 and r["probe"]["full"]["c_selection"] == "validation sweep"
    assert set(m["fewshot"]) == {"1", "4"} and all(m["fewshot"][k]["top1"]["n"] == 1 for k in ("1", "4"))
    assert m["fewshot"]["4"]["runs"][0]["train_examples"] == 40
