"""Fast, checked inference on CPU: precision modes, the batch encoder, int8 quantization, ONNX export.

    from clipforge.inference import prepare
    model = prepare(model, precision="bf16")        # in place; same state dict, faster forward

Files on disk -> embeddings is one layer up, in `clipforge.data` (`encode_image_files`), since it
needs the file reader and DataLoader helpers that live there.

The model `clipforge.load` returns already has the fp32 fast forward (`enable_fast_forward`:
packed weights in eval mode under no_grad, bf16 packed once under `torch.autocast`); every
command encodes through `BatchEncoder` (`encoder`), fed by the one file reader
(`clipforge.data.files`).

`prepare` and the CPU checks import eagerly (they need only torch and the models); the
encoder, quantization and ONNX pieces load on first use.
"""

from __future__ import annotations

from clipforge._lazy import lazy_exports
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
    "quantize_dynamic_int8": "quantize", "feature_cosine": "quantize",
    "export_onnx": "onnx_export", "OnnxCLIP": "onnx_export", "onnx_parity": "onnx_export",
}

__all__ = [
    "DTYPES", "PRECISIONS", "BatchEncoder", "Bf16UnsupportedError", "OnnxCLIP", "bf16_supported", "cpu_flags",
    "cpu_summary", "enable_fast_forward", "export_onnx", "fast_model", "feature_cosine",
    "has_fast_forward", "is_prepared",
    "onednn_available", "onnx_parity", "precision_of", "prepare", "quantize_dynamic_int8", "resolve_precision",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
