"""Gradient checkpointing for every family the one loader builds (`train.grad_checkpointing`).

`train --recipe pretrain` (``grad_checkpointing: true``) with any Chinese-CLIP (`random:cn-RN50`, a transformers
ChineseCLIP folder, a cn_clip .pt) ended in ``AttributeError: 'ChineseCLIP' object has no attribute
'transformer'``: `prepare_for_training` knew only ``model.text`` and ``model.transformer``; Chinese-CLIP's text
tower is transformers' BertModel at ``model.bert``. Each family's towers are checked here: the blocks really are
recomputed in the backward pass (a block's forward runs twice), and the gradients equal those of the same step
without checkpointing.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipforge.errors import Notice
from clipforge.train.build import prepare_for_training
from clipforge.train.config import TrainConfig, TrainConfigError


def text_tower(model: nn.Module) -> nn.Module | None:
    from clipforge.train.grad_checkpointing import text_tower

    return text_tower(model)


def image_tower(model: nn.Module) -> nn.Module | None:
    from clipforge.train.grad_checkpointing import image_tower

    return image_tower(model)


def tower_checkpointed(tower: nn.Module | None) -> bool:
    from clipforge.train.grad_checkpointing import tower_checkpointed

    return tower_checkpointed(tower)

TINY_CN = {"vision_layers": 2, "vision_width": 64, "vision_head_width": 32, "image_resolution": 32,
           "vision_patch_size": 8, "embed_dim": 32, "text_hidden_size": 32, "text_num_hidden_layers": 2,
           "text_num_attention_heads": 2, "text_intermediate_size": 64}


def _chinese_clip(**overrides) -> nn.Module:
    """A tiny Chinese-CLIP with BERT's dropout kept (0.1): the recomputation must replay the same masks."""
    pytest.importorskip("transformers")
    from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip

    torch.manual_seed(0)
    return create_chinese_clip(chinese_clip_config("cn-ViT-B-16", **{**TINY_CN, **overrides}))


def _family(name: str) -> nn.Module:
    from clipforge.models import create_model_from_config, get_config

    if get_config(name).get("text_hf"):
        pytest.importorskip("transformers")
    torch.manual_seed(0)
    return create_model_from_config(dict(get_config(name)))


