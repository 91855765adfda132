"""The image preprocessing a Hugging Face folder records, as clipforge's preprocessing config.

Read from ``preprocessor_config.json``, or, when a folder has none, from the ``"image_processor"`` object of
``processor_config.json`` (what transformers 5's ``Processor.save_pretrained`` writes). Both were once read
for mean/std/resample only (and ``processor_config.json`` not at all): a SigLIP folder was resized
shortest-side + centre-cropped where transformers, open_clip and big_vision squash it straight to H x W
(feature cosine 0.93 to transformers' on the same weights), and a folder with only ``processor_config.json``
was normalised with OpenAI's mean/std (cosine 0.78).

The fields, as transformers' image processors read them:

- ``size`` ``{"height": H, "width": W}`` (SigLIP's): resize straight to H x W (``resize_mode`` squash);
  ``{"shortest_edge": N}`` + ``do_center_crop`` + ``crop_size`` (CLIP's): resize the shortest side, crop
  the centre (``shortest``). A bare number is the processor class's reading (SigLIP: square, CLIP: shortest).
  transformers cuts that crop at ``(size - crop) // 2`` where torchvision (OpenAI's and open_clip's
  reference) rounds half to even, so such a config says ``crop_offset: "floor"``: 1 px apart on 124 of the
  1,000 ImageNet sample photos at 224, image features 2% apart.
- ``image_mean`` / ``image_std`` (``do_normalize`` false: 0 / 1), ``resample`` (PIL's 2 bilinear, 3 bicubic).
- A missing field takes the value of the class ``image_processor_type`` names (transformers' defaults), else
  the family's (`default`).

What clipforge cannot reproduce exactly (a non-square output, a crop smaller than the resize, a size other
than the model's, no resize, a rescale other than 1/255) is refused in one line naming the file and the field.
A SigLIP image tower takes any size that gives its patch grid (``size // patch``): the model is then built at the
processor's size (`read_hf_image_processor`), e.g. so400m-patch14-384's 384, whose 27 x 27 grid covers 378.
``ChineseCLIPImageProcessor`` reads as CLIP's (its defaults are: shortest side + centre crop).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from clipforge.weights.errors import CONFIG_LIMIT, CheckpointFormatError, json_value, member
from clipforge.weights.preprocess_cfg import DEFAULT_PREPROCESS, PreprocessConfigError, validate_preprocess

__all__ = ["image_processor_fields", "read_hf_image_processor", "read_hf_preprocess"]

_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's codes, as transformers' image processors store them
_SIGLIP = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "resize_mode": "squash"}


def _processor_class(raw: dict[str, Any]) -> str:
    """The class a config names (older CLIP folders on the hub say ``feature_extractor_type``)."""
    return str(raw.get("image_processor_type") or raw.get("feature_extractor_type") or "")


def _class_defaults(raw: dict[str, Any], default: dict[str, Any] | None) -> dict[str, Any]:
    kind = _processor_class(raw)
    if kind.startswith("Siglip"):
        return dict(_SIGLIP)
    if kind.startswith(("CLIP", "ChineseCLIP")):  # ChineseCLIPImageProcessor's defaults are CLIP's
        return dict(DEFAULT_PREPROCESS)
    return dict(default or DEFAULT_PREPROCESS)


def _square(value: Any, field: str) -> int:
    """The side of a square ``{"height": n, "width": n}`` (or a bare n), else `PreprocessConfigError`."""
    if isinstance(value, int) and not isinstance(value, bool):
        side = value
    elif isinstance(value, dict) and set(value) >= {"height", "width"} and value["height"] == value["width"]:
        side = value["height"]
    else:
        raise PreprocessConfigError(f"field {field!r} = {value!r} is not a square size: clipforge's models take "
                                    "square images ({\"height\": n, \"width\": n})")
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise PreprocessConfigError(f"field {field!r} = {value!r} must give a positive whole number of pixels")
    return side


def _geometry(raw: dict[str, Any], cfg: dict[str, Any]) -> int | None:
    """Set `cfg`'s resize mode from ``size`` / ``do_center_crop`` / ``crop_size``; the output side (None when
    the file leaves the size to its class's default)."""
    if raw.get("do_resize", True) is not True:
        raise PreprocessConfigError("field 'do_resize' is false: clipforge always resizes to the model's size")
    size = raw.get("size")
    if size is None:
        return None
    siglip = _processor_class(raw).startswith("Siglip")
    crop = raw.get("do_center_crop", not siglip) is True
    if isinstance(size, dict) and "shortest_edge" in size or (isinstance(size, int) and not siglip):
        edge = size["shortest_edge"] if isinstance(size, dict) else size
        if not crop:
            raise PreprocessConfigError(f"field 'size' = {size!r} without 'do_center_crop' gives a non-square image")
        side = _square(raw.get("crop_size", edge), "crop_size")
        if edge != side:
            raise PreprocessConfigError(f"fields 'size' = {size!r} and 'crop_size' = {raw.get('crop_size')!r} "
                                        "differ: clipforge resizes the shortest side to the crop size")
        cfg["resize_mode"] = "shortest"
        return side
    side = _square(size, "size")
    if crop and "crop_size" in raw and _square(raw["crop_size"], "crop_size") != side:
        raise PreprocessConfigError(f"fields 'size' = {size!r} and 'crop_size' = {raw['crop_size']!r} differ: "
                                    "clipforge squashes to the model's size without a crop")
    cfg["resize_mode"] = "squash"
    return side


