"""PNG figures for evaluation reports: per-class accuracy, the confusion matrix, retrieval recall
curves, the linear probe's C sweep and few-shot curve, and the suite's model x dataset heat map.

Both must stay readable from 3 to 1000 classes, so names are drawn only while they fit;
beyond that the per-class chart is sorted and the worst classes are listed in the title area.

Every text a figure draws from its caller (titles: "clipforge-tiny-zh on 中文数据"; class, model and dataset names;
axis and legend labels) goes through `zeroshot.fonts.drawn_labels`, which picks a font for each script and
replaces what no font draws, saying so: the recall curve's title alone went without it and was drawn as boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipforge.atomic import save_figure
from clipforge.figures import pyplot
from clipforge.zeroshot.fonts import drawn_labels, mark_figure

__all__ = ["plot_confusion_matrix", "plot_heatmap", "plot_per_class_accuracy", "plot_recall_curves",
           "probe_plots"]

_NAMED_LIMIT = 60
_TITLE_MARGIN_PX = 2  # a fitted title keeps this far from the figure's edges


def _fit_title(ax, title: str) -> None:
    """Set `ax`'s title so that it lies inside the figure: wrapped at spaces into as few lines as fit (at most
    `_TITLE_LINES`), then, only while it still does not fit (a long checkpoint name is one word), a smaller font
    (down to 6 pt).

    A title is centred over its axes, which a colour bar pushes left of the figure's centre: "clipforge-tiny on
    cifar10: zero-shot confusion matrix (row-normalised)" on the 500-pixel confusion matrix was cut at both edges.
    Measured after the figure's layout, which is redone after each change (a wrapped title is taller), so what is
    checked is what `save_figure` writes."""
    fig = ax.figure
    text = ax.set_title(title)
    if not title.strip():
        return
    get_renderer = getattr(fig.canvas, "get_renderer", None)  # Agg's; a caller's own backend may lack it
    renderer = get_renderer() if get_renderer is not None else fig._get_renderer()

    def fits() -> bool:
        fig.tight_layout()
        box = text.get_window_extent(renderer)
        return box.x0 >= _TITLE_MARGIN_PX and box.x1 <= fig.bbox.width - _TITLE_MARGIN_PX

    for lines in range(1, _TITLE_LINES + 1):
        text.set_text(_wrap_into(title, lines))
        if fits():
            return
    size = float(text.get_fontsize())
    while size > 6 and not fits():
        size -= 1
        text.set_fontsize(size)


_TITLE_LINES = 3


def _wrap_into(title: str, lines: int) -> str:
    """`title` wrapped at spaces into at most `lines` lines of about equal length (a word is never broken)."""
    import math
    import textwrap

    width = math.ceil(len(title) / lines)
    while True:
        wrapped = textwrap.wrap(title, width, break_long_words=False, break_on_hyphens=False)
        if len(wrapped) <= lines:
            return "\n".join(wrapped)
        width += 1


def plot_per_class_accuracy(accuracy: Sequence[float | None], classnames: Sequence[str], out_path: str | Path,
                            title: str = "per-class accuracy", value_name: str = "accuracy",
                            mean: float | None = None) -> Path:
    """One bar per class (None: not drawn), in %, sorted; `value_name` labels the axis ("average precision" for a
    multi-label set's per-class AP), `mean` the title's mean (default: of the classes drawn)."""
    plt = pyplot()
    with drawn_labels([*classnames, title, value_name]) as style:  # a CJK font for Chinese names, never boxes
        classnames, (title, value_name) = style.labels[:-2], style.labels[-2:]
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
            ax.set_xlabel(f"{value_name} (%)")
        else:
            fig, ax = plt.subplots(figsize=(10, 4))
            ax.bar(range(len(values)), 100 * values, width=1.0, color="tab:blue")
            ax.set_ylim(0, 100)
            ax.set_xlabel(f"{len(values)} classes, sorted by {value_name}")
            ax.set_ylabel(f"{value_name} (%)")
            worst = ", ".join(f"{n} ({100 * v:.0f}%)" for n, v in zip(names[:8], values[:8], strict=True))
            ax.text(0.01, 0.97, f"worst: {worst}", transform=ax.transAxes, fontsize=7, va="top", wrap=True)
        _fit_title(ax, f"{title} (mean {100 * (np.nanmean(acc) if mean is None else mean):.1f}%)")
        return save_figure(fig, out_path, finish=lambda f: mark_figure(f, style))


def plot_confusion_matrix(cm: np.ndarray, classnames: Sequence[str], out_path: str | Path,
                          title: str = "confusion matrix (row-normalised)") -> Path:
    plt = pyplot()
    with drawn_labels([*classnames, title]) as style:  # a CJK font for Chinese names, never boxes
        classnames, title = style.labels[:-1], style.labels[-1]
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
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        _fit_title(ax, title)  # after the colour bar, which moves the axes (and the title over it) left
        return save_figure(fig, out_path, finish=lambda f: mark_figure(f, style))


def plot_recall_curves(i2t_ranks, t2i_ranks, out_path: str | Path, title: str = "retrieval",
                       max_k: int = 50) -> Path:
    """Recall@k for k = 1..max_k, image->text and text->image, from each query's 0-based rank. The title names the
    captions' dataset (``中文数据``): drawn with the fonts its script needs."""
    plt = pyplot()
    ks = np.arange(1, max_k + 1)
    with drawn_labels([title, "image -> text", "text -> image"]) as style:
        title, *curves = style.labels
        fig, ax = plt.subplots(figsize=(6, 4))
        for ranks, label in zip((i2t_ranks, t2i_ranks), curves, strict=True):
            r = np.asarray(ranks)
            ax.plot(ks, [100.0 * float((r < k).mean()) for k in ks], label=label)
        for k in (1, 5, 10):
            ax.axvline(k, color="grey", lw=0.5, ls=":")
        ax.set_xscale("log")
        ax.set_ylim(0, 100)
        ax.set_xlabel("k")
        ax.set_ylabel("recall@k (%)")
        ax.legend()
        _fit_title(ax, title)
        return save_figure(fig, out_path, finish=lambda f: mark_figure(f, style))


def probe_plots(sweep: dict | None, scores, labels, classnames: Sequence[str], fewshot: dict,
                out_dir: str | Path, stem: str, title: str | None = None) -> list[str]:
    """The linear probe's figures: validation accuracy against C (the chosen C marked), per-class
    accuracy and confusion matrix of the full probe, accuracy against k for few-shot runs.
    `title` ("MODEL on DATASET") heads each figure: a PNG travels without its report."""
    plt = pyplot()
    who = f"{title}: " if title else ""
    out_dir = Path(out_dir)
    written: list[str] = []
    if sweep:
        xs = sorted(float(k) for k in sweep)
        ys = [100.0 * float(sweep[f"{x:g}"]) for x in xs]
        with drawn_labels([f"{who}linear probe: C sweep"]) as style:  # the model and dataset: any script
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(xs, ys, marker="o")
            best = max(xs, key=lambda x: (sweep[f"{x:g}"], -x))
            ax.axvline(best, color="tab:red", ls="--", label=f"chosen C = 1e{best:g}")
            ax.set_xlabel("log10 C")
            ax.set_ylabel("validation accuracy (%)")
            ax.legend()
            _fit_title(ax, style.labels[0])
            written.append(str(save_figure(fig, out_dir / f"{stem}_c_sweep.png",
                                           finish=lambda f: mark_figure(f, style))))
    if scores is not None:
        from clipforge.evaluate.metrics import confusion_matrix, per_class_accuracy, predictions

        pred = predictions(scores).numpy()  # the report's own top-1 (a row of NaN predicts no class)
        acc = per_class_accuracy(labels, pred, len(classnames))
        written.append(str(plot_per_class_accuracy([None if np.isnan(a) else float(a) for a in acc], classnames,
                                                   out_dir / f"{stem}_per_class.png",
                                                   title=f"{who}linear probe per-class accuracy")))
        written.append(str(plot_confusion_matrix(confusion_matrix(labels, pred, len(classnames)), classnames,
                                                 out_dir / f"{stem}_confusion.png",
                                                 title=f"{who}linear probe confusion matrix (row-normalised)")))
    if fewshot:
        ks = sorted(fewshot, key=int)
        means = [100.0 * fewshot[k]["top1"]["mean"] for k in ks]
        stds = [100.0 * fewshot[k]["top1"]["std"] for k in ks]
        with drawn_labels([f"{who}few-shot linear probe"]) as style:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.errorbar([int(k) for k in ks], means, yerr=stds, marker="o", capsize=3)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("labelled examples per class (k)")
            ax.set_ylabel("top-1 (%)")
            _fit_title(ax, style.labels[0])
            written.append(str(save_figure(fig, out_dir / f"{stem}_fewshot.png",
                                           finish=lambda f: mark_figure(f, style))))
    return written


def plot_heatmap(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], out_path: str | Path,
                 title: str = "", label: str = "score (%)") -> Path:
    """A rows x cols table as a heat map with each cell's number written in it (NaN = not run).

    Row and column names (the suite's models: a checkpoint may be ``模型/猫模型.pt``), the title and the colour bar's
    label are drawn as the class names of the other plots are: with a CJK font, never as empty boxes (what no font
    draws is replaced and said, `zeroshot.fonts`)."""
    plt = pyplot()
    v = np.asarray(values, dtype=float)
    with drawn_labels([*rows, *cols, title, label]) as style:
        n = len(rows)
        rows, cols, (title, label) = style.labels[:n], style.labels[n:-2], style.labels[-2:]
        fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(cols) + 3), max(2.5, 0.5 * len(rows) + 1.5)))
        image = ax.imshow(np.ma.masked_invalid(v), cmap="viridis", vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(len(cols)), list(cols), rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                text = "-" if np.isnan(v[i, j]) else f"{v[i, j]:.1f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if np.isnan(v[i, j]) or v[i, j] < 60 else "black")
        fig.colorbar(image, ax=ax, label=label)
        _fit_title(ax, title)
        return save_figure(fig, out_path, finish=lambda f: mark_figure(f, style))
