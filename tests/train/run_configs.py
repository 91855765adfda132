"""The TrainConfig of the small runs the training tests make: a tiny model on a caption folder, a few fp32 steps on
the CPU, logs without TensorBoard (one place, so the tests of one run cannot drift apart)."""

from __future__ import annotations

from typing import Any

from clipforge.train.config import TrainConfig


def small_run(root: Any, out: Any, **changes: Any) -> TrainConfig:
    """test-vit-tiny, 3 steps of 8 images at lr 1e-3, no warmup, seed 3, fp32 on the CPU; `changes` override any."""
    settings = dict(model="test-vit-tiny", data="folder", root=str(root), batch_size=8, steps=3, lr=1e-3,
                    warmup_steps=0, precision="fp32", log_every=1, out_dir=str(out), seed=3, device="cpu",
                    tensorboard=False)
    settings.update(changes)
    return TrainConfig(**settings)
