"""The figure of OpenAI's CIFAR-100 notebook: each image beside a bar chart of its top-k."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipforge.atomic import save_figure
from clipforge.figures import pyplot
from clipforge.zeroshot.fonts import drawn_labels, mark_figure

__all__ = ["plot_predictions"]


def plot_predictions(images: Sequence[Any], labels: Sequence[Sequence[str]],
                     probabilities: Sequence[Sequence[float]], out_path: str | Path,
                     titles: Sequence[str] | None = None) -> Path:
    """One row per image: the picture (PIL image or HxWx3 array) and a horizontal bar chart
    of its top-k probabilities, most likely label on top. Written atomically as PNG."""
    plt = pyplot()
    rows = len(images)
    if rows == 0:
        raise ValueError("nothing to plot: no images")
    flat = [str(name) for row in labels for name in row] + [str(t) for t in titles or ()]
    with drawn_labels(flat) as style:  # a CJK font for Chinese labels, or "#i" and a notice: never boxes
        drawn = iter(style.labels)
        labels = [[next(drawn) for _ in row] for row in labels]
        titles = [next(drawn) for _ in titles] if titles is not None else None
        k = max((len(row) for row in labels), default=1)
        fig, axes = plt.subplots(rows, 2, figsize=(9, max(2.0, 0.45 * k + 0.8) * rows), squeeze=False,
                                 gridspec_kw={"width_ratios": [1, 1.6]})
        for i in range(rows):
            ax_img, ax_bar = axes[i]
            ax_img.imshow(images[i])
            ax_img.set_axis_off()
            if titles is not None:
                ax_img.set_title(str(titles[i]), fontsize=8)
            y = list(range(len(labels[i])))
            ax_bar.barh(y, [float(p) for p in probabilities[i]], color="tab:blue")
            ax_bar.set_yticks(y, [str(name) for name in labels[i]], fontsize=8)
            ax_bar.invert_yaxis()
            ax_bar.set_xlim(0, 1)
            ax_bar.set_xlabel("probability", fontsize=8)
            for yy, p in zip(y, probabilities[i], strict=True):
                ax_bar.text(min(float(p) + 0.01, 0.9), yy, f"{float(p):.1%}", va="center", fontsize=7)
        return save_figure(fig, out_path, finish=lambda f: mark_figure(f, style))
