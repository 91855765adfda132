"""Hugging Face conversion: exact round trips, and parity with `transformers.CLIPModel`.

Full-size models get random weights generated directly into a model built on the meta
device (one randn per tensor, no throwaway initialisation), and the HF model is built on
meta too and given the converted tensors with ``assign=True``: the numbers compared are the
real forward passes of both implementations, at a fraction of the set-up cost. ViT-L/14 at both resolutions
is compared at full width, heads, resolution and context with two blocks per tower (`FEWER_BLOCKS`: every
distinct code path; ViT-B/16 and ViT-B/32 run at full depth), and its full-depth conversion is checked on the
meta device: names, shapes and config there and back, and transformers' model of that config takes it strictly.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from clipforge.models import create_model_from_config, get_config
from clipforge.weights import (
    CheckpointFormatError,
    from_hf,
    load_checkpoint,
    load_state_dict,
    model_config,
    save_hf,
    to_hf,
)

transformers = pytest.importorskip("transformers")


def _std(name: str, shape: torch.Size) -> float:
    if name.endswith("bias"):
        return 0.02
    if name == "positional_embedding" or name == "token_embedding.weight":
        return 0.02
    if name in ("visual.class_embedding", "visual.positional_embedding"):
        return shape[-1] ** -0.5
    if name in ("text_projection", "visual.proj"):
        return shape[0] ** -0.5
    return math.prod(shape[1:]) ** -0.5 if len(shape) > 1 else 0.02


def _random_model(config: dict[str, Any], seed: int) -> torch.nn.Module:
    with torch.device("meta"):
        model = create_model_from_config(config)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, meta in model.state_dict().items():
        mean, std = 0.0, _std(name, meta.shape)
        if name == "logit_scale":
            mean, std = math.log(1 / 0.07), 0.1
        elif (".ln_" in name or name.startswith("ln_")) and name.endswith("weight"):
            mean, std = 1.0, 0.1  # LayerNorm scale near 1 (its shift is a bias: near 0)
        state[name] = torch.empty(meta.shape).normal_(mean, std, generator=generator)
    model.load_state_dict(state, strict=True, assign=True)
    assert not any(t.is_meta for t in model.state_dict().values())
    return model.eval()


def _hf_model(hf_state: dict[str, torch.Tensor], hf_config: dict[str, Any]) -> torch.nn.Module:
    with torch.device("meta"):
        hf = transformers.CLIPModel(transformers.CLIPConfig(**hf_config))
    hf.load_state_dict(hf_state, strict=True, assign=True)
    for module in hf.modules():  # non-persistent arange buffers are not in any state dict
        ids = module._buffers.get("position_ids")
        if ids is not None and ids.is_meta:
            module.position_ids = torch.arange(ids.shape[-1]).expand(1, -1)
    assert not any(t.is_meta for t in [*hf.parameters(), *hf.buffers()])
    return hf.eval()


def _inputs(resolution: int, images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(images, 3, resolution, resolution, generator=generator)
    text = torch.zeros(3, 77, dtype=torch.long)
    for row, length in enumerate((4, 19, 77)):  # EOT early, mid-way and in the last slot
        text[row, 0] = 49406
        text[row, 1:length - 1] = torch.randint(1, 49406, (length - 2,), generator=generator)
        text[row, length - 1] = 49407
    return pixels, text


def _pooled(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _ours(model, pixels, text):
    """Features and logits from ONE forward pass (the encoders are wrapped to record outputs)."""
    seen: dict[str, torch.Tensor] = {}
    encode_image, encode_text = model.encode_image, model.encode_text
    model.encode_image = lambda x: seen.setdefault("image", encode_image(x))
    model.encode_text = lambda t: seen.setdefault("text", encode_text(t))
    try:
        logits, _ = model(pixels, text)
    finally:
        del model.encode_image, model.encode_text
    return seen["image"], seen["text"], logits


def _theirs(hf, pixels, text):
    seen: dict[str, torch.Tensor] = {}
    image_fn, text_fn = hf.get_image_features, hf.get_text_features
    hf.get_image_features = lambda *a, **k: seen.setdefault("image", image_fn(*a, **k))
    hf.get_text_features = lambda *a, **k: seen.setdefault("text", text_fn(*a, **k))
    try:
        out = hf(input_ids=text, pixel_values=pixels)
    finally:
        del hf.get_image_features, hf.get_text_features
    # Older transformers do not route forward() through get_*_features: call them directly.
    image = seen["image"] if "image" in seen else image_fn(pixel_values=pixels)
    texts = seen["text"] if "text" in seen else text_fn(input_ids=text)
    return _pooled(image), _pooled(texts), out.logits_per_image


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _assert_round_trip(model) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state, config = model.state_dict(), model_config(model)
    hf_state, hf_config = to_hf(state, config)
    back, back_config = from_hf(hf_state, json.loads(json.dumps(hf_config)))  # as read from disk
    assert back_config == config
    assert list(back) == list(state)
    assert all(back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in state.items())
    return hf_state, hf_config


FEWER_BLOCKS = {"vision_layers": 2, "transformer_layers": 2}
"""ViT-L/14's numbers at two blocks per tower: its full-depth random weights and forwards took ~20 s of the suite."""


