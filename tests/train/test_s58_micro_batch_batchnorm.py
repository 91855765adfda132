"""`micro_batch` (GradCache) with BatchNorm layers in training cannot equal the full batch (each chunk is normalised
with its own statistics, and the no-grad caching pass updated the running statistics a second time): refused in
one line before any data is read (audit 58 #2). With every BatchNorm frozen in eval mode (`lock_image` on a
ResNet tower) it is exact: the same losses as the full batch, and running statistics untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipforge.train.config import TrainConfig, TrainConfigError
from clipforge.train.logs import read_log
from clipforge.train.trainer import Trainer
from tests.train.run_configs import small_run


def _config(root, out, **kw) -> TrainConfig:
    return small_run(root, out, **{"model": "test-rn-tiny", "steps": 2, **kw})


def test_micro_batch_with_a_trainable_batchnorm_tower_is_refused_in_one_line(caption_folders, tmp_path):
    with pytest.raises(TrainConfigError) as refused:
        Trainer(_config(caption_folders, tmp_path / "run", micro_batch=4))
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("micro_batch=4 (GradCache) cannot give the full batch's gradients with the image "
                              "tower's ")
    assert "BatchNorm layers in training" in message and "--set lock_image=true" in message
    assert "train a ViT" in message and "micro_batch=null" in message
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_micro_batch_is_exact_when_every_batchnorm_is_frozen(caption_folders, tmp_path):
    full = Trainer(_config(caption_folders, tmp_path / "full", lock_image=True))
    before = {k: v.clone() for k, v in full.model.state_dict().items() if "running_" in k or "num_batches" in k}
    full.fit()
    chunked = Trainer(_config(caption_folders, tmp_path / "chunked", lock_image=True, micro_batch=2))
    chunked.fit()
    losses = [[r["loss"] for r in read_log(tmp_path / name) if r["kind"] == "train"] for name in ("full", "chunked")]
    assert len(losses[0]) == 2
    np.testing.assert_allclose(losses[1], losses[0], rtol=2e-5, atol=0)  # float summation order
    after = chunked.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the caching pass updated no statistics
