"""`eval linear-probe`: logistic regression on frozen image features, full and few-shot.

See `clipforge.evaluate.probe` for how C is chosen. Features of both splits are extracted
once (and cached on disk), so adding seeds or shots costs only the small fits.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from clipforge.data.base import DatasetFormatError, DatasetLayoutError
from clipforge.evaluate.common import default_split, open_eval_dataset, report_header, resolve_model
from clipforge.evaluate.feature_cache import cached_features
from clipforge.evaluate.features import check_feature_kind, describe_image_features, subset_indices
from clipforge.evaluate.metrics import defined, mean_per_class_recall, predictions, topk_accuracy
from clipforge.evaluate.probe import (
    fewshot_split,
    fit_probe,
    limited_fit_threads,
    mean_std,
    stratified_holdout,
)
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

__all__ = ["NoTrainSplitError", "class_map", "evaluate_linear_probe", "open_probe_splits"]


class NoTrainSplitError(DatasetLayoutError):
    """The dataset's test split is there and its training split is not (a test-only copy: the shared mini CUB,
    an ImageNet sample): the message is the dataset's own; the suite skips the probe cell, `eval linear-probe`
    exits 2 as for any missing folder."""


def _scores(probs: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """top1, top5 (None with fewer than 5 classes, CLIP_benchmark's NaN: not a trivial 100%) and mean per-class
    recall of a probe's class probabilities (a NaN probability is never a hit: `metrics`' non-finite rule)."""
    acc = topk_accuracy(probs, y, ks=(1, 5))
    pred = predictions(probs).numpy()
    return {"top1": acc[1], "top5": defined(acc[5]),
            "mean_per_class_recall": mean_per_class_recall(y, pred, probs.shape[1])}


def open_probe_splits(dataset: str, root: str | Path | None, train_split: str, test_split: str,
                      transform: Any) -> tuple[Any, Any]:
    """(train, test) datasets of catalogue name `dataset`; the test split first, so a training split that is not
    there (a missing folder or file, or no sample listed for it) is a `NoTrainSplitError`, not a broken dataset."""
    test_ds = open_eval_dataset(dataset, root, test_split, transform)
    try:
        train_ds = open_eval_dataset(dataset, root, train_split, transform)
    except (DatasetLayoutError, DatasetFormatError) as exc:
        if isinstance(exc, DatasetLayoutError) or "has no samples for split" in str(exc):
            raise NoTrainSplitError(str(exc)) from exc
        raise
    return train_ds, test_ds


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "") if names else "none"


def class_map(train_ds: Any, test_ds: Any, name: str) -> np.ndarray | None:
    """Each training label's index in the test split's class list: None when the two lists are the same; a
    mapping by name when they hold the same classes in another order; ValueError, naming the classes only in
    one of them, when they differ, or naming the repeated name and its folders when the lists differ and one holds
    a name twice (`sea_ship/` and `sea ship/` both show as "sea ship": no name to map it by). Comparing the counts alone fit a probe on train/{cat,dog,frog} and scored it
    on test/{cat,frog,horse}, label 1 meaning "dog" to the fit and "frog" to the score, with exit status 0."""
    train, test = [str(c) for c in train_ds.classnames], [str(c) for c in test_ds.classnames]
    if train == test:
        return None
    for split, ds, names in (("train", train_ds, train), ("test", test_ds, test)):
        if len(set(names)) != len(names):  # two classes shown alike (`sea_ship/`, `sea ship/`): no name to map by
            raise ValueError(_duplicate_classes(split, ds, names, name))
    only_train = [c for c in train if c not in set(test)]
    only_test = [c for c in test if c not in set(train)]
    if only_train or only_test:
        where = f"train ({getattr(train_ds, 'root', '?')}) and test ({getattr(test_ds, 'root', '?')})"
        raise ValueError(f"the {where} splits of {name} have different classes: only in train: {_shown(only_train)}; "
                         f"only in test: {_shown(only_test)} (a probe fit on one class list and scored on another "
                         "measures nothing: give both splits the same classes)")
    index = {c: i for i, c in enumerate(test)}
    return np.array([index[c] for c in train], dtype=np.int64)


def _duplicate_classes(split: str, ds: Any, names: Sequence[str], dataset: str) -> str:
    """One line for a split whose class list holds a name twice, while the other split's list differs: the name,
    the folders it stands for where the dataset keeps them (`ImageFolder.folder_names`), and what to do. It was
    refused as "different classes: only in train: none; only in test: none", naming nothing."""
    dup = next(c for c in dict.fromkeys(names) if names.count(c) > 1)
    at = [i for i, c in enumerate(names) if c == dup]
    folders = getattr(ds, "folder_names", None)
    what = f"folders {', '.join(repr(f'{folders[i]}/') for i in at)}" if isinstance(folders, (list, tuple)) and \
        len(folders) == len(names) else f"classes {', '.join(str(i) for i in at)}"
    more = sum(names.count(c) > 1 for c in dict.fromkeys(names)) - 1
    return (f"the {split} split ({getattr(ds, 'root', '?')}) of {dataset} has {'two' if len(at) == 2 else len(at)} classes named {dup!r} ({what})"
            + (f" and {more} more repeated name{'s' if more > 1 else ''}" if more else "")
            + ": the train and test class lists differ, and a repeated name cannot be matched to the other split's "
            "class: rename or merge those folders")


def refuse_undefined_top5(expect: Mapping[str, float], num_classes: int, name: str) -> None:
    """ValueError for ``--expect top5`` on a dataset of fewer than 5 classes, before any image is read: top-5 is
    undefined there (CLIP_benchmark writes NaN) and the report's top5 is null."""
    if "top5" in expect and num_classes < 5:
        raise ValueError(f"--expect top5: top-5 accuracy is undefined for the {num_classes} classes of {name} "
                         "(fewer than 5; the report writes null, as CLIP_benchmark writes NaN)")


