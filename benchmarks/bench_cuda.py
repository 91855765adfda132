"""Every family's towers on a CUDA GPU against the GPU's matmul roof, and `clipforge embed --device cuda`.

Issue 22.1 asks for bf16 towers at the bf16 roof "on CUDA when a device is lent". This section
measures, on the GPU torch sees (skipped with the reason where there is none):

    roof        the best of square bf16 / fp32 matmuls (torch.mm, 2048..8192; fp32 without TF32,
                torch's default) timed with the same synchronising clock as the towers
    towers      ViT-B/32 (image, text), RN50 (image), ViT-B/16, SigLIP 2 B/16 and ViT-H/14 worldwide
                (image, text) and the Chinese-CLIP, XLM-R and NLLB text towers, at batch 1, 32 and 256:
                  fp32, bf16            `prepare(model, precision)` on the GPU (what `BatchEncoder` and
                                        `--precision bf16` run)
                  reference fp32        the plain model (`clipforge.load`'s forward on a GPU)
                  reference autocast    the plain model under `torch.autocast("cuda", torch.bfloat16)`,
                                        what open_clip's and transformers' users run
                  bf16 graph            the prepared bf16 image tower replayed as a CUDA graph (what a
                                        launch-bound batch could gain; not what the commands run)
                with each row's share of its precision's roof (FLOPs: torch's FlopCounterMode on the
                plain fp32 forward, as the CPU sections count them) and cosine to reference fp32
    commands    `clipforge embed IMAGES --device cuda` (fp32 and --precision bf16) as whole processes,
                next to start-up + model-only (`BatchEncoder` on uint8 crops) on the same GPU

    python -m benchmarks.run --only cuda
    python -m benchmarks.bench_cuda [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import count_flops, load_average, time_round_robin

__all__ = ["run"]

ROOT = Path(__file__).resolve().parents[1]

# (label, config name, config overrides, towers); ViT-H/14 (1 G parameters) stops at batch 32
MODELS: tuple[tuple[str, str, dict[str, Any], tuple[str, ...]], ...] = (
    ("ViT-B/32", "ViT-B/32", {}, ("image", "text")),
    ("RN50", "RN50", {}, ("image",)),
    ("ViT-B/16", "ViT-B/16", {}, ("image", "text")),
    ("SigLIP2 B/16", "ViT-B-16-SigLIP2", {}, ("image", "text")),
    ("Chinese-CLIP B/16", "cn-ViT-B-16", {}, ("text",)),
    ("XLM-R base", "xlm-roberta-base-ViT-B-32", {}, ("text",)),
    ("NLLB base", "nllb-clip-base", {}, ("text",)),
    ("ViT-H/14 worldwide", "ViT-H-14-worldwide", {"vocab_size": 1000}, ("image", "text")),
)


def _host_cpu() -> str:
    from clipforge.inference.cpu import cpu_summary

    info = cpu_summary()
    return f"{info['cpu_model']}, {info['usable_cpus']} cores, {', '.join(f for f in info['flags'] if 'bf16' in f or 'amx' in f)}"


def _synced(fn: Callable[[], Any], device: torch.device) -> Callable[[], None]:
    def call() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return call


def gpu_roof(device: torch.device, seconds: float = 0.5) -> dict[str, float]:
    """Best GFLOP/s of square matmuls per precision on `device` (fp32 as torch's default: no TF32)."""
    roof = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        best = 0.0
        for size in (2048, 4096, 8192):
            a = torch.randn(size, size, device=device).to(dtype)
            b = torch.randn(size, size, device=device).to(dtype)
            call = _synced(lambda a=a, b=b: torch.mm(a, b), device)
            call()
            timing = time_round_robin({"mm": call}, repeats=5, warmup=2, min_seconds=seconds)["mm"]
            best = max(best, 2.0 * size**3 / timing.min_s / 1e9)
            del a, b
        roof[precision] = best
    return roof


def _model(config_name: str, overrides: dict[str, Any]) -> torch.nn.Module:
    from benchmarks.bench_towers import _model as build
    from benchmarks.zoo import realistic_random_

    return realistic_random_(build(config_name, overrides))


def _flops(fn: Callable[[], Any]) -> float:
    return count_flops(fn)  # the CPU sections' count (on a GPU torch's counter knows the attention kernels)


def _graphed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], Any]:
    """`fn(x)` captured once as a CUDA graph; the call replays it (same input buffer, same output)."""
    static = x.clone()
    stream = torch.cuda.Stream(x.device)
    stream.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn(static)
    torch.cuda.current_stream(x.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(static)
    return graph.replay


def _inputs(model: torch.nn.Module, towers: tuple[str, ...], batches: tuple[int, ...], device: torch.device
            ) -> list[dict[str, Any]]:
    from benchmarks.bench_towers import _tokens

    cases = []
    if "image" in towers:
        r = int(model.visual.input_resolution)
        for batch in batches:
            x = torch.randn(batch, 3, r, r, generator=torch.Generator().manual_seed(1)).to(device)
            cases.append({"tower": "image", "input": f"{r}px", "batch": batch, "x": x})
    if "text" in towers:
        lengths: list[int | None] = [None] if getattr(model, "text_pool", None) == "last" else [15, None]
        for length in lengths:
            for batch in batches:
                what = f"{length} tokens" if length else f"{int(model.context_length)} tokens"
                cases.append({"tower": "text", "input": what, "batch": batch,
                              "x": _tokens(model, batch, length).to(device)})
    return cases


def _encode(model: torch.nn.Module, tower: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return model.encode_image if tower == "image" else model.encode_text


def _measure(label: str, config_name: str, overrides: dict[str, Any], towers: tuple[str, ...],
             device: torch.device, batches: tuple[int, ...], roof: dict[str, float], seconds: float
             ) -> list[dict[str, Any]]:
    from clipforge.inference import prepare

    plain = _model(config_name, overrides).to(device)  # moved first, then prepared: as `BatchEncoder` does
    variants = {"bf16": prepare(copy.deepcopy(plain), "bf16", require_native_bf16=False),
                "fp32": prepare(copy.deepcopy(plain), "fp32")}
    rows = []
    for case in _inputs(plain, towers, batches, device):
        x = case.pop("x")
        tower = case["tower"]
        flops = _flops(lambda x=x, tower=tower, plain=plain: _encode(plain, tower)(x))
        with torch.inference_mode():
            reference = _encode(plain, case["tower"])(x).float()

            def autocast(x: torch.Tensor = x, tower: str = tower, plain: torch.nn.Module = plain) -> torch.Tensor:
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return _encode(plain, tower)(x)

            fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
                "fp32": _encode(variants["fp32"], case["tower"]), "bf16": _encode(variants["bf16"], case["tower"]),
                "reference fp32": _encode(plain, case["tower"]), "reference autocast bf16": autocast}
            calls = {name: _synced(lambda fn=fn, x=x: fn(x), device) for name, fn in fns.items()}
            accuracy = {name: fn(x).float() for name, fn in fns.items()}
            if case["tower"] == "image" and device.type == "cuda":
                try:
                    calls["bf16 graph"] = _synced(_graphed(fns["bf16"], x), device)
                except Exception as exc:  # a capture that fails is a finding, not a crash of the run
                    case["graph_error"] = f"{type(exc).__name__}: {exc}"[:300]
            timings = time_round_robin(calls, repeats=5, warmup=2, min_seconds=seconds)
        for name, timing in timings.items():
            precision = "fp32" if name.endswith("fp32") else "bf16"
            gflops = flops / timing.median_s / 1e9
            row = {"model": label, **case, "variant": name, "precision": precision,
                   "items_per_s": case["batch"] / timing.median_s, "ms": timing.median_s * 1e3,
                   "min_ms": timing.min_s * 1e3, "gflops": gflops, "roof_share": gflops / roof[precision],
                   "calls": timing.calls}
            if name in accuracy:
                cos = torch.nn.functional.cosine_similarity(accuracy[name], reference, dim=-1)
                row["cosine_min"] = float(cos.min())
                row["max_abs_diff"] = float((accuracy[name] - reference).abs().max())
            rows.append(row)
        for row in rows[-len(timings):]:
            ref = next(r for r in rows[-len(timings):] if r["variant"] == f"reference {'fp32' if row['precision'] == 'fp32' else 'autocast bf16'}")
            row["vs_reference"] = row["items_per_s"] / ref["items_per_s"]
    del variants, plain
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def run(quick: bool = False, progress: bool = True, device: str | None = None,
        models: tuple[str, ...] | None = None, commands: bool = True, budget_s: float = 600.0) -> dict[str, Any]:
    """The section's figures; {"skipped": why} without a CUDA device (unless `device` names another)."""
    if device is None:
        if not torch.cuda.is_available():
            return {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
        device = "cuda"
    dev = torch.device(device)
    started = time.perf_counter()
    results: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                               "load_average_start": load_average(), "device": str(dev), "rows": [],
                               "host_cpu": _host_cpu()}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        results["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                          "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                          "torch": torch.__version__, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    results["roof"] = roof = gpu_roof(dev, seconds=0.2 if quick else 0.5)
    if progress:
        print(f"    roof on {results.get('gpu', {}).get('name', dev)}: fp32 {roof['fp32']:.0f} GFLOP/s, "
              f"bf16 {roof['bf16']:.0f} GFLOP/s", flush=True)
    batches = (1, 32) if quick else (1, 32, 256)
    for label, config_name, overrides, towers in MODELS:
        if models is not None and label not in models:
            continue
        if time.perf_counter() - started > budget_s:
            results.setdefault("errors", {})[label] = f"not measured: the section's {budget_s:.0f} s were spent"
            continue
        t0 = time.perf_counter()
        try:
            sizes = tuple(b for b in batches if b <= 32) if "H/14" in label else batches
            rows = _measure(label, config_name, overrides, towers, dev, sizes, roof, 0.1 if quick else 0.2)
        except Exception as exc:  # one family failing must not lose the others' figures
            import traceback

            traceback.print_exc()
            results.setdefault("errors", {})[label] = f"{type(exc).__name__}: {exc}"[:500]
            continue
        results["rows"] += rows
        if progress:
            for row in rows:
                print(f"    {_line(row)}", flush=True)
            print(f"    ({label}: {time.perf_counter() - t0:.0f} s)", flush=True)
    if commands:
        from benchmarks.bench_commands import run_on_device

        results["commands"] = run_on_device(dev, _model("ViT-B/32", {}), 64 if quick else 256, progress)
    results["seconds"] = time.perf_counter() - started
    results["load_average_end"] = load_average()
    return results


def _line(row: dict[str, Any]) -> str:
    unit = "img/s" if row["tower"] == "image" else "txt/s"
    acc = f" cos>={row['cosine_min']:.5f}" if "cosine_min" in row else ""
    return (f"{row['model']:18s} {row['tower']:5s} b{row['batch']:<4d} {row['input']:10s} {row['variant']:24s} "
            f"{row['items_per_s']:10.1f} {unit} {row['ms']:8.3f} ms {row['gflops'] / 1e3:7.1f} TFLOP/s "
            f"{row['roof_share']:4.0%} of {row['precision']} roof {row['vs_reference']:5.2f}x ref{acc}")


def print_results(data: dict[str, Any]) -> None:
    """The section's lines for `benchmarks.run`."""
    if "skipped" in data:
        print(f"  skipped: {data['skipped']}")
        return
    gpu = data.get("gpu", {})
    print(f"  {gpu.get('name', data['device'])} (CUDA {gpu.get('cuda')}, torch {gpu.get('torch')}): roof fp32 "
          f"{data['roof']['fp32'] / 1e3:.1f} TFLOP/s, bf16 {data['roof']['bf16'] / 1e3:.1f} TFLOP/s")
    for row in data["rows"]:
        print(f"  {_line(row)}")
    for label, error in data.get("errors", {}).items():
        print(f"  {label}: failed: {error}")
    commands = data.get("commands", {})
    if "skipped" in commands:
        print(f"  commands skipped: {commands['skipped']}")
    for name, entry in commands.get("runs", {}).items():
        ratio = entry.get("vs_startup_plus_model")
        print(f"  {name:16s} " + (f"{entry['seconds']:6.2f} s" if "seconds" in entry else f"failed: {entry['error']}")
              + (f"  {ratio:.2f}x start-up + model-only" if ratio else ""))


BEGIN = "<!-- BEGIN GENERATED BY python -m benchmarks.bench_cuda -->"
END = "<!-- END GENERATED BY python -m benchmarks.bench_cuda -->"


def markdown(data: dict[str, Any]) -> str:
    """docs/performance.md's CUDA block: one line per (tower, input, batch), the variants side by side."""
    gpu = data.get("gpu", {})
    roof = data["roof"]
    lines = [BEGIN, "", f"Measured {data.get('date', '')} on {gpu.get('name', data['device'])} (CUDA {gpu.get('cuda')}, "
             f"torch {gpu.get('torch')}, host CPU {data.get('host_cpu', 'not recorded')}). Roof: square matmuls, "
             f"fp32 {roof['fp32'] / 1e3:.1f} TFLOP/s (no TF32, torch's default), bf16 {roof['bf16'] / 1e3:.1f} TFLOP/s. "
             "Each cell: items/s and share of its precision's roof; `x ref`: against the plain model (fp32) or the "
             "plain model under bf16 autocast (bf16), same run. `graph`: the prepared bf16 image tower replayed as a "
             "CUDA graph (a measurement of launch overhead, not what the commands run).", "",
             "| model | tower | input | batch | fp32 | x ref | bf16 | x autocast | bf16 graph | bf16 cosine |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    groups: dict[tuple, dict[str, dict[str, Any]]] = {}
    for row in data["rows"]:
        groups.setdefault((row["model"], row["tower"], row["input"], row["batch"]), {})[row["variant"]] = row

    def cell(row: dict[str, Any] | None) -> str:
        return "" if row is None else f"{row['items_per_s']:,.0f} ({row['roof_share']:.0%})"

    for (model, tower, what, batch), v in groups.items():
        fp32, bf16, graph = v.get("fp32"), v.get("bf16"), v.get("bf16 graph")
        lines.append(f"| {model} | {tower} | {what} | {batch} | {cell(fp32)} | "
                     f"{fp32['vs_reference']:.2f} | {cell(bf16)} | {bf16['vs_reference']:.2f} | {cell(graph)} | "
                     f"{bf16.get('cosine_min', float('nan')):.5f} |" if fp32 and bf16 else f"| {model} | {tower} | {what} | {batch} | | | | | | |")
    for label, error in data.get("errors", {}).items():
        lines.append(f"\n{label}: {error}")
    commands = data.get("commands", {})
    runs = commands.get("runs", {})
    if runs:
        lines += ["", f"Whole commands on {commands.get('images')} ImageNet photos, `--device {commands.get('device')}`, "
                  "ViT-B/32 random weights (medians of 2):", ""]
        for name, entry in runs.items():
            ratio = entry.get("vs_startup_plus_model")
            lines.append(f"- `{name}`: " + (f"{entry['seconds']:.2f} s" if "seconds" in entry else f"failed: {entry['error']}")
                         + (f" ({ratio:.2f}x start-up + model-only)" if ratio else ""))
        if "embed_bf16_vs_fp32_cosine_min" in commands:
            lines.append(f"- embed bf16 vs fp32 cosine >= {commands['embed_bf16_vs_fp32_cosine_min']:.5f}")
    return "\n".join([*lines, "", END, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default=None)
    parser.add_argument("--models", default=None, help="comma-separated labels (default: all)")
    parser.add_argument("--no-commands", action="store_true")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds after which no further model starts")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--docs", action="store_true", help="write the CUDA block of docs/performance.md from --out "
                        "(or from the run's own figures)")
    parser.add_argument("--from-json", type=Path, default=None, help="only rewrite the docs block from saved results")
    args = parser.parse_args(argv)
    if args.from_json:
        data = json.loads(args.from_json.read_text())
    else:
        models = tuple(m.strip() for m in args.models.split(",")) if args.models else None
        data = run(quick=args.quick, device=args.device, models=models, commands=not args.no_commands,
                   budget_s=args.budget)
        print_results(data)
    if args.out and not args.from_json:
        args.out.write_text(json.dumps(data, indent=1))
    if args.docs and "rows" in data:
        from benchmarks.report import update_docs

        update_docs(ROOT / "docs" / "performance.md", markdown(data), BEGIN, END)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
