"""A text tower that is a transformers encoder (open_clip's "HF text towers"), built from data.

open_clip's ``xlm-roberta-*``, ``roberta-*``, ``nllb-clip-*`` and ``mt5-*`` models read text
with a transformers encoder (XLM-R, RoBERTa, NLLB's M2M100 encoder, mT5's encoder stack),
pool its last hidden state, and project it to the embedding. Everything about the tower is
data in the model config (`clipforge.models.family_keys`):

- ``text_hf``: the encoder's transformers config (``model_type`` plus its fields, as in the
  hub's ``config.json``). The module is transformers' own class built from that config
  (``AutoConfig.for_model``), never downloaded: weights come from the checkpoint. For
  encoder-decoder types (M2M100, mT5) only the encoder is built, as open_clip keeps only it.
- ``text_pool``: ``"mean"`` (mean of the positions whose id is not the config's
  ``pad_token_id``) or ``"cls"`` (the first position's hidden state; M2M100's encoder has no
  pooler output, so open_clip's ``cls_pooler`` reads position 0 too).
- ``text_proj_mlp``: the projection is open_clip's MLP (bias-free Linear to
  ``(width + embed) // 2``, exact GELU, bias-free Linear), else one bias-free Linear.

Parameter names are open_clip's (``text.transformer.*``, ``text.proj.*``), so its files load
as they are. transformers is an optional extra: without it building such a tower raises one
line that names the extra.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from clipforge.models.family_keys import HF_MODEL_TYPES, hf_embedding_key, hf_layer_prefix, hf_width

__all__ = ["HF_MODEL_TYPES", "HFTextTower", "hf_embedding_key", "hf_layer_prefix", "require_transformers"]

EXTRA_HINT = "pip install 'clipforge[families]'"


def require_transformers() -> Any:
    """The transformers module, or one line saying which extra installs it."""
    try:
        import transformers
    except ImportError:
        raise ImportError(f"this model's text tower is a transformers encoder: {EXTRA_HINT} "
                          "(installs transformers)") from None
    return transformers


def _encoder(hf: Mapping[str, Any]) -> nn.Module:
    """transformers' encoder module for the config `hf` (random init, transformers' own)."""
    transformers = require_transformers()
    fields = dict(hf)
    model_type = str(fields.pop("model_type"))
    config = transformers.AutoConfig.for_model(model_type, **fields)
    if model_type == "m2m_100":
        from transformers.models.m2m_100.modeling_m2m_100 import M2M100Encoder

        return M2M100Encoder(config)
    if model_type == "mt5":
        from transformers.models.mt5.modeling_mt5 import MT5Stack

        encoder_config = copy.deepcopy(config)  # as MT5Model builds its encoder
        encoder_config.is_decoder = False
        encoder_config.use_cache = False
        return MT5Stack(encoder_config)
    return transformers.AutoModel.from_config(config, add_pooling_layer=False)


class HFTextTower(nn.Module):
    """ids [N, L] -> features [N, embed_dim]: encoder, pooling over non-pad positions, projection."""

    def __init__(self, hf: Mapping[str, Any], embed_dim: int, pool: str, mlp: bool) -> None:
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ValueError(f"a transformers text tower pools 'mean' or 'cls', not {pool!r}")
        self.transformer = _encoder(hf)
        self.pool = pool
        self.pad_id = int(self.transformer.config.pad_token_id)
        width = hf_width(hf)
        if mlp:
            hidden = (width + embed_dim) // 2
            self.proj: nn.Module = nn.Sequential(nn.Linear(width, hidden, bias=False), nn.GELU(),
                                                 nn.Linear(hidden, embed_dim, bias=False))
        else:
            self.proj = nn.Linear(width, embed_dim, bias=False)

    def lock(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """open_clip's `HFTextEncoder.lock`: freeze the encoder (all of it, or its embeddings and every layer but
        the last `unlocked_layers` - 1), each LayerNorm trainable when `freeze_layer_norm` is False; the
        projection is left as it is, as there."""
        if int(unlocked_layers) < 0:
            raise ValueError(f"lock_text_tower(unlocked_layers) must be >= 0, got {unlocked_layers}")
        modules: list[nn.Module] = [self.transformer]
        if unlocked_layers:
            model_type = str(self.transformer.config.model_type)
            layers = self.transformer.get_submodule(hf_layer_prefix(model_type).rstrip("."))
            embeddings = self.transformer.get_submodule(hf_embedding_key(model_type).split(".")[0])
            modules = [embeddings, *layers][:-int(unlocked_layers)]
        for module in modules:
            for name, param in module.named_parameters():
                param.requires_grad_(not freeze_layer_norm and "LayerNorm" in name.split("."))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).long()
        hidden = self.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.pool == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / mask.sum(-1, keepdim=True).to(hidden.dtype)
        return self.proj(pooled)
