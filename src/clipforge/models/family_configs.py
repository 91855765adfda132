"""open_clip's SigLIP, SigLIP 2, MetaCLIP 2 worldwide, DFN-378 and CLIPA-v2 architectures, as data.

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

from clipforge.models.family_keys import hf_layers, hf_width

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


# Text towers trained on many languages (`zeroshot.languages.model_languages`: no "not trained for this
# script" notice, English prompts by default): SigLIP's i18n towers, SigLIP 2's Gemma vocabulary,
# MetaCLIP 2 worldwide, and the XLM-R, NLLB and mT5 encoders. SigLIP's English SentencePiece and
# RoBERTa stay English.
MULTILINGUAL = ["en", "multilingual"]


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
    "ViT-B-16-SigLIP-i18n-256": {**_siglip("B", 16, 256, 250000, _SP_I18N), "languages": [*MULTILINGUAL]},
    "ViT-L-16-SigLIP-256": _siglip("L", 16, 256, 32000, _SP_EN),
    "ViT-L-16-SigLIP-384": _siglip("L", 16, 384, 32000, _SP_EN),
    "ViT-SO400M-14-SigLIP": _siglip("SO400M", 14, 224, 32000, _SP_EN, context=16),
    "ViT-SO400M-14-SigLIP-378": _siglip("SO400M", 14, 378, 32000, _SP_EN),
    "ViT-SO400M-14-SigLIP-384": _siglip("SO400M", 14, 384, 32000, _SP_EN),
    "ViT-SO400M-16-SigLIP-i18n-256": {**_siglip("SO400M", 16, 256, 250000, _SP_I18N, text_proj=False),
                                      "languages": [*MULTILINGUAL]},
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
    SIGLIP_CONFIGS[_name] = {**_siglip(_size, _patch, _res, 256000, _gemma(f"timm/{_name}")), "languages": [*MULTILINGUAL]}
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
    return {**base, "text_pool": "eos", "text_eos_id": eos, "tokenizer": tokenizer, "languages": [*MULTILINGUAL]}


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

# CLIPA-v2 (UCSC-VLAA; open_clip's ``*-CLIPA*.json``): OpenAI-named towers with GELU, an image tower without
# ln_pre read by the mean of its patch tokens with ln_post after the mean (`family_clipa`), a bidirectional
# 32-position text tower read at its last position (padding, for short texts: the rows are always full),
# bert-base-uncased's WordPiece with the [SEP] id turned into padding (open_clip's ``strip_sep_token``).
CLIPA_PREPROCESS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bilinear",
                    "resize_mode": "squash"}  # open_clip's `_apcfg`: ImageNet's mean/std, bilinear, squash
_CLIPA_TOKENIZER = {"kind": "wordpiece", "file": "vocab.txt", "hub_repo": "google-bert/bert-base-uncased",
                    "clean": "whitespace", "lower": True, "strip_sep": True}
_CLIPA_TOWERS = {"vision_pool": "avg", "vision_ln_pre": False, "text_causal": False, "text_pool": "last",
                 "activation": "gelu", "preprocess": CLIPA_PREPROCESS, "tokenizer": _CLIPA_TOKENIZER}


def _clipa(base: dict[str, Any], resolution: int) -> dict[str, Any]:
    return {**base, "image_resolution": resolution, "context_length": 32, "vocab_size": 32000, **_CLIPA_TOWERS}


CLIPA_CONFIGS: dict[str, dict[str, Any]] = {}
for _name, _base in (("ViT-L-14-CLIPA", _openai_shape(768, 224, 24, 1024, 64, 768, 12, 12)),
                     ("ViT-H-14-CLIPA", _openai_shape(1024, 224, 32, 1280, 80, 1024, 16, 24)),
                     ("ViT-bigG-14-CLIPA", _openai_shape(1280, 224, 48, 1664, 104, 1280, 20, 32, mlp=4.9231))):
    CLIPA_CONFIGS[_name] = _clipa(_base, 224)
    CLIPA_CONFIGS[f"{_name}-336"] = _clipa(_base, 336)

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
                            "tokenizer": {"kind": "hf-json", "file": "tokenizer.json", "clean": "whitespace"},
                            "languages": [*MULTILINGUAL]},
    # no hub_repo: bert-base-uncased's 30,522-word vocab.txt (CLIPA's, what a download would fetch) does not fit
    # this 512-token tower, so its file is looked for beside a checkpoint only, as the other test configs' are
    "test-clipa-tiny": {**_openai_shape(32, 32, 2, 64, 32, 64, 2, 2, vocab=512), "vision_patch_size": 8,
                        **_CLIPA_TOWERS, "context_length": 16,
                        "tokenizer": {k: v for k, v in _CLIPA_TOKENIZER.items() if k != "hub_repo"}},
}

# --- open_clip's transformers text towers (XLM-R, RoBERTa, NLLB, mT5), as data ------------------------
# From open-clip-torch 3.3's model_configs (``hf_model_name``, ``hf_pooler_type``, ``hf_proj_type``: its
# default is "mlp") and the encoders' hub ``config.json`` files (the fields that change the arithmetic;
# transformers' defaults fill the rest). The tokenizer is transformers' class for the encoder, read from
# the hub repository's files; open_clip's HFTokenizer cleans whitespace and pads to 77 positions.
_XLMR_BASE = {"model_type": "xlm-roberta", "vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12,
              "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 514,
              "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0,
              "eos_token_id": 2, "hidden_act": "gelu"}
_XLMR_LARGE = {**_XLMR_BASE, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
               "intermediate_size": 4096}
_ROBERTA = {**_XLMR_BASE, "model_type": "roberta", "vocab_size": 50265}
_NLLB_600M = {"model_type": "m2m_100", "vocab_size": 256206, "d_model": 1024, "encoder_layers": 12,
              "decoder_layers": 12, "encoder_attention_heads": 16, "decoder_attention_heads": 16,
              "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096, "max_position_embeddings": 1024,
              "activation_function": "relu", "scale_embedding": True, "pad_token_id": 1, "bos_token_id": 0,
              "eos_token_id": 2, "decoder_start_token_id": 2}
_NLLB_1B3 = {**_NLLB_600M, "encoder_layers": 24, "decoder_layers": 24, "encoder_ffn_dim": 8192,
             "decoder_ffn_dim": 8192}
_MT5_BASE = {"model_type": "mt5", "vocab_size": 250112, "d_model": 768, "d_kv": 64, "d_ff": 2048, "num_heads": 12,
             "num_layers": 12, "num_decoder_layers": 12, "feed_forward_proj": "gated-gelu",
             "relative_attention_num_buckets": 32, "layer_norm_epsilon": 1e-6, "pad_token_id": 0,
             "eos_token_id": 1, "decoder_start_token_id": 0, "tie_word_embeddings": False}
_MT5_XL = {**_MT5_BASE, "d_model": 2048, "d_ff": 5120, "num_heads": 32, "num_layers": 24, "num_decoder_layers": 24}


def _hf_tokenizer(repo: str, cls: str, file: str, *extra: str) -> dict[str, Any]:
    return {"kind": "hf-transformers", "class": cls, "file": file, "hub_repo": repo, "clean": "whitespace",
            **({"extra_files": list(extra)} if extra else {})}


_TOK_XLMR_BASE = _hf_tokenizer("FacebookAI/xlm-roberta-base", "XLMRobertaTokenizer", "tokenizer.json")
_TOK_XLMR_LARGE = _hf_tokenizer("FacebookAI/xlm-roberta-large", "XLMRobertaTokenizer", "tokenizer.json")
_TOK_ROBERTA = _hf_tokenizer("FacebookAI/roberta-base", "RobertaTokenizer", "tokenizer.json")
_TOK_NLLB_600M = _hf_tokenizer("facebook/nllb-200-distilled-600M", "NllbTokenizer", "tokenizer.json",
                               "tokenizer_config.json", "special_tokens_map.json")
_TOK_NLLB_1B3 = _hf_tokenizer("facebook/nllb-200-distilled-1.3B", "NllbTokenizer", "tokenizer.json",
                              "tokenizer_config.json", "special_tokens_map.json")
_TOK_MT5_BASE = _hf_tokenizer("google/mt5-base", "T5Tokenizer", "spiece.model", "tokenizer_config.json",
                              "special_tokens_map.json")
_TOK_MT5_XL = _hf_tokenizer("google/mt5-xl", "T5Tokenizer", "spiece.model", "tokenizer_config.json",
                            "special_tokens_map.json")


def _hf_tower(hf: dict[str, Any], pool: str, mlp: bool, tokenizer: dict[str, Any]) -> dict[str, Any]:
    heads = hf.get("num_attention_heads") or hf.get("encoder_attention_heads") or hf.get("num_heads")
    out = {"context_length": 77, "vocab_size": hf["vocab_size"], "transformer_width": hf_width(hf),
           "transformer_heads": int(heads), "transformer_layers": hf_layers(hf), "text_hf": hf, "text_pool": pool,
           "text_causal": False, "tokenizer": tokenizer}
    if tokenizer.get("class") != "RobertaTokenizer":  # XLM-R, NLLB, mT5; RoBERTa is English
        out["languages"] = [*MULTILINGUAL]
    if mlp:
        out["text_proj_mlp"] = True
    return out


_B32 = {"embed_dim": 512, "image_resolution": 224, "vision_layers": 12, "vision_width": 768, "vision_patch_size": 32}
_H14 = {"embed_dim": 1024, "image_resolution": 224, "vision_layers": 32, "vision_width": 1280,
        "vision_patch_size": 14, "vision_head_width": 80}
# open_clip's timm SigLIP image towers at 384 px (vit_base_patch16_siglip_384, vit_so400m_patch14_siglip_384)
_SIGLIP_B16_384 = {k: v for k, v in _siglip("B", 16, 384, 32000, _SP_EN).items() if k.startswith(("vision_", "image_"))}
_SIGLIP_SO400M_384 = {k: v for k, v in _siglip("SO400M", 14, 384, 32000, _SP_EN).items()
                      if k.startswith(("vision_", "image_"))}
# The twins were trained in open_clip on timm's tower, whose `vit_*_siglip_384` blocks use erf GELU (not
# big_vision's tanh): their only reference is open_clip, so erf it is (tanh would be ~2e-4 off).
_SIGLIP_IMAGE = {"vision_pool": "map", "vision_patch_bias": True, "vision_ln_pre": False, "vision_proj": False,
                 "norm_eps": 1e-6, "activation": "gelu", "scoring": "sigmoid", "preprocess": SIGLIP_PREPROCESS}

HF_TOWER_CONFIGS: dict[str, dict[str, Any]] = {
    "xlm-roberta-base-ViT-B-32": {**_B32, **_hf_tower(_XLMR_BASE, "mean", True, _TOK_XLMR_BASE),
                                  "activation": "gelu"},
    "xlm-roberta-large-ViT-H-14": {**_H14, **_hf_tower(_XLMR_LARGE, "mean", True, _TOK_XLMR_LARGE),
                                   "activation": "gelu"},
    "roberta-ViT-B-32": {**_B32, **_hf_tower(_ROBERTA, "mean", True, _TOK_ROBERTA), "activation": "quick_gelu"},
    "mt5-base-ViT-B-32": {**_B32, **_hf_tower(_MT5_BASE, "mean", True, _TOK_MT5_BASE), "activation": "gelu"},
    "mt5-xl-ViT-H-14": {**_H14, **_hf_tower(_MT5_XL, "mean", True, _TOK_MT5_XL), "activation": "gelu"},
    "nllb-clip-base": {**_B32, **_hf_tower(_NLLB_600M, "cls", False, _TOK_NLLB_600M), "activation": "gelu"},
    "nllb-clip-large": {**_H14, **_hf_tower(_NLLB_1B3, "cls", False, _TOK_NLLB_1B3), "activation": "gelu"},
    "nllb-clip-base-siglip": {**_SIGLIP_B16_384, **_SIGLIP_IMAGE, "embed_dim": 768,
                              **_hf_tower(_NLLB_600M, "cls", False, _TOK_NLLB_600M)},
    "nllb-clip-large-siglip": {**_SIGLIP_SO400M_384, **_SIGLIP_IMAGE, "embed_dim": 1152,
                               **_hf_tower(_NLLB_1B3, "cls", False, _TOK_NLLB_1B3)},
}

# Small ones for tests: same code paths (a class-token ViT with an XLM-R tower pooled by mean through
# the MLP; a SigLIP image tower with an NLLB encoder read at position 0 through a Linear; an mT5 stack).
_TINY_VIT = {"embed_dim": 32, "image_resolution": 32, "vision_layers": 2, "vision_width": 64, "vision_patch_size": 8}
_TINY_XLMR = {**_XLMR_BASE, "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 128, "max_position_embeddings": 80}
_TINY_NLLB = {**_NLLB_600M, "vocab_size": 512, "d_model": 64, "encoder_layers": 2, "decoder_layers": 1,
              "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 128,
              "decoder_ffn_dim": 128, "max_position_embeddings": 128}
_TINY_MT5 = {**_MT5_BASE, "vocab_size": 512, "d_model": 64, "d_kv": 32, "d_ff": 96, "num_heads": 2, "num_layers": 2,
             "num_decoder_layers": 1}
_TINY_TOK = {"kind": "hf-transformers", "class": "XLMRobertaTokenizer", "file": "tokenizer.json",
             "clean": "whitespace"}
TEST_FAMILY_CONFIGS.update({
    "test-xlmr-tiny": {**_TINY_VIT, **_hf_tower(_TINY_XLMR, "mean", True, _TINY_TOK), "activation": "gelu"},
    "test-nllb-siglip-tiny": {**{k: v for k, v in _TINY_SIGLIP.items() if k.startswith(("vision_", "image_"))},
                              **_SIGLIP_IMAGE, "embed_dim": 64,
                              **_hf_tower(_TINY_NLLB, "cls", False, {**_TINY_TOK, "class": "NllbTokenizer"})},
    "test-mt5-tiny": {**_TINY_VIT, **_hf_tower(_TINY_MT5, "mean", True, {**_TINY_TOK, "class": "T5Tokenizer"}),
                      "activation": "gelu"},
})
