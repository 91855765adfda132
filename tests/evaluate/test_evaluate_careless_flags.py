"""`clipforge eval` with careless flags that used to give a silent wrong result or a lost run:

- a linear probe on a class-folder root without train/ and test/ folders fit the probe on its own test images
  (both splits are all the images) and reported the score with exit status 0; `--train-split` equal to
  `--split` did the same;
- `--no-full` without `--fewshot-k`, or `--seeds 0`, measured nothing and exited 0;
- `--tolerance -1` made every golden check miss after the whole run;
- `eval suite --top-k -3` kept all classes but three in the predictions (Python slicing), `--top-k 0` none;
- `eval suite` with a model that does not load after one that does ended the grid with no table written.
"""

from __future__ import annotations

import json

import pytest

from clipforge.cli.main import main

_BASE = ["--model", "test-vit-tiny", "--device", "cpu", "--workers", "0", "--quiet", "--batch-size", "8"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_a_probe_on_one_folder_of_classes_is_refused_not_fit_on_its_test_images(tmp_path, capsys, colour_classes):
    root = colour_classes(tmp_path / "flat", per_class=3)  # red/ green/ blue/: no train/ or test/
    code = main(["eval", "linear-probe", *_BASE, "--dataset", "folder", "--root", str(root),
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert _error(capsys) == (f"error: the train and test splits of folder at {root} are the same 9 images (no "
                              "train/ and test/ folders there?): a probe fit on the images it is scored on measures "
                              "nothing; put them in ROOT/train/<class>/ and ROOT/test/<class>/")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags,message", [
    (["--no-full"], "error: --no-full skips the probe on all training data, and without --fewshot-k nothing is left"),
    (["--fewshot-k", "1", "--seeds", "0"], "error: --seeds must be 1 or more (few-shot draws per k), got 0"),
    (["--train-split", "test"], "error: --train-split test is the test split (--split test): the probe would be fit"),
], ids=["no-full-alone", "no-seeds", "train-on-test"])
def test_probe_settings_that_measure_nothing_are_refused_first(tmp_path, capsys, no_model, flags, message):
    (tmp_path / "d" / "train").mkdir(parents=True)
    code = main(["eval", "linear-probe", *_BASE, "--dataset", "folder", "--root", str(tmp_path / "d"),
                 "--out", str(tmp_path / "out"), *flags])
    assert code == 2 and _error(capsys).startswith(message)


def test_a_negative_tolerance_is_refused_first(tmp_path, capsys, no_model):
    code = main(["eval", "zeroshot", *_BASE, "--dataset", "folder", "--root", str(tmp_path),
                 "--out", str(tmp_path / "out"), "--expect", "top1=50", "--tolerance", "-1"])
    assert code == 2 and _error(capsys) == "error: --tolerance must be 0 or more percentage points, got -1.0"


@pytest.mark.parametrize("top_k", ["0", "-3"])
def test_suite_top_k_below_one_is_refused_first(tmp_path, capsys, no_model, top_k):
    code = main(["eval", "suite", "--models", "test-vit-tiny", "--datasets", "rendered_sst2", "--root", str(tmp_path),
                 "--out", str(tmp_path / "out"), "--quiet", "--top-k", top_k])
    assert code == 2 and _error(capsys) == (f"error: --top-k must be 1 or more (classes kept per sample in the "
                                            f"predictions), got {top_k}")


def test_a_suite_model_that_does_not_load_fails_its_cells_and_the_rest_is_tabled(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "datasets"
    for label, colour in (("negative", (200, 20, 20)), ("positive", (20, 200, 20))):
        (root / "rendered-sst2" / "test" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), colour).save(root / "rendered-sst2" / "test" / label / f"{i}.png")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not weights")
    code = main(["eval", "suite", "--models", f"test-vit-tiny,{broken}", "--datasets", "rendered_sst2", "--root",
                 str(root), "--tasks", "zeroshot", "--out", str(tmp_path / "out"), "--device", "cpu", "--workers",
                 "0", "--quiet", "--json"])
    assert code == 1  # a failed cell: not a success, but the grid is done and tabled
    out = capsys.readouterr()
    summary = json.loads(out.out)
    status = {r["model"]: r["status"] for r in summary["cells"]}
    assert status == {"test-vit-tiny": "computed", str(broken): "failed"}, summary["cells"]
    failed = next(r for r in summary["cells"] if r["status"] == "failed")
    assert failed["error"].startswith(f"model did not load: {broken} is not a checkpoint format clipforge reads")
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    assert {r["model"] for r in table["rows"]} == {"test-vit-tiny", str(broken)}


def test_retrieval_on_fewer_images_than_k_says_recall_is_trivially_full(tmp_path, capsys, colour_classes):
    """Two images: text->image R@5 and R@10 are 100% whatever the model; it was printed as a result, unremarked."""
    colour_classes(tmp_path / "photos", per_class=1)
    rows = ["image,caption"] + [f"{c}/0.png,a {c} square" for c in ("red", "green")]
    (tmp_path / "photos" / "captions.csv").write_text("\n".join(rows) + "\n")
    assert main(["eval", "retrieval", *_BASE, "--captions", str(tmp_path / "photos" / "captions.csv"),
                 "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert ("warning: only 2 images were evaluated, so text->image R@5/10 is 100% whatever the model (every image "
            "is in the top k); use more images") in err
