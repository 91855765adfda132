"""Chinese-CLIP (OFA-Sys, `cn-clip`): OpenAI-shaped image towers with a Chinese BERT text tower.

The image towers are exactly OpenAI's (QuickGELU ViT with a class token and a bare `proj`, or the
ModifiedResNet with attention pooling), so clipforge's own `VisionTransformer`/`ModifiedResNet`
run them. The text tower is a BERT encoder (RoBERTa-wwm-ext base or large, or the 3-layer RBT3)
read at ``[CLS]`` and projected by a bare ``text_projection`` matrix; padding (id 0) is masked.
That tower is transformers' own `BertModel` (no pooler), the reference's class, so the `transformers`
package is an optional extra of these models only (a one-line message says so when missing).

Parameter names are `cn_clip`'s: ``visual.*`` (OpenAI's), ``bert.*`` (BERT's), ``text_projection``,
``logit_scale``, so a `cn_clip` checkpoint's ``state_dict`` (``module.`` prefix removed) loads
with ``strict=True``. Names are ``cn-<vision>`` (``cn-ViT-B-16``): they cannot be confused with
OpenAI's architectures of the same image tower.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clipforge.models.resnet import ModifiedResNet
from clipforge.models.tensor_checks import check_image_batch, check_token_batch
from clipforge.models.vit import VisionTransformer

__all__ = [
    "CHINESE_CLIP_CONFIGS", "CN_TEXT_TOWERS", "bert_parameter_count", "ChineseCLIP", "MISSING_TRANSFORMERS", "chinese_clip_config",
    "create_chinese_clip", "is_chinese_clip_name",
]

MISSING_TRANSFORMERS = ("Chinese-CLIP's text tower is transformers' BertModel: pip install 'clipforge[families]' "
                        "(installs transformers)")

from clipforge.models.chinese_configs import (  # noqa: E402,F401
    _BERT_COMMON,
    CHINESE_CLIP_CONFIGS,
    CN_TEXT_TOWERS,
    CONTEXT_LENGTH,
    chinese_clip_config,
    is_chinese_clip_name,
)


def bert_parameter_count(bert: dict[str, Any]) -> int:
    """Parameters of a pooler-less BertModel with this config (so listings need not build one)."""
    h, i, n = int(bert["hidden_size"]), int(bert["intermediate_size"]), int(bert["num_hidden_layers"])
    embeddings = (int(bert["vocab_size"]) + int(bert["max_position_embeddings"]) + int(bert["type_vocab_size"])) * h
    layer = 4 * (h * h + h) + 2 * h * i + i + h + 4 * h  # q, k, v, out; MLP; two LayerNorms
    return embeddings + 2 * h + n * layer


def _bert(bert_config: dict[str, Any]) -> nn.Module:
    try:
        from transformers import BertConfig, BertModel
    except ImportError as exc:
        raise ImportError(MISSING_TRANSFORMERS) from exc
    return BertModel(BertConfig(**bert_config), add_pooling_layer=False)


class ChineseCLIP(nn.Module):
    """`cn_clip.clip.model.CLIP`'s computation with clipforge's image towers and transformers' BertModel."""

    def __init__(self, embed_dim: int, image_resolution: int, vision_layers: int | list[int] | tuple[int, ...],
                 vision_width: int, vision_patch_size: int | None, bert: dict[str, Any],
                 vision_head_width: int = 64, context_length: int = CONTEXT_LENGTH) -> None:
        super().__init__()
        self.embed_dim, self.context_length = embed_dim, context_length
        self.vocab_size = int(bert["vocab_size"])
        self.pad_id = int(bert.get("pad_token_id", 0))
        self.config = {"embed_dim": embed_dim, "image_resolution": image_resolution,
                       "vision_layers": list(vision_layers) if isinstance(vision_layers, tuple | list) else vision_layers,
                       "vision_width": vision_width, "vision_patch_size": vision_patch_size, "bert": dict(bert),
                       "vision_head_width": vision_head_width, "context_length": context_length}
        if isinstance(vision_layers, tuple | list):
            self.visual: nn.Module = ModifiedResNet(layers=tuple(vision_layers), output_dim=embed_dim,
                                                    heads=vision_width * 32 // vision_head_width,
                                                    input_resolution=image_resolution, width=vision_width)
        else:
            if vision_patch_size is None:
                raise ValueError("a ViT image tower needs vision_patch_size")
            self.visual = VisionTransformer(input_resolution=image_resolution, patch_size=vision_patch_size,
                                            width=vision_width, layers=vision_layers,
                                            heads=vision_width // vision_head_width, output_dim=embed_dim,
                                            activation="quick_gelu")
        self.bert = _bert(bert)
        hidden = int(bert["hidden_size"])
        self.text_projection = nn.Parameter(torch.empty(hidden, embed_dim))
        nn.init.normal_(self.text_projection, std=hidden ** -0.5)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def image_size(self) -> int:
        return self.visual.input_resolution

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        check_image_batch(image, tower=self.visual)  # one line naming the shape or size, before any kernel
        return self.visual(image.to(self.dtype))

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """Features at [CLS] of the BERT tower, padding (id 0) masked; rows are `tokenize_chinese`'s."""
        check_token_batch(text)
        length = int(text.ne(self.pad_id).sum(dim=1).max().item()) if text.numel() else 1
        text = text[:, : max(length, 1)]  # trailing all-padding columns are masked anyway: skip them
        mask = text.ne(self.pad_id).to(self.dtype)
        x = self.bert(input_ids=text, attention_mask=mask).last_hidden_state
        return x[:, 0, :].to(self.dtype) @ self.text_projection

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def create_chinese_clip(name_or_config: str | dict[str, Any], **overrides: Any) -> ChineseCLIP:
    """A randomly initialised Chinese-CLIP from a `cn-*` name or a full config (see `chinese_clip_config`)."""
    config = chinese_clip_config(name_or_config, **overrides) if isinstance(name_or_config, str) \
        else {**name_or_config, **overrides}
    return ChineseCLIP(**config).eval()
