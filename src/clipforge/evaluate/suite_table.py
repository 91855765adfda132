"""The suite's merged table (Markdown, CSV, JSON), heat map, published numbers and golden checks.

Published numbers come from open_clip's results table (`docs/openclip_results.csv`, measured with
CLIP_benchmark on the released checkpoints): ImageNet top-1 for every registry entry
(`clipforge.weights.registry`, the numbers docs/reference-numbers.md lists) and, for OpenAI's nine
models, CIFAR-10, CIFAR-100 and Stanford Cars (`published.json`, the same page's second table).
Each row shows ours, the published number and the difference in points.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from clipforge.atomic import write_json_atomic, write_text_atomic

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
    """One check per (expectation, matching cell); a cell that is absent fails its check."""
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
                               "why": "no cell of this grid has a published number to check"})
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
            checks.append({"model": r["model"], "dataset": r["dataset"], "metric": metric, "expected": e.percent,
                           "measured": None if value is None else round(100 * value, 4), "tolerance": tolerance,
                           "ok": ok, **({} if value is not None else {"why": f"the cell has no metric {metric!r}"})})
    return checks


_OURS_TO_CB = {"top1": "acc1", "top5": "acc5", "mAP11": "mean_average_precision",
               "mean_per_class_recall": "mean_per_class_recall",
               **{f"image_to_text_R@{k}": f"text_retrieval_recall@{k}" for k in (1, 5, 10)},
               **{f"text_to_image_R@{k}": f"image_retrieval_recall@{k}" for k in (1, 5, 10)}}


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
                    "seconds_per_image": r.get("seconds_per_image"), "wall_seconds": r.get("wall_seconds"),
                    "precision": r.get("precision"),
                    "decode": r.get("decode"), "status": r.get("status"), "error": r.get("error", "")})
    return out


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.2f}" if isinstance(value, float) and value != abs(value) else str(value)


def _markdown(rows: list[dict[str, Any]], missing: list[dict[str, Any]], checks: list[dict[str, Any]]) -> str:
    head = ["model", "dataset", "task", "metric", "ours %", "published %", "diff", "images", "skipped", "s/image",
            "cell s", "precision", "decode", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        diff = r["difference"]
        cells = [r["model"], r["dataset"], r["task"], r["metric"] or "-",
                 "-" if r["ours"] is None else f"{r['ours']:.2f}",
                 "-" if r["published"] is None else f"{r['published']:.2f}",
                 "-" if diff is None else f"{diff:+.2f}", _fmt(r["images_evaluated"]), _fmt(r["images_skipped"]),
                 "-" if r["seconds_per_image"] is None else f"{r['seconds_per_image']:.4f}",
                 "-" if r.get("wall_seconds") is None else f"{r['wall_seconds']:.1f}",
                 _fmt(r["precision"]), _fmt(r["decode"]), r["status"] + (f": {r['error']}" if r["error"] else "")]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    if missing:
        lines += ["", "Skipped datasets:", ""] + [f"- {m['dataset']}: {m['reason']}" +
                                                  (f" ({m['get']})" if m["get"] else "") for m in missing]
    if checks:
        lines += ["", "Golden checks:", ""] + [
            f"- {c['model'] or '*'} {c['dataset']} {c['metric']}: expected {c['expected']} ±{c['tolerance']}, "
            f"measured {c['measured']} {'ok' if c['ok'] else 'MISSED'}" for c in checks]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["model", "dataset"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_tables(summary: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """table.md / table.csv / table.json and heatmap.png (models x dataset-task, paper metric %)."""
    rows = _table_rows(summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"markdown": str(write_text_atomic(out_dir / "table.md",
                                               _markdown(rows, summary["missing"], summary["expectations"]))),
             "csv": str(write_text_atomic(out_dir / "table.csv", _csv(rows))),
             "json": str(write_json_atomic(out_dir / "table.json",
                                           {"rows": rows, "missing": summary["missing"],
                                            "expectations": summary["expectations"], "passed": summary["passed"]}))}
    done = [r for r in rows if r["ours"] is not None]
    if done:
        import numpy as np

        from clipforge.evaluate.plots import plot_heatmap

        models = list(dict.fromkeys(r["model"] for r in done))
        cols = list(dict.fromkeys(f"{r['dataset']} ({r['task']})" if r["task"] != "zeroshot" else r["dataset"]
                                  for r in done))
        grid = np.full((len(models), len(cols)), np.nan)
        for r in done:
            col = f"{r['dataset']} ({r['task']})" if r["task"] != "zeroshot" else r["dataset"]
            grid[models.index(r["model"]), cols.index(col)] = r["ours"]
        files["heatmap"] = str(plot_heatmap(grid, models, cols, out_dir / "heatmap.png",
                                            title="clipforge eval suite (each dataset's paper metric, %)"))
    return files
