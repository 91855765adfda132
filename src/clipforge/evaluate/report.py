"""What every evaluation report carries besides its metrics, and how it is written.

One JSON file per run (the CLIP_benchmark habit) with enough context to trust or reproduce the
number a year later: model and weight fingerprint, dataset, software versions, device, date,
timing and peak memory. A log file beside it keeps the human-readable story of the run.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import re
import resource
import sys
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from clipforge.atomic import write_json_atomic as write_json

__all__ = [
    "check_expectations", "device_info", "open_run_log", "parse_expect", "peak_memory", "reset_peak_memory",
    "run_stem", "versions", "write_report",
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
    """A file-name-safe, sortable stem: ``zeroshot_ViT-B-32_imagenet_val_20240101-120000``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    parts = [task, model_name, dataset] + ([split] if split else []) + [stamp]
    return "_".join(re.sub(r"[^A-Za-z0-9.@-]+", "-", p).strip("-") for p in parts)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


@contextmanager
def open_run_log(path: Path, name: str = "clipforge.evaluate"):
    """Send every clipforge log record of the run (INFO and up) to `path`; yield the runner's logger.

    The handler sits on the package logger so messages of the classifier, cache and data
    layers land in the same file; it is removed afterwards so runs do not leak into each other.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    package = logging.getLogger("clipforge")
    old_level = package.level
    if package.level == logging.NOTSET or package.level > logging.INFO:
        package.setLevel(logging.INFO)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    try:
        yield logging.getLogger(name)
    finally:
        package.removeHandler(handler)
        package.setLevel(old_level)
        handler.close()


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


def parse_expect(items: Sequence[str] | None) -> dict[str, float]:
    """``["top1=63.3", "top5=88.8"]`` -> ``{"top1": 63.3, "top5": 88.8}`` (percent)."""
    out: dict[str, float] = {}
    for item in items or ():
        for part in str(item).split(","):
            name, sep, value = part.partition("=")
            try:
                out[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep or not name.strip():
                raise ValueError(f"--expect {part!r}: expected METRIC=PERCENT, e.g. top1=63.3")
    return out


def check_expectations(metrics: Mapping[str, Any], expected: Mapping[str, float],
                       tolerance: float) -> list[dict[str, Any]]:
    """Compare percent expectations with fractional metrics; one entry per check, `ok` per entry."""
    checks = []
    for name, want in expected.items():
        if name not in metrics or not isinstance(metrics[name], (int, float)):
            known = ", ".join(k for k, v in metrics.items() if isinstance(v, (int, float)))
            raise ValueError(f"--expect {name}: no such metric (known: {known})")
        got = 100.0 * float(metrics[name])
        checks.append({"metric": name, "expected": want, "measured": round(got, 4),
                       "tolerance": tolerance, "ok": abs(got - want) <= tolerance + 1e-9})
    return checks
