"""Damaged family files are refused in one line naming the tensor, in the file's own names (audit 57, 5-7).

- open_clip's timm-layout SigLIP files (``ARCH:PATH``): an extra tensor (an unmerged LoRA / EMA copy) loaded
  silently; a missing one was "not a CLIP checkpoint in OpenAI layout"; a mis-shaped one torch's
  load_state_dict message about a converted name the file does not have. Now `check_shapes`' line, as
  ``cn-ARCH:PATH`` says it, and without an architecture the converter's own line.
- a cn_clip checkpoint whose ``text_projection`` is damaged blamed the intact ``visual.proj``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clipforge.api import load_model
from clipforge.weights import CheckpointFormatError, load_checkpoint
from clipforge.weights.family_layouts import to_open_clip_siglip

_ARCH = "test-siglip-tiny"


@pytest.fixture(scope="module")
def timm_state() -> dict[str, torch.Tensor]:
    """test-siglip-tiny's random weights in open_clip's timm layout (what `open_clip_model.safetensors` holds)."""
    return to_open_clip_siglip(load_model(f"random:{_ARCH}", "cpu", seed=3).model.state_dict())


def _count(state: dict[str, torch.Tensor]) -> str:
    return f"{sum(v.numel() for v in state.values()):,}"


def test_a_whole_timm_file_still_loads(timm_state, tmp_path: Path) -> None:
    path = tmp_path / "ok.pt"
    torch.save(timm_state, path)
    loaded = load_model(f"{_ARCH}:{path}", "cpu")
    again = to_open_clip_siglip(loaded.model.state_dict())
    assert set(again) == set(timm_state) and all(torch.equal(again[k], timm_state[k]) for k in timm_state)


@pytest.mark.parametrize("damage", ["missing", "misshaped", "extra"])
def test_arch_colon_path_names_the_files_own_tensor(timm_state, tmp_path: Path, damage: str) -> None:
    state = dict(timm_state)
    if damage == "missing":
        del state["visual.trunk.attn_pool.latent"]
        first = "it lacks visual.trunk.attn_pool.latent"
    elif damage == "misshaped":
        state["visual.trunk.blocks.0.attn.qkv.weight"] = state["visual.trunk.blocks.0.attn.qkv.weight"][:100]
        first = "visual.trunk.blocks.0.attn.qkv.weight has shape (100, 64), not (192, 64)"
    else:
        state["ema.extra"] = torch.zeros(3)
        first = "it has an unexpected tensor ema.extra"
    path = tmp_path / f"{damage}.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(f"{_ARCH}:{path}", "cpu")
    assert str(raised.value) == (f"{path} does not hold {_ARCH} weights: {_count(state)} parameters where {_ARCH} "
                                 f"has {_count(timm_state)}; {first}")


@pytest.mark.parametrize(("key", "said"), [
    ("ema.extra", "unexpected tensor 'ema.extra' in an open_clip SigLIP checkpoint (timm layout)"),
    ("visual.trunk.blocks.0.ls1.gamma", "unexpected tensor 'visual.trunk.blocks.0.ls1.gamma' in an open_clip SigLIP "
                                        "checkpoint (timm layout)"),
    ("-visual.trunk.attn_pool.latent", "not a whole open_clip SigLIP checkpoint (timm layout): tensor "
                                       "visual.trunk.attn_pool.latent is missing"),
    ("-visual.trunk.norm.weight", "not a whole open_clip SigLIP checkpoint (timm layout): tensor "
                                  "visual.trunk.norm.weight is missing"),
])
def test_a_timm_file_read_without_an_architecture_is_refused_too(timm_state, tmp_path: Path, key, said) -> None:
    state = dict(timm_state)
    if key.startswith("-"):
        del state[key[1:]]
    else:
        state[key] = torch.zeros(3)
    path = tmp_path / "file.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointFormatError) as raised:
        load_checkpoint(path)
    assert str(raised.value) == f"{path}: {said}"


@pytest.fixture()
def cn_tiny(monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """A tiny Chinese-CLIP's tensors in cn_clip's names (architecture registered for the test only)."""
    pytest.importorskip("transformers")
    from clipforge.models import chinese_configs
    from clipforge.models.chinese_clip import create_chinese_clip

    monkeypatch.setitem(chinese_configs.CN_TEXT_TOWERS, "test-bert-s57", {
        "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128})
    monkeypatch.setitem(chinese_configs.CHINESE_CLIP_CONFIGS, "cn-test-s57", {
        "embed_dim": 32, "image_resolution": 32, "vision_layers": 1, "vision_width": 64, "vision_patch_size": 16,
        "vision_head_width": 32, "text": "test-bert-s57"})
    torch.manual_seed(0)
    return create_chinese_clip("cn-test-s57").state_dict()


def test_a_damaged_text_projection_names_both_projections(cn_tiny, tmp_path: Path) -> None:
    good, bad = tmp_path / "ok.pt", tmp_path / "badtext.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in cn_tiny.items()}}, good)
    assert load_model(good, "cpu").model is not None
    damaged = {**cn_tiny, "text_projection": cn_tiny["text_projection"][:, :16]}
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in damaged.items()}}, bad)
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(bad, "cpu")
    assert str(raised.value) == (f"{bad} is not a whole Chinese-CLIP checkpoint: text_projection (64, 16) and "
                                 "visual.proj (64, 32) disagree on the embedding width (16 vs 32)")