def fewshot_counts(y_shot: np.ndarray, k: int, classnames: Sequence[Any]) -> tuple[dict[str, int], str | None]:
    """({class name: training images in the k-shot sample}, a warning or None) for one k.

    `fewshot_split` takes all of a class's images when it has fewer than k, so a "50-shot" probe could be fit
    on 12 images of some classes while its label said 50: the counts go into the report beside the scores and
    the warning says how many classes fell short and the fewest, so the label is never taken at its word. The
    counts are the same for every seed (min(k, the class's images)); classes with no image count 0."""
    counts = np.bincount(np.asarray(y_shot, dtype=np.int64), minlength=len(classnames))[: len(classnames)]
    names = [str(c) for c in classnames]
    if len(set(names)) != len(names):  # keys must not collapse: number repeated names
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    per_class = {name: int(n) for name, n in zip(names, counts, strict=True)}
    short = [name for name in names if per_class[name] < k]
    if not short:
        return per_class, None
    fewest = min(per_class[name] for name in short)
    at_fewest = [name for name in short if per_class[name] == fewest]
    where = at_fewest[0] + (f" and {len(at_fewest) - 1} more" if len(at_fewest) > 1 else "")
    return per_class, (f"{k}-shot: {len(short)} of {len(names)} classes have fewer than {k} training images (the "
                       f"fewest: {fewest}, in {where}): they were fit on all they have, so the result is not "
                       f"{k}-shot for them; each class's count is in the report "
                       f"(metrics.fewshot.{k}.train_per_class)")


def check_fewshot_k(fewshot_k: Iterable[int] | None) -> list[int] | None:
    """`fewshot_k` as a list, or ValueError in one line naming ``--fewshot-k`` and the list, unless each k is a
    whole number >= 1 listed once.

    A repeated k ran its seeds again and appended those runs to the same entry: ``--fewshot-k 4,4 --seeds 2``
    reported n 4 (seeds [0, 1, 0, 1]) and a std over two draws each counted twice, claiming evidence it did not
    have, with exit status 0. Refused rather than dropped: the caller meant something by the repeat."""
    if fewshot_k is None:
        return None
    if isinstance(fewshot_k, (str, bytes)) or not isinstance(fewshot_k, Iterable):
        raise ValueError(f"--fewshot-k {fewshot_k!r}: expected a list of shot counts, e.g. [1, 2, 4, 8, 16]")
    ks = list(fewshot_k)
    shown = ",".join(str(k) for k in ks)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"--fewshot-k {shown}: {k!r} is not a whole number of shots >= 1")
    repeated = next((k for k in dict.fromkeys(ks) if ks.count(k) > 1), None)
    if repeated is not None:
        times = "twice" if ks.count(repeated) == 2 else f"{ks.count(repeated)} times"
        raise ValueError(f"--fewshot-k {shown}: k={repeated} is listed {times}; each k already runs --seeds draws, so "
                         "a repeat would count the same draws again: list each k once")
    return [int(k) for k in ks]


