"""open_clip's SigLIP, SigLIP 2, MetaCLIP 2 worldwide and DFN-378 architectures, as data.

Transcribed from open-clip-torch 3.3's ``model_configs/*.json`` and the timm image towers they
name (``vit_base_patch16_siglip_224`` etc.: no class token, MAP head, patch bias, LayerNorm
eps 1e-6, tanh-GELU), in our constructor's terms (`clipforge.models.family_keys`).

One deliberate difference: open_clip builds the *text* tower of SigLIP 1 configs with exact
(erf) GELU, because their JSON lacks ``act_kwargs``; the published weights were trained with
tanh-GELU (big_vision, and transformers' ``SiglipModel`` use it), so clipforge uses tanh-GELU
in both towers. Pass ``text_activation="gelu"`` in a config to reproduce open_clip's build.
"""

from __future__ import annotations

from typing import Any

SIGLIP_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                     "resize_mode": "squash"}
_SIGLIP_TOWER = {"preprocess": SIGLIP_PREPROCESS, "vision_pool": "map", "vision_patch_bias": True, "vision_ln_pre": False, "vision_proj": False,
                 "text_causal": False, "text_pool": "last", "text_proj_bias": True, "norm_eps": 1e-6,
                 "activation": "gelu_tanh", "scoring": "sigmoid"}
# (width, layers, heads, mlp ratio) of timm's SigLIP image towers
_VISION = {"B": (768, 12, 12, 4.0), "L": (1024, 24, 16, 4.0), "SO400M": (1152, 27, 16, 3.7362),
           "gopt": (1536, 40, 16, 4.0)}
_TEXT = {"B": (768, 12, 12, 4.0), "L": (1024, 24, 16, 4.0), "SO400M": (1152, 27, 16, 3.7362),
         "gopt": (1152, 27, 16, 3.7362)}


def _sp(repo: str) -> dict[str, Any]:
    """SigLIP 1's T5-style SentencePiece (``spiece.model``): lower-cased, punctuation removed,
    ``</s>`` (id 1) appended and used as padding."""
    return {"kind": "sentencepiece", "file": "spiece.model", "hub_repo": repo, "clean": "canonicalize",
            "eos_id": 1, "pad_id": 1}


def _gemma(repo: str) -> dict[str, Any]:
    """SigLIP 2's Gemma tokenizer (``tokenizer.json``, 256k pieces), canonicalized as open_clip does."""
    return {"kind": "hf-json", "file": "tokenizer.json", "hub_repo": repo, "clean": "canonicalize"}


def _siglip(size: str, patch: int, resolution: int, vocab: int, tokenizer: dict[str, Any], *,
            context: int = 64, text_proj: bool = True) -> dict[str, Any]:
    vw, vl, vh, vr = _VISION[size]
    tw, tl, th, tr = _TEXT[size]
    config: dict[str, Any] = {
        "embed_dim": vw, "image_resolution": resolution, "vision_layers": vl, "vision_width": vw,
        "vision_patch_size": patch, "context_length": context, "vocab_size": vocab, "transformer_width": tw,
        "transformer_heads": th, "transformer_layers": tl, "vision_head_width": vw // vh, **_SIGLIP_TOWER,
        "tokenizer": tokenizer}
    if vr != 4.0:
        config["vision_mlp_ratio"] = vr
    if tr != 4.0:
        config["text_mlp_ratio"] = tr
    if not text_proj:
        config["text_proj"] = False
        config.pop("text_proj_bias")
    return config


_SP_EN = _sp("timm/ViT-B-16-SigLIP")
_SP_I18N = _sp("timm/ViT-B-16-SigLIP-i18n-256")

SIGLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "ViT-B-16-SigLIP": _siglip("B", 16, 224, 32000, _SP_EN),
    "ViT-B-16-SigLIP-256": _siglip("B", 16, 256, 32000, _SP_EN),
    "ViT-B-16-SigLIP-384": _siglip("B", 16, 384, 32000, _SP_EN),
    "ViT-B-16-SigLIP-512": _siglip("B", 16, 512, 32000, _SP_EN),
    "ViT-B-16-SigLIP-i18n-256": _siglip("B", 16, 256, 250000, _SP_I18N),
    "ViT-L-16-SigLIP-256": _siglip("L", 16, 256, 32000, _SP_EN),
    "ViT-L-16-SigLIP-384": _siglip("L", 16, 384, 32000, _SP_EN),
    "ViT-SO400M-14-SigLIP": _siglip("SO400M", 14, 224, 32000, _SP_EN, context=16),
    "ViT-SO400M-14-SigLIP-378": _siglip("SO400M", 14, 378, 32000, _SP_EN),
    "ViT-SO400M-14-SigLIP-384": _siglip("SO400M", 14, 384, 32000, _SP_EN),
    "ViT-SO400M-16-SigLIP-i18n-256": _siglip("SO400M", 16, 256, 250000, _SP_I18N, text_proj=False),
}
for _name, _size, _patch, _res in (
        ("ViT-B-32-SigLIP2-256", "B", 32, 256), ("ViT-B-16-SigLIP2", "B", 16, 224),
        ("ViT-B-16-SigLIP2-256", "B", 16, 256), ("ViT-B-16-SigLIP2-384", "B", 16, 384),
        ("ViT-B-16-SigLIP2-512", "B", 16, 512), ("ViT-L-16-SigLIP2-256", "L", 16, 256),
        ("ViT-L-16-SigLIP2-384", "L", 16, 384), ("ViT-L-16-SigLIP2-512", "L", 16, 512),
        ("ViT-SO400M-14-SigLIP2", "SO400M", 14, 224), ("ViT-SO400M-14-SigLIP2-378", "SO400M", 14, 378),
        ("ViT-SO400M-16-SigLIP2-256", "SO400M", 16, 256), ("ViT-SO400M-16-SigLIP2-384", "SO400M", 16, 384),
        ("ViT-SO400M-16-SigLIP2-512", "SO400M", 16, 512), ("ViT-gopt-16-SigLIP2-256", "gopt", 16, 256),
        ("ViT-gopt-16-SigLIP2-384", "gopt", 16, 384)):
    SIGLIP_CONFIGS[_name] = _siglip(_size, _patch, _res, 256000, _gemma(f"timm/{_name}"))
