"""Each evaluation run owns its report files, and a figure's title lies inside the figure.

- Two `eval zeroshot` runs of one model, dataset and split started in the same second wrote one report: both
  printed the same path and the second overwrote the first (`report.run_stem` named files by a timestamp to the
  second, with no check). A run now creates its log exclusively and takes ``<stem>-2`` when the name is taken.
- The confusion matrix's title ("clipforge-tiny on cifar10: zero-shot confusion matrix (row-normalised)") was
  wider than the 500-pixel figure and cut at both edges; titles are now wrapped (or shrunk) to fit.
"""

from __future__ import annotations

import datetime as real_datetime
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clipforge.evaluate import evaluate_zeroshot
from clipforge.evaluate import report as report_module
from clipforge.models import CLIP, get_config

FROZEN = real_datetime.datetime(2026, 12, 6, 23, 42, 2)


class _FrozenDatetime(real_datetime.datetime):
    @classmethod
    def now(cls, tz=None):  # every run "starts" in the same second
        return FROZEN if tz is None else FROZEN.replace(tzinfo=tz)


@pytest.fixture()
def frozen_clock(monkeypatch):
    monkeypatch.setattr(report_module, "_dt", SimpleNamespace(datetime=_FrozenDatetime, UTC=real_datetime.UTC,
                                                              timezone=real_datetime.timezone))


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_two_runs_in_the_same_second_keep_both_reports(tmp_path, colour_classes, frozen_clock, monkeypatch):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    root = colour_classes(tmp_path / "data", per_class=2)
    torch.manual_seed(0)
    model = CLIP(**get_config("test-vit-tiny")).eval()
    out = tmp_path / "ev"
    reports = [evaluate_zeroshot(model, "folder", root, templates=[template], classnames=["red", "green", "blue"],
                                 out_dir=out, workers=0, progress=False, model_name="tiny")
               for template in ("a photo of a {}.", "art of the {}.")]

    # the name users know, for the first run of the second; split "test": the CLI's default, which the Python
    # call without a split takes too since s60 (`evaluate.common.default_split`; it read None as the folder's name)
    stem = "zeroshot_tiny_folder_test_20261206-234202"
    paths = [Path(r["files"]["report"]) for r in reports]
    assert [p.name for p in paths] == [f"{stem}.json", f"{stem}-2.json"]
    assert [Path(r["files"]["log"]).name for r in reports] == [f"{stem}.log", f"{stem}-2.log"]
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}-2.json", f"{stem}-2.log", f"{stem}.json", f"{stem}.log"]
    written = [json.loads(p.read_text())["templates"]["templates"] for p in paths]
    assert written == [["a photo of a {}."], ["art of the {}."]]  # each report is its own run's
    logs = [Path(r["files"]["log"]).read_text() for r in reports]
    assert logs[0].count("report written to") == 1 and logs[1].count("report written to") == 1


def test_claim_is_exclusive_between_threads(tmp_path, frozen_clock):
    """Eight runs claiming at once (the parallel sweep of the report) get eight names, the first the plain one."""
    barrier, got, lock = threading.Barrier(8), [], threading.Lock()

    def claim():
        barrier.wait()
        stem, json_path, log_path = report_module.claim_run_files(tmp_path, "zeroshot", "m", "cifar10", "test")
        with lock:
            got.append((stem, json_path.name, log_path.name))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    base = "zeroshot_m_cifar10_test_20261206-234202"
    assert sorted(s for s, _, _ in got) == sorted([base] + [f"{base}-{n}" for n in range(2, 9)])
    assert all(j == f"{s}.json" and lg == f"{s}.log" for s, j, lg in got)
    assert len(list(tmp_path.glob("*.log"))) == 8


def test_a_report_without_its_log_is_not_overwritten(tmp_path, frozen_clock):
    base = "zeroshot_m_cifar10_test_20261206-234202"
    (tmp_path / f"{base}.json").write_text("{}")  # its log deleted by the user
    stem, json_path, _ = report_module.claim_run_files(tmp_path, "zeroshot", "m", "cifar10", "test")
    assert stem == f"{base}-2" and json_path.name == f"{base}-2.json"
    assert (tmp_path / f"{base}.json").read_text() == "{}"


def _titles_when_saved(monkeypatch) -> list[tuple[str, float, float, float]]:
    """(title, left, right, figure width) in pixels of every axes title, measured as each figure is written."""
    import clipforge.evaluate.plots as plots

    real_save, seen = plots.save_figure, []

    def save(fig, path, **kwargs):
        real_savefig = fig.savefig

        def savefig(target, **kw):
            real_savefig(target, **kw)
            renderer = fig.canvas.get_renderer()
            for ax in fig.axes:
                if ax.title.get_text():
                    box = ax.title.get_window_extent(renderer)
                    seen.append((ax.title.get_text(), box.x0, box.x1, fig.bbox.width))

        fig.savefig = savefig
        return real_save(fig, path, **kwargs)

    monkeypatch.setattr(plots, "save_figure", save)
    return seen


CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_confusion_matrix_title_fits_the_figure(tmp_path, monkeypatch):
    from clipforge.evaluate.plots import plot_confusion_matrix

    seen = _titles_when_saved(monkeypatch)
    title = "clipforge-tiny on cifar10: zero-shot confusion matrix (row-normalised)"
    cm = np.eye(10) * 40 + np.random.default_rng(0).integers(0, 5, (10, 10))
    plot_confusion_matrix(cm, CIFAR, tmp_path / "cm.png", title=title)
    ((text, left, right, width),) = seen
    assert width == 500  # the figure of the report: 10 classes
    assert left >= 0 and right <= width, (left, right, width)
    assert text.split() == title.split()  # wrapped, every word kept


def test_every_report_figure_title_fits(tmp_path, monkeypatch):
    """The other figures with a model-and-dataset title: per-class accuracy, recall curves, probe figures."""
    from clipforge.evaluate.plots import plot_per_class_accuracy, plot_recall_curves, probe_plots

    seen = _titles_when_saved(monkeypatch)
    who = "a-checkpoint-with-a-rather-long-file-name-epoch-32.safetensors on imagenet_sketch"
    plot_per_class_accuracy([0.5] * 10, CIFAR, tmp_path / "pc.png", title=f"{who}: zero-shot per-class accuracy")
    plot_recall_curves(np.arange(20) % 7, np.arange(20) % 5, tmp_path / "r.png", title=f"{who}: retrieval recall")
    rng = np.random.default_rng(0)
    probe_plots({"-1": 0.5, "0": 0.6, "1": 0.55}, rng.normal(size=(20, 10)), np.arange(20) % 10, CIFAR,
                {"1": {"top1": {"mean": 0.3, "std": 0.01}}, "2": {"top1": {"mean": 0.4, "std": 0.02}}},
                tmp_path, "probe", title=who)
    assert len(seen) == 6
    for text, left, right, width in seen:
        assert left >= 0 and right <= width, (text, left, right, width)
