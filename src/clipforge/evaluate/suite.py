"""`eval suite`: many models x many datasets in one run, resumable, one CLIP_benchmark JSON per cell.

A cell is (model fingerprint, dataset, split, task, prompt set[, subset]). Each is computed by the
very functions the single commands run (`evaluate_zeroshot`, `evaluate_linear_probe`,
`evaluate_retrieval`), so a suite cell equals `clipforge eval zeroshot`'s number for the same
inputs. A finished cell's JSON is written last and atomically; a rerun finds it and recomputes
nothing (the model is loaded to learn its fingerprint, each dataset is opened to check that the cell
measured this copy, size and content of it, `suite_data`: stats, no image is read), what a killed run
left unfinished is removed, never read, and cells of an earlier clipforge are moved to ``cells/stale/``
(`suite_files`). Missing datasets are listed with where to get them
and skipped; a cell that fails, whatever the error, is recorded with its reason, not fatal; a linear
probe of a dataset without a training split here is listed as skipped, not failed.
Each model is loaded once, before its cells: its seconds are the summary's ``models[].load_seconds``
(and a cell's ``model_load_seconds``), not part of any cell's ``wall_seconds``.

Layout of `out_dir`: ``cells/<model>/<cell>.json`` (CLIP_benchmark's result format: dataset,
model, pretrained, task, metrics, language; our details under ``clipforge``; names keep Chinese and
other scripts, with a hash where a spec or template had to change to become a file name),
``predictions/<cell>.parquet``, ``reports/`` (the single commands' full reports and logs),
``table.{md,csv,json}``, ``table_excel.csv`` (the CSV with a BOM, see `suite_table`) and ``heatmap.png``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipforge.atomic import write_json_atomic
from clipforge.evaluate.suite_data import changed, dataset_now, details, language, metrics_cb, row_values
from clipforge.evaluate.suite_files import (
    clean_stale,
    clip_benchmark_name,
    finite,
    is_cell_file,
    legacy_cell_path,
    model_folder,
    move_old_cells,
    prompts_part,
    read_cell,
    same_settings,
    slug,
)

__all__ = ["Cell", "SuiteExpectation", "cell_id", "parse_suite_expect", "run_suite"]

TASK_NAMES = {"zeroshot": "zeroshot_classification", "linear-probe": "linear_probe", "retrieval": "zeroshot_retrieval"}
DEFAULT_TOP_K = 5  # `run_suite`'s and `eval suite --top-k`'s default: not a part of a cell's name
TOP_K_TASKS = ("zeroshot", "linear-probe")  # the tasks whose predictions --top-k cuts (retrieval keeps its own 10)


@dataclass(frozen=True)
class Cell:
    model: str
    dataset: str
    task: str  # zeroshot | linear-probe | retrieval
    split: str
    prompts: str  # the prompt set ("-" where a task uses none)
    root: Path
    skip: str = ""  # why the cell is not run (a probe of a dataset without a training split): listed, not failed


@dataclass(frozen=True)
class SuiteExpectation:
    model: str | None  # None: every model
    dataset: str
    metric: str | None  # None: the dataset's paper metric
    percent: float


def _id_parts(cell: Cell, fingerprint: str, limit: int | None, mode: str, limit_train: int | None = None,
              top_k: int = DEFAULT_TOP_K) -> list[str]:
    """The parts of a cell's name; a setting at its default adds none, so cells written before it was a part
    keep their names and are still found."""
    return [cell.dataset, cell.split, cell.task, cell.prompts, fingerprint[:16], mode] + \
        ([f"limit{limit}"] if limit else []) + \
        ([f"train{limit_train}"] if limit_train and cell.task == "linear-probe" else []) + \
        ([f"top{top_k}"] if top_k != DEFAULT_TOP_K and cell.task in TOP_K_TASKS else [])


def cell_id(cell: Cell, fingerprint: str, limit: int | None, mode: str = "fp32-draft",
            limit_train: int | None = None, top_k: int = DEFAULT_TOP_K) -> str:
    """The cell's identity as a file name: dataset, split, task, prompt set, weights fingerprint, and
    what else changes the number or the files: precision and decode mode, the subset, a linear probe's training
    subset (``--limit-train``: a probe trained on 300 images was read back as "cached" for 1000) and the
    predictions kept per sample (``--top-k``, which decides the Parquet a zero-shot or probe cell writes). A
    template or template file is named by a hash of its templates, so two of them never share a name (see
    `suite_files`)."""
    parts = _id_parts(cell, fingerprint, limit, mode, limit_train, top_k)
    return "__".join(prompts_part(p) if i == 3 else slug(p) for i, p in enumerate(parts))


def parse_suite_expect(items: Sequence[str] | None) -> list[SuiteExpectation]:
    """``[MODEL@]DATASET[:METRIC]=PERCENT`` -> expectations (e.g. ``ViT-B/32@imagenet:top1=63.32``);
    ``published`` checks every zero-shot cell that has a published number against it."""
    from clipforge.data.catalog import dataset_info

    out = []
    for item in items or ():
        if str(item).strip().lower() == "published":
            out.append(SuiteExpectation(None, "*", "top1", float("nan")))
            continue
        lhs, sep, value = str(item).rpartition("=")
        try:
            percent = float(value)
        except ValueError:
            sep = ""
        if not sep or not lhs:
            raise ValueError(f"--expect {item!r}: expected [MODEL@]DATASET[:METRIC]=PERCENT, e.g. cifar10:top1=89.8")
        model, _, rest = lhs.rpartition("@")
        dataset, _, metric = rest.partition(":")
        out.append(SuiteExpectation(model or None, dataset_info(dataset).key, metric or None, percent))
    return out


def _model_fields(spec: str, ev: Any) -> tuple[str, str]:
    """CLIP_benchmark's (model, pretrained) pair for a spec: ``ViT-B-32:laion2b_s34b_b79k`` -> both parts."""
    head, sep, tag = spec.rpartition(":")
    if sep and head and "/" not in tag and not Path(spec).exists():
        return head, tag
    return ev.name, ("openai" if ev.weights.startswith("http") else str(ev.weights))