def image_processor_fields(raw: Any, image_size: int | None = None,
                           default: dict[str, Any] | None = None) -> dict[str, Any]:
    """An image processor's JSON object -> clipforge's checked preprocessing config (see the module docstring);
    `image_size`: the model's, which the resize must reach. Raises `PreprocessConfigError` naming the field."""
    return _fields(raw, image_size, default)[0]


def _fields(raw: Any, image_size: int | None, default: dict[str, Any] | None,
            patch: int | None = None) -> tuple[dict[str, Any], int | None]:
    """`image_processor_fields` and the side the file resizes to (None: left to the class). `patch`: the side
    may differ from `image_size` while it gives the same patch grid (``side // patch``)."""
    if not isinstance(raw, dict):
        raise PreprocessConfigError("not a JSON object")
    cfg = _class_defaults(raw, default)
    if raw.get("do_normalize", True) is True:
        cfg.update({k: raw[f"image_{k}"] for k in ("mean", "std") if f"image_{k}" in raw})
    else:
        cfg.update(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    if "resample" in raw:
        cfg["interpolation"] = _RESAMPLE.get(raw["resample"], f"PIL code {raw['resample']!r}")
    factor = raw.get("rescale_factor", 1 / 255)
    if raw.get("do_rescale", True) is not True or isinstance(factor, bool) or not isinstance(factor, (int, float)) \
            or not math.isclose(factor, 1 / 255, rel_tol=1e-6):
        raise PreprocessConfigError(f"fields 'do_rescale' / 'rescale_factor' = {raw.get('do_rescale', True)!r} / "
                                    f"{factor!r}: clipforge scales pixels by 1/255")
    side = _geometry(raw, cfg)
    if cfg["resize_mode"] == "shortest":  # transformers' center_crop, not torchvision's CenterCrop
        cfg["crop_offset"] = "floor"
    if side is not None and image_size is not None and side != image_size and (
            not patch or side // patch != image_size // patch):
        raise PreprocessConfigError(f"field 'size' gives {side} x {side} images, but the model takes "
                                    f"{image_size} x {image_size}")
    return validate_preprocess(cfg), side


def _load_json(path: Path) -> Any:
    """An image processor config's JSON, at most `CONFIG_LIMIT` (1 MB) read: real ones are under 1 KB."""
    return json_value(path, CONFIG_LIMIT, "is not a usable image processor config")


def read_hf_preprocess(directory: str | Path, image_size: int | None = None,
                       default: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The preprocessing a folder's ``preprocessor_config.json`` (else ``processor_config.json``'s
    ``"image_processor"``) records, checked against the model's `image_size`; None when the folder has neither.
    `default`: the family's preprocessing, for fields the file leaves out when its class is not named."""
    found = read_hf_image_processor(directory, image_size, default)
    return None if found is None else found[0]


def read_hf_image_processor(directory: str | Path, image_size: int | None = None,
                            default: dict[str, Any] | None = None,
                            patch: int | None = None) -> tuple[dict[str, Any], int | None] | None:
    """`read_hf_preprocess`, and the side the file resizes images to (None when it leaves that to its class).

    `patch`: a model whose position grid the patch convolution fills by flooring (SigLIP's image tower): a side
    is then the model's when ``side // patch == image_size // patch``, and the caller builds the model at that
    side, the pixels transformers feeds (google/siglip-so400m-patch14-384: 384, its 27 x 27 grid covering 378)."""
    directory = Path(directory)
    path, where = directory / "preprocessor_config.json", ""
    if member(path):  # a FIFO or a device is named, not passed over for the defaults
        raw = _load_json(path)
    else:
        path, where = directory / "processor_config.json", "image_processor."
        if not member(path):
            return None
        outer = _load_json(path)
        raw = outer.get("image_processor") if isinstance(outer, dict) else None
        if raw is None:
            return None  # a processor without an image processor (tokenizer only)
    try:
        return _fields(raw, image_size, default, patch)
    except (PreprocessConfigError, ValueError) as err:
        said = str(err).replace("field '", f"field '{where}").replace("fields '", f"fields '{where}")
        raise CheckpointFormatError(f"{path} is not a usable image processor config: {said}") from None
