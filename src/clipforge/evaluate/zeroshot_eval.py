"""`eval zeroshot`: zero-shot classification accuracy and speed, one JSON report per run.

The measurement is the CLIP paper's: class embeddings from prompt ensembles, each image
assigned the class of highest cosine similarity, top-1/top-5 accuracy and mean per-class
recall over the whole split (or a fixed subset with `limit`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipforge.evaluate.common import (
    dataset_classnames,
    default_split,
    default_templates,
    open_eval_dataset,
    paper_metric,
    report_header,
    resolve_model,
)
from clipforge.evaluate.features import extract_image_features, subset_indices
from clipforge.evaluate.metrics import classification_metrics, confusion_matrix
from clipforge.evaluate.metrics import predictions as top1_predictions
from clipforge.evaluate.report import (
    canonical_expect,
    check_limit,
    check_out_dir,
    check_tolerance,
    claim_run_files,
    finish_report,
    log_skipped,
    peak_memory,
    plot_dir_for,
    reset_peak_memory,
    skipped_files,
    write_plots,
)
from clipforge.evaluate.roots import check_root
from clipforge.evaluate.run_log import open_run_log
from clipforge.models.modes import keeps_caller_mode
from clipforge.zeroshot import ZeroShotClassifier, get_templates
from clipforge.zeroshot.languages import (
    classnames_for,
    default_template_set,
    model_languages,
    templates_for_labels,
)

__all__ = ["evaluate_zeroshot"]


@keeps_caller_mode  # an nn.Module runs in eval mode and is given back in the modes it had (`models.modes`)
def evaluate_zeroshot(model: str | torch.nn.Module, dataset: str | Any, root: str | Path | None = None,
                      split: str | None = None, *, templates: str | Sequence[str] | None = None,
                      classnames: Sequence[str] | str | Path | None = None, batch_size: int = 64, workers: int = 0,
                      device: str | torch.device | None = None, limit: int | None = None,
                      out_dir: str | Path = "eval_results", plot: bool | str | Path = False,
                      expect: Mapping[str, float] | None = None, tolerance: float = 0.3,
                      cache_dir: str | Path | None = None, preprocess: Any = None,
                      model_name: str | None = None, progress: bool = True,
                      precision: str = "fp32", exact_decode: bool = False,
                      predictions: str | Path | None = None, top_k: int = 5) -> dict[str, Any]:
    """Run the evaluation, write ``<out_dir>/<stem>.json`` and ``.log`` (and PNGs with `plot`).

    `model`: a `--model` string or a CLIP-like module. `classnames`: the names to prompt with, in the
    dataset's class order, or a file of them (one per line, `clipforge.zeroshot.files.read_labels_file`). `dataset`: a name for
    `clipforge.data.open_dataset` (with `root`) or a dataset object with `classnames`.
    `expect`: percent values per metric (``{"top1": 63.3}``); the report's ``passed`` says
    whether every one is within `tolerance` points. Returns the report dict (with ``files``, and ``notice`` when
    the class names or templates are in a language the model was not trained for: its scores mean nothing;
    ``prompts_cut`` counts the prompts whose label the model's context cuts, ``cut_notice`` says so when any is).
    `predictions`: a Parquet path for each evaluated sample's `top_k` class ids and scores.
    The report's ``paper_metric`` names the CLIP paper's number for the dataset (mean per-class
    accuracy for some, 11-point mAP for multi-label VOC 2007, whose metrics are ``mAP11`` and CLIP_benchmark's
    ``mean_average_precision`` only; its `plot` is a per-class AP chart, `_ap_plot`). ``top5`` is null (not 100%) with fewer than 5 classes, as CLIP_benchmark.
    `expect` names, `limit` and the output folders are checked before the model or the dataset is
    loaded (they were checked after the run, losing it); `--expect acc1=...` (the suite's name) works.
    `split` None: the dataset's evaluation split, as the CLI without ``--split`` (`common.default_split`: val for
    imagenet, test for most). A model module is encoded in eval mode and handed back in the modes it had.
    """
    split = default_split(dataset, split)
    expect = canonical_expect(expect, "zeroshot", dataset if isinstance(dataset, str) else None)
    names_file = Path(classnames) if isinstance(classnames, str | Path) else None
    if names_file is not None:  # a file of class names (--classnames): read before the model loads
        from clipforge.zeroshot.files import CLASSNAMES_FILE, read_labels_file

        classnames = read_labels_file(names_file, *CLASSNAMES_FILE)
    check_limit(limit)
    check_tolerance(tolerance)
    out_dir = check_out_dir(out_dir)
    plot_dir = plot_dir_for(plot, out_dir)
    check_root(dataset, root)  # a --root that is not there: the layout expected, before the model loads
    ev = resolve_model(model, device, preprocess, model_name, precision=precision, exact_decode=exact_decode)
    ds = open_eval_dataset(dataset, root, split, ev.preprocess)
    ds_name = dataset if isinstance(dataset, str) else str(getattr(ds, "name", "dataset"))
    # a dataset's prompt set follows the model's language; a language set brings its class names
    template_spec = templates if templates is not None else default_template_set(
        ds_name, model_languages(ev), default_templates(ds_name))
    own = dataset_classnames(ds_name, ds) if classnames is None else None
    names = list(classnames) if classnames is not None else (
        classnames_for(ds_name, template_spec, len(ds.classnames), own, get_templates(template_spec)) or own)
    if len(names) != len(ds.classnames):
        raise ValueError(_names_misfit(names, names_file, ds.classnames, ds_name))
    multilabels = getattr(ds, "multilabels", None)  # VOC 2007: scored by mAP only (no single-label accuracy)
    if "top5" in expect and len(names) < 5:  # before any image is read: the report's top5 is null
        raise ValueError(f"--expect top5: top-5 accuracy is undefined for the {len(names)} classes of {ds_name} "
                         "(fewer than 5; the report writes null, as CLIP_benchmark writes NaN)")
    # Chinese class names with an English set that has a Chinese twin ("simple", "imagenet") are prompted with
    # the twin (as `ZeroShotClassifier` does): resolved here so the report names the templates that were used
    template_spec = templates_for_labels(template_spec, names)
    template_list = get_templates(template_spec)
    notice = _language_notice(names, template_list, ev)
    from clipforge.evaluate.text_cut import prompts_cut

    cut_field, cut_notice = prompts_cut(names, template_list, ev.model, ev.name, template_spec)
    stem, json_path, log_path = claim_run_files(out_dir, "zeroshot", ev.name, ds_name, getattr(ds, "split", split))

    with open_run_log(log_path) as log:
        log.info("model %s (%s) on %s; dataset %r: %d images, %d classes; %d templates",
                 ev.name, ev.weights, ev.device, ds, len(ds), len(names), len(template_list))
        for line in (notice, cut_notice):
            if line:
                log.warning("%s", line)
        reset_peak_memory(ev.device)
        t0 = time.perf_counter()
        classifier = ZeroShotClassifier(ev.model, names, template_list, device=ev.device, cache_dir=cache_dir,
                                        progress=progress)
        embed_s = time.perf_counter() - t0
        log.info("class embeddings: %.2fs (%s)", embed_s,
                 f"cache hit {classifier.cache_path}" if classifier.cache_hit else "computed")
        chosen = subset_indices(len(ds), limit)
        result = extract_image_features(ev.model, ds, batch_size=batch_size, workers=workers, device=ev.device,
                                        indices=chosen, progress=progress, desc=f"zeroshot {ds_name}")
        scores = classifier.logits(result.features).cpu()
        marks = None if multilabels is None else np.asarray(multilabels)[result.indices.numpy()]
        metrics = classification_metrics(scores, result.labels, ks=(1, 5)) if marks is None else \
            _multilabel_metrics(scores, marks)
        if paper_metric(ds_name) == "roc_auc" and scores.shape[1] == 2:  # Hateful Memes
            from clipforge.evaluate.metrics import binary_roc_auc

            metrics["roc_auc"] = binary_roc_auc(scores[:, 1] - scores[:, 0], result.labels)
        if paper_metric(ds_name) == "mean_top1_top5" and marks is None:  # Kinetics-700, as the paper reports it
            metrics["mean_top1_top5"] = None if metrics["top5"] is None else (metrics["top1"] + metrics["top5"]) / 2
        log.info("%s over %d images; %s", _summary(metrics), metrics["num_samples"],
                 f"{result.bad['skipped']} bad images skipped")
        log_skipped(log, result.bad, ds)
        timing = {**result.timing, "class_embeddings_s": round(embed_s, 4),
                  "class_embeddings_cached": classifier.cache_hit}
        report: dict[str, Any] = {
            **report_header("zeroshot_classification", ev.device),
            "model": ev.describe(),
            "dataset": {"name": ds_name, "root": str(getattr(ds, "root", root)), "split": getattr(ds, "split", split),
                        "layout": getattr(ds, "layout", None), "num_images": len(ds), "num_classes": len(names),
                        "limit": limit, "evaluated": metrics["num_samples"], **skipped_files(ds)},
            "templates": {"spec": template_spec if isinstance(template_spec, str) else "custom",
                          "count": len(template_list), "templates": template_list},
            "classnames": names,
            "prompts_cut": cut_field,  # prompts whose label the model's context cuts (text_cut.prompts_cut)
            "metrics": metrics,
            "paper_metric": paper_metric(ds_name),
            "bad_images": result.bad,
            "timing": timing,
            "memory": peak_memory(ev.device),
            "files": {"report": str(json_path), "log": str(log_path)},
        }
        if notice:  # the scores of prompts in a language the model was not trained for mean nothing: kept with them
            report["notice"] = notice
        if cut_notice:  # as `classify` says it: those prompts score every class alike
            report["cut_notice"] = cut_notice
        if predictions is not None:
            from clipforge.evaluate.predictions import write_predictions

            report["files"]["predictions"] = str(write_predictions(
                predictions, result.indices, [ds.source_name(int(i)) for i in result.indices], result.labels,
                scores, top_k, present=None if marks is None else [np.flatnonzero(m >= 0).tolist() for m in marks]))
        title = f"{ev.name} on {ds_name}"
        if plot_dir is not None and marks is not None:  # no single label an image: per-class AP, not accuracy
            write_plots(report, log, lambda: [_ap_plot(scores, marks, metrics, names, plot_dir, stem, title)])
        elif plot_dir is not None:
            write_plots(report, log, lambda: _plots(metrics, names, result.labels, top1_predictions(scores), plot_dir,
                                                    stem, title))
        finish_report(report, metrics, expect, tolerance, json_path, log)
    return report


def _multilabel_metrics(scores: torch.Tensor, marks: np.ndarray) -> dict[str, Any]:
    """A multi-label set's metrics (VOC 2007; `marks` [N, C]: 1 present, 0 difficult, -1 absent): the devkit's
    11-point mAP (``mAP11``, the CLIP paper's number) and CLIP_benchmark's ``mean_average_precision``
    (``voc2007_multilabel``: non-interpolated, difficult objects present, all classes). No top-1/top-5/per-class
    recall: they were scored on each image's first class present, which neither reports."""
    from clipforge.evaluate.metrics import mean_average_precision, mean_average_precision_11pt

    return {"mAP11": mean_average_precision_11pt(scores, marks), "mean_average_precision":
            mean_average_precision(scores, marks), "num_samples": int(len(marks)), "num_classes": int(marks.shape[1])}


def _summary(metrics: dict[str, Any]) -> str:
    """The log's line of the metrics, in percent; "n/a" for one that is undefined (top5 of fewer than 5 classes)."""
    names = ("top1", "top5", "mean_per_class_recall", "mAP11", "mean_average_precision")
    return " ".join(f"{n.replace('_', ' ')} " + ("n/a" if metrics[n] is None else f"{100 * metrics[n]:.2f}%")
                    for n in names if n in metrics)


def _language_notice(names: Sequence[str], templates: Sequence[str], ev: Any) -> str | None:
    """The notice `classify` gives for labels in a language the model was not trained for, asked of the loaded
    model (a Chinese-CLIP checkpoint file is known to be Chinese): of the class names, else of the templates
    ("一张{}的照片" filled with "bird"). None when the model reads them."""
    from clipforge.zeroshot.languages import query_notice

    return query_notice(" ".join(names), ev, "class names") or query_notice(" ".join(templates), ev, "templates")


def _plots(metrics: dict, names: list[str], labels: torch.Tensor, pred: torch.Tensor, out_dir: Path,
           stem: str, title: str | None = None) -> list[str]:
    from clipforge.evaluate.plots import plot_confusion_matrix, plot_per_class_accuracy

    cm = confusion_matrix(labels, pred, len(names))
    who = f"{title}: " if title else ""  # which model on which dataset: a PNG travels without its report
    return [
        str(plot_per_class_accuracy(metrics["per_class_accuracy"], names, out_dir / f"{stem}_per_class.png",
                                    title=f"{who}zero-shot per-class accuracy")),
        str(plot_confusion_matrix(np.asarray(cm), names, out_dir / f"{stem}_confusion.png",
                                  title=f"{who}zero-shot confusion matrix (row-normalised)")),
    ]


def _ap_plot(scores: torch.Tensor, marks: np.ndarray, metrics: dict[str, Any], names: list[str], out_dir: Path,
             stem: str, title: str) -> str:
    """A multi-label set's figure (VOC 2007): each class's average precision as CLIP_benchmark computes it
    (`average_precision_per_class`, difficult objects present), whose mean over all classes is the report's
    ``mean_average_precision``; a class with no image holding it is not drawn (CLIP_benchmark counts it 0). Per-class
    accuracy and a confusion matrix need one label an image, which VOC does not have."""
    from clipforge.evaluate.metrics import average_precision_per_class
    from clipforge.evaluate.plots import plot_per_class_accuracy

    present = marks >= 0
    ap = average_precision_per_class(scores, present)
    values = [float(a) if present[:, c].any() else None for c, a in enumerate(ap)]
    absent = values.count(None)
    note = f"; {absent} class{'es' if absent != 1 else ''} without an image not drawn, counted 0" if absent else ""
    return str(plot_per_class_accuracy(values, names, out_dir / f"{stem}_per_class_ap.png",
                                       title=f"{title}: zero-shot per-class AP (CLIP_benchmark's{note})",
                                       value_name="average precision", mean=metrics["mean_average_precision"]))


def _names_misfit(names: Sequence[str], source: Path | None, classes: Sequence[str], dataset: str) -> str:
    """Why class names do not fit a dataset, in one line naming the file: names written on one line with
    commas ("飞机，汽车，鸟"), a repeated name and the dataset's own classes are said."""
    from clipforge.text.labels import split_labels

    where = f"class names file {source}" if source is not None else "classnames"
    shown = ", ".join(str(c) for c in classes[:5]) + (", ..." if len(classes) > 5 else "")
    line = (f"{where}: {len(names)} class name{'s' if len(names) != 1 else ''} for the {len(classes)} classes of "
            f"{dataset}; expected one name per line for each class, in the order of the dataset's classes ({shown})")
    crowded = next(((name, n) for name in names if (n := len(split_labels(name, required=False))) > 1), None)
    if crowded is not None and len(names) < len(classes):
        line += (f"; {crowded[0]!r} holds {crowded[1]} names separated by commas: put each class name on a line "
                 "of its own")
    repeated = [name for name in dict.fromkeys(names) if names.count(name) > 1]
    if repeated and len(names) > len(classes):
        line += "; " + ", ".join(f"{name!r}" for name in repeated[:3]) + (" is" if len(repeated) == 1 else " are") \
            + " repeated"
    return line
