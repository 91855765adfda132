"""Behaviour of the networks that the parity test does not pin down."""

from __future__ import annotations

import math

import pytest
import torch

from clipforge.models import (
    ALIASES,
    ARCH_CONFIGS,
    OPEN_CLIP_MODELS,
    OPENAI_MODELS,
    build_model,
    config_from_state_dict,
    create_model_from_config,
    get_config,
)
from clipforge.models.layers import LayerNorm


def test_every_alias_points_at_an_openai_model() -> None:
    assert set(ALIASES.values()) <= set(OPENAI_MODELS)
    assert len(OPENAI_MODELS) == 9 and all(name in ARCH_CONFIGS for name in OPENAI_MODELS)


def test_names_follow_each_projects_meaning() -> None:
    """open_clip's `ViT-B-32` is GELU (clipforge 0.1 aliased it to OpenAI's QuickGELU model);
    `-quickgelu` and OpenAI's spelling are QuickGELU; shapes are identical."""
    openai, gelu, quick = get_config("ViT-B/32"), get_config("ViT-B-32"), get_config("ViT-B-32-quickgelu")
    assert "activation" not in openai and gelu["activation"] == "gelu" and quick["activation"] == "quick_gelu"
    assert {k: v for k, v in gelu.items() if k != "activation"} == openai
    model = create_model_from_config(get_config("test-vit-tiny") | {"activation": "gelu"})
    blocks = [*model.transformer.resblocks, *model.visual.transformer.resblocks]
    assert all(isinstance(b.mlp.gelu, torch.nn.GELU) and b.activation == "gelu" for b in blocks)
    assert len(OPEN_CLIP_MODELS) == 25 and all(n in ARCH_CONFIGS for n in OPEN_CLIP_MODELS)
    # The ResNet spelling both projects share keeps OpenAI's meaning (QuickGELU).
    assert "activation" not in get_config("RN50") and get_config("RN50-quickgelu")["activation"] == "quick_gelu"


def test_head_width_and_mlp_ratio_come_from_the_config() -> None:
    with torch.device("meta"):
        big_g = create_model_from_config(get_config("ViT-bigG-14"))
    block = big_g.visual.transformer.resblocks[0]
    assert block.attn.heads == 16 and block.mlp.c_fc.out_features == 8192  # 1664 / 104, round(1664 * 4.9231)
    assert big_g.transformer.resblocks[0].attn.heads == 20
    assert sum(p.numel() for p in big_g.parameters()) == 2_539_567_105  # open_clip's table: 2539.57 M
    inferred = config_from_state_dict(big_g.state_dict())  # heads are not in the shapes: taken from the table
    assert inferred == {k: v for k, v in get_config("ViT-bigG-14").items() if k != "activation"}


def test_unknown_architecture_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown architecture 'ViT-Z/99'.*RN50"):
        get_config("ViT-Z/99")


def test_logit_scale_starts_at_log_inverse_temperature(tiny_vit) -> None:
    assert tiny_vit.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_text_tower_is_causal_and_truncation_is_exact(tiny_vit) -> None:
    """The EOT feature must not change when tokens after EOT change, and running only up to
    the batch's last EOT must equal running all 77 positions."""
    text = torch.zeros(3, 77, dtype=torch.long)
    text[:, 0] = 49406
    text[0, 1:4] = torch.tensor([320, 1125, 539])
    text[0, 4] = 49407
    text[1, 1:20] = torch.arange(400, 419)
    text[1, 20] = 49407
    text[2, 1] = 49407
    with torch.no_grad():
        short = tiny_vit.encode_text(text)
        padded = text.clone()
        padded[:, -1] = 5  # garbage after EOT; forces the full-length path (argmax stays EOT)
        full = tiny_vit.encode_text(padded)
        single = torch.cat([tiny_vit.encode_text(row[None]) for row in text])
    torch.testing.assert_close(short, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(short, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_layernorm_runs_in_fp32_for_half_activations(dtype: torch.dtype) -> None:
    norm = LayerNorm(8).to(dtype)
    x = (torch.randn(4, 8) * 1000 + 3e3).to(dtype)
    out = norm(x)
    assert out.dtype == dtype
    expected = torch.nn.functional.layer_norm(x.float(), (8,))
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=0)


def test_bf16_model_tracks_fp32(tiny_rn) -> None:
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fp32 = tiny_rn.encode_image(images)
        bf16 = tiny_rn.to(torch.bfloat16).encode_image(images).float()
    cosine = torch.nn.functional.cosine_similarity(fp32, bf16)
    assert cosine.min() > 0.99


def test_build_model_refuses_non_clip_state_dicts() -> None:
    with pytest.raises(ValueError, match="not a CLIP checkpoint"):
        build_model({"weight": torch.zeros(2)})


def test_build_model_rejects_extra_keys(tiny_vit) -> None:
    state_dict = dict(tiny_vit.state_dict())
    state_dict["visual.unexpected"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        build_model(state_dict, config=get_config("test-vit-tiny"))


def test_torchscript_extra_keys_are_dropped(tiny_vit) -> None:
    state_dict = dict(tiny_vit.state_dict())
    state_dict.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77),
                      vocab_size=torch.tensor(49408))
    rebuilt = build_model(state_dict, config=get_config("test-vit-tiny"))
    assert rebuilt.image_size == 32


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = create_model_from_config(get_config("test-vit-tiny")).train()
    images = torch.randn(2, 3, 32, 32)
    text = torch.zeros(2, 77, dtype=torch.long)
    text[:, 0], text[:, 1], text[:, 2] = 49406, 320, 49407

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        logits, _ = model(images, text)
        logits.sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.transformer.grad_checkpointing = True
    model.visual.transformer.grad_checkpointing = True
    checkpointed = grads()
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("activation", ["gelu", "quick_gelu"])
def test_fast_inference_paths_respect_the_activation(activation: str) -> None:
    """`clipforge.load` gives every model the fast forward (packed, fused MLP): a GELU model must
    not run the fused QuickGELU kernel (features off by ~1e-2)."""
    import copy

    from clipforge.inference.precision import enable_fast_forward, prepare

    torch.manual_seed(0)
    model = create_model_from_config(get_config("test-vit-tiny") | {"activation": activation}).eval()
    images = torch.randn(2, 3, 32, 32)
    text = torch.zeros(2, 77, dtype=torch.long)
    text[:, 0], text[:, 1], text[:, 2] = 49406, 320, 49407
    with torch.no_grad():
        reference = model.encode_image(images), model.encode_text(text)
        fast = enable_fast_forward(copy.deepcopy(model))
        for ours, ref in zip((fast.encode_image(images), fast.encode_text(text)), reference, strict=True):
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
        prepared = prepare(copy.deepcopy(model), "fp32")
        for ours, ref in zip((prepared.encode_image(images), prepared.encode_text(text)), reference, strict=True):
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
