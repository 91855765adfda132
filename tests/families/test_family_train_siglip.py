"""`train` with ``loss="siglip"``: open_clip's SigLipLoss, value and gradients, and a real run.

open_clip's ``SigLipLoss`` takes the *exponentiated* scale; ours takes the model's log scale
(as `ClipLoss` does) and exponentiates inside. On one process both compute the same terms; the
distributed form (each rank's images against every rank's texts, positives on its own block)
adds the same terms open_clip's ring exchange adds.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.train.loss import SigLipLoss


def _open_clip_loss() -> types.ModuleType:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("reference open-clip-torch is not installed")
    key = "_open_clip_loss_reference"
    if f"{key}.loss" not in sys.modules:
        package = types.ModuleType(key)
        package.__path__ = [str(next(iter(spec.submodule_search_locations)))]
        sys.modules[key] = package
    return importlib.import_module(f"{key}.loss")


def test_siglip_loss_and_gradients_match_open_clip() -> None:
    reference = _open_clip_loss().SigLipLoss()
    gen = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 16, generator=gen), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(6, 16, generator=gen), dim=-1)
    ours_in = [t.clone().requires_grad_(True) for t in (img, txt, torch.tensor(2.3), torch.tensor(-4.0))]
    ref_in = [t.clone().requires_grad_(True) for t in (img, txt, torch.tensor(2.3), torch.tensor(-4.0))]
    ours = SigLipLoss()(ours_in[0], ours_in[1], torch.stack([ours_in[2], ours_in[3]]))
    ref = reference(ref_in[0], ref_in[1], ref_in[2].exp(), ref_in[3])
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    ours.backward()
    ref.backward()
    for a, b in zip(ours_in, ref_in, strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_train_with_siglip_loss_on_a_siglip_model(family_checkpoints, tmp_path) -> None:
    from clipforge.train.config import TrainConfig
    from clipforge.train.logs import read_log
    from clipforge.train.trainer import Trainer

    root = tmp_path / "captions"
    rng = np.random.default_rng(0)
    for c, caption in enumerate(["a red image", "a green image", "a blue image", "a photo of a cat"]):
        (root / caption.replace(" ", "_")).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
            pixels[..., c % 3] += 150
            Image.fromarray(pixels).save(root / caption.replace(" ", "_") / f"{i}.png")
    out = tmp_path / "run"
    config = TrainConfig(model=str(family_checkpoints["siglip"]), data="folder", root=str(root), batch_size=4,
                         steps=4, lr=1e-3, warmup_steps=1, precision="fp32", log_every=1, out_dir=str(out), seed=3,
                         device="cpu", tensorboard=False, loss="siglip")
    trainer = Trainer(config)
    bias_before = float(trainer.model.logit_bias)
    trainer.fit()
    losses = [r["loss"] for r in read_log(out) if r["kind"] == "train"]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert float(trainer.model.logit_bias) != bias_before  # the bias is trained, inside the forward
    sample = trainer.dataset[0]
    ids = sample[1] if isinstance(sample, (tuple, list)) else sample["text"]
    assert ids.shape[-1] == 64 and int(ids[-1]) == 1  # captions went through SigLIP's SentencePiece

    # the checkpoints folder carries the tokenizer file: moved elsewhere, a checkpoint still loads whole
    import shutil

    import clipforge

    moved = shutil.copytree(trainer.checkpoints.directory, tmp_path / "elsewhere")
    assert (moved / "spiece.model").is_file()
    loaded = clipforge.load_model(moved / trainer.last_checkpoint.name, "cpu")
    source = clipforge.load_model(family_checkpoints["siglip"], "cpu")
    assert torch.equal(loaded.tokenize(["a photo of a cat"]), source.tokenize(["a photo of a cat"]))


def test_siglip_loss_refuses_a_model_without_bias(tmp_path) -> None:
    from clipforge.train.config import TrainConfig
    from clipforge.train.trainer import Trainer

    config = TrainConfig(model="test-vit-tiny", data="folder", root=str(tmp_path), batch_size=2, steps=1,
                         device="cpu", out_dir=str(tmp_path / "o"), tensorboard=False, loss="siglip")
    with pytest.raises(ValueError, match="needs a model with a logit_bias"):
        Trainer(config)


def test_two_gloo_processes_match_open_clips_ring_exchange(tmp_path) -> None:
    """Distributed: each rank's loss and every gradient (its features, scale, bias) equal open_clip's
    SigLipLoss with its bidirectional neighbour exchange, on 2 CPU processes."""
    import socket

    import torch.multiprocessing as mp
    from family_fixtures import siglip_loss_worker

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("reference open-clip-torch is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(siglip_loss_worker, args=(2, port, str(tmp_path), next(iter(spec.submodule_search_locations))),
             nprocs=2, join=True)
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        assert out["ours"]["loss"].item() == pytest.approx(out["open_clip"]["loss"].item(), rel=1e-6)
        for ours, theirs in zip(out["ours"]["grads"], out["open_clip"]["grads"], strict=True):
            assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-7)
