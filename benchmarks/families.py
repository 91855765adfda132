"""SigLIP 2 B/16 towers: clipforge (what `load_model` returns: the packed fast path) vs transformers'
`SiglipModel`, same process, same random weights, fp32 and under bf16 autocast (issue 16, item 5).

    python -m benchmarks.run --only families    # a section of the suite (batch 1 and 32; --quick: 1 and 8)
    python -m benchmarks.families               # on its own, same rows
    python -m benchmarks.families --depth 2     # fewer blocks per tower, for a smoke test

Each row: images/s (texts/s) for each side, their ratio, and each side's share of the machine's
matmul roof in that precision (`benchmarks.common.matmul_roof`; FLOPs counted by torch's
`FlopCounterMode` on transformers' forward, attention products included, 2 per multiply-add, as the roof
counts them; without transformers on clipforge's reference forward, the same count). Goals: >= 1.3x at
batch 1, >= 1.0x at batch 32. The load average before and after goes with the figures (the machine is
shared: read ratios, not absolute figures). Without transformers the clipforge rows are still timed
(`hf_skipped` says why the other side is missing).

What the fast path covers in these towers: every transformer block of both (packed weights, fused
activations, bf16 under autocast), the patch convolution (one packed matmul) and the attention-pool
head (its fixed query folded into the key and value weights: the reference's 0.5 of the image tower's
35.4 GFLOP becomes a few MFLOP); the text projection runs as plain PyTorch. The text tower reads the
last position of a bidirectional pass, so CLIP's stop-at-the-end-token shortcut does not apply to it,
but its last block computes that row only.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import torch

from benchmarks.anchors import HF_MISSING, hf_available
from benchmarks.common import count_flops, load_average, machine_info, matmul_roof, time_round_robin

__all__ = ["run"]

MODEL = "ViT-B-16-SigLIP2"


def _models(depth: int | None):
    """(clipforge's model with its fast forward, transformers' `SiglipModel` with the same weights or None where
    transformers is not installed, the config)."""
    from clipforge.inference.precision import enable_fast_forward
    from clipforge.models import create_model_from_config, get_config

    config = get_config(MODEL)
    if depth:
        config.update(vision_layers=depth, transformer_layers=depth)
    torch.manual_seed(0)
    ours = create_model_from_config(config).eval()
    hf = None
    if hf_available():
        from transformers import SiglipConfig, SiglipModel

        from clipforge.weights.family_layouts import siglip_hf_config, to_hf_siglip

        hf = SiglipModel(SiglipConfig(**siglip_hf_config(config))).eval()
        hf.load_state_dict(to_hf_siglip(ours.state_dict()), strict=True)
    return enable_fast_forward(ours), hf, config


def _flops(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, autograd: bool = False) -> float:
    """FLOPs of one item through `fn` (the plain fp32 forward; `autograd`: see `count_flops`)."""
    return count_flops(lambda: fn(x[:1]), autograd=autograd)


def _cosine_min(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min())


def run(quick: bool = False, progress: bool = True, depth: int | None = None,
        roof: dict[str, float] | None = None) -> dict:
    """Rows of (tower, precision, batch) with both sides' throughput, ratio and share of the roof.

    `roof`: {"fp32": GFLOP/s, "bf16": GFLOP/s} measured by the caller (`benchmarks.run` does at its
    start); measured here when absent."""
    del progress  # few rows; each prints as the section ends
    started = time.perf_counter()
    before = load_average()
    if roof is None:
        roof = {"fp32": matmul_roof(torch.float32), "bf16": matmul_roof(torch.bfloat16)}
    ours, hf, config = _models(depth)  # hf None: transformers is not installed
    res, context = config["image_resolution"], config["context_length"]
    batches = (1, 8) if quick else (1, 32)
    generator = torch.Generator().manual_seed(1)
    with_hf = hf is not None
    towers = {
        "image": (ours.encode_image, (lambda p: hf.vision_model(pixel_values=p).pooler_output) if with_hf else None,
                  lambda n: torch.randn(n, 3, res, res, generator=generator)),
        "text": (ours.encode_text, (lambda t: hf.text_model(input_ids=t).pooler_output) if with_hf else None,
                 lambda n: torch.randint(3, config["vocab_size"], (n, context), generator=generator)),
    }
    out: dict = {"model": MODEL, "depth": depth or config["vision_layers"], "image_resolution": res,
                 "context_length": context, "roof_gflops": roof, "flops_per_item": {}, "cosine_min": {},
                 "rows": []}
    if not with_hf:
        out["hf_skipped"] = HF_MISSING
    for tower, (ours_fn, hf_fn, make) in towers.items():
        sample = make(2)
        # the reference's work: transformers' forward, or clipforge's reference modules (autograd on)
        out["flops_per_item"][tower] = _flops(hf_fn, sample) if hf_fn else _flops(ours_fn, sample, autograd=True)
        if hf_fn:
            with torch.inference_mode():
                out["cosine_min"][tower] = _cosine_min(ours_fn(sample), hf_fn(sample))  # same weights, same numbers
    for precision in ("fp32", "bf16"):
        ctx = (lambda: torch.autocast("cpu", torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
        for batch in batches:
            for tower, (ours_fn, hf_fn, make) in towers.items():
                x = make(batch)

                def call(fn: Callable, x: torch.Tensor = x, ctx: Callable = ctx) -> Callable[[], object]:
                    def once() -> object:
                        with torch.inference_mode(), ctx():
                            return fn(x)
                    return once

                repeats = 2 if batch > 1 else (3 if quick else 5)
                sides = {"clipforge": call(ours_fn), **({"transformers": call(hf_fn)} if hf_fn else {})}
                timings = time_round_robin(sides, repeats=repeats,
                                           min_seconds=0.0 if batch > 1 else (0.5 if quick else 1.5))
                flops = out["flops_per_item"][tower]
                row = {"tower": tower, "precision": precision, "batch": batch, "transformers": None}
                for side, t in timings.items():
                    rate = t.per_second(batch)
                    row[side] = {"per_s": rate, "ms_per_batch": t.median_s * 1e3, "calls": t.calls,
                                 "gflops": flops * rate / 1e9,
                                 "roof_share": flops * rate / 1e9 / roof[precision] if roof.get(precision) else None}
                row["ratio"] = row["clipforge"]["per_s"] / row["transformers"]["per_s"] if row["transformers"] else None
                out["rows"].append(row)
    out["load_average"] = {"before": before, "after": load_average()}
    out["seconds"] = time.perf_counter() - started
    return out


def print_rows(data: dict) -> None:
    """The section's lines (also what `benchmarks.run` prints)."""
    if "skipped" in data:
        print(f"  skipped: {data['skipped']}")
        return
    cosine = data["cosine_min"]
    print(f"  {data['model']} ({data['depth']} blocks per tower), {data['image_resolution']} px, {data['context_length']}"
          " tokens; " + (f"same weights: cosine min image {cosine['image']:.6f}, text {cosine['text']:.6f}; "
                         if cosine else "") +
          f"roof fp32 {data['roof_gflops']['fp32']:.0f}, bf16 {data['roof_gflops']['bf16']:.0f} GFLOP/s")
    if data.get("hf_skipped"):
        print(f"  HF rows not measured: {data['hf_skipped']}")
    for r in data["rows"]:
        ours, theirs = r["clipforge"], r.get("transformers")
        goal = 1.3 if r["batch"] == 1 else 1.0
        share = (f"  roof {ours['roof_share']:4.0%}" + (f" vs {theirs['roof_share']:4.0%}" if theirs else "")
                 if ours["roof_share"] is not None else "")
        print(f"  SigLIP2 B/16 {r['tower']:5s} {r['precision']} b{r['batch']:<3d} clipforge {ours['per_s']:8.2f}/s  "
              + (f"transformers {theirs['per_s']:8.2f}/s  {r['ratio']:5.2f}x (goal {goal}x)" if theirs else "")
              + share)
    print(f"  load average before {data['load_average']['before']}, after {data['load_average']['after']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 and 8, fewer repeats")
    parser.add_argument("--depth", type=int, default=None, help="blocks per tower (default: the real 12)")
    args = parser.parse_args(argv)
    print(f"machine: {machine_info()}")
    print_rows(run(quick=args.quick, depth=args.depth))


if __name__ == "__main__":
    main()
