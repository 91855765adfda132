"""The config fields that describe a model family beyond OpenAI's shape, as data, and their checks.

OpenAI's CLIP is one point in a small design space. Every family clipforge builds is the same
two towers with these knobs turned (absent keys mean OpenAI's choice, so OpenAI-shaped configs
are unchanged):

- image tower: ``vision_pool`` ``"class"`` (class token, OpenAI), ``"map"`` (SigLIP's
  attention-pool head over all patches, no class token) or ``"avg"`` (CLIPA: the class token runs
  through the blocks, the feature is ``ln_post`` of the mean of the patch tokens); ``vision_patch_bias`` (the patch
  convolution has a bias); ``vision_ln_pre`` (a LayerNorm before the blocks, OpenAI only);
  ``vision_proj`` (a bias-free projection after pooling; SigLIP has none, its width is the
  embedding);
- text tower: ``text_causal`` (causal mask, OpenAI; SigLIP's is bidirectional);
  ``text_pool`` ``"argmax"`` (the highest id is the end token: OpenAI's BPE), ``"eos"`` (the
  first position holding ``text_eos_id``: MetaCLIP 2's XLM-V) or ``"last"`` (the last
  position, SigLIP: texts are always padded to the full context); ``text_proj`` (false: the
  pooled feature is the embedding, as in SO400M-i18n); ``text_proj_bias``
  (projection is a Linear with bias, SigLIP); ``text_mlp_ratio``; ``text_activation``;
- both: ``activation`` (``quick_gelu``, ``gelu`` or ``gelu_tanh``), ``norm_eps``;
- scoring: ``scoring`` ``"softmax"`` (``logit_scale``·cos, probabilities over the labels) or
  ``"sigmoid"`` (``logit_scale``·cos + ``logit_bias``, each label its own probability:
  they do not sum to 1);
- ``preprocess``: the family's default image preprocessing (SigLIP: mean/std 0.5, squash), used
  when the weights do not say theirs;
- ``tokenizer``: ``{"kind": "openai-bpe"}`` (default), ``{"kind": "sentencepiece", "file":
  ...}`` or ``{"kind": "hf-json", "file": ...}`` with ``clean``, ``lower``, ``pad_id``,
  ``eos_id``, ``bos_id`` (see `clipforge.text.families`), ``{"kind": "wordpiece", "file": "vocab.txt",
  "strip_sep": true}`` (BERT's uncased WordPiece; ``strip_sep``: the ``[SEP]`` id becomes padding, CLIPA's
  rows), or ``{"kind": "hf-transformers",
  "class": ..., "file": ..., "extra_files": [...]}`` (transformers' own tokenizer class read from
  the hub repository's files: `clipforge.text.hf_tokenizer`);
- a transformers text tower (open_clip's XLM-R, RoBERTa, NLLB, mT5 towers; `clipforge.models.family_hf`):
  ``text_hf`` (the encoder's transformers config as data, with ``model_type``), ``text_pool``
  ``"mean"`` (over non-pad positions) or ``"cls"`` (position 0), ``text_proj_mlp`` (open_clip's MLP
  projection instead of one bias-free Linear). The OpenAI-named text fields (``transformer_width``,
  ``vocab_size``...) then describe that encoder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

FAMILY_DEFAULTS: dict[str, Any] = {
    "vision_pool": "class",
    "vision_patch_bias": False,
    "vision_ln_pre": True,
    "vision_proj": True,
    "text_causal": True,
    "text_pool": "argmax",
    "text_eos_id": None,
    "text_proj": True,
    "text_proj_bias": False,
    "text_mlp_ratio": 4.0,
    "text_activation": None,  # None: the same as `activation`
    "norm_eps": 1e-5,
    "scoring": "softmax",
    "tokenizer": None,  # None: OpenAI's BPE
    "preprocess": None,  # the family's image preprocessing (mean/std/interpolation/resize_mode); None: OpenAI's
    "text_hf": None,  # a transformers encoder's config (open_clip's HF text towers); None: clipforge's own tower
    "text_proj_mlp": False,  # the HF tower's projection is open_clip's MLP, not one Linear
    "languages": None,  # what the text tower was trained on, e.g. ["en", "multilingual"]; None: English
}
FAMILY_KEYS: tuple[str, ...] = tuple(FAMILY_DEFAULTS)
ALL_ACTIVATIONS = ("quick_gelu", "gelu", "gelu_tanh")
_CHOICES = {"vision_pool": ("class", "map", "avg"), "text_pool": ("argmax", "eos", "last", "mean", "cls"),
            "scoring": ("softmax", "sigmoid")}
_BOOLS = ("vision_patch_bias", "vision_ln_pre", "vision_proj", "text_causal", "text_proj", "text_proj_bias",
          "text_proj_mlp")
TOKENIZER_KINDS = ("openai-bpe", "sentencepiece", "hf-json", "hf-transformers", "wordpiece")
_TOKENIZER_FIELDS = {"kind", "file", "clean", "lower", "pad_id", "eos_id", "bos_id", "hub_repo", "add_eos",
                     "class", "extra_files", "strip_sep"}


# transformers encoder types a text tower may be (``text_hf.model_type``) -> (config field of the width,
# of the layer count, state-dict prefix of the layers, name of the token embedding)
_HF_TYPES: dict[str, tuple[str, str, str, str]] = {
    "xlm-roberta": ("hidden_size", "num_hidden_layers", "encoder.layer.", "embeddings.word_embeddings.weight"),
    "roberta": ("hidden_size", "num_hidden_layers", "encoder.layer.", "embeddings.word_embeddings.weight"),
    "m2m_100": ("d_model", "encoder_layers", "layers.", "embed_tokens.weight"),
    "mt5": ("d_model", "num_layers", "block.", "embed_tokens.weight"),
}
HF_MODEL_TYPES: tuple[str, ...] = tuple(_HF_TYPES)


def has_hf_text_keys(keys: Any) -> bool:
    """Whether state-dict `keys` hold a transformers text tower (``text.transformer.<its layers or
    embeddings>``; open_clip's own text towers are ``text.transformer.resblocks.*``)."""
    marks = tuple(f"text.transformer.{t[2]}" for t in _HF_TYPES.values()) + tuple(
        f"text.transformer.{t[3]}" for t in _HF_TYPES.values())
    return any(k.startswith(marks) for k in keys)


def hf_width(hf: Mapping[str, Any]) -> int:
    return int(hf[_HF_TYPES[str(hf["model_type"])][0]])


def hf_layers(hf: Mapping[str, Any]) -> int:
    return int(hf[_HF_TYPES[str(hf["model_type"])][1]])


def hf_layer_prefix(model_type: str) -> str:
    return _HF_TYPES[model_type][2]


def hf_embedding_key(model_type: str) -> str:
    return _HF_TYPES[model_type][3]


def is_family_config(config: Mapping[str, Any]) -> bool:
    """Whether `config` turns any knob away from OpenAI's shape (then `FamilyCLIP` builds it)."""
    return any(k in config and config[k] != FAMILY_DEFAULTS[k] for k in FAMILY_KEYS) or (
        config.get("activation") == "gelu_tanh")


def family_value(config: Mapping[str, Any], key: str) -> Any:
    return config.get(key, FAMILY_DEFAULTS[key])


def check_family_fields(config: Mapping[str, Any]) -> list[str]:
    """Problems with the family fields of `config`, each naming the field and the rule (empty: fine)."""
    errors: list[str] = []
    for key, choices in _CHOICES.items():
        if key in config and config[key] not in choices:
            errors.append(f"field {key!r} must be one of {', '.join(choices)}, got {config[key]!r}")
    for key in _BOOLS:
        if key in config and not isinstance(config[key], bool):
            errors.append(f"field {key!r} must be true or false, got {config[key]!r}")
    for key in ("text_activation",):
        if config.get(key) is not None and config[key] not in ALL_ACTIVATIONS:
            errors.append(f"field {key!r} must be one of {', '.join(ALL_ACTIVATIONS)}, got {config[key]!r}")
    languages = config.get("languages")
    if languages is not None and (not isinstance(languages, list | tuple) or not 0 < len(languages) <= 8 or not all(
            isinstance(x, str) and 0 < len(x) <= 16 for x in languages)):
        errors.append(f"field 'languages' must be a list of 1-8 language codes, got {languages!r}")
    eos = config.get("text_eos_id")
    if eos is not None and (isinstance(eos, bool) or not isinstance(eos, int) or eos < 0):
        errors.append(f"field 'text_eos_id' must be a non-negative integer, got {eos!r}")
    if config.get("text_pool") == "eos" and eos is None:
        errors.append("field 'text_pool' = 'eos' needs 'text_eos_id'")
    for key, low, high in (("text_mlp_ratio", 0.0, 64.0), ("norm_eps", 0.0, 1.0)):
        value = config.get(key, FAMILY_DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low < value <= high:
            errors.append(f"field {key!r} must be a number in ({low:g}, {high:g}], got {value!r}")
    if config.get("vision_proj") is False and config.get("embed_dim") != config.get("vision_width"):
        errors.append("field 'vision_proj' = false needs 'embed_dim' equal to 'vision_width'")
    if config.get("text_proj") is False and config.get("embed_dim") != config.get("transformer_width"):
        errors.append("field 'text_proj' = false needs 'embed_dim' equal to 'transformer_width'")
    errors += _check_hf_tower(config)
    pre = config.get("preprocess")
    if pre is not None and (not isinstance(pre, Mapping) or set(pre) - {"mean", "std", "interpolation", "resize_mode"}):
        errors.append("field 'preprocess' must be an object with mean, std, interpolation, resize_mode")
    tok = config.get("tokenizer")
    if tok is not None:
        if not isinstance(tok, Mapping) or tok.get("kind") not in TOKENIZER_KINDS:
            errors.append(f"field 'tokenizer' must be an object with kind one of {', '.join(TOKENIZER_KINDS)}")
        elif set(tok) - _TOKENIZER_FIELDS:
            errors.append(f"field 'tokenizer' has unknown key {sorted(set(tok) - _TOKENIZER_FIELDS)[0]!r}")
        elif tok["kind"] != "openai-bpe" and not (isinstance(tok.get("file"), str) and tok["file"]
                                                  and "/" not in tok["file"] and "\\" not in tok["file"]
                                                  and tok["file"] not in (".", "..")):
            errors.append("field 'tokenizer.file' must be a plain file name (no folders)")
        elif not all(_plain_name(f) for f in tok.get("extra_files", ())) or isinstance(tok.get("extra_files"), str):
            errors.append("field 'tokenizer.extra_files' must be a list of plain file names (no folders)")
        elif tok["kind"] == "hf-transformers" and not (isinstance(tok.get("class"), str)
                                                       and tok["class"].isidentifier()):
            errors.append("field 'tokenizer.class' must name a transformers tokenizer class")
        elif not isinstance(tok.get("strip_sep", False), bool):
            errors.append(f"field 'tokenizer.strip_sep' must be true or false, got {tok['strip_sep']!r}")
    return errors


def _plain_name(name: Any) -> bool:
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def _check_hf_tower(config: Mapping[str, Any]) -> list[str]:
    """A transformers text tower: a known encoder type, pooled by mean or first position, with a
    Linear or MLP projection; the other poolings belong to clipforge's own tower."""
    hf, pool = config.get("text_hf"), config.get("text_pool", FAMILY_DEFAULTS["text_pool"])
    if hf is None:
        if pool in ("mean", "cls"):
            return [f"field 'text_pool' = {pool!r} needs a transformers text tower ('text_hf')"]
        return []
    if not isinstance(hf, Mapping) or hf.get("model_type") not in HF_MODEL_TYPES:
        return [f"field 'text_hf' must be a transformers config with model_type one of {', '.join(HF_MODEL_TYPES)}"]
    if pool not in ("mean", "cls"):
        return ["field 'text_pool' must be 'mean' or 'cls' for a transformers text tower"]
    if config.get("text_proj") is False or config.get("text_proj_bias"):
        return ["a transformers text tower has a bias-free projection ('text_proj' true, 'text_proj_bias' false)"]
    return []
