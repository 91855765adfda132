"""The commands as users run them: whole processes, `clipforge embed` and `clipforge index add`.

Each candidate is one fresh process over the same N photos (ImageNet sample, or $CLIPFORGE_BENCH_IMAGES) with
the same ViT-B/32-shaped random weights, timed from process start to exit (imports, loading the
checkpoint, scanning, decoding, the model, writing):

    hf-loop            a plain transformers loop: PIL open + CLIPImageProcessor + CLIPModel
                       .get_image_features, batch 32, fp32 (weights from an HF folder); without
                       transformers it is not measured (`hf_skipped`) and the other rows still are
    embed              clipforge embed IMAGES --model ckpt.safetensors --out DIR --float32 --quiet
                       (float32 files, to compare with the HF loop's vectors; the default writes float16)
    index-add          clipforge index add IMAGES --model ckpt.safetensors --library DIR --quiet
    embed-bf16 / index-add-bf16   the same with --precision bf16, where the CLI has the flag
                       and the CPU multiplies bf16 natively (else recorded as skipped, with why)

    startup            a process that imports clipforge and loads what `embed` and `index add` (a library
                       without tags) load: `resolve_encoder(ckpt, towers=("image",))`, the image tower only,
                       fp32, the weights' fingerprint known; nothing else, and it exits as the commands do
                       (without Python's heap teardown). A bf16 command's cast of its weights is its own work.

The weights file is used once before the timing (its fingerprint hashed and remembered, as after a
user's first command with it); that one-time hash is reported as `fingerprint_first_use_seconds`.
Each clipforge command also runs once, untimed in the medians, before the round-robin: a user's
repeat run is what is timed, and a command that ran before decodes its first photos while torch
imports (`clipforge.data.prefetch` keeps the preprocessing it used). That first run's time is
reported as `first_run_seconds` beside the medians.

Model-only time: the one encoder on `N` uint8 crops (no files, no decoding), per precision, in its
own process timed in the same round-robin as the commands (so under the same load); each command is
reported next to startup + model-only (issue 22.2: goal <= 1.25x), in wall time and, less sensitive
to other processes, in CPU time (the command's decoding workers included).
Other flags are the defaults. Embeddings are compared by path: clipforge fp32
with the HF loop (different resize code: cosine near, not at, 1), bf16 with clipforge fp32.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.anchors import HF_MISSING, hf_available
from benchmarks.common import BENCH_IMAGES, compile_sources, load_average

__all__ = ["run"]

IMAGES = BENCH_IMAGES  # $CLIPFORGE_BENCH_IMAGES: another folder of photos (no ../shared beside the checkout)
ROOT = Path(__file__).resolve().parents[1]

_HF_LOOP = textwrap.dedent('''
    import sys
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPModel

    hf_dir, image_dir, out = sys.argv[1:4]
    model = CLIPModel.from_pretrained(hf_dir).eval()
    processor = CLIPImageProcessor.from_pretrained(hf_dir)
    paths = sorted(str(p) for p in Path(image_dir).iterdir())
    chunks = []
    with torch.no_grad():
        for i in range(0, len(paths), 32):
            images = [Image.open(p).convert("RGB") for p in paths[i:i + 32]]
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            out_i = model.get_image_features(pixel_values=pixels)
            out_i = getattr(out_i, "pooler_output", out_i)
            chunks.append(torch.nn.functional.normalize(out_i, dim=-1))
    np.save(out, torch.cat(chunks).numpy())
    Path(out + ".paths").write_text("\\n".join(paths))
''')


def _setup(zoo: Any, count: int, work: Path) -> dict[str, Path]:
    """The photos, the checkpoint and (with transformers) the HF loop's folder and script under `work`."""
    from safetensors.torch import save_file

    images = work / "images"
    images.mkdir()
    for source in sorted(IMAGES.iterdir())[:count]:
        try:
            os.link(source, images / source.name)
        except OSError:
            shutil.copyfile(source, images / source.name)
    ckpt = work / "vit-b32-random.safetensors"
    save_file({k: v.detach().contiguous() for k, v in zoo.base.state_dict().items()}, str(ckpt))
    if not hf_available():
        return {"images": images, "ckpt": ckpt}
    from transformers import CLIPImageProcessor

    from benchmarks.anchors import build_hf

    hf_dir = work / "hf"
    build_hf(zoo.base, zoo.config).save_pretrained(hf_dir)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(hf_dir)
    script = work / "hf_loop.py"
    script.write_text(_HF_LOOP)
    return {"images": images, "ckpt": ckpt, "hf": hf_dir, "script": script}


