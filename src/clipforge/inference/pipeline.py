"""Files on disk -> stored embeddings, as fast as the CPU allows.

Where the time goes for a folder of photos: decoding (a 12-megapixel JPEG costs ~100 ms to
decode in full), resizing, and the image tower. So:

- DataLoader worker processes decode, with JPEG draft decoding (DCT-domain downscale to at
  least the model resolution, then the exact bicubic resize; `clipforge.image`), and ship
  uint8 224x224 crops (4x smaller than float tensors); the main process normalises a whole
  batch in one vectorised step and runs the tower;
- the tower runs batched, under `torch.inference_mode`, on a `prepare`d model (fp32 or bf16);
- workers run torch with one thread (`clipforge.data.make_loader`) and the main process's
  thread count is set explicitly, because N workers x M threads on a 2-core machine
  oversubscribes badly;
- bad files are skipped, counted and reported with their reasons, never fatal.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from clipforge.inference.precision import is_prepared, prepare

__all__ = ["EncodeResult", "ImageFiles", "default_workers", "encode_image_files", "save_embeddings"]


def default_workers() -> int:
    """Decoding workers: one per core beyond the first, at least one, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 1))


class ImageFiles(Dataset):
    """Paths -> (uint8 [R, R, 3] crop, 0), or a `BadSample` naming the file and the reason."""

    def __init__(self, paths: Sequence[str | os.PathLike], n_px: int, draft: bool = True) -> None:
        from clipforge.image import Preprocess

        self.paths = [str(p) for p in paths]
        self.preprocess = Preprocess(n_px, draft=draft)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        from clipforge.data.base import DECODE_ERRORS, BadSample, error_reason

        path = self.paths[index]
        try:
            pixels = self.preprocess.pixels(path)
        except DECODE_ERRORS as exc:
            return BadSample(index, path, error_reason(exc))
        return torch.from_numpy(np.ascontiguousarray(pixels)), 0


@dataclass
class EncodeResult:
    """`embeddings[i]` (unit vectors, float32) belongs to `paths[i]`; `failed` lists (path, reason)."""

    embeddings: np.ndarray
    paths: list[str]
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return (len(self.paths) + len(self.failed)) / self.seconds if self.seconds else 0.0

    def failure_summary(self) -> str:
        if not self.failed:
            return "no bad images"
        kinds = Counter(reason for _, reason in self.failed)
        return f"{len(self.failed)} bad images skipped (" + ", ".join(f"{n} {k}" for k, n in kinds.most_common()) + ")"


def encode_image_files(
    model: torch.nn.Module,
    paths: Sequence[str | os.PathLike],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    threads: int | None = None,
    draft: bool = True,
    precision: str | None = "fp32",
    progress: bool = True,
) -> EncodeResult:
    """Embed image files with `model`'s image tower (see module docstring for the choices).

    `precision` ("fp32"/"bf16") prepares a copy of an unprepared model (the caller's model is
    not modified); None uses `model` as it is. `threads` sets torch's intra-op threads in this
    process for the duration (default: unchanged); `workers=None` uses `default_workers()`.
    """
    from clipforge.data import make_loader
    from clipforge.image import Preprocess

    if precision is not None and not is_prepared(model):
        model = prepare(copy.deepcopy(model), precision)
    workers = default_workers() if workers is None else int(workers)
    n_px = int(model.visual.input_resolution)
    dataset = ImageFiles(paths, n_px, draft=draft)
    normalizer = Preprocess(n_px)
    embed_dim = int(model.embed_dim)
    out = np.empty((len(dataset), embed_dim), dtype=np.float32)
    kept = np.zeros(len(dataset), dtype=bool)
    failed: list[tuple[str, str]] = []
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    start = time.perf_counter()
    try:
        loader = make_loader(dataset, batch_size=batch_size, workers=workers,
                             prefetch_factor=2 if workers else None)
        with torch.inference_mode(), tqdm(total=len(dataset), unit="img", desc="encode",
                                          disable=not progress, leave=False) as bar:
            for batch in loader:
                failed += [(err.source, err.reason) for err in batch.errors]
                if len(batch.indices):
                    features = model.encode_image(normalizer.normalize(batch.images)).float()
                    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                    index = batch.indices.numpy()
                    out[index] = features.numpy()
                    kept[index] = True
                bar.update(len(batch.indices) + len(batch.errors))
    finally:
        torch.set_num_threads(saved_threads)
    seconds = time.perf_counter() - start
    order = np.flatnonzero(kept)
    return EncodeResult(
        embeddings=out[order], paths=[dataset.paths[i] for i in order], failed=failed, seconds=seconds,
        settings={"batch_size": batch_size, "workers": workers, "threads": int(threads or saved_threads),
                  "draft": draft, "precision": precision})


def save_embeddings(result: EncodeResult, out_dir: str | os.PathLike) -> Path:
    """Write `embeddings.npy` [N, D] float32 and `embeddings.json` (paths, failures, settings), atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"count": len(result.paths), "dim": int(result.embeddings.shape[1]), "paths": result.paths,
            "failed": [{"path": p, "reason": r} for p, r in result.failed], "settings": result.settings,
            "seconds": result.seconds}
    for name, write in (("embeddings.npy", lambda f: np.save(f, result.embeddings)),
                        ("embeddings.json", lambda f: f.write(json.dumps(meta, indent=2).encode()))):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
            os.replace(tmp, out_dir / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out_dir