def _check_full_depth_conversion(name: str) -> None:
    """`name`'s full-depth state dict (meta tensors, a real `logit_scale`) converts to HF layout and back with
    every name, shape and dtype and the config kept, and `transformers.CLIPModel` built from the converted
    config loads the converted tensors strictly (shapes checked): the values are compared at fewer blocks."""
    config = get_config(name)
    with torch.device("meta"):
        model = create_model_from_config(config)
    state = dict(model.state_dict())
    state["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    ours = model_config(model)
    hf_state, hf_config = to_hf(state, ours)
    assert hf_config["vision_config"]["num_hidden_layers"] == config["vision_layers"]
    assert hf_config["text_config"]["num_hidden_layers"] == config["transformer_layers"]
    back, back_config = from_hf(hf_state, json.loads(json.dumps(hf_config)))
    assert back_config == ours and list(back) == list(state)
    assert all((back[k].dtype, back[k].shape) == (v.dtype, v.shape) for k, v in state.items())
    with torch.device("meta"):
        hf = transformers.CLIPModel(transformers.CLIPConfig(**hf_config))
    hf.load_state_dict(hf_state, strict=True, assign=True)


def _check_parity(name: str, images: int, fewer_blocks: bool = False) -> None:
    config = get_config(name) | (FEWER_BLOCKS if fewer_blocks else {})
    model = _random_model(config, seed=len(name))
    hf_state, hf_config = _assert_round_trip(model)
    assert hf_config["text_config"]["eos_token_id"] == 49407  # HF then pools at the first EOT, as we do
    hf = _hf_model(hf_state, hf_config)
    pixels, text = _inputs(config["image_resolution"], images, seed=1)
    with torch.inference_mode():
        ours = _ours(model, pixels, text)
        theirs = _theirs(hf, pixels, text)
    for a, b in zip(ours[:2], theirs[:2], strict=True):
        assert a.shape == b.shape
        assert (_unit(a) - _unit(b)).abs().max().item() < 1e-5
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-5  # raw features, relative
    assert ours[2].shape == theirs[2].shape == (images, 3)
    assert (ours[2] - theirs[2]).abs().max().item() < 1e-5  # logits, absolute


def test_round_trip_and_parity_tiny():
    _check_parity("test-vit-tiny", images=2)


def test_parity_vit_b32():
    _check_parity("ViT-B/32", images=2)


def test_parity_vit_b16():
    _check_parity("ViT-B/16", images=2)


def test_parity_vit_l14():
    _check_full_depth_conversion("ViT-L/14")
    _check_parity("ViT-L/14", images=1, fewer_blocks=True)


def test_parity_vit_l14_336():
    _check_full_depth_conversion("ViT-L/14@336px")
    _check_parity("ViT-L/14@336px", images=1, fewer_blocks=True)


def test_save_hf_loads_in_transformers_and_back(tmp_path):
    config = get_config("test-vit-tiny") | {"transformer_heads": 4}
    torch.manual_seed(3)
    model = create_model_from_config(config).eval()
    directory = save_hf(model, tmp_path / "hf")
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json", "merges.txt", "model.safetensors", "preprocessor_config.json", "special_tokens_map.json",
        "tokenizer_config.json", "vocab.json"]
    hf = transformers.CLIPModel.from_pretrained(str(directory)).eval()
    assert hf.config.text_config.num_attention_heads == 4
    pixels, text = _inputs(32, 2, seed=4)
    with torch.inference_mode():
        ours, theirs = _ours(model, pixels, text), _theirs(hf, pixels, text)
    assert (_unit(ours[0]) - _unit(theirs[0])).abs().max() < 1e-5
    assert (_unit(ours[1]) - _unit(theirs[1])).abs().max() < 1e-5
    checkpoint = load_checkpoint(directory)
    assert checkpoint.format == "huggingface" and checkpoint.config == config | {"activation": "quick_gelu"}
    state = model.state_dict()
    loaded = load_state_dict(directory)
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], v) for k, v in state.items())


