"""Every family's towers against the matmul roof: text towers and the other families' image towers.

The image section measures ViT-B/32's and RN50's image towers; this one adds what issue 22.1 also
asks for, at batch 32, fp32 and (where the CPU multiplies bf16 natively) bf16, each through
`prepare` (the path `BatchEncoder` runs):

    ViT-B/32 text          OpenAI's text tower: typical ImageNet prompts (the tower stops at the batch's
                           longest prompt) and full 77-token prompts
    ViT-B/16 image, text   OpenAI's shape at 16 px patches (197 tokens per image)
    SigLIP 2 B/16 image, text   attention-pool image head, 64-position bidirectional text tower
    ViT-H/14 (MetaCLIP 2 worldwide shape) image, text   full width, 4 of 32 image blocks and 4 of 24 text
                           blocks, vocabulary cut to 1,000 rows (the embedding lookup is not a matmul):
                           the full model does not fit this benchmark's time and memory
    ViT-L/14 CLIPA         CLIPA-v2's towers (image read by the mean of its patch tokens, bidirectional text
                           read at its last position, 32 tokens), full width, 4 of 24 / 4 of 12 blocks
    Chinese-CLIP ViT-B/16 text   RoBERTa-wwm-ext base (BERT, read at [CLS]), 15 tokens and the whole 52
    XLM-R base text        open_clip's xlm-roberta-base-ViT-B-32 text tower (mean-pooled), 15 tokens and 77
    NLLB base text         nllb-clip-base's NLLB-200 encoder (pre-norm, read at its first token), 15 and 77

The BERT-shaped towers are fed rows without padding (a padded row's pads are skipped by the fast path
but counted by the reference, which would overstate the share).

GFLOP/s counts what the plain (reference) module does for the same input (torch's FlopCounterMode,
attention products included: `benchmarks.common.count_flops`), as the image section does. The fast path skips most of the last block for the rows nobody reads
(about 3/4 of a block), so that work is counted as done: the share is overstated by about 6% for a
12-block tower and by up to ~20% for the 4-block ViT-H/14 rows (read those as an upper bound). The roof is the faster of MKL and oneDNN
2048^3 matmuls, timed in the same round-robin group as each model's towers. Quick runs use batch 8
for the B/16 and H/14 image towers (said in the row). Not covered, and why, is in `not_covered`;
without transformers the towers built from its classes (Chinese-CLIP, XLM-R, NLLB) are named in
`hf_skipped` and the others are still measured.
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.anchors import HF_MISSING, hf_available
from benchmarks.common import count_flops, load_average, time_round_robin

__all__ = ["NOT_COVERED", "run"]

# (label, config name, config overrides, towers, note)
MODELS: tuple[tuple[str, str, dict[str, Any], tuple[str, ...], str], ...] = (
    ("ViT-B/32", "ViT-B/32", {}, ("text",), ""),
    ("ViT-B/16", "ViT-B/16", {}, ("image", "text"), ""),
    ("SigLIP2 B/16", "ViT-B-16-SigLIP2", {}, ("image", "text"), ""),
    ("ViT-H/14 worldwide", "ViT-H-14-worldwide", {"vision_layers": 4, "transformer_layers": 4, "vocab_size": 1000},
     ("image", "text"), "full width, 4 of 32 image / 4 of 24 text blocks, 1,000-row vocabulary; share overstated up to ~20%: "
     "the skipped last-block rows are counted"),
    ("ViT-L/14 CLIPA", "ViT-L-14-CLIPA", {"vision_layers": 4, "transformer_layers": 4}, ("image", "text"),
     "full width, 4 of 24 image / 4 of 12 text blocks; the image share is exact (the mean reads every row), the "
     "text share overstated up to ~20% (its last block's skipped rows are counted)"),
    ("Chinese-CLIP B/16", "cn-ViT-B-16", {}, ("text",), ""),
    ("XLM-R base", "xlm-roberta-base-ViT-B-32", {}, ("text",), ""),
    ("NLLB base", "nllb-clip-base", {}, ("text",), ""),
)
NOT_COVERED: dict[str, str] = {
    "Chinese-CLIP image towers": "OpenAI's ViT/ResNet shapes, measured here and in the image section",
    "mT5 text towers": "transformers' own T5 encoder run as is (relative-position attention, RMSNorm and gated "
                       "GELU are not on the packed path); open_clip publishes no mT5 weights",
    "ViT-bigG/14, SO400M, gopt (full depth)": "over 1 G parameters: minutes per batch-32 call on 2 cores; their "
                                              "blocks are the same kernels at other widths as the ViT-H/14 rows",
    "ResNet text towers": "the same text tower as the ViT models (ViT-B/32 row); RN50's image tower is in the image section",
}


def _model(config_name: str, overrides: dict[str, Any]) -> torch.nn.Module:
    from clipforge.models import create_model_from_config, get_config
    from clipforge.models.chinese_clip import create_chinese_clip, is_chinese_clip_name

    torch.manual_seed(0)
    if is_chinese_clip_name(config_name):
        return create_chinese_clip(config_name, **overrides).eval().requires_grad_(False)
    return create_model_from_config({**get_config(config_name), **overrides}).eval().requires_grad_(False)


def _pad_id(model: torch.nn.Module) -> int | None:
    """The padding id of a BERT-shaped tower (Chinese-CLIP, open_clip's transformers towers), else None."""
    pad = getattr(model, "pad_id", getattr(getattr(model, "text", None), "pad_id", None))
    return None if pad is None else int(pad)


def _tokens(model: torch.nn.Module, batch: int, length: int | None) -> torch.Tensor:
    """Token ids the tower reads as `batch` prompts of `length` tokens (None: the whole context).

    OpenAI's towers read the end token (the largest id) and stop at the batch's longest prompt;
    towers read at their last position or first EOS run the whole context whatever the ids;
    BERT-shaped towers get `length` columns of non-pad ids.
    """
    context, vocab = int(model.context_length), int(model.vocab_size)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, max(4, vocab - 2), (batch, context), generator=generator)
    pool = getattr(model, "text_pool", "argmax")
    end = context - 1 if length is None else min(length, context) - 1
    pad = _pad_id(model)
    if pad is not None:
        ids[ids == pad] = pad + 3
        return ids[:, :end + 1]
    if pool == "eos":  # read at the first end-of-sequence id
        ids[:, end] = int(model.text_eos_id)
    elif pool != "last":  # OpenAI's: read at the largest id
        ids[:, 0] = vocab - 2
        ids[:, end] = vocab - 1
        ids[:, end + 1:] = 0
    return ids


