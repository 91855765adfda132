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

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "average_precision_per_class", "binary_roc_auc", "classification_metrics", "confusion_matrix", "defined",
    "mean_average_precision", "mean_average_precision_11pt", "mean_per_class_recall", "per_class_accuracy",
    "predictions", "recall_at_k", "retrieval_metrics", "retrieval_rank_lists", "retrieval_ranks", "similarity_blocks",
    "target_ranks", "topk_accuracy",
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


SCORE_BLOCK = 1 << 22
"""Most scores one block of a retrieval similarity holds (16 MiB of float32). Images x captions is never made whole:
10,000 images x 50,000 captions is 1.9 GB, and with its mask and comparisons took 5.8 GB (audit 66)."""


def _row_blocks(rows: int, width: int, chunk: int | None) -> list[slice]:
    """Consecutive slices covering `rows` rows, at most `chunk` each (default: as many rows of `width` scores as
    SCORE_BLOCK holds), as even as the count allows (15 rows in 8 + 7, not 14 + 1): `zeroshot.classifier.score_blocks`,
    the rule `classify` and `tag` score by."""
    from clipforge.zeroshot.classifier import score_blocks

    return [slice(start, stop) for start, stop in score_blocks(rows, width, most=chunk, budget=SCORE_BLOCK)]


def _largest_block(rows: int, width: int, chunk: int | None) -> int:
    """The scores in the largest of `_row_blocks`' blocks: the size of the buffers made once for all of them."""
    return max((r.stop - r.start for r in _row_blocks(rows, width, chunk)), default=0) * width


def similarity_blocks(image_features, text_features, chunk: int | None = None,
                      by: str = "images") -> Iterator[tuple[slice, torch.Tensor]]:
    """The image x text similarity ``image_features @ text_features.T`` one block at a time, never whole.

    ``by="images"``: (image rows, [rows, texts] block); ``by="texts"``: (text rows, [rows, images] block), the
    same product's columns (``image_features @ text_features[rows].T``, transposed), so both directions rank the
    scores the whole product has. A block holds at most `chunk` rows (default: SCORE_BLOCK scores). Every block
    is written into one buffer (copy a block to keep it past the next): a fresh block each time left the C heap
    fragmented, 1.3 GB at 10,000 x 50,000 where the blocks are 16 MiB."""
    img, txt = _scores(image_features), _scores(text_features)
    if by not in ("images", "texts"):
        raise ValueError(f"by must be 'images' or 'texts', got {by!r}")
    queries, gallery = (img, txt) if by == "images" else (txt, img)
    flat = torch.empty(_largest_block(len(queries), len(gallery), chunk))
    for rows in _row_blocks(len(queries), len(gallery), chunk):
        n = rows.stop - rows.start
        if by == "images":
            yield rows, torch.mm(img[rows], txt.t(), out=flat[:n * len(txt)].view(n, len(txt)))
        else:
            yield rows, torch.mm(img, txt[rows].t(), out=flat[:n * len(img)].view(len(img), n)).t()