def check_probe_settings(full: bool, fewshot_k: Iterable[int] | None, seeds: int, train_split: str | None,
                         test_split: str, probe_features: str = "embedding") -> None:
    """ValueError, before the model loads, for settings under which the probe measures nothing: `--no-full`
    without `--fewshot-k`, or `--seeds` below 1 (both ran, reported no metric and exited 0), a k listed twice
    (`check_fewshot_k`), a training split that is the test split (a probe fit on the images it is scored on), and
    a `probe_features` that is not one of `features.FEATURE_KINDS`."""
    check_feature_kind(probe_features)
    fewshot_k = check_fewshot_k(fewshot_k)
    if not full and not fewshot_k:
        raise ValueError("--no-full skips the probe on all training data, and without --fewshot-k nothing is left to "
                         "measure: add --fewshot-k 1,2,4,8,16 or drop --no-full")
    if fewshot_k and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ValueError(f"--seeds must be 1 or more (few-shot draws per k), got {seeds}")
    if train_split is not None and train_split == test_split:
        raise ValueError(f"--train-split {train_split} is the test split (--split {test_split}): the probe would be "
                         "fit on the images it is scored on; train on another split")


def refuse_same_images(train_ds: Any, test_ds: Any, name: str, root: str | Path | None) -> None:
    """ValueError when the two splits are the same images: a class-folder root without train/ and test/
    folders gives every split all of its images, and the probe was fit on its own test set (100% on anything
    separable) and reported with exit status 0. Checked on up to 32 evenly spaced samples."""
    n = len(train_ds)
    if n != len(test_ds) or n == 0 or str(getattr(train_ds, "root", "")) != str(getattr(test_ds, "root", "")):
        return
    picks = sorted({int(i) for i in np.linspace(0, n - 1, num=min(n, 32))})
    if all(train_ds.source_name(i) == test_ds.source_name(i) for i in picks):
        where = getattr(test_ds, "root", root)
        raise ValueError(f"the train and test splits of {name} at {where} are the same {n} images (no train/ and "
                         f"test/ folders there?): a probe fit on the images it is scored on measures nothing; put "
                         "them in ROOT/train/<class>/ and ROOT/test/<class>/")