def _batch(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    size = int(model.visual.input_resolution)
    images = torch.randn(4, 3, size, size, generator=gen)
    context = min(int(getattr(model, "context_length", 16)), 16)
    text = torch.randint(3, min(int(model.vocab_size), 500), (4, context), generator=gen)
    text[:, -3:] = int(getattr(model, "pad_id", 0))  # trailing padding, as tokenizers give it
    return images, text


def _step(model: nn.Module, images: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
    """One CLIP-loss backward in training mode; the gradients by parameter name."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same dropout masks in both runs
    image_features = F.normalize(model.encode_image(images), dim=-1)
    text_features = F.normalize(model.encode_text(text), dim=-1)
    logits = model.logit_scale.exp() * image_features @ text_features.t()
    if getattr(model, "logit_bias", None) is not None:  # SigLIP's: every parameter gets a gradient
        logits = logits + model.logit_bias
    labels = torch.arange(len(images))
    ((F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _first_block(tower: nn.Module) -> nn.Module:
    """The first module inside a tower's first layer: clipforge's `resblocks[0]`, a transformers encoder's first
    layer (BERT/XLM-R `encoder.layer`, M2M100 `layers`, mT5 `block`). Inside, because transformers checkpoints a
    layer's `forward`, keeping the layer's own hooks outside the recomputation."""
    if hasattr(tower, "resblocks"):
        return next(tower.resblocks[0].children())
    for holder in (getattr(tower, "encoder", None), tower):
        for name in ("layer", "layers", "block"):
            if isinstance(getattr(holder, name, None), nn.ModuleList):
                first = next(getattr(holder, name)[0].children())
                return first[0] if isinstance(first, nn.ModuleList) else first  # mT5's block holds a list
    raise AssertionError(f"no layers found in {type(tower).__name__}")


def _forward_counts(model: nn.Module, towers: list[nn.Module]) -> list[int]:
    """How often each tower's first block started in one training step (2: recomputed in the backward pass; a
    pre-hook, as torch's recomputation stops once it has what the backward needs, before a block's end)."""
    counts = [0] * len(towers)
    handles = [_first_block(t).register_forward_pre_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
               for i, t in enumerate(towers)]
    try:
        _step(model, *_batch(model))
    finally:
        for handle in handles:
            handle.remove()
    return counts


def _checkpointed_copy(model: nn.Module, name: str) -> tuple[nn.Module, list[str]]:
    twin = copy.deepcopy(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        twin, _ = prepare_for_training(twin, TrainConfig(model=name, grad_checkpointing=True))
    return twin, [str(w.message) for w in caught if issubclass(w.category, Notice)]


def _assert_same_gradients(plain: nn.Module, checkpointed: nn.Module) -> None:
    batch = _batch(plain)
    expected, got = _step(plain, *batch), _step(checkpointed, *batch)
    assert expected.keys() == got.keys() and len(expected) == len(list(plain.parameters()))
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_a_chinese_clip_checkpoints_its_bert_and_vit_towers_with_the_same_gradients() -> None:
    model = _chinese_clip()
    checkpointed, notices = _checkpointed_copy(model, "random:cn-ViT-B-16")
    assert notices == []
    bert, blocks = text_tower(checkpointed), image_tower(checkpointed)
    assert bert is checkpointed.bert and blocks is checkpointed.visual.transformer
    assert tower_checkpointed(bert) and tower_checkpointed(blocks)
    assert not tower_checkpointed(text_tower(model))  # the original is untouched
    assert _forward_counts(checkpointed, [bert, blocks]) == [2, 2]  # recomputed in the backward pass
    assert _forward_counts(model, [text_tower(model), image_tower(model)]) == [1, 1]
    _assert_same_gradients(model, checkpointed)


def test_a_chinese_clip_with_a_resnet_image_tower_checkpoints_its_bert_and_says_the_resnet_is_not() -> None:
    model = _chinese_clip(vision_layers=[1, 1, 1, 1], vision_width=16, vision_head_width=16,
                          vision_patch_size=None)
    checkpointed, notices = _checkpointed_copy(model, "random:cn-RN50")
    assert notices == ["grad_checkpointing: the ResNet image tower of --model random:cn-RN50 keeps its "
                       "activations (its BatchNorm statistics would count each batch twice if its blocks were "
                       "recomputed); only the text tower is checkpointed"]
    assert tower_checkpointed(checkpointed.bert) and image_tower(checkpointed) is None
    assert _forward_counts(checkpointed, [checkpointed.bert]) == [2]
    _assert_same_gradients(model, checkpointed)


def test_a_locked_resnet_image_tower_is_not_mentioned() -> None:
    model = _chinese_clip(vision_layers=[1, 1, 1, 1], vision_width=16, vision_head_width=16,
                          vision_patch_size=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_for_training(model, TrainConfig(model="random:cn-RN50", grad_checkpointing=True, lock_image=True))
    assert [w for w in caught if issubclass(w.category, Notice)] == []
    assert tower_checkpointed(model.bert)


@pytest.mark.parametrize("name", ["test-vit-tiny", "test-siglip-tiny", "test-clipa-tiny", "test-worldwide-tiny",
                                  "test-xlmr-tiny", "test-nllb-siglip-tiny", "test-mt5-tiny"])
def test_every_family_checkpoints_both_towers_with_the_same_gradients(name: str) -> None:
    model = _family(name)
    checkpointed, notices = _checkpointed_copy(model, name)
    assert notices == []
    towers = [text_tower(checkpointed), image_tower(checkpointed)]
    assert all(tower_checkpointed(t) for t in towers)
    assert _forward_counts(checkpointed, towers) == [2, 2]
    _assert_same_gradients(model, checkpointed)


def test_openai_resnet_checkpoints_its_text_tower_and_says_the_image_tower_is_not() -> None:
    model = _family("test-rn-tiny")
    checkpointed, notices = _checkpointed_copy(model, "test-rn-tiny")
    assert notices == ["grad_checkpointing: the ResNet image tower of --model test-rn-tiny keeps its activations "
                       "(its BatchNorm statistics would count each batch twice if its blocks were recomputed); "
                       "only the text tower is checkpointed"]
    assert tower_checkpointed(checkpointed.transformer)
    assert _forward_counts(checkpointed, [checkpointed.transformer]) == [2]


def test_a_text_tower_that_cannot_recompute_is_said_and_the_image_tower_still_is() -> None:
    model = _family("test-xlmr-tiny")
    model.text.transformer.supports_gradient_checkpointing = False  # as a transformers class without it
    checkpointed, notices = _checkpointed_copy(model, "test-xlmr-tiny")
    assert notices == [f"grad_checkpointing: the {type(model.text.transformer).__name__} text tower of --model "
                       "test-xlmr-tiny cannot recompute its blocks and keeps its activations; only the image tower "
                       "is checkpointed"]
    assert tower_checkpointed(checkpointed.visual.transformer) and not tower_checkpointed(text_tower(checkpointed))


def test_a_model_with_no_tower_that_can_recompute_is_refused_in_one_line() -> None:
    class Opaque(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = nn.Conv2d(3, 4, 3)
            self.transformer = nn.Linear(4, 4)
            self.logit_scale = nn.Parameter(torch.zeros([]))

    with pytest.raises(TrainConfigError) as raised:
        prepare_for_training(Opaque(), TrainConfig(model="mine.pt", grad_checkpointing=True))
    assert str(raised.value) == ("grad_checkpointing: --model mine.pt (Opaque) has no tower whose blocks can be "
                                 "recomputed (Linear, Conv2d); --set grad_checkpointing=false")


def test_the_pretrain_recipe_trains_a_chinese_clip_checkpoint(tmp_path) -> None:
    """The audit's repro: `train --recipe pretrain --model <a Chinese-CLIP> --set data=csv` on Chinese captions."""
    import numpy as np
    from PIL import Image

    from clipforge.train.config import build_config
    from clipforge.train.trainer import Trainer
    from clipforge.weights import save_safetensors

    checkpoint = save_safetensors(_chinese_clip(), tmp_path / "cn.safetensors")
    rows = ["image,caption"]
    for i in range(4):
        Image.fromarray(np.full((40, 40, 3), 60 * i, dtype=np.uint8)).save(tmp_path / f"照片{i}.png")
        rows.append(f"照片{i}.png,{['一只猫', '一只狗', '孩子在海滩上奔跑', '一辆红色的车'][i]}")
    (tmp_path / "描述.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = build_config("pretrain", [f"model={checkpoint}", "data=csv", f"root={tmp_path / '描述.csv'}",
                                       "steps=1", "batch_size=4", f"out_dir={tmp_path / 'run'}", "precision=fp32",
                                       "tensorboard=false", "workers=0", "device=cpu"])
    assert config.grad_checkpointing
    trainer = Trainer(config)  # AttributeError: 'ChineseCLIP' object has no attribute 'transformer', before
    bert = trainer.model.bert  # (transformers 5's name; 4.x has only the old one)
    assert getattr(bert, "is_activation_checkpointing", None) or bert.is_gradient_checkpointing
    assert trainer.model.visual.transformer.grad_checkpointing
    trainer.fit()
    assert (tmp_path / "run" / "checkpoints" / "model-1.safetensors").is_file()
