"""The trainer: exact resume, checkpoints (names, keep-last, best), logs, curves, freezing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.train.config import TrainConfig
from clipforge.train.logs import read_log
from clipforge.train.trainer import Trainer

CAPTIONS = ["a red square", "a green circle", "a blue stripe", "a yellow dot"]


@pytest.fixture(scope="module")
def caption_folder(tmp_path_factory) -> Path:
    """4 caption folders x 4 small PNGs whose colour depends on the caption."""
    root = tmp_path_factory.mktemp("captions")
    rng = np.random.default_rng(0)
    for c, caption in enumerate(CAPTIONS):
        (root / caption.replace(" ", "_")).mkdir()
        for i in range(4):
            pixels = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
            pixels[..., c % 3] += 150
            Image.fromarray(pixels).save(root / caption.replace(" ", "_") / f"{i}.png")
    return root


def _config(root: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="test-vit-tiny", data="folder", root=str(root), batch_size=4, steps=6, lr=1e-3,
                warmup_steps=2, precision="fp32", log_every=1, out_dir=str(out), seed=3, device="cpu",
                tensorboard=False)
    base.update(kw)
    return TrainConfig(**base)


def _losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_log(out) if r["kind"] == "train"]


def test_resume_latest_continues_the_same_loss_curve(caption_folder, tmp_path):
    full = tmp_path / "full"
    Trainer(_config(caption_folder, full)).fit()
    parted = tmp_path / "parted"
    first = Trainer(_config(caption_folder, parted, stop_after_steps=4)).fit()  # crosses an epoch end (4 steps)
    assert first["steps"] == 4
    latest = json.loads((parted / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 4
    second = Trainer(_config(caption_folder, parted, resume="latest")).fit()
    assert second["steps"] == 6
    a, b = _losses(full), _losses(parted)
    assert [s for s, _ in a] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in b] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([v for _, v in b], [v for _, v in a], rtol=0, atol=1e-6)
    assert len({round(v, 6) for _, v in a}) > 3  # the curve moves: the check is not vacuous


def test_checkpoints_logs_and_curves(caption_folder, tmp_path):
    out = tmp_path / "run"
    config = _config(caption_folder, out, steps=None, epochs=2, keep_last=1, val_dataset="folder", tensorboard=True,
                     val_root=str(caption_folder), val_templates=["{}"], forget_dataset="folder",
                     forget_root=str(caption_folder), forget_templates=["a picture of {}"])
    result = Trainer(config).fit()
    assert result["steps"] == 8  # 16 images / batch 4 = 4 steps per epoch
    ckpts = out / "checkpoints"
    index = json.loads((ckpts / "index.json").read_text())
    best = json.loads((ckpts / "best.json").read_text())
    names = {r["name"] for r in index}
    assert all(n.startswith("model-") and "_acc-" in n for n in names)
    assert json.loads((ckpts / "latest.json").read_text())["name"].startswith("model-2_acc-")
    assert names == {json.loads((ckpts / "latest.json").read_text())["name"], best["name"]}
    for name in names:  # weights and state for every kept checkpoint, nothing else
        assert (ckpts / f"{name}.safetensors").is_file() and (ckpts / f"{name}.state.pt").is_file()
    assert len(list(ckpts.glob("*.safetensors"))) == len(names)
    evals = [r for r in read_log(out) if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2] and all(0 <= r["val_top1"] <= 1 for r in evals)
    assert all(r["val_samples"] == 16 and 0 <= r["forget_top1"] <= 1 for r in evals)
    assert best["metrics"]["val_top1"] == max(r["val_top1"] for r in evals)
    assert any((out / "tensorboard").iterdir())
    header = (out / "train.csv").read_text().splitlines()[0]
    assert header.startswith("step,epoch,loss,lr")
    assert (out / "loss.png").stat().st_size > 1000 and (out / "accuracy.png").stat().st_size > 1000
    # the weights load back through the public loader
    from clipforge.api import load_model

    model = load_model(ckpts / f"{best['name']}.safetensors", "cpu").model
    assert model.embed_dim == 32


def test_freezing_and_weight_decay_groups(caption_folder, tmp_path):
    trainer = Trainer(_config(caption_folder, tmp_path / "lock", steps=2, lock_image=True))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("visual."))
    assert not torch.equal(before["text_projection"], after["text_projection"])
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    decay = {names[id(p)] for p in groups["decay"]["params"]}
    assert groups["no_decay"]["weight_decay"] == 0 and groups["decay"]["weight_decay"] == 0.2
    assert {"logit_scale", "token_embedding.weight", "positional_embedding", "ln_final.weight",
            "ln_final.bias"} <= no_decay
    assert "text_projection" in decay and "transformer.resblocks.0.mlp.c_fc.weight" in decay
    assert not any(n.startswith("visual.") for n in decay | no_decay)  # frozen: not in the optimiser


def test_projections_only_trains_just_the_projections(tiny_vit):
    from clipforge.train.freeze import apply_freezing

    summary = apply_freezing(tiny_vit, projections_only=True)
    trainable = {n for n, p in tiny_vit.named_parameters() if p.requires_grad}
    assert trainable == {"visual.proj", "text_projection", "logit_scale"}
    assert summary["trainable_params"] == sum(p.numel() for p in tiny_vit.parameters() if p.requires_grad)


def test_logit_scale_is_clamped_to_ln_100(caption_folder, tmp_path):
    trainer = Trainer(_config(caption_folder, tmp_path / "clamp", steps=1, lr=10.0, warmup_steps=0))
    with torch.no_grad():
        trainer.model.logit_scale.fill_(4.7)
    trainer.fit()
    assert float(trainer.model.logit_scale.detach()) <= np.log(100) + 1e-7


def test_gradcache_micro_batches_keep_the_loss_curve(caption_folder, tmp_path):
    Trainer(_config(caption_folder, tmp_path / "whole", steps=2)).fit()
    Trainer(_config(caption_folder, tmp_path / "micro", steps=2, micro_batch=2)).fit()
    a, b = _losses(tmp_path / "whole"), _losses(tmp_path / "micro")
    np.testing.assert_allclose([v for _, v in b], [v for _, v in a], rtol=0, atol=1e-5)