def _flops(fn: Callable[[], Any]) -> float:
    return count_flops(fn)


def _cases(label: str, model: torch.nn.Module, towers: tuple[str, ...], quick: bool, note: str
           ) -> list[dict[str, Any]]:
    """One row per (tower, input): the input and the FLOPs the plain module spends on it."""
    rows = []
    if "image" in towers:
        resolution = int(model.visual.input_resolution)
        heavy = resolution * resolution // (int(getattr(model.visual, "patch_size", 32) or 32) ** 2) > 100
        batch = 8 if quick and (heavy or "H/14" in label) else 32
        images = torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(1))
        rows.append({"model": label, "tower": "image", "input": f"{resolution}px", "batch": batch, "x": images,
                     "flops": _flops(lambda: model.encode_image(images)), "note": note})
    if "text" in towers:
        lengths: list[int | None] = [None] if getattr(model, "text_pool", None) == "last" else [15, None]
        for length in lengths:
            tokens = _tokens(model, 32, length)
            what = f"{length} tokens" if length else f"{int(model.context_length)} tokens (whole context)"
            rows.append({"model": label, "tower": "text", "input": what, "batch": 32, "x": tokens,
                         "flops": _flops(lambda tokens=tokens: model.encode_text(tokens)), "note": note})
    return rows


