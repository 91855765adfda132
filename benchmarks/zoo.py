"""Every variant of one architecture, built once from one set of random weights and shared.

Speed does not depend on the weights' values, so random weights are fine, but every variant
(clipforge fp32/bf16/int8, ONNX, Hugging Face, OpenAI's reference) holds the *same* weights,
which is what makes the accuracy columns (cosine to fp32 features) meaningful.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.anchors import build_hf, build_reference, hf_available

__all__ = ["Zoo", "realistic_random_"]


def realistic_random_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give BatchNorm layers non-trivial statistics.

    OpenAI's init zeroes the last BN of every ResNet block (each block starts as the identity),
    which makes a random RN50 nearly linear and any precision comparison on it meaningless.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.25)
                module.bias.copy_((torch.rand(n, generator=generator) - 0.5) * 0.2)
                module.running_mean.copy_((torch.rand(n, generator=generator) - 0.5) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return model


class Zoo:
    """Lazily built, cached variants of one architecture (`name` is a clipforge config name)."""

    def __init__(self, name: str, seed: int = 0) -> None:
        from clipforge.models import create_model_from_config, get_config

        self.name = name
        self.config = get_config(name)
        torch.manual_seed(seed)
        self.base = realistic_random_(create_model_from_config(self.config).eval(), seed)
        self.base.requires_grad_(False)
        self.is_vit = not isinstance(self.config["vision_layers"], (tuple, list))
        self._cache: dict[str, Any] = {}
        self._tmp: tempfile.TemporaryDirectory | None = None

    def _get(self, key: str, build) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def prepared(self, precision: str) -> torch.nn.Module:
        from clipforge.inference import prepare

        return self._get(f"cf-{precision}", lambda: prepare(copy.deepcopy(self.base), precision))

    def loaded(self) -> torch.nn.Module:
        """The plain model exactly as `clipforge.load` returns it for a checkpoint file of these
        weights: no `prepare`, no other call (fp32, eval mode, parameters requiring grad)."""

        def build() -> torch.nn.Module:
            from safetensors.torch import save_file

            import clipforge

            folder = Path(self._tmp_dir()) / "load"
            folder.mkdir(exist_ok=True)
            path = folder / "model.safetensors"
            save_file({k: v.detach().contiguous() for k, v in self.base.state_dict().items()}, str(path))
            model, _ = clipforge.load(str(path), device="cpu")
            return model

        return self._get("cf-load", build)

    def _tmp_dir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="clipforge-bench-")
        return self._tmp.name

    def int8(self) -> torch.nn.Module:
        from clipforge.inference.quantize import quantize_dynamic_int8

        return self._get("cf-int8", lambda: quantize_dynamic_int8(self.base))

    def hf(self, bf16: bool = False) -> torch.nn.Module | None:
        if not self.is_vit or not hf_available():
            return None
        fp32 = self._get("hf", lambda: build_hf(self.base, self.config))
        if not bf16:
            return fp32
        return self._get("hf-bf16", lambda: copy.deepcopy(fp32).to(torch.bfloat16))

    def reference(self) -> torch.nn.Module | None:
        return self._get("openai", lambda: build_reference(self.base, self.config))

    def onnx(self) -> Any:
        """`OnnxCLIP` over a fresh export (kept in a temporary folder for the zoo's lifetime).

        The export's own parity check is skipped: the benchmark sections compare the ONNX
        features with PyTorch's on their own inputs (the `accuracy` entries).
        """
        from clipforge.inference.onnx_export import OnnxCLIP, export_onnx

        def build() -> Any:
            folder = Path(self._tmp_dir()) / "onnx"
            export_onnx(self.base, folder, name=self.name, verify=False)
            return OnnxCLIP(str(folder))

        return self._get("onnx", build)

    def close(self) -> None:
        self._cache.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
