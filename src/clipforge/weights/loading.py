"""One entry point that reads any supported checkpoint into an OpenAI-layout fp32 state dict.

Formats are recognised by content, not by file extension (people rename files):

- a directory with ``config.json``: a Hugging Face ``CLIPModel`` checkpoint, converted; or clipforge's own
  model folder (a shipped model's, copied: ``model.safetensors`` carrying its config), read as that file;
- a zip with ``<root>/data.pkl`` and TorchScript code: an OpenAI JIT archive, read by the
  restricted reader in `clipforge.weights.torchscript` (nothing is executed);
- any other zip or a legacy pickle: ``torch.load(weights_only=True)``;
- a safetensors header: safetensors, with the config `save_safetensors` stored in its metadata.

Whatever the source, the result has OpenAI's parameter names (``module.`` / ``_orig_mod.``
prefixes removed, ``{"state_dict": ...}`` wrappers opened) and floating tensors in fp32:
half-precision matmuls are very slow on CPUs, and fp32 is what parity is measured in.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipforge.weights.errors import CheckpointFormatError, check_shapes
from clipforge.weights.layout import canonical_order
from clipforge.weights.safetensors_file import PREFIXES as _PREFIXES
from clipforge.weights.safetensors_file import read_safetensors_parts
from clipforge.weights.torch_pickle import (
    LEGACY_HEAD,
    ZIP_HEADS,
    read_torch_file,
    torch_load_safely,
    unwrap,
)

__all__ = ["Checkpoint", "check_architecture", "load_checkpoint", "load_state_dict", "torch_load_safely"]

PREPROCESS_FIELD = "__preprocess__"  # carries a file's preprocessing from the reader to `load_checkpoint`
_NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass
class Checkpoint:
    """A loaded checkpoint: OpenAI-layout fp32 tensors plus the config when the file carries one.

    `config` is set for files written by `save_safetensors` and for Hugging Face directories
    (head counts cannot be read from shapes); otherwise it is None and
    `clipforge.models.build_model` infers the architecture from shapes.
    """

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any] | None
    format: str
    path: Path
    preprocess: dict[str, Any] | None = None
    skipped: frozenset[str] = frozenset()  # names `load_checkpoint(skip=...)` did not read: shape-only stand-ins

    @property
    def activation_known(self) -> bool:
        """Whether the file says which MLP activation its weights need. Plain state dicts do
        not (`clipforge.weights.zoo.checkpoint_config` then assumes one and says so)."""
        return self.config is not None

    def __iter__(self) -> Iterator[Any]:
        """Unpacks as ``state_dict, config = load_checkpoint(path)``, the pair `build_model` takes."""
        return iter((self.state_dict, self.config))


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 0 < header_len <= size - 8 and head[8:9] == b"{"


def _strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if state_dict and all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
                changed = True
    return state_dict


def _is_hf_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("text_model.", "vision_model.")) for k in state_dict)


def _to_fp32(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v
            for k, v in state_dict.items() if k not in _NON_PARAMETER_KEYS}


def _own_model_file(folder: Path) -> Path | None:
    """The ``model.safetensors`` of a clipforge model folder (its metadata holds the config `save_safetensors`
    writes: a shipped model's folder, copied or downloaded), else None (a Hugging Face folder, anything else)."""
    from safetensors import SafetensorError, safe_open

    from clipforge.weights.damaged import safetensors_refusal, too_many_tensors
    from clipforge.weights.errors import member
    from clipforge.weights.save import CONFIG_KEY

    file = folder / "model.safetensors"
    if not member(file):  # a FIFO or a device is named here, not taken for a missing file
        return None
    if (refusal := safetensors_refusal(file)) is not None:  # refused here, not parsed here and again below
        raise CheckpointFormatError(refusal)
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
            refusal = too_many_tensors(file, len(handle.keys()))  # a header that hid its count from the bytes
    except (OSError, SafetensorError):
        return None  # the Hugging Face reader names what is wrong with it
    if refusal is not None:
        raise CheckpointFormatError(refusal)
    return file if CONFIG_KEY in metadata else None


def _read_raw(path: Path, skip: Callable[[str], bool] | None = None
              ) -> tuple[Any, dict[str, Any] | None, str, frozenset[str]]:
    from clipforge.weights.hf import read_hf_directory
    from clipforge.weights.save import config_from_metadata, preprocess_from_metadata
    from clipforge.weights.torchscript import check_zip_sizes

    if path.is_dir():
        own = _own_model_file(path)
        if own is not None:  # a copy of a shipped model's folder was read as a Hugging Face one and refused
            return _read_raw(own, skip)
        raw, hf_config = read_hf_directory(path)
        return raw, hf_config, "huggingface", frozenset()
    if path.is_file():
        check_zip_sizes(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_file():  # a FIFO blocked the read below for ever; a device is no checkpoint either
        raise CheckpointFormatError(f"{path} is not a regular file (a FIFO, socket or device): expected a checkpoint "
                                    "file or a Hugging Face folder")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(ZIP_HEADS):
        raw, fmt = read_torch_file(path)
        return raw, None, fmt, frozenset()
    if _looks_like_safetensors(head, size):
        tensors, metadata, skipped = read_safetensors_parts(path, skip)
        config = config_from_metadata(metadata, path)
        preprocess = preprocess_from_metadata(metadata, path)
        if preprocess is not None and config is not None:
            config = {**config, PREPROCESS_FIELD: preprocess}
        return tensors, config, "safetensors", skipped
    from clipforge.weights.damaged import damage_of

    if head.startswith(LEGACY_HEAD):  # pickle protocol >= 2: torch.save's legacy (pre-zip) format
        # first, even when the head also reads as a cut safetensors header: a pickle can be built to look like
        # one, and only the unpickler's refusal names the forbidden global; a real cut safetensors comes back
        # from `torch_load_safely` named as cut short (`clipforge.weights.damaged`)
        return torch_load_safely(path), None, "torch", frozenset()
    if (damage := damage_of(path)) is not None:  # includes a safetensors file cut short
        raise CheckpointFormatError(damage)
    raise CheckpointFormatError(
        f"{path} is not a checkpoint format clipforge reads: expected a PyTorch state dict "
        "(.pt/.pth/.bin), a .safetensors file, an OpenAI TorchScript archive, or a Hugging Face "
        "CLIPModel directory (config.json + model.safetensors)")


def load_checkpoint(path: str | os.PathLike[str], skip: Callable[[str], bool] | None = None, *,
                    ordered: bool = True, arch: str | None = None) -> Checkpoint:
    """Read any supported checkpoint; see the module docstring for the formats.

    `skip(name)` (OpenAI-layout names) marks tensors not to read, e.g. the image tower for a text
    search: a safetensors file in clipforge's layout leaves their bytes on disk and puts a
    shape-only `stand_in` in their place (listed in `Checkpoint.skipped`); other formats and
    layouts are read whole (`skipped` empty). `ordered=False` leaves a safetensors file's keys in
    its (sorted) order instead of the model's: for a caller that builds the model and assigns by
    name (`clipforge.api.load_model`), which then skips building a model skeleton just for the order.
    `arch`: the architecture the user named for the file (``ARCH:PATH``); a file in open_clip's timm layout
    is then checked against it in its own tensor names before conversion (`family_layouts.check_timm_file`).
    """
    path = Path(path).expanduser()
    raw, config, fmt, skipped = _read_raw(path, skip)
    try:
        return _convert(path, raw, config, fmt, skipped, ordered, arch)
    except CheckpointFormatError as err:  # the layout converters' lines name a tensor or a field, not the file
        if str(path) in str(err):
            raise
        raise CheckpointFormatError(f"{path}: {err}") from None


def _convert(path: Path, raw: Any, config: dict[str, Any] | None, fmt: str, skipped: frozenset[str],
             ordered: bool, arch: str | None = None) -> Checkpoint:
    """`load_checkpoint`'s second half: what `_read_raw` read, in OpenAI's layout, fp32."""
    from clipforge.weights.hf import from_hf

    if fmt == "huggingface":
        hf_config = config
        state_dict, config = from_hf(unwrap(raw, path), hf_config)
        if config.get("scoring") == "sigmoid" and not config.get("tokenizer"):  # a SiglipModel folder
            from clipforge.weights.hf_siglip_folder import folder_languages, folder_tokenizer

            config["tokenizer"] = folder_tokenizer(path, hf_config, config.get("vocab_size"))
            if languages := folder_languages(path, config.get("vocab_size")):  # SigLIP 2: no "en only" notice
                config["languages"] = languages
    else:
        state_dict = _strip_prefixes(unwrap(raw, path))
        from clipforge.weights.family_layouts import check_timm_file, is_timm_layout, to_clipforge_layout

        if arch is not None and is_timm_layout(state_dict):  # said in the file's names, not in converted ones
            check_timm_file(state_dict, arch, str(path))
        state_dict = to_clipforge_layout(state_dict)  # open_clip's timm-layout SigLIP files
        if _is_hf_layout(state_dict):
            state_dict, hf_config = from_hf(state_dict, None)
            config = config or hf_config
    preprocess = config.pop(PREPROCESS_FIELD, None) if config else None
    if fmt == "huggingface":  # size/crop/mean/std/resample as transformers reads them; else the family's
        preprocess = _hf_preprocess(path, config)
    if fmt == "torchscript" and "text_projection" in state_dict:  # OpenAI's archives: QuickGELU, always
        from clipforge.models import config_from_state_dict

        try:
            config = {**config_from_state_dict(_to_fp32(state_dict)), "activation": "quick_gelu"}
        except (ValueError, KeyError, IndexError):
            config = None  # not a CLIP: build_model says so
    if fmt == "safetensors" and ordered:  # safetensors stores keys sorted by name
        state_dict = canonical_order(state_dict, config)
    return Checkpoint(state_dict=_to_fp32(state_dict), config=config, format=fmt, path=path, preprocess=preprocess,
                      skipped=skipped)


def _hf_preprocess(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """A Hugging Face folder's image processor (`hf_preprocess.read_hf_image_processor`). A SigLIP image tower
    (``vision_pool`` map) takes any side that gives its patch grid: the model is built at the side the processor
    resizes to, what transformers feeds (so400m-patch14-384's 384, whose 27 x 27 grid covers 378)."""
    from clipforge.weights.hf_preprocess import read_hf_image_processor

    family = None
    if config.get("scoring") == "sigmoid":
        from clipforge.models.family_configs import SIGLIP_PREPROCESS

        family = dict(SIGLIP_PREPROCESS)
    patch = config.get("vision_patch_size") if config.get("vision_pool") == "map" else None
    found = read_hf_image_processor(path, config.get("image_resolution"), family, patch)
    if found is None:
        return family
    preprocess, side = found
    if patch and side is not None:
        config["image_resolution"] = side
    return preprocess


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """OpenAI-layout, fp32 state dict from any supported checkpoint file or HF directory."""
    return load_checkpoint(path).state_dict


def check_architecture(path: str | os.PathLike[str], arch: str) -> None:
    """Refuse a file whose tensors are not exactly those of architecture `arch` (names and shapes).

    Downloads without a full pinned sha256 pass through here before they are cached under a
    registry name, so a mirror cannot make a 7 M-parameter model answer to ``ViT-B/32``. The
    architecture is built on the meta device: no memory for its weights.
    """
    from clipforge.models import create_model_from_config, get_config

    if arch.startswith("cn-"):  # Chinese-CLIP: cn_clip's own layout and constructor
        from clipforge.weights.cn_clip import check_cn_architecture

        return check_cn_architecture(path, arch)
    got = load_checkpoint(path).state_dict
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in create_model_from_config(get_config(arch)).state_dict().items()
                    if k not in _NON_PARAMETER_KEYS}
    check_shapes(Path(path).name, arch, got, expected)
