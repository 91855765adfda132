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
  only, and only what an export of ours wrote: the JSON was trusted whoever wrote it, and a foreign or crafted one
  naming ``thesis.tex`` deleted the thesis without a word. So the JSON must be ours (its ``format``), each name one
  an export gives (a graph's ``<graph>.data``, `data_file_name`; a tokenizer file, whose sha256 the JSON records
  and the file must still have) and the file of its recorded size; each removal is said on stderr, and every other
  file the JSON names is kept, with a notice saying why.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipforge.atomic import host_tag, left_behind
from clipforge.weights.download import sha256_file
from clipforge.weights.torch_pickle import brief

__all__ = ["STAGING_PREFIX", "Listed", "data_file_name", "listed_files", "make_staging", "remove_stale_staging",
           "remove_unlisted", "single_data_file"]

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


def data_file_name(graph: str) -> str:
    """The file a graph's tensors go in when it keeps them beside it (`single_data_file`)."""
    return f"{graph}.data"


def single_data_file(graph: Path, dest: Path) -> str | None:
    """Put the graph `graph` (written by torch into a folder of its own) at `dest`; when its tensors are in files
    beside it, re-save them all in one ``<dest name>.data`` beside `dest` and return that name (else None)."""
    if not _uses_external_data(graph):
        os.replace(graph, dest)
        return None
    import onnx

    data = data_file_name(dest.name)
    model = onnx.load(str(graph))  # reads the tensors from the files beside `graph`
    onnx.save_model(model, str(dest), save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                    size_threshold=1024)
    return data


_OURS = re.compile(r"clipforge-onnx-\d+")


@dataclass(frozen=True)
class Listed:
    """A file an earlier export's JSON names: what it is to that export, and what must hold for it to go."""

    what: str  # "the image graph's weights file", "the tokenizer file"
    kept: str | None = None  # why it stays whatever the file holds (a JSON not ours, a name no export gives)
    size: Any = None  # the byte count the JSON recorded, if it recorded one
    sha256: Any = None  # the digest the JSON recorded, if it recorded one
    hashed: bool = False  # an export always records this file's sha256 (the tokenizer file: its name is no proof)


def listed_files(out_dir: Path, meta_file: str, graphs: Mapping[str, str]) -> dict[str, Listed]:
    """The file names the export JSON already in `out_dir` lists (graphs, their data files, the tokenizer's), each
    with what it is and, for one no export of ours wrote, why it stays. `graphs`: the tower -> graph file names an
    export writes. Plain names only (no folder part, not hidden), so a crafted JSON cannot name a file elsewhere."""
    try:
        meta = json.loads((out_dir / meta_file).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(meta, dict):
        return {}
    fmt = meta.get("format")
    foreign = None if isinstance(fmt, str) and _OURS.fullmatch(fmt) else (
        f"the {meta_file} there was not written by a clipforge export (format {brief(fmt)}; an export writes "
        "'clipforge-onnx-<n>')")
    found: dict[str, Listed] = {}

    def add(name: Any, what: str, expected: str | None, **recorded: Any) -> None:
        if not isinstance(name, str) or not name or name != Path(name).name or name.startswith(".") \
                or name == meta_file or name in found:
            return
        wrong = expected is not None and name != expected
        found[name] = Listed(what, foreign or (f"the {meta_file} there lists it as {what}, which an export names "
                                               f"{expected}" if wrong else None), **recorded)

    for tower, graph in graphs.items():
        part = meta.get(tower)
        if isinstance(part, dict):
            add(part.get("file"), f"the {tower} graph", graph)
            add(part.get("external_data"), f"the {tower} graph's weights file", data_file_name(graph),
                size=part.get("external_data_bytes"))
    tokenizer = meta.get("tokenizer")
    if isinstance(tokenizer, dict) and tokenizer.get("included") is not False:  # False: that export copied none
        # its name is the model family's own (spiece.model, tokenizer.json, ...): the recorded sha256 vouches for it
        add(tokenizer.get("file"), "the tokenizer file", None, sha256=tokenizer.get("sha256"), hashed=True)
    return found


def _why_kept(path: Path, listed: Listed, meta_file: str) -> str | None:
    """Why `path` (named by an earlier JSON as `listed`) stays, or None when it is that export's file."""
    if listed.kept is not None:
        return listed.kept
    if path.is_symlink():
        return "it is a symbolic link, which an export never writes"
    if listed.size is not None:
        if isinstance(listed.size, bool) or not isinstance(listed.size, int):
            return f"the {meta_file} there records its size as {brief(listed.size)}, not a byte count"
        if (held := path.stat().st_size) != listed.size:
            return f"it holds {held:,} bytes, the {meta_file} there recorded {listed.size:,}: changed since that export"
    if listed.hashed and not isinstance(listed.sha256, str):
        return f"the {meta_file} there lists it as {listed.what} without the sha256 an export records"
    if isinstance(listed.sha256, str) and sha256_file(path) != listed.sha256:
        return f"its sha256 differs from the one the {meta_file} there recorded: changed since that export"
    return None


def remove_unlisted(out_dir: Path, previous: Mapping[str, Listed], written: list[str], meta_file: str) -> list[str]:
    """Remove the files of `previous` (an earlier export's `listed_files`) that this export did not write and that
    export did (`_why_kept`), one notice each on stderr; every other one stays, with a notice saying why."""
    removed = []
    for name in sorted(set(previous) - set(written)):
        path = out_dir / name
        if not path.is_file() and not path.is_symlink():
            continue  # gone already, or a folder: nothing an export wrote
        why = _why_kept(path, previous[name], meta_file)
        if why is not None:
            print(f"notice: kept {name} in {out_dir}: {why}", file=sys.stderr)
            continue
        path.unlink(missing_ok=True)
        removed.append(name)
        print(f"notice: removed {name} from {out_dir}: {previous[name].what} of the earlier export there, which "
              "this export does not write", file=sys.stderr)
    return removed
