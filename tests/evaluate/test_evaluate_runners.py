"""The runners end to end on fixture folders, with a constructed model that must score 100%.

`ColourCLIP` is a real `CLIP` (tiny config, so preprocess sizes, fingerprints and caches work
as for any model) whose towers are replaced by honest rules: the image tower measures the
mean colour of the de-normalised pixels and emits the one-hot direction of the nearest palette
colour; the text tower looks for a colour word's BPE token among the prompt tokens and emits
the same direction. Nothing looks at labels or file names.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.cli.main import main
from clipforge.evaluate import evaluate_linear_probe, evaluate_retrieval, evaluate_zeroshot
from clipforge.image import MEAN, STD
from clipforge.models import CLIP, get_config
from clipforge.text import tokenize

PALETTE = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 50, 220), "yellow": (230, 220, 30),
           "purple": (140, 40, 170)}


class ColourCLIP(CLIP):
    def __init__(self, colours=tuple(PALETTE), text_order=None):
        torch.manual_seed(0)
        super().__init__(**get_config("test-vit-tiny"))
        self.eval()
        self.colours = list(colours)
        self.palette = torch.tensor([PALETTE[c] for c in self.colours], dtype=torch.float32) / 255
        # which direction the text tower gives each colour word (identity unless told otherwise)
        order = list(text_order or self.colours)
        self.word_tokens = [int(tokenize(c)[0, 1]) for c in order]

    def encode_image(self, image):
        rgb = image.float() * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
        mean = rgb.mean(dim=(2, 3))
        nearest = torch.cdist(mean, self.palette).argmin(dim=1)
        return torch.nn.functional.one_hot(nearest, self.embed_dim).float()

    def encode_text(self, text):
        out = torch.zeros(len(text), self.embed_dim)
        for direction, token in enumerate(self.word_tokens):
            out[(text == token).any(dim=1), direction] = 1.0
        assert bool((out.sum(dim=1) == 1).all()), "every prompt must name exactly one colour"
        return out


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


def make_colour_folder(root, per_class=4, broken=True, seed=0):
    rng = np.random.default_rng(seed)
    for name, rgb in PALETTE.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noisy = np.clip(np.array(rgb) + rng.normal(0, 12, size=(20 + i, 30, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / name / f"{name}_{i}.{'png' if i % 2 else 'jpg'}")
    if broken:
        (root / "red" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _read_report(report):
    with open(report["files"]["report"], encoding="utf-8") as f:
        on_disk = json.load(f)
    assert on_disk["metrics"] == report["metrics"] and on_disk["timing"] == report["timing"]
    return on_disk


def test_constructed_model_scores_100_percent_through_eval_zeroshot(tmp_path):
    root = make_colour_folder(tmp_path / "colours")
    report = evaluate_zeroshot(ColourCLIP(), "folder", root, templates="imagenet7", workers=2, batch_size=8,
                               out_dir=tmp_path / "out", expect={"top1": 100.0}, tolerance=0.0, progress=False)
    disk = _read_report(report)
    m = disk["metrics"]
    assert (m["top1"], m["top5"], m["mean_per_class_recall"]) == (1.0, 1.0, 1.0)
    assert m["per_class_accuracy"] == [1.0] * 5 and m["num_samples"] == 20
    assert disk["passed"] is True and disk["expectations"][0]["measured"] == 100.0
    assert disk["bad_images"]["skipped"] == 1 and "truncated.jpg" in disk["bad_images"]["examples"][0]["source"]
    assert disk["dataset"].items() >= {"name": "folder", "num_images": 21, "num_classes": 5, "evaluated": 20}.items()
    assert disk["classnames"] == sorted(PALETTE) and disk["templates"]["count"] == 7
    assert disk["model"]["fingerprint"] == report["model"]["fingerprint"] and len(disk["model"]["fingerprint"]) >= 16
    t = disk["timing"]
    assert t["images"] == 20 and t["workers"] == 2 and t["images_per_s"] > 0 and t["model_ms_per_image"] >= 0
    assert t["decode_preprocess_ms_per_image"] > 0 and not t["class_embeddings_cached"]
    assert disk["memory"]["max_rss_mib"] > 0
    assert {"torch", "clipforge", "python"} <= set(disk["versions"]) and disk["device"]["device"] == "cpu"
    log = Path(disk["files"]["log"]).read_text(encoding="utf-8")
    assert "truncated.jpg" in log and "top1 100.00%" in log


def test_swapped_text_directions_cost_exactly_those_classes(tmp_path):
    root = make_colour_folder(tmp_path / "colours", broken=False)
    order = list(PALETTE)
    order[0], order[1] = order[1], order[0]  # the text tower confuses red and green
    report = evaluate_zeroshot(ColourCLIP(text_order=order), "folder", root, templates="simple", workers=0,
                               out_dir=tmp_path / "out", plot=True, progress=False)
    m = report["metrics"]
    assert m["top1"] == pytest.approx(12 / 20) and m["top5"] == 1.0
    by_class = dict(zip(report["classnames"], m["per_class_accuracy"], strict=True))
    assert by_class == {"blue": 1.0, "green": 0.0, "purple": 1.0, "red": 0.0, "yellow": 1.0}
    for png in report["files"]["plots"]:
        with Image.open(png) as im:
            assert im.format == "PNG"


def test_cli_golden_check_exit_status_and_cache(tmp_path, capsys):
    root = make_colour_folder(tmp_path / "colours", per_class=2, broken=False)
    args = ["eval", "zeroshot", "--model", "test-vit-tiny", "--dataset", "folder", "--root", str(root),
            "--workers", "0", "--out", str(tmp_path / "out"), "--templates", "simple", "--quiet", "--device", "cpu"]
    assert main(args + ["--expect", "top1=100", "--tolerance", "0.1"]) == 1  # random weights miss
    first = json.loads(sorted((tmp_path / "out").glob("*.json"))[-1].read_text())
    assert first["passed"] is False and first["model"]["weights"] == "random (seed 0)"
    assert "MISSED" in capsys.readouterr().err
    measured = 100 * first["metrics"]["top1"]
    assert main(args + ["--expect", f"top1={measured:.4f}", "--tolerance", "0.01"]) == 0
    reports = sorted((tmp_path / "out").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    second = json.loads(reports[-1].read_text())
    assert second["passed"] is True and second["timing"]["class_embeddings_cached"] is True
    assert second["metrics"] == first["metrics"]
    assert main(args[:-2] + ["--expect", "top9=1"]) == 2
    assert "no such metric" in capsys.readouterr().err


def test_cli_reports_missing_dataset_clearly(tmp_path, capsys):
    code = main(["eval", "zeroshot", "--model", "test-vit-tiny", "--dataset", "cub", "--root",
                 str(tmp_path / "nowhere"), "--workers", "0", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and ("expected layout" in err or "no such file or folder" in err)  # checked before loading


def _caption_fixture(root):
    """One image per colour with two captions each, a broken image, and a row for a missing file."""
    (root / "images").mkdir(parents=True)
    rows = ["image,caption"]
    for name, rgb in PALETTE.items():
        Image.new("RGB", (24, 18), rgb).save(root / "images" / f"{name}.png")
        rows += [f"{name}.png,a {name} square", f'{name}.png,"plain {name}, nothing else"']
    (root / "images" / "broken.jpg").write_bytes(b"nope")
    rows += ["broken.jpg,a red blob", "broken.jpg,a green blob", "absent.png,a blue thing"]
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root / "captions.csv"


def test_constructed_model_retrieves_perfectly(tmp_path):
    csv_path = _caption_fixture(tmp_path / "caps")
    report = evaluate_retrieval(ColourCLIP(), csv_path, out_dir=tmp_path / "out", workers=0, progress=False,
                                expect={"image_to_text_R@1": 100, "text_to_image_R@1": 100}, tolerance=0)
    disk = _read_report(report)
    m = disk["metrics"]
    assert all(m[f"{d}_R@{k}"] == 1.0 for d in ("image_to_text", "text_to_image") for k in (1, 5, 10))
    assert (m["num_images"], m["num_texts"]) == (5, 10) and disk["passed"] is True
    assert disk["dataset"]["num_images"] == 6 and disk["dataset"]["missing_files"] == 1
    assert disk["bad_images"]["skipped"] == 1 and disk["bad_images"]["captions_dropped"] == 2


def test_retrieval_ties_are_broken_by_index(tmp_path):
    """Two identical red images: the first ranks above the second for every red caption, so
    the second image's captions miss at R@1 but hit at R@5 (the documented tie rule)."""
    csv_path = _caption_fixture(tmp_path / "caps")
    Image.new("RGB", (24, 18), PALETTE["red"]).save(tmp_path / "caps" / "images" / "red2.png")
    with open(csv_path, "a") as f:
        f.write("red2.png,another red square\nred2.png,red again\n")
    report = evaluate_retrieval(ColourCLIP(), csv_path, out_dir=tmp_path / "out", workers=0, progress=False)
    m = report["metrics"]
    assert (m["num_images"], m["num_texts"]) == (6, 12)
    assert m["text_to_image_R@1"] == pytest.approx(10 / 12) and m["text_to_image_R@5"] == 1.0
    # image->text: for the red2 query all four red captions tie; red's two come first (lower index),
    # so red2's best own caption ranks third: a miss at R@1, a hit at R@5.
    assert m["image_to_text_R@1"] == pytest.approx(5 / 6) and m["image_to_text_R@5"] == 1.0


