"""Metrics against independent computations (scikit-learn, brute force), ties included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from clipforge.evaluate.metrics import (
    classification_metrics,
    confusion_matrix,
    mean_per_class_recall,
    per_class_accuracy,
    retrieval_metrics,
    retrieval_ranks,
    target_ranks,
    topk_accuracy,
)


def _brute_rank(row, target):
    order = sorted(range(len(row)), key=lambda j: (-row[j], j))
    return order.index(target)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_topk_matches_sklearn_without_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(300, 17))
    y = rng.integers(0, 17, size=300)
    ours = topk_accuracy(scores, y, ks=(1, 3, 5))
    for k in (1, 3, 5):
        assert ours[k] == pytest.approx(top_k_accuracy_score(y, scores, k=k, labels=np.arange(17)), abs=1e-12)


def test_topk_ties_follow_lower_index_first():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, size=(400, 9)).astype(np.float32)  # many ties
    y = rng.integers(0, 9, size=400)
    ranks = target_ranks(scores, y).numpy()
    assert ranks.tolist() == [_brute_rank(r, t) for r, t in zip(scores.tolist(), y.tolist(), strict=True)]
    ours = topk_accuracy(scores, y, ks=(1, 2, 4))
    # sklearn breaks ties higher-index-first, so reversing the class order maps its rule onto ours.
    flipped_scores, flipped_y = scores[:, ::-1], 8 - y
    for k in (1, 2, 4):
        assert ours[k] == pytest.approx(
            top_k_accuracy_score(flipped_y, flipped_scores, k=k, labels=np.arange(9)), abs=1e-12)
    # and the tie rule is not a no-op: sklearn on the original order differs here
    assert any(ours[k] != pytest.approx(top_k_accuracy_score(y, scores, k=k, labels=np.arange(9)))
               for k in (1, 2, 4))


def test_all_equal_scores_predict_class_zero():
    scores = torch.zeros(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    assert target_ranks(scores, y).tolist() == [0, 1, 2, 3, 0, 1]
    assert topk_accuracy(scores, y, ks=(1, 2))[1] == pytest.approx(2 / 6)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_per_class_and_balanced_accuracy_match_sklearn():
    rng = np.random.default_rng(4)
    y_true = rng.integers(0, 12, size=500)
    y_true[y_true == 5] = 6  # class 5 absent from y_true
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, 12, size=500))
    assert mean_per_class_recall(y_true, y_pred, 12) == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    cm = confusion_matrix(y_true, y_pred, 12)
    assert (cm == sk_confusion_matrix(y_true, y_pred, labels=np.arange(12))).all()
    acc = per_class_accuracy(y_true, y_pred, 12)
    assert np.isnan(acc[5])
    for c in range(12):
        if c != 5:
            assert acc[c] == pytest.approx(np.mean(y_pred[y_true == c] == c))


def test_classification_metrics_report():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]])
    y = torch.tensor([0, 1, 1, 2])
    m = classification_metrics(scores, y, ks=(1, 2))
    assert m["top1"] == pytest.approx(0.5)  # sample 2 is a tie lost to class 0
    assert m["top2"] == pytest.approx(1.0)
    assert m["per_class_accuracy"] == [1.0, 0.0, 1.0]
    assert m["mean_per_class_recall"] == pytest.approx(2 / 3)
    assert (m["num_samples"], m["num_classes"]) == (4, 3)


def _brute_recall(sim, positives_of, k):
    hits = 0
    for q, row in enumerate(sim.tolist()):
        top = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        hits += any(j in positives_of[q] for j in top)
    return hits / len(sim)


@pytest.mark.parametrize("quantise", [False, True])
def test_retrieval_recall_matches_brute_force(quantise):
    rng = np.random.default_rng(5)
    n_img, per = 40, 5
    img = torch.tensor(rng.normal(size=(n_img, 8)), dtype=torch.float32)
    txt = torch.tensor(rng.normal(size=(n_img * per, 8)), dtype=torch.float32)
    if quantise:  # coarse features make many exactly equal similarities
        img, txt = img.sign(), txt.sign()
    t2i = torch.arange(n_img).repeat_interleave(per)
    t2i = t2i[torch.randperm(len(t2i), generator=torch.Generator().manual_seed(0))]
    m = retrieval_metrics(img, txt, t2i, ks=(1, 5, 10))
    sim = img @ txt.t()
    caps = {i: {j for j in range(len(t2i)) if int(t2i[j]) == i} for i in range(n_img)}
    imgs = {j: {int(t2i[j])} for j in range(len(t2i))}
    for k in (1, 5, 10):
        assert m[f"image_to_text_R@{k}"] == pytest.approx(_brute_recall(sim, caps, k))
        assert m[f"text_to_image_R@{k}"] == pytest.approx(_brute_recall(sim.t(), imgs, k))
    assert (m["num_images"], m["num_texts"]) == (40, 200)


def test_retrieval_ranks_chunking_and_errors():
    rng = np.random.default_rng(6)
    sim = torch.tensor(rng.integers(0, 4, size=(37, 23)), dtype=torch.float32)
    pos = torch.tensor(rng.integers(0, 23, size=37))
    assert retrieval_ranks(sim, pos, chunk=5).tolist() == retrieval_ranks(sim, pos, chunk=1000).tolist()
    assert retrieval_ranks(sim, pos).tolist() == [_brute_rank(r, int(p)) for r, p in zip(sim.tolist(), pos, strict=True)]
    with pytest.raises(ValueError, match="at least one positive"):
        retrieval_ranks(sim, torch.zeros(37, 23, dtype=torch.bool))
    with pytest.raises(ValueError, match="targets must lie"):
        target_ranks(sim, torch.full((37,), 23))
