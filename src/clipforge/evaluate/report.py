"""What every evaluation report carries besides its metrics, and how it is written.

One JSON file per run (the CLIP_benchmark habit) with enough context to trust or reproduce the
number a year later: model and weight fingerprint, dataset, software versions, device, date,
timing and peak memory. A log file beside it keeps the human-readable story of the run.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import platform
import re
import resource
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from clipforge.atomic import write_json_atomic as write_json

__all__ = [
    "CB_METRICS", "TASK_METRICS", "canonical_expect", "check_expectations", "check_limit", "check_out_dir",
    "device_info", "expectable_metrics", "log_skipped", "parse_expect", "peak_memory",
    "claim_run_files", "plot_dir_for", "reset_peak_memory", "run_stem", "skipped_files", "versions", "write_plots",
    "write_report",
]


# module -> its distribution on PyPI
_VERSIONED = {"clipforge": "clipforge", "torch": "torch", "numpy": "numpy", "PIL": "pillow", "sklearn": "scikit-learn"}


def versions() -> dict[str, str]:
    """The versions of the packages a result depends on, without importing any that is not loaded yet.

    A module already imported reports its ``__version__``; another its installed distribution's version
    (importing scikit-learn only to read its version, which pulls in scipy and pandas, was 1.1 s of
    every `eval zeroshot` on a 2-core machine). A package that is not installed is left out.
    """
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name, distribution in _VERSIONED.items():
        module = sys.modules.get(name)
        if module is not None:
            out[name] = str(getattr(module, "__version__", "unknown"))
            continue
        try:
            out[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return out


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch_threads": torch.get_num_threads(),
                            "platform": platform.platform(), "machine": platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = _cpu_name()
        info["cpu_count"] = os.cpu_count()
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process and of its (finished) children, in MiB; plus the
    CUDA allocator's peak when on a GPU. ru_maxrss is a process-lifetime maximum, so it is an
    upper bound for this run when the process did other work before."""
    scale = 1024.0 if sys.platform != "darwin" else 1024.0 * 1024.0  # KiB on Linux, bytes on macOS
    out = {
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1),
        "max_rss_workers_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / scale, 1),
    }
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def run_stem(task: str, model_name: str, dataset: str, split: str | None) -> str:
    """A file-name-safe, sortable stem: ``zeroshot_ViT-B-32_imagenet_val_20240101-120000``.

    Letters and digits of any script are kept (``zeroshot_猫模型.pt_folder_test_...``): with ASCII only, every
    Chinese-named model was ``.pt``, so two models run within one second wrote the same report and log."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    parts = [task, model_name, dataset] + ([split] if split else []) + [stamp]
    return "_".join(_stem_part(p) for p in parts)


def claim_run_files(out_dir: Path, task: str, model_name: str, dataset: str,
                    split: str | None) -> tuple[str, Path, Path]:
    """The run's stem and its report and log paths in `out_dir`, owned by this run alone: ``(stem, json, log)``.

    The stem is `run_stem`'s; its log is created here exclusively (``O_EXCL``), so a second run of the same model,
    dataset and split started in the same second (a template sweep in parallel, a fast cached run in a loop) takes
    ``<stem>-2`` (then ``-3``...) instead of writing over the first run's report: both used to print the same path
    and one result was lost. A stem whose report exists without its log is taken too. Runners call it right before
    `open_run_log`, after their arguments are checked, so a refused run still leaves no file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = run_stem(task, model_name, dataset, split)
    for n in range(1, 10_000):
        stem = base if n == 1 else f"{base}-{n}"
        json_path, log_path = out_dir / f"{stem}.json", out_dir / f"{stem}.log"
        if json_path.exists():
            continue
        try:
            os.close(os.open(log_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        return stem, json_path, log_path
    raise FileExistsError(f"{out_dir}: 9999 runs of {base} already; use another --out")


_PART_BYTES = 60  # of one part of a stem, in UTF-8: four parts and a stamp stay far below a 255-byte file name


def _stem_part(text: str) -> str:
    """One part of a file-name stem: NFC (a macOS name in NFD gave `mode-le.pt` beside `modèle.pt`), runs of
    anything but letters, digits, `.`, `@`, `-` as one `-`, and at most `_PART_BYTES` bytes (80 Chinese characters
    made a 281-byte name that no file system writes): a longer one is cut, with a short hash of the whole."""
    import hashlib
    import unicodedata

    part = re.sub(r"(?:[^\w.@-]|_)+", "-", unicodedata.normalize("NFC", text)).strip("-")
    if len(part.encode("utf-8")) <= _PART_BYTES:
        return part
    digest = hashlib.blake2b(part.encode("utf-8"), digest_size=4).hexdigest()
    cut = part.encode("utf-8")[:_PART_BYTES - len(digest) - 1].decode("utf-8", "ignore").rstrip("-")
    return f"{cut}-{digest}"


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")




def write_report(path: Path, report: Mapping[str, Any]) -> Path:
    return write_json(path, dict(report))


def finish_report(report: dict[str, Any], metrics: Mapping[str, Any], expect: Mapping[str, float] | None,
                  tolerance: float, json_path: Path, log: logging.Logger) -> dict[str, Any]:
    """Attach the golden checks (`--expect`), log each one, and write the JSON report atomically.

    Every runner ends the same way, so a report always has the same shape whatever the task.
    """
    if expect:
        report["expectations"] = check_expectations(metrics, expect, tolerance)
        report["passed"] = all(c["ok"] for c in report["expectations"])
        for c in report["expectations"]:
            log.log(logging.INFO if c["ok"] else logging.ERROR, "expect %s=%.2f±%.2f: measured %.2f %s",
                    c["metric"], c["expected"], c["tolerance"], c["measured"], "ok" if c["ok"] else "MISSED")
    write_report(json_path, report)
    log.info("report written to %s", json_path)
    return report


# Each task's metrics (the names `--expect` checks), and the CLIP_benchmark names the suite's cell files
# use for them (`acc1` is our `top1`): one table, so `eval suite` writes and `--expect` reads the same names.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "zeroshot": ("top1", "top5", "mean_per_class_recall"),
    "linear-probe": ("top1", "top5", "mean_per_class_recall"),
    "retrieval": tuple(f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)),
}
CB_METRICS: dict[str, dict[str, str]] = {
    # `mean_average_precision` is CLIP_benchmark's (voc2007_multilabel: non-interpolated, all 20 classes); the
    # devkit's 11-point mAP, the CLIP paper's, stays ours (`mAP11`), never under CLIP_benchmark's name
    "zeroshot": {"acc1": "top1", "acc5": "top5", "mean_per_class_recall": "mean_per_class_recall",
                 "mean_average_precision": "mean_average_precision"},
    "linear-probe": {"lp_acc1": "top1", "lp_acc5": "top5", "lp_mean_per_class_recall": "mean_per_class_recall"},
    "retrieval": {**{f"image_retrieval_recall@{k}": f"text_to_image_R@{k}" for k in (1, 5, 10)},
                  **{f"text_retrieval_recall@{k}": f"image_to_text_R@{k}" for k in (1, 5, 10)}},
}
_EXTRA_ALIASES = {"acc1": "top1", "acc5": "top5"}  # the suite's zero-shot names, clear for a probe too