def _plan(keys: list[str], root: str | Path | None, tasks: Sequence[str]) -> tuple[list[tuple], list[dict]]:
    """(available datasets [(info, data root)], missing [{dataset, reason, get}])."""
    from clipforge.data.catalog import dataset_info, find_dataset_root

    ready, missing = [], []
    for item in keys:
        key, _, override = item.partition("=")
        info = dataset_info(key)
        if info.unsupported:
            missing.append({"dataset": key, "reason": info.unsupported, "get": info.get})
            continue
        if info.task == "retrieval" and "retrieval" not in tasks or \
                info.task == "zeroshot" and not {"zeroshot", "linear-probe"} & set(tasks):
            continue
        data_root = find_dataset_root(info, root, override or None)
        if data_root is None or not data_root.exists():
            where = data_root or (Path(root) / info.folders[0] if root else "--root")
            missing.append({"dataset": key, "reason": f"not found at {where}", "get": info.get})
            continue
        ready.append((info, data_root))
    return ready, missing


def _cells(spec: str, ready: list[tuple], tasks: Sequence[str], templates: str | None) -> list[Cell]:
    """The cells of one model. A zero-shot cell's prompts default to what `eval zeroshot` prompts that model and
    dataset with: the set of the model's first language (`clipforge-tiny-zh` x cifar10: zh-cifar10; the suite
    prompted every model in English), as far as its `--models` entry tells (a name, a folder with languages.json,
    a `.safetensors` file recording `clipforge_languages` as `clipforge train` writes them; any other file is read
    as English, as `eval zeroshot` reads it only once loaded)."""
    from clipforge.data.retrieval_sets import retrieval_split
    from clipforge.evaluate.common import default_templates
    from clipforge.zeroshot.languages import default_template_set, model_languages

    languages = model_languages(spec) if spec else ("en",)
    cells = []
    for info, data_root in ready:
        if info.task == "retrieval":  # Flickr8k without a split list is read whole: split "all", not "test"
            cells.append(Cell(spec, info.key, "retrieval", retrieval_split(info.key, data_root, info.test_split), "-",
                              data_root))
            continue
        if "zeroshot" in tasks:
            prompts = templates or default_template_set(info.key, languages, default_templates(info.key))
            cells.append(Cell(spec, info.key, "zeroshot", info.test_split, prompts, data_root))
        if "linear-probe" in tasks:
            skip = "" if info.train_split else f"no train split: linear probe skipped ({info.key} has none)"
            if info.metric == "mAP11":
                skip = f"multi-label: linear probe skipped ({info.key}: clipforge's probe is single-label)"
            cells.append(Cell(spec, info.key, "linear-probe", info.test_split, "-", data_root, skip))
    return cells


