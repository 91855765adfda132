"""The suite's merged table (Markdown, CSV, JSON), heat map, published numbers and golden checks.

Published numbers come from open_clip's results table (`docs/openclip_results.csv`, measured with
CLIP_benchmark on the released checkpoints): ImageNet top-1 for every registry entry
(`clipforge.weights.registry`, the numbers docs/reference-numbers.md lists) and, for OpenAI's nine
models, CIFAR-10, CIFAR-100 and Stanford Cars (`published.json`, the same page's second table).
Each row shows ours, the published number and the difference in points.

Two CSV files, one table: ``table.csv`` is plain UTF-8 with no byte-order mark, what CLIP_benchmark writes and
what scripts expect (with a BOM, ``csv.DictReader(open(f, encoding="utf-8"))`` names the first column
``"\ufeffmodel"``, and ``cut``/``awk`` see three stray bytes); ``table_excel.csv`` is the same rows with a BOM
(``utf-8-sig``) and CRLF lines, because Excel opens a BOM-less CSV in the system code page (GBK on a Chinese
Windows) and shows every Chinese model, path or error as mojibake. A BOM only when the text is not ASCII would
make one file's format depend on its content, so a script that read an English run would break on a Chinese one.
NaN is written as null in ``table.json`` (``NaN`` is not JSON) and as an empty field in the CSVs.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from clipforge.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from clipforge.evaluate.suite_files import finite

__all__ = ["check_suite_expectations", "published_number", "write_tables"]


@cache
def _published_table() -> dict[str, dict[str, float]]:
    with open(Path(__file__).with_name("published.json"), encoding="utf-8") as f:
        return json.load(f)["zeroshot_top1"]


def published_number(spec: str, dataset: str) -> float | None:
    """open_clip's published zero-shot top-1 (%) of model `spec` on `dataset`, or None."""
    from clipforge.models import canonical_name

    head, sep, tag = spec.rpartition(":")
    arch, tag = (head, tag) if sep and head and "/" not in tag else (spec, "openai")
    try:
        name = canonical_name(arch)
    except (KeyError, ValueError):
        return None
    from clipforge.weights import zoo_data

    openai_names = {oc: n for n, (_, oc, _, _) in zoo_data.OPENAI.items()}
    name = openai_names.get(name.removesuffix("-quickgelu"), name)
    if tag == "openai" and dataset in _published_table().get(name, {}):
        return float(_published_table()[name][dataset])
    if dataset == "imagenet":
        from clipforge.weights.registry import get_pretrained

        try:
            value = get_pretrained(arch, tag).imagenet_top1
        except (KeyError, ValueError):
            return None
        return None if value is None else float(value)
    return None


def check_suite_expectations(rows: Sequence[dict[str, Any]], expect: Sequence[Any],
                             tolerance: float) -> list[dict[str, Any]]:
    """One check per (expectation, matching cell of this run); a cell that is absent fails its check.

    Only this run's cells are checked (its ``--models`` x ``--datasets``): the rows of cells earlier runs left in
    the folder (status ``earlier run``, listed in the merged table) are not, so ``--expect cifar10=90`` after a run
    of three models into the same ``--out`` checks the one model of this run, not all three."""
    rows = [r for r in rows if r.get("status") != "earlier run"]
    checks = []
    for e in expect:
        if e.dataset == "*":  # `--expect published`: every cell with a published number
            before = len(checks)
            for r in rows:
                published = published_number(r["model"], r["dataset"]) if r["task"] == "zeroshot" and \
                    r.get("status") != "failed" else None
                value = _metric_value(r, "top1") if published is not None else None
                if published is not None:
                    checks.append({"model": r["model"], "dataset": r["dataset"], "metric": "top1",
                                   "expected": published, "measured": None if value is None else round(100 * value, 4),
                                   "tolerance": tolerance,
                                   "ok": value is not None and abs(100 * value - published) <= tolerance + 1e-9})
            if len(checks) == before:
                checks.append({"model": None, "dataset": "*", "metric": "top1", "expected": None, "measured": None,
                               "tolerance": tolerance, "ok": False,
                               "why": "no cell of this run has a published number to check"})
            continue
        matched = [r for r in rows if r["dataset"] == e.dataset and r.get("status") != "failed"
                   and r["task"] != "linear-probe" and (e.model is None or r["model"] == e.model)]
        if not matched:
            checks.append({"model": e.model, "dataset": e.dataset, "metric": e.metric, "expected": e.percent,
                           "measured": None, "tolerance": tolerance, "ok": False, "why": "no such cell was run"})
        for r in matched:
            metric = e.metric or r["metric"]
            value = _metric_value(r, metric)
            ok = value is not None and abs(100 * value - e.percent) <= tolerance + 1e-9
            why = f"the cell's {metric} is n/a (undefined for it: top-5 of fewer than 5 classes)" \
                if _has_metric(r, metric) else f"the cell has no metric {metric!r}"
            checks.append({"model": r["model"], "dataset": r["dataset"], "metric": metric, "expected": e.percent,
                           "measured": None if value is None else round(100 * value, 4), "tolerance": tolerance,
                           "ok": ok, **({} if value is not None else {"why": why})})
    return checks


