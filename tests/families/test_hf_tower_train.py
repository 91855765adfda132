"""`train` with open_clip's transformers text towers: the CLIP loss on XLM-R (with gradient
checkpointing, which transformers' encoder does its own way) and the sigmoid loss on NLLB over a
SigLIP image tower with the text tower locked (kept in eval mode, its weights unchanged)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from family_fixtures import save_family_checkpoint
from PIL import Image

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    rng = np.random.default_rng(0)
    for c, caption in enumerate(["a red image", "a green image", "a blue image", "a photo of a cat"]):
        (root / caption.replace(" ", "_")).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
            pixels[..., c % 3] += 150
            Image.fromarray(pixels).save(root / caption.replace(" ", "_") / f"{i}.png")
    return root


@pytest.mark.parametrize(("arch", "loss", "extra"), [
    ("test-xlmr-tiny", "clip", {"grad_checkpointing": True}),
    ("test-nllb-siglip-tiny", "siglip", {"lock_text": True})])
def test_train_runs_and_respects_the_options(arch, loss, extra, captions, tmp_path) -> None:
    from clipforge.train.config import TrainConfig
    from clipforge.train.logs import read_log
    from clipforge.train.trainer import Trainer

    checkpoint = save_family_checkpoint(tmp_path / "ckpt", arch)
    config = TrainConfig(model=str(checkpoint), data="folder", root=str(captions), batch_size=4, steps=2, lr=1e-3,
                         warmup_steps=1, precision="fp32", log_every=1, out_dir=str(tmp_path / "run"), seed=3,
                         device="cpu", tensorboard=False, loss=loss, **extra)
    trainer = Trainer(config)
    text_before = {k: v.clone() for k, v in trainer.model.text.state_dict().items()}
    trainer.fit()
    losses = [r["loss"] for r in read_log(tmp_path / "run") if r["kind"] == "train"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    text_after = trainer.model.text.state_dict()
    unchanged = all(torch.equal(text_before[k], text_after[k]) for k in text_before)
    if extra.get("lock_text"):
        assert unchanged
    else:
        encoder = trainer.model.text.transformer
        name = "is_activation_checkpointing" if hasattr(type(encoder), "is_activation_checkpointing") else (
            "is_gradient_checkpointing")  # (transformers 5's name; 4.x has only the old one)
        assert not unchanged and getattr(encoder, name)
