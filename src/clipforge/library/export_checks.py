"""What an embedding export refuses before it reads or writes anything: its settings and its `--out`.

Owns the two checks `clipforge embed` (`clipforge.cli.embed`) and `export_embeddings` run first: numbers out
of range (`check_export_settings`) and an output folder that would hide input photos (`check_output_apart`).
Each is a `UsageError` in one line naming the setting or folder.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clipforge.errors import UsageError
from clipforge.library.dbfile import display_path
from clipforge.library.scan import discover_files, is_under, normalise_path


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_export_settings(shard_size: Any, batch_size: Any = 64, workers: Any = None) -> None:
    """`UsageError` (a ValueError) naming the first unusable setting. A shard size below 1 used to drop
    files (a negative slice) or divide by zero; a batch size below 1 became 1 and workers below 0 became
    0, silently (`clipforge embed` says the same of its flags first: `clipforge.cli.embed`)."""
    if not _whole(shard_size) or shard_size < 1:
        raise UsageError(f"shard_size must be at least 1 (images per output partition), got {shard_size!r}")
    if not _whole(batch_size) or batch_size < 1:
        raise UsageError(f"batch_size must be at least 1 (images per model batch), got {batch_size!r}")
    if workers is not None and (not _whole(workers) or workers < 0):
        raise UsageError(f"workers must be 0 (decode in this process) or more, got {workers!r}")


def check_output_apart(
    paths: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str], recursive: bool = True
) -> None:
    """`UsageError`, before anything is read or written, when `out_dir` would hide photos the `paths` name.

    The scan never walks into the output folder (`discover_files(exclude=[out])`: an export must not
    embed its own files), so an input folder that is `out_dir` or lies inside it would contribute nothing,
    and image files inside an `out_dir` that an input folder's walk reaches would be left out: both were
    a silent "wrote 0 of 0 partitions" (or fewer embeddings than photos), exit status 0. An `out_dir`
    inside an input folder is fine while it holds no photos (its own npy, parquet and json are not
    images); a file named explicitly is always read, wherever it lies.
    """
    out = normalise_path(out_dir)
    inputs = [(raw, normalise_path(raw)) for raw in paths]
    for raw, path in inputs:
        if os.path.isdir(path) and (path == out or is_under(path, [out])):
            where = "is the input folder" if path == out else "holds the input folder"
            raise UsageError(
                f"--out {display_path(os.fspath(out_dir))} {where} {display_path(os.fspath(raw))}: "
                f"embed never reads the folder it writes to, so those photos would not be embedded; "
                f"choose an --out outside the input folders"
            )
    if not recursive or not os.path.isdir(out):
        return
    for raw, path in inputs:
        if not (os.path.isdir(path) and is_under(out, [path])):
            continue
        if any(part.startswith(".") for part in Path(os.path.relpath(out, path)).parts):
            continue  # the walk skips hidden folders: it never reaches this --out
        hidden = discover_files([out], recursive=True, notify=False)
        if hidden:
            raise UsageError(
                f"--out {display_path(os.fspath(out_dir))} is inside the input folder "
                f"{display_path(os.fspath(raw))} and holds {len(hidden)} image file(s) "
                f"(e.g. {display_path(hidden[0])}) that embed would leave out, as it never reads "
                f"the folder it writes to; move them, or choose an --out that holds no photos"
            )
