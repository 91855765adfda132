"""Decoding accuracy in embedding space, and files on disk -> embeddings (in memory) end to end.

Decode: `benchmarks.bench_decode` (the image package's benchmark) measures exact vs JPEG-draft
decode speed and pixel-space similarity; here we add what users care about - the cosine
similarity of the *embeddings* (ViT-B/32 image tower, random weights, fp32) of draft-decoded vs
exactly decoded images. Images that are not drafted (smaller than 2x the model resolution, or
not JPEG) decode to identical pixels and count as cosine 1.

End to end: clipforge's pipeline (`clipforge.data.encode_image_files`: DataLoader
workers, draft decode, uint8 transfer, batched encode on a prepared fp32 model; the embeddings
are returned in memory, nothing is written) vs the plain loop a Hugging Face user writes (PIL
open -> `CLIPImageProcessor` -> `CLIPModel`, batches of 32, fp32), on the 1,000 real
imagenet_sample JPEGs (or $CLIPFORGE_BENCH_IMAGES) and on generated 12-megapixel JPEGs.
clipforge's side runs with the best of 2-3 workers/threads settings, each probed on a short run
first: the pipeline's own ceiling, not what a command picks (the commands section times those).
transformers' default `CLIPImageProcessor` needs torchvision (absent here); the PIL/numpy
implementation it falls back to, `CLIPImageProcessorPil`, is used explicitly.

The Hugging Face loop runs in a process of its own, as its users run it: clipforge's first fast
call makes glibc's malloc keep freed memory (`clipforge.inference._memory`), and a loop in the
same process would inherit that (12-megapixel decodes: 3.2 -> 4.9 img/s), which a user's HF
script does not have. The child builds the same seeded weights, warms up on two files and is
timed over all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.common import BENCH_IMAGES
from benchmarks.zoo import Zoo

__all__ = ["decode_embedding_similarity", "hf_encode_files", "run", "synthetic_set"]

IMAGENET_SAMPLE = BENCH_IMAGES


def _spread(items: list, count: int) -> list:
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def synthetic_set(folder: Path, distinct: int, copies: int) -> list[Path]:
    """`distinct` generated 4000x3000 JPEGs (bench_decode's photo-like generator), each listed
    `copies` times so the set is large enough to time without generating hundreds of files."""
    from benchmarks.bench_decode import generate_jpegs

    paths = generate_jpegs(folder, distinct)
    return [p for _ in range(copies) for p in paths]


@torch.inference_mode()
def decode_embedding_similarity(model: torch.nn.Module, paths: list[Path], batch: int = 32,
                                progress: bool = True) -> dict:
    from clipforge.image import Preprocess, decode_image

    n_px = int(model.visual.input_resolution)
    exact, draft = Preprocess(n_px, draft=False), Preprocess(n_px, draft=True)
    drafted = [p for p in dict.fromkeys(paths) if decode_image(p, draft_size=n_px).drafted]
    cosines: list[float] = []
    for start in tqdm(range(0, len(drafted), batch), desc="draft vs exact embeddings", disable=not progress,
                      leave=False):
        chunk = drafted[start:start + batch]
        a = model.encode_image(exact.batch(chunk)).float()
        b = model.encode_image(draft.batch(chunk)).float()
        cosines += torch.nn.functional.cosine_similarity(a, b, dim=-1).tolist()
    unique = len(dict.fromkeys(paths))
    values = np.array(cosines + [1.0] * (unique - len(drafted)))
    return {"images": unique, "drafted": len(drafted), "cosine_min": float(values.min()),
            "cosine_mean": float(values.mean()),
            "cosine_mean_drafted": float(np.mean(cosines)) if cosines else None}


@torch.inference_mode()
def hf_encode_files(hf: torch.nn.Module, paths: list[Path], batch: int = 32, progress: bool = True) -> np.ndarray:
    """The baseline: PIL decode, HF's image processor, CLIPModel, one batch at a time."""
    from PIL import Image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    n_px = int(hf.config.vision_config.image_size)
    processor = CLIPImageProcessorPil(size={"shortest_edge": n_px}, crop_size={"height": n_px, "width": n_px})
    out = []
    for start in tqdm(range(0, len(paths), batch), desc="hf loop", disable=not progress, leave=False):
        images = []
        for path in paths[start:start + batch]:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        inputs = processor(images=images, return_tensors="pt")
        feats = hf.get_image_features(pixel_values=inputs["pixel_values"])
        feats = getattr(feats, "pooler_output", feats).float()
        out.append((feats / feats.norm(dim=-1, keepdim=True)).numpy())
    return np.concatenate(out)


def _hf_in_own_process(model_name: str, paths: list[Path]) -> tuple[float, np.ndarray]:
    """`hf_encode_files` on `paths` in a fresh interpreter (glibc's malloc as a user's script has it)."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="clipforge-bench-hf-") as folder:
        job = Path(folder) / "job.json"
        job.write_text(json.dumps({"model": model_name, "paths": [str(p) for p in paths]}), encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "benchmarks.bench_pipeline", "--hf-loop", str(job)], cwd=root,
                              capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"HF loop process failed: {done.stderr[-2000:]}")
        seconds = float(json.loads(job.read_text(encoding="utf-8"))["seconds"])
        return seconds, np.load(Path(folder) / "embeddings.npy")


def _hf_loop_job(job: Path) -> None:
    """The child's side of `_hf_in_own_process`: time the loop, write seconds and embeddings beside `job`."""
    from clipforge.inference._memory import retain_freed_memory

    spec = json.loads(job.read_text(encoding="utf-8"))
    zoo = Zoo(spec["model"])
    hf = zoo.hf()
    paths = [Path(p) for p in spec["paths"]]
    hf_encode_files(hf, paths[:2], progress=False)  # warm, as the clipforge side is after its tuning probes
    start = time.perf_counter()
    embeddings = hf_encode_files(hf, paths, progress=False)
    seconds = time.perf_counter() - start
    if retain_freed_memory.cache_info().currsize:  # nothing here may have packed a clipforge model
        raise RuntimeError("the HF loop process changed malloc's settings")
    np.save(job.parent / "embeddings.npy", embeddings)
    job.write_text(json.dumps({"seconds": seconds}), encoding="utf-8")


def _pipeline(model: torch.nn.Module, paths: list[Path], workers: int, threads: int) -> tuple[float, np.ndarray]:
    from clipforge.data import encode_image_files

    result = encode_image_files(model, paths, batch_size=32, workers=workers, threads=threads, precision=None,
                                progress=False)
    if result.failed:
        raise RuntimeError(f"pipeline failed on {result.failure_summary()}")
    return result.seconds, result.embeddings


def _compare(zoo: Zoo, paths: list[Path], rounds: int, tune: list[tuple[int, int]], probe_size: int) -> dict:
    """Pick workers/threads on a short probe, then time both pipelines `rounds` times, alternating."""
    from benchmarks.anchors import hf_available

    model, with_hf = zoo.prepared("fp32"), zoo.is_vit and hf_available()
    for path in dict.fromkeys(paths):  # page cache: measure decoding, not the disk
        Path(path).read_bytes()
    tuning = {}
    probe = paths[:probe_size]
    for workers, threads in tune:  # short probe runs to pick the 2-core settings
        seconds, _ = _pipeline(model, probe, workers, threads)
        tuning[f"workers={workers},threads={threads}"] = len(probe) / seconds
    workers, threads = max(tune, key=lambda wt: tuning[f"workers={wt[0]},threads={wt[1]}"]) if tune else (1, 2)
    cf_times, hf_times = [], []
    cf_emb = hf_emb = None
    for _ in range(rounds):
        seconds, cf_emb = _pipeline(model, paths, workers, threads)
        cf_times.append(seconds)
        if with_hf:
            seconds, hf_emb = _hf_in_own_process(zoo.name, paths)
            hf_times.append(seconds)
    out = {"images": len(paths), "distinct_files": len(dict.fromkeys(paths)), "workers": workers, "threads": threads,
           "tuning_images_per_s": tuning, "clipforge_images_per_s": len(paths) / float(np.median(cf_times)),
           "clipforge_seconds": cf_times}
    if hf_times:
        cos = (cf_emb * hf_emb).sum(axis=1)
        out.update({"hf_images_per_s": len(paths) / float(np.median(hf_times)), "hf_seconds": hf_times,
                    "speedup": float(np.median(hf_times) / np.median(cf_times)),
                    "embedding_cosine_vs_hf_min": float(cos.min()), "embedding_cosine_vs_hf_mean": float(cos.mean())})
    return out


def run(quick: bool = False, zoo: Zoo | None = None, progress: bool = True) -> dict:
    from benchmarks import bench_decode

    own = zoo is None
    zoo = zoo or Zoo("ViT-B/32")
    out: dict = {"decode": bench_decode.run(quick=quick, progress=progress)}
    model = zoo.prepared("fp32")
    real = sorted(IMAGENET_SAMPLE.iterdir()) if IMAGENET_SAMPLE.is_dir() else []
    tune = [(1, 2), (2, 2), (2, 1)] if not quick else [(1, 2), (2, 1)]
    with tempfile.TemporaryDirectory(prefix="clipforge-bench-12mp-") as folder:
        synthetic = synthetic_set(Path(folder), 4 if quick else 12, 8 if quick else 6)
        out["decode_embeddings"] = {
            "imagenet_sample": decode_embedding_similarity(model, _spread(real, 100 if quick else 1000), progress=progress)
            if real else None,
            "synthetic_12mp": decode_embedding_similarity(model, synthetic, progress=progress),
        }
        out["e2e"] = {"synthetic_12mp": _compare(zoo, synthetic, 1 if quick else 2, tune, 16 if quick else 48)}
    if real:
        subset = _spread(real, 200 if quick else 1000)
        # one round: 1,000 real images already take minutes per pipeline on 2 cores
        out["e2e"]["imagenet_sample"] = _compare(zoo, subset, 1, tune, 32 if quick else 96)
    if own:
        zoo.close()
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--hf-loop":
        _hf_loop_job(Path(sys.argv[2]))
    else:
        sys.exit("usage: python -m benchmarks.bench_pipeline --hf-loop JOB.json (run by the pipeline benchmark)")
