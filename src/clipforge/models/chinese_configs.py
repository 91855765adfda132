"""Chinese-CLIP configs as data (standard library only)."""

from __future__ import annotations

from typing import Any

# Text towers as cn_clip's model_configs describe them (BERT hyper-parameters).
CN_TEXT_TOWERS: dict[str, dict[str, Any]] = {
    "RoBERTa-wwm-ext-base-chinese": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                     "intermediate_size": 3072},
    "RoBERTa-wwm-ext-large-chinese": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                      "intermediate_size": 4096},
    "RBT3-chinese": {"hidden_size": 768, "num_hidden_layers": 3, "num_attention_heads": 12,
                     "intermediate_size": 3072},
}
_BERT_COMMON = {"vocab_size": 21128, "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
                "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                "initializer_range": 0.02, "pad_token_id": 0}

# name -> (image tower as cn_clip's vision config, text tower name); `struct` strings as in cn_clip/clip/utils.py.
CHINESE_CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "cn-RN50": {"embed_dim": 1024, "image_resolution": 224, "vision_layers": [3, 4, 6, 3], "vision_width": 64,
                "vision_patch_size": None, "vision_head_width": 64, "text": "RBT3-chinese"},
    "cn-ViT-B-16": {"embed_dim": 512, "image_resolution": 224, "vision_layers": 12, "vision_width": 768,
                    "vision_patch_size": 16, "vision_head_width": 64, "text": "RoBERTa-wwm-ext-base-chinese"},
    "cn-ViT-L-14": {"embed_dim": 768, "image_resolution": 224, "vision_layers": 24, "vision_width": 1024,
                    "vision_patch_size": 14, "vision_head_width": 64, "text": "RoBERTa-wwm-ext-base-chinese"},
    "cn-ViT-L-14-336": {"embed_dim": 768, "image_resolution": 336, "vision_layers": 24, "vision_width": 1024,
                        "vision_patch_size": 14, "vision_head_width": 64, "text": "RoBERTa-wwm-ext-base-chinese"},
    "cn-ViT-H-14": {"embed_dim": 1024, "image_resolution": 224, "vision_layers": 32, "vision_width": 1280,
                    "vision_patch_size": 14, "vision_head_width": 80, "text": "RoBERTa-wwm-ext-large-chinese"},
}
CONTEXT_LENGTH = 52


def is_chinese_clip_name(name: str) -> bool:
    return name in CHINESE_CLIP_CONFIGS


def chinese_clip_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The full constructor config of a `cn-*` model (`overrides` e.g. cut depth for tests)."""
    if name not in CHINESE_CLIP_CONFIGS:
        raise KeyError(f"unknown Chinese-CLIP model {name!r}; known: {', '.join(CHINESE_CLIP_CONFIGS)}")
    config = dict(CHINESE_CLIP_CONFIGS[name])
    text = config.pop("text")
    config["bert"] = {**_BERT_COMMON, **CN_TEXT_TOWERS[text]}
    for key, value in overrides.items():
        if key.startswith("text_"):
            config["bert"][key[5:]] = value
        else:
            config[key] = value
    return config
