"""The files of an embedding export, in clip-retrieval's layout: how they are cut, named, written and read.

Owns the cut into partitions (`partition_name`, `rank_partitions`, `_partition_count`), each partition's three
files (`_paths`: npy vectors, parquet metadata rows, stats JSON), their atomic writing with the stats file last
(`_write_partition`, fed by `PartitionWriter`), and reading an export back (`read_export`,
`load_export_manifest`). The layout itself is described in `clipforge.library.export`.

**File names in the output** (the parquet's ``image_path``, the ``path`` of each failure in the stats files, the
manifest and ``embed --json``, `BadImage.to_dict`) are written losslessly (`path_text`): a name that is valid UTF-8
as itself, one that is not (raw bytes, as Linux allows) as ``b64:`` + the base64 of its bytes, the form the Milvus
store keys such names by; `dbfile.text_path` reads either back. The ``\\xNN`` escapes of `display_path` (kept for
the lines people read) gave ``caf\\xe9.jpg`` to the byte name and to a file literally named so: two files, one
string, neither openable. Exported names are absolute (they start with ``/``), so no real name is mistaken for a
``b64:`` form.

**A refused write** (a full disk, a file-size limit such as ``ulimit -f``, a quota, no permission) is
`ExportWriteError`: one line naming the file and what to do (`writing`). numpy says "256000 requested and 153536
written" and nothing else; the temporary is removed (`clipforge.atomic`), no stats file marks the partition done, so
a rerun of the same command writes it again.
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from clipforge.atomic import atomic_path, write_json_atomic
from clipforge.data.base import BadImage
from clipforge.data.files import EmbeddedBatch
from clipforge.disk_full import DISK_FULL_ERRNOS, refusal_words
from clipforge.library.dbfile import display_path, path_text
from clipforge.library.export_whole import OUTPUT_BYTES, output_bytes

_PARTITION_GLOBS = (
    ("img_emb", "img_emb_*.npy"),
    ("metadata", "metadata_*.parquet"),
    ("stats", "stats_*.json"),
)


class ExportWriteError(OSError):
    """The disk refused a write of the export (full, a file-size limit, a quota, no permission): one sentence."""

    def __str__(self) -> str:  # one sentence, not "[Errno 27] ..."
        return str(self.strerror)


def _refusal(exc: OSError) -> tuple[str, str]:
    """(why, what to do) for an OSError raised while writing: said as `index add` says it of its database."""
    code = exc.errno
    if code in DISK_FULL_ERRNOS:
        return refusal_words(code)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"this user may not write there ({exc.strerror or exc})", "give this user write access, or choose another --out"
    detail = exc.strerror or str(exc) or exc.__class__.__name__
    return (f"the disk refused a write ({detail}: full, or a file-size limit such as `ulimit -f` reached)",
            "free some space (or raise the limit)")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError raised by the block (writing `path`) into `ExportWriteError` naming `path` and the remedy."""
    try:
        yield
    except ExportWriteError:
        raise
    except OSError as exc:
        why, fix = _refusal(exc)
        raise ExportWriteError(
            exc.errno or errno.EIO,
            f"could not write {display_path(os.fspath(path))}: {why}; the partitions written before are kept: "
            f"{fix} and run the same command again to write the rest") from exc


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
    with writing(emb_path), atomic_path(emb_path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(_Chunks(f), vectors)
    table = pa.Table.from_arrays(
        [
            _strings(rows["image_path"]),
            _strings(rows["sha256"]),
            _int32s(rows["width"]),
            _int32s(rows["height"]),
        ],
        names=["image_path", "sha256", "width", "height"],
    )
    with writing(meta_path), atomic_path(meta_path, suffix=".parquet") as tmp:
        pq.write_table(table, str(tmp))
    with writing(stats_path):
        # the sizes written, which a resume compares before it keeps the partition (`export_whole`)
        stats = {**stats, OUTPUT_BYTES: output_bytes(emb_path, meta_path)}
        write_json_atomic(stats_path, stats)  # last: its presence marks the partition complete


class _Chunks:
    """A file that numpy writes through Python's `write`, chunk by chunk. Given the file object itself, `np.save`
    hands it to C stdio (`ndarray.tofile`), which ignores a failed final flush: under `ulimit -f` a partition's
    npy came out cut at the limit, with no error, and was renamed into place; a big one failed with "256000
    requested and 153536 written" and no errno. Python's writes raise the OSError (EFBIG, ENOSPC) instead."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def write(self, data: bytes) -> int:
        return int(self.file.write(data))


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
            self.rows["image_path"].append(path_text(item.path))  # parquet needs UTF-8: lossless `path_text`
            self.rows["sha256"].append(item.sha256)
            self.rows["width"].append(item.width)
            self.rows["height"].append(item.height)
        self.bad += batch.bad

    def vectors(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0, self.dim), dtype=self.dtype)


def _partition_count(files: int, shard_size: int) -> int:
    return max(1, math.ceil(files / shard_size)) if files else 0


def read_export(out_dir: str | os.PathLike[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """All vectors (float32) and metadata rows of an export, checking that npy and parquet align. Each row's
    ``image_path`` is as stored (`path_text`); `text_path` gives the name that opens the file."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    vectors: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    for emb_path in sorted((out / "img_emb").glob("img_emb_*.npy")):
        name = emb_path.stem[len("img_emb_") :]
        meta_path, stats_path = _paths(out, name)[1:]
        if (out / "stats").is_dir() and not stats_path.is_file():  # written last: its partition is whole
            raise ValueError(f"{out}: partition {name} is not finished (no {stats_path.name}): run the same "
                             "`clipforge embed` again to finish it")
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
