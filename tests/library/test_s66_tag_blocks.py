"""`tag` scores its photos in row blocks bounded by `SCORE_ELEMENTS` (audit 66 memory: 2,048 photos x 100,000 labels
held ~2.4 GB of probabilities and their argsort), with the answer of the whole matrix."""

from __future__ import annotations

import numpy as np

from clipforge.library import tagging
from clipforge.models.scoring import Scoring
from clipforge.zeroshot import classifier as classifier_module


def _whole(vectors: np.ndarray, classes: np.ndarray, scoring: Scoring, k: int) -> tuple[np.ndarray, np.ndarray]:
    logits = scoring.scale * (vectors @ classes.T)
    if scoring.sums_to_one:
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    else:
        probs = 1.0 / (1.0 + np.exp(-(logits + scoring.bias)))
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(probs, top, axis=1)


def test_blocks_give_the_whole_matrixs_classes_and_probabilities(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((103, 16)).astype(np.float32)
    classes = rng.standard_normal((40, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # unit vectors, as the library's
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    classes[7] = classes[3]  # a tie: the lower class first
    blocks = []
    real = classifier_module.score_blocks
    monkeypatch.setattr(classifier_module, "score_blocks", lambda rows, n: blocks.append(real(rows, n)) or blocks[-1])
    monkeypatch.setattr(classifier_module, "SCORE_ELEMENTS", 25 * 40)
    for scoring in (Scoring("softmax", 100.0), Scoring("sigmoid", 10.0, -10.0)):
        top, probs = tagging.scored_top_k(vectors, classes, scoring, 5)
        want_top, want_probs = _whole(vectors, classes, scoring, 5)
        assert np.array_equal(top, want_top)
        np.testing.assert_allclose(probs, want_probs, rtol=1e-6, atol=1e-7)
        assert probs.dtype == np.float32
    assert [len(b) for b in blocks] == [5, 5]  # 103 rows in 5 blocks of <= 25
    assert [stop - start for start, stop in blocks[0]] == [20, 21, 20, 21, 21]