# `mAP11` (the devkit's, the paper's) is the cell's paper value; `mean_average_precision` is CLIP_benchmark's own
_OURS_TO_CB = {"top1": "acc1", "top5": "acc5", "mean_per_class_recall": "mean_per_class_recall",
               **{f"image_to_text_R@{k}": f"text_retrieval_recall@{k}" for k in (1, 5, 10)},
               **{f"text_to_image_R@{k}": f"image_retrieval_recall@{k}" for k in (1, 5, 10)}}


def _has_metric(row: dict[str, Any], metric: str) -> bool:
    """Whether the cell has `metric` at all (an undefined one, top-5 of 2 classes, is there as null)."""
    metrics = row.get("metrics") or {}
    return metric == row.get("metric") or _OURS_TO_CB.get(metric, metric) in metrics or metric in metrics


def _metric_value(row: dict[str, Any], metric: str) -> float | None:
    if metric == row.get("metric"):
        return row.get("value")
    metrics = row.get("metrics") or {}
    value = metrics.get(_OURS_TO_CB.get(metric, metric), metrics.get(metric))
    return None if value is None else float(value)


def _table_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in summary["cells"]:
        value = r.get("value")
        ours = None if value is None else round(100 * float(value), 2)
        published = published_number(r["model"], r["dataset"]) if r["task"] == "zeroshot" and \
            r.get("metric") == "top1" else None
        out.append({"model": r["model"], "dataset": r["dataset"], "task": r["task"], "split": r["split"],
                    "prompt_set": r["prompt_set"], "metric": r.get("metric"), "ours": ours, "published": published,
                    "difference": None if ours is None or published is None else round(ours - published, 2),
                    "images_evaluated": r.get("images_evaluated"), "images_skipped": r.get("images_skipped"),
                    "seconds_per_image": r.get("seconds_per_image"),
                    "features_cached": r.get("features_cached"),  # a probe's test features read from the cache
                    "wall_seconds": r.get("wall_seconds"),
                    "precision": r.get("precision"),
                    "decode": r.get("decode"), "status": r.get("status"), "error": r.get("error", ""),
                    "limit_train": r.get("limit_train")})  # a probe's training subset (None: every image)
    return out


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.2f}" if isinstance(value, float) and value != abs(value) else str(value)


