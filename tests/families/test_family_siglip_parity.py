"""SigLIP / SigLIP 2 parity with transformers' `SiglipModel` on identical random weights.

Every registered SigLIP architecture is built at full width on the meta device and its tensors
are mapped onto `SiglipModel`'s one for one (names and shapes, strict). Numbers are compared
for each distinct tower shape (B/16, B/32, L/16, SO400M/14 with its 16-token context,
SO400M/16-i18n without text projection, gopt/16) at full width and the real resolution, with
depth cut to one block per tower and a small vocabulary (neither changes the arithmetic
of a block; both only cost memory here), plus the tiny test config at full depth.
"""

from __future__ import annotations

import pytest
import torch

from clipforge.models import create_model_from_config, get_config
from clipforge.models.configs import ARCH_CONFIGS
from clipforge.models.family_configs import SIGLIP_CONFIGS
from clipforge.weights.family_layouts import (
    from_hf_siglip,
    from_open_clip_siglip,
    siglip_hf_config,
    to_hf_siglip,
    to_open_clip_siglip,
)

transformers = pytest.importorskip("transformers")

RTOL = 1e-5


def _hf_model(config: dict, device: str = "cpu"):
    """transformers' SiglipModel, built on the meta device (its random init is slow and is
    overwritten anyway) and given real storage when `device` is not meta."""
    from transformers import SiglipConfig, SiglipModel

    with torch.device("meta"):
        model = SiglipModel(SiglipConfig(**siglip_hf_config(config))).eval()
    if device != "meta":
        model.to_empty(device=device)
        for module in model.modules():  # non-persistent buffers: arange(n), as transformers builds them
            ids = getattr(module, "position_ids", None)
            if isinstance(ids, torch.Tensor):
                module.position_ids = torch.arange(ids.shape[-1]).expand(ids.shape).clone()
    return model


def _ours(config: dict) -> torch.nn.Module:
    """clipforge's model with storage but no init (`_randomised` fills every parameter)."""
    with torch.device("meta"):
        model = create_model_from_config(config)
    return model.to_empty(device="cpu").eval()


@pytest.mark.parametrize("name", sorted(SIGLIP_CONFIGS))
def test_every_siglip_architecture_maps_onto_transformers_tensor_for_tensor(name: str) -> None:
    config = get_config(name)
    with torch.device("meta"):
        ours = create_model_from_config(config)
    hf = _hf_model(config, "meta")
    if not config.get("text_proj", True):  # SO400M-i18n: no text projection; transformers always has one
        pytest.skip("transformers' SiglipModel always has a text head; this tower has none (open_clip only)")
    mapped = to_hf_siglip(ours.state_dict())
    expected = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected
    assert set(from_hf_siglip(hf.state_dict())) == set(ours.state_dict())


def _small(name: str) -> dict:
    config = get_config(name)
    config.update(vision_layers=1, transformer_layers=1, vocab_size=1000)
    return config


def _randomised(model: torch.nn.Module) -> None:
    """Random values everywhere (biases and LayerNorm gains too), so no term hides behind a zero."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_final.weight", "ln_post.weight", ".ln.weight")):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name == "logit_scale":
                p.fill_(2.3)
            elif name == "logit_bias":
                p.fill_(-3.0)
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def _inputs(config: dict, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    res = config["image_resolution"]
    images = torch.randn(batch, 3, res, res, generator=gen)
    text = torch.randint(2, config["vocab_size"], (batch, config["context_length"]), generator=gen)
    text[0, 5:] = 1  # padded with </s>, as the tokenizer pads
    return images, text


def _close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    scale = ref.abs().max().clamp_min(1e-12)
    assert ((ours - ref).abs().max() / scale).item() <= RTOL


SHAPES = ["ViT-B-16-SigLIP", "ViT-B-32-SigLIP2-256", "ViT-L-16-SigLIP2-256", "ViT-SO400M-14-SigLIP",
          "ViT-gopt-16-SigLIP2-256"]


@pytest.mark.parametrize("name", ["test-siglip-tiny", *SHAPES])
def test_features_and_logits_match_siglipmodel(name: str) -> None:
    config = dict(ARCH_CONFIGS[name]) if name.startswith("test-") else _small(name)
    ours = _ours(config)
    _randomised(ours)
    hf = _hf_model(config)
    hf.load_state_dict(to_hf_siglip(ours.state_dict()), strict=True)
    images, text = _inputs(config)
    with torch.no_grad():
        out = hf(input_ids=text, pixel_values=images)
        img, txt = ours.encode_image(images), ours.encode_text(text)
        logits_per_image, _ = ours(images, text)
        ref_img = hf.vision_model(pixel_values=images).pooler_output
        ref_txt = hf.text_model(input_ids=text).pooler_output
    _close(img, ref_img)
    _close(txt, ref_txt)
    _close(logits_per_image, out.logits_per_image)


def test_fast_inference_path_matches_the_plain_model() -> None:
    """What `load_model` returns (packed, fused blocks with tanh-GELU) computes the same numbers."""
    import copy

    from clipforge.inference.precision import enable_fast_forward

    config = _small("ViT-B-16-SigLIP")
    plain = _ours(config)
    _randomised(plain)
    fast = enable_fast_forward(copy.deepcopy(plain))
    images, text = _inputs(config)
    with torch.no_grad():
        _close(fast.encode_image(images), plain.encode_image(images))
        _close(fast.encode_text(text), plain.encode_text(text))


def test_open_clip_timm_layout_round_trips_and_loads(tmp_path) -> None:
    """open_clip's files (timm image tower under visual.trunk.) load through the one loader."""
    from safetensors.torch import save_file

    from clipforge.api import load_model

    config = dict(ARCH_CONFIGS["test-siglip-tiny"])
    ours = _ours(config)
    _randomised(ours)
    theirs = to_open_clip_siglip(ours.state_dict())
    assert any(k.startswith("visual.trunk.attn_pool.kv") for k in theirs)
    back = from_open_clip_siglip(theirs)
    assert set(back) == set(ours.state_dict())
    assert all(torch.equal(back[k].reshape(v.shape), v) for k, v in ours.state_dict().items())
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in theirs.items()}, str(path))
    loaded = load_model(f"test-siglip-tiny:{path}", "cpu")
    images, text = _inputs(config)
    with torch.no_grad():
        _close(loaded.model.encode_image(images), ours.encode_image(images))
        _close(loaded.model.encode_text(text), ours.encode_text(text))
    assert loaded.scoring.kind == "sigmoid" and loaded.scoring.bias == pytest.approx(-3.0)


def test_transformers_siglip_folder_loads(tmp_path) -> None:
    from clipforge.api import load_model

    config = dict(ARCH_CONFIGS["test-siglip-tiny"])
    ours = _ours(config)
    _randomised(ours)
    hf = _hf_model(config)
    hf.load_state_dict(to_hf_siglip(ours.state_dict()), strict=True)
    hf.save_pretrained(tmp_path / "siglip")
    loaded = load_model(tmp_path / "siglip", "cpu")
    images, text = _inputs(config)
    with torch.no_grad():
        _close(loaded.model.encode_image(images), ours.encode_image(images))
        _close(loaded.model.encode_text(text), ours.encode_text(text))
