"""`--resume` of an `in_memory` run (the path of the shipped `cifar10-from-scratch` recipe) continues exactly.

The sampler's resumed order already left out the batches the interrupted run had trained on, and the tensor-op
batches skipped as many again: the resumed run trained on other batches than the uninterrupted one (step 6 of a
CIFAR-10 run: loss 3.2346 instead of 3.2331), and a short epoch gave none at all ("epoch 1 of the training data
gave no batch to train on", exit 2). The DataLoader path's own test is
`tests/train/test_train_trainer.py::test_resume_latest_continues_the_same_loss_curve`; this one mirrors it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clipforge.train.config import TrainConfig
from clipforge.train.logs import read_log
from clipforge.train.trainer import Trainer

TINY = dict(embed_dim=16, image_resolution=16, vision_layers=1, vision_width=32, vision_patch_size=8,
            context_length=12, vocab_size=49408, transformer_width=32, transformer_heads=1,
            transformer_layers=1)  # a run in about a second


def _config(root: Path, out: Path, **kw) -> TrainConfig:
    """The recipe's in-memory switches on 4 classes x 4 images (16 samples: 4 batches of 4 an epoch)."""
    base = dict(model_config=TINY, data="labelled", dataset="folder", root=str(root), in_memory=True,
                templates=["a photo of {}.", "a picture of {}."], templates_per_batch=1, unique_captions=True,
                label_positives=True, pad_crop=2, hflip=True, ema_decay=0.9, batch_size=4, steps=7, lr=1e-3,
                warmup_steps=2, precision="fp32", log_every=1, out_dir=str(out), seed=3, device="cpu",
                tensorboard=False, keep_last=10)
    return TrainConfig(**{**base, **kw})


def _losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_log(out) if r["kind"] == "train"]


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint))


@pytest.mark.parametrize(("max_samples", "stop", "steps"), [(None, 1, 7), (8, 1, 5)],
                         ids=["mid-epoch-of-4-batches", "small-data-2-batches-an-epoch"])
def test_resumed_in_memory_run_gives_the_same_losses_and_weights(caption_folders, tmp_path, max_samples, stop,
                                                                  steps):
    settings = dict(max_samples=max_samples, steps=steps)
    full = Trainer(_config(caption_folders, tmp_path / "full", **settings)).fit()
    parted = tmp_path / "parted"
    first = Trainer(_config(caption_folders, parted, stop_after_steps=stop, **settings)).fit()
    assert first["steps"] == stop
    assert json.loads((parted / "checkpoints" / "latest.json").read_text())["step"] == stop
    second = Trainer(_config(caption_folders, parted, resume="latest", **settings)).fit()
    assert (second["resumed_at_step"], second["steps"]) == (stop, steps)
    a, b = _losses(tmp_path / "full"), _losses(parted)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, steps + 1))
    assert [v for _, v in b] == [v for _, v in a]  # exactly: the same batches, augmentations and templates
    assert len({round(v, 6) for _, v in a}) > 3  # the curve moves: the check is not vacuous
    assert full["checkpoint"].name == second["checkpoint"].name
    want, got = _weights(full["checkpoint"]), _weights(second["checkpoint"])
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)  # the EMA weights users load, bit for bit
