"""A transformers folder's ``config.json`` sizes, checked against its tensors (CLIPModel, SiglipModel and
ChineseCLIPModel folders: one check, a table of which tensor holds each size per model type).

The tensors decide what clipforge builds, so a config.json that disagrees with them changed nothing, and went
unnoticed: a CLIP folder with 100,000 text layers, patch size 0, image size 1e6 or a vocabulary of 10 recorded
loaded without a word, where transformers refuses it ("mismatched sizes"). Every size the file records is compared
with what the tensors say, and a mismatch is one line naming the field, its value and the tensors' value; a value
that is not a finite number is refused as such. A field the file leaves out is not checked: transformers' default
for it is no fact about these weights, and real folders leave out what equals the default; so is a tower object
the file leaves out or leaves empty (``{"model_type": "clip"}`` loads in transformers and in earlier releases).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from clipforge.weights.errors import CheckpointFormatError
from clipforge.weights.torch_pickle import brief

__all__ = ["CLIP_SIZES", "CN_CLIP_SIZES", "SIGLIP_SIZES", "check_config_sizes", "config_number", "field_name",
           "tower_config"]

Sizes = dict[tuple[str, str], tuple[str, int | None]]
"""(section, field) -> (the tensor that has that size, its dimension); section "" is the top level. A dimension
of None: the field is the number of layers numbered under that name prefix."""

SIGLIP_SIZES: Sizes = {
    ("text", "num_hidden_layers"): ("text_model.encoder.layers.", None),
    ("vision", "num_hidden_layers"): ("vision_model.encoder.layers.", None),
    ("text", "vocab_size"): ("text_model.embeddings.token_embedding.weight", 0),
    ("text", "hidden_size"): ("text_model.embeddings.token_embedding.weight", 1),
    ("text", "intermediate_size"): ("text_model.encoder.layers.0.mlp.fc1.weight", 0),
    ("text", "max_position_embeddings"): ("text_model.embeddings.position_embedding.weight", 0),
    ("text", "projection_size"): ("text_model.head.weight", 0),
    ("vision", "hidden_size"): ("vision_model.embeddings.patch_embedding.weight", 0),
    ("vision", "num_channels"): ("vision_model.embeddings.patch_embedding.weight", 1),
    ("vision", "patch_size"): ("vision_model.embeddings.patch_embedding.weight", 3),
    ("vision", "intermediate_size"): ("vision_model.encoder.layers.0.mlp.fc1.weight", 0),
}

CLIP_SIZES: Sizes = {
    **{key: value for key, value in SIGLIP_SIZES.items() if key != ("text", "projection_size")},
    # CLIPModel's projections are the top level's projection_dim; the towers' own `projection_dim` is read only by
    # the *WithProjection classes, and real folders carry transformers' default 512 there: not compared
    ("", "projection_dim"): ("visual_projection.weight", 0),
}

CN_CLIP_SIZES: Sizes = {  # ChineseCLIPModel: a BERT text tower beside CLIP's vision tower and projections
    **{key: value for key, value in CLIP_SIZES.items() if key[0] != "text"},
    ("text", "vocab_size"): ("text_model.embeddings.word_embeddings.weight", 0),
    ("text", "hidden_size"): ("text_model.embeddings.word_embeddings.weight", 1),
    ("text", "max_position_embeddings"): ("text_model.embeddings.position_embeddings.weight", 0),
    ("text", "type_vocab_size"): ("text_model.embeddings.token_type_embeddings.weight", 0),
    ("text", "intermediate_size"): ("text_model.encoder.layer.0.intermediate.dense.weight", 0),
    ("text", "num_hidden_layers"): ("text_model.encoder.layer.", None),
}


def field_name(section: str, key: str) -> str:
    """How config.json spells the field: ``text_config.vocab_size``, ``text_config_dict.hidden_size``,
    ``projection_dim``."""
    return f"{section}.{key}" if section else key


def config_number(sub: dict[str, Any], key: str, default: Any, label: str) -> Any:
    """``sub[key]`` (`default` when absent) as a finite number, or the line naming config.json's field `label`.`key`
    (a string "128", NaN and infinity are not sizes)."""
    value = sub.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CheckpointFormatError(f"config.json field '{field_name(label, key)}' must be a finite number, "
                                    f"got {brief(value)}")
    return value


def tower_config(hf_config: dict[str, Any], tower: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``<tower>_config`` object of `hf_config` with transformers' ``<tower>_config_dict`` override applied
    (older CLIP folders carry both: the override wins, as in ``CLIPConfig``), and each field's section name, for
    the line that names it. Neither there, or both empty: ``{}``, nothing to compare (the tensors decide; this was
    refused as "no 'text_config' object", also for an empty one, where transformers loads the folder)."""
    main, override = hf_config.get(f"{tower}_config"), hf_config.get(f"{tower}_config_dict")
    for name, part in ((f"{tower}_config", main), (f"{tower}_config_dict", override)):
        if part is not None and not isinstance(part, dict):
            raise CheckpointFormatError(f"config.json field '{name}' must be a JSON object, got {type(part).__name__}")
    main, override = main or {}, override or {}
    return {**main, **override}, {key: f"{tower}_config_dict" if key in override else f"{tower}_config"
                                  for key in {**main, **override}}


