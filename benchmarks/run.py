"""The benchmark suite: every figure a pair measured in the same run, printed as a ratio.

    python -m benchmarks.run            # full run: writes benchmarks/results.json and the table
                                        # in docs/performance.md (+ docs/performance.png)
    python -m benchmarks.run --quick    # < 10 min on 2 cores: smaller sets, fewer repeats;
                                        # writes benchmarks/results-quick.json, docs untouched
    python -m benchmarks.run --only image,text   # some sections (quick or not): writes
                                        # benchmarks/results-partial.json; results.json and the docs untouched
    python -m benchmarks.report [RESULTS.json]   # rewrite docs/performance.md's block from saved results (seconds)

Sections: tokenizer, image (ViT-B/32 and RN50 towers, each row beside the matmul roof of its
precision), towers (text towers and the other families' towers at batch 32 against the roof), text
(text tower and the ImageNet classifier build), pipeline (decode accuracy and end
to end), commands (`clipforge embed` / `index add` as whole processes vs a plain HF loop and vs
start-up + model-only time), startup (`search` / `classify` / `similarity` vs `import torch`),
search (1M-vector index), families (SigLIP 2 B/16 towers vs transformers, fp32 and bf16 autocast), cuda
(every family's towers and `embed --device cuda` on a GPU against its roof; skipped without one, see
benchmarks/bench_cuda.py).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from benchmarks import report
from benchmarks.common import load_average, machine_info, matmul_roof

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("tokenizer", "image", "towers", "text", "pipeline", "commands", "startup", "search", "families", "cuda")


def _roof_label(precision: str, roof: dict) -> str:
    return f"{precision} roof {roof.get(precision, 0):.0f}" + (
        " emulated" if precision == "bf16" and not roof.get("bf16_native", True) else "")


def _print_image(data: dict, roof: dict) -> None:
    for model, entry in data["models"].items():
        group = {k.split("-")[-1]: v for k, v in (entry.get("roof_in_group") or {}).items()}
        here = {**roof, **group}
        if group:
            print(f"  {model}: matmul roof timed with the largest batch: " + ", ".join(
                f"{k} {v:.0f} GFLOP/s" for k, v in group.items()))
        for batch, cands in entry["batches"].items():
            hf = cands.get("hf", {}).get("images_per_s")
            ref = cands.get("openai", {}).get("images_per_s")
            for name, t in cands.items():
                ratios = []
                if hf:
                    ratios.append(f"{t['images_per_s'] / hf:5.2f}x HF")
                if ref:
                    ratios.append(f"{t['images_per_s'] / ref:5.2f}x OpenAI")
                cos = entry["accuracy"].get(name, {}).get("cosine_min")
                precision = "bf16" if "bf16" in name or "autocast" in name else "fp32"
                share = (f"{t['gflops'] / here[precision]:4.0%} of {_roof_label(precision, here)}"
                         if here.get(precision) and "int8" not in name and "onnx" not in name else "")
                print(f"  {model:9s} b{batch:<3s} {name:23s} {t['images_per_s']:8.2f} img/s {t['gflops']:7.1f} GFLOP/s "
                      f"{share:26s} {'  '.join(ratios):28s}" + (f" cos>={cos:.6f}" if cos is not None else ""))


def _print_text(data: dict) -> None:
    full = data["throughput"]["clipforge-full77"]["texts_per_s"]
    hf = data["throughput"].get("hf", {}).get("texts_per_s")
    print(f"  {data['batch']} typical prompts, mean {data['mean_tokens']:.1f} tokens (longest {data['max_tokens']})")
    for name, t in data["throughput"].items():
        acc = data["accuracy_vs_full77"][name]
        print(f"  {name:17s} {t['texts_per_s']:9.1f} texts/s  {t['texts_per_s'] / full:5.2f}x all-77"
              + (f"  {t['texts_per_s'] / hf:5.2f}x HF" if hf else "")
              + f"  max|diff| {acc['max_abs_diff']:.2e}")
    runs = data["classifier"]["runs"]
    hf_s = runs.get("hf", {}).get("seconds_for_1000_classes")
    for name, r in runs.items():
        print(f"  classifier 1000x80 {name:17s} {r['seconds_for_1000_classes']:8.1f} s (measured on "
              f"{r['measured_classes']} classes)" + (f"  {hf_s / r['seconds_for_1000_classes']:5.2f}x HF" if hf_s else ""))


def _print_tokenizer(data: dict) -> None:
    if "skipped" in data:
        print(f"  skipped: {data['skipped']}")
        return
    print(f"  {data['texts']} captions: reference {data['reference_cold_texts_per_s']:.0f} texts/s, clipforge "
          f"{data['fast_cold_texts_per_s']:.0f} texts/s cold ({data['speedup_cold']:.1f}x), "
          f"{data['fast_warm_texts_per_s']:.0f} warm ({data['speedup_warm']:.1f}x); identical ids: {data['identical_ids']}")


def _print_pipeline(data: dict) -> None:
    for name, d in data["decode"].items():
        if isinstance(d, dict) and "speedup" in d:
            e = data["decode_embeddings"].get(name) or {}
            print(f"  decode {name:16s} exact {d['exact_images_per_s']:7.1f} img/s, draft {d['draft_images_per_s']:7.1f} "
                  f"({d['speedup']:.2f}x); embedding cosine min {e.get('cosine_min', float('nan')):.5f} "
                  f"mean {e.get('cosine_mean', float('nan')):.5f} over {e.get('drafted')} drafted")
    for name, e in data["e2e"].items():
        print(f"  e2e {name:16s} clipforge {e['clipforge_images_per_s']:6.1f} img/s (workers {e['workers']}, threads "
              f"{e['threads']}), HF loop {e.get('hf_images_per_s', float('nan')):6.1f} img/s -> "
              f"{e.get('speedup', float('nan')):.2f}x; cosine vs HF min {e.get('embedding_cosine_vs_hf_min', float('nan')):.5f}")


def _print_commands(data: dict) -> None:
    if "skipped" in data:
        print(f"  skipped: {data['skipped']}")
        return
    if data.get("hf_skipped"):
        print(f"  HF rows not measured: {data['hf_skipped']}")
    if "startup_seconds" in data:
        loads = "the image tower, as the commands" if data.get("startup_loads") else "the whole checkpoint"
        starts = data.get("startup_seconds_by_precision") or {"": data["startup_seconds"]}
        print(f"  start-up (import + load {loads}) " + ", ".join(f"{k} {v:.1f} s".strip() for k, v in starts.items())
              + "; model only for "
              f"{data['images']} images: " + ", ".join(f"{k} {v:.1f} s" for k, v in data["model_only_seconds"].items())
              + (f"; first use of the weights file hashes them once: {data['fingerprint_first_use_seconds']:.2f} s"
                 if "fingerprint_first_use_seconds" in data else ""))
    if data.get("first_run_seconds"):
        print("  each command's first run (nothing remembered yet, not in the medians): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in data["first_run_seconds"].items()))
    for name, r in data["runs"].items():
        beside = (f"  {r['vs_startup_plus_model']:4.2f}x start-up + model-only ({r['model_only_seconds']:.1f} s)"
                  + (f", cpu {r['cpu_vs_startup_plus_model']:4.2f}x" if "cpu_vs_startup_plus_model" in r else "")
                  if "vs_startup_plus_model" in r else "")
        hf = f"{r['vs_hf_loop']:5.2f}x HF loop " if "vs_hf_loop" in r else ""
        print(f"  {name:15s} {r['seconds']:7.1f} s  {r['images_per_s']:6.2f} img/s  {hf}"
              f"(whole process, {data['images']} photos){beside}")
    for name, acc in data.get("accuracy", {}).items():
        print(f"  cosine {name}: " + ", ".join(f"{k} {v:.5f}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in acc.items()))
    if data.get("bf16_skipped"):
        print(f"  --precision bf16 not measured: {data['bf16_skipped']}")


def _print_startup(data: dict) -> None:
    if "skipped" in data:
        print(f"  skipped: {data['skipped']}")
        return
    for name, r in data["runs"].items():
        print(f"  {name:13s} {r['seconds']:6.2f} s  {r['vs_import_torch']:4.2f}x import torch  (cpu {r['cpu_seconds']:.2f} s, "
              f"{r['cpu_vs_import_torch']:4.2f}x)  {r.get('model', data['model'])}, library of {data['photos']} photos")


def _print_search(data: dict) -> None:
    if "skipped" in data:
        print(f"  skipped: {data['skipped']}")
        return
    best = data.get("best_meeting_target") or {}
    print(f"  {data['n']:,} vectors: exact {data['exact']['median_ms']:.2f} ms, IVF nprobe {best.get('nprobe')} "
          f"{best.get('median_ms')} ms at recall@10 {best.get('recall_at_k')}")


def _print_families(data: dict) -> None:
    from benchmarks.families import print_rows

    print_rows(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="clipforge benchmark suite (ratios against HF and OpenAI)")
    parser.add_argument("--quick", action="store_true", help="smaller sets and fewer repeats (< 10 min on 2 cores)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default benchmarks/results.json; results-quick.json with --quick; "
                             "results-partial.json with --only short of every section; results-tiny.json with --tiny)")
    parser.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None,
                        help="regenerate docs/performance.md (default: only after a full run of every section, "
                             "not --quick, --only or --tiny)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke test of the suite itself on the tiny test architectures (figures meaningless)")
    parser.add_argument("--scale", action="store_true",
                        help="only the store benchmark at 1M x 512: FAISS flat/IVF vs a Milvus server and milvus-lite (benchmarks/scale.py)")
    args = parser.parse_args(argv)
    if args.scale:
        from benchmarks import scale

        return scale.main(["--out", str(args.out)] if args.out else [])
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    progress = not args.no_progress
    partial = set(only) != set(SECTIONS)
    # only a full run on the real models replaces the committed results and the docs' block (unless asked)
    kind = "tiny" if args.tiny else "partial" if partial else "quick" if args.quick else None
    out_path = args.out or ROOT / "benchmarks" / (f"results-{kind}.json" if kind else "results.json")
    write_docs = (kind is None) if args.docs is None else args.docs

    started = time.perf_counter()
    machine = machine_info()
    print(f"machine: {machine['cpu_model']}, {machine['usable_cpus']} cores, flags {', '.join(machine['flags'])}, "
          f"torch {machine['torch']} threads {machine['torch_threads']}, load {machine['load_average_start']}", flush=True)
    roof = {"fp32_gflops": matmul_roof(torch.float32), "bf16_gflops": matmul_roof(torch.bfloat16),
            "bf16_native": bool(machine["bf16_native"])}
    print(f"matmul roof: fp32 {roof['fp32_gflops']:.0f} GFLOP/s, bf16 {roof['bf16_gflops']:.0f} GFLOP/s "
          f"({'native' if roof['bf16_native'] else 'emulated: no AVX512-BF16/AMX'})", flush=True)
    results: dict = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick,
                     "machine": machine, "roof": roof, "sections": {}, "section_seconds": {},
                     "flops_include_attention": True}  # `common.count_flops` (counted without before 2026-12-07)
    if partial:
        results["only"] = [s for s in SECTIONS if s in only]
    if args.tiny:
        results["tiny"] = True

    from benchmarks.zoo import Zoo

    vit_name, rn_name = ("test-vit-tiny", "test-rn-tiny") if args.tiny else ("ViT-B/32", "RN50")
    vit = Zoo(vit_name) if {"image", "text", "pipeline", "commands"} & set(only) else None
    from benchmarks.bench_cuda import print_results as _print_cuda
    from benchmarks.bench_towers import print_results as _print_towers

    printers = {"tokenizer": _print_tokenizer, "image": _print_image, "towers": _print_towers, "text": _print_text,
                "pipeline": _print_pipeline, "commands": _print_commands, "startup": _print_startup,
                "search": _print_search, "families": _print_families,
                "cuda": _print_cuda}
    for section in [s for s in SECTIONS if s in only]:
        print(f"[{section}] load {load_average()}", flush=True)
        t0 = time.perf_counter()
        try:  # one broken section must not throw away the figures the others measured
            if section == "tokenizer":
                from benchmarks import bench_tokenizer as module
                data = module.run(quick=args.quick, progress=progress)
            elif section == "image":
                from benchmarks import bench_image as module
                data = module.run(quick=args.quick, models=(vit_name, rn_name), zoos={vit_name: vit}, progress=progress)
            elif section == "towers":
                from benchmarks import bench_towers as module
                data = (module.run(quick=args.quick, progress=progress) if not args.tiny
                        else {"skipped": "--tiny: the towers are measured at their real widths only"})
            elif section == "text":
                from benchmarks import bench_text as module
                data = module.run(quick=args.quick, zoo=vit, progress=progress)
            elif section == "pipeline":
                from benchmarks import bench_pipeline as module
                data = module.run(quick=args.quick, zoo=vit, progress=progress)
            elif section == "commands":
                from benchmarks import bench_commands as module
                data = (module.run(quick=args.quick, zoo=vit, progress=progress) if not args.tiny
                        else {"skipped": "--tiny: the commands are measured with ViT-B/32 only"})
            elif section == "families":  # SigLIP 2 B/16 towers vs transformers (issue 16)
                from benchmarks import families as module
                data = module.run(quick=args.quick, progress=progress, depth=2 if args.tiny else None,
                                  roof={"fp32": roof["fp32_gflops"], "bf16": roof["bf16_gflops"]})
            elif section == "cuda":
                from benchmarks import bench_cuda as module
                data = module.run(quick=args.quick, progress=progress)
            elif section == "startup":
                from benchmarks import bench_startup as module
                data = module.run(quick=args.quick, progress=progress)
            else:
                from benchmarks import bench_search_suite as module
                data = module.run(quick=args.quick, progress=progress)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            data = {"skipped": f"section failed: {type(exc).__name__}: {exc}"}
        results["sections"][section] = data
        results["section_seconds"][section] = time.perf_counter() - t0
        if "skipped" in data and section in ("image", "text", "pipeline"):
            print(f"  skipped: {data['skipped']}")
        elif section == "image":
            _print_image(data, {"fp32": roof["fp32_gflops"], "bf16": roof["bf16_gflops"],
                                "bf16_native": roof["bf16_native"]})
        else:
            printers[section](data)
        print(f"[{section}] {results['section_seconds'][section]:.0f} s", flush=True)
    if vit is not None:
        vit.close()

    results["load_average_end"] = load_average()
    results["wall_seconds"] = time.perf_counter() - started
    results["goals"] = report.goals(results)
    print("goals:")
    for g in results["goals"]:
        met = {True: "MET", False: "NOT MET", None: "n/a"}[g["met"]]
        value = g["measured"]
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"  [{met:7s}] {g['goal']}: {shown} (target {g['target']}) {g['note']}")
    from clipforge.atomic import write_json_atomic

    write_json_atomic(out_path, results)
    print(f"wrote {out_path} ({results['wall_seconds'] / 60:.1f} min, load at end {results['load_average_end']})")
    if kind in ("partial", "tiny") and not write_docs:
        what = f"partial run ({','.join(results['only'])})" if partial else "--tiny run"
        full = ROOT / "benchmarks" / "results.json"
        if Path(out_path).resolve() == full.resolve():  # --out named it: say so, never that it was left alone
            print(f"{what}: --out replaced the full run's benchmarks/results.json with this run; "
                  "docs/performance.md is left as it is")
        else:
            print(f"{what}: benchmarks/results.json and docs/performance.md are left as they are "
                  "(--docs rewrites the docs block from this run)")
    if write_docs:
        docs = ROOT / "docs" / "performance.md"
        report.update_docs(docs, report.markdown(results))
        report.plot(results, docs.with_name("performance.png"))
        print(f"updated {docs} and {docs.with_name('performance.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
