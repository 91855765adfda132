"""Weight layouts of the families beyond OpenAI's shape, converted to clipforge's, both ways.

Two published layouts hold SigLIP / SigLIP 2 weights:

- open_clip's files (``open_clip_model.safetensors`` in ``timm/ViT-*-SigLIP*`` hub repos): the
  image tower is a timm ViT under ``visual.trunk.`` (fused ``attn.qkv``, ``norm1``/``norm2``,
  ``mlp.fc1``/``fc2``, ``attn_pool.{latent,q,kv,proj,norm,mlp}``, ``pos_embed`` [1, N, D]); the
  text tower is open_clip's under ``text.`` (OpenAI's block names, ``text_projection`` a Linear).
- transformers' ``SiglipModel`` folders (``vision_model.``/``text_model.``, separate q/k/v).

clipforge's layout (`clipforge.models.family`) keeps OpenAI's names and adds the MAP head
(``visual.attn_pool.*``), ``visual.conv1.bias`` and ``logit_bias``. Every conversion is a pure
renaming / concatenation of tensors, checked by round trips in the tests.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["from_hf_siglip", "has_hf_text_tower", "from_open_clip_siglip", "is_hf_siglip", "is_open_clip_siglip",
           "is_timm_layout", "siglip_hf_config", "timm_shapes", "to_clipforge_layout", "to_hf_siglip",
           "to_open_clip_siglip"]

_BLOCK = (("ln_1", "norm1"), ("ln_2", "norm2"), ("attn.out_proj", "attn.proj"), ("mlp.c_fc", "mlp.fc1"),
          ("mlp.c_proj", "mlp.fc2"))


def is_open_clip_siglip(sd: dict[str, Tensor]) -> bool:
    return "visual.trunk.attn_pool.latent" in sd


def has_hf_text_tower(sd: dict[str, Tensor]) -> bool:
    """open_clip's transformers text towers (XLM-R, RoBERTa, NLLB, mT5): ``text.transformer.*`` and
    ``text.proj.*``, the names clipforge keeps for them."""
    from clipforge.models.family_keys import has_hf_text_keys

    return has_hf_text_keys(sd)


def is_hf_siglip(sd: dict[str, Tensor]) -> bool:
    return "vision_model.head.probe" in sd


def is_timm_layout(sd: dict[str, Tensor]) -> bool:
    """open_clip's timm image tower (``visual.trunk.*``): the only one clipforge reads is SigLIP's, so a file
    in this layout lacking SigLIP's ``attn_pool.latent`` is told which tensor it lacks, in its own names (it
    was "not a CLIP checkpoint in OpenAI layout")."""
    return any(k.startswith("visual.trunk.") for k in sd)


def to_clipforge_layout(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict in any family layout clipforge knows (open_clip's timm-layout SigLIP,
    open_clip's ``text.``-prefixed custom text towers), in clipforge's; others pass unchanged
    (open_clip's transformers-tower files with a class-token ViT are clipforge's layout already).
    A timm-layout file with a tensor missing or one no SigLIP has is refused (`CheckpointFormatError`)."""
    if is_timm_layout(sd):
        return from_open_clip_siglip(sd)
    return sd


class _Reads(dict):  # type: ignore[type-arg]
    """A state dict that remembers the names read from it: what a converter left unread is a tensor the
    model would silently lose (an unmerged LoRA / adapter tensor: features that are not the user's model)."""

    def __init__(self, sd: dict[str, Tensor]) -> None:
        super().__init__(sd)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Tensor:
        self.read.add(key)
        return super().__getitem__(key)


def _ignorable(key: str) -> bool:
    """Buffers files carry that no model needs: ``attn_mask`` (open_clip's text tower), ``position_ids``."""
    return key.endswith(("attn_mask", "position_ids"))


def _converted(convert: Any, sd: dict[str, Tensor], what: str) -> dict[str, Tensor]:
    """`convert(sd)`, refused as one `CheckpointFormatError` line for a missing tensor or one left unread."""
    from clipforge.weights.errors import CheckpointFormatError

    reads = _Reads(sd)
    try:
        out = convert(reads)
    except KeyError as err:
        raise CheckpointFormatError(f"not a whole {what}: tensor {err.args[0]} is missing") from None
    extra = next((k for k in sd if k not in reads.read and not _ignorable(k)), None)
    if extra is not None:
        raise CheckpointFormatError(f"unexpected tensor {extra!r} in {with_article(what)}")
    return out


def with_article(what: str) -> str:
    return ("an " if what[:1].lower() in "aeiou" else "a ") + what


def _scalar(t: Tensor) -> Tensor:
    return t.reshape(())


OPEN_CLIP_SIGLIP = "open_clip SigLIP checkpoint (timm layout)"
HF_SIGLIP = "Hugging Face SiglipModel checkpoint"


