"""What a suite cell records besides its metrics, and whether a cell read back is still this run's dataset.

A cell's name says dataset, split, task, prompts, weights and settings, but not which copy of the data: a run on a
190-image CIFAR-10 zip and a rerun on the 10,000-image test set shared one name, and the second run reported the
first one's number as "cached" (also for ``--root /other/copy``, and for a partly downloaded dataset completed
since). So a cell records what it measured (`recorded`), and before a cell is reused the dataset is opened, without
reading an image, to compare (`dataset_now`, `changed`):

- ``data_root``: the dataset's root, resolved (the ``NAME=PATH`` override or the folder found under ``--root``);
- ``dataset_images``: the images of the evaluated split as the dataset lists them (before ``--limit``),
  ``files_missing``: the files its metadata lists that are not on disk; a linear probe's ``train_images`` too;
- ``dataset_digest`` (a probe's ``train_digest`` too): `feature_cache.dataset_digest` of the whole split, each
  sample's path, label, size and mtime (stats only, no image decoded). Root and counts alone let a relabelled set
  (two class folders swapped, misfiled images moved) be served from the cell as "cached", with the old number.

A cell is read back only with its predictions whole: it records its predictions file's size and rows
(`predictions_record`), and before it is reused the file must be there, end in a readable parquet footer and have
those rows and that size (`predictions_problem`: one footer read, no row decoded). A predictions parquet emptied or cut
short (a copy stopped midway, a disk problem) was kept with its cell as "cached", and failed when opened; now the cell
is computed again and the run says why. A cell written before the sizes were recorded is checked by its footer alone.

Which format a cell is (``cell_format``, `CELL_FORMAT`): 1 recorded no dataset (before the counts), 2 root and counts,
3 the digests too. A cell of a format before `CURRENT_SINCE` is not shown or exported beside this run's cells as if
current (`suite_files.move_old_cells` moves it to ``cells/stale/``): format-1 cells may name their metrics otherwise
(VOC's single-label ``acc1``, ``acc5`` 1.0 of 2 classes, every Flickr8k image as ``flickr8k`` test), and no cell of
an older format can be checked against its dataset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["CELL_FORMAT", "CURRENT_SINCE", "cell_format", "changed", "dataset_now", "details", "is_current",
           "language", "metrics_cb", "predictions_problem", "predictions_record", "recorded", "row_values"]

CELL_FORMAT = 3  # 1: no dataset recorded; 2: root and counts; 3: also a digest of the split's samples
CURRENT_SINCE = 3  # cells of an older format are moved aside (cells/stale/), never reused or tabled
_RECORDED = ("data_root", "dataset_images", "dataset_digest")  # what a current cell cannot lack


def cell_format(cf: dict[str, Any]) -> int:
    """The format of a cell's ``clipforge`` section: its ``cell_format``, else what its fields say (1 or 2)."""
    fmt = cf.get("cell_format")
    if isinstance(fmt, int) and not isinstance(fmt, bool):
        return fmt
    return 2 if "data_root" in cf and "dataset_images" in cf else 1


def is_current(cf: dict[str, Any]) -> bool:
    """Whether a cell (its ``clipforge`` section) is of a format this clipforge reuses, tables and exports."""
    return cell_format(cf) >= CURRENT_SINCE and all(key in cf for key in _RECORDED)


def _resolved(root: Any) -> str:
    return str(Path(root).expanduser().resolve())


