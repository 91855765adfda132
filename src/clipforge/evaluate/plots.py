"""PNG figures for evaluation reports: per-class accuracy and the confusion matrix.

Both must stay readable from 3 to 1000 classes, so names are drawn only while they fit;
beyond that the per-class chart is sorted and the worst classes are listed in the title area.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipforge.atomic import atomic_path
from clipforge.zeroshot.fonts import drawn_labels, mark_figure

__all__ = ["plot_confusion_matrix", "plot_per_class_accuracy"]

_NAMED_LIMIT = 60


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_per_class_accuracy(accuracy: Sequence[float | None], classnames: Sequence[str], out_path: str | Path,
                            title: str = "per-class accuracy") -> Path:
    plt = _pyplot()
    with drawn_labels(list(classnames)) as style:  # a CJK font for Chinese names, or "#i" and a notice
        classnames = style.labels
        acc = np.array([np.nan if a is None else float(a) for a in accuracy])
        present = ~np.isnan(acc)
        order = np.argsort(acc[present], kind="stable")
        names = np.array(list(classnames))[present][order]
        values = acc[present][order]
        if len(values) <= _NAMED_LIMIT:
            fig, ax = plt.subplots(figsize=(8, max(3.0, 0.22 * len(values) + 1)))
            ax.barh(range(len(values)), 100 * values, color="tab:blue")
            ax.set_yticks(range(len(values)), names, fontsize=7)
            ax.set_xlim(0, 100)
            ax.set_xlabel("accuracy (%)")
        else:
            fig, ax = plt.subplots(figsize=(10, 4))
            ax.bar(range(len(values)), 100 * values, width=1.0, color="tab:blue")
            ax.set_ylim(0, 100)
            ax.set_xlabel(f"{len(values)} classes, sorted by accuracy")
            ax.set_ylabel("accuracy (%)")
            worst = ", ".join(f"{n} ({100 * v:.0f}%)" for n, v in zip(names[:8], values[:8], strict=True))
            ax.text(0.01, 0.97, f"worst: {worst}", transform=ax.transAxes, fontsize=7, va="top", wrap=True)
        ax.set_title(f"{title} (mean {100 * np.nanmean(acc):.1f}%)")
        fig.tight_layout()
        mark_figure(fig, style)
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(out_path)


def plot_confusion_matrix(cm: np.ndarray, classnames: Sequence[str], out_path: str | Path,
                          title: str = "confusion matrix (row-normalised)") -> Path:
    plt = _pyplot()
    with drawn_labels(list(classnames)) as style:  # a CJK font for Chinese names, or "#i" and a notice
        classnames = style.labels
        cm = np.asarray(cm, dtype=float)
        rows = cm.sum(axis=1, keepdims=True)
        normed = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
        size = min(14.0, max(5.0, 0.25 * len(classnames) + 2))
        fig, ax = plt.subplots(figsize=(size, size))
        image = ax.imshow(normed, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        if len(classnames) <= 40:
            ticks = range(len(classnames))
            ax.set_xticks(ticks, list(classnames), rotation=90, fontsize=7)
            ax.set_yticks(ticks, list(classnames), fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        mark_figure(fig, style)
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(out_path)
