"""The files of an embedding export, in clip-retrieval's layout: how they are cut, named, written and read.

Owns the cut into partitions (`partition_name`, `rank_partitions`, `_partition_count`), each partition's three
files (`_paths`: npy vectors, parquet metadata rows, stats JSON), their atomic writing with the stats file last
(`_write_partition`, fed by `PartitionWriter`), and reading an export back (`read_export`,
`load_export_manifest`). The layout itself is described in `clipforge.library.export`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from clipforge.atomic import atomic_path, write_json_atomic
from clipforge.data.base import BadImage
from clipforge.data.files import EmbeddedBatch
from clipforge.library.dbfile import display_path

_PARTITION_GLOBS = (
    ("img_emb", "img_emb_*.npy"),
    ("metadata", "metadata_*.parquet"),
    ("stats", "stats_*.json"),
)


def partition_name(index: int, count: int) -> str:
    """Zero-padded like clip-retrieval, so lexical order is numeric order."""
    return str(index).zfill(int(math.log10(max(1, count))) + 1)


def rank_partitions(count: int, rank: int, world_size: int) -> list[int]:
    return [i for i in range(count) if i % world_size == rank]


def _paths(out: Path, name: str) -> tuple[Path, Path, Path]:
    return (
        out / "img_emb" / f"img_emb_{name}.npy",
        out / "metadata" / f"metadata_{name}.parquet",
        out / "stats" / f"stats_{name}.json",
    )


# The metadata columns are built from buffers, not with `pa.array(list)`: that call imports pandas, where it is
# installed, to check its argument for pandas objects (0.24 s of an `embed` on a 2-core machine, for nothing).
def _strings(values: list[str]) -> Any:
    import pyarrow as pa

    data = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    kind, width = (pa.string(), np.int32) if offsets[-1] < 2**31 else (pa.large_string(), np.int64)
    return pa.Array.from_buffers(
        kind, len(data), [None, pa.py_buffer(offsets.astype(width)), pa.py_buffer(b"".join(data))]
    )


def _int32s(values: list[int]) -> Any:
    import pyarrow as pa

    return pa.Array.from_buffers(
        pa.int32(), len(values), [None, pa.py_buffer(np.asarray(values, dtype=np.int32))]
    )


def _write_partition(
    out: Path, name: str, vectors: np.ndarray, rows: dict[str, list[Any]], stats: dict[str, Any]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    emb_path, meta_path, stats_path = _paths(out, name)
    with atomic_path(emb_path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, vectors)
    table = pa.Table.from_arrays(
        [
            _strings(rows["image_path"]),
            _strings(rows["sha256"]),
            _int32s(rows["width"]),
            _int32s(rows["height"]),
        ],
        names=["image_path", "sha256", "width", "height"],
    )
    with atomic_path(meta_path, suffix=".parquet") as tmp:
        pq.write_table(table, str(tmp))
    write_json_atomic(stats_path, stats)  # last: its presence marks the partition complete


class PartitionWriter:
    """clip-retrieval's writer for `embed_files`: one partition's vectors and metadata rows, in reading
    order (every file its own row, repeated bytes included), written atomically by `_write_partition`."""

    def __init__(self, dim: int, dtype: str) -> None:
        self.dim, self.dtype = dim, dtype
        self.chunks: list[np.ndarray] = []
        self.rows: dict[str, list[Any]] = {"image_path": [], "sha256": [], "width": [], "height": []}
        self.bad: list[BadImage] = []

    def write(self, batch: EmbeddedBatch) -> None:
        if batch.rows:
            self.chunks.append(batch.vectors.astype(self.dtype))
        for k in batch.rows:
            item = batch.files[k]
            self.rows["image_path"].append(display_path(item.path))  # parquet/JSON need UTF-8: \xNN escapes
            self.rows["sha256"].append(item.sha256)
            self.rows["width"].append(item.width)
            self.rows["height"].append(item.height)
        self.bad += batch.bad

    def vectors(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0, self.dim), dtype=self.dtype)


def _partition_count(files: int, shard_size: int) -> int:
    return max(1, math.ceil(files / shard_size)) if files else 0


def read_export(out_dir: str | os.PathLike[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """All vectors (float32) and metadata rows of an export, checking that npy and parquet align."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    vectors: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    for emb_path in sorted((out / "img_emb").glob("img_emb_*.npy")):
        name = emb_path.stem[len("img_emb_") :]
        meta_path = out / "metadata" / f"metadata_{name}.parquet"
        array = np.load(emb_path)
        table = pq.read_table(meta_path)
        if table.num_rows != len(array):
            raise ValueError(f"{meta_path} has {table.num_rows} rows but {emb_path} has {len(array)} vectors")
        vectors.append(array.astype(np.float32))
        rows.extend(table.to_pylist())
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32), []
    return np.concatenate(vectors), rows


def load_export_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "manifest.json").read_text(encoding="utf-8"))
