"""Whether a partition's vectors and rows on disk are whole: what a resume checks before it keeps a partition.

A partition's stats file is written last, so its presence says that its npy and parquet were once written whole; it
cannot say that they still are. A copy cut short (``cp`` onto a full disk, an rsync stopped midway), a file emptied
by a disk problem or by hand: each was kept by a resume as "already done", with a manifest calling the job complete,
while ``np.load`` said "No data left in file" and pyarrow "Parquet file size is 0 bytes". So a partition is kept only
when `outputs_problem` finds nothing:

- its npy's header reads, declares the shape ``(embedded, dim)`` and the dtype its stats record, in C order, and the
  file is that header plus exactly the array's bytes (a cut shows, and so do bytes appended);
- its parquet's footer reads (the footer is a parquet's last bytes: any cut loses it) and counts ``embedded`` rows;
- where its stats record the two files' sizes as written (``output_bytes``, `output_bytes`), both are those sizes.

Cost: one npy header and one parquet footer, about 0.05 ms a partition whatever its size (measured on a
100,000 x 512 float16 npy of 102 MB and its 7 MB parquet). A sha256 of the outputs would catch bytes overwritten in
place too, but checking it means reading every output back: ~0.07 s per 100 MB from the page cache (measured; more
from a disk), hours for a resume of a multi-terabyte job, where the header and footer take a fraction of a second.
So sizes are recorded, not hashes.

Partitions whose stats hold no ``output_bytes`` (written by the release before it) are checked by header and footer
alone, and kept when whole: never embedded again to be sure. Sizes are read only beside a ``files_stamp``: a stats
file with no stamp comes from an earlier release still, which recorded no sizes either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["OUTPUT_BYTES", "output_bytes", "outputs_problem"]

OUTPUT_BYTES = "output_bytes"  # the stats key: {"img_emb": bytes of the npy, "metadata": bytes of the parquet}


def output_bytes(emb_path: Path, meta_path: Path) -> dict[str, int]:
    """The sizes a partition's stats record of its npy and parquet, as they are on disk now (just written)."""
    return {"img_emb": emb_path.stat().st_size, "metadata": meta_path.stat().st_size}


def _name(path: Path) -> str:
    """A partition file as the summary names it: its folder in the export and its name."""
    return f"{path.parent.name}/{path.name}"


def _npy_problem(path: Path, rows: int, dim: int, dtype: str) -> str | None:
    """Why the npy at `path` is not ``rows`` x ``dim`` vectors of `dtype`, whole; None when it is."""
    import numpy as np

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return f"{_name(path)} is empty"
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, found = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, found = np.lib.format.read_array_header_2_0(f)
            else:
                return f"{_name(path)} is an npy file of version {version}, not one numpy's np.save writes here"
            header = f.tell()
    except (OSError, ValueError) as exc:  # numpy: "EOF: reading magic string", a header cut short
        return f"{_name(path)} has no readable npy header ({' '.join(str(exc).split())})"
    if fortran or tuple(shape) != (rows, dim) or found != np.dtype(dtype):
        return (f"{_name(path)} holds {'x'.join(map(str, shape)) or 'scalar'} {found} vectors"
                f"{' in Fortran order' if fortran else ''}, where its stats say {rows}x{dim} {dtype}")
    expected = header + rows * dim * found.itemsize
    if size < expected:
        return f"{_name(path)} is cut short ({size} of its {expected} bytes)"
    if size > expected:
        return f"{_name(path)} holds {size - expected} bytes after its vectors"
    return None


def _parquet_problem(path: Path, rows: int) -> str | None:
    """Why the parquet at `path` is not `rows` rows with a readable footer; None when it is."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return f"{_name(path)} is empty"
            f.seek(max(0, size - 4))
            if size < 12 or f.read(4) != b"PAR1":  # a parquet ends with its footer and these 4 bytes
                return f"{_name(path)} has no parquet footer at its end (cut short, or not a parquet file)"
        found = pq.read_metadata(path).num_rows  # the footer only
    except (OSError, pa.ArrowException) as exc:
        return f"{_name(path)} has no readable parquet footer ({' '.join(str(exc).split())})"
    if found != rows:
        return f"{_name(path)} holds {found} rows, where its stats say {rows}"
    return None


def outputs_problem(paths: tuple[Path, Path, Path], stats: dict[str, Any]) -> str | None:
    """Why partition `paths` (npy, parquet, stats) is not whole as its `stats` describe it, in one phrase naming the
    file; None when whole. `stats` must hold ``embedded`` and ``dim`` (ints) and ``dtype`` (`partition_state` sees
    to it). The recorded ``output_bytes`` are compared only beside a ``files_stamp`` (module docstring)."""
    emb_path, meta_path, _ = paths
    rows, dim, dtype = stats["embedded"], stats["dim"], stats["dtype"]
    problem = _npy_problem(emb_path, rows, dim, dtype) or _parquet_problem(meta_path, rows)
    if problem is not None:
        return problem
    recorded = stats.get(OUTPUT_BYTES) if "files_stamp" in stats else None
    if not isinstance(recorded, dict):
        return None
    for key, path in (("img_emb", emb_path), ("metadata", meta_path)):
        try:
            size = path.stat().st_size
        except OSError as exc:
            return f"{_name(path)} cannot be read ({exc.strerror or exc})"
        if key in recorded and recorded[key] != size:
            return f"{_name(path)} is {size} bytes, where it was {recorded[key]} when written"
    return None
