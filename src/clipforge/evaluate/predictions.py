"""Per-sample predictions as Parquet: which image, its label, the top-k class ids and scores.

A suite's aggregate numbers are only as trustworthy as what can be inspected underneath them:
one row per evaluated sample lets a person find the images a model gets wrong, and lets two
runs be compared sample by sample. Columns: ``index`` (dataset position), ``source`` (file or
archive member), ``label``, ``topk_ids`` (list<int32>) and ``topk_scores`` (list<float32>),
best first under the metrics module's tie rule (lower class id first among equal scores); a multi-label set
(VOC 2007) adds ``labels`` (list<int32>: every class in the image).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from clipforge.atomic import atomic_path

__all__ = ["read_predictions", "topk_rows", "write_predictions"]


def topk_rows(scores: torch.Tensor | Iterator[torch.Tensor], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N, k] int32, scores [N, k] float32), best first, ties to the lower class id. `scores` [N, C], or an
    iterator of its consecutive row blocks (retrieval's `similarity_blocks`: images x captions is never whole)."""
    if isinstance(scores, Iterator):
        parts = [topk_rows(block, k) for block in scores]
        if not parts:
            return np.zeros((0, 0), dtype=np.int32), np.zeros((0, 0), dtype=np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    s = torch.as_tensor(scores).detach().float().cpu()
    k = min(int(k), s.shape[1])
    order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
    return order.numpy().astype(np.int32), s.gather(1, order).numpy().astype(np.float32)


def write_predictions(path: str | Path, indices: Sequence[int] | torch.Tensor, sources: Sequence[str],
                      labels: Sequence[int] | torch.Tensor, scores: torch.Tensor | Iterator[torch.Tensor],
                      k: int = 5, present: Sequence[Sequence[int]] | None = None) -> Path:
    """`scores`: [N, C], or an iterator of its row blocks (`topk_rows`). `present`: a multi-label set's classes in
    each image (VOC 2007), written as ``labels`` (list<int32>) beside ``label``, which is then only the first of
    them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, top = topk_rows(scores, k)
    columns = {
        "index": pa.array(np.asarray(indices, dtype=np.int64)),
        "source": pa.array([str(s) for s in sources], pa.string()),
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
        "topk_ids": pa.array(list(ids), pa.list_(pa.int32())),
        "topk_scores": pa.array(list(top), pa.list_(pa.float32())),
    }
    if present is not None:
        columns["labels"] = pa.array([list(map(int, p)) for p in present], pa.list_(pa.int32()))
    table = pa.table(columns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_predictions(path: str | Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()
