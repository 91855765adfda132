"""The files of an ONNX export folder: staging, weight sidecars, and what an earlier export left.

`export_onnx` writes into a hidden staging folder inside ``--out`` and moves the finished files in. Three things
around that live here:

- **Staging folders of dead exports.** A hard-killed export (SIGKILL, the OOM killer) never runs its
  ``finally``: its ``.onnx-export-*`` folder (a ViT-L image graph is ~1.2 GB) stayed in ``--out`` for good,
  hidden, and was shipped with the folder. A staging folder is named ``.onnx-export-<pid>@<host>-<random>``
  (`clipforge.atomic.host_tag`), and the next export removes those whose process is gone on this host, another
  host's (or an older unnamed one) once a day old (`clipforge.atomic.STALE_AFTER_S`), never a live export's.
- **External data.** torch writes a graph over 2 GB (ViT-H/g/bigG image towers) with its tensors in files beside
  the .onnx, named after the tensors. Only the .onnx was moved, so the final folder's graph pointed at files
  deleted with the staging folder. Such a graph is re-saved with all its tensors in one ``<graph>.data`` file
  (`single_data_file`), which the JSON lists and the export moves with the graph.
- **An earlier export's files.** Re-exporting into a folder replaced the new export's files only: a SigLIP's
  ``spiece.model`` stayed beside clipforge-tiny's graphs. The files the previous ``clipforge_onnx.json`` listed
  that the new export does not write are removed (`listed_files`, `remove_unlisted`), plain names in the folder
  only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from clipforge.atomic import host_tag, left_behind

__all__ = ["STAGING_PREFIX", "listed_files", "make_staging", "remove_stale_staging", "remove_unlisted",
           "single_data_file"]

STAGING_PREFIX = ".onnx-export-"
_STAGING_RE = re.compile(r"^\.onnx-export-(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)-[0-9a-f]{8}$)?")


def make_staging(out_dir: Path) -> Path:
    """A new staging folder in `out_dir` whose name records this process (see the module docstring)."""
    while True:
        folder = out_dir / f"{STAGING_PREFIX}{os.getpid()}@{host_tag()}-{secrets.token_hex(4)}"
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return folder


def remove_stale_staging(out_dir: Path, now: float | None = None) -> list[Path]:
    """Delete the staging folders in `out_dir` of exports that no longer run; returns them.

    This host's by their pid (a live process keeps its folder, even when the pid was reused: the safe side); another
    host's, and older exports' folders without a pid, once `STALE_AFTER_S` old."""
    removed: list[Path] = []
    now = time.time() if now is None else now
    try:
        entries = list(out_dir.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _STAGING_RE.match(entry.name)
        try:
            if not match or entry.is_symlink() or not entry.is_dir():
                continue
            if left_behind(match["host"], match["pid"], entry.stat().st_mtime, now, hostless_by_pid=False):
                shutil.rmtree(entry)
                removed.append(entry)
        except FileNotFoundError:  # its export finished, or another export removed it
            continue
    return removed


def _uses_external_data(path: Path) -> bool:
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    return any(uses_external_data(t) for t in model.graph.initializer)


def single_data_file(graph: Path, dest: Path) -> str | None:
    """Put the graph `graph` (written by torch into a folder of its own) at `dest`; when its tensors are in files
    beside it, re-save them all in one ``<dest name>.data`` beside `dest` and return that name (else None)."""
    if not _uses_external_data(graph):
        os.replace(graph, dest)
        return None
    import onnx

    data = f"{dest.name}.data"
    model = onnx.load(str(graph))  # reads the tensors from the files beside `graph`
    onnx.save_model(model, str(dest), save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                    size_threshold=1024)
    return data


def listed_files(out_dir: Path, meta_file: str) -> set[str]:
    """The file names the export JSON already in `out_dir` lists (graphs, their data files, the tokenizer's);
    plain names only (no folder part, not hidden), so a crafted JSON cannot name a file elsewhere."""
    try:
        meta = json.loads((out_dir / meta_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    names: list[Any] = []
    if isinstance(meta, dict):
        for key in ("image", "text", "tokenizer"):
            part = meta.get(key)
            if isinstance(part, dict):
                names += [part.get("file"), part.get("external_data")]
    return {n for n in names if isinstance(n, str) and n and n == Path(n).name and not n.startswith(".")
            and n != meta_file}


def remove_unlisted(out_dir: Path, previous: set[str], written: list[str]) -> list[str]:
    """Remove the files of `previous` (an earlier export's `listed_files`) that this export did not write."""
    removed = []
    for name in sorted(previous - set(written)):
        path = out_dir / name
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(name)
    return removed