def _measure(label: str, config_name: str, overrides: dict[str, Any], towers: tuple[str, ...], note: str,
             quick: bool, bf16: bool) -> tuple[list[dict[str, Any]], dict[str, float]]:
    from benchmarks.bench_image import _roof_call
    from clipforge.inference import prepare

    base = _model(config_name, overrides)
    cases = _cases(label, base, towers, quick, note)
    prepared = {"bf16": prepare(copy.deepcopy(base), "bf16")} if bf16 else {}
    prepared = {"fp32": prepare(base, "fp32"), **prepared}  # in place: the plain model was only needed for FLOPs
    calls: dict[str, Callable[[], Any]] = {}
    for i, case in enumerate(cases):
        for precision, model in prepared.items():
            encode = model.encode_image if case["tower"] == "image" else model.encode_text
            calls[f"{i}/{precision}"] = lambda encode=encode, x=case["x"]: encode(x)
    roof_flops = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        calls[f"roof/{precision}"], roof_flops[precision] = _roof_call(dtype, 1.0)
    with torch.inference_mode():
        # short calls (a 15-token text batch: ~0.1 s) keep being sampled until they add up to 1.5 s,
        # so their median is not four samples each taken right after another model's call
        timings = time_round_robin(calls, repeats=2 if quick else 4, warmup=1, min_seconds=0.0 if quick else 1.5)
    roof = {p: roof_flops[p] / timings[f"roof/{p}"].median_s / 1e9 for p in roof_flops}
    rows = []
    for i, case in enumerate(cases):
        for precision in prepared:
            t = timings[f"{i}/{precision}"]
            gflops = case["flops"] / t.median_s / 1e9
            rows.append({k: v for k, v in case.items() if k != "x"} | {
                "precision": precision, "items_per_s": case["batch"] / t.median_s, "gflops": gflops,
                "roof_gflops": roof[precision], "roof_share": gflops / roof[precision], "calls": t.calls})
    return rows, roof


def run(quick: bool = False, progress: bool = True, models: tuple[str, ...] | None = None) -> dict[str, Any]:
    from clipforge.inference import bf16_supported

    bf16 = bf16_supported()
    results: dict[str, Any] = {"load_average_start": load_average(), "rows": [], "roofs": {},
                               "bf16": "native" if bf16 else "not measured: this CPU emulates bf16",
                               "not_covered": NOT_COVERED}
    without_hf: list[str] = []
    for label, config_name, overrides, towers, note in MODELS:
        if models is not None and label not in models:
            continue
        started = time.perf_counter()
        try:
            rows, roof = _measure(label, config_name, overrides, towers, note, quick, bf16)
        except ImportError:
            if hf_available():
                raise
            without_hf.append(label)  # its tower is a transformers class: the other models are still measured
            continue
        gc.collect()
        results["rows"] += rows
        results["roofs"][label] = roof
        if progress:
            for row in rows:
                print(f"    {_line(row)}", flush=True)
            print(f"    ({label}: {time.perf_counter() - started:.0f} s, load {load_average()})", flush=True)
    if without_hf:
        results["hf_skipped"] = f"{HF_MISSING} (towers built from its classes: {', '.join(without_hf)})"
    results["load_average_end"] = load_average()
    return results


def _line(row: dict[str, Any]) -> str:
    unit = "img/s" if row["tower"] == "image" else "texts/s"
    return (f"{row['model']:18s} {row['tower']:5s} b{row['batch']:<3d} {row['input']:28s} {row['precision']:4s} "
            f"{row['items_per_s']:8.1f} {unit:7s} {row['gflops']:6.1f} GFLOP/s  {row['roof_share']:4.0%} of "
            f"{row['precision']} roof {row['roof_gflops']:.0f}" + (f"  ({row['note']})" if row["note"] else ""))


def print_results(data: dict[str, Any]) -> None:
    """The section's lines for `benchmarks.run`."""
    if "skipped" in data:
        print(f"  skipped: {data['skipped']}")
        return
    if data.get("hf_skipped"):
        print(f"  HF rows not measured: {data['hf_skipped']}")
    for row in data["rows"]:
        print(f"  {_line(row)}")
    if data.get("bf16") != "native":
        print(f"  bf16 {data['bf16']}")
    for what, why in data["not_covered"].items():
        print(f"  not covered: {what}: {why}")
