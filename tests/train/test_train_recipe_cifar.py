"""The recipe that trains the shipped clipforge-tiny, run for 20 steps on the real CIFAR-10
training JPEGs through `clipforge train`: per-epoch accuracy printed, the checkpoint named with
it, and `clipforge.load` reads the result."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from clipforge.cli.main import main
from clipforge.train.config import load_recipe

CIFAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10_jpeg"


def test_list_recipes_lists_the_cifar_recipe(capsys):
    assert main(["train", "--list-recipes"]) == 0
    assert "cifar10-from-scratch" in capsys.readouterr().out.split()
    recipe = load_recipe("cifar10-from-scratch")
    shipped = json.loads(
        (Path(__file__).resolve().parents[2] / "src/clipforge/pretrained/clipforge-tiny/config.json").read_text())
    shipped.pop("activation", None)  # written by the loader's config (CLIP's default quick_gelu)
    assert recipe["model_config"] == shipped
    assert (recipe["in_memory"], recipe["unique_captions"], recipe["channels_last"], recipe["templates"]) == \
        (True, True, True, "cifar10")
    assert recipe["time_budget_s"] == 1200 and recipe["val_dataset"] == "cifar10"


def test_cifar_recipe_20_steps_on_the_real_training_jpegs(tmp_path, capsys):
    train_zip = CIFAR / "train_jpeg.zip"
    if not train_zip.is_file() or not (CIFAR / "test_jpeg.zip").is_file():
        pytest.skip(f"real data {CIFAR} is absent")
    out = tmp_path / "run"
    # 1,280 of the 50,000 images (every class), batch 64: one epoch is the 20 steps
    code = main(["train", "--recipe", "cifar10-from-scratch", "--root", str(train_zip), "--out", str(out),
                 "--steps", "20", "--batch-size", "64", "--set", "max_samples=1280",
                 "--set", "val_max_samples=500"])
    assert code == 0
    printed = capsys.readouterr().err  # evaluation lines go to stderr: stdout carries the result
    line = re.search(r"epoch 1 \(step 20, \d+/1200 s of training\): val_top1 (0\.\d{4}), val_samples 500", printed)
    assert line, printed
    weights = out / "checkpoints" / f"model-1_acc-{line.group(1)}.safetensors"
    assert weights.is_file(), sorted(p.name for p in (out / "checkpoints").iterdir())
    import clipforge

    model, preprocess = clipforge.load(str(weights), device="cpu")
    assert (model.visual.input_resolution, model.context_length, model.embed_dim) == (32, 16, 256)
    from clipforge.train.logs import read_log

    train = [r for r in read_log(out) if r["kind"] == "train"]
    assert train and all(np.isfinite(r["loss"]) for r in train)