def _cli_has(flag: str, *subcommand: str) -> bool:
    out = subprocess.run([sys.executable, "-m", "clipforge", *subcommand, "--help"], capture_output=True, text=True,
                         cwd=ROOT)
    return flag in out.stdout


def _timed(argv: list[str], cache: Path | None = None) -> tuple[float, str, float]:
    """(wall seconds, last stdout line, CPU seconds of the process and the workers it reaped)."""
    env = {**os.environ, "TQDM_DISABLE": "1", **({"CLIPFORGE_CACHE": str(cache)} if cache else {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:5])} ... failed ({done.returncode}): {done.stderr.strip()[-600:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "", cpu


def _by_path(vectors: np.ndarray, paths: list[str]) -> dict[str, np.ndarray]:
    return {Path(p).name: v for p, v in zip(paths, vectors, strict=True)}


def _cosine(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    keys = sorted(set(a) & set(b))
    if not keys:
        return {}
    x = np.stack([a[k] for k in keys]).astype(np.float64)
    y = np.stack([b[k] for k in keys]).astype(np.float64)
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()), "compared": len(keys)}


def _library_vectors(library: Path) -> dict[str, np.ndarray]:
    from clipforge.library.paths import LibraryPaths
    from clipforge.library.store import Store

    store = Store(LibraryPaths(library).db, create=False)
    try:
        fingerprint = store.conn().execute("SELECT fingerprint FROM models LIMIT 1").fetchone()[0]
        records = store.list_images(status="ok")
        vectors = store.vectors_for_shas(fingerprint, [r.sha256 for r in records])
        return {Path(r.path).name: vectors[r.sha256] for r in records}
    finally:
        store.close()


COMMANDS = ("embed", "index-add", "embed-bf16", "index-add-bf16")
"""The clipforge commands among the candidates (each runs once before the timed round-robin)."""

# What every command pays before its first image: the imports and what `embed` and `index add` load, through the
# function they call with the towers they ask for (`library/export.py`, `library_base.py`: `resolve_encoder(...,
# towers=("image",))`, the image tower only once the fingerprint is known), at the command's precision (a bf16
# command casts its weights inside that call: ~0.4 s on the AMX Xeon, review 65, which an fp32 anchor counted as
# the command's own work); then it ends as the commands do (`cli.main.exit_without_teardown`: Python's own
# teardown, ~0.4 s, would make the anchor, not the commands, longer). Loading both towers here (before 2026-12-07)
# made every "vs start-up + model-only" ratio read low.
# argv: CKPT [DEVICE [PRECISION]] (default cpu, fp32; `bench_cuda` passes cuda)
_STARTUP = ("import sys; from clipforge.library.encoder import resolve_encoder; "
            "from clipforge.cli.main import exit_without_teardown; "
            "resolve_encoder(sys.argv[1], device=(sys.argv[2:] or ['cpu'])[0], "
            "precision=(sys.argv[3:] or ['fp32'])[0], towers=('image',)); "
            "exit_without_teardown(0)")
STARTUP_LOADS = ("the image tower, as embed and index add load it (resolve_encoder towers=('image',)), at the "
                 "command's precision")
"""What the start-up anchor loads, recorded with the results (`startup_loads`) so the report can say it."""
# Model-only time, as its own process in the same round-robin as the commands (same load): the one
# encoder (`BatchEncoder` of the commands' `Encoder`) on N uint8 crops at the commands' batch size, after
# one warm-up batch (packing, oneDNN primitives); prints "wall_seconds cpu_seconds" of the loop alone.
# argv: CKPT PRECISION COUNT [DEVICE]
_MODEL_ONLY = textwrap.dedent('''
    import sys, time
    import torch
    from clipforge.library.encoder import resolve_encoder
    ckpt, precision, count, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), 64
    device = (sys.argv[4:] or ["cpu"])[0]
    encoder = resolve_encoder(ckpt, device=device, precision=precision, towers=("image",)).batch_encoder
    r = int(encoder.model.visual.input_resolution)
    crops = torch.randint(0, 256, (batch, r, r, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    encoder.images(crops)
    wall, cpu = time.perf_counter(), time.process_time()
    for first in range(0, count, batch):
        encoder.images(crops[: min(batch, count - first)])
    print(time.perf_counter() - wall, time.process_time() - cpu)
''')
# Run once before the timing, as a user's first command with these weights: the weights fingerprint is
# hashed once per file and remembered (`clipforge.weights.fingerprint`); its one-time cost is reported apart.
_FIRST_USE = ("import sys, time; from clipforge.api import load_model; m = load_model(sys.argv[1], 'cpu'); "
              "t = time.perf_counter(); m.fingerprint; print(time.perf_counter() - t)")


def _candidates(files: dict[str, Path], work: Path, bf16: bool, count: int = 300) -> dict[str, Any]:
    """name -> (round -> argv) of every process timed: the HF loop (where `_setup` made its folder), the commands
    (their bf16 runs where `bf16`), the start-up anchor and model-only time per precision."""
    cf = [sys.executable, "-m", "clipforge"]
    candidates: dict[str, Any] = {}
    if "hf" in files:
        candidates["hf-loop"] = lambda i: [sys.executable, str(files["script"]), str(files["hf"]),
                                           str(files["images"]), str(work / f"hf{i}.npy")]
    candidates["embed"] = lambda i: [*cf, "embed", str(files["images"]), "--model", str(files["ckpt"]), "--out",
                                     str(work / f"embed{i}"), "--float32", "--quiet"]
    candidates["index-add"] = lambda i: [*cf, "index", "add", str(files["images"]), "--model", str(files["ckpt"]),
                                         "--library", str(work / f"lib{i}"), "--quiet"]
    if bf16:
        candidates["embed-bf16"] = lambda i: [*candidates["embed"](f"b{i}"), "--precision", "bf16"]
        candidates["index-add-bf16"] = lambda i: [*candidates["index-add"](f"b{i}"), "--precision", "bf16"]
    candidates["startup"] = lambda i: [sys.executable, "-c", _STARTUP, str(files["ckpt"])]
    if bf16:
        candidates["startup-bf16"] = lambda i: [sys.executable, "-c", _STARTUP, str(files["ckpt"]), "cpu", "bf16"]
    script = work / "model_only.py"
    script.write_text(_MODEL_ONLY)
    for precision in ["fp32", "bf16"] if bf16 else ["fp32"]:
        candidates[f"model-only-{precision}"] = lambda i, p=precision: [
            sys.executable, str(script), str(files["ckpt"]), p, str(count)]
    return candidates


def _summarise(results: dict[str, Any], seconds: dict[str, list[float]], cpus: dict[str, list[float]],
               precisions: list[str]) -> None:
    """Medians per process into `results`: each command's ratio to the HF loop (where it ran) and to start-up +
    model-only time of its precision, in wall and CPU time."""
    count = results["images"]
    for name, ts in seconds.items():
        median = float(np.median(ts))
        results["runs"][name] = {"seconds": median, "all_seconds": ts, "images_per_s": count / median,
                                 "cpu_seconds": float(np.median(cpus[name]))}
    if "hf-loop" in results["runs"]:
        hf_s = results["runs"]["hf-loop"]["seconds"]
        for entry in results["runs"].values():
            entry["vs_hf_loop"] = hf_s / entry["seconds"]
    else:
        results["hf_skipped"] = HF_MISSING
    starts = {p: results["runs"].pop("startup" if p == "fp32" else f"startup-{p}")
              for p in precisions if p == "fp32" or f"startup-{p}" in results["runs"]}
    startup = {p: v["seconds"] for p, v in starts.items()}
    startup_cpu = {p: v["cpu_seconds"] for p, v in starts.items()}
    results["startup_seconds"], results["startup_cpu_seconds"] = startup["fp32"], startup_cpu["fp32"]
    results["startup_seconds_by_precision"] = startup
    results["startup_loads"] = STARTUP_LOADS
    only = {p: results["runs"].pop(f"model-only-{p}") for p in precisions}
    results["model_only_seconds"] = model_only = {p: v["seconds"] for p, v in only.items()}
    results["model_only_cpu_seconds"] = {p: v["cpu_seconds"] for p, v in only.items()}
    for name, entry in results["runs"].items():
        precision = "bf16" if name.endswith("bf16") else "fp32"
        if name != "hf-loop" and precision in model_only:
            entry["model_only_seconds"] = model_only[precision]
            entry["startup_seconds"] = startup.get(precision, startup["fp32"])
            entry["vs_startup_plus_model"] = entry["seconds"] / (entry["startup_seconds"] + model_only[precision])
            # CPU time (decoding workers included) next to start-up + model-only CPU: holds up under load
            entry["cpu_vs_startup_plus_model"] = entry["cpu_seconds"] / (
                startup_cpu.get(precision, startup_cpu["fp32"]) + results["model_only_cpu_seconds"][precision])


def run(quick: bool = False, zoo: Any = None, progress: bool = True, count: int = 300) -> dict:
    """Time the whole processes (once each in quick runs, three times otherwise, median kept)."""
    from benchmarks.zoo import Zoo
    from clipforge.inference import bf16_supported
    from clipforge.library.export import read_export

    if not IMAGES.is_dir():
        return {"skipped": f"{IMAGES} not found (set CLIPFORGE_BENCH_IMAGES)"}
    compile_sources()  # commands run from bytecode, as `import torch` does (see compile_sources)
    zoo = zoo or Zoo("ViT-B/32")
    results: dict[str, Any] = {"images": count, "load_average_start": load_average(), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="clipforge-bench-commands-") as tmp:
        work = Path(tmp)
        files = _setup(zoo, count, work)
        bf16 = {"cli": _cli_has("--precision", "embed"), "cpu": bf16_supported()}
        results["bf16"] = bf16
        if not (bf16["cli"] and bf16["cpu"]):
            results["bf16_skipped"] = ("this CPU has no native bf16 matmuls (AVX512-BF16/AMX)" if not bf16["cpu"]
                                       else "the CLI has no --precision flag yet")
        repeats = 1 if quick else 3  # medians of 3: one slow minute of this VM moved a round 1.5x
        candidates = _candidates(files, work, bf16["cli"] and bf16["cpu"], count)
        precisions = [name.removeprefix("model-only-") for name in candidates if name.startswith("model-only-")]
        cache = work / "cache"  # the children's own download/fingerprint cache
        _, first_use, _ = _timed([sys.executable, "-c", _FIRST_USE, str(files["ckpt"])], cache)
        results["fingerprint_first_use_seconds"] = float(first_use)
        for name, argv in candidates.items():  # each command's first run: what it reads is remembered from here
            if name in COMMANDS:
                t, _, _ = _timed(argv("first"), cache)
                results.setdefault("first_run_seconds", {})[name] = t
                if progress:
                    print(f"    {name:15s} {t:6.1f} s  (first run, not in the medians)", flush=True)
        seconds: dict[str, list[float]] = {name: [] for name in candidates}
        cpus: dict[str, list[float]] = {name: [] for name in candidates}
        for i in range(repeats):  # round-robin: a burst of load hits every candidate
            for name, argv in candidates.items():
                t, last, cpu = _timed(argv(i), cache)
                if name.startswith("model-only"):  # the loop's own wall and CPU time, not its process's
                    t, cpu = (float(v) for v in last.split())
                seconds[name].append(t)
                cpus[name].append(cpu)
                if progress:
                    print(f"    {name:15s} {t:6.1f} s  cpu {cpu:6.1f} s  {last[:90]}", flush=True)
        _summarise(results, seconds, cpus, precisions)
        vectors, rows = read_export(work / "embed0")
        embed_vectors = _by_path(vectors, [r["image_path"] for r in rows])
        results["accuracy"] = {}
        if "hf-loop" in candidates:
            hf_paths = (work / "hf0.npy.paths").read_text().splitlines()
            results["accuracy"]["embed_vs_hf_loop"] = _cosine(embed_vectors,
                                                              _by_path(np.load(work / "hf0.npy"), hf_paths))
        try:
            results["accuracy"]["index_add_vs_embed"] = _cosine(_library_vectors(work / "lib0"), embed_vectors)
        except Exception as exc:  # the store layout is not this benchmark's business; say why it is missing
            results["accuracy"]["index_add_vs_embed"] = {"error": f"{type(exc).__name__}: {exc}"}
        if "embed-bf16" in candidates:
            vectors, rows = read_export(work / "embedb0")
            results["accuracy"]["embed_bf16_vs_fp32"] = _cosine(_by_path(vectors, [r["image_path"] for r in rows]),
                                                                embed_vectors)
    results["load_average_end"] = load_average()
    results["torch_threads"] = torch.get_num_threads()
    return results


def run_on_device(device: torch.device, model: torch.nn.Module, count: int, progress: bool) -> dict[str, Any]:
    """`clipforge embed --device DEVICE` (fp32 and bf16) as whole processes vs start-up + model-only on that
    device, with `model`'s weights (`benchmarks.bench_cuda` runs it on a GPU; medians of 2)."""
    from safetensors.torch import save_file

    from clipforge.library.export import read_export

    if not IMAGES.is_dir():
        return {"skipped": f"{IMAGES} not found (set CLIPFORGE_BENCH_IMAGES)"}
    out: dict[str, Any] = {"device": str(device), "runs": {}, "startup_loads": STARTUP_LOADS}
    with tempfile.TemporaryDirectory(prefix="clipforge-bench-device-") as tmp:
        work = Path(tmp)
        images = work / "images"
        images.mkdir()
        for source in sorted(IMAGES.iterdir())[:count]:
            (images / source.name).symlink_to(source.resolve())
        out["images"] = len(list(images.iterdir()))
        ckpt = work / "vit-b32-random.safetensors"
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(ckpt))
        script = work / "model_only.py"
        script.write_text(_MODEL_ONLY)
        env = {**os.environ, "TQDM_DISABLE": "1", "CLIPFORGE_CACHE": str(work / "cache")}
        cf = [sys.executable, "-m", "clipforge"]
        dev = str(device)
        candidates = {
            "startup": [sys.executable, "-c", _STARTUP, str(ckpt), dev],
            "startup-bf16": [sys.executable, "-c", _STARTUP, str(ckpt), dev, "bf16"],
            "model-only-fp32": [sys.executable, str(script), str(ckpt), "fp32", str(out["images"]), dev],
            "model-only-bf16": [sys.executable, str(script), str(ckpt), "bf16", str(out["images"]), dev],
            "embed": [*cf, "embed", str(images), "--model", str(ckpt), "--out", str(work / "e32"), "--float32",
                      "--quiet", "--device", dev],
            "embed-bf16": [*cf, "embed", str(images), "--model", str(ckpt), "--out", str(work / "e16"), "--float32",
                           "--quiet", "--device", dev, "--precision", "bf16"],
        }
        subprocess.run(candidates["startup"], env=env, cwd=ROOT, check=True, capture_output=True)  # fingerprint once
        for name in ("embed", "embed-bf16"):  # each command's first run, untimed, as in `run`
            subprocess.run(candidates[name], env=env, cwd=ROOT, capture_output=True)
            shutil.rmtree(work / ("e16" if name.endswith("bf16") else "e32"), ignore_errors=True)
        seconds: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(2):
            for name, argv in candidates.items():
                if name.startswith("embed"):  # each run writes a fresh export
                    shutil.rmtree(work / ("e16" if name.endswith("bf16") else "e32"), ignore_errors=True)
                start = time.perf_counter()
                done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
                wall = time.perf_counter() - start
                if done.returncode != 0:
                    out["runs"][name] = {"error": done.stderr.strip()[-800:]}
                    break
                # model-only prints the loop's own "wall cpu" seconds
                seconds[name].append(float(done.stdout.split()[-2]) if name.startswith("model-only") else wall)
                if progress:
                    print(f"    {device} {name:16s} {seconds[name][-1]:6.2f} s", flush=True)
        for name, ts in seconds.items():
            if ts:
                out["runs"][name] = {"seconds": float(np.median(ts)), "all_seconds": ts}
        for name in ("embed", "embed-bf16"):
            precision = "bf16" if name.endswith("bf16") else "fp32"
            startup = out["runs"].get("startup" if precision == "fp32" else "startup-bf16", {}).get("seconds")
            only = out["runs"].get(f"model-only-{precision}", {}).get("seconds")
            if startup and only and "seconds" in out["runs"].get(name, {}):
                out["runs"][name]["vs_startup_plus_model"] = out["runs"][name]["seconds"] / (startup + only)
        if all("seconds" in out["runs"].get(n, {}) for n in ("embed", "embed-bf16")):
            exports = [read_export(work / folder) for folder in ("e32", "e16")]
            fp32, bf16 = (_by_path(v, [r["image_path"] for r in rows]) for v, rows in exports)
            out["embed_bf16_vs_fp32_cosine_min"] = _cosine(bf16, fp32)["cosine_min"]
    return out
