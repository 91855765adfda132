"""A frozen ResNet tower stays frozen: its BatchNorm running statistics are bit-identical after a run whose
epoch-end evaluations put the model in eval mode and back (`freeze.train_mode`), for `lock_image` and for
`projections_only` (audit 58 #1: the first evaluation's `model.train(was_training)` put the locked tower back in
train mode, and `projections_only` never had eval mode at all; the shipped clipforge-tiny-zh carries the drift).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from clipforge.train.config import TrainConfig
from clipforge.train.trainer import Trainer


def _config(root, out, **kw) -> TrainConfig:
    base = dict(model="test-rn-tiny", data="folder", root=str(root), batch_size=4, steps=8, lr=1e-3,
                warmup_steps=0, precision="fp32", log_every=1, out_dir=str(out), seed=3, device="cpu",
                tensorboard=False, val_dataset="folder", val_root=str(root), val_templates=["{}"], keep_last=5)
    base.update(kw)
    return TrainConfig(**base)


def _stats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.items()
            if k.startswith("visual.") and ("running_" in k or "num_batches_tracked" in k)}


@pytest.mark.parametrize("option", ["lock_image", "projections_only"])
def test_a_frozen_resnet_towers_batchnorm_statistics_do_not_move(caption_folders, tmp_path, option):
    trainer = Trainer(_config(caption_folders, tmp_path / option, **{option: True}))
    before = _stats(trainer.model.state_dict())
    projection = trainer.model.visual.attnpool.c_proj.weight.detach().clone()
    assert len(before) >= 3 * 10  # the tiny ResNet's BatchNorm layers: the check is not vacuous
    result = trainer.fit()
    assert result["steps"] == 8  # 16 images / batch 4: two epochs, each ending in an evaluation
    after = _stats(trainer.model.state_dict())
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []
    for ckpt in sorted((tmp_path / option / "checkpoints").glob("*.safetensors")):
        saved = load_file(ckpt)
        assert [k for k in before if not torch.equal(before[k], saved[k])] == [], ckpt.name
    # the tower's own projection trains under projections_only (an eval-mode tower took the packed fast path,
    # whose detached weights get no gradient), and stays put when the whole tower is locked
    moved = not torch.equal(projection, trainer.model.visual.attnpool.c_proj.weight.detach())
    assert moved == (option == "projections_only")
    assert not any(m.training for m in trainer.model.visual.modules()
                   if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


def test_train_mode_leaves_only_trainable_modules_training():
    from clipforge.api import load_model
    from clipforge.train.freeze import apply_freezing, batch_norms_in_training, train_mode

    model = load_model("test-rn-tiny", device="cpu", seed=0).model
    assert len(batch_norms_in_training(model)) > 10  # nothing frozen: every BatchNorm trains
    apply_freezing(model, lock_image=True)
    assert batch_norms_in_training(model) == []
    train_mode(model)
    assert not model.visual.training and model.transformer.training and model.training
