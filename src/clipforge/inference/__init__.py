"""Fast, checked inference on CPU: precision modes, int8 quantization, ONNX export, encode pipelines.

    from clipforge.inference import prepare, encode_image_files
    model = prepare(model, precision="bf16")        # in place; same state dict, faster forward
    result = encode_image_files(model, paths)       # files -> unit embeddings, bad files counted

The model `clipforge.load` returns already has the fp32 fast forward (`enable_fast_forward`:
packed weights in eval mode under no_grad, bf16 packed once under `torch.autocast`); every
command encodes through `BatchEncoder` (`encoder`), fed by the one file reader
(`clipforge.data.files`).

`prepare` and the CPU checks import eagerly (they need only torch and the models); the
pipeline (DataLoader, image decoding), quantization and ONNX pieces load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from clipforge.inference.cpu import bf16_supported, cpu_flags, cpu_summary, onednn_available
from clipforge.inference.precision import (
    DTYPES,
    PRECISIONS,
    Bf16UnsupportedError,
    enable_fast_forward,
    has_fast_forward,
    is_prepared,
    precision_of,
    prepare,
    resolve_precision,
)

_LAZY: dict[str, str] = {
    "BatchEncoder": "encoder", "fast_model": "encoder",
    "EncodeResult": "pipeline", "encode_image_files": "pipeline", "save_embeddings": "pipeline",
    "default_workers": "pipeline",
    "quantize_dynamic_int8": "quantize", "feature_cosine": "quantize",
    "export_onnx": "onnx_export", "OnnxCLIP": "onnx_export", "onnx_parity": "onnx_export",
}

__all__ = [
    "DTYPES", "PRECISIONS", "BatchEncoder", "Bf16UnsupportedError", "EncodeResult", "OnnxCLIP", "bf16_supported", "cpu_flags",
    "cpu_summary", "default_workers", "enable_fast_forward", "encode_image_files", "export_onnx", "fast_model", "feature_cosine",
    "has_fast_forward", "is_prepared",
    "onednn_available", "onnx_parity", "precision_of", "prepare", "quantize_dynamic_int8", "resolve_precision",
    "save_embeddings",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