def test_transformers_save_pretrained_directory_loads(tmp_path):
    model = _random_model(get_config("test-vit-tiny"), seed=5)
    hf_state, hf_config = to_hf(model.state_dict(), model_config(model))
    hf = _hf_model(hf_state, hf_config)
    hf.save_pretrained(str(tmp_path / "saved"))
    loaded = load_state_dict(tmp_path / "saved")
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_pytorch_bin_and_sharded_directories_load(tmp_path):
    model = _random_model(get_config("test-vit-tiny"), seed=7)
    hf_state, hf_config = to_hf(model.state_dict(), model_config(model))
    config_text = json.dumps(hf_config)
    single = tmp_path / "bin"
    single.mkdir()
    (single / "config.json").write_text(config_text)
    torch.save(hf_state, single / "pytorch_model.bin")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text(config_text)
    names = sorted(hf_state)
    weight_map = {}
    for index, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        shard = f"model-0000{index + 1}-of-00002.safetensors"
        save_file({k: hf_state[k].contiguous() for k in part}, str(sharded / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    state = model.state_dict()
    for directory in (single, sharded):
        loaded = load_state_dict(directory)
        assert list(loaded) == list(state) and all(torch.equal(loaded[k], v) for k, v in state.items())


def test_resnet_has_no_hf_equivalent():
    torch.manual_seed(0)
    model = create_model_from_config(get_config("test-rn-tiny"))
    with pytest.raises(CheckpointFormatError, match="ResNet CLIP models .* no Hugging Face"):
        to_hf(model.state_dict(), model_config(model))


def test_hf_settings_clipforge_cannot_reproduce_are_refused():
    model = _random_model(get_config("test-vit-tiny"), seed=6)
    hf_state, hf_config = to_hf(model.state_dict(), model_config(model))
    hf_config["vision_config"]["hidden_act"] = "gelu"  # towers disagree: our CLIP shares one activation
    with pytest.raises(CheckpointFormatError, match=r"'hidden_act' is \['gelu', 'quick_gelu'\]"):
        from_hf(hf_state, hf_config)
    hf_config["text_config"]["hidden_act"] = hf_config["vision_config"]["hidden_act"] = "relu"
    with pytest.raises(CheckpointFormatError, match="'hidden_act' is \\['relu'\\]"):
        from_hf(hf_state, hf_config)
    del hf_state["text_model.encoder.layers.0.self_attn.k_proj.bias"]
    with pytest.raises(CheckpointFormatError, match="lacks some of q/k/v_proj.bias"):
        from_hf(hf_state, None)