def _run_cell(cell: Cell, ev: Any, out_dir: Path, cid: str, *, limit: int | None, limit_train: int | None,
              batch_size: int, workers: int, top_k: int, feature_cache_dir: str | Path | None,
              cache_dir: str | Path | None, progress: bool = False) -> dict[str, Any]:
    """One cell by the single command's function. `progress`: its own bars (prompts, images, fits) under the suite's,
    each cleared when done: a cell embedding ImageNet's 80,000 prompts showed nothing for minutes."""
    from clipforge.evaluate.linear_probe_eval import evaluate_linear_probe
    from clipforge.evaluate.retrieval_eval import evaluate_retrieval
    from clipforge.evaluate.zeroshot_eval import evaluate_zeroshot

    reports, preds = out_dir / "reports", out_dir / "predictions" / f"{cid}.parquet"
    common = {"batch_size": batch_size, "workers": workers, "out_dir": reports, "progress": progress}
    if cell.task == "zeroshot":
        return evaluate_zeroshot(ev, cell.dataset, cell.root, cell.split, templates=cell.prompts, limit=limit,
                                 predictions=preds, top_k=top_k, cache_dir=cache_dir, **common)
    if cell.task == "linear-probe":
        from clipforge.data.catalog import dataset_info

        return evaluate_linear_probe(ev, cell.dataset, cell.root, train_split=dataset_info(cell.dataset).train_split,
                                     test_split=cell.split, limit_train=limit_train, limit_test=limit,
                                     feature_cache_dir=feature_cache_dir, predictions=preds, top_k=top_k, **common)
    from clipforge.data.retrieval_sets import open_retrieval_dataset

    ds = open_retrieval_dataset(cell.dataset, cell.root, cell.split, ev.preprocess)
    return evaluate_retrieval(ev, ds, limit=limit, dataset_name=cell.dataset, predictions=preds, **common)