# (gopt: timm's giantopt image tower is 1536 wide and is the embedding; the 1152-wide text tower projects up.)

_XLMV = {"kind": "hf-json", "file": "tokenizer.json", "hub_repo": "facebook/xlm-v-base", "clean": "whitespace"}
_MT5 = {"kind": "sentencepiece", "file": "spiece.model", "hub_repo": "google/mt5-base", "clean": "canonicalize",
        "eos_id": 1, "pad_id": 0}


def _openai_shape(embed: int, resolution: int, vl: int, vw: int, head: int, tw: int, th: int, tl: int,
                  vocab: int = 49408, mlp: float | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "embed_dim": embed, "image_resolution": resolution, "vision_layers": vl, "vision_width": vw,
        "vision_patch_size": 14, "context_length": 77, "vocab_size": vocab, "transformer_width": tw,
        "transformer_heads": th, "transformer_layers": tl}
    if head != 64:
        config["vision_head_width"] = head
    if mlp is not None:
        config["vision_mlp_ratio"] = mlp
    return config


def _worldwide(base: dict[str, Any], eos: int, tokenizer: dict[str, Any]) -> dict[str, Any]:
    return {**base, "text_pool": "eos", "text_eos_id": eos, "tokenizer": tokenizer}


_H = _openai_shape(1024, 224, 32, 1280, 80, 1024, 16, 24, vocab=901629)
_G = _openai_shape(1280, 224, 48, 1664, 104, 1280, 20, 32, vocab=901629, mlp=4.9231)
_L = _openai_shape(768, 224, 24, 1024, 64, 768, 12, 12, vocab=250100)

# MetaCLIP 2 worldwide: OpenAI's towers, a multilingual vocabulary, the feature at the first EOS.
WORLDWIDE_CONFIGS: dict[str, dict[str, Any]] = {
    "ViT-H-14-worldwide": {**_worldwide(_H, 2, _XLMV), "activation": "gelu"},
    "ViT-H-14-worldwide-quickgelu": {**_worldwide(_H, 2, _XLMV), "activation": "quick_gelu"},
    "ViT-H-14-worldwide-378": {**_worldwide({**_H, "image_resolution": 378}, 2, _XLMV), "activation": "gelu"},
    "ViT-bigG-14-worldwide": {**_worldwide(_G, 2, _XLMV), "activation": "gelu"},
    "ViT-bigG-14-worldwide-378": {**_worldwide({**_G, "image_resolution": 378}, 2, _XLMV), "activation": "gelu"},
    "ViT-L-14-worldwide": {**_worldwide(_L, 1, _MT5), "activation": "gelu"},
    "ViT-L-14-worldwide-quickgelu": {**_worldwide(_L, 1, _MT5), "activation": "quick_gelu"},
}

# DFN at 378 px: OpenAI's shape (ViT-H/14), another resolution.
DFN_CONFIGS: dict[str, dict[str, Any]] = {
    "ViT-H-14-378": {**_openai_shape(1024, 378, 32, 1280, 80, 1024, 16, 24), "activation": "gelu"},
    "ViT-H-14-378-quickgelu": {**_openai_shape(1024, 378, 32, 1280, 80, 1024, 16, 24), "activation": "quick_gelu"},
}

# Small configs of each family for unit tests: same code paths, seconds to run.
_TINY_SIGLIP = {**_SIGLIP_TOWER, "embed_dim": 64, "image_resolution": 32, "vision_layers": 2, "vision_width": 64,
                "vision_patch_size": 8, "context_length": 64, "vocab_size": 512, "transformer_width": 64,
                "transformer_heads": 2, "transformer_layers": 2, "vision_head_width": 32}
TEST_FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    "test-siglip-tiny": {**_TINY_SIGLIP, "tokenizer": {"kind": "sentencepiece", "file": "spiece.model",
                                                      "clean": "canonicalize", "eos_id": 1, "pad_id": 1}},
    "test-siglip2-tiny": {**_TINY_SIGLIP, "tokenizer": {"kind": "hf-json", "file": "tokenizer.json",
                                                       "clean": "canonicalize"}},
    "test-worldwide-tiny": {"embed_dim": 32, "image_resolution": 32, "vision_layers": 2, "vision_width": 64,
                            "vision_patch_size": 8, "context_length": 16, "vocab_size": 512,
                            "transformer_width": 64, "transformer_heads": 2, "transformer_layers": 2,
                            "activation": "gelu", "text_pool": "eos", "text_eos_id": 2,
                            "tokenizer": {"kind": "hf-json", "file": "tokenizer.json", "clean": "whitespace"}},
}
