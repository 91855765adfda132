"""The one reader of safetensors weights: files, Hugging Face and ChineseCLIPModel folders' weights and shards.

Its own module so that the generic loader (`clipforge.weights.loading`), the folder readers (`clipforge.weights.hf`,
`clipforge.weights.cn_clip`) and Chinese-CLIP's ``cn-ARCH:PATH`` form read safetensors one way without importing
each other: the folder readers had their own ``load_file`` calls, which read every tensor of a header listing
900,000 before anything was checked. Before safetensors parses a header, `damaged.safetensors_refusal` refuses a
file that is no regular file or lists more tensors than any CLIP; after, the names it lists are counted again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from clipforge.weights.errors import CheckpointFormatError

__all__ = ["PREFIXES", "read_safetensors", "read_safetensors_parts", "stand_in"]

PREFIXES = ("module.", "_orig_mod.")  # wrappers' prefixes (DataParallel, torch.compile), removed from names

_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def stand_in(shape: tuple[int, ...] | list[int], dtype: torch.dtype) -> torch.Tensor:
    """A tensor with `shape` that owns no memory (one element, expanded): for what is read only for its
    shape (config inference, key order) and never built into a model."""
    dtype = torch.float32 if dtype.is_floating_point else dtype  # what `_to_fp32` would make of it
    return torch.zeros([1] * len(shape), dtype=dtype).expand(*shape) if shape else torch.zeros((), dtype=dtype)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """(tensors, metadata) of a safetensors file: `read_safetensors_parts`, every tensor read."""
    tensors, metadata, _ = read_safetensors_parts(path, None)
    return tensors, metadata


def read_safetensors_parts(path: Path, skip: Callable[[str], bool] | None
                           ) -> tuple[dict[str, torch.Tensor], dict[str, str] | None, frozenset[str]]:
    """The file's tensors and metadata; names `skip` accepts are not read (their bytes stay on disk): a
    shape-only `stand_in` takes their place and they are returned as the third item.

    A file that is no regular file or lists more tensors than any CLIP (`damaged.MAX_TENSORS`) is refused before
    any tensor is read; damage is said as `damaged.safetensors_shortfall` says it, else safetensors' reason."""
    from safetensors import safe_open

    from clipforge.weights.damaged import safetensors_refusal, too_many_tensors

    if (refusal := safetensors_refusal(path)) is not None:
        raise CheckpointFormatError(refusal)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata()
            keys = list(fh.keys())  # noqa: SIM118
            if (refusal := too_many_tensors(path, len(keys))) is not None:  # a header that hid its count
                raise CheckpointFormatError(refusal)
            names = [_strip_name(k) for k in keys]
            if skip is None or not _plain_layout(names):
                return {key: fh.get_tensor(key) for key in keys}, metadata, frozenset()
            out, skipped = {}, set()
            for key, name in zip(keys, names, strict=True):
                if skip(name):
                    part = fh.get_slice(key)
                    out[key] = stand_in(part.get_shape(), _ST_DTYPES.get(part.get_dtype(), torch.float32))
                    skipped.add(name)
                else:
                    out[key] = fh.get_tensor(key)
            return out, metadata, frozenset(skipped)
    except CheckpointFormatError:
        raise
    except Exception as err:  # safetensors raises its own error types
        from clipforge.weights.damaged import safetensors_shortfall

        raise CheckpointFormatError(safetensors_shortfall(path) or f"cannot read {path} as safetensors: {err}") from err


def _strip_name(key: str) -> str:
    for prefix in PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _plain_layout(names: list[str]) -> bool:
    """OpenAI/clipforge names already (no Hugging Face, timm or wrapper layout to convert): the only
    files whose tensors can be left unread by name."""
    return (any(n.startswith("visual.") for n in names) and "ln_final.weight" in names
            and not any(n.startswith(("visual.trunk.", "text_model.", "vision_model.", "text.")) for n in names))