def _best_positive(block: torch.Tensor, query: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(best, usable) of each row of `block` whose positives are the pairs (query[p], item[p]): the positive with
    the highest finite score, the lowest index among equals (what argmax of the masked row gives); usable is False
    where no positive is finite (best is then 0). Works on the pairs, not on a [rows, gallery] mask."""
    own = block[query, item]
    finite = torch.isfinite(own)
    top = torch.full((len(block),), float("-inf")).scatter_reduce(
        0, query, own.masked_fill(~finite, float("-inf")), "amax")
    tied = finite & (own == top[query])
    best = torch.full((len(block),), block.shape[1], dtype=torch.long).scatter_reduce(
        0, query[tied], item[tied], "amin")
    usable = best < block.shape[1]
    return best.masked_fill(~usable, 0), usable


def _scratch(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat buffers of `size` flags (two bool, one int32) for `_count_ahead`, made once per ranking and reused by
    every block (see `similarity_blocks` on the heap)."""
    return torch.empty(size, dtype=torch.bool), torch.empty(size, dtype=torch.bool), torch.empty(size, dtype=torch.int32)


def _count_ahead(block: torch.Tensor, best: torch.Tensor, usable: torch.Tensor,
                 scratch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The tie rule's rank of ``block[r, best[r]]`` in each row: the scores strictly higher plus the equal ones at a
    lower index (NaN is neither); the gallery's size where not `usable`. Every temporary the size of the block is
    one of `scratch`'s, laid out as the block is (a text block is a transposed view). The flags are counted as
    int32 copied into scratch: a bool or uint8 ``sum`` casts the whole block to a fresh int64 or int32 tensor
    first, and the C heap kept those (+220 MB over 200 blocks of 4M scores, more at 10,000 x 50,000)."""
    rows, width = block.shape
    stride = (1, rows) if not block.is_contiguous() and block.t().is_contiguous() else (width, 1)
    above, before, ints = (flat[:rows * width].as_strided((rows, width), stride) for flat in scratch)

    def count(flags: torch.Tensor) -> torch.Tensor:
        return ints.copy_(flags).sum(dim=1, dtype=torch.int32)

    best_score = block.gather(1, best[:, None])
    ahead = count(torch.gt(block, best_score, out=above))
    torch.lt(torch.arange(width)[None, :], best[:, None], out=before)
    ahead += count(torch.eq(block, best_score, out=above).logical_and_(before))
    return ahead.long().masked_fill(~usable, width)


def retrieval_ranks(scores, positives, chunk: int = 1024) -> torch.Tensor:
    """0-based rank of each query's best-ranked positive under the tie rule: the best positive with a finite
    score; the gallery's size (a miss at every k) when no positive has one (the non-finite rule).

    `scores` [Q, G]; `positives` either a bool mask [Q, G] or, when each query has one
    positive, a LongTensor [Q] of gallery indices. Work is chunked over queries so a
    5k x 25k similarity matrix does not need a 5k x 25k mask at once (`retrieval_rank_lists` does not make the
    similarity whole either).
    """
    s = _scores(scores)
    single = not (isinstance(positives, torch.Tensor) and positives.dtype == torch.bool) and \
        np.asarray(positives).ndim == 1
    targets = _labels(positives) if single else None
    out = []
    scratch = _scratch(min(chunk, s.shape[0]) * s.shape[1])
    for start in range(0, s.shape[0], chunk):
        block = s[start:start + chunk]
        if targets is not None:  # the one positive is the best one; usable when its score is finite
            best = targets[start:start + chunk]
            usable = torch.isfinite(block.gather(1, best[:, None]))[:, 0]
        else:
            mask = torch.as_tensor(np.asarray(positives)[start:start + chunk], dtype=torch.bool)
            if not bool(mask.any(dim=1).all()):
                raise ValueError("every query needs at least one positive")
            best, usable = _best_positive(block, *mask.nonzero().unbind(1))
        out.append(_count_ahead(block, best, usable, scratch))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def retrieval_rank_lists(image_features, text_features, text_to_image,
                         chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(image->text ranks [images], text->image ranks [texts]): 0-based rank of each query's best positive.

    Ranked one `similarity_blocks` block at a time (image rows, then text rows), so memory is bounded by a block
    (`chunk` rows x gallery; default SCORE_BLOCK scores), not images x texts; the ranks are the whole matrix's."""
    img, txt = _scores(image_features), _scores(text_features)
    t2i = _labels(text_to_image)
    if len(t2i) != len(txt):
        raise ValueError(f"text_to_image has {len(t2i)} entries for {len(txt)} captions")
    if len(t2i) and (int(t2i.min()) < 0 or int(t2i.max()) >= len(img)):
        raise ValueError(f"text_to_image must lie in 0..{len(img) - 1}")
    if len(img) and int(torch.bincount(t2i, minlength=len(img)).min()) == 0:
        raise ValueError("every query needs at least one positive")
    by_image = torch.argsort(t2i, stable=True)  # captions in image order: a block's captions are one run of it
    starts = torch.searchsorted(t2i[by_image], torch.arange(len(img) + 1)).tolist()
    scratch = _scratch(max(_largest_block(len(img), len(txt), chunk), _largest_block(len(txt), len(img), chunk)))
    i2t, t2i_ranks = [], []
    for rows, block in similarity_blocks(img, txt, chunk, by="images"):
        captions = by_image[starts[rows.start]:starts[rows.stop]]
        i2t.append(_count_ahead(block, *_best_positive(block, t2i[captions] - rows.start, captions), scratch))
    for rows, block in similarity_blocks(img, txt, chunk, by="texts"):
        best = t2i[rows]
        t2i_ranks.append(_count_ahead(block, best, torch.isfinite(block.gather(1, best[:, None]))[:, 0], scratch))
    empty = torch.zeros(0, dtype=torch.long)
    return torch.cat(i2t) if i2t else empty, torch.cat(t2i_ranks) if t2i_ranks else empty


def recall_at_k(image_to_text_ranks, text_to_image_ranks, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Image->text and text->image recall@k from `retrieval_rank_lists`' ranks (the galleries are the other
    direction's queries: every caption, every image)."""
    i2t, t2i = _labels(image_to_text_ranks), _labels(text_to_image_ranks)
    out: dict = {}
    # a rank equal to the gallery's size is the non-finite rule's miss, also where k is larger than the gallery
    for k in ks:
        out[f"image_to_text_R@{k}"] = int((i2t < min(k, len(t2i))).sum()) / len(i2t)
    for k in ks:
        out[f"text_to_image_R@{k}"] = int((t2i < min(k, len(i2t))).sum()) / len(t2i)
    out["num_images"], out["num_texts"] = len(i2t), len(t2i)
    return out


def retrieval_metrics(image_features, text_features, text_to_image, ks: Sequence[int] = (1, 5, 10),
                      chunk: int | None = None) -> dict:
    """Image->text and text->image recall@k from (normalised) features and each caption's image index, ranked
    block by block (`retrieval_rank_lists`)."""
    return recall_at_k(*retrieval_rank_lists(image_features, text_features, text_to_image, chunk), ks)


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
