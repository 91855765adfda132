"""The accuracy a run writes into a checkpoint's name (and best.json) is the one `clipforge eval zeroshot
--precision P` prints for that file, P the run's precision: bf16 for a run in bf16 (autocast), fp32 otherwise
(audit 58 #6: the hook took image features under the training autocast and class embeddings in fp32, a number
the command gives in neither precision)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from clipforge.evaluate.zeroshot_eval import evaluate_zeroshot
from clipforge.inference.cpu import bf16_supported
from clipforge.train.config import TrainConfig
from clipforge.train.trainer import Trainer

TEMPLATES = ["a photo of {}."]


@pytest.fixture(scope="module")
def val_folder(tmp_path_factory):
    """2 classes x 60 noise images: a barely trained model scores the two prompts closely, and with two classes
    every prediction a precision mismatch flips changes the accuracy."""
    root = tmp_path_factory.mktemp("val")
    rng = np.random.default_rng(11)
    for c in range(2):
        (root / f"thing_{c}").mkdir()
        for i in range(60):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            pixels[..., c] //= 2
            Image.fromarray(pixels).save(root / f"thing_{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize("precision, command", [("fp32", "fp32"), ("amp", "bf16"), ("bf16", "bf16")])
def test_the_hooks_accuracy_is_the_eval_commands(caption_folders, val_folder, tmp_path, precision, command):
    if command == "bf16" and not bf16_supported():
        pytest.skip("bf16 is refused by `eval zeroshot` on a CPU without native bf16")
    # lr 1e-7: the random weights barely move, so the two prompts' scores stay close (where precision decides)
    config = TrainConfig(model="test-vit-tiny", data="folder", root=str(caption_folders), batch_size=4, steps=2,
                         lr=1e-7, warmup_steps=0, precision=precision, log_every=1, seed=3, device="cpu",
                         tensorboard=False, out_dir=str(tmp_path / "run"), val_dataset="folder",
                         val_root=str(val_folder), val_templates=TEMPLATES)
    result = Trainer(config).fit()
    hook = result["metrics"]["val_top1"]
    report = evaluate_zeroshot(str(result["checkpoint"]), "folder", str(val_folder), templates=TEMPLATES,
                               precision=command, out_dir=tmp_path / "eval", progress=False)
    assert report["metrics"]["num_samples"] == result["metrics"]["val_samples"] == 120
    assert hook == report["metrics"]["top1"]
    assert f"_acc-{report['metrics']['top1']:.4f}" in result["checkpoint"].name
    # stop 50: the precision the accuracy was measured in is written beside it (eval.csv, log.jsonl, best.json)
    assert result["metrics"]["eval_precision"] == command
    run = tmp_path / "run"
    with open(run / "eval.csv", newline="", encoding="utf-8") as f:
        assert [row["eval_precision"] for row in csv.DictReader(f)] == [command]
    assert json.loads((run / "checkpoints" / "best.json").read_text())["metrics"]["eval_precision"] == command
