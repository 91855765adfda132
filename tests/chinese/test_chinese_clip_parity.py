"""Chinese-CLIP: parity with the cn-clip package and transformers' ChineseCLIPModel on identical random weights.

Every published architecture keeps its full width, heads and head width; depth is cut to 1 block per
tower (1 bottleneck per stage for RN50) so the suite stays fast: every tensor shape and code path of a
block runs, only the repetition is cut (as tests/core/test_zoo_parity.py does for the biggest towers).
"""

from __future__ import annotations

import pytest
import torch

from clipforge.models.chinese_clip import CHINESE_CLIP_CONFIGS, chinese_clip_config, create_chinese_clip
from clipforge.text.wordpiece import tokenize_chinese

pytest.importorskip("transformers")

TEXTS = ["一只猫", "海边的日落", "一张飞机的照片。", "我在 Starbucks 喝了一杯 latte", "🐱🐶 猫和狗"]


def _cut(name: str) -> dict:
    layers = CHINESE_CLIP_CONFIGS[name]["vision_layers"]
    return {"vision_layers": [1, 1, 1, 1] if isinstance(layers, list) else 1, "text_num_hidden_layers": 1}


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    err = ((a - b).norm() / b.norm()).item()
    assert err <= rel, f"relative error {err:.2e} > {rel:.0e}"


def _reference(cn_clip_ref, config: dict) -> torch.nn.Module:
    model_py = cn_clip_ref.module("model")
    bert = config["bert"]
    return model_py.CLIP(
        embed_dim=config["embed_dim"], image_resolution=config["image_resolution"],
        vision_layers=config["vision_layers"], vision_width=config["vision_width"],
        vision_patch_size=config["vision_patch_size"], vocab_size=bert["vocab_size"],
        text_attention_probs_dropout_prob=0.1, text_hidden_act="gelu", text_hidden_dropout_prob=0.1,
        text_hidden_size=bert["hidden_size"], text_initializer_range=0.02,
        text_intermediate_size=bert["intermediate_size"], text_max_position_embeddings=512,
        text_num_attention_heads=bert["num_attention_heads"], text_num_hidden_layers=bert["num_hidden_layers"],
        text_type_vocab_size=2, vision_head_width=config["vision_head_width"]).eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CHINESE_CLIP_CONFIGS))
def test_parity_with_cn_clip(cn_clip_ref, name: str) -> None:
    torch.manual_seed(0)
    config = chinese_clip_config(name, **_cut(name))
    reference = _reference(cn_clip_ref, config)
    with torch.no_grad():
        for p in reference.parameters():  # BatchNorm/LayerNorm defaults are too regular to catch a mix-up
            p.add_(torch.randn_like(p) * 0.02)
    ours = create_chinese_clip(config)
    state = reference.state_dict()
    ours.load_state_dict(state, strict=True)  # cn_clip's own names load as they are
    image = torch.randn(2, 3, config["image_resolution"], config["image_resolution"])
    text = tokenize_chinese(TEXTS)
    with torch.no_grad():
        _close(ours.encode_image(image), reference.encode_image(image))
        _close(ours.encode_text(text), reference.encode_text(text))
        ref_logits = reference.get_similarity(image, text)[0]
        _close(ours(image, text)[0], ref_logits)


def _features(out) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output holds the projected features."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _small_vit(**overrides) -> dict:
    return chinese_clip_config("cn-ViT-B-16", vision_layers=2, text_num_hidden_layers=2, **overrides)


def test_parity_with_transformers_chinese_clip_model() -> None:
    from transformers import ChineseCLIPConfig, ChineseCLIPModel

    from clipforge.weights.cn_clip import from_transformers, hf_config, to_transformers

    torch.manual_seed(1)
    config = _small_vit()
    reference = ChineseCLIPModel(ChineseCLIPConfig(**hf_config(config))).eval()
    ours = create_chinese_clip(config)
    ours.load_state_dict(from_transformers(reference.state_dict()), strict=True)
    back = to_transformers(ours.state_dict())
    ref_sd = {k: v for k, v in reference.state_dict().items() if not k.endswith(("position_ids", "token_type_ids"))}
    assert back.keys() == ref_sd.keys() and all(torch.equal(back[k], ref_sd[k]) for k in back)
    image = torch.randn(2, 3, 224, 224)
    text = tokenize_chinese(TEXTS)
    with torch.no_grad():
        out = reference(input_ids=text, attention_mask=text.ne(0).long(), pixel_values=image)
        _close(ours.encode_image(image), _features(reference.get_image_features(pixel_values=image)))
        _close(ours.encode_text(text),
               _features(reference.get_text_features(input_ids=text, attention_mask=text.ne(0).long())))
        _close(ours(image, text)[0], out.logits_per_image)