def paper_metric(name: str) -> str:
    """The metric the CLIP paper reports for dataset `name` (top1 when the catalogue has no entry)."""
    from clipforge.data.catalog import canonical, dataset_info

    return dataset_info(name).metric if canonical(name) else "top1"


def expectable_metrics(task: str, dataset: str | None = None) -> tuple[str, ...]:
    """The metric names `--expect` may name for `task` (on `dataset`: its paper metric too, e.g. mAP11)."""
    names = TASK_METRICS[task]
    if task == "zeroshot" and dataset is not None:
        extra = paper_metric(dataset)
        if extra == "mAP11":  # multi-label (VOC 2007): mAP only, no single-label accuracy
            return ("mAP11", "mean_average_precision")
        names = names + ((extra,) if extra not in names else ())
    return names


def canonical_expect(expect: Mapping[str, float] | None, task: str,
                     dataset: str | None = None) -> dict[str, float]:
    """`expect` with the suite's names mapped to the task's (acc1 -> top1); ValueError for a name the task
    does not measure, naming the known ones. Runners call it before any model or image is loaded: the
    check used to come after the whole evaluation, which then wrote no report."""
    known = expectable_metrics(task, dataset)
    aliases = {**_EXTRA_ALIASES, **CB_METRICS.get(task, {})} if task != "retrieval" else dict(CB_METRICS[task])
    by_lower = {n.lower(): n for n in known} | {a.lower(): t for a, t in aliases.items() if t in known}
    out: dict[str, float] = {}
    for name, value in (expect or {}).items():
        target = by_lower.get(str(name).strip().lower())
        if target is None:
            shown = [a for a, t in aliases.items() if t in known and a != t]
            alias_note = "; the suite's names " + ", ".join(shown) if shown else ""
            raise ValueError(f"--expect {name}: {task} has no such metric (known: {', '.join(known)}{alias_note})")
        if target in out and out[target] != float(value):  # the last one silently won
            raise ValueError(f"--expect names {target} twice ({out[target]:g} and {float(value):g}): give it once")
        out[target] = float(value)
    return out