def from_open_clip_siglip(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """open_clip's SigLIP (timm image tower, custom text tower) -> clipforge's layout; a missing tensor or one
    it has no place for is refused in one line naming it (`_converted`)."""
    return _converted(_from_open_clip_siglip, sd, OPEN_CLIP_SIGLIP)


def _from_open_clip_siglip(sd: _Reads) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    trunk = "visual.trunk."
    out["visual.conv1.weight"] = sd[trunk + "patch_embed.proj.weight"]
    if trunk + "patch_embed.proj.bias" in sd:
        out["visual.conv1.bias"] = sd[trunk + "patch_embed.proj.bias"]
    out["visual.positional_embedding"] = sd[trunk + "pos_embed"].reshape(-1, sd[trunk + "pos_embed"].shape[-1])
    blocks = sorted({int(k.split(".")[3]) for k in sd if k.startswith(trunk + "blocks.")})
    for i in blocks:
        src, dst = f"{trunk}blocks.{i}.", f"visual.transformer.resblocks.{i}."
        out[dst + "attn.in_proj_weight"] = sd[src + "attn.qkv.weight"]
        out[dst + "attn.in_proj_bias"] = sd[src + "attn.qkv.bias"]
        for ours, theirs in _BLOCK:
            for p in ("weight", "bias"):
                out[f"{dst}{ours}.{p}"] = sd[f"{src}{theirs}.{p}"]
    for p in ("weight", "bias"):
        out[f"visual.ln_post.{p}"] = sd[f"{trunk}norm.{p}"]
    pool = trunk + "attn_pool."
    out["visual.attn_pool.probe"] = sd[pool + "latent"]
    out["visual.attn_pool.attn.in_proj_weight"] = torch.cat([sd[pool + "q.weight"], sd[pool + "kv.weight"]])
    out["visual.attn_pool.attn.in_proj_bias"] = torch.cat([sd[pool + "q.bias"], sd[pool + "kv.bias"]])
    for ours, theirs in (("attn.out_proj", "proj"), ("ln", "norm"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
        for p in ("weight", "bias"):
            out[f"visual.attn_pool.{ours}.{p}"] = sd[f"{pool}{theirs}.{p}"]
    hf_text = has_hf_text_tower(sd)  # a transformers text tower keeps open_clip's names (`family_hf`)
    for key in list(sd):
        if key.startswith("text.") and not key.endswith("attn_mask"):
            out[key if hf_text else key[len("text."):]] = sd[key]
    out["logit_scale"] = _scalar(sd["logit_scale"])
    if "logit_bias" in sd:
        out["logit_bias"] = _scalar(sd["logit_bias"])
    return out


def to_open_clip_siglip(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """clipforge's SigLIP layout -> open_clip's (the inverse of `from_open_clip_siglip`)."""
    out: dict[str, Tensor] = {}
    trunk = "visual.trunk."
    width = sd["visual.conv1.weight"].shape[0]
    out[trunk + "patch_embed.proj.weight"] = sd["visual.conv1.weight"]
    if "visual.conv1.bias" in sd:
        out[trunk + "patch_embed.proj.bias"] = sd["visual.conv1.bias"]
    out[trunk + "pos_embed"] = sd["visual.positional_embedding"].unsqueeze(0)
    blocks = sorted({int(k.split(".")[3]) for k in sd if k.startswith("visual.transformer.resblocks.")})
    for i in blocks:
        src, dst = f"visual.transformer.resblocks.{i}.", f"{trunk}blocks.{i}."
        out[dst + "attn.qkv.weight"] = sd[src + "attn.in_proj_weight"]
        out[dst + "attn.qkv.bias"] = sd[src + "attn.in_proj_bias"]
        for ours, theirs in _BLOCK:
            for p in ("weight", "bias"):
                out[f"{dst}{theirs}.{p}"] = sd[f"{src}{ours}.{p}"]
    for p in ("weight", "bias"):
        out[f"{trunk}norm.{p}"] = sd[f"visual.ln_post.{p}"]
    pool = trunk + "attn_pool."
    out[pool + "latent"] = sd["visual.attn_pool.probe"]
    w, b = sd["visual.attn_pool.attn.in_proj_weight"], sd["visual.attn_pool.attn.in_proj_bias"]
    out[pool + "q.weight"], out[pool + "kv.weight"] = w[:width], w[width:]
    out[pool + "q.bias"], out[pool + "kv.bias"] = b[:width], b[width:]
    for ours, theirs in (("attn.out_proj", "proj"), ("ln", "norm"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
        for p in ("weight", "bias"):
            out[f"{pool}{theirs}.{p}"] = sd[f"visual.attn_pool.{ours}.{p}"]
    for key, value in sd.items():
        if not key.startswith("visual.") and key not in ("logit_scale", "logit_bias"):
            out[key if key.startswith("text.") else "text." + key] = value
    out["logit_scale"] = sd["logit_scale"]
    if "logit_bias" in sd:
        out["logit_bias"] = sd["logit_bias"]
    return out


def _hf_layers(sd: dict[str, Tensor], src_prefix: str, dst_prefix: str, out: dict[str, Tensor]) -> None:
    layers = sorted({int(k[len(src_prefix):].split(".")[0]) for k in sd if k.startswith(src_prefix)})
    for i in layers:
        s, d = f"{src_prefix}{i}.", f"{dst_prefix}{i}."
        for p in ("weight", "bias"):
            out[f"{d}attn.in_proj_{p}"] = torch.cat([sd[f"{s}self_attn.{n}_proj.{p}"] for n in ("q", "k", "v")])
            out[f"{d}attn.out_proj.{p}"] = sd[f"{s}self_attn.out_proj.{p}"]
            out[f"{d}ln_1.{p}"] = sd[f"{s}layer_norm1.{p}"]
            out[f"{d}ln_2.{p}"] = sd[f"{s}layer_norm2.{p}"]
            out[f"{d}mlp.c_fc.{p}"] = sd[f"{s}mlp.fc1.{p}"]
            out[f"{d}mlp.c_proj.{p}"] = sd[f"{s}mlp.fc2.{p}"]


def from_hf_siglip(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """transformers' ``SiglipModel`` state dict -> clipforge's layout; a missing tensor or one it has no place
    for is refused in one line naming it (`_converted`), as a CLIPModel folder's are."""
    return _converted(_from_hf_siglip, sd, HF_SIGLIP)


def _from_hf_siglip(sd: _Reads) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    v, t = "vision_model.", "text_model."
    out["visual.conv1.weight"] = sd[v + "embeddings.patch_embedding.weight"]
    out["visual.conv1.bias"] = sd[v + "embeddings.patch_embedding.bias"]
    out["visual.positional_embedding"] = sd[v + "embeddings.position_embedding.weight"]
    _hf_layers(sd, v + "encoder.layers.", "visual.transformer.resblocks.", out)
    for p in ("weight", "bias"):
        out[f"visual.ln_post.{p}"] = sd[f"{v}post_layernorm.{p}"]
        out[f"visual.attn_pool.attn.in_proj_{p}"] = sd[f"{v}head.attention.in_proj_{p}"]
        out[f"visual.attn_pool.attn.out_proj.{p}"] = sd[f"{v}head.attention.out_proj.{p}"]
        out[f"visual.attn_pool.ln.{p}"] = sd[f"{v}head.layernorm.{p}"]
        out[f"visual.attn_pool.mlp.c_fc.{p}"] = sd[f"{v}head.mlp.fc1.{p}"]
        out[f"visual.attn_pool.mlp.c_proj.{p}"] = sd[f"{v}head.mlp.fc2.{p}"]
        out[f"ln_final.{p}"] = sd[f"{t}final_layer_norm.{p}"]
        if f"{t}head.{p}" in sd:
            out[f"text_projection.{p}"] = sd[f"{t}head.{p}"]
    out["visual.attn_pool.probe"] = sd[v + "head.probe"]
    out["token_embedding.weight"] = sd[t + "embeddings.token_embedding.weight"]
    out["positional_embedding"] = sd[t + "embeddings.position_embedding.weight"]
    _hf_layers(sd, t + "encoder.layers.", "transformer.resblocks.", out)
    out["logit_scale"] = _scalar(sd["logit_scale"])
    out["logit_bias"] = _scalar(sd["logit_bias"])
    return out


def _to_hf_layers(sd: dict[str, Tensor], src_prefix: str, dst_prefix: str, out: dict[str, Tensor]) -> None:
    layers = sorted({int(k[len(src_prefix):].split(".")[0]) for k in sd if k.startswith(src_prefix)})
    for i in layers:
        s, d = f"{src_prefix}{i}.", f"{dst_prefix}{i}."
        for p in ("weight", "bias"):
            q, k, vv = sd[f"{s}attn.in_proj_{p}"].chunk(3)
            out[f"{d}self_attn.q_proj.{p}"], out[f"{d}self_attn.k_proj.{p}"] = q, k
            out[f"{d}self_attn.v_proj.{p}"] = vv
            out[f"{d}self_attn.out_proj.{p}"] = sd[f"{s}attn.out_proj.{p}"]
            out[f"{d}layer_norm1.{p}"] = sd[f"{s}ln_1.{p}"]
            out[f"{d}layer_norm2.{p}"] = sd[f"{s}ln_2.{p}"]
            out[f"{d}mlp.fc1.{p}"] = sd[f"{s}mlp.c_fc.{p}"]
            out[f"{d}mlp.fc2.{p}"] = sd[f"{s}mlp.c_proj.{p}"]


def to_hf_siglip(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """clipforge's SigLIP layout -> transformers' ``SiglipModel`` state dict."""
    out: dict[str, Tensor] = {}
    v, t = "vision_model.", "text_model."
    out[v + "embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    out[v + "embeddings.patch_embedding.bias"] = sd["visual.conv1.bias"]
    out[v + "embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    _to_hf_layers(sd, "visual.transformer.resblocks.", v + "encoder.layers.", out)
    for p in ("weight", "bias"):
        out[f"{v}post_layernorm.{p}"] = sd[f"visual.ln_post.{p}"]
        out[f"{v}head.attention.in_proj_{p}"] = sd[f"visual.attn_pool.attn.in_proj_{p}"]
        out[f"{v}head.attention.out_proj.{p}"] = sd[f"visual.attn_pool.attn.out_proj.{p}"]
        out[f"{v}head.layernorm.{p}"] = sd[f"visual.attn_pool.ln.{p}"]
        out[f"{v}head.mlp.fc1.{p}"] = sd[f"visual.attn_pool.mlp.c_fc.{p}"]
        out[f"{v}head.mlp.fc2.{p}"] = sd[f"visual.attn_pool.mlp.c_proj.{p}"]
        out[f"{t}final_layer_norm.{p}"] = sd[f"ln_final.{p}"]
        out[f"{t}head.{p}"] = sd[f"text_projection.{p}"]
    out[v + "head.probe"] = sd["visual.attn_pool.probe"]
    out[t + "embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    out[t + "embeddings.position_embedding.weight"] = sd["positional_embedding"]
    _to_hf_layers(sd, "transformer.resblocks.", t + "encoder.layers.", out)
    out["logit_scale"] = sd["logit_scale"].reshape(1)
    out["logit_bias"] = sd["logit_bias"].reshape(1)
    return out


def siglip_hf_config(config: dict[str, Any]) -> dict[str, Any]:
    """transformers' ``SiglipConfig`` dict for a clipforge SigLIP config (the architecture only)."""
    from clipforge.models.configs import mlp_width, vision_heads

    width = int(config["transformer_width"])
    act = {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu"}
    text_act = act[str(config.get("text_activation") or config.get("activation", "gelu_tanh"))]
    eps = float(config.get("norm_eps", 1e-6))
    return {
        "model_type": "siglip", "architectures": ["SiglipModel"],
        "text_config": {
            "vocab_size": int(config["vocab_size"]), "hidden_size": width,
            "intermediate_size": round(width * float(config.get("text_mlp_ratio", 4.0))),
            "num_hidden_layers": int(config["transformer_layers"]),
            "num_attention_heads": int(config["transformer_heads"]),
            "max_position_embeddings": int(config["context_length"]), "hidden_act": text_act,
            "layer_norm_eps": eps, "projection_size": int(config["embed_dim"]), "pad_token_id": 1,
            "bos_token_id": 1, "eos_token_id": 1},
        "vision_config": {
            "hidden_size": int(config["vision_width"]), "intermediate_size": mlp_width(config),
            "num_hidden_layers": int(config["vision_layers"]), "num_attention_heads": vision_heads(config),
            "image_size": int(config["image_resolution"]), "patch_size": int(config["vision_patch_size"]),
            "hidden_act": act[str(config.get("activation", "gelu_tanh"))], "layer_norm_eps": eps,
            "num_channels": 3},
    }


def timm_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of `arch`'s weights in open_clip's timm layout (built on the meta device: no
    memory), for refusing a file of that layout in its own names (``ARCH:PATH``, as ``cn-ARCH:PATH`` is)."""
    from clipforge.models import create_model_from_config, get_config

    with torch.device("meta"):
        ours = create_model_from_config(get_config(arch)).state_dict()
    params = {k: v for k, v in ours.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    return {k: tuple(v.shape) for k, v in to_open_clip_siglip(params).items() if not _ignorable(k)}


def check_timm_file(sd: dict[str, Tensor], arch: str, where: str) -> None:
    """Refuse (`check_shapes`' line) a timm-layout file whose tensors are not exactly `arch`'s, named as the
    file names them: a missing one was "not a CLIP checkpoint in OpenAI layout", a mis-shaped one torch's
    load_state_dict message about a tensor the file does not have."""
    from clipforge.models.configs import ARCH_CONFIGS, canonical_name
    from clipforge.weights.errors import check_shapes

    if ARCH_CONFIGS.get(canonical_name(arch), {}).get("vision_pool") != "map":
        return  # no timm form (not SigLIP's image tower): the layout conversion and the build say what is wrong
    check_shapes(where, arch, {k: v for k, v in sd.items() if not _ignorable(k)}, timm_shapes(arch))