def _markdown(rows: list[dict[str, Any]], missing: list[dict[str, Any]], checks: list[dict[str, Any]],
              models: Sequence[dict[str, Any]] = ()) -> str:
    # the prompt set tells apart two cells of one model and dataset (`--templates zh-cifar10` and the default)
    head = ["model", "dataset", "task", "prompts", "metric", "ours %", "published %", "diff", "images", "skipped", "s/image",
            "cell s", "precision", "decode", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        diff = r["difference"]
        measured = r["status"] in ("computed", "cached", "earlier run")
        cells = [r["model"], r["dataset"], r["task"], _short(str(r["prompt_set"])), r["metric"] or "-",
                 ("n/a" if measured else "-") if r["ours"] is None else f"{r['ours']:.2f}",
                 "-" if r["published"] is None else f"{r['published']:.2f}",
                 "-" if diff is None else f"{diff:+.2f}", _fmt(r["images_evaluated"]), _fmt(r["images_skipped"]),
                 ("features cached" if r.get("features_cached") else "-") if r["seconds_per_image"] is None
                 else f"{r['seconds_per_image']:.4f}",
                 "-" if r.get("wall_seconds") is None else f"{r['wall_seconds']:.1f}",
                 _fmt(r["precision"]), _fmt(r["decode"]), r["status"] + (f": {r['error']}" if r["error"] else "")]
        lines.append("| " + " | ".join(" ".join(str(c).replace("|", "/").split()) for c in cells) + " |")
    lines += ["", _counts_line(rows, missing)]
    if models:  # loaded once per model, before its cells: not in any cell's `cell s`
        lines += ["", "Model load (once per model, not in `cell s`): " +
                  ", ".join(f"{m['model']} {m['load_seconds']:.1f} s" for m in models)]
    if missing:
        lines += ["", "Skipped datasets:", ""] + [f"- {m['dataset']}: {m['reason']}" +
                                                  (f" ({m['get']})" if m["get"] else "") for m in missing]
    if checks:
        lines += ["", "Golden checks:", ""] + [_check_line(c) for c in checks]
    return "\n".join(lines) + "\n"


def _check_line(check: dict[str, Any]) -> str:
    """One golden check in table.md; a check that had no cell to measure says why (``--expect published`` with no
    published number in the run wrote "- * * top1: expected None ±0.3, measured None MISSED")."""
    if check["dataset"] == "*":
        return f"- --expect published: MISSED: {check.get('why', 'nothing to check')}"
    head = f"- {check['model'] or '*'} {check['dataset']} {check['metric'] or 'paper metric'}: expected " \
           f"{check['expected']} ±{check['tolerance']}, "
    if check["measured"] is None:
        return head + f"MISSED: {check.get('why', 'not measured')}"
    return head + f"measured {check['measured']} {'ok' if check['ok'] else 'MISSED'}"


def _counts_line(rows: list[dict[str, Any]], missing: list[dict[str, Any]]) -> str:
    """``5 cells: 3 computed, 1 cached, 1 failed; 2 datasets skipped``: what a long run did, at a glance."""
    counts = Counter(r["status"] for r in rows)
    order = ["computed", "cached", "earlier run", "skipped", "failed"]
    what = ", ".join(f"{counts[k]} {k}" for k in [*order, *sorted(set(counts) - set(order))] if counts[k])
    return f"{len(rows)} cell{'s' * (len(rows) != 1)}" + (f": {what}" if what else "") + \
        (f"; {len(missing)} dataset{'s' * (len(missing) != 1)} skipped" if missing else "")


def _csv(rows: list[dict[str, Any]], lineterminator: str = "\n") -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["model", "dataset"],
                            lineterminator=lineterminator)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_tables(summary: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """table.md / table.csv (+ table_excel.csv) / table.json and heatmap.png (models x dataset-task, paper metric
    %)."""
    rows = finite(_table_rows(summary))
    out_dir.mkdir(parents=True, exist_ok=True)
    models = summary.get("models") or []
    files = {"markdown": str(write_text_atomic(out_dir / "table.md",
                                               _markdown(rows, summary["missing"], summary["expectations"],
                                                         models))),
             "csv": str(write_text_atomic(out_dir / "table.csv", _csv(rows))),
             "excel_csv": str(write_bytes_atomic(out_dir / "table_excel.csv",
                                                 _csv(rows, "\r\n").encode("utf-8-sig"))),
             "json": str(write_json_atomic(out_dir / "table.json",
                                           finite({"rows": rows, "missing": summary["missing"],
                                                   "models": models, "expectations": summary["expectations"],
                                                   "passed": summary["passed"]})))}
    done = [r for r in rows if r["ours"] is not None]
    if done:
        import numpy as np

        from clipforge.evaluate.plots import plot_heatmap

        models = list(dict.fromkeys(r["model"] for r in done))
        labels = _heatmap_columns(done)
        cols = list(dict.fromkeys(labels))
        grid = np.full((len(models), len(cols)), np.nan)
        for r, col in zip(done, labels, strict=True):
            grid[models.index(r["model"]), cols.index(col)] = r["ours"]
        short = [_short(m) for m in models]  # a checkpoint's file name, not its whole path, where that is unique
        files["heatmap"] = str(plot_heatmap(grid, short if len(set(short)) == len(short) else models, cols,
                                            out_dir / "heatmap.png",
                                            title="clipforge eval suite (each dataset's paper metric, %)"))
    return files


_VARIANTS = (("prompt_set", "{}"), ("split", "{}"), ("images_evaluated", "n={}"), ("limit_train", "train={}"),
             ("precision", "{}"), ("decode", "{}"))


def _heatmap_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Each row's heat-map column: the dataset (and task), plus what tells two cells of one model apart when the
    folder holds both (another --limit, prompt set, precision): one column each, where the later drew over the
    earlier one and the table listed a cell the map did not show."""
    base = [f"{r['dataset']} ({r['task']})" if r["task"] != "zeroshot" else r["dataset"] for r in rows]
    counts = Counter(zip((r["model"] for r in rows), base, strict=True))
    clash = {col for (_, col), n in counts.items() if n > 1}
    varying = {col: [key for key, _ in _VARIANTS
                     if len({str(r.get(key)) for r, c in zip(rows, base, strict=True) if c == col}) > 1]
               for col in clash}
    out = []
    for r, col in zip(rows, base, strict=True):
        keys = varying.get(col, [])
        what = ", ".join(fmt.format(_short(str(r.get(k)))) for k, fmt in _VARIANTS if k in keys)
        out.append(f"{col} [{what}]" if keys else col)
    return out


_FILE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".onnx", ".tar", ".txt", ".json"}


def _short(text: str) -> str:
    """A path's last part (`/data/runs/模型/中文模型甲.pt` -> `中文模型甲.pt`; `ViT-B/32` stays): whole paths as row
    names left the heat map no room ("Tight layout not applied") for its numbers."""
    path = Path(text)
    is_path = ("/" in text or "\\" in text) and (path.suffix.lower() in _FILE_SUFFIXES or path.is_dir())
    return path.name if is_path and path.name else text