def parse_expect(items: Sequence[str] | None, task: str | None = None, dataset: str | None = None) -> dict[str, float]:
    """``["top1=63.3", "top5=88.8"]`` -> ``{"top1": 63.3, "top5": 88.8}`` (percent).

    With `task`, names are checked and mapped too (`canonical_expect`), so a typo costs one line
    before the model loads."""
    out: dict[str, float] = {}
    for item in items or ():
        for part in str(item).split(","):
            name, sep, value = part.partition("=")
            try:
                number = float(value)
            except ValueError:
                sep = ""
            if not sep or not name.strip() or not math.isfinite(number):  # nan: never equal, never checked
                raise ValueError(f"--expect {part!r}: expected METRIC=PERCENT (a finite number), e.g. top1=63.3")
            if out.get(name.strip(), number) != number:
                raise ValueError(f"--expect names {name.strip()} twice ({out[name.strip()]:g} and {number:g}): "
                                 "give it once")
            out[name.strip()] = number
    return canonical_expect(out, task, dataset) if task is not None else out


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """Make sure files can be written in the folder `path`, or raise one line naming `flag`; nothing is created.

    Called before any model or image is loaded: `--out afile` used to end in "[Errno 17] File exists"
    and an unwritable folder in a failure after the whole run, with the report lost. The probe is the one
    `train --out` uses (`atomic.folder_problem`). The folder is made by the first file written into it (the
    run's log, `open_run_log`; reports and plots through `atomic`): a run that fails before that, on a
    dataset that does not open, used to leave an empty folder behind.
    """
    from clipforge.atomic import folder_problem

    path = Path(path).expanduser()
    problem = folder_problem(path)
    if problem is not None:
        raise (NotADirectoryError if problem.startswith("is ") else PermissionError)(f"{flag} {path}: {problem}")
    return path


def check_limit(value: int | None, flag: str = "--limit") -> None:
    """ValueError for a subset size below 1, before anything is loaded (it used to come after the model and
    the dataset, leaving a log of a run that never started)."""
    if value is not None and int(value) < 1:
        raise ValueError(f"{flag} must be >= 1 (a number of images), got {value}")


def check_tolerance(value: float) -> None:
    """ValueError for an --expect tolerance below 0 or not a number, before anything is loaded: every golden
    check then missed (``±-1.0: measured 5.00 MISSED``) and the run exited 1 after all its work."""
    import math

    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"--tolerance must be 0 or more percentage points, got {value}")