def test_linear_probe_on_constructed_features(tmp_path):
    for split, seed in (("train", 1), ("test", 2)):
        make_colour_folder(tmp_path / "colours" / split, per_class=4, broken=False, seed=seed)
    report = evaluate_linear_probe(ColourCLIP(), "folder", tmp_path / "colours", fewshot_k=[1, 2], seeds=2,
                                   workers=0, out_dir=tmp_path / "out", feature_cache_dir=tmp_path / "feats",
                                   progress=False)
    disk = _read_report(report)
    m = disk["metrics"]
    assert m["top1"] == 1.0 and m["mean_per_class_recall"] == 1.0
    full = disk["probe"]["full"]
    assert full["c_selection"] == "validation sweep" and (full["train_examples"], full["val_examples"]) == (15, 5)
    assert set(full["sweep"]) >= {"-6", "-4", "-2", "0", "2", "4", "6"}
    assert m["fewshot"]["1"]["runs"][0]["train_examples"] == 5 and m["fewshot"]["2"]["top1"]["n"] == 2
    assert m["fewshot"]["2"]["runs"][0]["val_examples"] == 10
    assert not disk["timing"]["train"]["cached"] and len(list((tmp_path / "feats").glob("*.safetensors"))) == 2
    again = evaluate_linear_probe(ColourCLIP(), "folder", tmp_path / "colours", workers=0, out_dir=tmp_path / "out",
                                  feature_cache_dir=tmp_path / "feats", progress=False)
    assert again["timing"]["train"]["cached"] and again["timing"]["test"]["cached"]
    assert again["metrics"]["top1"] == 1.0


def test_report_versions_are_read_without_importing_what_is_not_loaded():
    """`versions()` goes into every report; it imported scikit-learn (scipy, pandas: 1.1 s of every
    `eval zeroshot`) only to read its version. In a fresh process it must leave sklearn unimported and
    still report the versions the packages themselves give."""
    import subprocess
    import sys

    import PIL
    import sklearn

    import clipforge

    code = ("import json, sys; from clipforge.evaluate.report import versions; v = versions(); "
            "print(json.dumps({'versions': v, 'sklearn_loaded': 'sklearn' in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["sklearn_loaded"] is False
    assert got["versions"]["sklearn"] == sklearn.__version__
    assert got["versions"]["PIL"] == PIL.__version__
    assert got["versions"]["torch"] == torch.__version__ and got["versions"]["clipforge"] == clipforge.__version__
