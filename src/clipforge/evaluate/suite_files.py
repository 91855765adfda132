"""Where the suite keeps each cell on disk, and how a rerun reads the cells back.

Decisions this module owns:

- **A cell's file name is its identity.** ``cells/<model>/<cell>.json``: one folder per ``--models`` spec, one
  file per (dataset, split, task, prompt set, weights fingerprint, precision and decode mode, subset). Two
  different specs never share a folder and two different prompt sets never share a name, because a resumed run
  takes a file that is there as the finished cell. Names were ASCII only: every Chinese-named checkpoint
  (``中文模型甲.pt``, ``中文模型乙.pt``) went to one hidden folder ``.pt``, so a second model with the same weights
  read the first one's cells as its own and vanished from the merged table; every Chinese template
  (``一张{}的照片``) was ``x``, so another template's cells were read back as this one's.
- **Readable and stable.** Letters and digits of any script are kept (NFC, as `report.run_stem` does); a spec the
  file system cannot hold as written (``ViT-B/32``, a path, a name over `_PART_BYTES`) gets a short hash of the
  whole spec, and a template or template file a hash of the templates themselves (editing the file is a new
  cell). Names that were already safe (``clipforge-tiny``, ``cifar10``, ``zh-cifar10``) are what they were, and
  a cell written under the old scheme is still found (`legacy_cell_path`), so an existing ``--out`` resumes.
- **One file, one spelling.** A spec in NFD (what macOS file names give) shares the NFC spelling's folder, so
  the same file typed either way resumes; but where both spellings are files and not the same one (Linux keeps
  both), the NFD one's folder gets a hash of its exact text: two files never share cells, nor one merged-table
  row (a second same-weights model read the first one's cells and vanished from the table).
- **Nothing unfinished is read back.** A cell's JSON is written last and atomically; the temporary file a
  ``kill -9`` leaves beside it (``.<name>.<pid>-<hex>.tmp@<host>.json``, a complete JSON when the kill came
  between writing and renaming) is never taken for a cell, and is removed by the next run (`clean_stale`): on
  this host when its writer's pid is gone, from any host once a day old. A shared ``--out`` may be written by a
  run on another machine, whose pids mean nothing here: judged by pid alone, its live temporary was removed and
  its cell failed. A temporary without a host (an earlier version's) waits out the day too (`atomic`'s rule).
- **CLIP_benchmark's dataset names.** A cell's ``dataset`` is the name CLIP_benchmark writes for that dataset
  (``imagenet1k``, ``imagenet-a``, ``flowers``, ``renderedsst2``, ``mscoco_captions``, ``vtab/resisc45``,
  ``voc2007_multilabel``...: `clip_benchmark_name`), so `clip_benchmark build` merges our cells and theirs into one
  column per dataset; clipforge's own name (the catalogue key, the file name's first part) is ``clipforge.dataset``.
  A cell that is not what CLIP_benchmark's name means is named otherwise: Flickr8k without a split list (every
  image) is ``flickr8k_all``, split ``all``.
- **A cell is read back only for its own settings.** ``--limit-train`` and ``--top-k`` are parts of a cell's name
  when not at their defaults, and a cell records them (``limit_train``, ``top_k``); a cell written before they were
  recorded is checked against its full report (`same_settings`), so a probe trained on a subset is never taken for
  one trained on all the images.
- **A cell is read back only for its own dataset.** A cell records its data root (resolved), the split's
  image and missing-file counts (a probe's training images too) and a digest of the split's samples (paths, labels,
  sizes, mtimes; a probe's training split too); a rerun whose dataset differs computes it again and says why
  (`suite_data`): a 190-image copy's number was reported "cached" for the 10,000-image test set, and a relabelled
  copy of the same size for itself.
- **A cell of an earlier clipforge is moved aside, not shown as current.** A cell whose format is older than
  `suite_data.CURRENT_SINCE` may name its metrics or its dataset otherwise (VOC's single-label ``acc1``, ``acc5`` 1.0
  of 2 classes, ``flickr8k`` test for every Kaggle image: a renamed cell never replaced the old one, which stayed in
  the table and in ``clip_benchmark build cells/*/*.json`` for ever) and records no digest to check it by:
  `move_old_cells` moves it to ``cells/stale/<model>/`` (which that glob does not reach) at the start of a run, and
  the run says so in one line.
- **Valid JSON.** NaN (an undefined metric: top-5 of fewer than 5 classes) is written as ``null``: ``NaN`` is not JSON, and
  ``jq``, JavaScript and strict parsers refuse the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

from clipforge.atomic import STALE_AFTER_S, host_tag, remove_stale_temps

__all__ = [
    "CLIP_BENCHMARK_NAMES",
    "clean_stale",
    "clip_benchmark_name",
    "finite",
    "is_cell_file",
    "legacy_cell_path",
    "model_folder",
    "move_old_cells",
    "prompts_part",
    "read_cell",
    "safe_name",
    "same_settings",
    "slug",
    "STALE_AFTER_S",
    "STALE_FOLDER",
    "host_tag",
]

STALE_FOLDER = "stale"  # cells/stale/<model>/<cell>.json: cells of an earlier clipforge, out of `cells/*/*.json`
_PART_BYTES = 60  # UTF-8 bytes of one part: a cell name of seven parts stays far below a 255-byte file name


# clipforge's catalogue key -> CLIP_benchmark's dataset name where the two differ (`clip_benchmark.datasets.builder`:
# `build_dataset` and its `dataset_collection`); datasets CLIP_benchmark does not have (cub, birdsnap, ucf101,
# kinetics700, hateful_memes) keep our name
CLIP_BENCHMARK_NAMES = {
    "imagenet": "imagenet1k", "imagenet_a": "imagenet-a", "imagenet_r": "imagenet-r", "flowers102": "flowers",
    "rendered_sst2": "renderedsst2", "mscoco": "mscoco_captions", "resisc45": "vtab/resisc45",
    "kitti_distance": "vtab/kitti_closest_vehicle_distance", "clevr_counts": "vtab/clevr_count_all",
    # whole images, multi-label, mAP: CLIP_benchmark's `voc2007` is another task (one cropped object a sample, acc1)
    "voc2007": "voc2007_multilabel",
}


def clip_benchmark_name(dataset: str, split: str | None = None) -> str:
    """The ``dataset`` a cell of clipforge's catalogue key `dataset` records: CLIP_benchmark's name for it. A
    Flickr8k read whole (split "all": no split list beside Kaggle's captions.txt) is ``flickr8k_all``: CLIP_benchmark's
    ``flickr8k`` is Karpathy's 1,000-image test split, whose recall a gallery 8 times larger does not measure."""
    if dataset == "flickr8k" and split == "all":
        return "flickr8k_all"
    return CLIP_BENCHMARK_NAMES.get(dataset, dataset)


def same_settings(data: dict[str, Any] | None, task: str, limit_train: int | None,
                  top_k: int) -> dict[str, Any] | None:
    """`data` (a cell read back) if it was computed with this run's ``--limit-train`` (linear probe) and ``--top-k``
    (tasks that write top-k predictions), else None (recompute it).

    A cell records both; one written before they were recorded is named as a default-settings cell, and its
    ``limit_train`` is read from the full report it points to (an earlier ``--limit-train 300`` run wrote its probe
    under the same name as a run on every image). A report that is gone leaves the name to decide, as before."""
    if data is None:
        return None
    cf = data["clipforge"]
    if task == "linear-probe":
        recorded = cf["limit_train"] if "limit_train" in cf else _report_limit_train(cf.get("report"))
        if recorded != limit_train:
            return None
    if "top_k" in cf and cf["top_k"] != top_k:
        return None
    return data


def _report_limit_train(report: Any) -> int | None:
    """A linear-probe report's ``dataset.limit_train``; None when it cannot be read."""
    try:
        value = json.loads(Path(str(report)).read_text(encoding="utf-8"))["dataset"]["limit_train"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) else None


def slug(text: str) -> str:
    """The ASCII-only name of earlier versions: still that of the catalogue's parts (``rendered_sst2`` ->
    ``rendered-sst2``), and how cells they wrote are found."""
    return re.sub(r"[^A-Za-z0-9.@-]+", "-", text).strip("-") or "x"


def safe_name(text: str, content: str | None = None) -> str:
    """`text` as one file-name part: itself when it already is one, else its readable letters plus a hash.

    The hash is of `content` when given (the templates a template spec stands for), else of the NFC text, so two
    specs that read alike (``a b.pt``, ``a-b.pt``) stay apart; the tail is kept, where a path has its file name."""
    nfc = unicodedata.normalize("NFC", text)
    part = re.sub(r"(?:[^\w.@-]|_)+", "-", nfc).strip("-").lstrip(".")
    if content is None and part == nfc and len(part.encode("utf-8")) <= _PART_BYTES:
        return part
    digest = hashlib.blake2b((nfc if content is None else content).encode("utf-8"), digest_size=5).hexdigest()
    budget = _PART_BYTES - len(digest) - 1
    tail = part.encode("utf-8")[-budget:].decode("utf-8", "ignore")
    if len(part.encode("utf-8")) > budget and "-" in tail:
        tail = tail.split("-", 1)[1]  # a whole word first: `checkpoints-模型-甲.pt`, not `nese-named-...`
    tail = tail.strip("-").lstrip(".")
    return f"{tail}-{digest}" if tail else digest


def model_folder(spec: str) -> str:
    """The folder of one ``--models`` spec under ``cells/``: the NFC spelling's, unless that names another file."""
    nfc = unicodedata.normalize("NFC", spec)
    if nfc != spec and _two_files(spec, nfc):
        return safe_name(spec, spec)  # the hash of the NFD text itself
    return safe_name(spec)


def _two_files(first: str, second: str) -> bool:
    """Whether two spellings name two existing files (or folders), not one."""
    try:
        a, b = Path(first).expanduser(), Path(second).expanduser()
        return a.exists() and b.exists() and not os.path.samefile(a, b)
    except OSError:  # a name no file system holds: no file
        return False


def prompts_part(prompts: str) -> str:
    """The prompt set's part of a cell name: a set name as it was; a template or a template file by its content."""
    if prompts == "-":
        return "x"  # tasks without prompts (what earlier versions wrote)
    literal = any(brace in prompts for brace in "{}\uff5b\uff5d")
    if literal or _template_file(prompts):
        from clipforge.zeroshot import get_templates

        try:
            content = json.dumps(get_templates(prompts), ensure_ascii=False)
        except Exception:  # noqa: BLE001 - the cell itself reports why; the name only needs to be stable
            content = None
        return safe_name(prompts, content if content is not None else prompts)
    if prompts.isascii():
        return slug(prompts)  # `imagenet`, `zh-cifar10`, `SST2`: unchanged, so old cells still count
    return safe_name(prompts)


def _template_file(prompts: str) -> bool:
    """Whether a prompt spec is a template file (as `get_templates` reads it): a name that says nothing of its content."""
    if any(brace in prompts for brace in "{}\uff5b\uff5d"):
        return False
    try:
        return Path(prompts).suffix.lower() in {".json", ".txt"} or Path(prompts).expanduser().is_file()
    except OSError:  # a name no file system holds ("File name too long"): no file; the cell says why it fails
        return False


def legacy_cell_path(cells_dir: Path, spec: str, parts: list[str]) -> Path | None:
    """Where an earlier version wrote this cell (ASCII-only names); read only if its ``model_spec`` is `spec`.
    None for a template file's cell: an earlier version named it by the file's path alone, so the cell cannot say
    which templates it measured (a file edited since was read back as the new templates' result)."""
    if len(parts) > 3 and _template_file(parts[3]):
        return None
    return cells_dir / slug(spec) / ("__".join(slug(p) for p in parts) + ".json")


def is_cell_file(path: Path) -> bool:
    """A finished cell's file: not an atomic writer's temporary (``.<name>.<pid>-<hex>.tmp@<host>.json``)."""
    return path.suffix == ".json" and not path.name.startswith(".")


def read_cell(
    path: Path | None, spec: str | None = None, prompts: str | None = None
) -> dict[str, Any] | None:
    """A finished cell's result, or None: no path, absent, unreadable, not a cell, or (when `spec` and `prompts` are
    given, for a file an earlier version named) another model's or prompt set's that happened to get the same name."""
    try:
        if path is None or not is_cell_file(path) or not path.is_file():
            return None
    except (
        OSError
    ):  # a name over the file system's 255 bytes (an earlier version's name of a long spec): no cell
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: recompute it
    if not (
        isinstance(data, dict)
        and isinstance(data.get("metrics"), dict)
        and isinstance(data.get("clipforge"), dict)
    ):
        return None
    cf = data["clipforge"]
    if (spec is not None and cf.get("model_spec") != spec) or (
        prompts is not None and cf.get("prompt_set") != prompts
    ):
        return None
    return data


def move_old_cells(out_dir: Path) -> int:
    """Move each finished cell of an earlier clipforge (`suite_data.is_current` false) from ``cells/<model>/`` to
    ``cells/stale/<model>/``; how many. One that cannot be moved stays, and is still neither reused nor tabled."""
    from clipforge.evaluate.suite_data import is_current

    cells, moved = out_dir / "cells", 0
    for path in sorted(cells.glob("*/*.json")):
        data = read_cell(path)
        if data is None or is_current(data["clipforge"]):
            continue
        target = cells / STALE_FOLDER / path.parent.name / path.name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except OSError:
            continue
        moved += 1
    return moved


def clean_stale(out_dir: Path, now: float | None = None) -> int:
    """Remove temporaries of killed writers under the suite's folders (never a live writer's); how many.

    `atomic.remove_stale_temps` with this folder's rule: runs on several hosts may share an ``--out``, so a
    temporary without a host (an earlier version's) is judged by age like another host's, never by a pid."""
    folders = [out_dir, out_dir / "predictions", out_dir / "reports"]
    cells = out_dir / "cells"
    if cells.is_dir():
        folders += [p for p in cells.iterdir() if p.is_dir()]
    return sum(len(remove_stale_temps(folder, hostless_by_pid=False, now=now)) for folder in folders)


def finite(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None (JSON's null), through dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