def check_top_k(value: int) -> None:
    """ValueError for a predictions --top-k below 1: -3 kept all classes but three, by Python's slicing, and 0
    wrote empty lists, both with exit status 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"--top-k must be 1 or more (classes kept per sample in the predictions), got {value}")


def plot_dir_for(plot: bool | str | Path, out_dir: Path) -> Path | None:
    """The folder plots go to (`plot`: False, True = `out_dir`, or a folder), checked writable up front."""
    if not plot:
        return None
    return out_dir if plot is True else check_out_dir(plot, "--plot")


SHOWN_SKIPS = 50  # skipped files named in a report and its log (the counts are always complete)


def skipped_files(dataset: Any) -> dict[str, Any]:
    """What a dataset left out before any image was read, counted and named (the first `SHOWN_SKIPS`):
    files its metadata lists but the disk lacks, and caption rows it could not use. A count alone
    ("missing_files": 1) left the user to hunt for the file."""
    missing = [str(m) for m in getattr(dataset, "missing", []) or []]
    rows = list(getattr(dataset, "bad_rows", []) or [])
    out: dict[str, Any] = {"missing_files": len(missing)}
    if missing:
        out["missing_examples"] = missing[:SHOWN_SKIPS]
    if hasattr(dataset, "bad_rows"):
        out["bad_csv_rows"] = len(rows)
        if rows:
            out["bad_csv_row_examples"] = [{"line": int(n), "reason": str(why)} for n, why in rows[:SHOWN_SKIPS]]
    return out


def log_skipped(log: logging.Logger, bad: Mapping[str, Any], dataset: Any = None, what: str = "") -> None:
    """One log line per skipped item, so the console's "see the log" finds them there: unreadable images
    (`bad`, a `BadSampleLog.as_dict()`), and the dataset's missing files and unusable caption rows."""
    prefix = f"{what} " if what else ""
    for example in bad.get("examples", [])[:SHOWN_SKIPS]:
        log.warning("%sbad image skipped: %s: %s", prefix, example.get("source"), example.get("reason"))
    if bad.get("skipped", 0) > SHOWN_SKIPS:
        log.warning("%s... and %d more bad images", prefix, bad["skipped"] - SHOWN_SKIPS)
    if dataset is None:
        return
    missing = list(getattr(dataset, "missing", []) or [])
    for path in missing[:SHOWN_SKIPS]:
        log.warning("%smissing file (listed, not on disk): %s", prefix, path)
    if len(missing) > SHOWN_SKIPS:
        log.warning("%s... and %d more missing files", prefix, len(missing) - SHOWN_SKIPS)
    for line, why in list(getattr(dataset, "bad_rows", []) or [])[:SHOWN_SKIPS]:
        log.warning("%sbad caption row skipped: %s line %s: %s", prefix, getattr(dataset, "csv_path", "captions"),
                    line, why)


def write_plots(report: dict[str, Any], log: logging.Logger, make: Callable[[], list[str]]) -> None:
    """Run `make` (which returns the PNG paths) and record them; a failure is recorded (``plot_error``) and
    logged, not raised, so the report that follows is still written: plots came first and an error in them
    lost the whole run's report."""
    try:
        report["files"]["plots"] = make()
    except (OSError, ValueError, RuntimeError) as exc:
        report["plot_error"] = " ".join(str(exc).split()) or type(exc).__name__
        log.error("plots not written: %s", report["plot_error"])


def check_expectations(metrics: Mapping[str, Any], expected: Mapping[str, float],
                       tolerance: float) -> list[dict[str, Any]]:
    """Compare percent expectations with fractional metrics; one entry per check, `ok` per entry."""
    checks = []
    for name, want in expected.items():
        if name in metrics and metrics[name] is None:  # runners refuse this before the run; a library caller
            raise ValueError(f"--expect {name}: the metric is undefined for this run (n/a: top-5 of fewer than 5 "
                             "classes)")
        if name not in metrics or not isinstance(metrics[name], (int, float)):
            known = ", ".join(k for k, v in metrics.items() if isinstance(v, (int, float)))
            raise ValueError(f"--expect {name}: no such metric (known: {known})")
        got = 100.0 * float(metrics[name])
        checks.append({"metric": name, "expected": want, "measured": round(got, 4),
                       "tolerance": tolerance, "ok": abs(got - want) <= tolerance + 1e-9})
    return checks
