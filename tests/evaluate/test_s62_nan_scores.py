"""A NaN (or infinite) score is never a hit: it ranks last (audit 62, fuzzer 1).

A checkpoint with NaN weights gives NaN scores, and `(s > own) | ((s == own) & before)` is False for every class
when `own` is NaN: each target ranked 0, so `eval zeroshot` said top-1 100% and `eval retrieval` R@1 100% both
ways (exit 0, a golden `--expect` passed) while per-class accuracy read [1, 0, 0, ...] from argmax's NaN pick.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clipforge.evaluate.linear_probe_eval import _scores as probe_scores
from clipforge.evaluate.metrics import (
    average_precision_11pt,
    average_precision_per_class,
    binary_roc_auc,
    classification_metrics,
    confusion_matrix,
    mean_average_precision,
    per_class_accuracy,
    predictions,
    retrieval_metrics,
    retrieval_ranks,
    target_ranks,
    topk_accuracy,
)

NAN, INF = float("nan"), float("inf")


def test_a_target_whose_own_score_is_not_finite_ranks_after_every_class() -> None:
    scores = torch.tensor([[NAN, NAN, NAN],   # all NaN: a miss, whatever the target
                           [NAN, NAN, NAN],
                           [0.1, NAN, 0.3],   # a NaN rival is never ahead of a real score
                           [0.5, 0.2, NAN],
                           [INF, 0.1, 0.2],   # an infinite own score is no hit either
                           [-INF, 0.1, 0.2],
                           [0.3, INF, 0.2]])  # an infinite rival is ahead (it is larger)
    targets = torch.tensor([0, 2, 2, 0, 0, 0, 2])
    assert target_ranks(scores, targets).tolist() == [3, 3, 0, 0, 3, 3, 2]


def test_all_nan_scores_are_zero_percent_not_one_hundred() -> None:
    scores = torch.full((20, 10), NAN)
    targets = torch.arange(20) % 10
    assert topk_accuracy(scores, targets, ks=(1, 5, 10)) == {1: 0.0, 5: 0.0, 10: 0.0}
    metrics = classification_metrics(scores, targets)
    assert metrics["top1"] == 0.0 and metrics["top5"] == 0.0
    assert metrics["mean_per_class_recall"] == 0.0
    assert metrics["per_class_accuracy"] == [0.0] * 10  # was [1.0, 0.0, ...]: argmax picked the first NaN


def test_partly_nan_scores_count_only_the_real_hits() -> None:
    scores = torch.tensor([[0.9, 0.1], [NAN, NAN], [0.2, 0.7], [NAN, 0.5]])
    targets = torch.tensor([0, 0, 1, 0])
    assert topk_accuracy(scores, targets, ks=(1, 2)) == {1: 0.5, 2: 0.5}
    assert classification_metrics(scores, targets, ks=(1,))["per_class_accuracy"] == [pytest.approx(1 / 3), 1.0]


def test_a_row_without_a_finite_best_score_predicts_no_class() -> None:
    scores = torch.tensor([[NAN, 0.2, 0.5], [NAN, NAN, NAN], [0.1, INF, 0.2], [0.3, 0.3, NAN]])
    pred = predictions(scores)
    assert pred.tolist() == [2, -1, -1, 0]
    y = torch.tensor([2, 0, 1, 0])
    # "no class" lands in no cell and counts as a miss of its true class
    assert confusion_matrix(y, pred, 3).tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert per_class_accuracy(y, pred, 3).tolist() == [0.5, 0.0, 1.0]
    # a prediction is a hit exactly when the target ranks first
    assert ((pred == y) == (target_ranks(scores, y) == 0)).all()


def test_retrieval_counts_a_nan_positive_as_a_miss_both_ways() -> None:
    scores = torch.tensor([[NAN, 0.5, 0.1], [0.2, NAN, 0.9], [NAN, NAN, NAN]])
    assert retrieval_ranks(scores, torch.tensor([0, 2, 1])).tolist() == [3, 0, 3]
    mask = torch.tensor([[True, True, False], [True, True, False], [True, False, True]])
    # the best FINITE positive counts: row 0's NaN positive is passed over for its 0.5
    assert retrieval_ranks(scores, mask).tolist() == [0, 1, 3]
    images = torch.full((4, 8), NAN)
    texts = torch.nn.functional.normalize(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    out = retrieval_metrics(images, texts, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    assert {k: v for k, v in out.items() if "@" in k} == {f"{d}_R@{k}": 0.0 for d in ("image_to_text", "text_to_image")
                                                           for k in (1, 5, 10)}


def test_average_precision_counts_a_nan_positive_as_never_found() -> None:
    assert average_precision_per_class(np.full((4, 1), NAN), np.array([[1], [1], [0], [0]], bool)).tolist() == [0.0]
    scores, positive = np.array([[NAN], [0.9], [0.1]]), np.array([[1], [1], [0]], bool)
    assert average_precision_per_class(scores, positive).tolist() == [0.5]  # the NaN positive: found at no rank
    assert average_precision_11pt(scores[:, 0], positive[:, 0]) == pytest.approx(6 / 11)  # recall stops at 0.5
    marks = np.array([[1], [1], [-1]])
    assert mean_average_precision(scores, marks) == 0.5


def test_roc_auc_ranks_non_finite_scores_below_every_real_one() -> None:
    # pairs (positive, negative): (nan, 0.2) lost, (nan, nan) tie, (0.8, 0.2) won, (0.8, nan) won
    assert binary_roc_auc(torch.tensor([NAN, 0.2, 0.8, NAN]), torch.tensor([1, 0, 1, 0])) == 0.625
    assert binary_roc_auc(torch.full((4,), NAN), torch.tensor([1, 0, 1, 0])) == 0.5  # chance, not an error


def test_linear_probe_scores_nan_probabilities_as_misses() -> None:
    probs = np.full((6, 3), NAN, dtype=np.float32)
    probs[0] = [0.8, 0.1, 0.1]
    out = probe_scores(probs, np.array([0, 0, 1, 1, 2, 2]))
    assert out["top1"] == pytest.approx(1 / 6) and out["top5"] is None
    assert out["mean_per_class_recall"] == pytest.approx(0.5 / 3)  # was 1/3 + ...: argmax chose class 0 for NaN rows
    assert not math.isnan(out["mean_per_class_recall"])


def test_a_cached_feature_entry_holding_nan_is_not_trusted(tmp_path) -> None:
    """An entry a NaN model left in the feature cache before such models were refused was read back, and the probe
    died in scikit-learn's "Input X contains NaN": now it is recomputed, and the encoder names the model."""
    from safetensors.torch import save_file

    from clipforge.evaluate.feature_cache import _load

    meta = {"bad": "{}", "timing": "{}", "digest": "d" * 32}
    for value, trusted in ((0.5, True), (NAN, False), (INF, False)):
        path = tmp_path / f"{value}.safetensors"
        save_file({"features": torch.full((3, 4), value), "labels": torch.zeros(3, dtype=torch.long),
                   "indices": torch.arange(3)}, str(path), metadata=meta)
        assert (_load(path, "d" * 32) is not None) is trusted, value