def recorded(cell: Any, report: dict[str, Any], now: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a computed cell records of its dataset: counts from the single command's report, the digests from
    `now` (`dataset_now`, taken before the cell ran; None when the dataset did not open then: the cell then
    records no digest to match, and the next run computes it again)."""
    data = report["dataset"]
    images = data.get("test_images") if cell.task == "linear-probe" else data.get("num_images")
    now = now or {}
    out = {"cell_format": CELL_FORMAT, "data_root": _resolved(cell.root), "dataset_images": images,
           "files_missing": data.get("missing_files", 0), "dataset_digest": now.get("dataset_digest")}
    if cell.task == "linear-probe":
        out["train_images"] = data.get("train_images")
        out["train_digest"] = now.get("train_digest")
    return out


def _split_now(kind: str, dataset: str, root: Any, split: str, memo: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """One split's images, missing files and digest, the split opened once per run (no image read, no transform)."""
    key = (kind, dataset, str(root), split)
    if key in memo:
        return memo[key]
    from clipforge.evaluate.feature_cache import dataset_digest
    from clipforge.evaluate.report import skipped_files

    if kind == "retrieval":
        from clipforge.data.retrieval_sets import open_retrieval_dataset

        ds = open_retrieval_dataset(dataset, root, split, None)
        images = len(ds.images)
    else:
        from clipforge.evaluate.common import open_eval_dataset

        ds = open_eval_dataset(dataset, root, split, None)
        images = len(ds)
    memo[key] = out = {"images": images, "missing": skipped_files(ds)["missing_files"],
                       "digest": dataset_digest(ds, None)}
    return out


def dataset_now(cell: Any, memo: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """This run's counterpart of `recorded`: each split the cell reads, opened once per run (`_split_now`). An error
    opening it propagates: the caller then computes the cell, which fails or is skipped with the dataset's own
    message."""
    kind = "retrieval" if cell.task == "retrieval" else "classification"
    test = _split_now(kind, cell.dataset, cell.root, cell.split, memo)
    out = {"data_root": _resolved(cell.root), "dataset_images": test["images"], "files_missing": test["missing"],
           "dataset_digest": test["digest"]}
    if cell.task == "linear-probe":
        from clipforge.data.catalog import dataset_info

        train = _split_now(kind, cell.dataset, cell.root, dataset_info(cell.dataset).train_split, memo)
        out.update(train_images=train["images"], train_digest=train["digest"])
    return out


def changed(cf: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Why a cell read back (its ``clipforge`` section `cf`) is not this run's dataset `now`, or None when it is.
    One phrase, e.g. ``dataset changed (190 -> 10000 images, /a -> /b)``, or ``dataset changed (labels or files)``
    when only the digest differs (a relabelled or edited split of the same size). The digest is of the whole split,
    whatever ``--limit`` took of it (the limit is a part of the cell's name)."""
    if not is_current(cf):  # `move_old_cells` moved it aside; one it could not move is not trusted either
        return "the cell was written by an earlier clipforge (it records no digest of its dataset)"
    what = []
    if cf["dataset_images"] != now["dataset_images"]:
        what.append(f"{cf['dataset_images']} -> {now['dataset_images']} images")
    if cf.get("files_missing", 0) != now["files_missing"]:
        what.append(f"{cf.get('files_missing', 0)} -> {now['files_missing']} files missing")
    if "train_images" in now and cf.get("train_images") != now["train_images"]:
        what.append(f"{cf.get('train_images')} -> {now['train_images']} training images")
    if cf["data_root"] != now["data_root"]:
        what.append(f"{cf['data_root']} -> {now['data_root']}")
    if what:
        return f"dataset changed ({', '.join(what)})"
    digests = ["dataset_digest"] + (["train_digest"] if "train_digest" in now else [])
    if any(now[d] is None for d in digests):  # a dataset that does not list its samples: nothing to compare
        return "the dataset does not list its samples, so a cell cannot be checked against it"
    if any(cf.get(d) != now[d] for d in digests):
        return "dataset changed (labels or files)"
    return None


def _parquet_rows(path: Path) -> tuple[int, int] | str:
    """(bytes, rows) of the parquet at `path` from its footer alone, or why it has none readable (a phrase)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return "is empty"
            f.seek(max(0, size - 4))
            if size < 12 or f.read(4) != b"PAR1":  # a parquet ends with its footer and these 4 bytes
                return "has no parquet footer at its end (cut short, or not a parquet file)"
        return size, pq.read_metadata(path).num_rows
    except FileNotFoundError:
        return "is missing"
    except (OSError, pa.ArrowException) as exc:
        return f"cannot be read ({' '.join(str(exc).split())})"


def predictions_record(path: Any) -> dict[str, int]:
    """What a computed cell records of the predictions file its task wrote at `path` (None: it wrote none), so that
    a rerun knows the file whole (`predictions_problem`): ``predictions_bytes`` and ``predictions_rows``."""
    found = _parquet_rows(Path(path)) if isinstance(path, str) else None
    return {"predictions_bytes": found[0], "predictions_rows": found[1]} if isinstance(found, tuple) else {}


def predictions_problem(out_dir: Path, cf: dict[str, Any]) -> str | None:
    """Why the predictions file of a cell read back (its ``clipforge`` section `cf`) is not whole, in a phrase naming
    it; None when it is, or the cell wrote none. The file is looked for in this `out_dir`'s ``predictions/`` under the
    recorded name (the recorded path is relative to where the run was started). A cell that records no size and rows
    (written before they were) is checked by its footer alone."""
    recorded = cf.get("predictions")
    if not isinstance(recorded, str) or not recorded:
        return None
    name = f"predictions/{Path(recorded).name}"
    found = _parquet_rows(out_dir / name)
    if isinstance(found, str):
        return f"its predictions file {name} {found}"
    size, rows = found
    if isinstance(cf.get("predictions_rows"), int) and cf["predictions_rows"] != rows:
        return f"its predictions file {name} holds {rows} rows, where it held {cf['predictions_rows']} when written"
    if isinstance(cf.get("predictions_bytes"), int) and cf["predictions_bytes"] != size:
        return f"its predictions file {name} is {size} bytes, where it was {cf['predictions_bytes']} when written"
    return None


def metrics_cb(task: str, metrics: dict[str, Any]) -> dict[str, float | None]:
    """Our metric names -> CLIP_benchmark's (acc1, acc5, mean_per_class_recall, recall@k, lp_*, VOC's
    mean_average_precision), from the one table `--expect` also reads (`report.CB_METRICS`); a metric the run does
    not have (VOC's acc1) is left out, an undefined one (acc5 of fewer than 5 classes) is null, CLIP_benchmark's NaN."""
    from clipforge.evaluate.report import CB_METRICS

    return {cb: metrics[ours] for cb, ours in CB_METRICS[task].items() if ours in metrics}


def details(cell: Any, report: dict[str, Any], seconds: float, cid: str, top_k: int | None,
            now: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a cell records besides its metrics: clipforge's name of the dataset, which copy of it and in which
    state (`recorded`, with the digests of `now`),
    counts, skips and why, prompts, precision, decode, speed, the subsets (``limit``; a probe's ``limit_train``) and
    the predictions' ``top_k`` (None: the task writes none).

    ``seconds_per_image`` is decoding + the model per image, None when a probe's test features came from the feature
    cache (``features_cached``: nothing was decoded; it gave the extracting run's speed as this run's).
    ``wall_seconds`` is the cell alone: the model is loaded once per model, before its cells (the suite's
    ``models[].load_seconds``)."""
    from clipforge.evaluate.common import paper_metric

    bad = report.get("bad_images", {})
    cached = {}
    if cell.task == "linear-probe":
        evaluated = report["dataset"]["test_examples"]
        skipped = sum(b.get("skipped", 0) for b in bad.values())
        reasons = [e for b in bad.values() for e in b.get("examples", [])]
        timing = report["timing"]["test"]
        cached = {"features_cached": bool(timing.get("features_cached")),
                  "train_features_cached": bool(report["timing"]["train"].get("features_cached"))}
    else:
        evaluated = report["metrics"].get("num_samples", report["metrics"].get("num_images"))
        skipped, reasons, timing = bad.get("skipped", 0), bad.get("examples", []), report["timing"]
    metric = "top1" if cell.task == "linear-probe" else (
        paper_metric(cell.dataset) if cell.task == "zeroshot" else "image_to_text_R@1")
    per_image = None if cached.get("features_cached") else \
        round(timing.get("total_s", seconds) / max(1, evaluated or 1), 6)
    return {
        "cell": cid, "dataset": cell.dataset, "split": cell.split, "task": cell.task, "prompt_set": cell.prompts,
        "fingerprint": report["model"]["fingerprint"], "weights": report["model"]["weights"],
        "precision": report["model"]["precision"],
        "decode": "draft" if report["model"]["draft_decode"] else "exact",
        "images_evaluated": evaluated, "images_skipped": skipped,
        "skip_reasons": [f"{e.get('source')}: {e.get('reason')}" for e in reasons[:20]],
        **recorded(cell, report, now),
        "seconds_per_image": per_image, **cached,
        "wall_seconds": round(seconds, 3), "paper_metric": metric,
        "paper_value": report["metrics"].get(metric), "report": report["files"]["report"],
        "predictions": report["files"].get("predictions"),
        **predictions_record(report["files"].get("predictions")),  # its size and rows: a rerun knows it whole
        "limit": report["dataset"].get("limit", report["dataset"].get("limit_test")),
        **({"limit_train": report["dataset"].get("limit_train")} if cell.task == "linear-probe" else {}),
        **({"top_k": top_k} if top_k is not None else {}),
        "date": report.get("date"),
        **({"notice": report["notice"]} if report.get("notice") else {}),
        # prompts whose label the model's context cuts, captions read by their beginning only (`text_cut`)
        **{key: report[key] for key in ("prompts_cut", "captions_cut", "cut_notice") if report.get(key)},
    }


def language(report: dict[str, Any]) -> str:
    """CLIP_benchmark's ``language`` of a cell: that of the class names and templates it prompted with (``zh``
    for ``--templates zh-cifar10``; it said ``en`` whatever the prompts), ``en`` for a task without prompts (a
    probe's report lists its class names, but prompts with none)."""
    from clipforge.zeroshot.languages import language_of

    if "templates" not in report:
        return "en"
    prompts = [*report.get("classnames", []), *report.get("templates", {}).get("templates", [])]
    return language_of(" ".join(map(str, prompts))) if prompts else "en"


def row_values(result: dict[str, Any]) -> dict[str, Any]:
    """A table row's values from a cell read back or just written."""
    cf = result["clipforge"]
    return {"metric": cf["paper_metric"], "value": cf["paper_value"], "fingerprint": cf["fingerprint"],
            "images_evaluated": cf["images_evaluated"], "images_skipped": cf["images_skipped"],
            "seconds_per_image": cf["seconds_per_image"], "features_cached": cf.get("features_cached"),
            "wall_seconds": cf.get("wall_seconds"), "precision": cf["precision"], "decode": cf["decode"],
            "limit_train": cf.get("limit_train"), "metrics": result["metrics"]}
