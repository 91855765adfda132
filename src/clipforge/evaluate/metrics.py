"""Classification and retrieval metrics with one documented tie rule.

Tie rule (everywhere in this module): candidates are ranked by score, highest first, and
equal scores are ordered by index, lowest first — the order of a stable descending sort,
and the same choice `argmax` makes. So a target tied with a lower-indexed class ranks below
it. The rule matters for degenerate models (an untrained or collapsed model can give many
classes the same score) and makes every number reproducible bit for bit.
(scikit-learn's `top_k_accuracy_score` breaks ties the other way, higher index first.)

Non-finite rule: a NaN or infinite score is never a hit. A target whose own score is not finite ranks after every
candidate (its rank is the number of candidates: a miss at every k), a NaN rival is never ahead of a real score, a
row whose best score is not finite predicts no class (-1, in no cell of the confusion matrix), average precision
finds a positive scored NaN at no rank, and ROC AUC ranks non-finite scores below every real one. A checkpoint with
NaN weights scores everything NaN; every comparison with NaN is False, so the plain rule ranked each target first
and reported top-1 100% (audit 62). The encoder refuses such a model outright (`clipforge.inference.encoder`); this
rule keeps the numbers honest for scores that reach here some other way (a probe, a saved score file).

Retrieval follows the CLIP paper: an image query hits at k when ANY of its captions is among
the k best texts; a text query hits when its one image is among the k best images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "average_precision_per_class", "binary_roc_auc", "classification_metrics", "confusion_matrix", "defined",
    "mean_average_precision", "mean_average_precision_11pt", "mean_per_class_recall", "per_class_accuracy",
    "predictions", "retrieval_metrics", "retrieval_rank_lists", "retrieval_ranks", "target_ranks", "topk_accuracy",
]


def _scores(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return t.detach().float().cpu()


def _labels(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return t.detach().long().cpu().reshape(-1)


def target_ranks(scores, targets) -> torch.Tensor:
    """0-based rank of each sample's target class under the tie rule: the number of classes
    scoring strictly higher plus the number of lower-indexed classes scoring the same; the number of
    classes when the target's own score is not finite (the non-finite rule: never a hit)."""
    s, y = _scores(scores), _labels(targets)
    if s.ndim != 2 or s.shape[0] != y.shape[0]:
        raise ValueError(f"scores must be [N, C] with N = len(targets); got {tuple(s.shape)} and {len(y)}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= s.shape[1]):
        raise ValueError(f"targets must lie in 0..{s.shape[1] - 1}")
    own = s.gather(1, y[:, None])
    before = torch.arange(s.shape[1])[None, :] < y[:, None]
    ranks = ((s > own) | ((s == own) & before)).sum(dim=1)
    return ranks.masked_fill(~torch.isfinite(own[:, 0]), s.shape[1])


def predictions(scores) -> torch.Tensor:
    """Top-1 class per sample: the first maximum among finite scores (a hit exactly when `target_ranks` is 0);
    -1, no class, for a row whose best score is not finite (all NaN, or an infinite one)."""
    s = _scores(scores)
    best = s.nan_to_num(nan=float("-inf")).argmax(dim=1)  # NaN is never ahead; a row won by +inf gets -1 below
    finite_best = torch.isfinite(s.gather(1, best[:, None]))[:, 0] if s.shape[1] else torch.zeros(len(s), dtype=bool)
    return best.masked_fill(~finite_best, -1)


def topk_accuracy(scores, targets, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """Fraction of samples whose target ranks within the top k, for each k; NaN for a k above the number of
    classes C, as CLIP_benchmark writes ``acc5`` for fewer than 5 classes: every target is then in the "top 5",
    and the 100% it used to give (k > C counted as C) read as a result beside CLIP_benchmark's empty field."""
    ranks = target_ranks(scores, targets)
    num_classes = _scores(scores).shape[1]
    if len(ranks) == 0:
        return {int(k): float("nan") for k in ks}
    return {int(k): int((ranks < k).sum()) / len(ranks) if k <= num_classes else float("nan") for k in ks}


def defined(value: float) -> float | None:
    """`value`, or None for NaN: what a report writes for a metric that is undefined (top-5 of 2 classes),
    JSON's null, shown as "n/a" by every table."""
    return None if value is None or np.isnan(value) else float(value)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """int64 [C, C]; rows are true classes, columns predicted classes. A prediction of -1 (no class: `predictions`
    of a row with no finite best score) is in no cell, so such a row sums to less than its class's samples."""
    t, p = _labels(y_true).numpy(), _labels(y_pred).numpy()
    some = p >= 0
    return np.bincount(t[some] * num_classes + p[some],
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Recall of each class (a -1 prediction is a miss); NaN for classes with no samples (they have no accuracy
    to report)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = np.bincount(_labels(y_true).numpy(), minlength=num_classes)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def mean_per_class_recall(y_true, y_pred, num_classes: int) -> float:
    """Mean of per-class recall over classes present in `y_true` (= balanced accuracy)."""
    acc = per_class_accuracy(y_true, y_pred, num_classes)
    present = ~np.isnan(acc)
    return float(acc[present].mean()) if present.any() else float("nan")


def classification_metrics(scores, targets, ks: Sequence[int] = (1, 5)) -> dict:
    """Everything `eval zeroshot` reports, as plain floats (fractions, not percent)."""
    s, y = _scores(scores), _labels(targets)
    num_classes = s.shape[1]
    pred = predictions(s)
    acc = topk_accuracy(s, y, ks)
    return {
        **{f"top{k}": defined(v) if k > num_classes else v for k, v in acc.items()},  # null: more k than classes
        "mean_per_class_recall": mean_per_class_recall(y, pred, num_classes),
        "per_class_accuracy": [None if np.isnan(a) else float(a) for a in per_class_accuracy(y, pred, num_classes)],
        "num_samples": int(len(y)),
        "num_classes": int(num_classes),
    }


def retrieval_ranks(scores, positives, chunk: int = 1024) -> torch.Tensor:
    """0-based rank of each query's best-ranked positive under the tie rule: the best positive with a finite
    score; the gallery's size (a miss at every k) when no positive has one (the non-finite rule).

    `scores` [Q, G]; `positives` either a bool mask [Q, G] or, when each query has one
    positive, a LongTensor [Q] of gallery indices. Work is chunked over queries so a
    5k x 25k similarity matrix does not need a 5k x 25k mask at once.
    """
    s = _scores(scores)
    single = not (isinstance(positives, torch.Tensor) and positives.dtype == torch.bool) and \
        np.asarray(positives).ndim == 1
    out = []
    gallery = torch.arange(s.shape[1])
    for start in range(0, s.shape[0], chunk):
        block = s[start:start + chunk]
        if single:
            pos_idx = _labels(positives)[start:start + chunk]
            mask = torch.zeros_like(block, dtype=torch.bool)
            mask[torch.arange(len(block)), pos_idx] = True
        else:
            mask = torch.as_tensor(np.asarray(positives)[start:start + chunk], dtype=torch.bool)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every query needs at least one positive")
        # The best positive is the one with the highest finite score, lowest index among equals:
        # argmax returns the first maximum.
        usable = mask & torch.isfinite(block)
        best = block.masked_fill(~usable, float("-inf")).argmax(dim=1)
        best_score = block.gather(1, best[:, None])
        ahead = (block > best_score) | ((block == best_score) & (gallery[None, :] < best[:, None]))
        out.append(ahead.sum(dim=1).masked_fill(~usable.any(dim=1), s.shape[1]))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def retrieval_rank_lists(image_features, text_features, text_to_image) -> tuple[torch.Tensor, torch.Tensor]:
    """(image->text ranks [images], text->image ranks [texts]): 0-based rank of each query's best positive."""
    img, txt = _scores(image_features), _scores(text_features)
    t2i = _labels(text_to_image)
    if len(t2i) != len(txt):
        raise ValueError(f"text_to_image has {len(t2i)} entries for {len(txt)} captions")
    sim = img @ txt.t()  # [images, texts]
    i2t_mask = torch.zeros(sim.shape, dtype=torch.bool)
    i2t_mask[t2i, torch.arange(len(t2i))] = True
    return retrieval_ranks(sim, i2t_mask), retrieval_ranks(sim.t(), t2i)


def retrieval_metrics(image_features, text_features, text_to_image, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Image->text and text->image recall@k from (normalised) features and each caption's image index."""
    img, txt = _scores(image_features), _scores(text_features)
    i2t, t2i_ranks = retrieval_rank_lists(img, txt, text_to_image)
    out: dict = {}
    # a rank equal to the gallery's size is the non-finite rule's miss, also where k is larger than the gallery
    for k in ks:
        out[f"image_to_text_R@{k}"] = int((i2t < min(k, txt.shape[0])).sum()) / len(i2t)
    for k in ks:
        out[f"text_to_image_R@{k}"] = int((t2i_ranks < min(k, img.shape[0])).sum()) / len(t2i_ranks)
    out["num_images"], out["num_texts"] = int(img.shape[0]), int(txt.shape[0])
    return out


def average_precision_11pt(scores, positive, difficult=None) -> float:
    """PASCAL VOC 2007's 11-point interpolated average precision of one class.

    `positive` marks the images containing the class; `difficult` ones are left out of the
    ranking entirely (the VOC devkit's rule). Precision is interpolated (the best precision at any
    recall >= r) at r = 0, 0.1, ..., 1 and averaged. A positive scored NaN or infinite is never found."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    pos = np.asarray(positive, dtype=bool).reshape(-1)
    if difficult is not None:
        keep = ~np.asarray(difficult, dtype=bool).reshape(-1)
        s, pos = s[keep], pos[keep]
    n_pos = int(pos.sum())
    if n_pos == 0:
        return float("nan")
    order = _descending(s)
    hits = pos[order] & np.isfinite(s[order])
    tp = np.cumsum(hits)
    recall = tp / n_pos
    precision = tp / np.arange(1, len(hits) + 1)
    ap = 0.0
    for r in np.linspace(0, 1, 11):
        above = precision[recall >= r]
        ap += (above.max() if len(above) else 0.0) / 11
    return float(ap)


def mean_average_precision_11pt(scores, targets) -> float:
    """Mean over classes of `average_precision_11pt`. `targets` [N, C]: 1 present, 0 difficult
    (ignored for that class), -1 absent, as the VOC devkit's per-class files mark them."""
    s = _scores(scores).numpy()
    t = np.asarray(targets)
    if s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must both be [N, C]")
    aps = [average_precision_11pt(s[:, c], t[:, c] == 1, t[:, c] == 0) for c in range(s.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")


def average_precision_per_class(scores, positive) -> np.ndarray:
    """Non-interpolated average precision of each class, CLIP_benchmark's ``average_precision_per_class`` (torchnet's
    meter): the mean of the precision at the rank of each positive, over the ranking of every image; a class with no
    positive scores 0 (``max(positives, 1)``). `positive` [N, C] marks the images containing each class. Ties are
    ranked by index, lowest first (this module's rule; torch's unstable sort leaves them in no set order); a
    positive scored NaN or infinite is found at no rank (it still counts among the class's positives)."""
    s = _scores(scores).numpy().astype(np.float64)
    pos = np.asarray(positive, dtype=bool)
    if s.ndim != 2 or s.shape != pos.shape:
        raise ValueError(f"scores {s.shape} and positives {pos.shape} must both be [N, C]")
    ap = np.zeros(s.shape[1])
    ranks = np.arange(1, s.shape[0] + 1)
    for c in range(s.shape[1]):
        order = _descending(s[:, c])
        hits = pos[order, c]
        found = hits & np.isfinite(s[order, c])
        precision = np.cumsum(found) / ranks
        ap[c] = precision[found].sum() / max(int(hits.sum()), 1)
    return ap


def _descending(scores: np.ndarray) -> np.ndarray:
    """Indices of `scores` best first, ties lowest index first, every non-finite score after every finite one."""
    return np.lexsort((-np.where(np.isfinite(scores), scores, 0.0), ~np.isfinite(scores)))


def mean_average_precision(scores, targets) -> float:
    """CLIP_benchmark's ``mean_average_precision`` of ``voc2007_multilabel``: `average_precision_per_class` averaged
    over ALL classes (a class absent from the images counts 0). `targets` [N, C] as the VOC devkit marks them (1
    present, 0 difficult, -1 absent): CLIP_benchmark reads every annotated object, difficult ones too, so 0 and 1
    are both present here (the devkit's 11-point mAP, `mean_average_precision_11pt`, leaves difficult ones out)."""
    t = np.asarray(targets)
    ap = average_precision_per_class(scores, t >= 0)
    return float(ap.mean()) if ap.size and t.shape[0] else float("nan")


def binary_roc_auc(scores, targets) -> float:
    """Area under the ROC curve of `scores` for the positive class (label 1): the probability that a
    random positive outscores a random negative, ties counting half (scikit-learn's value). Non-finite scores
    rank below every finite one, tied among themselves (a model scoring everything NaN gets 0.5, chance)."""
    from sklearn.metrics import roc_auc_score

    y = _labels(targets).numpy()
    if len(np.unique(y)) < 2:
        return float("nan")
    s = _scores(scores).numpy().reshape(-1).astype(np.float64)
    finite = np.isfinite(s)
    s = np.where(finite, s, (s[finite].min() - 1.0) if finite.any() else 0.0)
    return float(roc_auc_score(y, s))