def run_suite(models: Sequence[str], datasets: Sequence[str] | str, root: str | Path | None, out_dir: str | Path,
              *, tasks: Sequence[str] = ("zeroshot", "retrieval"), templates: str | None = None,
              limit: int | None = None, limit_train: int | None = None, batch_size: int = 64, workers: int = 0,
              device: str | None = None, precision: str = "fp32", exact_decode: bool = False,
              expect: Sequence[SuiteExpectation] = (), tolerance: float = 0.3, top_k: int = DEFAULT_TOP_K,
              feature_cache_dir: str | Path | None = None, cache_dir: str | Path | None = None,
              progress: bool = True, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the grid; write cells, predictions, the merged table and heat map; return the summary.

    The summary has ``cells`` (one row per cell: model, dataset, task, metric, value, status
    computed/cached/failed), ``missing`` (datasets skipped and why), ``expectations`` and ``passed``
    (every golden check met and no dataset that was present failed to evaluate).
    """
    from tqdm.auto import tqdm

    from clipforge.data.catalog import expand_datasets
    from clipforge.evaluate.common import resolve_model
    from clipforge.evaluate.linear_probe_eval import NoTrainSplitError
    from clipforge.evaluate.suite_table import check_suite_expectations, write_tables

    # above the progress bar, not into it (a plain print wrote "...1.14s/cell][1/2] model x cifar10 ..." on one line)
    say = echo or (lambda text: tqdm.write(text, file=sys.stderr))
    bad_tasks = set(tasks) - set(TASK_NAMES)
    if bad_tasks:
        raise ValueError(f"unknown suite task(s) {sorted(bad_tasks)}; tasks: {', '.join(TASK_NAMES)}")
    from clipforge.evaluate.report import check_limit, check_out_dir, check_tolerance, check_top_k
    from clipforge.evaluate.roots import check_suite_root

    check_limit(limit)
    check_limit(limit_train, "--limit-train")
    check_tolerance(tolerance)
    check_top_k(top_k)
    check_suite_root(root)  # a folder of dataset folders, said in one line
    out_dir = check_out_dir(out_dir)  # up front: an unwritable --out failed every cell, then the table
    ready, missing = _plan(expand_datasets(list(datasets) if not isinstance(datasets, str) else datasets),
                           root, tasks)
    for m in missing:
        say(f"skipped {m['dataset']}: {m['reason']}" + (f" - {m['get']}" if m["get"] else ""))
    if not ready:
        say(f"no dataset of the {len(missing)} asked for was found under {root}: nothing to evaluate")
    models = list(dict.fromkeys(m.strip() for m in models if m.strip()))  # `--models a a` ran `a` twice
    removed = clean_stale(out_dir)  # what a killed run was writing; never read as a result
    if removed:
        say(f"removed {removed} unfinished file(s) a stopped run left in {out_dir}")
    if old := move_old_cells(out_dir):  # their metrics or names may mean something else: never tabled as current
        say(f"{old} cell{'s' if old != 1 else ''} written by an earlier clipforge moved to cells/stale/: their "
            "metrics may mean something else; rerun them")
    rows: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = []  # each model's load (once, before its cells): not in any cell's seconds
    total = len(models) * len(_cells("", ready, tasks, templates))
    position = 0
    memo: dict[tuple, dict[str, Any]] = {}  # each dataset opened once to check the cells read back (no image read)
    with tqdm(total=total, desc="suite", unit="cell", disable=not progress) as bar:
        unloadable: list[BaseException] = []
        for spec in models:
            t_load = time.perf_counter()
            try:
                ev = resolve_model(spec, device, precision=precision, exact_decode=exact_decode)
                fingerprint = ev.describe()["fingerprint"]
            except Exception as exc:  # noqa: BLE001 - one model's failure is its cells', never the grid's
                # a model that cannot load fails its own cells; it ended the whole grid after the models before
                # it had run, with no table written
                unloadable.append(exc)
                reason = _reason(exc)
                say(f"failed {spec}: the model did not load: {reason}")
                for cell in _cells(spec, ready, tasks, templates):
                    rows.append({"model": spec, "dataset": cell.dataset, "task": cell.task, "split": cell.split,
                                 "prompt_set": cell.prompts, "cell_file": "", "status": "skipped" if cell.skip
                                 else "failed", "error": cell.skip or f"model did not load: {reason}"})
                    bar.update(1)
                    position += 1
                continue
            load_s = round(time.perf_counter() - t_load, 3)
            loads.append({"model": spec, "load_seconds": load_s})
            model_name, pretrained = _model_fields(spec, ev)
            for cell in _cells(spec, ready, tasks, templates):
                mode = f"{ev.precision}-{'draft' if ev.draft_decode else 'exact'}"
                cid = cell_id(cell, fingerprint, limit, mode, limit_train, top_k)
                path = out_dir / "cells" / model_folder(spec) / f"{cid}.json"
                position += 1
                bar.set_postfix_str(f"{spec} x {cell.dataset} ({cell.task})")
                row = {"model": spec, "dataset": cell.dataset, "task": cell.task, "split": cell.split,
                       "prompt_set": cell.prompts, "cell_file": str(path)}
                if cell.skip:  # listed and counted, not failed: the run still exits 0
                    say(f"[{position}/{total}] {spec} x {cell.dataset}: {cell.skip}")
                    rows.append({**row, "cell_file": "", "status": "skipped", "error": cell.skip})
                    bar.update(1)
                    continue
                done = same_settings(read_cell(path), cell.task, limit_train, top_k)
                if done is None:  # written by an earlier version (ASCII-only names): only if it is this very cell
                    old = legacy_cell_path(out_dir / "cells", spec,
                                           _id_parts(cell, fingerprint, limit, mode, limit_train, top_k))
                    done = same_settings(read_cell(old, spec, cell.prompts), cell.task, limit_train, top_k)
                    row["cell_file"] = str(old if done is not None else path)
                now = _dataset_now(cell, memo)  # taken before the cell runs: what its digests record
                if done is not None and (why := _reuse_problem(done, now, out_dir)):
                    say(f"cell {Path(row['cell_file']).stem}: {why}: computed again")
                    done, row["cell_file"] = None, str(path)
                if done is not None:
                    rows.append({**row, **row_values(done), "status": "cached"})
                    bar.update(1)
                    continue
                t0 = time.perf_counter()
                try:
                    report = _run_cell(cell, ev, out_dir, cid, limit=limit, limit_train=limit_train,
                                       batch_size=batch_size, workers=workers, top_k=top_k,
                                       feature_cache_dir=feature_cache_dir, cache_dir=cache_dir, progress=progress)
                    info = details(cell, report, time.perf_counter() - t0, cid,
                                   top_k if cell.task in TOP_K_TASKS else None, None if "error" in now else now)
                    # CLIP_benchmark's name for the dataset (imagenet1k, vtab/resisc45, voc2007_multilabel,
                    # flickr8k_all), so `clip_benchmark build` puts ours and theirs in one column; ours stays below
                    result = {"dataset": clip_benchmark_name(cell.dataset, cell.split), "model": model_name,
                              "pretrained": pretrained, "task": TASK_NAMES[cell.task],
                              "metrics": metrics_cb(cell.task, report["metrics"]), "language": language(report),
                              "clipforge": {"model_spec": spec, **info, "model_load_seconds": load_s}}
                    result = finite(result)  # NaN (an undefined metric) as null: NaN is not JSON
                    # written last: its presence means the cell is finished; a write that fails (a full disk, its
                    # temporary removed by another machine's run into the same --out) is this cell's failure only
                    write_json_atomic(path, result)  # its temporary named with this host: `clean_stale`
                except NoTrainSplitError as exc:  # a test-only copy (the shared mini CUB): skipped, not failed
                    why = f"no train split: linear probe skipped ({_reason(exc, first_line=True)})"
                    say(f"[{position}/{total}] {spec} x {cell.dataset}: {why}")
                    rows.append({**row, "cell_file": "", "status": "skipped", "error": why})
                    bar.update(1)
                    continue
                except Exception as exc:  # noqa: BLE001 - one bad cell is counted and explained; the rest go on
                    reason = _reason(exc, first_line=True)
                    say(f"[{position}/{total}] failed {spec} x {cell.dataset} ({cell.task}): {reason}")
                    rows.append({**row, "status": "failed", "error": reason})
                    bar.update(1)
                    continue
                rows.append({**row, **row_values(result), "status": "computed"})
                value = result["clipforge"]["paper_value"]
                say(f"[{position}/{total}] {spec} x {cell.dataset} ({cell.task}): {info['paper_metric']} "
                    + ("n/a" if value is None else f"{100 * float(value):.2f}%") + f" ({info['wall_seconds']:.1f} s"
                    + (", features cached" if info.get("features_cached") else "") + ")")
                if info.get("cut_notice"):  # as `eval zeroshot` / `eval retrieval` say it, under its cell
                    say(info["cut_notice"])
                if info.get("notice"):  # prompts in a language the model was not trained for (eval zeroshot's)
                    say(info["notice"])
                bar.update(1)
    if unloadable and len(unloadable) == len(models):  # nothing could run: the first reason, as one line
        raise unloadable[0]
    rows = finite(rows + _earlier_cells(out_dir, {r["cell_file"] for r in rows}))  # NaN read back: null, as written
    checks = check_suite_expectations(rows, expect, tolerance)
    failed = [r for r in rows if r.get("status") == "failed"]
    summary = {"cells": rows, "missing": missing, "expectations": checks, "failed": len(failed),
               "skipped": sum(r.get("status") == "skipped" for r in rows), "models": loads,
               "passed": all(c["ok"] for c in checks) and not failed, "out_dir": str(out_dir)}
    summary["files"] = write_tables(summary, out_dir)
    return summary


def _reason(exc: BaseException, first_line: bool = False) -> str:
    """One line for a failed cell or model: the message of an expected error; type and message of any other
    (a TypeError in a dataset adapter ended the whole grid with no table)."""
    text = str(exc).splitlines()[0] if first_line and str(exc) else " ".join(str(exc).split())
    if isinstance(exc, (OSError, ValueError, KeyError, RuntimeError)):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _dataset_now(cell: Cell, memo: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """`dataset_now` of the cell (root, counts, digests; no image read), or ``{"error": why}`` when the dataset does
    not open: the cell is then computed, to fail with its reason (or be skipped, a probe without a training split)."""
    try:
        return dataset_now(cell, memo)
    except Exception as exc:  # noqa: BLE001 - the computation says it properly
        return {"error": _reason(exc, first_line=True)}


def _reuse_problem(done: dict[str, Any], now: dict[str, Any], out_dir: Path) -> str | None:
    """Why a finished cell of this name is not this run's result (another copy, size or content of the dataset, a
    cell that cannot say, or its predictions file not whole: `predictions_problem`), or None to reuse it."""
    from clipforge.evaluate.suite_data import predictions_problem

    if "error" in now:
        return f"the dataset does not open ({now['error']})"
    return changed(done["clipforge"], now) or predictions_problem(out_dir, done["clipforge"])


def _earlier_cells(out_dir: Path, seen: set[str]) -> list[dict[str, Any]]:
    """Cells finished by earlier runs into the same folder (other models or datasets): the merged
    table covers the whole grid computed so far, not just this run's part of it."""
    from clipforge.evaluate.suite_data import is_current

    rows = []
    for path in sorted((out_dir / "cells").glob("*/*.json")):
        if str(path) in seen or not is_cell_file(path):  # a killed writer's temporary is no cell
            continue
        done = read_cell(path)
        if done is None or not is_current(done["clipforge"]):  # one `move_old_cells` could not move: not tabled
            continue
        cf = done["clipforge"]
        rows.append({"model": cf.get("model_spec", done.get("model")), "dataset": cf.get("dataset", done["dataset"]),
                     "task": cf["task"],
                     "split": cf["split"], "prompt_set": cf["prompt_set"], "cell_file": str(path),
                     **row_values(done), "status": "earlier run"})
    return rows
