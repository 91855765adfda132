"""What a suite cell records besides its metrics, and whether a cell read back is still this run's dataset.

A cell's name says dataset, split, task, prompts, weights and settings, but not which copy of the data: a run on a
190-image CIFAR-10 zip and a rerun on the 10,000-image test set shared one name, and the second run reported the
first one's number as "cached" (also for ``--root /other/copy``, and for a partly downloaded dataset completed
since). So a cell records what it measured (`recorded`), and before a cell is reused the dataset is opened, without
reading an image, to compare (`dataset_now`, `changed`):

- ``data_root``: the dataset's root, resolved (the ``NAME=PATH`` override or the folder found under ``--root``);
- ``dataset_images``: the images of the evaluated split as the dataset lists them (before ``--limit``),
  ``files_missing``: the files its metadata lists that are not on disk; a linear probe's ``train_images`` too.

A cell written before these were recorded is computed again once, saying why: from its own counts it can be seen
to differ (``images_evaluated`` + ``images_skipped`` against this run's), or it cannot be told, and either way its
number is not taken on trust.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["changed", "dataset_now", "details", "language", "metrics_cb", "recorded", "row_values"]


def _resolved(root: Any) -> str:
    return str(Path(root).expanduser().resolve())


def recorded(cell: Any, report: dict[str, Any]) -> dict[str, Any]:
    """What a computed cell records of its dataset, from the single command's report."""
    data = report["dataset"]
    images = data.get("test_images") if cell.task == "linear-probe" else data.get("num_images")
    out = {"data_root": _resolved(cell.root), "dataset_images": images, "files_missing": data.get("missing_files", 0)}
    if cell.task == "linear-probe":
        out["train_images"] = data.get("train_images")
    return out


def dataset_now(cell: Any, memo: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """This run's counterpart of `recorded`: the dataset opened (no image read, no transform), memoised per
    (dataset, root, split, task) within a run. An error opening it propagates: the caller then computes the cell,
    which fails or is skipped with the dataset's own message."""
    key = (cell.dataset, str(cell.root), cell.split, cell.task)
    if key in memo:
        return memo[key]
    from clipforge.evaluate.report import skipped_files

    if cell.task == "retrieval":
        from clipforge.data.retrieval_sets import open_retrieval_dataset

        ds = open_retrieval_dataset(cell.dataset, cell.root, cell.split, None)
        out = {"dataset_images": len(ds.images)}
    elif cell.task == "linear-probe":
        from clipforge.data.catalog import dataset_info
        from clipforge.evaluate.linear_probe_eval import open_probe_splits

        train, ds = open_probe_splits(cell.dataset, cell.root, dataset_info(cell.dataset).train_split, cell.split,
                                      None)
        out = {"dataset_images": len(ds), "train_images": len(train)}
    else:
        from clipforge.evaluate.common import open_eval_dataset

        ds = open_eval_dataset(cell.dataset, cell.root, cell.split, None)
        out = {"dataset_images": len(ds)}
    memo[key] = out = {"data_root": _resolved(cell.root), **out,
                       "files_missing": skipped_files(ds)["missing_files"]}
    return out


def changed(cf: dict[str, Any], now: dict[str, Any], limit: int | None) -> str | None:
    """Why a cell read back (its ``clipforge`` section `cf`) is not this run's dataset `now`, or None when it is.
    One phrase, e.g. ``dataset changed (190 -> 10000 images, /a -> /b)``."""
    if "data_root" not in cf or "dataset_images" not in cf:  # written before cells recorded their dataset
        before = (cf.get("images_evaluated") or 0) + (cf.get("images_skipped") or 0)
        n = now["dataset_images"]
        expected = n if not limit else min(int(limit), n)
        if before and before != expected:
            return f"dataset changed ({before} -> {expected} images)"
        return "the cell does not record its dataset's root and size (written by an earlier clipforge)"
    what = []
    if cf["dataset_images"] != now["dataset_images"]:
        what.append(f"{cf['dataset_images']} -> {now['dataset_images']} images")
    if cf.get("files_missing", 0) != now["files_missing"]:
        what.append(f"{cf.get('files_missing', 0)} -> {now['files_missing']} files missing")
    if "train_images" in now and cf.get("train_images") != now["train_images"]:
        what.append(f"{cf.get('train_images')} -> {now['train_images']} training images")
    if cf["data_root"] != now["data_root"]:
        what.append(f"{cf['data_root']} -> {now['data_root']}")
    return f"dataset changed ({', '.join(what)})" if what else None


def metrics_cb(task: str, metrics: dict[str, Any]) -> dict[str, float | None]:
    """Our metric names -> CLIP_benchmark's (acc1, acc5, mean_per_class_recall, recall@k, lp_*, VOC's
    mean_average_precision), from the one table `--expect` also reads (`report.CB_METRICS`); a metric the run does
    not have (VOC's acc1) is left out, an undefined one (acc5 of fewer than 5 classes) is null, CLIP_benchmark's NaN."""
    from clipforge.evaluate.report import CB_METRICS

    return {cb: metrics[ours] for cb, ours in CB_METRICS[task].items() if ours in metrics}


def details(cell: Any, report: dict[str, Any], seconds: float, cid: str, top_k: int | None) -> dict[str, Any]:
    """What a cell records besides its metrics: clipforge's name of the dataset, which copy of it (`recorded`),
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
        **recorded(cell, report),
        "seconds_per_image": per_image, **cached,
        "wall_seconds": round(seconds, 3), "paper_metric": metric,
        "paper_value": report["metrics"].get(metric), "report": report["files"]["report"],
        "predictions": report["files"].get("predictions"),
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
