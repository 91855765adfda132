"""The sigmoid (SigLIP) loss takes the same class groups and de-duplicated captions as the softmax loss.

Before: `loss=siglip` with `unique_captions=true` (set in both CIFAR recipes) died with an IndexError in the
first step (64 images met 10 de-duplicated texts), and `label_positives` was silently ignored, so identical
class-name captions in one batch were scored as each other's negatives (CIFAR-10, 5 epochs: zero-shot top-1
14.3% falling to 8.0%, below chance, where the softmax loss went 15.3% -> 19.0%). Now every image-caption pair
of the same group (class with `label_positives`, else the same caption) is a positive (+1) and every other pair
a negative (-1): SigLIP's loss with a multi-positive label matrix.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipforge.train import loss as losses
from clipforge.train.config import TrainConfig
from clipforge.train.logs import read_log
from clipforge.train.loss import SigLipLoss
from clipforge.train.trainer import Trainer

SCALE, BIAS = 1.7, -2.5  # log scale (exp taken inside), bias


def _reference(images: torch.Tensor, texts: torch.Tensor, positive, weight=lambda j: 1.0) -> float:
    """SigLIP's loss written out: -1/B sum_i sum_j w_j log sigmoid(z_ij (e^s <x_i, y_j> + b)), z_ij = +1 for a
    positive pair, -1 otherwise; log sigmoid(t) = -log(1 + e^-t)."""
    total = 0.0
    for i in range(images.shape[0]):
        for j in range(texts.shape[0]):
            logit = math.exp(SCALE) * float(images[i] @ texts[j]) + BIAS
            z = 1.0 if positive(i, j) else -1.0
            total += weight(j) * math.log(1.0 + math.exp(-z * logit))
    return total / images.shape[0]


def _unit(rows: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def _params() -> torch.Tensor:
    return torch.tensor([SCALE, BIAS], dtype=torch.float64)


def test_grouped_sigmoid_loss_is_the_reference_with_every_same_group_pair_positive():
    images, texts = _unit(6, 0), _unit(6, 1)
    groups = torch.tensor([0, 1, 0, 2, 1, 0])
    got = float(SigLipLoss()(images, texts, _params(), groups))
    assert got == pytest.approx(_reference(images, texts, lambda i, j: groups[i] == groups[j]), rel=1e-12)
    plain = float(SigLipLoss()(images, texts, _params()))
    assert plain == pytest.approx(_reference(images, texts, lambda i, j: i == j), rel=1e-12)
    assert got != pytest.approx(plain)  # the groups act
    distinct = float(SigLipLoss()(images, texts, _params(), torch.arange(6)))
    assert distinct == pytest.approx(plain, rel=1e-12)  # one pair a group: SigLIP's own diagonal


@pytest.mark.parametrize("with_labels", [False, True], ids=["same-caption", "same-class"])
def test_de_duplicated_captions_give_the_reference_and_the_duplicated_batch_value(with_labels):
    images, captions = _unit(7, 2), _unit(4, 3)  # 7 images, 4 distinct captions
    index = torch.tensor([0, 1, 0, 2, 3, 0, 1])
    labels = torch.tensor([0, 1, 0, 1]) if with_labels else None  # captions 0, 2: class 0; 1, 3: class 1
    copies = torch.bincount(index, minlength=4)
    if with_labels:
        def positive(i, j):
            return labels[index[i]] == labels[j]
    else:
        def positive(i, j):
            return index[i] == j
    got = float(losses.unique_caption_sigmoid_loss(images, captions, _params(), index, labels))
    assert got == pytest.approx(_reference(images, captions, positive, lambda j: float(copies[j])), rel=1e-12)
    # the same value as the plain loss on the duplicated batch (one text per image), grouped by caption or class
    groups = labels[index] if with_labels else index
    duplicated = float(SigLipLoss()(images, captions[index], _params(), groups))
    assert got == pytest.approx(duplicated, rel=1e-12)


def test_a_text_count_other_than_the_image_count_is_one_line_not_an_index_error():
    with pytest.raises(ValueError) as raised:
        SigLipLoss()(_unit(6, 0), _unit(2, 1), _params())
    assert str(raised.value) == ("the sigmoid loss takes one text per image: 6 images, 2 texts (de-duplicated "
                                 "captions go through unique_caption_sigmoid_loss)")


# --- the trainer ------------------------------------------------------------------------------------------

COLOURS = ("red", "green", "blue")


def _colour_set(root: Path, per_class: int, seed: int) -> Path:
    """One folder per colour class, small noisy PNGs tinted by their class."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(COLOURS):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (16, 16, 3), dtype=np.uint8)
            pixels[..., c] += 160
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("colours")
    return _colour_set(base / "train", 8, 0), _colour_set(base / "held_out", 6, 1)


TINY = dict(embed_dim=16, image_resolution=16, vision_layers=1, vision_width=32, vision_patch_size=8,
            context_length=12, vocab_size=49408, transformer_width=32, transformer_heads=1, transformer_layers=1,
            scoring="sigmoid")


def _config(root: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model_config=TINY, loss="siglip", data="labelled", dataset="folder", root=str(root),
                in_memory=True, templates=["a photo of {}.", "a {} picture."], templates_per_batch=1,
                batch_size=12, steps=4, lr=1e-3, warmup_steps=1, precision="fp32", log_every=1,
                out_dir=str(out), seed=0, device="cpu", tensorboard=False, threads=1)
    return TrainConfig(**{**base, **kw})


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in read_log(out) if r["kind"] == "train"]


def test_sigmoid_loss_trains_on_de_duplicated_captions_and_label_positives_act(colours, tmp_path):
    train, _ = colours
    runs = {}
    for unique in (False, True):
        for positives in (False, True):
            out = tmp_path / f"u{unique}_p{positives}"
            Trainer(_config(train, out, unique_captions=unique, label_positives=positives)).fit()  # was IndexError
            runs[unique, positives] = _losses(out)
    assert all(len(losses) == 4 and all(map(math.isfinite, losses)) for losses in runs.values())
    # label_positives changes the sigmoid loss (it was bit-identical with and without)
    assert runs[False, True] != runs[False, False]
    # de-duplicating the captions saves text-tower work, not a different loss: the same curve as the plain batch
    np.testing.assert_allclose(runs[True, True], runs[False, True], rtol=1e-4)
