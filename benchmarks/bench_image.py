"""Image tower throughput: clipforge vs Hugging Face and OpenAI's reference, same weights.

For each architecture and batch size, all candidates are timed round-robin in one group:

    clipforge          prepare(model, "fp32")      (packed oneDNN weights, fused ops)
    clipforge-plain    the model as built (plain modules), no prepare
    clipforge-load     the model `clipforge.load(checkpoint)` returns, no other call
    clipforge-load-autocast   the same under torch.autocast(bfloat16)
    clipforge-bf16     prepare(model, "bf16")
    clipforge-int8     quantize_dynamic_int8 (Linear layers int8)
    onnxruntime        the exported image encoder (fp32) on onnxruntime
    hf                 transformers CLIPModel.get_image_features, fp32 (ViT only)
    hf-autocast        the same under torch.autocast(bfloat16)
    hf-bf16            the same model cast to bfloat16
    openai             OpenAI's reference model.py, fp32
    openai-autocast    the same under torch.autocast(bfloat16)

Accuracy: cosine similarity of each candidate's features to the fp32 features, per image
(min and mean), on one fixed batch. GFLOP/s uses the FLOPs torch's FlopCounterMode counts
for the full (unpruned) tower, i.e. the work the reference does, attention products included
(`benchmarks.common.count_flops`). Every candidate gets one untimed call at each batch size
before the timed ones (new shapes: oneDNN primitives, larger activations), quick runs too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from benchmarks.common import count_flops, time_round_robin
from benchmarks.zoo import Zoo

__all__ = ["image_candidates", "run", "tower_flops"]


def tower_flops(model: torch.nn.Module, resolution: int) -> float:
    """FLOPs of one image through the plain image tower (matmuls, convolutions, attention products)."""
    return count_flops(lambda: model.encode_image(torch.randn(1, 3, resolution, resolution)))


def image_candidates(zoo: Zoo, full: bool = True, int8: bool = True) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """name -> function(images fp32 [N,3,R,R]) -> features; only what this machine can run.

    `full=False` (quick runs) leaves out the unprepared plain modules and OpenAI's autocast run;
    the model `clipforge.load` returns and the autocast pair (it and HF) are always measured.
    """
    from clipforge.inference import bf16_supported

    out: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    fp32 = zoo.prepared("fp32")
    out["clipforge"] = fp32.encode_image
    if full:
        out["clipforge-plain"] = zoo.base.encode_image
    loaded = zoo.loaded()
    out["clipforge-load"] = loaded.encode_image

    def load_autocast(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return loaded.encode_image(x)

    if zoo.is_vit:  # the goal is set against HF, which has no ResNet
        out["clipforge-load-autocast"] = load_autocast
    if bf16_supported():
        out["clipforge-bf16"] = zoo.prepared("bf16").encode_image
    if int8:  # on a ResNet only the attention pool has Linear layers
        out["clipforge-int8"] = zoo.int8().encode_image
    onnx = zoo.onnx()
    out["onnxruntime"] = lambda x: torch.from_numpy(onnx.encode_image(x))
    hf = zoo.hf()
    if hf is not None:
        out["hf"] = lambda x: hf.get_image_features(pixel_values=x)

        def hf_autocast(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return hf.get_image_features(pixel_values=x)

        # autocast is what users run (open_clip --precision amp, CLIP_benchmark amp=True), native bf16 or not
        out["hf-autocast"] = hf_autocast
        if bf16_supported():
            hf16 = zoo.hf(bf16=True)
            out["hf-bf16"] = lambda x: hf16.get_image_features(pixel_values=x.to(torch.bfloat16))
    reference = zoo.reference()
    if reference is not None:
        out["openai"] = reference.encode_image
        if bf16_supported() and full:
            def openai_autocast(x: torch.Tensor) -> torch.Tensor:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return reference.encode_image(x)

            out["openai-autocast"] = openai_autocast
    return out


def _features(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    out = fn(x)
    out = getattr(out, "pooler_output", out)  # transformers may return a model output object
    return out.float()


@torch.inference_mode()
def _accuracy(candidates: dict[str, Callable], x: torch.Tensor, reference: torch.Tensor) -> dict[str, dict]:
    out = {}
    for name, fn in candidates.items():
        feats = _features(fn, x)
        cos = torch.nn.functional.cosine_similarity(feats, reference, dim=-1)
        out[name] = {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                     "max_abs_diff": float((feats - reference).abs().max())}
    return out


def _roof_call(dtype: torch.dtype, seconds: float) -> tuple[Callable[[], None], float]:
    """A fixed batch of 2048x2048 matmuls (the faster kernel) lasting about `seconds`, and its FLOPs.

    Timed in the same round-robin group as the towers, so the roof they are compared with
    was measured under the same load, not only once at the start of the run.
    """
    from benchmarks.common import matmul_kernels

    flops = 2.0 * 2048**3
    rates = {}
    kernels = matmul_kernels(dtype)
    for name, kernel in kernels.items():
        kernel()
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            kernel()
            best = min(best, time.perf_counter() - start)
        rates[name] = flops / best
    fastest = kernels[max(rates, key=rates.get)]
    count = max(1, round(seconds * max(rates.values()) / flops))

    def call() -> None:
        for _ in range(count):
            fastest()

    return call, count * flops


def run(quick: bool = False, models: tuple[str, ...] = ("ViT-B/32", "RN50"), batches: tuple[int, ...] = (1, 8, 32),
        zoos: dict[str, Zoo] | None = None, progress: bool = True) -> dict:
    results: dict = {"models": {}}
    for name in models:
        started = time.perf_counter()
        zoo = zoos[name] if zoos and name in zoos else Zoo(name)
        resolution = int(zoo.base.visual.input_resolution)
        flops = tower_flops(zoo.base, resolution)
        candidates = image_candidates(zoo, full=not quick, int8=zoo.is_vit or not quick)
        generator = torch.Generator().manual_seed(1)
        check = torch.randn(8, 3, resolution, resolution, generator=generator)
        with torch.inference_mode():
            reference = zoo.base.encode_image(check).float()
        entry: dict = {"flops_per_image": flops, "accuracy": _accuracy(candidates, check, reference),
                       "batches": {}, "seconds": {"setup": time.perf_counter() - started}}
        for batch in tqdm(batches, desc=f"image {name}", disable=not progress, leave=False):
            started = time.perf_counter()
            x = torch.randn(batch, 3, resolution, resolution, generator=generator)
            calls = {k: (lambda fn=fn, x=x: fn(x)) for k, fn in candidates.items()}
            roofs = {}
            if batch == max(batches):
                for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                    calls[f"matmul-roof-{label}"], roofs[f"matmul-roof-{label}"] = _roof_call(dtype, 1.0)
            repeats = {1: 3, 8: 2, 32: 2}.get(batch, 2) if quick else {1: 12, 8: 5, 32: 4}.get(batch, 4)
            with torch.inference_mode():  # one warm-up call each at this batch's new shapes, quick runs too
                timings = time_round_robin(calls, repeats=repeats, warmup=1,
                                           min_seconds=(0.5 if quick else 1.5) if batch == 1 else 0.0)
            entry["batches"][str(batch)] = {
                k: {"images_per_s": t.per_second(batch), "ms_per_batch": t.median_s * 1e3,
                    "gflops": flops * t.per_second(batch) / 1e9, "min_ms": t.min_s * 1e3, "calls": t.calls}
                for k, t in timings.items() if k not in roofs}
            if roofs:
                entry["roof_in_group"] = {k: roofs[k] / timings[k].median_s / 1e9 for k in roofs}
            entry["seconds"][f"batch {batch}"] = time.perf_counter() - started
        results["models"][name] = entry
        if not (zoos and name in zoos):
            zoo.close()
    return results