def _layers(sd: dict[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def check_config_sizes(sd: dict[str, Tensor], text: dict[str, Any], vision: dict[str, Any], *,
                       sizes: Sizes = SIGLIP_SIZES, top: dict[str, Any] | None = None, class_token: bool = False,
                       sections: dict[str, dict[str, str]] | None = None) -> int | None:
    """Refuse a config.json whose sizes contradict the transformers-layout tensors `sd`, naming the field; fields
    the file leaves out are not checked. Returns ``vision_config.image_size`` (checked), or None when the file
    leaves it out. `sizes`: which tensor dimension each field is (`SIGLIP_SIZES`, `CLIP_SIZES`, `CN_CLIP_SIZES`);
    `top`: the
    top-level object (its fields in `sizes` under section ""); `class_token`: the image tower's position table
    starts with a class token (CLIP's); `sections`: a tower's field -> the section it came from (`tower_config`).

    The image size fits the n x n position grid when ``image_size // patch_size == n``: the patch convolution
    drops what is left over, so google/siglip-so400m-patch14-384's 27 x 27 positions take 384-pixel images (the
    last 6 rows and columns unread), as transformers, open_clip and the registry's ViT-SO400M-14-SigLIP-384
    feed them (it was refused, "cover 378 pixels")."""
    subs = {"text": text, "vision": vision, "": top or {}}
    sections = sections or {}

    def label(tower: str, key: str) -> str:
        return sections.get(tower, {}).get(key, f"{tower}_config" if tower else "")

    found: dict[tuple[str, str], tuple[int, str]] = {}
    for (tower, key), (name, dim) in sizes.items():
        if dim is None:
            count = _layers(sd, name)
            found[tower, key] = count, f"the weights have {count} {tower} layers"
        elif name in sd and sd[name].dim() > dim:
            found[tower, key] = int(sd[name].shape[dim]), f"{name} has {int(sd[name].shape[dim])}"
    for (tower, key), (size, said) in found.items():
        sub = subs[tower]
        if key in sub and config_number(sub, key, size, label(tower, key)) != size:
            raise CheckpointFormatError(f"config.json field '{field_name(label(tower, key), key)}' = "
                                        f"{brief(sub[key])} contradicts the tensors: {said}")
    if "image_size" not in vision:
        return None
    size = config_number(vision, "image_size", 0, label("vision", "image_size"))
    positions, patch = sd.get("vision_model.embeddings.position_embedding.weight"), found.get(("vision", "patch_size"))
    if positions is None or patch is None or patch[0] < 1:
        return None  # no grid to check it against: the layout converter has said what is missing
    grid = round(max(positions.shape[0] - int(class_token), 0) ** 0.5)
    if isinstance(size, float) and not size.is_integer() or int(size) // patch[0] != grid:
        raise CheckpointFormatError(f"config.json field '{field_name(label('vision', 'image_size'), 'image_size')}' "
                                    f"= {brief(size)} contradicts the tensors: the {positions.shape[0]} position "
                                    f"embeddings of patch {patch[0]} cover {grid * patch[0]} pixels")
    return int(size)
