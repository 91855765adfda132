"""Files on disk -> stored embeddings: `encode_image_files`, the Python entry to the one path.

The work is done by the one reader (`clipforge.data.files`: DataLoader workers read each file
once, draft-decode big JPEGs, ship uint8 crops, bad files become `BadImage`) and the one encoder
(`clipforge.inference.encoder.BatchEncoder`: normalise whole batches, run the fast path in the
requested precision) - the same two pieces `index add`, `embed`, `classify` and `eval` use.
The main process's torch thread count can be set for the run (`threads`), because N workers x M
threads on a small machine oversubscribes badly.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import default_workers  # re-exported: the one decoding-worker default

__all__ = ["EncodeResult", "default_workers", "encode_image_files", "save_embeddings"]


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
    """Embed image files with `model`'s image tower (see module docstring).

    `precision` ("fp32"/"bf16") runs the fast path (bf16 on a copy: the caller's model keeps its
    weights); None uses `model` exactly as it is. `threads` sets torch's intra-op threads in this
    process for the duration (default: unchanged); `workers=None` uses `default_workers()`.
    """
    from tqdm.auto import tqdm

    from clipforge.inference.encoder import BatchEncoder

    from .files import encode_files

    encoder = BatchEncoder(model, precision, copy_model=True)
    workers = default_workers() if workers is None else int(workers)
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        with tqdm(total=len(paths), unit="img", desc="encode", disable=not progress, leave=False) as bar:
            out = encode_files(paths, encoder, batch_size=batch_size, workers=workers, draft=draft,
                               on_batch=bar.update)
    finally:
        torch.set_num_threads(saved_threads)
    return EncodeResult(
        embeddings=out.vectors, paths=out.paths, failed=[(b.path, b.reason) for b in out.bad], seconds=out.seconds,
        settings={"batch_size": batch_size, "workers": workers, "threads": int(threads or saved_threads),
                  "draft": draft, "precision": precision})


def save_embeddings(result: EncodeResult, out_dir: str | os.PathLike) -> Path:
    """Write `embeddings.npy` [N, D] float32 and `embeddings.json` (paths, failures, settings), atomically."""
    from clipforge.atomic import atomic_path, write_json_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"count": len(result.paths), "dim": int(result.embeddings.shape[1]), "paths": result.paths,
            "failed": [{"path": p, "reason": r} for p, r in result.failed], "settings": result.settings,
            "seconds": result.seconds}
    with atomic_path(out_dir / "embeddings.npy", suffix=".npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, result.embeddings)
    write_json_atomic(out_dir / "embeddings.json", meta)
    return out_dir