@keeps_caller_mode  # an nn.Module runs in eval mode and is given back in the modes it had (`models.modes`)
def evaluate_linear_probe(model: str | torch.nn.Module, dataset: str | tuple[Any, Any],
                          root: str | Path | None = None, *, train_split: str = "train", test_split: str | None = None,
                          fewshot_k: Iterable[int] | None = None, seeds: int = 3, full: bool = True,
                          val_fraction: float = 0.2, max_iter: int = 1000, batch_size: int = 64, workers: int = 0,
                          device: str | torch.device | None = None, limit_train: int | None = None,
                          limit_test: int | None = None, out_dir: str | Path = "eval_results",
                          feature_cache_dir: str | Path | None = None, use_feature_cache: bool = True,
                          expect: Mapping[str, float] | None = None, tolerance: float = 0.3,
                          preprocess: Any = None, model_name: str | None = None,
                          progress: bool = True, precision: str = "fp32", exact_decode: bool = False,
                          plot: bool | str | Path = False, predictions: str | Path | None = None,
                          top_k: int = 5, probe_features: str = "embedding") -> dict[str, Any]:
    """Fit probes on train features, score test features; write JSON + log; return the report.

    `dataset`: a name for `clipforge.data.open_dataset` (both splits read under `root`) or a
    `(train_dataset, test_dataset)` pair. `full`: the probe on all training data (C from a
    `val_fraction` holdout, refit on train+val). `fewshot_k` with `seeds`: mean ± std per k.
    `plot`: True (into `out_dir`) or a folder: the C sweep, per-class accuracy and confusion matrix
    of the full probe, and accuracy against k for few-shot. A C at the edge of the widened sweep is
    logged and noted in the report (``probe.full.note``) since the optimum may lie beyond it.
    `predictions`: a Parquet path for each test sample's `top_k` classes under the full probe.
    Train and test class lists must hold the same classes (another order is mapped by name; other classes are
    refused, naming them); a multi-label dataset (VOC 2007) is refused; a training split that is not there is a
    `NoTrainSplitError`. `expect` names, the limits and the output folders are checked before anything is loaded. The
    report's ``timing.probe`` has the seconds the C searches and fits took (``fit_threads``: the
    BLAS/OpenMP threads they ran with, see `probe.limited_fit_threads`). `test_split` None: the dataset's
    evaluation split, as the CLI without ``--split`` (`common.default_split`: val for imagenet, test for most; it
    was always "test", which ImageNet lacks). A model module is given back in the modes it had.
    `probe_features`: ``"embedding"`` (``encode_image``: what openai/CLIP's README and CLIP_benchmark probe) or
    ``"pre-projection"`` (the tower before ``visual.proj``: the CLIP paper's A.3 probe of its ViTs; refused for a
    tower without a separate projection); ``probe.features`` in the report says which (layer, dim, l2_normalized).
    Each k of `fewshot_k` must be listed once.
    """
    test_split = default_split(dataset, test_split) or "test"  # a (train, test) pair of objects: named "test"
    from clipforge.weights import model_fingerprint

    expect = canonical_expect(expect, "linear-probe")
    fewshot_k = check_fewshot_k(fewshot_k)  # a list from here on (an iterator is read once)
    check_limit(limit_train, "--limit-train")
    check_limit(limit_test)
    check_tolerance(tolerance)
    check_probe_settings(full, fewshot_k, seeds, train_split if isinstance(dataset, str) else None, test_split,
                         probe_features)
    out_dir = check_out_dir(out_dir)
    plot_dir = plot_dir_for(plot, out_dir)
    check_root(dataset, root)  # a --root that is not there: the layout expected, before the model loads

    ev = resolve_model(model, device, preprocess, model_name, precision=precision, exact_decode=exact_decode)
    feature_info = describe_image_features(ev.model, probe_features, ev.name)  # a tower without proj: one line
    if isinstance(dataset, str):
        train_ds, test_ds = open_probe_splits(dataset, root, train_split, test_split, ev.preprocess)
        ds_name = dataset
    else:
        train_ds, test_ds = dataset
        ds_name = str(getattr(train_ds, "name", "dataset"))
    if getattr(test_ds, "multilabels", None) is not None or getattr(train_ds, "multilabels", None) is not None:
        raise ValueError(f"{ds_name} is multi-label (an image may hold several of its {len(test_ds.classnames)} "
                         "classes): a single-label probe would be fit and scored on each image's first class present, "
                         "a number neither the CLIP paper nor CLIP_benchmark reports; evaluate it zero-shot (mAP)")
    refuse_same_images(train_ds, test_ds, ds_name, root)
    to_test = class_map(train_ds, test_ds, ds_name)  # training labels in the test split's class order
    num_classes = len(test_ds.classnames)
    refuse_undefined_top5(expect, num_classes, ds_name)
    fingerprint = ev.fingerprint or str(model_fingerprint(ev.model))
    # features differ (slightly) by precision and decode: each combination is its own cache entry
    feature_key = f"{fingerprint}-{ev.precision}-{'draft' if ev.draft_decode else 'exact'}"
    stem, json_path, log_path = claim_run_files(out_dir, "linear-probe", ev.name, ds_name, test_split)

    with open_run_log(log_path) as log:
        reset_peak_memory(ev.device)
        feats = {}
        for split, ds, limit in (("train", train_ds, limit_train), ("test", test_ds, limit_test)):
            result, hit = cached_features(ev.model, ds, fingerprint=feature_key, split=split,
                                          indices=subset_indices(len(ds), limit), cache_dir=feature_cache_dir,
                                          batch_size=batch_size, workers=workers, device=ev.device,
                                          progress=progress, use_cache=use_feature_cache, features=probe_features)
            feats[split] = (result, hit)
            log.info("%s features: %d images (%s), %s", split, len(result.labels),
                     "cached" if hit else "extracted", f"{result.bad.get('skipped', 0)} bad images skipped")
            log_skipped(log, result.bad, ds, what=split)
        x_tr, y_tr = feats["train"][0].features.numpy(), feats["train"][0].labels.numpy()
        if to_test is not None:
            y_tr = to_test[y_tr]
            log.info("train classes are the test classes in another order: mapped by name")
        x_te, y_te = feats["test"][0].features.numpy(), feats["test"][0].labels.numpy()
        feature_info["dim"] = int(x_tr.shape[1])  # what was fit (the same as the description's, checked by tests)
        log.info("probe features: %s", feature_info)

        metrics: dict[str, Any] = {}
        probe_info: dict[str, Any] = {}
        full_scores = None
        probe_timing: dict[str, Any] = {}
        if full:
            tr, va = stratified_holdout(y_tr, val_fraction, seed=0)
            res = fit_probe(x_tr[tr], y_tr[tr], x_te, num_classes, val=(x_tr[va], y_tr[va]), max_iter=max_iter,
                            progress=progress, desc="C sweep (full probe)")
            probe_timing["full"] = res.timing()
            metrics.update(_scores(res.test_scores, y_te))
            full_scores = res.test_scores
            probe_info = {**res.summary(), "train_examples": int(len(tr)), "val_examples": int(len(va))}
            log.info("full probe: C=%.4g (val acc %s) top1 %.2f%%", res.c, res.val_accuracy, 100 * metrics["top1"])
            if res.at_edge:
                log.warning("full probe: %s", probe_info["note"])
        fewshot: dict[str, Any] = {}
        runs = [(k, s) for k in (fewshot_k or ()) for s in range(seeds)]
        fewshot_t0, fewshot_search_s, fewshot_fits = time.perf_counter(), 0.0, 0
        for k, seed in tqdm(runs, desc="few-shot fits", disable=not progress or not runs, leave=None):
            tr, va = fewshot_split(y_tr, k, seed)
            res = fit_probe(x_tr[tr], y_tr[tr], x_te, num_classes, val=(x_tr[va], y_tr[va]),
                            refit_on_val=False, max_iter=max_iter)
            fewshot_search_s += res.search_s
            fewshot_fits += res.fits
            if str(k) not in fewshot:  # the k-shot sample's class counts are the same for every seed
                per_class, short = fewshot_counts(y_tr[tr], k, test_ds.classnames)
                fewshot[str(k)] = {"runs": [], "train_per_class": per_class,
                                   "classes_below_k": sum(n < k for n in per_class.values())}
                if short:
                    log.warning("%s", short)
                    warnings.warn(short, UserWarning, stacklevel=2)
            entry = fewshot[str(k)]
            entry["runs"].append({"seed": seed, **_scores(res.test_scores, y_te), **res.summary(),
                                  "train_examples": int(len(tr)), "val_examples": int(len(va))})
        for k, entry in fewshot.items():
            for name in ("top1", "mean_per_class_recall"):
                entry[name] = mean_std([r[name] for r in entry["runs"]])
            log.info("%s-shot: top1 %.2f%% ± %.2f over %d seeds", k, 100 * entry["top1"]["mean"],
                     100 * entry["top1"]["std"], entry["top1"]["n"])
        if fewshot:
            metrics["fewshot"] = fewshot
            probe_timing["fewshot"] = {"total_s": round(time.perf_counter() - fewshot_t0, 4),
                                       "search_s": round(fewshot_search_s, 4), "fits": fewshot_fits,
                                       "probes": len(runs)}
        if probe_timing:
            probe_timing["fit_threads"] = limited_fit_threads()
            log.info("probe fits: %s", probe_timing)
        edge = sum(bool(r.get("c_at_edge")) for e in fewshot.values() for r in e["runs"])
        if edge:
            log.warning("%d few-shot fits chose a C at the edge of the sweep (the optimum may lie beyond)", edge)

        report: dict[str, Any] = {
            **report_header("linear_probe", ev.device),
            "model": ev.describe(fingerprint),
            "dataset": {"name": ds_name, "root": str(getattr(test_ds, "root", root)),
                        "train_root": str(getattr(train_ds, "root", root)), "train_split": train_split,
                        "test_split": test_split, "num_classes": num_classes,
                        "train_examples": int(len(y_tr)), "test_examples": int(len(y_te)),
                        "train_images": len(train_ds), "test_images": len(test_ds),
                        **({"train_classes_mapped_by_name": True} if to_test is not None else {}),
                        "limit_train": limit_train, "limit_test": limit_test,
                        "train_missing": skipped_files(train_ds), **skipped_files(test_ds)},
            "probe": {"classifier": "sklearn LogisticRegression (multinomial, L-BFGS, L2)", "max_iter": max_iter,
                      "val_fraction": val_fraction, "seeds": seeds, "features": feature_info,
                      **({"full": probe_info} if full else {})},
            "classnames": [str(c) for c in test_ds.classnames],
            "metrics": metrics,
            "bad_images": {s: feats[s][0].bad for s in feats},
            # on a feature-cache hit, this run's seconds (features_cached: true), never the extracting run's
            "timing": {**{s: {**feats[s][0].timing, "cached": feats[s][1]} for s in feats},
                       **({"probe": probe_timing} if probe_timing else {})},
            "memory": peak_memory(ev.device),
            "files": {"report": str(json_path), "log": str(log_path)},
        }
        if predictions is not None and full_scores is not None:
            from clipforge.evaluate.predictions import write_predictions

            kept = feats["test"][0].indices.tolist()
            report["files"]["predictions"] = str(write_predictions(
                predictions, kept, [test_ds.source_name(int(i)) for i in kept], y_te, torch.as_tensor(full_scores),
                top_k))
        if plot_dir is not None:
            from clipforge.evaluate.plots import probe_plots

            names = [str(c) for c in test_ds.classnames]
            write_plots(report, log, lambda: probe_plots(probe_info.get("sweep"), full_scores, y_te, names, fewshot,
                                                         plot_dir, stem, title=f"{ev.name} on {ds_name}"))
        finish_report(report, metrics, expect, tolerance, json_path, log)
    return report
